//! Keyframe requests (RFC 4585 §6.3.1 PLI, RFC 5104 §3.5.1 FIR) from a stream's viewers to its
//! publisher. whip-echo does not decode, so a viewer that joins, loses packets or sees a new
//! publisher can only get a decodable picture from the publisher's next keyframe: its PLI/FIR, a
//! new viewer's video leg connecting, and a publisher connecting each ask for one, at most one per
//! publisher every [`MIN_INTERVAL`] (a keyframe costs several times a normal frame; a burst of
//! viewers must not turn the stream into keyframes only). A request inside the interval is kept
//! and sent when it ends. A request names the layer (SSRC) wanted, or every video source of the
//! publisher (a publisher connecting): one request carries a PLI per layer wanted.

use std::time::{Duration, Instant};

use rtc::rtcp::payload_feedbacks::full_intra_request::{FirEntry, FullIntraRequest};
use rtc::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;

use super::sources::SsrcSet;

/// The least time between two keyframe requests to one publisher.
pub const MIN_INTERVAL: Duration = Duration::from_millis(500);
/// A keyframe this soon after a request answers it (for the client report).
pub const ANSWER_WINDOW: Duration = Duration::from_secs(1);

/// A publisher's keyframe-request state.
#[derive(Debug, Default)]
pub struct Keyframes {
    /// Only FIR was negotiated (no `nack pli`): ask with FIR.
    pub fir_only: bool,
    last: Option<Instant>,
    /// Every video source is wanted.
    pending_all: bool,
    /// The layers wanted.
    pending: SsrcSet,
    fir_sequence: u8,
    /// What the client report says of them.
    facts: crate::report::Keyframes,
    /// When the oldest request not yet answered went.
    awaiting: Option<Instant>,
}

impl Keyframes {
    /// From the publisher's offer: PLI unless the video section offers only `ccm fir`.
    pub fn for_offer(remote_sdp: &str) -> Self {
        let video = remote_sdp
            .split("\nm=")
            .find(|s| s.starts_with("video"))
            .unwrap_or_default();
        let pli = video
            .lines()
            .any(|l| l.starts_with("a=rtcp-fb:") && l.trim_end().ends_with(" nack pli"));
        let fir = video
            .lines()
            .any(|l| l.starts_with("a=rtcp-fb:") && l.trim_end().ends_with(" ccm fir"));
        Keyframes {
            fir_only: fir && !pli,
            ..Keyframes::default()
        }
    }

    /// Notes that a keyframe of source `ssrc` (none: of every video source) is wanted.
    pub fn want(&mut self, ssrc: Option<u32>) {
        match ssrc {
            None => self.pending_all = true,
            Some(ssrc) => self.pending.insert(ssrc),
        }
    }

    /// The sources to ask now, of the publisher's video sources `known`; if any, the request is
    /// counted as sent.
    pub(in crate::media) fn due(
        &mut self,
        now: Instant,
        known: impl Iterator<Item = u32>,
    ) -> Vec<u32> {
        if !self.pending_all && self.pending.is_empty() {
            return Vec::new();
        }
        if self.last.is_some_and(|last| now < last + MIN_INTERVAL) {
            return Vec::new();
        }
        let known: Vec<u32> = known.collect();
        // A layer that is no longer a source is asked of no more (and holds no place).
        self.pending.retain(|s| known.contains(&s));
        let ssrcs = if self.pending_all {
            known
        } else {
            self.pending.iter().copied().collect()
        };
        if !ssrcs.is_empty() {
            self.pending_all = false;
            self.pending = SsrcSet::default();
            self.last = Some(now);
            self.facts.requests_sent = self.facts.requests_sent.saturating_add(1);
            if self.awaiting.is_none_or(|at| now > at + ANSWER_WINDOW) {
                self.awaiting = Some(now);
            }
        }
        ssrcs
    }

    /// A keyframe of the publisher's arrived at `now`: it answers the request before it, if it
    /// came within [`ANSWER_WINDOW`] of it.
    pub fn arrived(&mut self, now: Instant) {
        self.facts.keyframes_received = self.facts.keyframes_received.saturating_add(1);
        if let Some(at) = self.awaiting.take() {
            if now <= at + ANSWER_WINDOW {
                self.facts.answered = self.facts.answered.saturating_add(1);
            }
        }
    }

    /// What the client report says of them.
    pub fn facts(&self) -> &crate::report::Keyframes {
        &self.facts
    }

    /// The request for `ssrcs`: a PLI for each, or one FIR naming them all where only FIR was
    /// negotiated (its sequence number counts up, RFC 5104 §4.3.1.1).
    pub(in crate::media) fn packets(&mut self, ssrcs: &[u32]) -> Vec<Box<dyn rtc::rtcp::Packet>> {
        if self.fir_only {
            self.fir_sequence = self.fir_sequence.wrapping_add(1);
            let sequence_number = self.fir_sequence;
            return vec![Box::new(FullIntraRequest {
                sender_ssrc: 0,
                media_ssrc: 0,
                fir: ssrcs
                    .iter()
                    .map(|&ssrc| FirEntry {
                        ssrc,
                        sequence_number,
                    })
                    .collect(),
            })];
        }
        ssrcs
            .iter()
            .map(|&media_ssrc| -> Box<dyn rtc::rtcp::Packet> {
                Box::new(PictureLossIndication {
                    sender_ssrc: 0,
                    media_ssrc,
                })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn at_most_one_request_per_interval_and_none_before_video() {
        let t0 = Instant::now();
        let mut k = Keyframes::default();
        k.want(None);
        assert!(k.due(t0, [].into_iter()).is_empty(), "no video SSRC yet");
        assert_eq!(k.due(t0, [7, 8].into_iter()), [7, 8], "every layer");
        assert!(k.due(t0, [7].into_iter()).is_empty(), "nothing pending");
        k.want(Some(8));
        k.want(Some(8));
        assert!(
            k.due(t0 + MIN_INTERVAL / 2, [7, 8].into_iter()).is_empty(),
            "inside the interval: kept"
        );
        assert_eq!(
            k.due(t0 + MIN_INTERVAL, [7, 8].into_iter()),
            [8],
            "the layer wanted"
        );
        for ssrc in 0..100 {
            k.want(Some(ssrc));
        }
        assert_eq!(k.pending.len(), crate::media::forward::sources::MAX_SOURCES);
    }

    #[test]
    fn fir_only_where_pli_was_not_offered() {
        let sdp = |fb: &str| {
            format!("v=0\r\nm=audio 9 X 111\r\na=rtcp-fb:111 nack pli\r\nm=video 9 X 96\r\n{fb}")
        };
        assert!(
            !Keyframes::for_offer(&sdp("a=rtcp-fb:96 nack pli\r\na=rtcp-fb:96 ccm fir\r\n"))
                .fir_only
        );
        assert!(Keyframes::for_offer(&sdp("a=rtcp-fb:96 ccm fir\r\n")).fir_only);
        assert!(!Keyframes::for_offer(&sdp("")).fir_only);
    }
}
