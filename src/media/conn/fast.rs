//! A session's fast path (sessions without video, `negotiate/engine.rs` `fast_path`): once DTLS is
//! up, its SRTP and SRTCP skip rtc's pipeline. What arrives is opened with the session's own
//! remote SRTP context (the one rtc keyed from the DTLS exporter, RFC 5764 §4.2; vendored rtc
//! change 8), what it sends is protected with its local one and queued for the loop's flush, and
//! its RTCP reports are its own (`forward/reports.rs`, every [`REPORT_INTERVAL`]). rtc keeps STUN,
//! DTLS, consent and the first packet of each SSRC (which binds it to its track: the fast path
//! takes only SSRCs whose kind and track `ingest.rs` knows).

use std::collections::VecDeque;
use std::time::{Instant, SystemTime};

use bytes::{Buf, BytesMut};
use rtc::rtcp::receiver_report::ReceiverReport;
use rtc::rtcp::reception_report::ReceptionReport;
use rtc::rtcp::sender_report::SenderReport;
use rtc::rtcp::source_description::{
    SdesType, SourceDescription, SourceDescriptionChunk, SourceDescriptionItem,
};
use rtc::rtp::header::Header;
use rtc::rtp::packet::Packet;
use rtc::shared::error::Error;
use rtc::shared::marshal::{Marshal, MarshalSize, Unmarshal};
use rtc::shared::{TaggedBytesMut, TransportContext};
use tracing::debug;

use super::super::forward::legs::{Leg, LegWriter, SendTrack};
use super::super::forward::reports::{Received, Sent, REPORT_INTERVAL};
use super::ingest::MAX_RECV_SSRCS;
use super::pipeline::Rtc;
use super::{Conn, Link};
use crate::ops::metrics::{Dropped, LoopMetrics};

/// Reception report blocks one RTCP packet holds (its 5-bit count, RFC 3550 §6.4.1).
const MAX_REPORT_BLOCKS: usize = 31;
/// The longest SRTP tag (AEAD: 16 bytes, RFC 7714 §6.1; HMAC-SHA1-80: 10).
const MAX_TAG: usize = 16;

/// What the fast path of a session keeps.
pub(super) struct FastPath {
    /// The RTP clock rate of what it receives.
    clock_rate: u32,
    /// Reception statistics of the SSRCs it receives (at most [`MAX_RECV_SSRCS`]).
    received: Vec<Received>,
    /// What each send leg sent.
    sent: Vec<Sent>,
    /// The SSRC its receiver reports name as theirs: its first leg's, else a random one.
    report_ssrc: u32,
    /// When its next reports are due (from its first connect).
    next_report: Option<Instant>,
    /// Its RTCP canonical name (RFC 7022: random, 16 bytes as 32 hex digits).
    cname: bytes::Bytes,
    /// RTP that arrived since the last poll.
    pub(super) media: Vec<Packet>,
    /// Datagrams it protected, for the loop's flush.
    outbox: VecDeque<TaggedBytesMut>,
    /// Whether a PLI or FIR arrived since the last poll.
    pub(super) keyframe_wanted: bool,
}

impl FastPath {
    /// The fast path of a session that receives at `clock_rate` and sends `tracks`.
    pub(super) fn new(clock_rate: u32, tracks: &[SendTrack]) -> Self {
        FastPath {
            clock_rate,
            received: Vec::new(),
            sent: tracks
                .iter()
                .map(|t| Sent::new(t.ssrc, t.clock_rate))
                .collect(),
            report_ssrc: tracks.first().map_or_else(rand::random, |t| t.ssrc),
            next_report: None,
            cname: format!("{:032x}", rand::random::<u128>()).into(),
            media: Vec::new(),
            outbox: VecDeque::new(),
            keyframe_wanted: false,
        }
    }

    /// Counts a received packet with `header` in its SSRC's statistics.
    pub(super) fn count_received(&mut self, header: &Header, now: Instant) {
        match self.received.iter_mut().find(|r| r.ssrc() == header.ssrc) {
            Some(received) => received.packet(header, now),
            None => {
                if self.received.len() == MAX_RECV_SSRCS {
                    self.received.remove(0);
                }
                let received = Received::new(header.ssrc, self.clock_rate, header, now);
                self.received.push(received);
            }
        }
    }

    /// Takes the RTCP a client sent: its sender reports (for LSR/DLSR) and its keyframe requests.
    fn read_rtcp(&mut self, packets: &[Box<dyn rtc::rtcp::packet::Packet>], now: Instant) {
        for packet in packets {
            if let Some(sr) = packet.as_any().downcast_ref::<SenderReport>() {
                if let Some(r) = self.received.iter_mut().find(|r| r.ssrc() == sr.ssrc) {
                    r.sender_report(sr.ntp_time, now);
                }
            }
        }
        if rtc_util::asks_for_keyframe(packets) {
            self.keyframe_wanted = true;
        }
    }

    /// Protects `packet` with `local` and queues it towards `transport`, counted for its leg's
    /// sender report. One buffer (`message`, empty: a sent datagram's, reused): marshalled into
    /// it, protected in place (vendored rtc-srtp change 2), sent from it.
    fn protect(
        &mut self,
        local: &mut rtc::srtp::context::Context,
        (transport, mut message): (TransportContext, BytesMut),
        packet: &Packet,
        now: Instant,
    ) -> Result<(), Error> {
        let size = packet.marshal_size();
        message.reserve(size + MAX_TAG);
        message.resize(size, 0);
        packet.marshal_to(&mut message)?;
        local.encrypt_rtp_in_place(&mut message, &packet.header)?;
        if let Some(sent) = self
            .sent
            .iter_mut()
            .find(|s| s.ssrc() == packet.header.ssrc)
        {
            sent.packet(&packet.header, packet.payload.len(), now);
        }
        self.outbox.push_back(TaggedBytesMut {
            now,
            transport,
            message,
        });
        Ok(())
    }

    /// The reports due at `now` (wall clock `wall`, read together), one compound packet (RFC
    /// 3550 §6.1): a sender report per leg that sent lately, a receiver report with a block per
    /// source heard since the last report, and the SDES CNAME of each reporting SSRC. (The
    /// blocks could ride in the first sender report; rtc, and pion before it, read them from
    /// receiver reports only, so a webrtc-rs client would never see them there.) Sources silent
    /// for `reports::SILENT_SOURCE` are forgotten.
    fn reports(
        &mut self,
        now: Instant,
        wall: SystemTime,
    ) -> Vec<Box<dyn rtc::rtcp::packet::Packet>> {
        self.received.retain(|r| !r.silent(now));
        let blocks: Vec<ReceptionReport> = (self.received.iter_mut())
            .filter(|r| r.heard_since_report())
            .take(MAX_REPORT_BLOCKS)
            .map(|r| r.report(now))
            .collect();
        let mut packets: Vec<Box<dyn rtc::rtcp::packet::Packet>> = Vec::new();
        let mut reporters = Vec::new();
        for sent in &self.sent {
            if let Some(sr) = sent.report(now, wall) {
                reporters.push(sr.ssrc);
                packets.push(Box::new(sr));
            }
        }
        if !blocks.is_empty() {
            if !reporters.contains(&self.report_ssrc) {
                reporters.push(self.report_ssrc);
            }
            packets.push(Box::new(ReceiverReport {
                ssrc: self.report_ssrc,
                reports: blocks,
                ..Default::default()
            }));
        }
        if !packets.is_empty() {
            packets.push(Box::new(self.cname(&reporters)));
        }
        packets
    }

    /// The SDES packet naming `ssrcs` by this session's CNAME (RFC 3550 §6.5.1: one per
    /// endpoint, so the receiver can tie its streams together; random, RFC 7022).
    fn cname(&self, ssrcs: &[u32]) -> SourceDescription {
        let chunks = ssrcs.iter().map(|&source| SourceDescriptionChunk {
            source,
            items: vec![SourceDescriptionItem {
                sdes_type: SdesType::SdesCname,
                text: self.cname.clone(),
            }],
        });
        SourceDescription {
            chunks: chunks.collect(),
        }
    }
}

/// Opens the SRTP packet `message` with `remote` where it is (vendored rtc-srtp change 2): the
/// RTP packet, its payload the same buffer (RFC 3550 §5.1: without its padding).
fn open_rtp(
    remote: &mut rtc::srtp::context::Context,
    mut message: BytesMut,
) -> Result<Packet, Error> {
    let header = Header::unmarshal(&mut &message[..])?;
    remote.decrypt_rtp_in_place(&mut message, &header)?;
    message.advance(header.marshal_size());
    if header.padding {
        let padding = usize::from(message.last().copied().unwrap_or(0));
        if padding > message.len() {
            return Err(Error::ErrShortPacket);
        }
        message.truncate(message.len() - padding);
    }
    let payload = message.freeze();
    Ok(Packet { header, payload })
}

/// The time to a session's next reports: [`REPORT_INTERVAL`] times a random factor from 0.5 to
/// 1.5 (RFC 3550 §6.3.5).
fn report_interval() -> std::time::Duration {
    REPORT_INTERVAL.mul_f64(0.5 + rand::random::<f64>())
}

/// What writes a session's legs: its fast path once DTLS is up, else rtc's senders.
pub struct Writer<'a> {
    pc: &'a mut Rtc,
    fast: Option<&'a mut FastPath>,
}

impl LegWriter for Writer<'_> {
    fn write(
        &mut self,
        leg: &Leg,
        packet: Packet,
        now: Instant,
        (metrics, buffers): (&LoopMetrics, &mut Vec<BytesMut>),
    ) -> Option<Result<(), Error>> {
        if let Some(fast) = self.fast.as_deref_mut() {
            if let Some(transport) = self.pc.transport() {
                if let Some((local, _)) = self.pc.srtp_contexts() {
                    metrics.fast_path();
                    let buffer = buffers.pop().unwrap_or_default();
                    return Some(fast.protect(local, (transport, buffer), &packet, now));
                }
            }
        }
        let mut sender = self.pc.get().rtp_sender(leg.sender)?;
        Some(sender.write_rtp(now, packet))
    }
}

impl Conn {
    /// Takes `input` on the fast path, if the session has one and DTLS is up: SRTCP, and SRTP
    /// of an SSRC whose kind is known (others go to rtc, which binds them); gives it back if
    /// not. What does not authenticate or parse is counted as rejected.
    pub(super) fn receive_fast(
        &mut self,
        input: TaggedBytesMut,
        metrics: &LoopMetrics,
    ) -> Result<(), TaggedBytesMut> {
        let Some(fast) = self.fast.as_mut() else {
            return Err(input);
        };
        let data = &input.message[..];
        // RFC 7983 §7: 128..=191 is RTP or RTCP; RFC 5761 §4: RTCP's types are 192..=223.
        if data.len() < 12 || !(128..=191).contains(&data[0]) {
            return Err(input);
        }
        let rtcp = (192..=223).contains(&data[1]);
        if !rtcp {
            let ssrc = u32::from_be_bytes([data[8], data[9], data[10], data[11]]);
            if !self.ingest.knows(ssrc) {
                return Err(input);
            }
        }
        // As rtc: no media while ICE has no selected pair (an ICE restart clears it).
        if self.pc.transport().is_none() {
            return Err(input);
        }
        let Some((_, remote)) = self.pc.srtp_contexts() else {
            return Err(input);
        };
        let now = input.now;
        let read = if rtcp {
            remote
                .decrypt_rtcp(data)
                .and_then(|mut plain| rtc::rtcp::packet::unmarshal(&mut plain))
                .map(|packets| fast.read_rtcp(&packets, now))
        } else {
            open_rtp(remote, input.message).map(|packet| {
                fast.count_received(&packet.header, now);
                fast.media.push(packet);
            })
        };
        match read {
            Ok(()) => metrics.fast_path(),
            Err(e) => {
                metrics.dropped(Dropped::Rejected, 1);
                self.span.in_scope(|| debug!(error = %e, "packet rejected"));
            }
        }
        Ok(())
    }

    /// Its send legs with what writes them, while connected (the fan-out's way in).
    pub fn forwarding(&mut self) -> Option<(Writer<'_>, &mut [Leg], &tracing::Span)> {
        if self.link != Link::Connected {
            return None;
        }
        let writer = Writer {
            pc: &mut self.pc,
            fast: self.fast.as_mut(),
        };
        Some((writer, &mut self.legs, &self.span))
    }

    /// The next datagram it sends: the fast path's, then its peer connection's.
    pub fn poll_write(&mut self) -> Option<TaggedBytesMut> {
        if let Some(out) = self.fast.as_mut().and_then(|f| f.outbox.pop_front()) {
            return Some(out);
        }
        self.pc.poll_write()
    }

    /// When its fast path's next reports are due, once it has connected.
    pub(super) fn report_deadline(&mut self) -> Option<Instant> {
        let fast = self.fast.as_mut()?;
        if fast.next_report.is_none() && self.link == Link::Connected {
            fast.next_report = Some(Instant::now() + report_interval());
        }
        fast.next_report
    }

    /// Writes its fast path's reports if they are due at `now` (through rtc, which protects them
    /// with the same context).
    pub(super) fn send_due_reports(&mut self, now: Instant) {
        let Some(fast) = self.fast.as_mut() else {
            return;
        };
        if fast.next_report.is_none_or(|at| now < at) {
            return;
        }
        // The clocks are read now, together: `now` is when the wake-up began, and a report's
        // RTP time and DLSR must match its NTP time.
        let (now, wall) = (Instant::now(), SystemTime::now());
        fast.next_report = Some(now + report_interval());
        if self.link == Link::Connecting {
            return;
        }
        let packets = fast.reports(now, wall);
        if packets.is_empty() {
            return;
        }
        let pc = self.pc.get();
        let (sender, receiver) = (pc.get_senders().next(), pc.get_receivers().next());
        let written = match (sender, receiver) {
            (Some(id), _) => pc.rtp_sender(id).map(|mut s| s.write_rtcp(now, packets)),
            (None, Some(id)) => (pc.rtp_receiver(id)).map(|mut r| r.write_rtcp(now, packets)),
            (None, None) => None,
        };
        if let Some(Err(e)) = written {
            self.span
                .in_scope(|| debug!(error = %e, "RTCP reports not sent"));
        }
    }
}

impl Conn {
    /// Hands what arrived on the fast path since the last poll to `polled`: a keyframe request,
    /// and the RTP of the sources the fan-out takes (a viewer's goes nowhere).
    pub(super) fn poll_fast(
        &mut self,
        publishes: bool,
        now: Instant,
        metrics: &LoopMetrics,
        polled: &mut super::Polled,
    ) {
        let Some(fast) = self.fast.as_mut() else {
            return;
        };
        if std::mem::take(&mut fast.keyframe_wanted)
            && !polled.events.contains(&super::Event::KeyframeWanted)
        {
            polled.events.push(super::Event::KeyframeWanted);
        }
        for packet in fast.media.drain(..) {
            if !publishes {
                continue;
            }
            if let Some(kind) = self.ingest.take_known(&packet, now, metrics) {
                polled.media.push((kind, packet));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_statistics_kept_for_received_ssrcs_are_bounded() {
        let mut fast = FastPath::new(48_000, &[]);
        let now = Instant::now();
        for ssrc in 0..10_000u32 {
            let header = Header {
                ssrc,
                sequence_number: ssrc as u16,
                ..Default::default()
            };
            fast.count_received(&header, now);
        }
        assert_eq!(fast.received.len(), MAX_RECV_SSRCS);
        // The latest are kept; one report block each, in one receiver report.
        assert_eq!(fast.received.last().map(Received::ssrc), Some(9_999));
        let reports = fast.reports(now, SystemTime::now());
        let rr = reports[0]
            .as_any()
            .downcast_ref::<ReceiverReport>()
            .unwrap();
        assert_eq!(rr.reports.len(), MAX_RECV_SSRCS);
    }
}
