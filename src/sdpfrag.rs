//! SDP fragments (`application/trickle-ice-sdpfrag`, RFC 8840 §9) as a WHIP/WHEP PATCH carries
//! them (RFC 9725 §4.3): the client's trickled candidates, `a=end-of-candidates`, and new ICE
//! credentials for a restart. Pure parsing and building; the media loop decides what to do.

use thiserror::Error;

/// What a fragment says.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SdpFrag {
    /// `a=ice-ufrag` (session or media level; RFC 8840 allows either, BUNDLE makes them one).
    pub ufrag: Option<String>,
    /// `a=ice-pwd`.
    pub pwd: Option<String>,
    /// The media descriptions, in order.
    pub sections: Vec<FragSection>,
    /// `a=end-of-candidates` at session level (it then covers every section).
    pub end_of_candidates: bool,
}

/// One `m=` section of a fragment.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FragSection {
    /// `a=mid`; RFC 8840 §4.4 makes it the section's identity (its m-line only says which one
    /// when it is absent).
    pub mid: Option<String>,
    /// Position among the fragment's m-lines (the m-line index where `mid` is absent).
    pub index: usize,
    /// The `a=candidate:` values (without the `a=` prefix), in order.
    pub candidates: Vec<String>,
    /// `a=end-of-candidates` in this section.
    pub end_of_candidates: bool,
}

/// Why a fragment was refused.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum FragError {
    /// Not text, or a line that is not `<type>=<value>`.
    #[error("line {0} is not an SDP line")]
    Syntax(usize),
    /// A candidate attribute that does not follow RFC 8839 §5.1.
    #[error("line {0} is not a valid a=candidate attribute (RFC 8839 section 5.1)")]
    Candidate(usize),
    /// A ufrag or password outside RFC 8839 §5.4 (ice-char, 4..=256 and 22..=256 characters).
    #[error("line {0} has an invalid ICE {1} (RFC 8839 section 5.4)")]
    Credential(usize, &'static str),
    /// A ufrag without a password or the other way round, or two different values.
    #[error("a fragment with new ICE credentials needs exactly one a=ice-ufrag and one a=ice-pwd")]
    HalfCredentials,
}

impl SdpFrag {
    /// Adds the candidate `arg` of line `number`. RFC 8840 §4.4: a candidate belongs to the
    /// section it follows; one before any m-line (no mid) goes to the first, the only one under
    /// BUNDLE.
    fn add_candidate(&mut self, arg: &str, number: usize) -> Result<(), FragError> {
        if !valid_candidate(arg) {
            return Err(FragError::Candidate(number));
        }
        if self.sections.is_empty() {
            self.sections.push(FragSection::default());
        }
        if let Some(section) = self.sections.last_mut() {
            section.candidates.push(format!("candidate:{arg}"));
        }
        Ok(())
    }
}

/// Parses an RFC 8840 fragment. Lines other than `a=` and `m=` are skipped (RFC 8840 §9
/// fragments carry only those), as are attributes that say nothing about ICE.
pub fn parse(text: &str) -> Result<SdpFrag, FragError> {
    let mut frag = SdpFrag::default();
    let mut ufrags = Vec::new();
    let mut pwds = Vec::new();
    for (n, raw) in text.split('\n').enumerate() {
        let number = n + 1;
        let line = raw.strip_suffix('\r').unwrap_or(raw);
        if line.is_empty() {
            continue;
        }
        let (kind, value) = line
            .split_once('=')
            .filter(|(k, _)| k.len() == 1 && k.bytes().all(|b| b.is_ascii_lowercase()))
            .ok_or(FragError::Syntax(number))?;
        match kind {
            "m" => frag.sections.push(FragSection {
                index: frag.sections.len(),
                ..FragSection::default()
            }),
            "a" => {
                let (name, arg) = value.split_once(':').unwrap_or((value, ""));
                match name {
                    "ice-ufrag" => ufrags.push(credential(arg, 4, number, "ufrag")?),
                    "ice-pwd" => pwds.push(credential(arg, 22, number, "password")?),
                    "mid" => {
                        if let Some(section) = frag.sections.last_mut() {
                            section.mid = Some(arg.to_owned());
                        }
                    }
                    "candidate" => frag.add_candidate(arg, number)?,
                    "end-of-candidates" => match frag.sections.last_mut() {
                        Some(section) => section.end_of_candidates = true,
                        None => frag.end_of_candidates = true,
                    },
                    _ => {}
                }
            }
            _ => {}
        }
    }
    ufrags.dedup();
    pwds.dedup();
    match (ufrags.as_slice(), pwds.as_slice()) {
        ([], []) => {}
        ([ufrag], [pwd]) => {
            frag.ufrag = Some(ufrag.clone());
            frag.pwd = Some(pwd.clone());
        }
        _ => return Err(FragError::HalfCredentials),
    }
    Ok(frag)
}

/// A fragment with the server's credentials and candidates (RFC 9725 §4.3.2's answer to a
/// restart): session-level credentials, then per section its mid, candidates and
/// `a=end-of-candidates` (whip-echo gathers nothing: its candidates are all known at once).
pub fn build(ufrag: &str, pwd: &str, sections: &[(String, Vec<String>)]) -> String {
    let mut out = format!("a=ice-ufrag:{ufrag}\r\na=ice-pwd:{pwd}\r\n");
    for (mid, candidates) in sections {
        out.push_str("m=audio 9 UDP/TLS/RTP/SAVPF 0\r\n");
        out.push_str(&format!("a=mid:{mid}\r\n"));
        for candidate in candidates {
            let candidate = candidate.strip_prefix("a=").unwrap_or(candidate);
            out.push_str(&format!("a={candidate}\r\n"));
        }
        out.push_str("a=end-of-candidates\r\n");
    }
    out
}

fn credential(
    value: &str,
    min: usize,
    line: usize,
    what: &'static str,
) -> Result<String, FragError> {
    valid_ice_credential(value, min)
        .then(|| value.to_owned())
        .ok_or(FragError::Credential(line, what))
}

/// RFC 8839 §5.4: an `ice-ufrag` (`min` 4) or `ice-pwd` (`min` 22) of `min` to 256 ice-chars.
pub fn valid_ice_credential(value: &str, min: usize) -> bool {
    (min..=256).contains(&value.len()) && value.bytes().all(is_ice_char)
}

/// RFC 8839 §5.4: ice-char = ALPHA / DIGIT / "+" / "/".
fn is_ice_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'+' || b == b'/'
}

/// RFC 8839 §5.1: `foundation component-id transport priority address port "typ" cand-type
/// *(SP extension)`; the address is checked only for being a token (it may be an FQDN or an
/// mDNS name, which the ICE agent resolves or ignores).
fn valid_candidate(value: &str) -> bool {
    let fields: Vec<&str> = value.split(' ').collect();
    let [foundation, component, transport, priority, address, port, typ, kind, ..] = fields[..]
    else {
        return false;
    };
    let digits = |s: &str, max: usize| {
        !s.is_empty() && s.len() <= max && s.bytes().all(|b| b.is_ascii_digit())
    };
    (1..=32).contains(&foundation.len())
        && foundation.bytes().all(is_ice_char)
        && digits(component, 5)
        && !transport.is_empty()
        && transport.bytes().all(|b| b.is_ascii_alphanumeric())
        && digits(priority, 10)
        && !address.is_empty()
        && address.bytes().all(|b| b.is_ascii_graphic())
        && digits(port, 5)
        && port.parse::<u32>().is_ok_and(|p| p <= 65535)
        && typ == "typ"
        && !kind.is_empty()
        && kind.bytes().all(|b| b.is_ascii_alphanumeric())
}

#[cfg(test)]
mod tests {
    use super::*;

    const RFC9725_TRICKLE: &str = "a=group:BUNDLE 0\r\nm=audio 9 UDP/TLS/RTP/AVP 0\r\na=mid:0\r\n\
        a=ice-ufrag:EsAw\r\na=ice-pwd:P2uYro0UCOQ4zxjKXaWCBui1\r\n\
        a=candidate:1387637174 1 udp 2122260223 192.0.2.1 61764 typ host generation 0 ufrag EsAw network-id 1\r\n\
        a=candidate:3471623853 1 udp 2122194687 198.51.100.2 61765 typ host generation 0 ufrag EsAw network-id 2\r\n\
        a=candidate:473322822 1 tcp 1518280447 192.0.2.1 9 typ host tcptype active generation 0 ufrag EsAw network-id 1\r\n\
        a=end-of-candidates\r\n";

    #[test]
    fn parses_the_rfc9725_trickle_example() {
        let frag = parse(RFC9725_TRICKLE).unwrap();
        assert_eq!(frag.ufrag.as_deref(), Some("EsAw"));
        assert_eq!(frag.pwd.as_deref(), Some("P2uYro0UCOQ4zxjKXaWCBui1"));
        assert_eq!(frag.sections.len(), 1);
        let section = &frag.sections[0];
        assert_eq!(section.mid.as_deref(), Some("0"));
        assert_eq!(section.candidates.len(), 3);
        assert!(section.candidates[0].starts_with("candidate:1387637174 1 udp "));
        assert!(section.end_of_candidates);
        assert!(!frag.end_of_candidates);
    }

    #[test]
    fn candidates_without_credentials_or_m_line() {
        let frag =
            parse("a=candidate:1 1 UDP 2130706431 10.0.0.1 5000 typ host\na=end-of-candidates\n")
                .unwrap();
        assert_eq!(frag.ufrag, None);
        assert_eq!(frag.sections.len(), 1);
        assert_eq!(frag.sections[0].mid, None);
        assert_eq!(frag.sections[0].candidates.len(), 1);
        assert!(frag.sections[0].end_of_candidates);
        let eoc = parse("a=end-of-candidates\r\n").unwrap();
        assert!(eoc.end_of_candidates && eoc.sections.is_empty());
        assert_eq!(parse("").unwrap(), SdpFrag::default());
    }

    #[test]
    fn sections_keep_their_order_and_mids() {
        let frag = parse(
            "m=audio 9 UDP/TLS/RTP/SAVPF 0\r\na=mid:a\r\nm=video 9 UDP/TLS/RTP/SAVPF 0\r\n\
             a=candidate:2 1 udp 1 192.0.2.9 7 typ srflx raddr 0.0.0.0 rport 0\r\n",
        )
        .unwrap();
        assert_eq!(frag.sections[0].mid.as_deref(), Some("a"));
        assert_eq!(frag.sections[1].mid, None);
        assert_eq!(frag.sections[1].index, 1);
        assert_eq!(frag.sections[1].candidates.len(), 1);
    }

    #[test]
    fn malformed_fragments_are_refused() {
        for (text, error) in [
            ("hello world", FragError::Syntax(1)),
            ("a=ice-ufrag:abcd\r\nnot sdp\r\n", FragError::Syntax(2)),
            ("A=x\r\n", FragError::Syntax(1)),
            ("=x\r\n", FragError::Syntax(1)),
            ("a=candidate:1 1 udp\r\n", FragError::Candidate(1)),
            (
                "a=candidate:1 1 udp 1 10.0.0.1 99999 typ host\r\n",
                FragError::Candidate(1),
            ),
            (
                "a=candidate:1 1 udp 1 10.0.0.1 5 type host\r\n",
                FragError::Candidate(1),
            ),
            (
                "a=candidate:1 x udp 1 h 5 typ host\r\n",
                FragError::Candidate(1),
            ),
            ("a=ice-ufrag:ab\r\n", FragError::Credential(1, "ufrag")),
            ("a=ice-pwd:short\r\n", FragError::Credential(1, "password")),
            ("a=ice-ufrag:ab cd\r\n", FragError::Credential(1, "ufrag")),
            ("a=ice-ufrag:abcd\r\n", FragError::HalfCredentials),
            (
                "a=ice-ufrag:abcd\r\na=ice-pwd:0123456789012345678901\r\na=ice-ufrag:efgh\r\n",
                FragError::HalfCredentials,
            ),
        ] {
            assert_eq!(parse(text), Err(error), "{text:?}");
        }
        // The same credentials at session and media level are one pair.
        let pwd = "0123456789012345678901";
        let twice = format!(
            "a=ice-ufrag:abcd\na=ice-pwd:{pwd}\nm=audio 9 x 0\na=ice-ufrag:abcd\na=ice-pwd:{pwd}\n"
        );
        assert_eq!(parse(&twice).unwrap().ufrag.as_deref(), Some("abcd"));
    }

    #[test]
    fn builds_what_it_parses() {
        let candidates = vec![
            "candidate:1 1 udp 2130706431 127.0.0.1 5000 typ host".to_owned(),
            "a=candidate:2 1 tcp 1 127.0.0.1 5001 typ host tcptype passive".to_owned(),
        ];
        let text = build(
            "0011223344556677",
            "00112233445566778899aabbccddeeff",
            &[("0".to_owned(), candidates)],
        );
        assert!(text.ends_with("a=end-of-candidates\r\n"));
        let frag = parse(&text).unwrap();
        assert_eq!(frag.ufrag.as_deref(), Some("0011223344556677"));
        assert_eq!(
            frag.pwd.as_deref(),
            Some("00112233445566778899aabbccddeeff")
        );
        assert_eq!(frag.sections[0].mid.as_deref(), Some("0"));
        assert_eq!(
            frag.sections[0].candidates[1],
            "candidate:2 1 tcp 1 127.0.0.1 5001 typ host tcptype passive"
        );
        assert!(frag.sections[0].end_of_candidates);
    }
}
