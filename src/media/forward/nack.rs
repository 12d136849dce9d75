//! Answering a receiver's NACKs (RFC 4585 §6.2.1) within bounds: whip-echo's own responder in
//! the slot of rtc's (`Slot::NackResponder`), for every video leg it sends.
//!
//! rtc-interceptor's responder resends every sequence number a NACK names, as often as it is
//! named, from an unbounded queue: one 1.2 KB SRTCP compound asked for about 4,900 resends, one
//! 64 KB ICE-TCP frame for about 270,000, all on the media loop. This one, like mediasoup's,
//! Janus's and LiveKit's, resends a packet only when that can still help:
//!
//! - a NACK packet is read for at most [`MAX_FCIS`] FCIs (each names up to 17 packets), a compound
//!   for at most that many in all, and a sequence number named twice in one compound counts once;
//! - a packet is resent at most [`MAX_RESENDS`] times: the first time at once (a receiver asks as
//!   soon as it sees a gap, and waiting would cost it a frame), then not again within max(RTT,
//!   [`MIN_RESEND_INTERVAL`]) of its last resend (the RTT from the receiver's reports of this
//!   leg's sender reports, RFC 3550 §6.4.1), as libwebrtc's packet history does;
//! - a leg resends at most [`RESEND_BYTES_PER_SECOND`] (burst: one second's worth);
//! - only the last [`HISTORY`] packets of a leg are kept, in a ring indexed by sequence number,
//!   where each slot also holds its packet's resend state: nothing here grows with what a
//!   receiver sends.
//!
//! Resends are the original packets, as rtc's were (whip-echo negotiates no RTX), and go on down
//! the chain to SRTP like any packet the leg sends.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use crate::ops::metrics::{NackMetrics, Refused};
use rtc::interceptor::{
    Attribute, AttributedPacket, Interceptor, Packet, StreamInfo, TaggedPacket,
};
use rtc::rtcp::receiver_report::ReceiverReport;
use rtc::rtcp::sender_report::SenderReport;
use rtc::rtcp::transport_feedbacks::transport_layer_nack::TransportLayerNack;
use rtc::shared::error::Error;
use rtc::shared::TransportContext;
use rustc_hash::FxHashMap;

use super::history::{LegHistory, Sent};

/// Packets of a leg kept for resending: about 1 s at the default `--max-bitrate` (8 Mb/s), 6 s of
/// 1.5 Mb/s video; rtc's default too. The payloads are the forwarded packets' shared buffers, so a
/// slot costs its header.
pub const HISTORY: usize = 1024;
/// FCIs (packet id and bitmask, RFC 4585 §6.2.1) read of one compound RTCP packet; more are
/// ignored. 64 name up to 1,088 packets, about the history.
pub const MAX_FCIS: usize = 64;
/// Times one packet is resent at most.
pub const MAX_RESENDS: u8 = 3;
/// The shortest time between two resends of one packet, when the RTT is shorter or unknown.
pub const MIN_RESEND_INTERVAL: Duration = Duration::from_millis(100);
/// Bytes a leg resends per second at most (2 Mb/s), and its burst.
pub const RESEND_BYTES_PER_SECOND: u32 = 250_000;

/// The responder of one peer connection (see the module documentation).
pub struct NackResponder {
    legs: FxHashMap<u32, LegHistory>,
    reads: VecDeque<TaggedPacket>,
    writes: VecDeque<TaggedPacket>,
    metrics: NackMetrics,
    /// (SSRC, sequence number) named in the compound being read (reused).
    named: Vec<(u32, u16)>,
}

impl NackResponder {
    /// A responder counting into `metrics`.
    pub fn new(metrics: NackMetrics) -> Self {
        NackResponder {
            legs: FxHashMap::default(),
            reads: VecDeque::new(),
            writes: VecDeque::new(),
            metrics,
            named: Vec::new(),
        }
    }

    /// A responder whose one leg, of `ssrc`, negotiated NACK (the fuzz entry's and the tests').
    fn with_leg(ssrc: u32, metrics: NackMetrics) -> Self {
        let mut responder = NackResponder::new(metrics);
        responder.bind_local_stream(&StreamInfo {
            ssrc,
            rtcp_feedback: vec![rtc::interceptor::RTCPFeedback {
                typ: "nack".into(),
                parameter: String::new(),
            }],
            ..Default::default()
        });
        responder
    }

    /// Packet `seq` of `ssrc`, carrying `payload`, gone down the chain at `now` (the fuzz entry's
    /// and the tests').
    fn record_sent(&mut self, ssrc: u32, seq: u16, payload: bytes::Bytes, now: Instant) {
        let header = rtc::rtp::header::Header {
            version: 2,
            ssrc,
            sequence_number: seq,
            ..Default::default()
        };
        let packet = rtc::rtp::Packet { header, payload };
        let msg = TaggedPacket {
            now,
            transport: TransportContext::default(),
            message: AttributedPacket::new(Packet::Rtp(packet)),
        };
        rtc::sansio::Protocol::handle_write(self, msg).expect("a write is queued");
        while rtc::sansio::Protocol::poll_write(self).is_some() {}
    }

    /// Keeps what a leg of `ssrc` sends, to answer NACKs for it (a leg that negotiated NACK).
    pub fn bind(&mut self, ssrc: u32, now: Instant) {
        self.legs
            .entry(ssrc)
            .or_insert_with(|| LegHistory::new(now));
    }

    /// `packet` went on the wire at `now` (its leg's history keeps it, if it has one).
    pub fn sent(&mut self, packet: rtc::rtp::Packet, now: Instant) {
        if let Some(leg) = self.legs.get_mut(&packet.header.ssrc) {
            let slot = LegHistory::slot(packet.header.sequence_number);
            leg.history[slot] = Some(Sent {
                packet,
                at: now,
                resends: 0,
            });
        }
    }

    /// A sender report of the leg of `ssrc` with NTP time `ntp` went out at `now` (its RTT comes
    /// from the receiver's report of it).
    pub fn sender_report(&mut self, ssrc: u32, ntp: u64, now: Instant) {
        if let Some(leg) = self.legs.get_mut(&ssrc) {
            leg.reports.sent(ntp, now);
        }
    }

    /// Reads the RTCP compound `packets` a receiver sent at `now`: its reception reports (RTT)
    /// and its NACKs, whose resends go to `resend`.
    pub fn read(
        &mut self,
        packets: &[Box<dyn rtc::rtcp::Packet>],
        now: Instant,
        resend: impl FnMut(rtc::rtp::Packet),
    ) {
        if !self.legs.is_empty() {
            self.reports(packets, now);
            self.answer(packets, now, resend);
        }
    }

    /// The NACKs of one compound packet at `now`, for the legs they name.
    fn answer(
        &mut self,
        packets: &[Box<dyn rtc::rtcp::Packet>],
        now: Instant,
        mut resend: impl FnMut(rtc::rtp::Packet),
    ) {
        let mut fcis = 0usize;
        let mut too_many = 0u64;
        self.named.clear();
        for nack in packets
            .iter()
            .filter_map(|p| p.as_any().downcast_ref::<TransportLayerNack>())
        {
            let take = nack.nacks.len().min(MAX_FCIS - fcis);
            fcis += take;
            too_many += nack.nacks[take..]
                .iter()
                .map(|pair| 1 + u64::from(pair.lost_packets.count_ones()))
                .sum::<u64>();
            for pair in &nack.nacks[..take] {
                self.named.push((nack.media_ssrc, pair.packet_id));
                for bit in 0..16u16 {
                    if pair.lost_packets & (1 << bit) != 0 {
                        let seq = pair.packet_id.wrapping_add(bit + 1);
                        self.named.push((nack.media_ssrc, seq));
                    }
                }
            }
        }
        self.metrics.refused(Refused::TooMany, too_many);
        if self.named.is_empty() {
            return;
        }
        // Each packet once per compound, in the order of its sequence number.
        let named = self.named.len();
        self.named.sort_unstable();
        self.named.dedup();
        self.metrics
            .refused(Refused::Duplicate, (named - self.named.len()) as u64);
        for &(ssrc, seq) in &self.named {
            let Some(leg) = self.legs.get_mut(&ssrc) else {
                self.metrics.refused(Refused::Unknown, 1);
                continue;
            };
            match leg.resend(seq, now) {
                Ok(packet) => {
                    self.metrics.resent.inc();
                    resend(packet);
                }
                Err(why) => self.metrics.refused(why, 1),
            }
        }
    }

    /// The RTT of the legs that reception reports in `packets` describe.
    fn reports(&mut self, packets: &[Box<dyn rtc::rtcp::Packet>], now: Instant) {
        for packet in packets {
            let any = packet.as_any();
            let reports = if let Some(rr) = any.downcast_ref::<ReceiverReport>() {
                &rr.reports
            } else if let Some(sr) = any.downcast_ref::<SenderReport>() {
                &sr.reports
            } else {
                continue;
            };
            for report in reports {
                if let Some(leg) = self.legs.get_mut(&report.ssrc) {
                    leg.report(report, now);
                }
            }
        }
    }
}

impl rtc::sansio::Protocol<TaggedPacket, TaggedPacket, ()> for NackResponder {
    type Rout = TaggedPacket;
    type Wout = TaggedPacket;
    type Eout = ();
    type Error = Error;
    type Time = Instant;

    fn handle_read(&mut self, msg: TaggedPacket) -> Result<(), Error> {
        if let Packet::Rtcp(packets) = &msg.message.packet {
            let mut writes = std::mem::take(&mut self.writes);
            self.read(packets, msg.now, |packet| {
                writes.push_back(TaggedPacket {
                    now: msg.now,
                    transport: TransportContext::default(),
                    message: AttributedPacket::new(Packet::Rtp(packet))
                        .with(Attribute::Retransmission),
                })
            });
            self.writes = writes;
        }
        self.reads.push_back(msg);
        Ok(())
    }

    fn poll_read(&mut self) -> Option<TaggedPacket> {
        self.reads.pop_front()
    }

    fn handle_write(&mut self, msg: TaggedPacket) -> Result<(), Error> {
        match &msg.message.packet {
            Packet::Rtp(packet) => self.sent(packet.clone(), msg.now),
            Packet::Rtcp(packets) => {
                for sr in packets
                    .iter()
                    .filter_map(|p| p.as_any().downcast_ref::<SenderReport>())
                {
                    self.sender_report(sr.ssrc, sr.ntp_time, msg.now);
                }
            }
            _ => {}
        }
        self.writes.push_back(msg);
        Ok(())
    }

    fn poll_write(&mut self) -> Option<TaggedPacket> {
        self.writes.pop_front()
    }

    fn handle_event(&mut self, _: ()) -> Result<(), Error> {
        Ok(())
    }

    fn poll_event(&mut self) -> Option<()> {
        None
    }

    fn handle_timeout(&mut self, _: Instant) -> Result<(), Error> {
        Ok(())
    }

    fn poll_timeout(&mut self) -> Option<Instant> {
        None
    }
}

impl Interceptor for NackResponder {
    fn bind_local_stream(&mut self, info: &StreamInfo) {
        let nack = info
            .rtcp_feedback
            .iter()
            .any(|fb| fb.typ == "nack" && fb.parameter.is_empty());
        if nack {
            self.bind(info.ssrc, Instant::now());
        }
    }

    fn unbind_local_stream(&mut self, info: &StreamInfo) {
        self.legs.remove(&info.ssrc);
    }

    fn bind_remote_stream(&mut self, _: &StreamInfo) {}

    fn unbind_remote_stream(&mut self, _: &StreamInfo) {}
}

/// Fuzzing entry: RTCP as a viewer's compound packet after SRTCP, through rtc's parser, answered
/// by a responder with a full history. Its resends are distinct and at most the history, and the
/// same compound again at once gets none.
pub(crate) fn answer_fuzzed(data: &[u8]) {
    let parse = || rtc::rtcp::packet::unmarshal(&mut bytes::Bytes::copy_from_slice(data));
    let Ok(packets) = parse() else {
        return;
    };
    let now = Instant::now();
    // The leg of the SSRC the first packet names as its media source, with every packet sent.
    let ssrc = packets
        .first()
        .and_then(|p| p.destination_ssrc().first().copied())
        .unwrap_or(0);
    let mut responder = NackResponder::with_leg(ssrc, NackMetrics::default());
    for seq in 0..HISTORY as u16 {
        responder.record_sent(ssrc, seq, bytes::Bytes::from_static(&[0; 100]), now);
    }
    let mut resent = |packets| {
        let msg = TaggedPacket {
            now,
            transport: TransportContext::default(),
            message: AttributedPacket::new(Packet::Rtcp(packets)),
        };
        rtc::sansio::Protocol::handle_read(&mut responder, msg).expect("a read is queued");
        assert!(
            rtc::sansio::Protocol::poll_read(&mut responder).is_some(),
            "the RTCP goes on up the chain"
        );
        let mut seqs: Vec<u16> =
            std::iter::from_fn(|| rtc::sansio::Protocol::poll_write(&mut responder))
                .map(|m| match m.message.packet {
                    Packet::Rtp(p) => p.header.sequence_number,
                    _ => panic!("only resends are written"),
                })
                .collect();
        let n = seqs.len();
        seqs.sort_unstable();
        seqs.dedup();
        assert_eq!(seqs.len(), n, "a packet resent twice for one compound");
        n
    };
    assert!(resent(packets) <= HISTORY);
    // The same compound at once again: every packet it named was resent just now.
    assert_eq!(resent(parse().expect("it parsed once")), 0);
}

#[cfg(test)]
mod tests {
    use super::*;
    use rtc::rtcp::reception_report::ReceptionReport;
    use rtc::rtcp::transport_feedbacks::transport_layer_nack::NackPair;

    const SSRC: u32 = 42;

    fn responder() -> (NackResponder, NackMetrics) {
        let metrics = NackMetrics::default();
        (NackResponder::with_leg(SSRC, metrics.clone()), metrics)
    }

    fn send(r: &mut NackResponder, seq: u16, now: Instant) {
        r.record_sent(SSRC, seq, vec![0u8; 1000].into(), now);
    }

    fn nack(r: &mut NackResponder, pairs: Vec<NackPair>, now: Instant) -> Vec<u16> {
        let packet: Box<dyn rtc::rtcp::Packet> = Box::new(TransportLayerNack {
            sender_ssrc: 1,
            media_ssrc: SSRC,
            nacks: pairs,
        });
        let msg = TaggedPacket {
            now,
            transport: TransportContext::default(),
            message: AttributedPacket::new(Packet::Rtcp(vec![packet])),
        };
        rtc::sansio::Protocol::handle_read(r, msg).unwrap();
        while rtc::sansio::Protocol::poll_read(r).is_some() {}
        std::iter::from_fn(|| rtc::sansio::Protocol::poll_write(r))
            .map(|m| match m.message.packet {
                Packet::Rtp(p) => p.header.sequence_number,
                _ => panic!("only RTP is written"),
            })
            .collect()
    }

    fn pid(packet_id: u16) -> NackPair {
        NackPair {
            packet_id,
            lost_packets: 0,
        }
    }

    #[test]
    fn one_pid_named_4000_times_is_resent_once_and_not_again_within_100_ms() {
        let (mut r, _) = responder();
        let t0 = Instant::now();
        for seq in 0..100 {
            send(&mut r, seq, t0);
        }
        assert_eq!(nack(&mut r, vec![pid(7); 4000], t0), vec![7]);
        for i in 0..10 {
            let at = t0 + Duration::from_millis(5 * i);
            assert!(nack(&mut r, vec![pid(7); 4000], at).is_empty());
        }
        // After 100 ms it may go again, three times in all.
        let mut resent = 1;
        for i in 1..10 {
            resent += nack(&mut r, vec![pid(7)], t0 + Duration::from_millis(150 * i)).len();
        }
        assert_eq!(resent, usize::from(MAX_RESENDS));
    }

    #[test]
    fn the_first_resend_goes_at_once_and_the_next_waits_for_the_rtt() {
        let (mut r, _) = responder();
        let t0 = Instant::now();
        r.legs.get_mut(&SSRC).unwrap().rtt = Some(Duration::from_millis(250));
        send(&mut r, 9, t0);
        // Asked for 5 ms after it went: resent, although the RTT is longer.
        let t1 = t0 + Duration::from_millis(5);
        assert_eq!(nack(&mut r, vec![pid(9)], t1), vec![9]);
        // Not again within the RTT of that resend (not 100 ms: the RTT is longer).
        assert!(nack(&mut r, vec![pid(9)], t1 + Duration::from_millis(200)).is_empty());
        assert_eq!(
            nack(&mut r, vec![pid(9)], t1 + Duration::from_millis(250)),
            vec![9]
        );
    }

    #[test]
    fn fcis_beyond_the_cap_are_ignored_and_bitmasks_expand() {
        let (mut r, metrics) = responder();
        let t0 = Instant::now();
        for seq in 0..400 {
            send(&mut r, seq, t0);
        }
        // Packet 0 and the 16 after it, then 100 more FCIs of which 63 are read.
        let mut pairs = vec![NackPair {
            packet_id: 0,
            lost_packets: 0xffff,
        }];
        pairs.extend((0..100).map(|i| pid(100 + i)));
        let resent = nack(&mut r, pairs, t0);
        assert_eq!(resent.len(), 17 + 63);
        assert_eq!(metrics.refused[Refused::TooMany as usize].get(), 37);
    }

    #[test]
    fn the_byte_budget_bounds_a_leg() {
        let (mut r, metrics) = responder();
        let t0 = Instant::now();
        for seq in 0..512 {
            send(&mut r, seq, t0);
        }
        let mut resent = 0;
        for chunk in 0..8u16 {
            let pairs = (0..64).map(|i| pid(chunk * 64 + i)).collect();
            resent += nack(&mut r, pairs, t0).len();
        }
        // 250,000 bytes of 1,012-byte packets.
        assert_eq!(resent, 247);
        assert_eq!(metrics.refused[Refused::Budget as usize].get(), 512 - 247);
    }

    #[test]
    fn unknown_and_overwritten_packets_are_not_resent() {
        let (mut r, _) = responder();
        let t0 = Instant::now();
        for seq in 0..(HISTORY as u16 + 10) {
            send(&mut r, seq, t0);
        }
        // 5 was overwritten by HISTORY + 5; 9,000 was never sent.
        assert!(nack(&mut r, vec![pid(5), pid(9_000)], t0).is_empty());
        assert_eq!(
            nack(&mut r, vec![pid(HISTORY as u16 + 5)], t0),
            vec![HISTORY as u16 + 5]
        );
    }

    #[test]
    fn the_rtt_comes_from_reports_of_sender_reports() {
        let (mut r, _) = responder();
        let t0 = Instant::now();
        let sr: Box<dyn rtc::rtcp::Packet> = Box::new(SenderReport {
            ssrc: SSRC,
            ntp_time: 0x1234_5678_9abc_def0,
            ..Default::default()
        });
        rtc::sansio::Protocol::handle_write(
            &mut r,
            TaggedPacket {
                now: t0,
                transport: TransportContext::default(),
                message: AttributedPacket::new(Packet::Rtcp(vec![sr])),
            },
        )
        .unwrap();
        let rr: Box<dyn rtc::rtcp::Packet> = Box::new(ReceiverReport {
            ssrc: 1,
            reports: vec![ReceptionReport {
                ssrc: SSRC,
                last_sender_report: 0x5678_9abc,
                // Half a second held at the receiver.
                delay: 32_768,
                ..Default::default()
            }],
            ..Default::default()
        });
        rtc::sansio::Protocol::handle_read(
            &mut r,
            TaggedPacket {
                now: t0 + Duration::from_millis(800),
                transport: TransportContext::default(),
                message: AttributedPacket::new(Packet::Rtcp(vec![rr])),
            },
        )
        .unwrap();
        assert_eq!(r.legs[&SSRC].rtt, Some(Duration::from_millis(300)));
    }
}
