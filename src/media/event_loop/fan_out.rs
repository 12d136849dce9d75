//! The fan-out over a loop's sessions: a publisher's packets to every connected receiving leg of
//! its stream (its viewers, and itself for `/echo`); what each leg takes is `legs.rs`'s
//! [`FanOut`]. The keyframes legs wait for are asked of the publisher in one request.

use std::time::Instant;

use bytes::BytesMut;
use rtc::rtp::packet::Packet;
use rtc::rtp_transceiver::rtp_sender::RtpCodecKind;

use crate::media::conn::Conn;
use crate::media::forward::legs::FanOut;
use crate::media::sessions::Sessions;
use crate::media::shield::{shielded, Panicked};
use crate::media::SessionKey;
use crate::ops::metrics::{Dropped, LoopMetrics};
use crate::session::Role;

/// What a fan-out did, for the loop to finish.
#[derive(Default)]
pub struct Forwarded {
    /// Sessions whose peer connection panicked while writing.
    pub panicked: Vec<(SessionKey, Panicked)>,
    /// Whether a keyframe was asked of the publisher (to send when its interval allows).
    pub keyframe_asked: bool,
}

/// Sends `media` from publisher `from` to the legs of its stream; `targets` (the caller's, empty)
/// ends with the sessions it wrote to, whose datagrams wait to be flushed; the fast path builds
/// them in `buffers` (the loop's spare ones) where it can.
pub fn fan_out(
    sessions: &mut Sessions,
    from: SessionKey,
    media: &[(RtpCodecKind, Packet)],
    now: Instant,
    metrics: &LoopMetrics,
    (targets, buffers): (&mut Vec<SessionKey>, &mut Vec<BytesMut>),
) -> Forwarded {
    let mut forwarded = Forwarded::default();
    let Some(source) = sessions.entry(from) else {
        return forwarded;
    };
    targets.extend_from_slice(sessions.viewers(&source.stream));
    if source.role == Role::Echo {
        targets.push(from);
    }
    let Some(publisher) = sessions.conn(from) else {
        return forwarded;
    };
    let mut fan = FanOut::of(publisher.codec_ids(), publisher.sources(), media, now);
    // The targets written to are kept in place: no second list per fan-out.
    let mut written = 0;
    for i in 0..targets.len() {
        let target = targets[i];
        let Some(legs) = sessions.conn_mut(target).and_then(Conn::forwarding) else {
            continue;
        };
        match shielded(|| fan.forward_to(legs, media, now, (metrics, &mut *buffers))) {
            Ok(()) => {
                targets[written] = target;
                written += 1;
            }
            Err(panic) => forwarded.panicked.push((target, panic)),
        }
    }
    targets.truncate(written);
    if fan.video_legs {
        let other = media
            .iter()
            .filter(|(kind, p)| *kind == RtpCodecKind::Video && !fan.taken.contains(p.header.ssrc))
            .count();
        metrics.dropped(Dropped::OtherSource, other as u64);
    }
    if !fan.keyframes_wanted.is_empty() {
        if let Some(conn) = sessions.conn_mut(from) {
            for &ssrc in fan.keyframes_wanted.iter() {
                conn.want_keyframe(Some(ssrc));
            }
            forwarded.keyframe_asked = true;
        }
    }
    forwarded
}
