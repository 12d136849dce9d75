//! An interceptor that lets keyframe requests through to the application. rtc's interceptor chain
//! ends inbound RTCP before the application unless an interceptor marks a packet
//! `DeliverToApplication` (`rtc_interceptor::NoopInterceptor`); a forwarding server (whip-echo) and
//! a test client that counts requests both need PLI (RFC 4585 §6.3.1) and FIR (RFC 5104 §3.5.1).

use std::collections::VecDeque;
use std::time::Instant;

use rtc::interceptor::{Attribute, Interceptor, Packet, Registry, Slot, StreamInfo, TaggedPacket};
use rtc::rtcp::payload_feedbacks::full_intra_request::FullIntraRequest;
use rtc::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;
use rtc::shared::error::Error;

/// Where in the chain it sits: application-ward of rtc's own interceptors (they all still see the
/// packet), wire-ward of the terminus that `Registry::build` appends.
const SLOT: usize = 14_000;

/// Marks inbound RTCP that asks for a keyframe as for the application; everything else passes
/// as it is.
#[derive(Default)]
pub struct KeyframeFeedback {
    reads: VecDeque<TaggedPacket>,
    writes: VecDeque<TaggedPacket>,
    /// Every inbound RTCP packet for the application, not only keyframe requests.
    all: bool,
}

/// `registry` with [`KeyframeFeedback`] in it.
pub fn with_keyframe_feedback(registry: Registry) -> Registry {
    registry.with(Slot::Custom(SLOT), KeyframeFeedback::default())
}

/// `registry` with a [`KeyframeFeedback`] that lets every inbound RTCP packet through to the
/// application (a test client that counts a server's NACKs and TWCC feedback).
pub fn with_all_rtcp_delivered(registry: Registry) -> Registry {
    let all = KeyframeFeedback {
        all: true,
        ..KeyframeFeedback::default()
    };
    registry.with(Slot::Custom(SLOT), all)
}

/// Whether RTCP `packets` include a PLI or FIR.
pub fn asks_for_keyframe(packets: &[Box<dyn rtc::rtcp::Packet>]) -> bool {
    packets.iter().any(|p| {
        let any = p.as_any();
        any.downcast_ref::<PictureLossIndication>().is_some()
            || any.downcast_ref::<FullIntraRequest>().is_some()
    })
}

/// The media SSRCs that RTCP `packets` ask keyframes of (a PLI's media SSRC, a FIR's entries).
pub fn keyframes_asked(packets: &[Box<dyn rtc::rtcp::Packet>]) -> Vec<u32> {
    let mut ssrcs = Vec::new();
    for p in packets {
        let any = p.as_any();
        if let Some(pli) = any.downcast_ref::<PictureLossIndication>() {
            ssrcs.push(pli.media_ssrc);
        } else if let Some(fir) = any.downcast_ref::<FullIntraRequest>() {
            ssrcs.extend(fir.fir.iter().map(|entry| entry.ssrc));
        }
    }
    ssrcs
}

/// Writes RTCP `packets` (one compound: keyframe requests, NACKs) on `pc`'s video receiver, the
/// way the server asks a publisher and the test client asks the server.
pub fn write_on_video_receiver(
    pc: &mut rtc::peer_connection::RTCPeerConnection,
    packets: Vec<Box<dyn rtc::rtcp::Packet>>,
    now: Instant,
) -> Result<(), String> {
    let receivers: Vec<_> = pc.get_receivers().collect();
    for id in receivers {
        let Some(mut receiver) = pc.rtp_receiver(id) else {
            continue;
        };
        if receiver.track().kind() == rtc::rtp_transceiver::rtp_sender::RtpCodecKind::Video {
            return receiver.write_rtcp(now, packets).map_err(|e| e.to_string());
        }
    }
    Err("no video receiver".into())
}

/// Whether a message the application read from a connection is such a request (the server's
/// loop and the test client both ask this of every message they read).
pub fn message_asks_for_keyframe(message: &rtc::peer_connection::message::RTCMessage) -> bool {
    use rtc::peer_connection::message::RTCMessage;
    matches!(message, RTCMessage::RtcpPacket(_, packets) if asks_for_keyframe(packets))
}

impl rtc::sansio::Protocol<TaggedPacket, TaggedPacket, ()> for KeyframeFeedback {
    type Rout = TaggedPacket;
    type Wout = TaggedPacket;
    type Eout = ();
    type Error = Error;
    type Time = Instant;

    fn handle_read(&mut self, mut msg: TaggedPacket) -> Result<(), Error> {
        if let Packet::Rtcp(packets) = &msg.message.packet {
            let deliver = self.all || asks_for_keyframe(packets);
            if deliver && !msg.message.has(&Attribute::DeliverToApplication) {
                msg.message.attributes.push(Attribute::DeliverToApplication);
            }
        }
        self.reads.push_back(msg);
        Ok(())
    }

    fn poll_read(&mut self) -> Option<TaggedPacket> {
        self.reads.pop_front()
    }

    fn handle_write(&mut self, msg: TaggedPacket) -> Result<(), Error> {
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

    fn close(&mut self) -> Result<(), Error> {
        Ok(())
    }
}

impl Interceptor for KeyframeFeedback {
    fn bind_local_stream(&mut self, _: &StreamInfo) {}
    fn unbind_local_stream(&mut self, _: &StreamInfo) {}
    fn bind_remote_stream(&mut self, _: &StreamInfo) {}
    fn unbind_remote_stream(&mut self, _: &StreamInfo) {}
}
