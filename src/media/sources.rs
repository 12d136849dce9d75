//! Which of a publisher's SSRCs of a kind is forwarded: a viewer's leg carries one stream per
//! kind, so a simulcast publisher's other layers, or a second track of a kind, must not be
//! interleaved into it (its forwarder would switch source on every packet). The first SSRC seen
//! is forwarded until it has been silent for [`SOURCE_SILENCE`]; among video sources, the one
//! that carried the most bytes over the last [`WINDOW`] replaces it (the top simulcast layer,
//! learnt from what arrives, never from a rid's name: OBS calls its top layer `0`, browsers `h`).
//! A viewer's leg then waits for the new source's keyframe, asking for one (`forward.rs`).

use std::time::{Duration, Instant};

use rtc::rtp_transceiver::rtp_sender::RtpCodecKind;

/// How long the source forwarded for a kind may be silent before another SSRC of that kind
/// replaces it (a client that restarts its encoder under a new SSRC, a layer that stops).
pub const SOURCE_SILENCE: Duration = Duration::from_secs(1);
/// The period over which video sources' bytes are compared.
pub const WINDOW: Duration = Duration::from_secs(1);
/// Video sources counted at once (a simulcast offer has a handful of layers); more are not
/// candidates until the next window.
const MAX_COUNTED: usize = 8;
/// A source is a candidate at a window's end only if it sent within this of it: a layer that
/// has just stopped (a browser turning its top layer off) is not chosen for its earlier bytes.
const RECENT: Duration = Duration::from_millis(200);

/// A video source's share of the current window.
#[derive(Debug)]
struct Counted {
    ssrc: u32,
    /// The track it came on: simulcast layers share one, two video tracks (camera and screen)
    /// do not, and a viewer is never moved between tracks by their bitrates.
    track: String,
    bytes: u64,
    last: Instant,
}

/// The forwarded source of each kind, and the video sources' bytes in the current window.
#[derive(Debug, Default)]
pub struct Sources {
    /// Audio, video: the SSRC forwarded and when it last sent.
    current: [Option<(u32, Instant)>; 2],
    /// When the current window started.
    window: Option<Instant>,
    /// Each video source's share of it.
    counted: Vec<Counted>,
    /// The most bytes a source may carry in a window to be chosen (`--max-bitrate`; 0: any): a
    /// layer over the publisher's cap would reach viewers with its packets cut.
    cap: u64,
}

impl Sources {
    /// Sources of a publisher whose bitrate is capped at `max_bitrate` bits a second (0: none).
    pub fn new(max_bitrate: u64) -> Self {
        Sources {
            cap: max_bitrate / 8 * WINDOW.as_secs().max(1),
            ..Sources::default()
        }
    }

    /// Whether a packet of `kind` from `ssrc` on `track`, of `bytes`, is forwarded.
    pub fn admits(
        &mut self,
        kind: RtpCodecKind,
        track: &str,
        ssrc: u32,
        bytes: usize,
        now: Instant,
    ) -> bool {
        let video = kind == RtpCodecKind::Video;
        if video {
            self.count(track, ssrc, bytes as u64, now);
        }
        let slot = &mut self.current[usize::from(video)];
        match slot {
            Some((current, last)) if *current != ssrc && now < *last + SOURCE_SILENCE => false,
            _ => {
                *slot = Some((ssrc, now));
                true
            }
        }
    }

    /// Adds `bytes` of `ssrc` to the window; at its end, the source of the forwarded one's track
    /// that sent lately, within the cap, and carried a quarter more than the forwarded one (the
    /// most of all) replaces it.
    fn count(&mut self, track: &str, ssrc: u32, bytes: u64, now: Instant) {
        let start = *self.window.get_or_insert(now);
        if now >= start + WINDOW {
            if let Some(best) = self.best(now) {
                self.current[1] = Some((best, now));
            }
            self.counted.clear();
            self.window = Some(now);
        }
        if let Some(c) = self.counted.iter_mut().find(|c| c.ssrc == ssrc) {
            c.bytes += bytes;
            c.last = now;
        } else if self.counted.len() < MAX_COUNTED {
            self.counted.push(Counted {
                ssrc,
                track: track.to_owned(),
                bytes,
                last: now,
            });
        }
    }

    /// The source that should replace the forwarded video source at the end of a window.
    fn best(&self, now: Instant) -> Option<u32> {
        let (current, _) = self.current[1]?;
        let forwarded = self.counted.iter().find(|c| c.ssrc == current)?;
        let (best, most) = self
            .counted
            .iter()
            .filter(|c| c.track == forwarded.track && now < c.last + RECENT)
            .filter(|c| self.cap == 0 || c.bytes <= self.cap)
            .map(|c| (c.ssrc, c.bytes))
            .max_by_key(|(_, bytes)| *bytes)?;
        (best != current && most > forwarded.bytes + forwarded.bytes / 4).then_some(best)
    }

    /// The video source forwarded, if any.
    #[cfg(test)]
    fn video(&self) -> Option<u32> {
        self.current[1].map(|(s, _)| s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Three layers of 1, 4 and 16 units a tick, for `ticks` ticks of 10 ms from `start`; the
    /// SSRCs the video admitted at each tick.
    fn run(sources: &mut Sources, start: Instant, ticks: u32, layers: &[(u32, usize)]) -> Vec<u32> {
        let mut forwarded = Vec::new();
        for t in 0..ticks {
            let now = start + Duration::from_millis(10 * u64::from(t));
            for &(ssrc, bytes) in layers {
                // SSRCs 1 to 9 are layers of one track, 10 and up another's.
                let track = if ssrc < 10 { "camera" } else { "screen" };
                if sources.admits(RtpCodecKind::Video, track, ssrc, bytes, now) {
                    forwarded.push(ssrc);
                }
            }
        }
        forwarded
    }

    #[test]
    fn the_video_source_carrying_the_most_replaces_the_first_after_a_window() {
        let mut sources = Sources::new(0);
        let start = Instant::now();
        let layers = [(1, 100), (2, 400), (3, 1600)];
        // The first layer to arrive is forwarded at once: nothing is known yet.
        let first = run(&mut sources, start, 100, &layers);
        assert!(
            first.iter().all(|&s| s == 1),
            "only layer 1 for the first second"
        );
        // After one window the top layer (the most bytes) is forwarded, and stays.
        let later = run(&mut sources, start + WINDOW, 200, &layers);
        assert!(later.iter().all(|&s| s == 3), "{:?}", &later[..5]);
        assert_eq!(sources.video(), Some(3));
        // The top layer stops: after its silence the next one takes over.
        let after = start + WINDOW * 4;
        let rest = run(&mut sources, after, 200, &[(1, 100), (2, 400)]);
        assert!(rest.contains(&2) && !rest.contains(&3));
        assert_eq!(sources.video(), Some(2));
    }

    #[test]
    fn audio_keeps_its_first_source_and_similar_layers_do_not_flap() {
        let mut sources = Sources::new(0);
        let now = Instant::now();
        assert!(sources.admits(RtpCodecKind::Audio, "mic", 7, 100, now));
        assert!(!sources.admits(RtpCodecKind::Audio, "mic", 8, 10_000, now));
        // Two video sources within a quarter of each other: the first stays.
        let forwarded = run(&mut sources, now, 500, &[(1, 100), (2, 110)]);
        assert!(forwarded.iter().all(|&s| s == 1));
    }

    #[test]
    fn another_track_a_stopped_layer_and_one_over_the_cap_are_never_chosen() {
        let start = Instant::now();
        // A screen track carrying far more than the camera: the camera stays.
        let mut sources = Sources::new(0);
        let forwarded = run(&mut sources, start, 300, &[(1, 100), (10, 5000)]);
        assert!(forwarded.iter().all(|&s| s == 1));
        // The top layer sends for the first half of the window only, then stops: not chosen.
        let mut sources = Sources::new(0);
        run(&mut sources, start, 50, &[(1, 100), (3, 5000)]);
        run(
            &mut sources,
            start + Duration::from_millis(500),
            100,
            &[(1, 100)],
        );
        assert_eq!(sources.video(), Some(1));
        // A cap of 80 kb/s (10 kB a window): the 160 kB layer is not chosen, the 40 kB one is.
        let mut sources = Sources::new(80_000);
        let forwarded = run(&mut sources, start, 300, &[(1, 10), (2, 40), (3, 1600)]);
        assert!(!forwarded.contains(&3));
        assert_eq!(sources.video(), Some(2));
    }
}
