//! The text edits of rtc's answer, in one small place: rtc has no setting for either, and each
//! is there for a client that needs it.

/// The text edits of rtc's answer, in one place (rtc has no setting for either):
/// [`finish_answer`], then [`complete_rejected_sections`]. The client gets this text, while rtc's
/// `local_description()` keeps its own; the differences are attributes rtc does not act on.
pub fn edit_answer(sdp: &str) -> String {
    complete_rejected_sections(&finish_answer(sdp))
}

/// Final touches on rtc's answer text:
/// - RFC 9725 §4.4.1 (and the WHEP draft): every bundled m-section carries `a=rtcp-mux-only`
///   (RFC 8858 §3), which rtc does not write;
/// - with RTP/RTCP multiplexing there is no RTCP component, so rtc's component-2 copies of the
///   candidates are dropped.
fn finish_answer(sdp: &str) -> String {
    let mut out = String::with_capacity(sdp.len() + 64);
    for line in sdp.lines() {
        let line = line.trim_end();
        if line.is_empty() || line == "a=rtcp-mux-only" || is_rtcp_candidate(line) {
            continue;
        }
        out.push_str(line);
        out.push_str("\r\n");
        if line == "a=rtcp-mux" {
            out.push_str("a=rtcp-mux-only\r\n");
        }
    }
    out
}

/// Gives every rejected m-section (port 0) the session's ICE credentials, DTLS role and
/// fingerprint. rtc writes only `a=mid` there, and GStreamer's webrtcbin (1.22) refuses the whole
/// answer when any section lacks `a=ice-ufrag`, `a=ice-pwd` or `a=setup` ("media 1 is missing or
/// contains an empty 'ice-ufrag' attribute"), although RFC 8843 §7.3.3 leaves a rejected section
/// out of the bundle: its attributes are harmless to every other parser.
fn complete_rejected_sections(sdp: &str) -> String {
    const COPIED: [&str; 4] = ["ice-ufrag", "ice-pwd", "setup", "fingerprint"];
    let values: Vec<(&str, &str)> = COPIED
        .iter()
        .filter_map(|key| sdp_attribute(sdp, key).map(|v| (*key, v)))
        .collect();
    let mut out = String::with_capacity(sdp.len() + 256);
    let mut sections = sdp.split_inclusive('\n').peekable();
    while let Some(line) = sections.next() {
        out.push_str(line);
        if !is_rejected_m_line(line) {
            continue;
        }
        let mut section = String::new();
        while let Some(next) = sections.next_if(|l| !l.starts_with("m=")) {
            section.push_str(next);
        }
        out.push_str(&section);
        for (key, value) in &values {
            if sdp_attribute(&section, key).is_none() {
                out.push_str(&format!("a={key}:{value}\r\n"));
            }
        }
    }
    out
}

/// `m=<media> 0 ...`: an m-line the answer rejects (RFC 8866 §5.14, RFC 3264 §6).
fn is_rejected_m_line(line: &str) -> bool {
    line.strip_prefix("m=")
        .and_then(|rest| rest.split_whitespace().nth(1))
        == Some("0")
}

/// `a=candidate:<foundation> 2 ...`: a candidate for the RTCP component.
fn is_rtcp_candidate(line: &str) -> bool {
    line.strip_prefix("a=candidate:")
        .and_then(|rest| rest.split_whitespace().nth(1))
        == Some("2")
}

/// The value of the first `a=<key>:<value>` line of an SDP text.
pub(in crate::media) fn sdp_attribute<'a>(sdp: &'a str, key: &str) -> Option<&'a str> {
    sdp.lines().find_map(|line| {
        line.trim_end()
            .strip_prefix("a=")?
            .strip_prefix(key)?
            .strip_prefix(':')
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answer_gets_rtcp_mux_only_and_loses_rtcp_candidates() {
        let sdp = "v=0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=rtcp-mux\r\n\
                   a=candidate:1 1 udp 2130706431 127.0.0.1 5000 typ host\r\n\
                   a=candidate:1 2 udp 2130706431 127.0.0.1 5000 typ host\r\n";
        let done = finish_answer(sdp);
        assert!(done.contains("a=rtcp-mux\r\na=rtcp-mux-only\r\n"), "{done}");
        assert!(done.contains(" 1 udp "));
        assert!(!done.contains(" 2 udp "));
        assert_eq!(finish_answer(&done), done, "idempotent");
    }

    #[test]
    fn rejected_sections_get_the_session_credentials() {
        let sdp = "v=0\r\na=fingerprint:sha-256 AB:CD\r\na=group:BUNDLE 0\r\n\
                   m=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=setup:passive\r\na=mid:0\r\n\
                   a=ice-ufrag:uf\r\na=ice-pwd:pw\r\n\
                   m=video 0 UDP/TLS/RTP/SAVPF 0\r\nc=IN IP4 0.0.0.0\r\na=mid:1\r\n\
                   m=application 0 UDP/DTLS/SCTP webrtc-datachannel\r\na=mid:2\r\n";
        let done = complete_rejected_sections(sdp);
        let video = &done[done.find("m=video").unwrap()..done.find("m=application").unwrap()];
        let app = &done[done.find("m=application").unwrap()..];
        for section in [video, app] {
            for line in [
                "a=ice-ufrag:uf\r\n",
                "a=ice-pwd:pw\r\n",
                "a=setup:passive\r\n",
                "a=fingerprint:sha-256 AB:CD\r\n",
            ] {
                assert!(section.contains(line), "{line} in {section}");
            }
        }
        assert!(
            video.starts_with("m=video 0 UDP/TLS/RTP/SAVPF 0\r\nc=IN IP4 0.0.0.0\r\na=mid:1\r\n")
        );
        // The accepted section is untouched, and a second pass changes nothing.
        assert_eq!(
            done[..done.find("m=video").unwrap()],
            sdp[..sdp.find("m=video").unwrap()]
        );
        assert_eq!(complete_rejected_sections(&done), done);
    }

    #[test]
    fn finds_attributes() {
        let sdp = "v=0\r\na=ice-ufrag:abcd\r\na=ice-pwd:xyz\r\n";
        assert_eq!(sdp_attribute(sdp, "ice-ufrag"), Some("abcd"));
        assert_eq!(sdp_attribute(sdp, "ice-pwd"), Some("xyz"));
        assert_eq!(sdp_attribute(sdp, "fingerprint"), None);
    }
}
