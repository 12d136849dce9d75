//! The media loop's side of keyframe requests (`keyframes.rs` holds each publisher's request
//! state and the packets): a viewer's request passed to its stream's publisher for the layer it
//! plays, and a publisher's pending request sent when its interval allows.

use std::time::Instant;

use rtc::rtp_transceiver::rtp_sender::RtpCodecKind;
use tracing::debug;

use super::conn::Link;
use super::event_loop::MediaLoop;
use super::shield::shielded;
use super::SessionKey;

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
        let layers = self
            .sessions
            .get(&publisher)
            .map(|c| c.sources.layers(now))
            .unwrap_or_default();
        let ssrc = self.sessions.get(&key).and_then(|c| {
            let leg = c.legs.iter().find(|l| l.kind == RtpCodecKind::Video)?;
            leg.layer(&layers)
        });
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
        let packets = conn.keyframes.packets(&ssrcs);
        let span = conn.span.clone();
        match shielded(|| rtc_util::write_on_video_receiver(&mut conn.pc, packets, now)) {
            Ok(written) => {
                match written {
                    Ok(()) => span.in_scope(|| debug!("keyframe requested")),
                    Err(e) => span.in_scope(|| debug!(error = %e, "keyframe request not sent")),
                }
                self.flush(key);
            }
            Err(panic) => self.note_panic(key, &panic),
        }
    }
}
