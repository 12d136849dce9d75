//! The offer's ICE and DTLS attributes, checked before rtc sees them: credentials (RFC 8839
//! §5.4), fingerprints (RFC 8122 §5), DTLS roles (RFC 8842 §5.2) and their agreement across bundled sections (RFC 8843
//! §7.1.3: one transport, so one set). rtc would take the first of conflicting values, or fail
//! only at the DTLS handshake, seconds later; a client with such an offer is told at once why.

use rtc::sdp::description::session::SessionDescription;

/// Hash functions of RFC 8122 §5 (RFC 4572's registry) and their digest lengths in bytes.
const HASHES: [(&str, usize); 6] = [
    ("sha-1", 20),
    ("sha-224", 28),
    ("sha-256", 32),
    ("sha-384", 48),
    ("sha-512", 64),
    ("md5", 16),
];

/// Why the offer's ICE or DTLS attributes cannot be used, if they cannot.
pub fn check(sdp: &SessionDescription) -> Result<(), String> {
    let session = Values::of(&sdp.attributes);
    let bundled = sdp
        .attributes
        .iter()
        .any(|a| a.key == "group" && a.value.as_deref().is_some_and(|v| v.starts_with("BUNDLE")));
    let mut all = session.clone();
    for media in &sdp.media_descriptions {
        // A rejected section carries nothing that is used.
        if media.media_name.port.value == 0
            && !media.attributes.iter().any(|a| a.key == "bundle-only")
        {
            continue;
        }
        let mut own = Values::of(&media.attributes);
        if bundled {
            all.extend(own);
        } else {
            // Without BUNDLE each section is its own transport: session-level values apply
            // where it has none of its own.
            own.inherit(&session);
            own.check()?;
        }
    }
    all.check()
}

/// The ICE credentials, fingerprints and DTLS roles of one transport.
#[derive(Debug, Clone, Default)]
struct Values<'a> {
    ufrags: Vec<&'a str>,
    pwds: Vec<&'a str>,
    fingerprints: Vec<&'a str>,
    setups: Vec<&'a str>,
}

impl<'a> Values<'a> {
    fn of(attributes: &'a [rtc::sdp::description::common::Attribute]) -> Self {
        let mut v = Values::default();
        for a in attributes {
            let Some(value) = a.value.as_deref() else {
                continue;
            };
            match a.key.as_str() {
                "ice-ufrag" => v.ufrags.push(value),
                "ice-pwd" => v.pwds.push(value),
                "fingerprint" => v.fingerprints.push(value),
                "setup" => v.setups.push(value),
                _ => {}
            }
        }
        v
    }

    fn extend(&mut self, other: Values<'a>) {
        self.ufrags.extend(other.ufrags);
        self.pwds.extend(other.pwds);
        self.fingerprints.extend(other.fingerprints);
        self.setups.extend(other.setups);
    }

    fn inherit(&mut self, session: &Values<'a>) {
        for (own, session) in [
            (&mut self.ufrags, &session.ufrags),
            (&mut self.pwds, &session.pwds),
            (&mut self.fingerprints, &session.fingerprints),
        ] {
            if own.is_empty() {
                own.extend(session.iter().copied());
            }
        }
    }

    fn check(mut self) -> Result<(), String> {
        one_value("a=ice-ufrag", &mut self.ufrags)?;
        one_value("a=ice-pwd", &mut self.pwds)?;
        if let Some(ufrag) = self.ufrags.first() {
            if !crate::sdpfrag::valid_ice_credential(ufrag, 4) {
                return Err("a=ice-ufrag must be 4 to 256 characters of A-Z a-z 0-9 + /".into());
            }
        }
        if let Some(pwd) = self.pwds.first() {
            if !crate::sdpfrag::valid_ice_credential(pwd, 22) {
                return Err("a=ice-pwd must be 22 to 256 characters of A-Z a-z 0-9 + /".into());
            }
        }
        for fingerprint in &self.fingerprints {
            check_fingerprint(fingerprint)?;
        }
        // RFC 8842 §5.2: an offer's role is actpass (JSEP), or active or passive; holdconn
        // would hold the DTLS connection that every session needs.
        if let Some(bad) = self
            .setups
            .iter()
            .find(|s| !matches!(s.trim(), "actpass" | "active" | "passive"))
        {
            return Err(format!(
                "a=setup:{} cannot start DTLS: offer actpass",
                shorten(bad)
            ));
        }
        // Several fingerprints are allowed (one per hash function, RFC 8122 §5), the same set
        // on the whole transport: two different ones of a hash function name two certificates.
        // Compared without case: `SHA-256 3A:…` and `sha-256 3a:…` are one certificate.
        let mut fingerprints: Vec<String> = self
            .fingerprints
            .iter()
            .map(|f| f.trim().to_ascii_lowercase())
            .collect();
        fingerprints.sort_unstable();
        fingerprints.dedup();
        for pair in fingerprints.windows(2) {
            let hash = |f: &str| f.split(' ').next().unwrap_or_default().to_owned();
            if hash(&pair[0]) == hash(&pair[1]) {
                return Err("conflicting a=fingerprint values for one hash function".into());
            }
        }
        Ok(())
    }
}

/// At most one distinct value of an attribute across the session and its bundled sections.
fn one_value(name: &str, values: &mut Vec<&str>) -> Result<(), String> {
    values.sort_unstable();
    values.dedup();
    if values.len() > 1 {
        return Err(format!(
            "conflicting {name} values (bundled sections share one ICE transport)"
        ));
    }
    Ok(())
}

/// RFC 8122 §5: `hash-func SP fingerprint`, the fingerprint uppercase hex byte pairs joined by
/// `:` (lowercase is accepted, as browsers' parsers do), as many as the hash has bytes.
fn check_fingerprint(value: &str) -> Result<(), String> {
    let bad = || Err(format!("bad a=fingerprint: {}", shorten(value)));
    let Some((hash, digest)) = value.trim().split_once(' ') else {
        return bad();
    };
    let Some((_, len)) = HASHES.iter().find(|(h, _)| h.eq_ignore_ascii_case(hash)) else {
        return Err(format!(
            "a=fingerprint hash function {} is not one of sha-1, sha-224, sha-256, sha-384, \
             sha-512, md5",
            shorten(hash)
        ));
    };
    let bytes: Vec<&str> = digest.trim().split(':').collect();
    let hex_pairs = bytes
        .iter()
        .all(|b| b.len() == 2 && b.bytes().all(|c| c.is_ascii_hexdigit()));
    if bytes.len() != *len || !hex_pairs {
        return bad();
    }
    Ok(())
}

/// At most 40 characters of a client's value, for a reason.
fn shorten(s: &str) -> String {
    s.chars().take(40).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;

    const FP: &str = "sha-256 3A:1F:9C:44:B2:07:E5:6D:81:0C:F3:2A:97:5B:E8:14:6F:C0:D9:33:A7:58:1E:BB:02:4D:C6:79:E0:12:8F:A5";

    fn sdp(session: &str, sections: &[&str]) -> SessionDescription {
        let mut text = format!(
            "v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\na=group:BUNDLE 0 1\r\n{session}"
        );
        for (i, attrs) in sections.iter().enumerate() {
            text.push_str(&format!(
                "m=audio 9 UDP/TLS/RTP/SAVPF 111\r\nc=IN IP4 0.0.0.0\r\na=mid:{i}\r\n{attrs}"
            ));
        }
        SessionDescription::unmarshal(&mut Cursor::new(text.as_bytes())).unwrap()
    }

    fn creds(ufrag: &str) -> String {
        format!(
            "a=ice-ufrag:{ufrag}\r\na=ice-pwd:9fK2mQ8sLr4TzP1vWc7nYb0e\r\na=fingerprint:{FP}\r\n"
        )
    }

    #[test]
    fn consistent_attributes_pass() {
        assert_eq!(check(&sdp("", &[&creds("Xk3d"), &creds("Xk3d")])), Ok(()));
        assert_eq!(check(&sdp(&creds("Xk3d"), &["", ""])), Ok(()));
        // A second fingerprint of another hash function.
        let two = format!(
            "{}a=fingerprint:sha-1 {}\r\n",
            creds("Xk3d"),
            ["AB"; 20].join(":")
        );
        assert_eq!(check(&sdp("", &[&two])), Ok(()));
        // The same certificate written in another case.
        let upper = format!(
            "a=ice-ufrag:Xk3d\r\na=ice-pwd:9fK2mQ8sLr4TzP1vWc7nYb0e\r\na=fingerprint:{}\r\n",
            FP.to_lowercase().replace("sha-256", "SHA-256")
        );
        assert_eq!(check(&sdp("", &[&creds("Xk3d"), &upper])), Ok(()));
    }

    #[test]
    fn without_bundle_each_section_has_its_own_credentials() {
        let text = format!(
            "v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\n\
             m=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=mid:0\r\n{}\
             m=video 9 UDP/TLS/RTP/SAVPF 96\r\na=mid:1\r\n{}",
            creds("Xk3d"),
            creds("Yy4e")
        );
        let sdp = SessionDescription::unmarshal(&mut Cursor::new(text.as_bytes())).unwrap();
        assert_eq!(check(&sdp), Ok(()));
    }

    #[test]
    fn conflicts_and_bad_values_are_refused() {
        let conflict = check(&sdp("", &[&creds("Xk3d"), &creds("Yy4e")])).unwrap_err();
        assert!(conflict.contains("conflicting a=ice-ufrag"), "{conflict}");
        let session_vs_media = check(&sdp(&creds("Xk3d"), &[&creds("Yy4e")])).unwrap_err();
        assert!(session_vs_media.contains("a=ice-ufrag"));
        assert!(check(&sdp("", &[&creds("ab")]))
            .unwrap_err()
            .contains("4 to 256"));
        assert!(check(&sdp("", &[&creds("Xk3d!")])).is_err());
        let other_cert = format!(
            "{}a=fingerprint:sha-256 {}\r\n",
            creds("Xk3d"),
            ["00"; 32].join(":")
        );
        assert!(check(&sdp("", &[&other_cert]))
            .unwrap_err()
            .contains("conflicting a=fingerprint"));
        for bogus in [
            "sha-256 ZZ:1F",
            "sha-256",
            "sha-256 3A1F9C",
            "sha-999 3A:1F",
            "sha-256 3A:1F:9C",
        ] {
            let attrs = format!("a=ice-ufrag:Xk3d\r\na=ice-pwd:9fK2mQ8sLr4TzP1vWc7nYb0e\r\na=fingerprint:{bogus}\r\n");
            assert!(check(&sdp("", &[&attrs])).is_err(), "{bogus}");
        }
    }
}
