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

/// The forwarded source of each kind, and the video sources' bytes in the current window.
#[derive(Debug, Default)]
pub struct Sources {
    /// Audio, video: the SSRC forwarded and when it last sent.
    current: [Option<(u32, Instant)>; 2],
    /// When the current window started.
    window: Option<Instant>,
    /// Bytes of each video source in the current window.
    bytes: Vec<(u32, u64)>,
}

impl Sources {
    /// Whether a packet of `kind` from `ssrc`, of `bytes`, is forwarded.
    pub fn admits(&mut self, kind: RtpCodecKind, ssrc: u32, bytes: usize, now: Instant) -> bool {
        let video = kind == RtpCodecKind::Video;
        if video {
            self.count(ssrc, bytes as u64, now);
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

    /// Adds `bytes` of `ssrc` to the window; at its end, the video source that carried a
    /// quarter more than the forwarded one (the most of all) replaces it.
    fn count(&mut self, ssrc: u32, bytes: u64, now: Instant) {
        let start = *self.window.get_or_insert(now);
        if now >= start + WINDOW {
            let current = self.current[1].map(|(s, _)| s);
            let carried = |source: Option<u32>| {
                self.bytes
                    .iter()
                    .find(|(s, _)| Some(*s) == source)
                    .map_or(0, |(_, b)| *b)
            };
            let now_bytes = carried(current);
            if let Some(&(best, most)) = self.bytes.iter().max_by_key(|(_, b)| *b) {
                if Some(best) != current && most > now_bytes + now_bytes / 4 {
                    self.current[1] = Some((best, now));
                }
            }
            self.bytes.clear();
            self.window = Some(now);
        }
        if let Some((_, total)) = self.bytes.iter_mut().find(|(s, _)| *s == ssrc) {
            *total += bytes;
        } else if self.bytes.len() < MAX_COUNTED {
            self.bytes.push((ssrc, bytes));
        }
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
                if sources.admits(RtpCodecKind::Video, ssrc, bytes, now) {
                    forwarded.push(ssrc);
                }
            }
        }
        forwarded
    }

    #[test]
    fn the_video_source_carrying_the_most_replaces_the_first_after_a_window() {
        let mut sources = Sources::default();
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
        let mut sources = Sources::default();
        let now = Instant::now();
        assert!(sources.admits(RtpCodecKind::Audio, 7, 100, now));
        assert!(!sources.admits(RtpCodecKind::Audio, 8, 10_000, now));
        // Two video sources within a quarter of each other: the first stays.
        let forwarded = run(&mut sources, now, 500, &[(1, 100), (2, 110)]);
        assert!(forwarded.iter().all(|&s| s == 1));
    }
}
