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
use rtc::rtp_transceiver::rtp_sender::RtpCodecKind;
use tracing::debug;

use super::conn::{Conn, Link};
use super::event_loop::MediaLoop;
use super::routes::SessionKey;
use super::shield::shielded;
use super::sources::MAX_SOURCES;

/// The least time between two keyframe requests to one publisher.
pub const MIN_INTERVAL: Duration = Duration::from_millis(500);

/// A publisher's keyframe-request state.
#[derive(Debug, Default)]
pub struct Keyframes {
    /// Only FIR was negotiated (no `nack pli`): ask with FIR.
    pub fir_only: bool,
    last: Option<Instant>,
    /// Every video source is wanted.
    pending_all: bool,
    /// The layers wanted (at most [`MAX_SOURCES`]).
    pending: Vec<u32>,
    fir_sequence: u8,
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
            Some(ssrc) if !self.pending.contains(&ssrc) && self.pending.len() < MAX_SOURCES => {
                self.pending.push(ssrc)
            }
            Some(_) => {}
        }
    }

    /// The sources to ask now, of the publisher's video sources `known`; if any, the request is
    /// counted as sent.
    fn due(&mut self, now: Instant, known: impl Iterator<Item = u32>) -> Vec<u32> {
        if !self.pending_all && self.pending.is_empty() {
            return Vec::new();
        }
        if self.last.is_some_and(|last| now < last + MIN_INTERVAL) {
            return Vec::new();
        }
        let known: Vec<u32> = known.collect();
        // A layer that is no longer a source is asked of no more (and holds no place).
        self.pending.retain(|s| known.contains(s));
        let ssrcs = if self.pending_all {
            known
        } else {
            self.pending.clone()
        };
        if !ssrcs.is_empty() {
            self.pending_all = false;
            self.pending.clear();
            self.last = Some(now);
        }
        ssrcs
    }
}

impl MediaLoop {
    /// Asks the publisher of the stream of session `key` for a keyframe of the layer session
    /// `key`'s video leg forwards (or will: its first), now or when the interval ends.
    pub(super) fn request_keyframe_upstream(&mut self, key: SessionKey, now: Instant) {
        let Some(stream) = self.registry.session(key).map(|e| e.stream.clone()) else {
            return;
        };
        let Some(publisher) = self.registry.publisher(&stream) else {
            return;
        };
        let layers = self.sessions.get(&publisher).map(|c| c.sources.layers(now));
        let leg = self.sessions.get(&key).and_then(|c| {
            c.legs
                .iter()
                .find(|l| l.kind == RtpCodecKind::Video)
                .map(|l| {
                    (
                        l.forwarder.source_ssrc(),
                        l.wanted.as_ref().map(|(_, id)| *id),
                    )
                })
        });
        let ssrc = match (leg, layers) {
            (Some((Some(ssrc), _)), _) => Some(ssrc),
            (Some((None, wanted)), Some(layers)) => layers.target(wanted),
            _ => None,
        };
        self.request_keyframe(publisher, ssrc, now);
    }

    /// Asks publisher `key` for a keyframe of source `ssrc` (none: of each video source), now or
    /// when its interval ends.
    pub(super) fn request_keyframe(&mut self, key: SessionKey, ssrc: Option<u32>, now: Instant) {
        if let Some(conn) = self.sessions.get_mut(&key) {
            conn.keyframes.want(ssrc);
        }
        self.send_due_keyframe_request(key, now);
    }

    /// Sends publisher `key`'s pending keyframe request if its interval has ended.
    pub(super) fn send_due_keyframe_request(&mut self, key: SessionKey, now: Instant) {
        let Some(conn) = self.sessions.get_mut(&key) else {
            return;
        };
        if conn.link != Link::Connected {
            return;
        }
        let ssrcs = conn.keyframes.due(now, conn.sources.video_ssrcs());
        if ssrcs.is_empty() {
            return;
        }
        match shielded(|| write_keyframe_request(conn, &ssrcs, now)) {
            Ok(()) => self.flush(key),
            Err(panic) => self.note_panic(key, &panic),
        }
    }
}

/// Writes a PLI per source in `ssrcs` (or one FIR naming them) on the publisher's video
/// receiver.
fn write_keyframe_request(conn: &mut Conn, ssrcs: &[u32], now: Instant) {
    let packets: Vec<Box<dyn rtc::rtcp::Packet>> = if conn.keyframes.fir_only {
        conn.keyframes.fir_sequence = conn.keyframes.fir_sequence.wrapping_add(1);
        let sequence_number = conn.keyframes.fir_sequence;
        vec![Box::new(FullIntraRequest {
            sender_ssrc: 0,
            media_ssrc: 0,
            fir: ssrcs
                .iter()
                .map(|&ssrc| FirEntry {
                    ssrc,
                    sequence_number,
                })
                .collect(),
        })]
    } else {
        ssrcs
            .iter()
            .map(|&media_ssrc| -> Box<dyn rtc::rtcp::Packet> {
                Box::new(PictureLossIndication {
                    sender_ssrc: 0,
                    media_ssrc,
                })
            })
            .collect()
    };
    let receivers: Vec<_> = conn.pc.get_receivers().collect();
    for id in receivers {
        let Some(mut receiver) = conn.pc.rtp_receiver(id) else {
            continue;
        };
        if receiver.track().kind() != RtpCodecKind::Video {
            continue;
        }
        match receiver.write_rtcp(now, packets) {
            Ok(()) => conn.span.in_scope(|| debug!("keyframe requested")),
            Err(e) => conn
                .span
                .in_scope(|| debug!(error = %e, "keyframe request not sent")),
        }
        return;
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
        assert_eq!(k.pending.len(), MAX_SOURCES);
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
