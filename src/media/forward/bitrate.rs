//! The per-session bitrate cap (`--max-bitrate`): a token bucket over a publisher's received RTP,
//! so that one publisher cannot flood its media loop (and every viewer of its stream) with more
//! than an operator allows. Packets over the cap are dropped before fan-out; the publisher's own
//! congestion control sees them as loss (NACKs go unanswered by the cap) and backs off.

use std::time::{Duration, Instant};

/// How much of a second's allowance may arrive at once: a video keyframe is a burst of packets
/// well above the average rate, and must pass whole.
const BURST: Duration = Duration::from_millis(500);
/// The bucket holds at least one full-size packet, or a small cap would pass nothing at all.
const MIN_CAPACITY: f64 = 1500.0;

/// A token bucket in bytes.
#[derive(Debug, Clone)]
pub struct Budget {
    bytes_per_second: f64,
    capacity: f64,
    tokens: f64,
    last: Option<Instant>,
    /// Packets dropped over the cap.
    pub dropped: u64,
}

impl Budget {
    /// A budget of `bits_per_second` (0: unlimited).
    pub fn new(bits_per_second: u64) -> Self {
        let bytes_per_second = bits_per_second as f64 / 8.0;
        let capacity = (bytes_per_second * BURST.as_secs_f64()).max(MIN_CAPACITY);
        Budget {
            bytes_per_second,
            capacity,
            tokens: capacity,
            last: None,
            dropped: 0,
        }
    }

    /// Its rate in bits per second (0: unlimited).
    pub fn bits_per_second(&self) -> u64 {
        (self.bytes_per_second * 8.0) as u64
    }

    /// Whether a packet of `bytes` may pass at `now` (and is then paid for).
    pub fn admit(&mut self, bytes: usize, now: Instant) -> bool {
        if self.bytes_per_second <= 0.0 {
            return true;
        }
        if let Some(last) = self.last {
            let earned = now.saturating_duration_since(last).as_secs_f64() * self.bytes_per_second;
            self.tokens = (self.tokens + earned).min(self.capacity);
        }
        self.last = Some(now);
        let cost = bytes as f64;
        if self.tokens >= cost {
            self.tokens -= cost;
            true
        } else {
            self.dropped += 1;
            false
        }
    }
}

/// An RTP packet's size as counted for the bitrate cap and the metrics: the fixed header, its
/// CSRCs and the payload (extensions left out: a few bytes).
pub fn rtp_bytes(packet: &rtc::rtp::packet::Packet) -> usize {
    12 + 4 * packet.header.csrc.len() + packet.payload.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passes_the_rate_and_a_burst_and_drops_the_rest() {
        let t0 = Instant::now();
        // 80 kbit/s: 10,000 bytes a second, 5,000 at once.
        let mut b = Budget::new(80_000);
        let passed = (0..10).filter(|_| b.admit(1000, t0)).count();
        assert_eq!(passed, 5, "the burst");
        assert_eq!(b.dropped, 5);
        // A second later another 10,000 bytes were earned, capped at the burst.
        let later = t0 + Duration::from_secs(1);
        assert_eq!((0..10).filter(|_| b.admit(1000, later)).count(), 5);
        // Steady: 1,000 bytes every 100 ms is exactly the rate, and all of it passes.
        let mut at = later + Duration::from_millis(500);
        b.admit(0, at);
        for _ in 0..50 {
            at += Duration::from_millis(100);
            assert!(b.admit(1000, at));
        }
    }

    #[test]
    fn a_small_cap_still_passes_full_size_packets_at_its_rate() {
        let t0 = Instant::now();
        let mut b = Budget::new(16_000);
        assert!(b.admit(1200, t0));
        assert!(!b.admit(1200, t0));
        assert!(b.admit(1200, t0 + Duration::from_millis(600)));
    }

    #[test]
    fn zero_is_no_cap() {
        let mut b = Budget::new(0);
        assert!((0..10_000).all(|_| b.admit(1500, Instant::now())));
        assert_eq!(b.dropped, 0);
    }
}
