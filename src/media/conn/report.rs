//! A session's side of its client report (`report/`): what its client did after the POST (its
//! PATCHes, the path it connected on, its first media) kept beside the protocol state, and the
//! report built from it and from the fast path's statistics, without calling into rtc (a report
//! is also built after rtc panicked).

use std::time::Instant;

use rtc::shared::{TransportContext, TransportProtocol};

use super::Conn;
use crate::registry::Entry;
use crate::report::{millis as ms, Connectivity, Http, Opening, Report, MAX_TRACKS};
use crate::session::EndReason;

/// What a session keeps for its report.
#[derive(Debug, Default)]
pub struct Facts {
    http: Http,
    offer: crate::report::OfferFacts,
    /// When it first connected, and the path it last connected on.
    connected: Option<Instant>,
    path: Option<TransportContext>,
    /// When its first RTP packet arrived.
    first_media: Option<Instant>,
    /// The server's own session: no report line in the log.
    internal: bool,
}

impl Facts {
    /// The facts of a session whose POST was `opening`.
    pub fn new(opening: Opening) -> Self {
        Facts {
            http: Http {
                user_agent: opening.user_agent,
                auth: opening.auth,
                ..Http::default()
            },
            offer: opening.offer,
            internal: opening.internal,
            ..Facts::default()
        }
    }
}

/// What a PATCH was, for the report.
#[derive(Debug, Clone, Copy)]
pub struct PatchNote {
    /// It came without `If-Match` and was refused for it.
    pub without_if_match: bool,
    /// Candidates it trickled.
    pub candidates: usize,
    pub end_of_candidates: bool,
    /// It asked for an ICE restart.
    pub restart: bool,
}

impl PatchNote {
    /// The note of `frag`, a PATCH that was applied or not (what it trickled counts only if it
    /// was) and restarted ICE or not, or was refused for want of `If-Match`.
    pub fn of(
        frag: &crate::sdpfrag::SdpFrag,
        (applied, restart): (bool, bool),
        without_if_match: bool,
    ) -> Self {
        let candidates = frag.sections.iter().map(|s| s.candidates.len()).sum();
        let end = frag.end_of_candidates || frag.sections.iter().any(|s| s.end_of_candidates);
        PatchNote {
            without_if_match,
            candidates: if applied { candidates } else { 0 },
            end_of_candidates: applied && end,
            restart,
        }
    }
}

impl Conn {
    /// Notes a PATCH that reached the session at `now`.
    pub fn note_patch(&mut self, note: PatchNote, now: Instant) {
        let since = ms(now.saturating_duration_since(self.started));
        let h = &mut self.facts.http;
        h.patches += 1;
        if note.without_if_match {
            h.patches_without_if_match += 1;
            return;
        }
        if note.candidates > 0 {
            h.trickled_candidates = h.trickled_candidates.saturating_add(note.candidates as u32);
            h.first_trickle_ms.get_or_insert(since);
            h.last_trickle_ms = Some(since);
        }
        h.end_of_candidates |= note.end_of_candidates;
        h.ice_restarts += u32::from(note.restart);
    }

    /// Notes, at the end of a poll at `now`, that it is connected (on the path rtc selected) or
    /// received media.
    pub(super) fn note_progress(&mut self, media: bool, now: Instant) {
        if self.link == super::Link::Connected && self.facts.path.is_none() {
            self.facts.connected.get_or_insert(now);
            self.facts.path = self.pc.transport();
        }
        if media {
            self.facts.first_media.get_or_insert(now);
        }
    }

    /// Whether it is the server's own session (no report line in the log).
    pub fn internal(&self) -> bool {
        self.facts.internal
    }

    /// Forgets the path it connected on (an ICE restart may select another).
    pub(super) fn note_path_lost(&mut self) {
        self.facts.path = None;
    }

    /// Its report at `now`, as the session `entry` (ended for `ended`, if it has), without its
    /// findings (`report::findings::judge` adds them when it is read).
    pub fn report(&self, entry: &Entry, ended: Option<EndReason>, now: Instant) -> Report {
        let mut http = self.facts.http.clone();
        http.deleted |= ended == Some(EndReason::Deleted);
        let since =
            |at: Option<Instant>| at.map(|at| ms(at.saturating_duration_since(self.started)));
        let path = self.facts.path;
        let connectivity = Connectivity {
            connected_ms: since(self.facts.connected),
            first_media_ms: since(self.facts.first_media),
            transport: path.map(|p| match p.transport_protocol {
                TransportProtocol::TCP => "tcp",
                _ => "udp",
            }),
            remote: path.map(|p| p.peer_addr.to_string()),
            dtls_role: match self.facts.offer.dtls_setup.as_deref() {
                Some("passive") => "client",
                _ => "server",
            },
        };
        let (mut tracks, rtcp) = match &self.fast {
            Some(fast) => (fast.tracks(now), fast.client_rtcp().clone()),
            None => (Vec::new(), Default::default()),
        };
        tracks.truncate(MAX_TRACKS);
        let state = match (ended, self.link) {
            (Some(_), _) => "ended",
            (None, link) => link.name(),
        };
        Report {
            role: entry.role.name(),
            stream: entry.stream.to_string(),
            state,
            ended: ended.map(EndReason::name),
            age_ms: ms(now.saturating_duration_since(self.started)),
            findings: Vec::new(),
            http,
            offer: self.facts.offer.clone(),
            chosen: self.ingest.chosen(),
            connectivity,
            tracks,
            rtcp,
            keyframes: (entry.role.publishes())
                .then(|| self.ingest.keyframe_facts())
                .flatten(),
        }
    }
}
