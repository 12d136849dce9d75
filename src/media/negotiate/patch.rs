//! PATCH of a live session (RFC 9725 §4.3), the pure part: what a fragment asks for, the
//! `If-Match` preconditions, the entity tag, and the re-offer of an ICE restart. The session's side
//! (candidates to its agent, the restart on its peer connection) is `conn/ice.rs`; the routes of
//! a restart's new ufrag are `Sessions::restarted`'s.

use super::answer::sdp_attribute as attribute;
use crate::media::{IfMatch, MediaError};
use crate::sdpfrag::SdpFrag;

/// What a fragment asks for, given the session's current remote credentials.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(in crate::media) enum Intent {
    /// Candidates or end-of-candidates for the current ICE session.
    Trickle,
    /// Candidates of an earlier ICE generation, arriving after a restart: ignored.
    Late,
    /// New credentials: restart ICE.
    Restart,
}

/// What `frag` asks of a session whose remote description is `remote`.
pub(in crate::media) fn intent(
    frag: &SdpFrag,
    remote: &str,
    old_remote_ufrags: &[String],
) -> Intent {
    let Some(ufrag) = &frag.ufrag else {
        return Intent::Trickle;
    };
    let same = attribute(remote, "ice-ufrag") == Some(ufrag.as_str())
        && attribute(remote, "ice-pwd") == frag.pwd.as_deref();
    if same {
        Intent::Trickle
    } else if old_remote_ufrags.contains(ufrag) {
        Intent::Late
    } else {
        Intent::Restart
    }
}

/// RFC 9725 §4.3.1 with RFC 9110 §13.1.1: a listed entity tag must be the current one (strong
/// comparison: a weak tag never matches); every PATCH must carry `If-Match` ("Missing or outdated
/// ETags in the PATCH requests ... will be answered ... with a 428 Precondition Required response
/// for a missing entity-tag", RFC 6585 §3).
pub(in crate::media) fn precondition(
    if_match: &IfMatch,
    current: &str,
    restart: bool,
) -> Result<(), MediaError> {
    match if_match {
        IfMatch::Absent if restart => Err(MediaError::RestartNeedsIfMatch),
        IfMatch::Absent => Err(MediaError::TrickleNeedsIfMatch),
        IfMatch::Any => Ok(()),
        IfMatch::Tags(tags) if tags.iter().any(|t| t == current) => Ok(()),
        IfMatch::Tags(_) => Err(MediaError::StaleIceSession),
    }
}

/// The entity tag of an ICE session: its local ufrag, quoted.
pub(in crate::media) fn etag(ufrag: &str) -> String {
    format!("\"{ufrag}\"")
}

/// The client's offer again, with the new credentials and without the old generation's
/// candidates (the fragment's own are added after), and the next `o=` version (RFC 3264 §8).
pub(in crate::media) fn restart_offer(remote: &str, ufrag: &str, pwd: &str) -> String {
    let mut out = String::with_capacity(remote.len());
    for line in remote.lines().map(str::trim_end) {
        if line.starts_with("a=candidate:") || line == "a=end-of-candidates" {
            continue;
        }
        let line = if line.starts_with("a=ice-ufrag:") {
            format!("a=ice-ufrag:{ufrag}")
        } else if line.starts_with("a=ice-pwd:") {
            format!("a=ice-pwd:{pwd}")
        } else if let Some(origin) = line.strip_prefix("o=") {
            next_origin_version(origin)
        } else {
            line.to_owned()
        };
        out.push_str(&line);
        out.push_str("\r\n");
    }
    out
}

/// `o=<user> <id> <version> ...` with the version one higher (unchanged if it is not a number).
fn next_origin_version(origin: &str) -> String {
    let mut fields: Vec<String> = origin.split(' ').map(str::to_owned).collect();
    if let Some(version) = fields.get_mut(2) {
        if let Ok(n) = version.parse::<u64>() {
            *version = n.wrapping_add(1).to_string();
        }
    }
    format!("o={}", fields.join(" "))
}

/// The first m-section's mid and RTP-component candidates of a local description: under BUNDLE
/// they are the session's.
pub(in crate::media) fn local_sections(local: &str) -> Vec<(String, Vec<String>)> {
    let first = local.split("\nm=").nth(1).unwrap_or_default();
    let mid = attribute(first, "mid").unwrap_or("0").to_owned();
    let candidates = first
        .lines()
        .map(str::trim_end)
        .filter_map(|l| l.strip_prefix("a="))
        .filter(|c| c.starts_with("candidate:") && c.split(' ').nth(1) == Some("1"))
        .map(str::to_owned)
        .collect();
    vec![(mid, candidates)]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sdpfrag;

    const OFFER: &str = "v=0\r\no=- 42 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n\
        a=group:BUNDLE 0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=mid:0\r\n\
        a=ice-ufrag:old1\r\na=ice-pwd:oldpasswordoldpassword\r\n\
        a=candidate:1 1 udp 2130706431 127.0.0.1 5000 typ host\r\na=end-of-candidates\r\n";

    fn frag(text: &str) -> SdpFrag {
        sdpfrag::parse(text).unwrap()
    }

    #[test]
    fn intent_follows_the_credentials() {
        let none = frag("a=candidate:1 1 udp 1 127.0.0.1 9 typ host\r\n");
        assert_eq!(intent(&none, OFFER, &[]), Intent::Trickle);
        let same = frag("a=ice-ufrag:old1\r\na=ice-pwd:oldpasswordoldpassword\r\n");
        assert_eq!(intent(&same, OFFER, &[]), Intent::Trickle);
        let new = frag("a=ice-ufrag:new1\r\na=ice-pwd:newpasswordnewpassword\r\n");
        assert_eq!(intent(&new, OFFER, &[]), Intent::Restart);
        assert_eq!(intent(&new, OFFER, &["new1".into()]), Intent::Late);
        let new_pwd = frag("a=ice-ufrag:old1\r\na=ice-pwd:anotherpasswordanother\r\n");
        assert_eq!(intent(&new_pwd, OFFER, &[]), Intent::Restart);
    }

    #[test]
    fn preconditions_of_rfc9725_4_3_1() {
        let tag = "\"abc\"";
        assert_eq!(
            precondition(&IfMatch::Absent, tag, false),
            Err(MediaError::TrickleNeedsIfMatch)
        );
        assert_eq!(precondition(&IfMatch::Any, tag, false), Ok(()));
        assert_eq!(
            precondition(&IfMatch::Absent, tag, true),
            Err(MediaError::RestartNeedsIfMatch)
        );
        assert_eq!(precondition(&IfMatch::Any, tag, true), Ok(()));
        let tags = |t: &[&str]| IfMatch::Tags(t.iter().map(|s| s.to_string()).collect());
        assert_eq!(precondition(&tags(&["\"x\"", tag]), tag, true), Ok(()));
        for stale in [tags(&["\"x\""]), tags(&["W/\"abc\""])] {
            for restart in [false, true] {
                assert_eq!(
                    precondition(&stale, tag, restart),
                    Err(MediaError::StaleIceSession)
                );
            }
        }
    }

    #[test]
    fn restart_offer_swaps_credentials_and_drops_candidates() {
        let offer = restart_offer(OFFER, "new1", "newpasswordnewpassword");
        assert!(offer.contains("a=ice-ufrag:new1\r\n"));
        assert!(offer.contains("a=ice-pwd:newpasswordnewpassword\r\n"));
        assert!(!offer.contains("old1") && !offer.contains("a=candidate"));
        assert!(!offer.contains("end-of-candidates"));
        assert!(offer.contains("o=- 42 3 IN IP4 127.0.0.1\r\n"));
        assert!(offer.contains("a=mid:0\r\n"));
    }

    #[test]
    fn local_sections_take_the_first_sections_rtp_candidates() {
        let local = "v=0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=mid:a0\r\n\
            a=candidate:1 1 udp 2130706431 127.0.0.1 5000 typ host\r\n\
            a=candidate:1 2 udp 2130706431 127.0.0.1 5000 typ host\r\n\
            m=video 0 UDP/TLS/RTP/SAVPF 0\r\na=mid:v\r\n\
            a=candidate:9 1 udp 1 127.0.0.1 6000 typ host\r\n";
        let sections = local_sections(local);
        assert_eq!(sections.len(), 1);
        assert_eq!(sections[0].0, "a0");
        assert_eq!(
            sections[0].1,
            ["candidate:1 1 udp 2130706431 127.0.0.1 5000 typ host"]
        );
    }
}
