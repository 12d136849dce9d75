//! A session's ICE state and its side of a PATCH (RFC 9725 §4.3): trickled candidates go to its
//! ICE agent; new remote credentials restart ICE (RFC 8445 §9) under new local ones, on the same
//! peer connection, so DTLS, SRTP and the tracks carry on. What a fragment asks for, the
//! preconditions and the re-offer are pure functions in `negotiate/patch.rs`; the routes of a restart's
//! new ufrag are [`super::super::sessions::Sessions::restarted`]'s.

use std::time::Instant;

use rtc::peer_connection::sdp::RTCSessionDescription;
use rtc::peer_connection::transport::RTCIceCandidateInit;
use tracing::{debug, info};

use super::super::negotiate::answer::sdp_attribute as attribute;
use super::super::negotiate::offer::MAX_REMOTE_CANDIDATES;
use super::super::negotiate::patch::{
    etag, intent, local_sections, precondition, restart_offer, Intent,
};
use super::super::negotiate::peer::{send_only, IceCredentials};
use super::super::{IcePatch, MediaConfig, MediaError, Patched};
use super::{Conn, Link};
use crate::rate::TokenBucket;
use crate::sdpfrag::{self, SdpFrag};
use crate::session::Role;

/// ICE restarts a session may make at once before `--ice-restarts-per-minute` applies.
pub const RESTART_BURST: u32 = 3;

/// Remote ufrags of earlier ICE generations remembered per session (late trickles of older ones
/// are unlikely, and each entry is a few bytes).
const OLD_GENERATIONS: usize = 4;

/// A session's ICE generations.
pub struct Ice {
    /// The local ICE ufrag (routing key and ETag).
    pub(super) ufrag: String,
    /// The local ufrag before the last ICE restart, routed until the restart completes (the new
    /// generation connects): checks of the old one may still be in flight.
    pub(super) previous_ufrag: Option<String>,
    /// Remote ufrags of ICE generations before the current one: a late trickle PATCH of an old
    /// generation is ignored, not taken for a restart back to it.
    old_remote_ufrags: Vec<String>,
    /// Remote candidates taken in the current ICE generation, its offer's and trickled ones
    /// (at most `offer::MAX_REMOTE_CANDIDATES`).
    remote_candidates: usize,
    /// Its ICE restarts (`--ice-restarts-per-minute`).
    restarts: TokenBucket,
}

impl Ice {
    /// The first generation: local `ufrag`, `remote_candidates` taken from the offer.
    pub fn new(ufrag: String, remote_candidates: usize, now: Instant) -> Self {
        Ice {
            ufrag,
            previous_ufrag: None,
            old_remote_ufrags: Vec::new(),
            remote_candidates,
            restarts: TokenBucket::full(RESTART_BURST, now),
        }
    }
}

impl Ice {
    /// `--ice-restarts-per-minute` (0: any number): each restart renegotiates and restarts every
    /// check; one over the rate is refused with the wait.
    fn take_restart(&mut self, per_minute: u32, now: Instant) -> Result<(), Refused> {
        if per_minute == 0 {
            return Ok(());
        }
        let per_second = f64::from(per_minute) / 60.0;
        self.restarts
            .take(now, per_second, RESTART_BURST)
            .map_err(|wait| {
                let wait = wait.as_secs_f64().ceil() as u64;
                Refused::Kept(MediaError::RestartTooSoon(wait))
            })
    }

    /// The client restarted ICE under `ufrag` from the generation of `remote`: only a ufrag
    /// that changed is an earlier generation's (a password-only restart keeps it); the new one
    /// is current, not old, even if it was used before.
    fn new_remote_generation(&mut self, remote: &str, ufrag: &str) {
        let old = &mut self.old_remote_ufrags;
        old.retain(|u| u != ufrag);
        if let Some(old_remote) = attribute(remote, "ice-ufrag").filter(|u| *u != ufrag) {
            old.push(old_remote.to_owned());
            let excess = old.len().saturating_sub(OLD_GENERATIONS);
            old.drain(..excess);
        }
    }
}

/// What a PATCH did to a session.
pub enum Applied {
    /// Candidates added, ignored, or of an earlier generation.
    Trickled,
    /// ICE restarted under the local `ufrag`, to route from now on; `patched` is the answer.
    Restarted { ufrag: String, patched: Patched },
}

/// Why a PATCH was not applied.
pub enum Refused {
    /// Its `If-Match` precondition failed (RFC 9725 §4.3.1): nothing was looked at.
    Precondition(MediaError),
    /// The session carries on as it was.
    Kept(MediaError),
    /// rtc refused the restart: its peer connection is in no state to carry on, so it ends.
    Ended(MediaError),
}

impl Conn {
    /// Applies `patch` to this session, a `role` session.
    pub fn patch(
        &mut self,
        role: Role,
        patch: &IcePatch,
        config: &MediaConfig,
        now: Instant,
    ) -> Result<Applied, Refused> {
        let remote = self.remote_sdp();
        let intent = intent(&patch.frag, &remote, &self.ice.old_remote_ufrags);
        let restart = intent == Intent::Restart;
        precondition(&patch.if_match, &etag(&self.ice.ufrag), restart)
            .map_err(Refused::Precondition)?;
        match intent {
            Intent::Late => {
                self.span
                    .in_scope(|| debug!("trickle of an earlier ICE generation ignored"));
                Ok(Applied::Trickled)
            }
            Intent::Trickle => {
                self.add_candidates(&patch.frag, &remote, config);
                Ok(Applied::Trickled)
            }
            Intent::Restart => self.restart(role, &patch.frag, &remote, config, now),
        }
    }

    /// RFC 9725 §4.3.3: restarts ICE with the client's new credentials and fresh local ones
    /// (which still name this loop), and gives a session that was connected before a new setup
    /// deadline. Restarts are rate-limited per session (429 with the wait).
    fn restart(
        &mut self,
        role: Role,
        frag: &SdpFrag,
        remote: &str,
        config: &MediaConfig,
        now: Instant,
    ) -> Result<Applied, Refused> {
        let (Some(ufrag), Some(pwd)) = (&frag.ufrag, &frag.pwd) else {
            return Err(Refused::Kept(MediaError::CannotApply(
                "no credentials".into(),
            )));
        };
        self.ice.take_restart(config.ice_restarts_per_minute, now)?;
        let index = IceCredentials::loop_of(&self.ice.ufrag).unwrap_or(0);
        let credentials = IceCredentials::random_for(index);
        let offer = restart_offer(remote, ufrag, pwd);
        let local = self
            .renegotiate(role, offer, &credentials, now)
            .map_err(|why| {
                self.span
                    .in_scope(|| info!(error = %why, "ICE restart refused"));
                Refused::Ended(MediaError::CannotApply(why))
            })?;
        self.ice.remote_candidates = 0;
        self.add_candidates(frag, remote, config);
        self.ice.new_remote_generation(remote, ufrag);
        // A session that never connected keeps the deadline its POST set: restarts cannot keep
        // it connecting for ever.
        if self.ever_connected {
            self.setup_deadline = now + config.ice_timeout;
        }
        self.span
            .in_scope(|| info!(ufrag = %credentials.ufrag, "ICE restart"));
        let frag = sdpfrag::build(
            &credentials.ufrag,
            &credentials.pwd,
            &local_sections(&local),
        );
        let etag = etag(&credentials.ufrag);
        Ok(Applied::Restarted {
            ufrag: credentials.ufrag,
            patched: Patched::Restarted { frag, etag },
        })
    }

    /// The re-offer, answer and restart on the peer connection; the local description's text.
    fn renegotiate(
        &mut self,
        role: Role,
        offer: String,
        credentials: &IceCredentials,
        now: Instant,
    ) -> Result<String, String> {
        let pc = self.pc.get();
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
        // Until the new generation selects a pair, the session is connecting again: media
        // waits, and the new setup deadline applies.
        self.link = Link::Connecting;
        Ok(local)
    }

    /// Adds the fragment's candidates to the session's ICE agent. Candidates of an unknown mid,
    /// of the RTCP component (whip-echo multiplexes, RFC 8858), unusable ones
    /// (`MediaHandle::patch` drops those), those rtc refuses (duplicates, mDNS names) and those
    /// beyond [`MAX_REMOTE_CANDIDATES`] per ICE generation, the offer's included, are skipped,
    /// not errors: RFC 8838 §11 lets an agent ignore what it cannot use.
    /// `a=end-of-candidates` needs no action: the agent's own timeouts end the checks.
    fn add_candidates(&mut self, frag: &SdpFrag, remote: &str, config: &MediaConfig) {
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
                self.span.in_scope(
                    || debug!(mid = ?section.mid, "candidates for an unknown mid ignored"),
                );
                continue;
            };
            for candidate in &section.candidates {
                let init = RTCIceCandidateInit {
                    candidate: candidate.clone(),
                    sdp_mid: Some(mids[position].to_owned()),
                    sdp_mline_index: u16::try_from(position).ok(),
                    username_fragment: frag.ufrag.clone(),
                    ..Default::default()
                };
                self.add_candidate(init, config);
            }
        }
    }

    /// Adds one trickled candidate of the RTP component, within the generation's limit.
    fn add_candidate(&mut self, init: RTCIceCandidateInit, config: &MediaConfig) {
        let candidate = init.candidate.clone();
        if candidate.split(' ').nth(1) != Some("1") {
            return;
        }
        if self.ice.remote_candidates >= MAX_REMOTE_CANDIDATES {
            config.metrics.candidates_ignored(1);
            self.span
                .in_scope(|| debug!(%candidate, "trickled candidate over the limit ignored"));
            return;
        }
        self.ice.remote_candidates += 1;
        match self.pc.get().add_remote_candidate(init) {
            Ok(()) => self
                .span
                .in_scope(|| debug!(%candidate, "trickled candidate added")),
            Err(e) => self
                .span
                .in_scope(|| debug!(%candidate, error = %e, "trickled candidate ignored")),
        }
    }

    /// The client's offer as this session holds it now.
    fn remote_sdp(&self) -> String {
        self.pc
            .peek()
            .remote_description()
            .map(|d| d.sdp.clone())
            .unwrap_or_default()
    }
}
