//! A fast-path session's own RTCP (`conn/fast`): its reports (RFC 3550 §6.4: sender reports per
//! leg, receiver report blocks per source, SDES CNAME; at randomized intervals, §6.3.5) and its
//! feedback (`feedback.rs`), each when due, written through rtc, which protects them with the
//! session's SRTCP context.

use std::time::{Instant, SystemTime};

use rtc::rtcp::receiver_report::ReceiverReport;
use rtc::rtcp::reception_report::ReceptionReport;
use rtc::rtcp::source_description::{
    SdesType, SourceDescription, SourceDescriptionChunk, SourceDescriptionItem,
};
use rtc::rtcp::transport_feedbacks::transport_layer_cc::TransportLayerCc;
use tracing::debug;

use super::super::super::forward::reports::REPORT_INTERVAL;
use super::super::{Conn, Link};
use super::feedback::Feedback;
use super::FastPath;

/// Reception report blocks one RTCP packet holds (its 5-bit count, RFC 3550 §6.4.1).
const MAX_REPORT_BLOCKS: usize = 31;

impl FastPath {
    /// The reports due at `now` (wall clock `wall`, read together), one compound packet (RFC
    /// 3550 §6.1): a sender report per leg that sent lately, a receiver report with a block per
    /// source heard since the last report, and the SDES CNAME of each reporting SSRC. (The
    /// blocks could ride in the first sender report; rtc, and pion before it, read them from
    /// receiver reports only, so a webrtc-rs client would never see them there.) A silent source
    /// gets no block; its statistics stay (at most `MAX_RECV_SSRCS`, the oldest forgotten first)
    /// for the client report, which tells a track that stopped from one that never was.
    pub(super) fn reports(
        &mut self,
        now: Instant,
        wall: SystemTime,
    ) -> Vec<Box<dyn rtc::rtcp::packet::Packet>> {
        let blocks: Vec<ReceptionReport> = (self.received.iter_mut())
            .filter(|r| r.heard_since_report())
            .take(MAX_REPORT_BLOCKS)
            .map(|r| r.report(now))
            .collect();
        let mut packets: Vec<Box<dyn rtc::rtcp::packet::Packet>> = Vec::new();
        let mut reporters = Vec::new();
        let mut sender_reports = Vec::new();
        for sent in &self.sent {
            if let Some(sr) = sent.report(now, wall) {
                if let Some(responder) = self.responder.as_mut() {
                    responder.sender_report(sr.ssrc, sr.ntp_time, now);
                }
                sender_reports.push(sr.ntp_time);
                reporters.push(sr.ssrc);
                packets.push(Box::new(sr));
            }
        }
        // All of one compound share their NTP time: one entry.
        if let Some(&ntp) = sender_reports.first() {
            self.sender_reports.sent(ntp, now);
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

/// The time to a session's next reports: [`REPORT_INTERVAL`] times a random factor from 0.5 to
/// 1.5 (RFC 3550 §6.3.5).
fn report_interval() -> std::time::Duration {
    REPORT_INTERVAL.mul_f64(0.5 + rand::random::<f64>())
}

impl Conn {
    /// When its fast path's next RTCP is due: its reports once it has connected, its feedback.
    pub(in crate::media::conn) fn rtcp_deadline(&mut self) -> Option<Instant> {
        let fast = self.fast.as_mut()?;
        if fast.next_report.is_none() && self.link == Link::Connected {
            fast.next_report = Some(Instant::now() + report_interval());
        }
        let feedback = fast.feedback.as_mut().and_then(Feedback::deadline);
        [fast.next_report, feedback].into_iter().flatten().min()
    }

    /// Writes its fast path's RTCP that is due at `now`: its feedback, its reports.
    pub(in crate::media::conn) fn send_due_rtcp(&mut self, now: Instant) {
        let Some(fast) = self.fast.as_mut() else {
            return;
        };
        if let Some(feedback) = fast.feedback.as_mut() {
            let mut due = Vec::new();
            feedback.due(now, &mut due);
            let twcc = (due.iter())
                .filter(|p| p.as_any().downcast_ref::<TransportLayerCc>().is_some())
                .count() as u32;
            let sent = &mut fast.client_rtcp.twcc_feedback_sent;
            *sent = sent.saturating_add(twcc);
            // One packet per write, as rtc's own interceptors send them (RFC 5506).
            for packet in due {
                self.write_rtcp(now, vec![packet]);
            }
        }
        self.send_due_reports(now);
    }

    /// Writes its fast path's reports if they are due at `now`.
    fn send_due_reports(&mut self, now: Instant) {
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
        if !packets.is_empty() {
            self.write_rtcp(now, packets);
        }
    }

    /// Writes `packets`, one compound, through rtc (which protects them with the same SRTCP
    /// context as the fast path's).
    fn write_rtcp(&mut self, now: Instant, packets: Vec<Box<dyn rtc::rtcp::packet::Packet>>) {
        let pc = self.pc.get();
        let (sender, receiver) = (pc.get_senders().next(), pc.get_receivers().next());
        let written = match (sender, receiver) {
            (Some(id), _) => pc.rtp_sender(id).map(|mut s| s.write_rtcp(now, packets)),
            (None, Some(id)) => (pc.rtp_receiver(id)).map(|mut r| r.write_rtcp(now, packets)),
            (None, None) => None,
        };
        if let Some(Err(e)) = written {
            self.span.in_scope(|| debug!(error = %e, "RTCP not sent"));
        }
    }
}
