//! A publisher's sources (its SSRCs) and which of them reach a viewer. A viewer's leg carries one
//! stream per kind, so a simulcast publisher's layers, or a second track of a kind, must not be
//! interleaved into it (its forwarder would switch source on every packet).
//!
//! Audio: the first SSRC seen is forwarded until it has been silent for [`SOURCE_SILENCE`].
//! Video: every layer of one track is forwarded to the fan-out, and each viewer's leg takes one
//! ([`Layers::target`]): the layer it asked for by rid while that layer sends, else the top one,
//! the layer that carried the most bytes over the last [`WINDOW`] (learnt from what arrives,
//! never from a rid's name: OBS calls its top layer `0`, browsers `h` or `f`). A leg switches at
//! the new layer's keyframe, asking for one, and keeps the old layer until then (`legs.rs`).

pub use super::layers::{key_id, parse_rid, rid_id, Layers, SsrcSet, MAX_RID_LEN, MAX_SOURCES};
use std::time::{Duration, Instant};

use rtc::rtp_transceiver::rtp_sender::RtpCodecKind;

use super::random_access::{self, Format};

/// How long the source forwarded for a kind may be silent before another SSRC of that kind
/// replaces it (a client that restarts its encoder under a new SSRC, a layer that stops); a layer
/// silent for longer is inactive and no viewer's target.
pub const SOURCE_SILENCE: Duration = Duration::from_secs(1);
/// The period over which sources' bytes are counted and compared.
pub const WINDOW: Duration = Duration::from_secs(1);
/// A source silent this long is forgotten.
const FORGET_AFTER: Duration = Duration::from_secs(10);
/// The top layer silent this long while another layer of its track sends has paused (a browser
/// turning it off under congestion): the layer of its track that carried the most takes over at
/// once, so that viewers on the default do not wait out [`SOURCE_SILENCE`] with nothing.
const TOP_PAUSE: Duration = Duration::from_millis(500);
/// A source is the top layer's candidate at a window's end only if it sent within this of it: a
/// layer that has just stopped (a browser turning its top layer off) is not chosen for its earlier
/// bytes.
const RECENT: Duration = Duration::from_millis(200);

/// One SSRC of a publisher.
#[derive(Debug)]
struct Source {
    ssrc: u32,
    kind: RtpCodecKind,
    /// Its rid (RFC 8851), when rtc bound it by one, and [`rid_id`] of it.
    rid: Option<(String, u64)>,
    /// The track it came on: simulcast layers share one, two video tracks (camera and screen)
    /// do not, and a viewer is never moved between tracks.
    track: String,
    /// This window's bytes and packets, and the last whole window's.
    bytes: u64,
    packets: u64,
    last_bytes: u64,
    last_packets: u64,
    /// The picture size of its last keyframe that carried one.
    size: Option<(u32, u32)>,
    last: Instant,
}

/// A publisher's sources: the forwarded audio source, the top video layer, and each source's
/// counts.
#[derive(Debug)]
pub struct Sources {
    /// Audio, video: the SSRC forwarded (video: the top layer) and when it last sent.
    current: [Option<(u32, Instant)>; 2],
    /// When the current window started.
    window: Option<Instant>,
    sources: Vec<Source>,
    /// The most bytes a layer may carry in a window to be the top one (`--max-bitrate`; 0: any):
    /// a layer over the publisher's cap would reach viewers with its packets cut.
    cap: u64,
    /// How its video marks keyframes and their sizes.
    video_format: Format,
    /// When its first packet came.
    first: Option<Instant>,
    /// Keyframes that started in its video sources (for its client report).
    keyframes: u32,
}

/// A video source as `GET /api/streams` lists it.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct SourceInfo {
    /// `audio` or `video`.
    pub kind: &'static str,
    /// Its SSRC.
    pub ssrc: u32,
    /// Its rid, for a simulcast layer.
    pub rid: Option<String>,
    /// Packets over the last second.
    pub packets_per_second: u64,
    /// Payload bits over the last second.
    pub bits_per_second: u64,
    /// Its picture width, from its last keyframe that carried it (H.264, VP8, VP9).
    pub width: Option<u32>,
    /// Its picture height, likewise.
    pub height: Option<u32>,
    /// Whether it sent within the last second.
    pub active: bool,
    /// Whether it is what viewers get by default (audio: the source forwarded; video: the top
    /// layer).
    pub default: bool,
}

impl Sources {
    /// Sources of a publisher whose bitrate is capped at `max_bitrate` bits a second (0: none),
    /// whose video is of `video_format`.
    pub fn new(max_bitrate: u64, video_format: Format) -> Self {
        Sources {
            current: [None, None],
            window: None,
            sources: Vec::new(),
            cap: max_bitrate / 8 * WINDOW.as_secs().max(1),
            video_format,
            first: None,
            keyframes: 0,
        }
    }

    /// Keyframes that started in its video sources so far.
    pub fn keyframes_seen(&self) -> u32 {
        self.keyframes
    }

    /// Whether it has sent for a whole window: every layer it sends has shown up by then.
    pub fn settled(&self, now: Instant) -> bool {
        self.first.is_some_and(|first| now >= first + WINDOW)
    }

    /// Whether a packet of `kind` from `ssrc` (with `rid`) on `track` goes to the fan-out: the
    /// forwarded audio source's, and every layer of the top video layer's track.
    pub fn admits(
        &mut self,
        kind: RtpCodecKind,
        track: &str,
        ssrc: u32,
        rid: Option<&str>,
        payload: &[u8],
        now: Instant,
    ) -> bool {
        self.tick(now);
        self.first.get_or_insert(now);
        let video = kind == RtpCodecKind::Video;
        let known = self.count(kind, track, ssrc, rid, payload, now);
        let forwarded = if video {
            known.is_some() && self.choose_video(ssrc, now)
        } else {
            let slot = &mut self.current[0];
            match slot {
                Some((current, last)) if *current != ssrc && now < *last + SOURCE_SILENCE => false,
                _ => {
                    *slot = Some((ssrc, now));
                    true
                }
            }
        };
        if let (true, Some(i)) = (video, known) {
            if self.video_format != Format::Any && self.video_format.starts_keyframe(payload) {
                self.keyframes = self.keyframes.wrapping_add(1);
            }
            if let Some(size) = keyframe_size(self.video_format, payload).filter(|_| forwarded) {
                self.sources[i].size = Some(size);
            }
        }
        forwarded
    }

    /// Keeps the top video layer current with a packet of `ssrc` (known); whether the packet is
    /// of the top layer's track. The first layer is the top one at once; a layer whose rid the
    /// top one had replaces it (an encoder restarted under a new SSRC); when the top layer has
    /// paused for [`TOP_PAUSE`], the layer of its track that carried the most and sends now does;
    /// when its whole track has been silent for [`SOURCE_SILENCE`], this one's track takes over.
    fn choose_video(&mut self, ssrc: u32, now: Instant) -> bool {
        let Some((top, last)) = self.current[1] else {
            self.current[1] = Some((ssrc, now));
            return true;
        };
        if top == ssrc {
            self.current[1] = Some((ssrc, now));
            return true;
        }
        let (Some(top_source), Some(this)) = (self.source(top), self.source(ssrc)) else {
            // The top one was forgotten: this one replaces it.
            self.current[1] = Some((ssrc, now));
            return true;
        };
        if top_source.track != this.track {
            let track_sends = self
                .sources
                .iter()
                .any(|s| s.track == top_source.track && now < s.last + SOURCE_SILENCE);
            if now >= last + SOURCE_SILENCE && !track_sends {
                self.current[1] = Some((ssrc, now));
                return true;
            }
            return false;
        }
        let moved = this.rid.is_some()
            && this.rid.as_ref().map(|r| r.1) == top_source.rid.as_ref().map(|r| r.1);
        if moved {
            self.current[1] = Some((ssrc, now));
        } else if now >= last + TOP_PAUSE {
            let track = top_source.track.clone();
            let next = self
                .sources
                .iter()
                .filter(|s| s.track == track && now < s.last + RECENT)
                .max_by_key(|s| (s.last_bytes, s.bytes))
                .map_or(ssrc, |s| s.ssrc);
            self.current[1] = Some((next, now));
        }
        true
    }

    fn source(&self, ssrc: u32) -> Option<&Source> {
        self.sources.iter().find(|s| s.ssrc == ssrc)
    }

    /// Ends the window if it is over: each source's counts move to its last window's, the top
    /// video layer is chosen again, long-silent sources are forgotten.
    fn tick(&mut self, now: Instant) {
        let start = *self.window.get_or_insert(now);
        if now < start + WINDOW {
            return;
        }
        if let Some(best) = self.best(now) {
            self.current[1] = Some((best, now));
        }
        for s in &mut self.sources {
            s.last_bytes = std::mem::take(&mut s.bytes);
            s.last_packets = std::mem::take(&mut s.packets);
        }
        self.sources.retain(|s| now < s.last + FORGET_AFTER);
        self.window = Some(now);
    }

    /// Counts a packet of `ssrc`, learning the source if it is new and there is room. Where it
    /// is in `sources`, if it is known.
    fn count(
        &mut self,
        kind: RtpCodecKind,
        track: &str,
        ssrc: u32,
        rid: Option<&str>,
        payload: &[u8],
        now: Instant,
    ) -> Option<usize> {
        let index = match self.sources.iter().position(|s| s.ssrc == ssrc) {
            Some(i) => i,
            None => {
                if self.sources.len() == MAX_SOURCES {
                    // The longest silent one makes room if it is inactive.
                    let i = self
                        .sources
                        .iter()
                        .enumerate()
                        .min_by_key(|(_, s)| s.last)
                        .map(|(i, _)| i)?;
                    if now < self.sources[i].last + SOURCE_SILENCE {
                        return None;
                    }
                    self.sources.swap_remove(i);
                }
                self.sources.push(Source {
                    ssrc,
                    kind,
                    rid: rid.map(|r| (r.to_owned(), rid_id(r))),
                    track: track.to_owned(),
                    bytes: 0,
                    packets: 0,
                    last_bytes: 0,
                    last_packets: 0,
                    size: None,
                    last: now,
                });
                self.sources.len() - 1
            }
        };
        let source = &mut self.sources[index];
        source.bytes += payload.len() as u64;
        source.packets += 1;
        source.last = now;
        Some(index)
    }

    /// The layer that should become the top one at the end of a window: of the current top's
    /// track, sent lately, within the cap, a quarter more bytes than the current top (the most).
    fn best(&self, now: Instant) -> Option<u32> {
        let (current, _) = self.current[1]?;
        let top = self.source(current)?;
        let (best, most) = self
            .sources
            .iter()
            .filter(|s| s.track == top.track && now < s.last + RECENT)
            .filter(|s| self.cap == 0 || s.bytes <= self.cap)
            .map(|s| (s.ssrc, s.bytes))
            .max_by_key(|(_, bytes)| *bytes)?;
        (best != current && most > top.bytes + top.bytes / 4).then_some(best)
    }

    /// The video layers a viewer's leg can take now.
    pub fn layers(&self, now: Instant) -> Layers {
        let mut layers = Layers {
            top: self.current[1].map(|(s, _)| s),
            ..Layers::default()
        };
        let Some(track) = layers
            .top
            .and_then(|top| self.source(top))
            .map(|s| s.track.as_str())
        else {
            return layers;
        };
        // The active layers with a rid; a rid seen on two SSRCs (an encoder restart) names the
        // one that sent last.
        let mut lasts = [now; MAX_SOURCES];
        for s in &self.sources {
            let Some((_, id)) = s.rid else {
                continue;
            };
            if s.track != track || now >= s.last + SOURCE_SILENCE {
                continue;
            }
            match layers.named[..layers.len]
                .iter()
                .position(|(r, _)| *r == id)
            {
                Some(i) if s.last > lasts[i] => {
                    layers.named[i].1 = s.ssrc;
                    lasts[i] = s.last;
                }
                Some(_) => {}
                None => {
                    layers.named[layers.len] = (id, s.ssrc);
                    lasts[layers.len] = s.last;
                    layers.len += 1;
                }
            }
        }
        layers
    }

    /// The rids it has sent (active or not), each once, in order.
    pub fn rids(&self) -> Vec<&str> {
        let mut rids: Vec<&str> = self
            .sources
            .iter()
            .filter_map(|s| s.rid.as_ref().map(|(rid, _)| rid.as_str()))
            .collect();
        rids.sort_unstable();
        rids.dedup();
        rids
    }

    /// The rid of source `ssrc`, if it has one.
    pub fn rid_of(&self, ssrc: u32) -> Option<&str> {
        self.source(ssrc)?.rid.as_ref().map(|(rid, _)| rid.as_str())
    }

    /// The video sources the publisher sends now (keyframe requests go to each).
    pub fn video_ssrcs(&self) -> impl Iterator<Item = u32> + '_ {
        self.sources
            .iter()
            .filter(|s| s.kind == RtpCodecKind::Video)
            .map(|s| s.ssrc)
    }

    /// Every source, for `GET /api/streams`.
    pub fn info(&self, now: Instant) -> Vec<SourceInfo> {
        let secs = WINDOW.as_secs().max(1);
        let mut list: Vec<SourceInfo> = self
            .sources
            .iter()
            .map(|s| {
                let video = s.kind == RtpCodecKind::Video;
                let active = now < s.last + SOURCE_SILENCE;
                // A source that stopped shows no rate (its counts move only as packets come).
                let rate = |n: u64| if active { n / secs } else { 0 };
                SourceInfo {
                    kind: if video { "video" } else { "audio" },
                    ssrc: s.ssrc,
                    rid: s.rid.as_ref().map(|(r, _)| r.clone()),
                    packets_per_second: rate(s.last_packets),
                    bits_per_second: rate(s.last_bytes * 8),
                    width: s.size.map(|(w, _)| w),
                    height: s.size.map(|(_, h)| h),
                    active,
                    default: self.current[usize::from(video)].is_some_and(|(c, _)| c == s.ssrc),
                }
            })
            .collect();
        // Per kind, the default first, then by bitrate.
        list.sort_by_key(|s| (s.kind, !s.default, std::cmp::Reverse(s.bits_per_second)));
        list
    }
}

/// The size a packet's keyframe carries, if it starts one.
fn keyframe_size(format: Format, payload: &[u8]) -> Option<(u32, u32)> {
    if format == Format::Any || !format.starts_keyframe(payload) {
        return None;
    }
    random_access::resolution(format, payload)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Layers sending `bytes` a tick, for `ticks` ticks of 10 ms from `start`; the SSRCs that
    /// were the top layer at each tick.
    fn run(sources: &mut Sources, start: Instant, ticks: u32, layers: &[(u32, usize)]) -> Vec<u32> {
        let mut tops = Vec::new();
        for t in 0..ticks {
            let now = start + Duration::from_millis(10 * u64::from(t));
            for &(ssrc, bytes) in layers {
                // SSRCs 1 to 9 are layers of one track, 10 and up another's.
                let track = if ssrc < 10 { "camera" } else { "screen" };
                let rid = ["l", "m", "h"].get(ssrc as usize - 1).copied();
                let payload = vec![0u8; bytes];
                sources.admits(RtpCodecKind::Video, track, ssrc, rid, &payload, now);
                tops.extend(sources.layers(now).top);
            }
        }
        tops
    }

    #[test]
    fn the_layer_carrying_the_most_becomes_the_top_one_after_a_window() {
        let mut sources = Sources::new(0, Format::Any);
        let start = Instant::now();
        let layers = [(1, 100), (2, 400), (3, 1600)];
        // The first layer to arrive is the top one at once: nothing is known yet.
        let first = run(&mut sources, start, 100, &layers);
        assert!(
            first.iter().all(|&s| s == 1),
            "layer 1 for the first second"
        );
        // After one window the top layer (the most bytes) is, and stays.
        let later = run(&mut sources, start + WINDOW, 200, &layers);
        assert!(later[3..].iter().all(|&s| s == 3), "{:?}", &later[..5]);
        let now = start + WINDOW * 3;
        assert_eq!(sources.layers(now).target(None), Some(3));
        // A leg that asked for `l` gets it; one that asked for a rid nobody sends gets the top.
        assert_eq!(sources.layers(now).target(Some(rid_id("l"))), Some(1));
        assert_eq!(sources.layers(now).target(Some(rid_id("x"))), Some(3));
        // The top layer stops: after its silence the next one takes over, and `h` is no target.
        let after = start + WINDOW * 4;
        let rest = run(&mut sources, after, 200, &[(1, 100), (2, 400)]);
        assert!(rest.contains(&2) && !rest.contains(&3));
        let now = after + WINDOW * 2;
        assert_eq!(sources.layers(now).target(Some(rid_id("h"))), Some(2));
        let info = sources.info(now);
        assert!(info
            .iter()
            .any(|s| s.rid.as_deref() == Some("h") && !s.active));
        let m = info.iter().find(|s| s.ssrc == 2).unwrap();
        assert!(
            m.default && m.active && m.packets_per_second == 100,
            "{m:?}"
        );
        assert_eq!(m.bits_per_second, 400 * 100 * 8);
    }

    #[test]
    fn every_layer_of_the_track_is_forwarded_audio_keeps_its_first_source() {
        let mut sources = Sources::new(0, Format::Any);
        let now = Instant::now();
        assert!(sources.admits(RtpCodecKind::Audio, "mic", 7, None, b"a", now));
        assert!(!sources.admits(RtpCodecKind::Audio, "mic", 8, None, b"b", now));
        assert!(sources.admits(RtpCodecKind::Video, "cam", 1, Some("l"), b"v", now));
        assert!(sources.admits(RtpCodecKind::Video, "cam", 2, Some("h"), b"v", now));
        // A second video track is not (a viewer's leg carries one track).
        assert!(!sources.admits(RtpCodecKind::Video, "screen", 3, None, b"v", now));
        // Two video layers within a quarter of each other: the first stays the top one.
        let mut sources = Sources::new(0, Format::Any);
        let tops = run(&mut sources, now, 500, &[(1, 100), (2, 110)]);
        assert!(tops.iter().all(|&s| s == 1));
    }

    #[test]
    fn another_track_a_stopped_layer_and_one_over_the_cap_never_become_the_top() {
        let start = Instant::now();
        // A screen track carrying far more than the camera: the camera stays.
        let mut sources = Sources::new(0, Format::Any);
        let tops = run(&mut sources, start, 300, &[(1, 100), (10, 5000)]);
        assert!(tops.iter().all(|&s| s == 1));
        // The top layer sends for the first half of the window only, then stops: not chosen.
        let mut sources = Sources::new(0, Format::Any);
        run(&mut sources, start, 50, &[(1, 100), (3, 5000)]);
        run(
            &mut sources,
            start + Duration::from_millis(500),
            100,
            &[(1, 100)],
        );
        assert_eq!(sources.layers(start + WINDOW * 2).top, Some(1));
        // A cap of 80 kb/s (10 kB a window): the 160 kB layer is not chosen, the 40 kB one is.
        let mut sources = Sources::new(80_000, Format::Any);
        let tops = run(&mut sources, start, 300, &[(1, 10), (2, 40), (3, 1600)]);
        assert!(!tops.contains(&3));
        assert_eq!(tops.last(), Some(&2));
    }

    #[test]
    fn a_paused_top_layer_gives_way_at_once_and_a_moved_rid_is_followed() {
        let mut sources = Sources::new(0, Format::Any);
        let start = Instant::now();
        let tops = run(&mut sources, start, 200, &[(1, 100), (2, 400), (3, 1600)]);
        assert_eq!(tops.last(), Some(&3));
        // The top layer pauses: the next one down takes over after TOP_PAUSE, not after the
        // SOURCE_SILENCE of a stopped source (viewers on the default would see nothing meanwhile).
        let after = start + Duration::from_secs(2);
        let tops = run(&mut sources, after, 70, &[(1, 100), (2, 400)]);
        let switched = tops.iter().position(|&s| s == 2).expect("2 takes over");
        // Its last packet came 10 ms before `after`.
        let at = Duration::from_millis(10 * (switched as u64 / 2) + 10);
        assert!(
            at >= TOP_PAUSE && at < TOP_PAUSE + Duration::from_millis(50),
            "{at:?}"
        );
        // `m` comes back under a new SSRC (an encoder restart): the top follows its rid at once.
        let now = after + Duration::from_secs(1);
        assert!(sources.admits(RtpCodecKind::Video, "camera", 20, Some("m"), b"v", now));
        assert_eq!(sources.layers(now).top, Some(20));
        assert_eq!(sources.layers(now).target(Some(rid_id("m"))), Some(20));
    }

    #[test]
    fn sources_are_bounded_and_a_new_one_replaces_only_an_inactive_one() {
        let mut sources = Sources::new(0, Format::Any);
        let now = Instant::now();
        for ssrc in 0..100 {
            sources.admits(RtpCodecKind::Video, "cam", ssrc, None, b"v", now);
        }
        assert_eq!(sources.info(now).len(), MAX_SOURCES);
        // Once they are silent, new SSRCs take their places.
        let later = now + SOURCE_SILENCE;
        assert!(sources.admits(RtpCodecKind::Video, "cam", 500, None, b"v", later));
        assert!(sources.info(later).iter().any(|s| s.ssrc == 500));
        assert_eq!(sources.info(later).len(), MAX_SOURCES);
        // Forgotten after a long silence.
        let much_later = now + FORGET_AFTER + WINDOW * 2;
        sources.admits(RtpCodecKind::Audio, "mic", 900, None, b"a", much_later);
        sources.admits(
            RtpCodecKind::Audio,
            "mic",
            900,
            None,
            b"a",
            much_later + WINDOW,
        );
        assert_eq!(sources.info(much_later + WINDOW).len(), 1);
    }

    #[test]
    fn a_layer_keyframe_carries_its_size() {
        let mut sources = Sources::new(0, Format::Vp8);
        let now = Instant::now();
        let key = [
            0x10, 0x30, 0x51, 0x00, 0x9d, 0x01, 0x2a, 0x40, 0x01, 0xb4, 0x00,
        ];
        sources.admits(RtpCodecKind::Video, "cam", 1, Some("q"), &key, now);
        let info = sources.info(now);
        assert_eq!((info[0].width, info[0].height), (Some(320), Some(180)));
        assert_eq!(info[0].rid.as_deref(), Some("q"));
    }
}
