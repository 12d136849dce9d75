//! Rewriting a publisher's RTP for one receiving leg (a WHEP viewer, or the echo leg of an `/echo`
//! session).
//!
//! Each leg has its own sender: its SSRC and the payload type negotiated on that leg, and only the
//! header extensions negotiated there (none: whip-echo negotiates no extensions on send legs, so
//! all are stripped). Sequence numbers and timestamps continue across publisher changes (RFC 3550
//! §5.1: a receiver sees one SSRC, so its sequence must not jump when a new publisher takes over).

use std::time::Instant;

use rtc::rtp::header::Header;
use rtc::rtp::packet::Packet;

/// Per-leg rewriting state.
#[derive(Debug, Clone)]
pub struct Forwarder {
    ssrc: u32,
    payload_type: u8,
    /// The leg's RTP clock rate (Opus: 48 kHz, RFC 7587 §4.1; video: 90 kHz).
    clock_rate: u32,
    /// Timestamp advance assumed at a source change when less time has passed (one frame).
    min_gap: u32,
    source: Option<Source>,
    last: Option<Last>,
}

#[derive(Debug, Clone, Copy)]
struct Source {
    ssrc: u32,
    seq_offset: u16,
    ts_offset: u32,
}

#[derive(Debug, Clone, Copy)]
struct Last {
    seq: u16,
    ts: u32,
    at: Instant,
}

impl Forwarder {
    /// A leg that sends with `ssrc` and `payload_type` at `clock_rate`, assuming at least
    /// `min_gap` ticks between two sources.
    pub fn new(ssrc: u32, payload_type: u8, clock_rate: u32, min_gap: u32) -> Self {
        Forwarder {
            ssrc,
            payload_type,
            clock_rate,
            min_gap,
            source: None,
            last: None,
        }
    }

    /// The publisher SSRC this leg forwards now (none before its first packet).
    pub fn source_ssrc(&self) -> Option<u32> {
        self.source.map(|s| s.ssrc)
    }

    /// A new publisher took the stream: whatever SSRC comes next is a new source (its numbers
    /// continue this leg's; a video leg waits for its keyframe), even one equal to the old
    /// publisher's (encoders with a fixed SSRC).
    pub fn forget_source(&mut self) {
        self.source = None;
    }

    /// Rewrites `header` (a copy of the publisher's) for this leg.
    pub fn rewrite(&mut self, header: &mut Header, now: Instant) {
        let source = match self.source {
            Some(s) if s.ssrc == header.ssrc => s,
            _ => self.switch_source(header, now),
        };
        header.sequence_number = header.sequence_number.wrapping_add(source.seq_offset);
        header.timestamp = header.timestamp.wrapping_add(source.ts_offset);
        header.ssrc = self.ssrc;
        header.payload_type = self.payload_type;
        header.extension = false;
        header.extension_profile = 0;
        header.extensions.clear();
        header.extensions_padding = 0;
        let newer = match self.last {
            None => true,
            Some(last) => is_newer(header.sequence_number, last.seq),
        };
        if newer {
            self.last = Some(Last {
                seq: header.sequence_number,
                ts: header.timestamp,
                at: now,
            });
        }
    }

    /// A new publisher SSRC: continue right after the last packet this leg sent, with a timestamp
    /// gap matching the wall-clock pause.
    fn switch_source(&mut self, header: &Header, now: Instant) -> Source {
        let (seq_offset, ts_offset) = match self.last {
            None => (0, 0),
            Some(last) => {
                let elapsed = now.saturating_duration_since(last.at).as_micros() as u64;
                let ticks = elapsed * u64::from(self.clock_rate) / 1_000_000;
                let gap = (ticks.min(u64::from(u32::MAX)) as u32).max(self.min_gap);
                (
                    last.seq
                        .wrapping_add(1)
                        .wrapping_sub(header.sequence_number),
                    last.ts.wrapping_add(gap).wrapping_sub(header.timestamp),
                )
            }
        };
        let source = Source {
            ssrc: header.ssrc,
            seq_offset,
            ts_offset,
        };
        self.source = Some(source);
        source
    }
}

/// A copy of a publisher's `packet` for a leg: the payload shared, the header without the
/// extensions [`Forwarder::rewrite`] strips anyway (so copying them allocates nothing).
pub fn leg_copy(packet: &Packet) -> Packet {
    let h = &packet.header;
    Packet {
        header: Header {
            version: h.version,
            padding: h.padding,
            extension: false,
            marker: h.marker,
            payload_type: h.payload_type,
            sequence_number: h.sequence_number,
            timestamp: h.timestamp,
            ssrc: h.ssrc,
            csrc: h.csrc.clone(),
            extension_profile: 0,
            extensions: Vec::new(),
            extensions_padding: 0,
        },
        payload: packet.payload.clone(),
    }
}

/// RFC 1982 serial number comparison for 16-bit sequence numbers.
fn is_newer(a: u16, b: u16) -> bool {
    a != b && a.wrapping_sub(b) < 0x8000
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn header(ssrc: u32, seq: u16, ts: u32) -> Header {
        Header {
            version: 2,
            ssrc,
            sequence_number: seq,
            timestamp: ts,
            payload_type: 96,
            extension: true,
            extension_profile: 0xBEDE,
            ..Default::default()
        }
    }

    #[test]
    fn first_source_keeps_numbers_and_rewrites_identity() {
        let mut f = Forwarder::new(42, 111, 48_000, 960);
        let mut h = header(7, 100, 5000);
        f.rewrite(&mut h, Instant::now());
        assert_eq!(
            (h.ssrc, h.payload_type, h.sequence_number, h.timestamp),
            (42, 111, 100, 5000)
        );
        assert!(!h.extension && h.extensions.is_empty());
    }

    #[test]
    fn new_publisher_continues_sequence() {
        let t0 = Instant::now();
        let mut f = Forwarder::new(42, 111, 48_000, 960);
        for i in 0..3u16 {
            f.rewrite(&mut header(7, 65534u16.wrapping_add(i), 960 * i as u32), t0);
        }
        // Last sent: seq 0 (wrapped), ts 1920. A new publisher starts at random numbers 1 s later.
        let mut h = header(9, 31337, 777);
        f.rewrite(&mut h, t0 + Duration::from_secs(1));
        assert_eq!(h.sequence_number, 1);
        assert_eq!(h.timestamp, 1920 + 48_000);
        let mut h = header(9, 31338, 777 + 960);
        f.rewrite(&mut h, t0 + Duration::from_secs(1));
        assert_eq!((h.sequence_number, h.timestamp), (2, 1920 + 48_000 + 960));
    }

    #[test]
    fn a_new_publisher_with_the_old_ssrc_is_still_a_new_source() {
        let t0 = Instant::now();
        let mut f = Forwarder::new(42, 96, 90_000, 3000);
        f.rewrite(&mut header(7, 100, 1000), t0);
        f.forget_source();
        assert_eq!(f.source_ssrc(), None);
        // The same SSRC with unrelated numbers: the leg's sequence goes on after its last.
        let mut h = header(7, 5000, 9);
        f.rewrite(&mut h, t0);
        assert_eq!(h.sequence_number, 101);
        assert_eq!(f.source_ssrc(), Some(7));
    }

    #[test]
    fn serial_comparison_wraps() {
        assert!(is_newer(1, 65535));
        assert!(!is_newer(65535, 1));
        assert!(!is_newer(5, 5));
    }
}
