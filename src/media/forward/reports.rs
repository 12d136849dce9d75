//! RTCP reports of the fast path (RFC 3550 §6.4), kept by the path itself since its packets no
//! longer pass rtc's report interceptors: per received SSRC the statistics of RFC 3550 A.1
//! (extended highest sequence number, cycles), A.3 (cumulative and interval loss) and A.8
//! (interarrival jitter), with the last sender report heard (LSR/DLSR, §6.4.1); per send leg the
//! packet and octet counts and the RTP time that a sender report pairs with its NTP time. Pure:
//! the caller passes the time.

use std::collections::VecDeque;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rtc::rtcp::reception_report::ReceptionReport;
use rtc::rtcp::sender_report::SenderReport;
use rtc::rtp::header::Header;

/// How often a session reports on average (what rtc's report interceptors did, so clients see
/// the same), each interval drawn from 0.5 to 1.5 times it (RFC 3550 §6.3.5) so that sessions
/// created together do not report in step.
pub const REPORT_INTERVAL: Duration = Duration::from_secs(1);

/// RFC 3550 A.1: a jump of more than this many sequence numbers ahead is a restart.
const MAX_DROPOUT: u16 = 3000;
/// RFC 3550 A.1: a packet this far behind is late, not a restart.
const MAX_MISORDER: u16 = 100;
/// Seconds from 1900 (NTP's era 0) to 1970.
const NTP_UNIX_OFFSET: u64 = 2_208_988_800;

/// What one received SSRC looked like, for its reception report block.
#[derive(Debug, Clone)]
pub struct Received {
    ssrc: u32,
    clock_rate: u32,
    /// When the first packet arrived: arrival times are counted from here, in RTP units.
    epoch: Instant,
    max_seq: u16,
    /// Sequence number cycles, shifted (RFC 3550 A.1 `cycles`).
    cycles: u32,
    base_seq: u32,
    /// The sequence number after which a jump was seen, if the next one confirms a restart.
    bad_seq: Option<u16>,
    received: u32,
    expected_prior: u32,
    received_prior: u32,
    /// Relative transit time of the last packet (RTP units), for the jitter.
    transit: Option<i64>,
    /// RFC 3550 A.8's estimate, scaled by 16.
    jitter: u64,
    /// The middle 32 bits of the NTP time of the last sender report from this SSRC, and when it
    /// arrived.
    last_sr: Option<(u32, Instant)>,
    /// When its last packet arrived.
    heard: Instant,
    /// Whether it sent since the last report (RFC 3550 §6.4: blocks only for those).
    heard_since_report: bool,
    /// RTP bytes received (for the client report).
    bytes: u64,
}

impl Received {
    /// The statistics of `ssrc` (at `clock_rate`) from its first packet, `header`, at `now`.
    pub fn new(ssrc: u32, clock_rate: u32, header: &Header, now: Instant) -> Self {
        let mut received = Received {
            ssrc,
            clock_rate: clock_rate.max(1),
            epoch: now,
            max_seq: header.sequence_number,
            cycles: 0,
            base_seq: u32::from(header.sequence_number),
            bad_seq: None,
            received: 0,
            expected_prior: 0,
            received_prior: 0,
            transit: None,
            jitter: 0,
            last_sr: None,
            heard: now,
            heard_since_report: true,
            bytes: 0,
        };
        received.jitter_of(header.timestamp, now);
        received.received = 1;
        received
    }

    pub fn ssrc(&self) -> u32 {
        self.ssrc
    }

    /// Counts a packet with `header` that arrived at `now` (RFC 3550 A.1 `update_seq`, without
    /// probation: the fast path counts only packets that authenticated).
    pub fn packet(&mut self, header: &Header, now: Instant) {
        self.heard = now;
        self.heard_since_report = true;
        let seq = header.sequence_number;
        let delta = seq.wrapping_sub(self.max_seq);
        if delta < MAX_DROPOUT {
            if seq < self.max_seq {
                self.cycles = self.cycles.wrapping_add(1 << 16);
            }
            self.max_seq = seq;
        } else if u32::from(delta) <= (1 << 16) - u32::from(MAX_MISORDER) {
            // A large jump: a restart if the next packet follows this one.
            if self.bad_seq == Some(seq) {
                self.restart(seq);
            } else {
                self.bad_seq = Some(seq.wrapping_add(1));
                return;
            }
        }
        // Otherwise a duplicate or a late packet: counted, the maximum unchanged.
        self.received = self.received.wrapping_add(1);
        self.jitter_of(header.timestamp, now);
    }

    /// RFC 3550 A.1 `init_seq`: the sender restarted its numbering at `seq`.
    fn restart(&mut self, seq: u16) {
        self.max_seq = seq;
        self.cycles = 0;
        self.base_seq = u32::from(seq);
        self.bad_seq = None;
        self.received = 0;
        self.expected_prior = 0;
        self.received_prior = 0;
    }

    /// RFC 3550 A.8: the jitter after a packet of RTP time `timestamp` arrived at `now`.
    fn jitter_of(&mut self, timestamp: u32, now: Instant) {
        let elapsed = now.saturating_duration_since(self.epoch).as_micros() as u64;
        let arrival = (elapsed * u64::from(self.clock_rate) / 1_000_000) as i64;
        let transit = arrival - i64::from(timestamp);
        if let Some(last) = self.transit.replace(transit) {
            // Transit differences are taken modulo 2^32, the timestamp's range.
            let d = u64::from(((transit - last) as i32).unsigned_abs());
            // J += (|D| - J) / 16, kept scaled by 16 (A.8's integer form).
            self.jitter = self.jitter + d - ((self.jitter + 8) >> 4);
        }
    }

    /// A sender report from this SSRC with NTP time `ntp` arrived at `now`.
    pub fn sender_report(&mut self, ntp: u64, now: Instant) {
        self.last_sr = Some(((ntp >> 16) as u32, now));
    }

    /// What the client report shows of it at `now`: packets received, packets lost (RFC 3550
    /// A.3; negative with duplicates), the share of those expected that were lost, the jitter in
    /// milliseconds and the time since its last packet.
    pub fn summary(&self, now: Instant) -> (u64, i64, f64, f64, Duration) {
        let extended_max = self.cycles.wrapping_add(u32::from(self.max_seq));
        let expected = extended_max.wrapping_sub(self.base_seq).wrapping_add(1);
        let lost = i64::from(expected) - i64::from(self.received);
        let percent = match expected {
            0 => 0.0,
            e => lost.max(0) as f64 * 100.0 / f64::from(e),
        };
        let jitter_ms = (self.jitter >> 4) as f64 * 1000.0 / f64::from(self.clock_rate);
        let idle = now.saturating_duration_since(self.heard);
        (u64::from(self.received), lost, percent, jitter_ms, idle)
    }

    /// Its RTP clock rate.
    pub fn clock_rate(&self) -> u32 {
        self.clock_rate
    }

    /// Counts `n` more bytes received.
    pub fn count_bytes(&mut self, n: usize) {
        self.bytes = self.bytes.saturating_add(n as u64);
    }

    /// RTP bytes received.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Whether it sent since the last report: only such sources get a block (RFC 3550 §6.4).
    pub fn heard_since_report(&self) -> bool {
        self.heard_since_report
    }

    /// The reception report block at `now` (RFC 3550 §6.4.1, A.3); starts the next interval.
    pub fn report(&mut self, now: Instant) -> ReceptionReport {
        self.heard_since_report = false;
        let extended_max = self.cycles.wrapping_add(u32::from(self.max_seq));
        let expected = extended_max.wrapping_sub(self.base_seq).wrapping_add(1);
        // Duplicates can make this negative: a signed 24-bit field (two's complement).
        let lost = i64::from(expected) - i64::from(self.received);
        let total_lost = (lost.clamp(-0x80_0000, 0x7F_FFFF) as i32 as u32) & 0xFF_FFFF;
        let expected_interval = expected.wrapping_sub(self.expected_prior);
        let received_interval = self.received.wrapping_sub(self.received_prior);
        self.expected_prior = expected;
        self.received_prior = self.received;
        let lost_interval = i64::from(expected_interval) - i64::from(received_interval);
        let fraction_lost = if expected_interval == 0 || lost_interval <= 0 {
            0
        } else {
            ((lost_interval << 8) / i64::from(expected_interval)).min(255) as u8
        };
        let (last_sender_report, delay) = match self.last_sr {
            Some((lsr, at)) => (lsr, fixed_16_16(now.saturating_duration_since(at))),
            None => (0, 0),
        };
        ReceptionReport {
            ssrc: self.ssrc,
            fraction_lost,
            total_lost,
            last_sequence_number: extended_max,
            jitter: (self.jitter >> 4).min(u64::from(u32::MAX)) as u32,
            last_sender_report,
            delay,
        }
    }
}

/// Sender reports remembered to time the round trip from the reception reports that answer them.
pub const SENDER_REPORTS: usize = 4;

/// The last [`SENDER_REPORTS`] sender reports of a sender (the middle 32 bits of each one's NTP
/// time, and when it went), and the round trip a reception report of one of them gives (RFC 3550
/// §6.4.1: arrival − LSR − DLSR). The NACK responder's legs and the fast path's client report
/// both time theirs with it.
#[derive(Debug, Default)]
pub struct SentReports(VecDeque<(u32, Instant)>);

impl SentReports {
    /// A sender report with NTP time `ntp` went out at `now`.
    pub fn sent(&mut self, ntp: u64, now: Instant) {
        if self.0.len() == SENDER_REPORTS {
            self.0.pop_front();
        }
        self.0.push_back(((ntp >> 16) as u32, now));
    }

    /// The round trip `report`, which arrived at `now`, gives: when it answers a sender report
    /// remembered here, and the time is not negative.
    pub fn round_trip(&self, report: &ReceptionReport, now: Instant) -> Option<Duration> {
        if report.last_sender_report == 0 {
            return None;
        }
        let &(_, sent) = (self.0.iter()).find(|(ntp, _)| *ntp == report.last_sender_report)?;
        // DLSR is in 1/65536 s.
        let delay = Duration::from_micros(u64::from(report.delay) * 1_000_000 / 65_536);
        now.saturating_duration_since(sent).checked_sub(delay)
    }
}

/// What one send leg sent, for its sender report.
#[derive(Debug, Clone)]
pub struct Sent {
    ssrc: u32,
    clock_rate: u32,
    packets: u32,
    octets: u32,
    /// The newest packet's sequence number and RTP time, and when it was sent.
    last: Option<(u16, u32, Instant)>,
}

impl Sent {
    /// A leg sending as `ssrc` at `clock_rate`, nothing sent yet.
    pub fn new(ssrc: u32, clock_rate: u32) -> Self {
        Sent {
            ssrc,
            clock_rate: clock_rate.max(1),
            packets: 0,
            octets: 0,
            last: None,
        }
    }

    pub fn ssrc(&self) -> u32 {
        self.ssrc
    }

    /// Packets and payload octets sent (for the client report), the time since the last.
    pub fn summary(&self, now: Instant) -> (u32, u32, Option<Duration>) {
        let idle = self
            .last
            .map(|(_, _, at)| now.saturating_duration_since(at));
        (self.packets, self.octets, idle)
    }

    /// Its RTP clock rate.
    pub fn clock_rate(&self) -> u32 {
        self.clock_rate
    }

    /// Counts a packet sent with `header` and `payload` bytes at `now` (RFC 3550 §6.4.1: the
    /// octet count is of payloads only).
    pub fn packet(&mut self, header: &Header, payload: usize, now: Instant) {
        self.packets = self.packets.wrapping_add(1);
        self.octets = self.octets.wrapping_add(payload as u32);
        let newer = match self.last {
            None => true,
            Some((seq, ..)) => {
                let d = header.sequence_number.wrapping_sub(seq);
                d != 0 && d < 0x8000
            }
        };
        if newer {
            self.last = Some((header.sequence_number, header.timestamp, now));
        }
    }

    /// Its sender report at `now` (wall clock `wall`), none before its first packet or once it
    /// has sent nothing for two report intervals (RFC 3550 §6.4: no longer a sender). The RTP
    /// time is the newest packet's advanced by the time since at the clock rate (§6.4.1).
    pub fn report(&self, now: Instant, wall: SystemTime) -> Option<SenderReport> {
        let (_, timestamp, at) = self.last?;
        if now.saturating_duration_since(at) > 2 * REPORT_INTERVAL {
            return None;
        }
        let since = now.saturating_duration_since(at).as_micros() as u64;
        let ticks = since * u64::from(self.clock_rate) / 1_000_000;
        Some(SenderReport {
            ssrc: self.ssrc,
            ntp_time: ntp(wall),
            rtp_time: timestamp.wrapping_add(ticks as u32),
            packet_count: self.packets,
            octet_count: self.octets,
            ..Default::default()
        })
    }
}

/// The 64-bit NTP time of `wall` (RFC 5905 §6: seconds since 1900, 32.32 fixed point).
pub fn ntp(wall: SystemTime) -> u64 {
    let since = wall.duration_since(UNIX_EPOCH).unwrap_or_default();
    let seconds = since.as_secs() + NTP_UNIX_OFFSET;
    let fraction = (u64::from(since.subsec_nanos()) << 32) / 1_000_000_000;
    (seconds << 32) | fraction
}

/// A duration in units of 1/65536 s (DLSR, RFC 3550 §6.4.1), saturating.
fn fixed_16_16(d: Duration) -> u32 {
    let units = d.as_micros() * 65_536 / 1_000_000;
    units.min(u128::from(u32::MAX)) as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(seq: u16, ts: u32) -> Header {
        Header {
            sequence_number: seq,
            timestamp: ts,
            ..Default::default()
        }
    }

    /// 20 ms Opus packets from `first`, arriving exactly on time from `t0`.
    fn feed(r: &mut Received, t0: Instant, seqs: impl IntoIterator<Item = u16>, first: u16) {
        for seq in seqs {
            let i = u32::from(seq.wrapping_sub(first));
            let at = t0 + Duration::from_millis(20 * u64::from(i));
            r.packet(&header(seq, 960 * i), at);
        }
    }

    #[test]
    fn loss_is_counted_across_a_wrap_and_per_interval() {
        let t0 = Instant::now();
        let first = 65_530;
        let mut r = Received::new(7, 48_000, &header(first, 0), t0);
        // 65530..=65535, 0..=9 but for 2 and 3: 16 expected, 14 received.
        let seqs = (65_531..=65_535u16).chain((0..10).filter(|s| *s != 2 && *s != 3));
        feed(&mut r, t0, seqs, first);
        let report = r.report(t0 + Duration::from_secs(1));
        assert_eq!(report.ssrc, 7);
        assert_eq!(report.last_sequence_number, (1 << 16) | 9);
        assert_eq!(report.total_lost, 2);
        assert_eq!(report.fraction_lost, (2 * 256 / 16) as u8);
        // Perfect timing: no jitter.
        assert_eq!(report.jitter, 0);
        // The next interval lost nothing.
        feed(&mut r, t0, 10..20, first);
        let report = r.report(t0 + Duration::from_secs(2));
        assert_eq!((report.total_lost, report.fraction_lost), (2, 0));
        assert_eq!(report.last_sequence_number, (1 << 16) | 19);
    }

    #[test]
    fn late_and_duplicate_packets_move_nothing_back_and_a_restart_is_followed() {
        let t0 = Instant::now();
        let mut r = Received::new(7, 48_000, &header(100, 0), t0);
        feed(&mut r, t0, [101, 103, 102, 103], 100);
        let report = r.report(t0);
        assert_eq!(report.last_sequence_number, 103);
        // A duplicate made received exceed expected: a loss of -1, in 24 bits.
        assert_eq!(report.total_lost, 0xFF_FFFF);
        // A jump far ahead is held until the next packet confirms it.
        r.packet(&header(40_000, 0), t0);
        assert_eq!(r.report(t0).last_sequence_number, 103);
        r.packet(&header(40_001, 960), t0);
        r.packet(&header(40_002, 1920), t0);
        let report = r.report(t0);
        assert_eq!(report.last_sequence_number, 40_002);
        assert_eq!(report.total_lost, 0);
    }

    #[test]
    fn jitter_follows_uneven_arrivals() {
        let t0 = Instant::now();
        let mut r = Received::new(7, 48_000, &header(0, 0), t0);
        // Every other packet 10 ms late (480 ticks): |D| = 480 each time.
        for i in 1..200u16 {
            let late = if i % 2 == 1 { 10 } else { 0 };
            let at = t0 + Duration::from_millis(20 * u64::from(i) + late);
            r.packet(&header(i, 960 * u32::from(i)), at);
        }
        let jitter = r.report(t0 + Duration::from_secs(5)).jitter;
        assert!((450..=480).contains(&jitter), "{jitter}");
    }

    #[test]
    fn a_sender_report_heard_is_echoed_with_its_delay() {
        let t0 = Instant::now();
        let mut r = Received::new(7, 48_000, &header(0, 0), t0);
        r.sender_report(0x1122_3344_5566_7788, t0);
        let report = r.report(t0 + Duration::from_millis(500));
        assert_eq!(report.last_sender_report, 0x3344_5566);
        assert_eq!(report.delay, 32_768);
    }

    #[test]
    fn a_sender_report_counts_payloads_and_advances_rtp_time() {
        let t0 = Instant::now();
        let wall = UNIX_EPOCH + Duration::from_secs(1_000_000_000);
        let mut s = Sent::new(42, 48_000);
        assert!(s.report(t0, wall).is_none());
        s.packet(&header(10, 9600), 100, t0);
        s.packet(&header(12, 11_520), 120, t0 + Duration::from_millis(40));
        // A late one counts but moves no time back.
        s.packet(&header(11, 10_560), 110, t0 + Duration::from_millis(41));
        let sr = s.report(t0 + Duration::from_millis(140), wall).unwrap();
        assert_eq!((sr.ssrc, sr.packet_count, sr.octet_count), (42, 3, 330));
        assert_eq!(sr.rtp_time, 11_520 + 4_800);
        assert_eq!(sr.ntp_time >> 32, 1_000_000_000 + NTP_UNIX_OFFSET);
        assert_eq!(sr.ntp_time & 0xFFFF_FFFF, 0);
        // Two intervals without a packet: no longer a sender.
        assert!(s.report(t0 + Duration::from_secs(3), wall).is_none());
    }

    #[test]
    fn only_sources_heard_since_the_last_report_get_a_block() {
        let t0 = Instant::now();
        let mut r = Received::new(7, 48_000, &header(0, 0), t0);
        assert!(r.heard_since_report());
        r.report(t0);
        assert!(!r.heard_since_report());
        r.packet(&header(1, 960), t0 + Duration::from_millis(20));
        assert!(r.heard_since_report());
    }
}
