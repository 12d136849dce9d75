//! A fast-path publisher's feedback on the media it sends: NACKs for the video packets it lost
//! (RFC 4585 §6.2.1) and transport-wide congestion control feedback (TWCC,
//! draft-holmer-rmcat-transport-wide-cc-extensions-01), without which a browser's encoder never
//! raises its bitrate. These are rtc-interceptor's own generator and recorder, as rtc's pipeline
//! runs them for a session without the fast path, driven here by the fast path instead: each
//! received packet passes through them on its way to the fan-out (moved, not copied), and their
//! timers are the session's.
//!
//! TWCC counts every packet that carries the transport-wide sequence number, audio too (the
//! client numbers all its packets in one sequence, and one it never hears about counts as lost
//! to its bandwidth estimate); NACKs are asked for video only (Opus copes with loss itself).

use std::time::Instant;

use rtc::interceptor::{
    AttributedPacket, Interceptor, NackGeneratorBuilder, NackGeneratorInterceptor, Packet as Any,
    RTCPFeedback, RTPHeaderExtension, StreamInfo, TaggedPacket, TwccReceiverBuilder,
    TwccReceiverInterceptor,
};
use rtc::rtp::packet::Packet;
use rtc::sansio::Protocol;
use rtc::shared::TransportContext;

use super::super::ingest::MAX_RECV_SSRCS;

/// The feedback of one publishing session (see the module documentation).
pub(super) struct Feedback {
    nack: NackGeneratorInterceptor,
    /// TWCC's recorder and the id of the header extension it reads (when negotiated).
    twcc: Option<(u8, TwccReceiverInterceptor)>,
    /// The SSRCs bound to them, oldest first (at most [`MAX_RECV_SSRCS`]).
    bound: Vec<u32>,
}

impl Feedback {
    /// The feedback of a session whose packets carry TWCC's sequence numbers in header extension
    /// `twcc` (if negotiated).
    pub(super) fn new(twcc: Option<u8>) -> Self {
        Feedback {
            nack: NackGeneratorBuilder::new().build(),
            twcc: twcc.map(|id| (id, TwccReceiverBuilder::new().build())),
            bound: Vec::new(),
        }
    }

    /// `packet`, received at `now`, seen by the NACK generator (`video`) and the TWCC recorder;
    /// given back for the fan-out.
    pub(super) fn observe(&mut self, packet: Packet, video: bool, now: Instant) -> Option<Packet> {
        if !self.bound.contains(&packet.header.ssrc) {
            self.bind(packet.header.ssrc, video);
        }
        let mut message = TaggedPacket {
            now,
            transport: TransportContext::default(),
            message: AttributedPacket::new(Any::Rtp(packet)),
        };
        // Neither fails a read: each queues the packet for the next one.
        if video {
            self.nack.handle_read(message).ok()?;
            message = self.nack.poll_read()?;
        }
        if let Some((_, twcc)) = self.twcc.as_mut() {
            twcc.handle_read(message).ok()?;
            message = twcc.poll_read()?;
        }
        match message.message.packet {
            Any::Rtp(packet) => Some(packet),
            _ => None,
        }
    }

    /// Binds `ssrc` (a video one for NACK) to both, the oldest forgotten past [`MAX_RECV_SSRCS`].
    fn bind(&mut self, ssrc: u32, video: bool) {
        if self.bound.len() == MAX_RECV_SSRCS {
            let oldest = self.bound.remove(0);
            let info = self.info(oldest, true);
            self.nack.unbind_remote_stream(&info);
            if let Some((_, twcc)) = self.twcc.as_mut() {
                twcc.unbind_remote_stream(&info);
            }
        }
        self.bound.push(ssrc);
        let info = self.info(ssrc, video);
        self.nack.bind_remote_stream(&info);
        if let Some((_, twcc)) = self.twcc.as_mut() {
            twcc.bind_remote_stream(&info);
        }
    }

    /// What binding `ssrc` tells the interceptors: NACK feedback for video, and TWCC's header
    /// extension.
    fn info(&self, ssrc: u32, video: bool) -> StreamInfo {
        let mut rtcp_feedback = Vec::new();
        if video {
            rtcp_feedback.push(RTCPFeedback {
                typ: "nack".into(),
                parameter: String::new(),
            });
        }
        let rtp_header_extensions = (self.twcc.iter())
            .map(|(id, _)| RTPHeaderExtension {
                id: u16::from(*id),
                uri: rtc::sdp::extmap::TRANSPORT_CC_URI.into(),
            })
            .collect();
        StreamInfo {
            ssrc,
            rtcp_feedback,
            rtp_header_extensions,
            ..Default::default()
        }
    }

    /// When they want to be woken next (NACKs and TWCC feedback every 100 ms once packets flow).
    pub(super) fn deadline(&mut self) -> Option<Instant> {
        let nack = self.nack.poll_timeout();
        let twcc = self.twcc.as_mut().and_then(|(_, t)| t.poll_timeout());
        [nack, twcc].into_iter().flatten().min()
    }

    /// The RTCP due at `now`, into `out`.
    pub(super) fn due(&mut self, now: Instant, out: &mut Vec<Box<dyn rtc::rtcp::packet::Packet>>) {
        drain(&mut self.nack, now, out);
        if let Some((_, twcc)) = self.twcc.as_mut() {
            drain(twcc, now, out);
        }
    }
}

/// What `interceptor` writes once its timer at `now` has run: its RTCP, into `out`.
fn drain<P>(interceptor: &mut P, now: Instant, out: &mut Vec<Box<dyn rtc::rtcp::packet::Packet>>)
where
    P: Protocol<TaggedPacket, TaggedPacket, (), Wout = TaggedPacket, Time = Instant>,
{
    if interceptor.handle_timeout(now).is_err() {
        return;
    }
    while let Some(message) = interceptor.poll_write() {
        if let Any::Rtcp(packets) = message.message.packet {
            out.extend(packets);
        }
    }
}
