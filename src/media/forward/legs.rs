//! The per-leg half of the fan-out: a viewer's (or an echo's) send legs, one per negotiated send
//! track, each with its codec, its rewriting state (`forwarder.rs`) and the simulcast layer its
//! viewer asked for; and what one fan-out lets each leg take. A leg takes its publisher's codec
//! only, and of video the layer it plays or switches to at a keyframe ([`Leg::layer_step`]); the
//! keyframes legs wait for are gathered for one request. A leg whose sender refuses a packet
//! loses it; nobody waits.

use std::time::Instant;

use bytes::BytesMut;
use rtc::rtp::packet::Packet;
use rtc::rtp_transceiver::rtp_sender::RtpCodecKind;
use rtc::rtp_transceiver::RTCRtpSenderId;
use tracing::{debug, info, Span};

use super::bitrate::rtp_bytes;
use super::forwarder::Forwarder;
use super::random_access::Format;
use super::sources::{key_id, rid_id, Layers, Sources, SsrcSet};
use crate::ops::metrics::{Dropped, LoopMetrics};

/// A send track of a viewer or echo session, as negotiated.
#[derive(Debug, Clone)]
pub struct SendTrack {
    /// The rtc sender that writes it.
    pub sender: RTCRtpSenderId,
    /// Audio or video.
    pub kind: RtpCodecKind,
    /// Its SSRC.
    pub ssrc: u32,
    /// The payload type negotiated for it.
    pub payload_type: u8,
    /// The codec's RTP clock rate.
    pub clock_rate: u32,
    /// The codec's identity (`Codec::key`): what the stream's packets must be to go here.
    pub codec: String,
}

/// One send track of a viewer or echo session: what it carries and how packets are rewritten
/// for it. A session has one leg per negotiated send track, so fan-out matches kinds.
pub struct Leg {
    /// Audio or video.
    pub kind: RtpCodecKind,
    /// The rtc sender that writes this leg's RTP.
    pub sender: RTCRtpSenderId,
    /// The codec negotiated for it (`Codec::key` in `negotiate/codecs.rs`): only packets of the same
    /// codec are forwarded here.
    pub codec: String,
    /// [`key_id`] of `codec`.
    pub codec_id: u64,
    /// Whether a packet of another codec was already refused (logged once).
    pub mismatch_logged: bool,
    /// How its codec marks a keyframe: a new source is switched to only at one.
    pub format: Format,
    /// Rewriting state for this leg.
    pub forwarder: Forwarder,
    /// The simulcast layer its viewer asked for: the rid and its [`super::sources::rid_id`] (none:
    /// the top layer).
    wanted: Option<(String, u64)>,
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
            codec_id: key_id(&track.codec),
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

impl Leg {
    /// Sets the layer its viewer asks for: a rid, or none for the top one.
    pub fn want(&mut self, rid: Option<String>) {
        self.wanted = rid.map(|rid| {
            let id = rid_id(&rid);
            (rid, id)
        });
    }

    /// The rid its viewer asked for, if any.
    pub fn wanted_rid(&self) -> Option<&str> {
        self.wanted.as_ref().map(|(rid, _)| rid.as_str())
    }
}

/// What writes a session's legs: rtc's senders, or the session's fast path (`conn/fast.rs`).
pub trait LegWriter {
    /// Writes `packet`, rewritten for `leg`, at `now` (in one of `buffers`, spare ones, where it
    /// can); none when the leg has no sender.
    fn write(
        &mut self,
        leg: &Leg,
        packet: Packet,
        now: Instant,
        out: (&LoopMetrics, &mut Vec<BytesMut>),
    ) -> Option<Result<(), rtc::shared::error::Error>>;
}

/// What one fan-out knows of its publisher's media, and what its legs found out.
pub struct FanOut {
    /// The codec the publisher sends per kind (audio, video), by [`key_id`] of its key,
    /// so that comparing it per packet allocates nothing: a leg of another codec gets none of it.
    codecs: [Option<u64>; 2],
    /// The video layers each leg chooses from (`sources.rs`), when the batch has video.
    layers: Layers,
    /// The layers whose keyframe a leg waits for: one request asks for them all.
    pub keyframes_wanted: SsrcSet,
    /// The layers some video leg takes or waits for; packets of the others are counted.
    pub taken: SsrcSet,
    /// Whether a leg of the publisher's video codec plays video.
    pub video_legs: bool,
}

impl FanOut {
    /// Writes what of `media` `legs` take, by `writer`: each packet rewritten for its leg and
    /// written for it (in one of `buffers`, the loop's spare ones, where it can).
    pub fn forward_to(
        &mut self,
        (mut writer, legs, span): (impl LegWriter, &mut [Leg], &Span),
        media: &[(RtpCodecKind, Packet)],
        now: Instant,
        (metrics, buffers): (&LoopMetrics, &mut Vec<BytesMut>),
    ) {
        for (kind, packet) in media {
            let Some(leg) = legs.iter_mut().find(|l| l.kind == *kind) else {
                continue;
            };
            if !self.admits(leg, packet, metrics, span) {
                continue;
            }
            let mut packet = super::forwarder::leg_copy(packet);
            leg.forwarder.rewrite(&mut packet.header, now);
            let bytes = rtp_bytes(&packet);
            match writer.write(leg, packet, now, (metrics, &mut *buffers)) {
                Some(Ok(())) => metrics.sent(bytes),
                Some(Err(e)) => {
                    metrics.dropped(Dropped::SendFailed, 1);
                    span.in_scope(|| debug!(error = %e, "RTP not sent"));
                }
                None => {}
            }
        }
    }

    /// The [`key_id`]s of `codecs` per kind (audio, video), as [`FanOut::of`] takes them.
    pub fn codec_ids(codecs: &[(RtpCodecKind, String)]) -> [Option<u64>; 2] {
        let codec_id = |kind: RtpCodecKind| {
            codecs
                .iter()
                .find(|(k, _)| *k == kind)
                .map(|(_, key)| key_id(key))
        };
        [codec_id(RtpCodecKind::Audio), codec_id(RtpCodecKind::Video)]
    }

    /// The fan-out of `media` from a publisher of `codecs` ([`FanOut::codec_ids`]) and
    /// `sources`.
    pub fn of(
        codecs: [Option<u64>; 2],
        sources: &Sources,
        media: &[(RtpCodecKind, Packet)],
        now: Instant,
    ) -> Self {
        let has_video = media.iter().any(|(kind, _)| *kind == RtpCodecKind::Video);
        FanOut {
            codecs,
            layers: if has_video {
                sources.layers(now)
            } else {
                Layers::default()
            },
            keyframes_wanted: SsrcSet::default(),
            taken: SsrcSet::default(),
            video_legs: false,
        }
    }

    /// Whether `leg` takes `packet` now, counting what it does not. First the codec: a leg of
    /// another codec would read the payload by rules that are not its own and wait, asking for
    /// keyframes, for ever. Then the layer (video) or the source (audio) it plays.
    fn admits(
        &mut self,
        leg: &mut Leg,
        packet: &Packet,
        metrics: &LoopMetrics,
        span: &Span,
    ) -> bool {
        let video = leg.kind == RtpCodecKind::Video;
        if self.codecs[usize::from(video)] != Some(leg.codec_id) {
            metrics.dropped(Dropped::CodecMismatch, 1);
            if !leg.mismatch_logged {
                leg.mismatch_logged = true;
                let codec = &leg.codec;
                span.in_scope(|| info!(%codec, "the publisher sends another codec: not forwarded"));
            }
            return false;
        }
        // Audio has one source (`sources.rs`), and every audio packet is a place to start.
        let step = if video {
            self.video_legs = true;
            leg.layer_step(&self.layers, packet)
        } else {
            LayerStep::Forward
        };
        match step {
            LayerStep::Other => false,
            LayerStep::Wait(ssrc) => {
                self.taken.insert(ssrc);
                if video {
                    self.keyframes_wanted.insert(ssrc);
                }
                metrics.dropped(Dropped::AwaitingKeyframe, 1);
                false
            }
            LayerStep::Forward => {
                self.taken.insert(packet.header.ssrc);
                true
            }
        }
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
        leg.want(Some("l".into()));
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
        leg.want(None);
        let m_on_top = Layers::of(Some(m), &[("m", m), ("h", h)]);
        assert_eq!(step(&mut leg, &m_on_top, vp8(h, false)), LayerStep::Forward);
        assert_eq!(step(&mut leg, &m_on_top, vp8(m, false)), LayerStep::Wait(m));
        assert_eq!(step(&mut leg, &m_on_top, vp8(m, true)), LayerStep::Forward);
        assert_eq!(step(&mut leg, &m_on_top, vp8(h, false)), LayerStep::Other);
    }
}
