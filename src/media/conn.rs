//! One peer connection inside the media loop: its protocol state only (who it is, its role and
//! stream live in the loop's `Registry`).

use std::time::Instant;

use rtc::peer_connection::event::RTCPeerConnectionEvent;
use rtc::peer_connection::message::RTCMessage;
use rtc::peer_connection::state::RTCPeerConnectionState;
use rtc::peer_connection::RTCPeerConnection;
use rtc::rtp::packet::Packet;
use rtc::rtp_transceiver::rtp_sender::RtpCodecKind;
use rtc::rtp_transceiver::RTCRtpSenderId;
use rtc::sansio::Protocol;
use rtc::shared::TaggedBytesMut;
use tracing::{debug, info, Span};

use super::bitrate::Budget;
use super::cap::Permit;
use super::early_dtls::EarlyDtls;
use super::forward::Forwarder;
use super::keyframes::Keyframes;
use super::peer::{Negotiated, SendTrack};
use super::random_access::Format;
use super::sources::{Layers, Sources};
use super::transport::PathId;
use crate::rate::TokenBucket;
use crate::session::EndReason;

/// ICE restarts a session may make at once before `--ice-restarts-per-minute` applies.
pub const RESTART_BURST: u32 = 3;

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

/// One send track of a viewer or echo session: what it carries and how packets are rewritten
/// for it. A session has one leg per negotiated send track, so fan-out matches kinds.
pub struct Leg {
    /// Audio or video.
    pub kind: RtpCodecKind,
    /// The rtc sender that writes this leg's RTP.
    pub sender: RTCRtpSenderId,
    /// The codec negotiated for it ([`super::codecs::Codec::key`]): only packets of the same
    /// codec are forwarded here.
    pub codec: String,
    /// [`super::codecs::key_id`] of `codec`.
    pub codec_id: u64,
    /// Whether a packet of another codec was already refused (logged once).
    pub mismatch_logged: bool,
    /// How its codec marks a keyframe: a new source is switched to only at one.
    pub format: Format,
    /// Rewriting state for this leg.
    pub forwarder: Forwarder,
    /// The simulcast layer its viewer asked for: the rid and its [`super::sources::rid_id`] (none:
    /// the top layer).
    pub wanted: Option<(String, u64)>,
}

impl Leg {
    /// The leg of a negotiated send track; `frame_ticks` is the timestamp advance assumed at a
    /// source change when less time has passed (one 20 ms frame for audio).
    pub fn new(track: &SendTrack) -> Self {
        let frame_ticks = track.clock_rate / 50;
        Leg {
            kind: track.kind,
            sender: track.sender,
            codec: track.codec.clone(),
            codec_id: super::codecs::key_id(&track.codec),
            mismatch_logged: false,
            format: Format::of(track.kind, &track.codec),
            forwarder: Forwarder::new(
                track.ssrc,
                track.payload_type,
                track.clock_rate,
                frame_ticks,
            ),
            wanted: None,
        }
    }

    /// The [`super::sources::rid_id`] of the layer its viewer asked for (none: the top one).
    pub fn wanted_id(&self) -> Option<u64> {
        self.wanted.as_ref().map(|(_, id)| *id)
    }

    /// The layer it plays, or, before its first packet, the one it will (of `layers`).
    pub fn layer(&self, layers: &Layers) -> Option<u32> {
        self.forwarder
            .source_ssrc()
            .or_else(|| layers.target(self.wanted_id()))
    }

    /// What a video leg does with a packet of one of the publisher's `layers`: the layer it
    /// forwards now is forwarded until the one it should forward (its viewer's choice, else the
    /// top layer) starts a keyframe; from that packet on, the new one. So a switch of layers
    /// freezes nothing: the old layer plays until the new one can be decoded.
    pub fn layer_step(&self, layers: &Layers, packet: &Packet) -> LayerStep {
        let ssrc = packet.header.ssrc;
        let current = self.forwarder.source_ssrc();
        let target = layers.target(self.wanted_id());
        if current == Some(ssrc) && layers.has(ssrc) {
            return LayerStep::Forward;
        }
        if target != Some(ssrc) {
            return LayerStep::Other;
        }
        if self.format.starts_keyframe(&packet.payload) {
            LayerStep::Forward
        } else {
            LayerStep::Wait(ssrc)
        }
    }
}

/// What a video leg does with a packet ([`Leg::layer_step`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LayerStep {
    /// Forward it (the layer it forwards, or the first packet of the one it switches to).
    Forward,
    /// Drop it and ask this layer for a keyframe: the leg switches to it at the next one.
    Wait(u32),
    /// Drop it: a layer this leg does not take.
    Other,
}

/// A session of the media loop.
pub struct Conn {
    pub pc: RTCPeerConnection,
    /// The local ICE ufrag (routing key and ETag).
    pub ufrag: String,
    /// The local ufrag before the last ICE restart, routed until the restart completes (the new
    /// generation connects): checks of the old one may still be in flight.
    pub previous_ufrag: Option<String>,
    /// Remote ufrags of ICE generations before the current one: a late trickle PATCH of an old
    /// generation is ignored, not taken for a restart back to it.
    pub old_remote_ufrags: Vec<String>,
    /// Remote candidates taken in the current ICE generation, its offer's and trickled ones
    /// (at most `offer::MAX_REMOTE_CANDIDATES`).
    pub remote_candidates: usize,
    pub link: Link,
    pub setup_deadline: Instant,
    /// The earliest deadline this session has armed in the loop's timers.
    pub armed: Option<Instant>,
    /// One per send track (none for a publisher).
    pub legs: Vec<Leg>,
    /// The codec negotiated per kind: for a publisher, what its packets are.
    pub codecs: Vec<(RtpCodecKind, String)>,
    /// Keyframe requests to this session, as a publisher of video.
    pub keyframes: Keyframes,
    /// What this session may send, as a publisher (`--max-bitrate`).
    pub budget: Budget,
    pub span: Span,
    /// DTLS that arrived before ICE selected a pair (see [`Conn::hold_early_dtls`]).
    pub early_dtls: EarlyDtls,
    /// Kinds of the streams received lately, by SSRC.
    recv_kinds: SsrcKinds,
    /// The kind of each negotiated payload type.
    payload_types: Vec<(u8, RtpCodecKind)>,
    /// Its sources (SSRCs), as a publisher: which reach the fan-out, its video layers.
    pub sources: Sources,
    /// When its POST was taken (for the connect-time metric).
    pub started: Instant,
    /// Whether it has been connected once (an ICE restart's reconnect is not a new connect).
    pub ever_connected: bool,
    /// Cluster mode: a publisher that is this node's pull of the stream from its holder, or a
    /// viewer that is another node's pull of it.
    pub relay: bool,
    /// Its place under the session cap, given back when the session is dropped.
    permit: Permit,
    /// Its ICE restarts (`--ice-restarts-per-minute`).
    pub restarts: TokenBucket,
}

/// SSRCs whose kind (and rid) a session remembers at most: a handful of streams, a simulcast publisher's
/// layers, and the SSRCs an encoder restart or layer change brings (rtc binds one per rid).
pub const MAX_RECV_SSRCS: usize = 16;

/// The kinds of the last [`MAX_RECV_SSRCS`] SSRCs received, the oldest forgotten first (looked
/// up again from rtc if it comes back).
#[derive(Debug, Default)]
struct SsrcKinds(std::collections::VecDeque<(u32, RtpCodecKind, Option<String>)>);

impl SsrcKinds {
    fn get(&self, ssrc: u32) -> Option<RtpCodecKind> {
        self.0.iter().find(|(s, ..)| *s == ssrc).map(|(_, k, _)| *k)
    }

    /// The rid rtc bound `ssrc` by, if any.
    fn rid(&self, ssrc: u32) -> Option<&str> {
        let (.., rid) = self.0.iter().find(|(s, ..)| *s == ssrc)?;
        rid.as_deref()
    }

    fn insert(&mut self, ssrc: u32, kind: RtpCodecKind, rid: Option<String>) {
        if self.0.len() == MAX_RECV_SSRCS {
            self.0.pop_front();
        }
        self.0.push_back((ssrc, kind, rid));
    }
}

/// What draining a session's events and reads produced.
#[derive(Default)]
pub struct Polled {
    /// The connection ended (failed or closed).
    pub ended: Option<EndReason>,
    /// `link` changed.
    pub link_changed: bool,
    /// RTP received from a publishing client, with the kind of the track it came on.
    pub media: Vec<(RtpCodecKind, Packet)>,
    /// The client asked for a keyframe of the video it receives (PLI or FIR).
    pub keyframe_wanted: bool,
    /// RTP not forwarded: of another audio source than the one forwarded, or of a second video
    /// track.
    pub other_source: u64,
}

impl Conn {
    /// A freshly negotiated session, connecting until `setup_deadline`, with one leg per send
    /// track.
    pub fn new(
        negotiated: Negotiated,
        budget: Budget,
        started: Instant,
        setup_deadline: Instant,
        span: Span,
        permit: Permit,
    ) -> Self {
        let Negotiated {
            pc,
            ufrag,
            tracks,
            codecs,
            payload_types,
            ..
        } = negotiated;
        let legs = tracks.iter().map(Leg::new).collect();
        let video_format = codecs
            .iter()
            .find(|(kind, _)| *kind == RtpCodecKind::Video)
            .map_or(Format::Any, |(kind, key)| Format::of(*kind, key));
        let sources = Sources::new(budget.bits_per_second(), video_format);
        let remote = pc
            .remote_description()
            .map(|d| d.sdp.clone())
            .unwrap_or_default();
        Conn {
            keyframes: Keyframes::for_offer(&remote),
            budget,
            pc,
            ufrag,
            previous_ufrag: None,
            old_remote_ufrags: Vec::new(),
            remote_candidates: 0,
            link: Link::Connecting,
            setup_deadline,
            armed: None,
            legs,
            codecs,
            span,
            early_dtls: EarlyDtls::default(),
            recv_kinds: SsrcKinds::default(),
            payload_types,
            sources,
            started,
            ever_connected: false,
            relay: false,
            permit,
            restarts: TokenBucket::full(RESTART_BURST, started),
        }
    }

    /// It connected for the first time: counted as connected under the session cap from now on
    /// (no longer evictable to make room).
    pub fn first_connected(&mut self) {
        self.ever_connected = true;
        self.permit.connected();
    }

    /// Keeps a DTLS datagram that came on `path` before ICE selected a pair, which rtc would
    /// drop (OBS's libjuice sends its ClientHello before it nominates; see `early_dtls.rs` for
    /// what qualifies). Held datagrams go to rtc in order from [`Conn::poll`] once the pair is
    /// selected. Returns the datagram back when it is for rtc now.
    pub fn hold_early_dtls(
        &mut self,
        path: PathId,
        input: TaggedBytesMut,
    ) -> Option<TaggedBytesMut> {
        if self.link != Link::Connecting || self.pair_selected() {
            return Some(input);
        }
        if self.early_dtls.hold(path, input) {
            self.span
                .in_scope(|| debug!("DTLS before ICE nomination: held"));
        }
        None
    }

    /// Whether ICE has selected a candidate pair, so rtc reads DTLS.
    fn pair_selected(&mut self) -> bool {
        rtc_util::dtls_transport(&mut self.pc, |t| {
            t.ice_transport().get_selected_candidate_pair().is_some()
        })
        .unwrap_or(false)
    }

    /// Hands held early DTLS datagrams to rtc once a pair is selected.
    fn release_early_dtls(&mut self) {
        if self.early_dtls.is_empty() || !self.pair_selected() {
            return;
        }
        for input in self.early_dtls.take() {
            if let Err(e) = self.pc.handle_read(input) {
                self.span
                    .in_scope(|| debug!(error = %e, "early DTLS rejected"));
            }
        }
    }

    /// Drains the peer connection's events and received messages; received RTP is kept only
    /// when `publishes` (a viewer's media goes nowhere).
    pub fn poll(&mut self, publishes: bool) -> Polled {
        self.release_early_dtls();
        let mut polled = Polled::default();
        while let Some(event) = self.pc.poll_event() {
            let RTCPeerConnectionEvent::OnConnectionStateChangeEvent(state) = event else {
                continue;
            };
            self.span.in_scope(|| info!(%state, "connection state"));
            match state {
                RTCPeerConnectionState::Connected => self.set_link(Link::Connected, &mut polled),
                RTCPeerConnectionState::Disconnected => {
                    self.set_link(Link::Disconnected, &mut polled)
                }
                RTCPeerConnectionState::Failed => polled.ended = Some(EndReason::Failed),
                RTCPeerConnectionState::Closed => polled.ended = Some(EndReason::Closed),
                _ => {}
            }
        }
        while let Some(message) = self.pc.poll_read() {
            if rtc_util::message_asks_for_keyframe(&message.message) {
                polled.keyframe_wanted = true;
            }
            if let RTCMessage::RtpPacket(track, packet) = message.message {
                if publishes {
                    let (ssrc, pt) = (packet.header.ssrc, packet.header.payload_type);
                    // Every packet rtc hands out has a track, whose kind `kind_of` finds.
                    let Some(kind) = self.kind_of(&track, ssrc, pt) else {
                        continue;
                    };
                    let rid = self.recv_kinds.rid(ssrc);
                    let payload = &packet.payload;
                    if !self
                        .sources
                        .admits(kind, &track, ssrc, rid, payload, message.now)
                    {
                        polled.other_source += 1;
                        continue;
                    }
                    polled.media.push((kind, packet));
                }
            }
        }
        polled
    }

    /// The kind of a received packet, remembered per SSRC after the first lookup: the kind of
    /// the receiver whose track has that SSRC (rtc demultiplexed it by SSRC or mid), else of its
    /// payload type when only one kind uses it, else of the track `track`. Track ids alone do
    /// not do: GStreamer gives every track one msid, and its payloaders all default to payload
    /// type 96, so neither tells audio from video there.
    fn kind_of(&mut self, track: &str, ssrc: u32, pt: u8) -> Option<RtpCodecKind> {
        if let Some(kind) = self.recv_kinds.get(ssrc) {
            return Some(kind);
        }
        let receivers: Vec<_> = self.pc.get_receivers().collect();
        let mut by_ssrc = None;
        let mut by_track = None;
        let mut rid = None;
        for id in receivers {
            let Some(receiver) = self.pc.rtp_receiver(id) else {
                continue;
            };
            let t = receiver.track();
            if t.ssrcs().any(|s| s == ssrc) {
                by_ssrc = Some(t.kind());
                rid = t.rid(ssrc).map(|r| r.to_string());
                break;
            }
            if by_track.is_none() && t.track_id() == track {
                by_track = Some(t.kind());
            }
        }
        let mut kinds_of_pt = self.payload_types.iter().filter(|(p, _)| *p == pt);
        let by_pt = match (kinds_of_pt.next(), kinds_of_pt.next()) {
            (Some((_, kind)), None) => Some(*kind),
            _ => None,
        };
        let kind = by_ssrc.or(by_pt).or(by_track)?;
        self.recv_kinds.insert(ssrc, kind, rid);
        Some(kind)
    }

    fn set_link(&mut self, link: Link, polled: &mut Polled) {
        self.link = link;
        polled.link_changed = true;
    }

    /// The next instant the loop must wake this session: rtc's own deadline, and the setup
    /// deadline while connecting.
    pub fn next_deadline(&mut self) -> Option<Instant> {
        let rtc = self.pc.poll_timeout();
        if self.link != Link::Connecting {
            return rtc;
        }
        Some(rtc.map_or(self.setup_deadline, |w| w.min(self.setup_deadline)))
    }

    /// Whether the peer closed the DTLS transport (close_notify).
    pub fn dtls_closed(&mut self) -> bool {
        rtc_util::dtls_closed(&mut self.pc)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A VP8 video leg, and a VP8 packet of `ssrc`, a key frame or not.
    fn vp8_leg() -> Leg {
        Leg::new(&SendTrack {
            sender: RTCRtpSenderId::default(),
            kind: RtpCodecKind::Video,
            ssrc: 42,
            payload_type: 96,
            clock_rate: 90_000,
            codec: "video/VP8".into(),
        })
    }

    fn vp8(ssrc: u32, key: bool) -> Packet {
        Packet {
            header: rtc::rtp::header::Header {
                ssrc,
                ..Default::default()
            },
            payload: bytes::Bytes::from(vec![0x10, u8::from(!key)]),
        }
    }

    /// What the leg does with `packet`, forwarding it (its rewrite) when it says so.
    fn step(leg: &mut Leg, layers: &Layers, mut packet: Packet) -> LayerStep {
        let step = leg.layer_step(layers, &packet);
        if step == LayerStep::Forward {
            leg.forwarder
                .rewrite(&mut packet.header, std::time::Instant::now());
        }
        step
    }

    #[test]
    fn a_leg_switches_layers_at_a_keyframe_and_keeps_the_old_one_until_then() {
        let (l, m, h) = (1, 2, 3);
        let layers = Layers::of(Some(h), &[("l", l), ("m", m), ("h", h)]);
        let mut leg = vp8_leg();
        // Its first layer (the top one) from a key frame only; the others are not its.
        assert_eq!(step(&mut leg, &layers, vp8(h, false)), LayerStep::Wait(h));
        assert_eq!(step(&mut leg, &layers, vp8(l, true)), LayerStep::Other);
        assert_eq!(step(&mut leg, &layers, vp8(h, true)), LayerStep::Forward);
        assert_eq!(step(&mut leg, &layers, vp8(h, false)), LayerStep::Forward);
        // Its viewer asks for `l`: `h` plays on until `l`'s key frame.
        leg.wanted = Some(("l".into(), super::super::sources::rid_id("l")));
        assert_eq!(step(&mut leg, &layers, vp8(l, false)), LayerStep::Wait(l));
        assert_eq!(step(&mut leg, &layers, vp8(h, false)), LayerStep::Forward);
        assert_eq!(step(&mut leg, &layers, vp8(m, true)), LayerStep::Other);
        assert_eq!(step(&mut leg, &layers, vp8(l, true)), LayerStep::Forward);
        assert_eq!(step(&mut leg, &layers, vp8(h, false)), LayerStep::Other);
        assert_eq!(step(&mut leg, &layers, vp8(l, false)), LayerStep::Forward);
        // `l` stops (no longer a layer): the top one again, at its key frame.
        let without_l = Layers::of(Some(h), &[("m", m), ("h", h)]);
        assert_eq!(
            step(&mut leg, &without_l, vp8(h, false)),
            LayerStep::Wait(h)
        );
        assert_eq!(step(&mut leg, &without_l, vp8(h, true)), LayerStep::Forward);
        // The top one changes while the leg is on the default: the old plays until the new one's
        // key frame.
        leg.wanted = None;
        let m_on_top = Layers::of(Some(m), &[("m", m), ("h", h)]);
        assert_eq!(step(&mut leg, &m_on_top, vp8(h, false)), LayerStep::Forward);
        assert_eq!(step(&mut leg, &m_on_top, vp8(m, false)), LayerStep::Wait(m));
        assert_eq!(step(&mut leg, &m_on_top, vp8(m, true)), LayerStep::Forward);
        assert_eq!(step(&mut leg, &m_on_top, vp8(h, false)), LayerStep::Other);
    }

    #[test]
    fn the_kinds_of_ssrcs_are_bounded_and_the_latest_kept() {
        let mut kinds = SsrcKinds::default();
        for ssrc in 0..100_000 {
            kinds.insert(ssrc, RtpCodecKind::Video, Some("h".into()));
        }
        assert_eq!(kinds.0.len(), MAX_RECV_SSRCS);
        assert_eq!(kinds.get(99_999), Some(RtpCodecKind::Video));
        assert_eq!(kinds.get(0), None);
        assert_eq!(kinds.rid(99_999), Some("h"));
    }
}
