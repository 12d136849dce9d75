//! A session's receiving side as a publisher (or an echo): the codecs its packets are, the kinds
//! and rids of its SSRCs, its sources (which reach the fan-out), its bitrate budget and the
//! keyframe requests it is sent.

use std::time::Instant;

use rtc::peer_connection::RTCPeerConnection;
use rtc::rtp::packet::Packet;
use rtc::rtp_transceiver::rtp_sender::RtpCodecKind;
use tracing::{debug, info};

use super::super::forward::bitrate::{rtp_bytes, Budget};
use super::super::forward::keyframes::Keyframes;
use super::super::forward::legs::FanOut;
use super::super::forward::random_access::Format;
use super::super::forward::sources::Sources;
use super::{Conn, Link};
use crate::ops::metrics::{Dropped, LoopMetrics};

/// SSRCs whose kind (and rid) a session remembers at most: a handful of streams, a simulcast
/// publisher's layers, and the SSRCs an encoder restart or layer change brings (rtc binds one per
/// rid).
pub const MAX_RECV_SSRCS: usize = 16;

/// What a publisher sends, as the fan-out needs it.
pub struct Ingest {
    /// The codec negotiated per kind: what its packets are.
    pub(super) codecs: Vec<(RtpCodecKind, String)>,
    /// Their ids as the fan-out compares them, computed once.
    pub(super) codec_ids: [Option<u64>; 2],
    /// The kind of each negotiated payload type.
    payload_types: Vec<(u8, RtpCodecKind)>,
    /// Kinds of the streams received lately, by SSRC.
    recv_kinds: SsrcKinds,
    /// Its sources (SSRCs): which reach the fan-out, its video layers.
    pub(super) sources: Sources,
    /// What it may send (`--max-bitrate`).
    budget: Budget,
    /// Keyframe requests to it, as a publisher of video.
    pub(super) keyframes: Keyframes,
}

impl Ingest {
    /// The receiving side of a session negotiated with `codecs` and `payload_types` from the offer
    /// `remote`, capped at `max_bitrate` bits a second (0: none).
    pub fn new(
        codecs: Vec<(RtpCodecKind, String)>,
        payload_types: Vec<(u8, RtpCodecKind)>,
        remote: &str,
        max_bitrate: u64,
    ) -> Self {
        let video_format = codecs
            .iter()
            .find(|(kind, _)| *kind == RtpCodecKind::Video)
            .map_or(Format::Any, |(kind, key)| Format::of(*kind, key));
        Ingest {
            sources: Sources::new(max_bitrate, video_format),
            budget: Budget::new(max_bitrate),
            keyframes: Keyframes::for_offer(remote),
            recv_kinds: SsrcKinds::default(),
            codec_ids: FanOut::codec_ids(&codecs),
            codecs,
            payload_types,
        }
    }

    /// The kind of a received packet if it reaches the fan-out: of a source the fan-out takes
    /// (`sources.rs`). Counted as `other_source` when not.
    pub fn take(
        &mut self,
        pc: &mut RTCPeerConnection,
        track: &str,
        packet: &Packet,
        now: Instant,
        metrics: &LoopMetrics,
    ) -> Option<RtpCodecKind> {
        let (ssrc, pt) = (packet.header.ssrc, packet.header.payload_type);
        // Every packet rtc hands out has a track, whose kind `kind_of` finds.
        self.kind_of(pc, track, ssrc, pt)?;
        self.take_known(packet, now, metrics)
    }

    /// Keyframes asked of it and sent, if it publishes video (for the client report).
    pub fn keyframe_facts(&self) -> Option<crate::report::Keyframes> {
        let video = self
            .codecs
            .iter()
            .any(|(kind, _)| *kind == RtpCodecKind::Video);
        video.then(|| self.keyframes.facts().clone())
    }

    /// The codecs negotiated (`Codec::key`), for the client report.
    pub fn chosen(&self) -> Vec<String> {
        self.codecs.iter().map(|(_, key)| key.clone()).collect()
    }

    /// The kind of `ssrc`, once known (rtc handed out one of its packets).
    pub fn kind(&self, ssrc: u32) -> Option<RtpCodecKind> {
        self.recv_kinds.get(ssrc)
    }

    /// Whether the kind and track of `ssrc` are known (rtc handed out one of its packets): the
    /// fast path takes its packets then.
    pub fn knows(&self, ssrc: u32) -> bool {
        self.kind(ssrc).is_some()
    }

    /// [`Ingest::take`] for a packet of an SSRC it [`Ingest::knows`]: the fast path's, which has
    /// no track from rtc.
    pub fn take_known(
        &mut self,
        packet: &Packet,
        now: Instant,
        metrics: &LoopMetrics,
    ) -> Option<RtpCodecKind> {
        let ssrc = packet.header.ssrc;
        let (kind, rid, track) = self.recv_kinds.entry(ssrc)?;
        let keyframes = self.sources.keyframes_seen();
        let admitted = (self.sources).admits(kind, track, ssrc, rid, &packet.payload, now);
        if self.sources.keyframes_seen() != keyframes {
            self.keyframes.arrived(now);
        }
        if !admitted {
            metrics.dropped(Dropped::OtherSource, 1);
            return None;
        }
        Some(kind)
    }

    /// `--max-bitrate`: keeps of `media` what the budget admits at `now`, counting the rest;
    /// whether this dropped its first packets (logged once).
    pub fn admit(
        &mut self,
        media: &mut Vec<(RtpCodecKind, Packet)>,
        now: Instant,
        metrics: &LoopMetrics,
    ) -> bool {
        let before = self.budget.dropped;
        media.retain(|(_, p)| {
            let bytes = rtp_bytes(p);
            metrics.received(bytes);
            self.budget.admit(bytes, now)
        });
        metrics.dropped(Dropped::RateCap, self.budget.dropped - before);
        before == 0 && self.budget.dropped > 0
    }

    /// The kind of a received packet, remembered per SSRC after the first lookup: the kind of
    /// the receiver whose track has that SSRC (rtc demultiplexed it by SSRC or mid), else of its
    /// payload type when only one kind uses it, else of the track `track`. Track ids alone do
    /// not do: GStreamer gives every track one msid, and its payloaders all default to payload
    /// type 96, so neither tells audio from video there.
    fn kind_of(
        &mut self,
        pc: &mut RTCPeerConnection,
        track: &str,
        ssrc: u32,
        pt: u8,
    ) -> Option<RtpCodecKind> {
        if let Some(kind) = self.recv_kinds.get(ssrc) {
            return Some(kind);
        }
        let receivers: Vec<_> = pc.get_receivers().collect();
        let mut by_ssrc = None;
        let mut by_track = None;
        let mut rid = None;
        for id in receivers {
            let Some(receiver) = pc.rtp_receiver(id) else {
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
        self.recv_kinds.insert(ssrc, kind, rid, track);
        Some(kind)
    }
}

impl Conn {
    /// Asks this publisher for a keyframe of source `ssrc` (none: of each video source), sent
    /// by [`Conn::send_due_keyframe_request`] now or when its interval ends.
    pub fn want_keyframe(&mut self, ssrc: Option<u32>) {
        self.ingest.keyframes.want(ssrc);
    }

    /// Writes this publisher's pending keyframe request if its interval has ended; whether
    /// something was written (for the loop to flush).
    pub fn send_due_keyframe_request(&mut self, now: Instant) -> bool {
        if self.link != Link::Connected {
            return false;
        }
        let ingest = &mut self.ingest;
        let ssrcs = ingest.keyframes.due(now, ingest.sources.video_ssrcs());
        if ssrcs.is_empty() {
            return false;
        }
        let packets = ingest.keyframes.packets(&ssrcs);
        match rtc_util::write_on_video_receiver(self.pc.get(), packets, now) {
            Ok(()) => self.span.in_scope(|| debug!("keyframe requested")),
            Err(e) => self
                .span
                .in_scope(|| debug!(error = %e, "keyframe request not sent")),
        }
        true
    }

    /// Logs that the bitrate cap dropped this publisher's first packets.
    pub(super) fn note_capped(&self) {
        let cap = self.ingest.budget.bits_per_second();
        self.span
            .in_scope(|| info!(cap, "over the bitrate cap: packets dropped"));
    }
}

/// The kinds (with the rid rtc bound them by and their track) of the last [`MAX_RECV_SSRCS`]
/// SSRCs received, the oldest forgotten first (looked up again from rtc if it comes back).
#[derive(Debug, Default)]
struct SsrcKinds(std::collections::VecDeque<SsrcKind>);

#[derive(Debug)]
struct SsrcKind {
    ssrc: u32,
    kind: RtpCodecKind,
    rid: Option<String>,
    track: String,
}

impl SsrcKinds {
    fn get(&self, ssrc: u32) -> Option<RtpCodecKind> {
        self.0.iter().find(|s| s.ssrc == ssrc).map(|s| s.kind)
    }

    /// The kind of `ssrc`, the rid rtc bound it by, if any, and its track.
    fn entry(&self, ssrc: u32) -> Option<(RtpCodecKind, Option<&str>, &str)> {
        let s = self.0.iter().find(|s| s.ssrc == ssrc)?;
        Some((s.kind, s.rid.as_deref(), &s.track))
    }

    fn insert(&mut self, ssrc: u32, kind: RtpCodecKind, rid: Option<String>, track: &str) {
        if self.0.len() == MAX_RECV_SSRCS {
            self.0.pop_front();
        }
        let track = track.to_owned();
        self.0.push_back(SsrcKind {
            ssrc,
            kind,
            rid,
            track,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_kinds_of_ssrcs_are_bounded_and_the_latest_kept() {
        let mut kinds = SsrcKinds::default();
        for ssrc in 0..100_000 {
            kinds.insert(ssrc, RtpCodecKind::Video, Some("h".into()), "camera");
        }
        assert_eq!(kinds.0.len(), MAX_RECV_SSRCS);
        assert_eq!(kinds.get(99_999), Some(RtpCodecKind::Video));
        assert_eq!(kinds.get(0), None);
        let entry = kinds.entry(99_999);
        assert_eq!(entry, Some((RtpCodecKind::Video, Some("h"), "camera")));
    }
}
