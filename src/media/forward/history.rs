//! A video leg's sent packets kept for resending (the last [`HISTORY`], in a ring indexed by
//! sequence number), and the rules of a resend: at most [`MAX_RESENDS`] each, not again within
//! max(RTT, [`MIN_RESEND_INTERVAL`]), within [`RESEND_BYTES_PER_SECOND`]; the RTT from the
//! receiver's reports of the leg's sender reports.

use super::reports::SentReports;
use std::time::{Duration, Instant};

use rtc::rtcp::reception_report::ReceptionReport;
use rtc::shared::marshal::MarshalSize;

use super::nack::{HISTORY, MAX_RESENDS, MIN_RESEND_INTERVAL, RESEND_BYTES_PER_SECOND};
use crate::ops::metrics::Refused;
use crate::rate::TokenBucket;

/// A packet sent on a leg, with its resend state.
pub(super) struct Sent {
    pub(super) packet: rtc::rtp::Packet,
    /// When it was last put on the wire (first sent, or last resent).
    pub(super) at: Instant,
    pub(super) resends: u8,
}

/// One leg (local stream) that negotiated NACK.
pub(super) struct LegHistory {
    pub(super) history: Box<[Option<Sent>]>,
    budget: TokenBucket,
    /// (NTP middle 32 bits, when sent) of its last sender reports.
    pub(super) reports: SentReports,
    pub(super) rtt: Option<Duration>,
}

impl LegHistory {
    pub(super) fn new(now: Instant) -> Self {
        LegHistory {
            history: (0..HISTORY).map(|_| None).collect(),
            budget: TokenBucket::full(RESEND_BYTES_PER_SECOND, now),
            reports: SentReports::default(),
            rtt: None,
        }
    }

    pub(super) fn slot(seq: u16) -> usize {
        usize::from(seq) % HISTORY
    }

    /// The packet with `seq` if it may be resent at `now`, its resend counted.
    pub(super) fn resend(&mut self, seq: u16, now: Instant) -> Result<rtc::rtp::Packet, Refused> {
        let rtt = self.rtt.unwrap_or_default();
        let Some(sent) = self.history[Self::slot(seq)]
            .as_mut()
            .filter(|s| s.packet.header.sequence_number == seq)
        else {
            return Err(Refused::Unknown);
        };
        if sent.resends >= MAX_RESENDS {
            return Err(Refused::Exhausted);
        }
        if sent.resends > 0 && now.saturating_duration_since(sent.at) < rtt.max(MIN_RESEND_INTERVAL)
        {
            return Err(Refused::TooSoon);
        }
        let size = sent.packet.header.marshal_size() + sent.packet.payload.len();
        let size = u32::try_from(size).unwrap_or(u32::MAX);
        if !self.budget.take_n(
            now,
            f64::from(RESEND_BYTES_PER_SECOND),
            RESEND_BYTES_PER_SECOND,
            size,
        ) {
            return Err(Refused::Budget);
        }
        sent.resends += 1;
        sent.at = now;
        Ok(sent.packet.clone())
    }

    /// A reception report of this leg at `now`: the RTT, when it answers a sender report we
    /// remember (RFC 3550 §6.4.1: arrival − LSR − DLSR).
    pub(super) fn report(&mut self, report: &ReceptionReport, now: Instant) {
        if let Some(rtt) = self.reports.round_trip(report, now) {
            self.rtt = Some(rtt);
        }
    }
}
