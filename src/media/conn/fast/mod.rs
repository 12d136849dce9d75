//! A session's fast path (every answered session; a cluster pull keeps rtc's pipeline,
//! `negotiate/engine.rs` `PeerShape::fast`): once DTLS is up, its SRTP and SRTCP skip rtc's
//! pipeline. What arrives is opened with the session's own remote SRTP context (the one rtc keyed
//! from the DTLS exporter, RFC 5764 §4.2; vendored rtc change 8), what it sends is protected with
//! its local one and queued for the loop's flush. Its RTCP is its own: reports
//! (`forward/reports.rs`, every [`REPORT_INTERVAL`]), a publisher's NACK and TWCC feedback
//! (`feedback.rs`), and answers to its viewers' NACKs (`forward/nack.rs`, fed with what it
//! sends). rtc keeps STUN, DTLS, consent and the first packet of each SSRC (which binds it to its
//! track: the fast path takes only SSRCs whose kind and track `ingest.rs` knows).

use std::collections::VecDeque;
use std::time::Instant;

use bytes::{Buf, BytesMut};
use rtc::rtcp::sender_report::SenderReport;
use rtc::rtp::header::Header;
use rtc::rtp::packet::Packet;
use rtc::shared::error::Error;
use rtc::shared::marshal::{Marshal, MarshalSize, Unmarshal};
use rtc::shared::{TaggedBytesMut, TransportContext};
use tracing::debug;

mod client;
mod feedback;
mod rtcp;

use super::super::forward::legs::{Leg, LegWriter, SendTrack};
use super::super::forward::nack::NackResponder;
use super::super::forward::reports::{Received, Sent, SentReports};
use super::super::negotiate::peer::FastSetup;
use super::ingest::MAX_RECV_SSRCS;
use super::pipeline::Rtc;
use super::{Conn, Link};
use crate::ops::metrics::{Dropped, LoopMetrics};
use crate::report::ClientRtcp;
use feedback::Feedback;
use rtc::rtp_transceiver::rtp_sender::RtpCodecKind;

/// The longest SRTP tag (AEAD: 16 bytes, RFC 7714 §6.1; HMAC-SHA1-80: 10).
const MAX_TAG: usize = 16;

/// What the fast path of a session keeps.
pub(super) struct FastPath {
    /// Its negotiation: the kind and clock rate of each payload type, TWCC's extension id.
    setup: FastSetup,
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
    /// Its NACK and TWCC feedback, once it received RTP with video negotiated (a publisher's).
    feedback: Option<Feedback>,
    /// Its viewers' NACKs answered, when it sends video.
    responder: Option<NackResponder>,
    /// Resends a NACK asked for (reused).
    resends: Vec<Packet>,
    /// What the client's RTCP was, for its report.
    client_rtcp: ClientRtcp,
    /// The NTP time (middle 32 bits) of its last sender reports and when they went, to time
    /// the round trip from the client's reports of them (RFC 3550 §6.4.1).
    sender_reports: SentReports,
}

impl FastPath {
    /// The fast path of a session negotiated as `setup` that sends `tracks`.
    pub(super) fn new(setup: FastSetup, tracks: &[SendTrack]) -> Self {
        let now = Instant::now();
        let mut responder = None;
        for track in tracks.iter().filter(|t| t.kind == RtpCodecKind::Video) {
            (responder.get_or_insert_with(|| NackResponder::new(setup.nack.clone())))
                .bind(track.ssrc, now);
        }
        FastPath {
            setup,
            feedback: None,
            responder,
            resends: Vec::new(),
            client_rtcp: ClientRtcp::default(),
            sender_reports: SentReports::default(),
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

    /// A packet it received at `now`, of `kind` where its SSRC's is known (else its payload
    /// type's: GStreamer numbers audio and video alike, 96): counted in its SSRC's statistics
    /// and seen by its feedback; given back for the fan-out.
    pub(super) fn arrived(
        &mut self,
        packet: Packet,
        kind: Option<RtpCodecKind>,
        now: Instant,
    ) -> Option<Packet> {
        let (kind, clock_rate) = self.kind_of(kind, packet.header.payload_type);
        let size = packet.header.marshal_size() + packet.payload.len();
        self.count_received(&packet.header, (clock_rate, size), now);
        if !self.setup.video {
            return Some(packet);
        }
        let twcc = self.setup.twcc;
        (self.feedback.get_or_insert_with(|| Feedback::new(twcc))).observe(
            packet,
            kind == RtpCodecKind::Video,
            now,
        )
    }

    /// The kind and clock rate of a packet of `kind` if known, else of payload type `pt` (an
    /// unknown one: the first negotiated).
    fn kind_of(&self, kind: Option<RtpCodecKind>, pt: u8) -> (RtpCodecKind, u32) {
        let types = &self.setup.payload_types;
        let found = match kind {
            Some(kind) => types.iter().find(|(_, k, _)| *k == kind),
            None => types.iter().find(|(p, _, _)| *p == pt),
        };
        let found = found.or(types.first());
        found.map_or((RtpCodecKind::Audio, 48_000), |&(_, kind, rate)| {
            (kind, rate)
        })
    }

    /// Counts a received packet with `header` (of `clock_rate`, `size` bytes) in its SSRC's
    /// statistics.
    fn count_received(&mut self, header: &Header, (clock_rate, size): (u32, usize), now: Instant) {
        let at = self.received.iter().position(|r| r.ssrc() == header.ssrc);
        let at = match at {
            Some(at) => {
                self.received[at].packet(header, now);
                at
            }
            None => {
                if self.received.len() == MAX_RECV_SSRCS {
                    self.received.remove(0);
                }
                let received = Received::new(header.ssrc, clock_rate, header, now);
                self.received.push(received);
                self.received.len() - 1
            }
        };
        self.received[at].count_bytes(size);
    }

    /// Takes the RTCP a client sent: its sender reports (for LSR/DLSR), its keyframe requests,
    /// and its NACKs, whose resends it protects with `local` towards `transport`.
    fn read_rtcp(
        &mut self,
        packets: &[Box<dyn rtc::rtcp::packet::Packet>],
        now: Instant,
        (local, transport): (&mut rtc::srtp::context::Context, TransportContext),
    ) {
        if let Some(responder) = self.responder.as_mut() {
            let resends = &mut self.resends;
            responder.read(packets, now, |packet| resends.push(packet));
            let mut resends = std::mem::take(&mut self.resends);
            for packet in resends.drain(..) {
                // A packet it protected once protects again.
                let _ = self.protect(local, (transport, BytesMut::new()), &packet, now);
            }
            self.resends = resends;
        }
        for packet in packets {
            if let Some(sr) = packet.as_any().downcast_ref::<SenderReport>() {
                if let Some(r) = self.received.iter_mut().find(|r| r.ssrc() == sr.ssrc) {
                    r.sender_report(sr.ntp_time, now);
                }
            }
            self.note_client_rtcp(packet.as_ref(), now);
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

    /// `packet`, protected at `now`, kept for its viewer's NACKs (a resend is not: its slot keeps
    /// its resend count).
    fn keep(&mut self, packet: Packet, now: Instant) {
        if let Some(responder) = self.responder.as_mut() {
            responder.sent(packet, now);
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
                    let protected = fast.protect(local, (transport, buffer), &packet, now);
                    if protected.is_ok() {
                        fast.keep(packet, now);
                    }
                    return Some(protected);
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
        let Some(transport) = self.pc.transport() else {
            return Err(input);
        };
        let Some((local, remote)) = self.pc.srtp_contexts() else {
            return Err(input);
        };
        let now = input.now;
        let read = if rtcp {
            remote
                .decrypt_rtcp(data)
                .and_then(|mut plain| rtc::rtcp::packet::unmarshal(&mut plain))
                .map(|packets| fast.read_rtcp(&packets, now, (local, transport)))
        } else {
            open_rtp(remote, input.message).map(|packet| {
                let known = self.ingest.kind(packet.header.ssrc);
                if let Some(packet) = fast.arrived(packet, known, now) {
                    fast.media.push(packet);
                }
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
    use rtc::rtcp::receiver_report::ReceiverReport;
    use std::time::SystemTime;

    #[test]
    fn the_statistics_kept_for_received_ssrcs_are_bounded() {
        let setup = FastSetup {
            payload_types: vec![(111, RtpCodecKind::Audio, 48_000)],
            video: false,
            twcc: None,
            nack: Default::default(),
        };
        let mut fast = FastPath::new(setup, &[]);
        let now = Instant::now();
        for ssrc in 0..10_000u32 {
            let header = Header {
                ssrc,
                sequence_number: ssrc as u16,
                ..Default::default()
            };
            fast.count_received(&header, (48_000, 12), now);
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
