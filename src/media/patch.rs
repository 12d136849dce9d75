//! PATCH of a live session (RFC 9725 §4.3): trickled candidates go to the session's ICE agent; new
//! remote credentials restart ICE (RFC 8445 §9) under new local ones, on the same peer connection,
//! so DTLS, SRTP and the tracks carry on. The loop owns the connection, so this runs here; it is a
//! re-offer without any crypto setup, a fraction of a first negotiation.

use std::time::Instant;

use rtc::peer_connection::sdp::RTCSessionDescription;
use rtc::peer_connection::transport::RTCIceCandidateInit;
use tracing::{debug, info};

use super::answer::sdp_attribute as attribute;
use super::conn::{Conn, Link, RESTART_BURST};
use super::event_loop::MediaLoop;
use super::offer::MAX_REMOTE_CANDIDATES;
use super::peer::{send_only, IceCredentials};
use super::routes::SessionKey;
use super::shield::shielded;
use super::{IcePatch, IfMatch, MediaError, Patched};
use crate::metrics::LoopMetrics;
use crate::sdpfrag::{self, SdpFrag};
use crate::session::{EndReason, Role};

/// Remote ufrags of earlier ICE generations remembered per session (late trickles of older ones
/// are unlikely, and each entry is a few bytes).
const OLD_GENERATIONS: usize = 4;

/// What a fragment asks for, given the session's current remote credentials.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Intent {
    /// Candidates or end-of-candidates for the current ICE session.
    Trickle,
    /// Candidates of an earlier ICE generation, arriving after a restart: ignored.
    Late,
    /// New credentials: restart ICE.
    Restart,
}

impl MediaLoop {
    /// Applies `patch` to the live session `key`.
    pub(super) fn patch(
        &mut self,
        key: SessionKey,
        patch: IcePatch,
        now: Instant,
    ) -> Result<Patched, MediaError> {
        let role = self
            .registry
            .session(key)
            .map(|e| e.role)
            .ok_or(MediaError::UnknownResource)?;
        let conn = self
            .sessions
            .get_mut(&key)
            .ok_or(MediaError::UnknownResource)?;
        let remote = conn
            .pc
            .remote_description()
            .map(|d| d.sdp.clone())
            .unwrap_or_default();
        let intent = intent(&patch.frag, &remote, &conn.old_remote_ufrags);
        precondition(
            &patch.if_match,
            &etag(&conn.ufrag),
            intent == Intent::Restart,
        )?;
        let result = match intent {
            Intent::Late => {
                conn.span
                    .in_scope(|| debug!("trickle of an earlier ICE generation ignored"));
                Ok(Patched::Trickled)
            }
            Intent::Trickle => {
                let metrics = &self.config.metrics;
                match shielded(|| add_candidates(conn, &patch.frag, &remote, metrics)) {
                    Ok(()) => Ok(Patched::Trickled),
                    Err(panic) => return Err(self.ended_by_panic(key, &panic)),
                }
            }
            Intent::Restart => self.restart(key, role, &patch.frag, &remote, now),
        };
        self.drive(key, now);
        result
    }

    /// A PATCH on which the session's peer connection panicked: the session ends now, and the
    /// client is told.
    fn ended_by_panic(&mut self, key: SessionKey, panic: &super::shield::Panicked) -> MediaError {
        self.note_panic(key, panic);
        self.end_panicked();
        MediaError::CannotApply("the server failed while applying it; the session ended".into())
    }

    /// RFC 9725 §4.3.3: restarts ICE with the client's new credentials and fresh local ones (which
    /// still name this loop), keeps the old local ufrag routed until the new generation connects
    /// (`drive` drops it then; a second restart before that drops the oldest), and gives a
    /// session that was connected before a new setup deadline. A restart rtc refuses ends the
    /// session: its peer connection is then in no state to carry on. Restarts are rate-limited
    /// per session (429 with the wait).
    fn restart(
        &mut self,
        key: SessionKey,
        role: Role,
        frag: &SdpFrag,
        remote: &str,
        now: Instant,
    ) -> Result<Patched, MediaError> {
        let (Some(ufrag), Some(pwd)) = (&frag.ufrag, &frag.pwd) else {
            return Err(MediaError::CannotApply("no credentials".into()));
        };
        let Some(conn) = self.sessions.get_mut(&key) else {
            return Err(MediaError::UnknownResource);
        };
        // `--ice-restarts-per-minute`: each restart renegotiates and restarts every check.
        let per_minute = self.config.ice_restarts_per_minute;
        if per_minute > 0 {
            let per_second = f64::from(per_minute) / 60.0;
            if let Err(wait) = conn.restarts.take(now, per_second, RESTART_BURST) {
                return Err(MediaError::RestartTooSoon(wait.as_secs_f64().ceil() as u64));
            }
        }
        let index = IceCredentials::loop_of(&conn.ufrag).unwrap_or(0);
        let credentials = IceCredentials::random_for(index);
        let offer = restart_offer(remote, ufrag, pwd);
        let applied = match shielded(|| renegotiate(conn, role, offer, &credentials, now)) {
            Ok(applied) => applied,
            Err(panic) => return Err(self.ended_by_panic(key, &panic)),
        };
        let local = match applied {
            Ok(local) => local,
            Err(why) => {
                conn.span
                    .in_scope(|| info!(error = %why, "ICE restart refused"));
                self.teardown(key, EndReason::Failed);
                return Err(MediaError::CannotApply(why));
            }
        };
        conn.remote_candidates = 0;
        let metrics = &self.config.metrics;
        if let Err(panic) = shielded(|| add_candidates(conn, frag, remote, metrics)) {
            return Err(self.ended_by_panic(key, &panic));
        }
        // Only a ufrag that changed is an earlier generation's (a password-only restart keeps it);
        // the new one is current, not old, even if it was used before.
        conn.old_remote_ufrags.retain(|u| u != ufrag);
        if let Some(old_remote) = attribute(remote, "ice-ufrag").filter(|u| u != ufrag) {
            conn.old_remote_ufrags.push(old_remote.to_owned());
            let excess = conn.old_remote_ufrags.len().saturating_sub(OLD_GENERATIONS);
            conn.old_remote_ufrags.drain(..excess);
        }
        let old = std::mem::replace(&mut conn.ufrag, credentials.ufrag.clone());
        if let Some(older) = conn.previous_ufrag.replace(old) {
            self.routes.remove_ufrag(&older, key);
        }
        self.routes.add_ufrag(&credentials.ufrag, key);
        // A session that never connected keeps the deadline its POST set: restarts cannot keep
        // it connecting for ever.
        if conn.ever_connected {
            conn.setup_deadline = now + self.config.ice_timeout;
        }
        conn.span
            .in_scope(|| info!(ufrag = %credentials.ufrag, "ICE restart"));
        let body = sdpfrag::build(
            &credentials.ufrag,
            &credentials.pwd,
            &local_sections(&local),
        );
        Ok(Patched::Restarted {
            frag: body,
            etag: etag(&credentials.ufrag),
        })
    }
}

/// The re-offer, answer and restart on `conn`'s peer connection; the local description's text.
fn renegotiate(
    conn: &mut Conn,
    role: Role,
    offer: String,
    credentials: &IceCredentials,
    now: Instant,
) -> Result<String, String> {
    let pc = &mut conn.pc;
    pc.set_ice_restart_credentials(credentials.ufrag.clone(), credentials.pwd.clone());
    let offer = RTCSessionDescription::offer(offer).map_err(|e| e.to_string())?;
    pc.set_remote_description(now, offer)
        .map_err(|e| e.to_string())?;
    if role == Role::Viewer {
        send_only(pc);
    }
    let answer = pc.create_answer(None).map_err(|e| e.to_string())?;
    pc.set_local_description(now, answer)
        .map_err(|e| e.to_string())?;
    let local = pc
        .local_description()
        .map(|d| d.sdp)
        .ok_or("no local description")?;
    if attribute(&local, "ice-ufrag") != Some(credentials.ufrag.as_str()) {
        return Err("the answer kept the old ICE credentials".into());
    }
    // Until the new generation selects a pair, the session is connecting again: media waits,
    // and the new setup deadline applies.
    conn.link = Link::Connecting;
    Ok(local)
}

/// What `frag` asks of a session whose remote description is `remote`.
fn intent(frag: &SdpFrag, remote: &str, old_remote_ufrags: &[String]) -> Intent {
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
fn precondition(if_match: &IfMatch, current: &str, restart: bool) -> Result<(), MediaError> {
    match if_match {
        IfMatch::Absent if restart => Err(MediaError::RestartNeedsIfMatch),
        IfMatch::Absent => Err(MediaError::TrickleNeedsIfMatch),
        IfMatch::Any => Ok(()),
        IfMatch::Tags(tags) if tags.iter().any(|t| t == current) => Ok(()),
        IfMatch::Tags(_) => Err(MediaError::StaleIceSession),
    }
}

/// The entity tag of an ICE session: its local ufrag, quoted.
pub(super) fn etag(ufrag: &str) -> String {
    format!("\"{ufrag}\"")
}

/// Adds the fragment's candidates to the session's ICE agent. Candidates of an unknown mid, of the
/// RTCP component (whip-echo multiplexes, RFC 8858), unusable ones (`MediaHandle::patch` drops
/// those), those rtc refuses (duplicates, mDNS names) and those beyond
/// [`MAX_REMOTE_CANDIDATES`] per ICE generation, the offer's included, are skipped, not errors:
/// RFC 8838 §11 lets an agent ignore what it cannot use.
/// `a=end-of-candidates` needs no action: the agent's own timeouts end the checks.
fn add_candidates(conn: &mut Conn, frag: &SdpFrag, remote: &str, metrics: &LoopMetrics) {
    let mids: Vec<&str> = remote
        .lines()
        .filter_map(|l| l.trim_end().strip_prefix("a=mid:"))
        .collect();
    for section in &frag.sections {
        let position = match &section.mid {
            Some(mid) => mids.iter().position(|m| m == mid),
            None => (section.index < mids.len()).then_some(section.index),
        };
        let Some(position) = position else {
            conn.span
                .in_scope(|| debug!(mid = ?section.mid, "candidates for an unknown mid ignored"));
            continue;
        };
        for candidate in &section.candidates {
            if candidate.split(' ').nth(1) != Some("1") {
                continue;
            }
            if conn.remote_candidates >= MAX_REMOTE_CANDIDATES {
                metrics.candidates_ignored(1);
                conn.span
                    .in_scope(|| debug!(%candidate, "trickled candidate over the limit ignored"));
                continue;
            }
            conn.remote_candidates += 1;
            let init = RTCIceCandidateInit {
                candidate: candidate.clone(),
                sdp_mid: Some(mids[position].to_owned()),
                sdp_mline_index: u16::try_from(position).ok(),
                username_fragment: frag.ufrag.clone(),
                ..Default::default()
            };
            match conn.pc.add_remote_candidate(init) {
                Ok(()) => conn
                    .span
                    .in_scope(|| debug!(%candidate, "trickled candidate added")),
                Err(e) => conn
                    .span
                    .in_scope(|| debug!(%candidate, error = %e, "trickled candidate ignored")),
            }
        }
    }
}

/// The client's offer again, with the new credentials and without the old generation's
/// candidates (the fragment's own are added after), and the next `o=` version (RFC 3264 §8).
fn restart_offer(remote: &str, ufrag: &str, pwd: &str) -> String {
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
fn local_sections(local: &str) -> Vec<(String, Vec<String>)> {
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
