//! Keyframe requests (RFC 4585 §6.3.1 PLI, RFC 5104 §3.5.1 FIR) from a stream's viewers to its
//! publisher. whip-echo does not decode, so a viewer that joins, loses packets or sees a new
//! publisher can only get a decodable picture from the publisher's next keyframe: its PLI/FIR, a
//! new viewer's video leg connecting, and a publisher connecting each ask for one, at most one per
//! publisher every [`MIN_INTERVAL`] (a keyframe costs several times a normal frame; a burst of
//! viewers must not turn the stream into keyframes only). A request inside the interval is kept
//! and sent when it ends.

use std::time::{Duration, Instant};

use rtc::rtcp::payload_feedbacks::full_intra_request::{FirEntry, FullIntraRequest};
use rtc::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;
use rtc::rtp_transceiver::rtp_sender::RtpCodecKind;
use tracing::debug;

use super::conn::{Conn, Link};
use super::event_loop::MediaLoop;
use super::routes::SessionKey;
use super::shield::shielded;

/// The least time between two keyframe requests to one publisher.
pub const MIN_INTERVAL: Duration = Duration::from_millis(500);

/// A publisher's keyframe-request state.
#[derive(Debug, Default)]
pub struct Keyframes {
    /// The SSRC of the video the publisher sends (learnt from its packets).
    pub video_ssrc: Option<u32>,
    /// Only FIR was negotiated (no `nack pli`): ask with FIR.
    pub fir_only: bool,
    last: Option<Instant>,
    pending: bool,
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

    /// Whether a request may go now; if so, it is counted as sent.
    fn due(&mut self, now: Instant) -> bool {
        if !self.pending || self.video_ssrc.is_none() {
            return false;
        }
        if self.last.is_some_and(|last| now < last + MIN_INTERVAL) {
            return false;
        }
        self.pending = false;
        self.last = Some(now);
        true
    }
}

impl MediaLoop {
    /// Asks the publisher of the stream of session `key` for a keyframe (now, or when its interval
    /// ends).
    pub(super) fn request_keyframe_upstream(&mut self, key: SessionKey, now: Instant) {
        let Some(stream) = self.registry.session(key).map(|e| e.stream.clone()) else {
            return;
        };
        if let Some(publisher) = self.registry.publisher(&stream) {
            self.request_keyframe(publisher, now);
        }
    }

    /// Asks publisher `key` for a keyframe (now, or when its interval ends).
    pub(super) fn request_keyframe(&mut self, key: SessionKey, now: Instant) {
        if let Some(conn) = self.sessions.get_mut(&key) {
            conn.keyframes.pending = true;
        }
        self.send_due_keyframe_request(key, now);
    }

    /// Sends publisher `key`'s pending keyframe request if its interval has ended.
    pub(super) fn send_due_keyframe_request(&mut self, key: SessionKey, now: Instant) {
        let Some(conn) = self.sessions.get_mut(&key) else {
            return;
        };
        if conn.link != Link::Connected || !conn.keyframes.due(now) {
            return;
        }
        match shielded(|| write_keyframe_request(conn, now)) {
            Ok(()) => self.flush(key),
            Err(panic) => self.note_panic(key, &panic),
        }
    }
}

/// Writes a PLI (or FIR) for the publisher's video on its video receiver.
fn write_keyframe_request(conn: &mut Conn, now: Instant) {
    let Some(media_ssrc) = conn.keyframes.video_ssrc else {
        return;
    };
    let packet: Box<dyn rtc::rtcp::Packet> = if conn.keyframes.fir_only {
        conn.keyframes.fir_sequence = conn.keyframes.fir_sequence.wrapping_add(1);
        Box::new(FullIntraRequest {
            sender_ssrc: 0,
            media_ssrc,
            fir: vec![FirEntry {
                ssrc: media_ssrc,
                sequence_number: conn.keyframes.fir_sequence,
            }],
        })
    } else {
        Box::new(PictureLossIndication {
            sender_ssrc: 0,
            media_ssrc,
        })
    };
    let receivers: Vec<_> = conn.pc.get_receivers().collect();
    for id in receivers {
        let Some(mut receiver) = conn.pc.rtp_receiver(id) else {
            continue;
        };
        if receiver.track().kind() != RtpCodecKind::Video {
            continue;
        }
        match receiver.write_rtcp(now, vec![packet]) {
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
        let mut k = Keyframes {
            pending: true,
            ..Keyframes::default()
        };
        assert!(!k.due(t0), "no video SSRC yet");
        k.video_ssrc = Some(7);
        assert!(k.due(t0));
        assert!(!k.due(t0), "nothing pending");
        k.pending = true;
        assert!(!k.due(t0 + MIN_INTERVAL / 2), "inside the interval: kept");
        assert!(k.due(t0 + MIN_INTERVAL), "sent when it ends");
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
