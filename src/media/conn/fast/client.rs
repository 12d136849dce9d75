//! What a fast-path session saw of its client, for the client report (`report/`): the RTCP the
//! client sent (reports, NACKs, keyframe requests; the loss, jitter and round trip its reception
//! reports give for what it is sent) and each track's statistics, from the counts the fast path
//! keeps anyway.

use std::time::Instant;

use rtc::rtcp::payload_feedbacks::full_intra_request::FullIntraRequest;
use rtc::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;
use rtc::rtcp::receiver_report::ReceiverReport;
use rtc::rtcp::reception_report::ReceptionReport;
use rtc::rtcp::sender_report::SenderReport;
use rtc::rtcp::transport_feedbacks::transport_layer_nack::TransportLayerNack;

use super::FastPath;
use crate::report::{millis as ms, ClientRtcp, Track};

impl FastPath {
    /// Counts one RTCP packet the client sent, at `now`.
    pub(super) fn note_client_rtcp(
        &mut self,
        packet: &dyn rtc::rtcp::packet::Packet,
        now: Instant,
    ) {
        let any = packet.as_any();
        let c = &mut self.client_rtcp;
        let blocks = if let Some(sr) = any.downcast_ref::<SenderReport>() {
            c.sender_reports = c.sender_reports.saturating_add(1);
            &sr.reports[..]
        } else if let Some(rr) = any.downcast_ref::<ReceiverReport>() {
            c.receiver_reports = c.receiver_reports.saturating_add(1);
            &rr.reports[..]
        } else {
            if any.downcast_ref::<TransportLayerNack>().is_some() {
                c.nacks = c.nacks.saturating_add(1);
            }
            let keyframe = any.downcast_ref::<PictureLossIndication>().is_some()
                || any.downcast_ref::<FullIntraRequest>().is_some();
            c.keyframe_requests = c.keyframe_requests.saturating_add(u32::from(keyframe));
            return;
        };
        let ours = || {
            blocks
                .iter()
                .filter(|b| self.sent.iter().any(|s| s.ssrc() == b.ssrc))
        };
        let count = ours().count() as u32;
        let last = ours().next_back().cloned();
        c.reception_reports = c.reception_reports.saturating_add(count);
        if let Some(block) = last {
            self.reception_report(&block, now);
        }
    }

    /// What a reception report block about one of its legs says: the loss and jitter there,
    /// and the round trip if it answers a sender report of this session.
    fn reception_report(&mut self, block: &ReceptionReport, now: Instant) {
        let clock =
            (self.sent.iter().find(|s| s.ssrc() == block.ssrc)).map_or(48_000, |s| s.clock_rate());
        let c = &mut self.client_rtcp;
        c.reported_loss_percent = Some(f64::from(block.fraction_lost) * 100.0 / 256.0);
        c.reported_jitter_ms = Some(f64::from(block.jitter) * 1000.0 / f64::from(clock));
        if let Some(rtt) = self.sender_reports.round_trip(block, now) {
            c.rtt_ms = Some(rtt.as_secs_f64() * 1000.0);
        }
    }

    /// What the client's RTCP was.
    pub(in crate::media::conn) fn client_rtcp(&self) -> &ClientRtcp {
        &self.client_rtcp
    }

    /// Each track's statistics at `now`: those received from the client, then those sent to it.
    pub(in crate::media::conn) fn tracks(&self, now: Instant) -> Vec<Track> {
        let kind = |clock: u32| if clock == 90_000 { "video" } else { "audio" };
        let received = self.received.iter().map(|r| {
            let (packets, lost, loss_percent, jitter_ms, idle) = r.summary(now);
            Track {
                direction: "from_client",
                kind: kind(r.clock_rate()),
                ssrc: r.ssrc(),
                packets,
                bytes: r.bytes(),
                lost,
                loss_percent,
                jitter_ms,
                idle_ms: ms(idle),
            }
        });
        let sent = self.sent.iter().map(|s| {
            let (packets, octets, idle) = s.summary(now);
            Track {
                direction: "to_client",
                kind: kind(s.clock_rate()),
                ssrc: s.ssrc(),
                packets: u64::from(packets),
                bytes: u64::from(octets),
                idle_ms: idle.map_or(0, ms),
                ..Track::default()
            }
        });
        received.chain(sent).collect()
    }
}
