//! One session inside the media loop: its protocol state only (who it is, its role and stream
//! live in the loop's `Registry`, kept by `Sessions`). The connection classifies what it receives
//! ([`Conn::receive`], `receive.rs`: DTLS before ICE selected a pair is held, `early_dtls.rs`) and says what
//! happened as typed events ([`Conn::poll`], str0m's `Output` habit); the loop decides what they
//! mean for other sessions. Its state is split by role: `ice.rs` (its ICE generations and its
//! side of a PATCH), `ingest.rs` (what it publishes); the legs it sends are `forward/legs.rs`'s.

mod early_dtls;
mod events;
mod fast;
mod ice;
mod ingest;
mod pipeline;
mod receive;
mod report;

use std::time::{Duration, Instant};

use rtc::peer_connection::event::RTCPeerConnectionEvent;
use rtc::peer_connection::message::RTCMessage;
use rtc::peer_connection::state::RTCPeerConnectionState;
use rtc::rtp_transceiver::rtp_sender::RtpCodecKind;
use rtc::sansio::Protocol;
use tracing::{debug, info, Span};

use super::cap::Permit;
use super::forward::legs::Leg;
use super::forward::sources::Sources;
use super::negotiate::peer::Negotiated;
use super::net::transport::PathId;
use crate::ops::metrics::LoopMetrics;
use crate::session::EndReason;
use early_dtls::EarlyDtls;
use fast::FastPath;
use pipeline::Rtc;

pub use events::{Event, Fired, Polled};
use ice::Ice;
pub use ice::{Applied, Refused};
use ingest::Ingest;
pub use report::PatchNote;

/// Connectivity of a session as the media loop sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Link {
    /// ICE and DTLS not yet up; the setup deadline applies.
    Connecting,
    /// Media flows.
    Connected,
    /// Consent checks are failing (RFC 7675); `failed` follows unless the peer comes back.
    Disconnected,
}

impl Link {
    /// As `GET /api/streams` shows it.
    pub fn name(self) -> &'static str {
        match self {
            Link::Connecting => "connecting",
            Link::Connected => "connected",
            Link::Disconnected => "disconnected",
        }
    }
}

/// A session of the media loop.
pub struct Conn {
    pc: Rtc,
    ice: Ice,
    link: Link,
    setup_deadline: Instant,
    /// The earliest deadline this session has armed in the loop's timers.
    armed: Option<Instant>,
    /// One per send track (none for a publisher).
    legs: Vec<Leg>,
    /// What it publishes (unused by a viewer).
    ingest: Ingest,
    span: Span,
    /// DTLS that arrived before ICE selected a pair (see [`Conn::receive`]).
    early_dtls: EarlyDtls,
    /// When its POST was taken (for the connect-time metric).
    started: Instant,
    /// Whether it has been connected once (an ICE restart's reconnect is not a new connect).
    ever_connected: bool,
    /// Cluster mode: a publisher that is this node's pull of the stream from its holder, or a
    /// viewer that is another node's pull of it.
    pull: bool,
    /// Its place under the session cap, given back when the session is dropped.
    permit: Permit,
    /// Its fast path (every answered session; a pull has none): media past rtc's pipeline once
    /// DTLS is up.
    fast: Option<FastPath>,
    /// The path it last taught the loop's routes, and the routes' change count then
    /// (`Sending::learn_sent`).
    learnt: Option<(PathId, u64)>,
    /// What its client did, for its report (`report.rs`).
    facts: Box<report::Facts>,
}

/// How a session starts, besides what its negotiation produced.
pub struct Setup {
    /// When its POST was taken.
    pub started: Instant,
    /// When it must be connected by.
    pub setup_deadline: Instant,
    pub span: Span,
    /// Its place under the session cap.
    pub permit: Permit,
    /// Bits per second it may publish (0: no cap).
    pub max_bitrate: u64,
    /// A pull, in cluster mode.
    pub pull: bool,
    /// Remote candidates its offer carried.
    pub remote_candidates: usize,
    /// The simulcast layer a viewer asked for in its POST (none: the top one).
    pub layer: Option<String>,
    /// What the HTTP plane saw of its POST, for its report.
    pub opening: crate::report::Opening,
}

impl Conn {
    /// A freshly negotiated session, connecting until its setup deadline, with one leg per send
    /// track.
    pub fn new(negotiated: Negotiated, setup: Setup) -> Self {
        let Negotiated {
            pc,
            ufrag,
            tracks,
            codecs,
            payload_types,
            fast,
            ..
        } = negotiated;
        let fast = fast.map(|setup| FastPath::new(setup, &tracks));
        let mut legs: Vec<Leg> = tracks.iter().map(Leg::new).collect();
        if let Some(leg) = legs.iter_mut().find(|l| l.kind == RtpCodecKind::Video) {
            leg.want(setup.layer);
        }
        let remote = pc
            .remote_description()
            .map(|d| d.sdp.clone())
            .unwrap_or_default();
        Conn {
            ingest: Ingest::new(codecs, payload_types, &remote, setup.max_bitrate),
            ice: Ice::new(ufrag, setup.remote_candidates, setup.started),
            pc: Rtc::new(pc),
            link: Link::Connecting,
            setup_deadline: setup.setup_deadline,
            armed: None,
            legs,
            span: setup.span,
            early_dtls: EarlyDtls::default(),
            started: setup.started,
            ever_connected: false,
            pull: setup.pull,
            permit: setup.permit,
            fast,
            learnt: None,
            facts: Box::new(report::Facts::new(setup.opening)),
        }
    }

    /// The loop's timer armed at `at` fired at `now`.
    pub fn fire(&mut self, at: Instant, now: Instant) -> Fired {
        if self.armed != Some(at) {
            return Fired::Stale;
        }
        self.armed = None;
        if self.link == Link::Connecting && now >= self.setup_deadline {
            return Fired::SetupTimeout;
        }
        if let Err(e) = self.pc.get().handle_timeout(now) {
            self.span
                .in_scope(|| debug!(error = %e, "timeout handling failed"));
        }
        self.send_due_rtcp(now);
        Fired::Handled
    }

    /// Drains the peer connection's events and received messages. Received RTP is kept only
    /// when `publishes` (a viewer's media goes nowhere), of the sources the fan-out takes and
    /// within the bitrate cap; what is not is counted.
    /// `polled` is the caller's, empty (reused from one poll to the next).
    pub fn poll(
        &mut self,
        publishes: bool,
        now: Instant,
        metrics: &LoopMetrics,
        polled: &mut Polled,
    ) {
        self.release_early_dtls();
        // A session whose packets all took the fast path gave rtc nothing to give back.
        if !self.pc.take_unpolled() {
            self.poll_fast(publishes, now, metrics, polled);
            return self.polled(polled, now, metrics);
        }
        while let Some(event) = self.pc.draining().poll_event() {
            let RTCPeerConnectionEvent::OnConnectionStateChangeEvent(state) = event else {
                continue;
            };
            self.span.in_scope(|| info!(%state, "connection state"));
            if let Some(event) = self.link_event(state) {
                polled.events.push(event);
            }
        }
        while let Some(message) = self.pc.draining().poll_read() {
            if rtc_util::message_asks_for_keyframe(&message.message)
                && !polled.events.contains(&Event::KeyframeWanted)
            {
                polled.events.push(Event::KeyframeWanted);
            }
            if let RTCMessage::RtpPacket(track, packet) = message.message {
                // The ingest learns the SSRC's kind first (by its track, rtc bound it): the fast
                // path's statistics and feedback go by it.
                let kind = publishes.then(|| {
                    (self.ingest).take(self.pc.draining(), &track, &packet, message.now, metrics)
                });
                let packet = match self.fast.as_mut() {
                    Some(fast) => {
                        let known = self.ingest.kind(packet.header.ssrc);
                        match fast.arrived(packet, known, message.now) {
                            Some(seen) => seen,
                            None => continue,
                        }
                    }
                    None => packet,
                };
                if let Some(Some(kind)) = kind {
                    polled.media.push((kind, packet));
                }
            }
        }
        self.poll_fast(publishes, now, metrics, polled);
        self.polled(polled, now, metrics)
    }

    /// What [`Conn::poll`] found, once the first connect is counted and the bitrate cap applied.
    fn polled(&mut self, polled: &mut Polled, now: Instant, metrics: &LoopMetrics) {
        // The first connect, if the link is up at the end of this poll: counted as connected
        // under the session cap from now on (no longer evictable to make room).
        if !self.ever_connected && self.link == Link::Connected {
            self.ever_connected = true;
            self.permit.connected();
            metrics.connected(now.saturating_duration_since(self.started));
        }
        self.note_progress(!polled.media.is_empty(), now);
        // `--max-bitrate`: what a publisher sends over its budget is not forwarded.
        if !polled.media.is_empty() && self.ingest.admit(&mut polled.media, now, metrics) {
            self.note_capped();
        }
    }

    /// The event of a connection state change, if any.
    fn link_event(&mut self, state: RTCPeerConnectionState) -> Option<Event> {
        match state {
            RTCPeerConnectionState::Connected => {
                self.link = Link::Connected;
                // Its path is read again at the end of the poll (an ICE restart may change it).
                self.note_path_lost();
                Some(Event::Connected)
            }
            RTCPeerConnectionState::Disconnected => {
                self.link = Link::Disconnected;
                Some(Event::Disconnected)
            }
            RTCPeerConnectionState::Failed => Some(Event::Ended(EndReason::Failed)),
            RTCPeerConnectionState::Closed => Some(Event::Ended(EndReason::Closed)),
            _ => None,
        }
    }

    /// The next instant the loop must wake this session: rtc's own deadline, and the setup
    /// deadline while connecting.
    pub fn next_deadline(&mut self) -> Option<Instant> {
        let rtc = [self.pc.deadline(), self.rtcp_deadline()]
            .into_iter()
            .flatten()
            .min();
        if self.link != Link::Connecting {
            return rtc;
        }
        Some(rtc.map_or(self.setup_deadline, |w| w.min(self.setup_deadline)))
    }

    /// The loop's timer slot of this session ([`super::timers::Timers::arm`]).
    pub fn armed(&mut self) -> &mut Option<Instant> {
        &mut self.armed
    }

    /// Queues a DTLS close_notify, so the peer learns at once instead of waiting for its consent
    /// checks to fail (RFC 7675 §5.2); [`Conn::poll_write`] gives it.
    pub fn close(&mut self) {
        let _ = self.pc.get().close();
    }

    /// Whether the peer closed the DTLS transport (close_notify).
    pub fn dtls_closed(&mut self) -> bool {
        rtc_util::dtls_closed(self.pc.get())
    }

    /// A new publisher took its stream over: each leg starts it afresh, at its first keyframe,
    /// even under the old publisher's SSRC.
    pub fn forget_sources(&mut self) {
        for leg in &mut self.legs {
            leg.forwarder.forget_source();
        }
    }

    /// The path it last taught the loop's routes, with their change count then.
    pub fn learnt(&mut self) -> &mut Option<(PathId, u64)> {
        &mut self.learnt
    }

    /// The local ICE ufrag (routing key and ETag).
    pub fn ufrag(&self) -> &str {
        &self.ice.ufrag
    }

    /// The local ufrag before the last ICE restart, while it is still routed.
    pub fn previous_ufrag(&self) -> Option<&str> {
        self.ice.previous_ufrag.as_deref()
    }

    /// Makes `ufrag` the local one (an ICE restart); the ufrag before the previous one, which
    /// stops being routed, comes back.
    pub fn replace_ufrag(&mut self, ufrag: &str) -> Option<String> {
        let old = std::mem::replace(&mut self.ice.ufrag, ufrag.to_owned());
        self.ice.previous_ufrag.replace(old)
    }

    /// Takes the ufrag before the last restart (the restart completed).
    pub fn take_previous_ufrag(&mut self) -> Option<String> {
        self.ice.previous_ufrag.take()
    }

    pub fn link(&self) -> Link {
        self.link
    }

    pub fn span(&self) -> &Span {
        &self.span
    }

    /// Whether it is a pull (cluster mode).
    pub fn pull(&self) -> bool {
        self.pull
    }

    /// How long it has existed.
    pub fn uptime(&self, now: Instant) -> Duration {
        now.saturating_duration_since(self.started)
    }

    /// The codec negotiated per kind: for a publisher, what its packets are.
    pub fn codecs(&self) -> &[(RtpCodecKind, String)] {
        &self.ingest.codecs
    }

    /// [`Conn::codecs`] as the fan-out compares them (`FanOut::codec_ids`).
    pub fn codec_ids(&self) -> [Option<u64>; 2] {
        self.ingest.codec_ids
    }

    /// Its sources, as a publisher.
    pub fn sources(&self) -> &Sources {
        &self.ingest.sources
    }

    /// Its video leg, if it plays video.
    pub fn video_leg(&self) -> Option<&Leg> {
        self.legs.iter().find(|l| l.kind == RtpCodecKind::Video)
    }

    /// Its video leg, to choose a layer.
    pub fn video_leg_mut(&mut self) -> Option<&mut Leg> {
        self.legs.iter_mut().find(|l| l.kind == RtpCodecKind::Video)
    }

    /// RTP its peer connection bound to no track (vendored rtc change 7).
    pub fn unbound_rtp_packets(&self) -> u64 {
        self.pc.peek().unbound_rtp_packets()
    }
}
