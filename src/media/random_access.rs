//! Whether a video RTP packet starts a keyframe: the one thing whip-echo reads inside a payload.
//!
//! A viewer's video leg switches to a new source (a new publisher, or a publisher's encoder
//! restarted under a new SSRC) only at a packet that starts a keyframe: frames before it refer to
//! pictures the viewer's decoder never had, and would show as corruption or a frozen picture
//! until the next keyframe anyway. Each check reads the payload header its RTP payload format
//! defines, nothing of the codec's bitstream beyond it.

use rtc::rtp_transceiver::rtp_sender::RtpCodecKind;

/// How a leg's codec marks a keyframe in its RTP payloads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// Audio (and any other codec): every packet is a place to start.
    Any,
    Vp8,
    Vp9,
    H264,
    Av1,
}

impl Format {
    /// The format of a codec by its key ([`super::codecs::Codec::key`], which starts with the
    /// MIME type).
    pub fn of(kind: RtpCodecKind, codec_key: &str) -> Self {
        if kind != RtpCodecKind::Video {
            return Format::Any;
        }
        let mime = codec_key.split('/').take(2).collect::<Vec<_>>().join("/");
        match mime.to_ascii_lowercase().as_str() {
            "video/vp8" => Format::Vp8,
            "video/vp9" => Format::Vp9,
            "video/h264" => Format::H264,
            "video/av1" => Format::Av1,
            _ => Format::Any,
        }
    }

    /// Whether `payload` (one RTP packet's) is where a decoder can start.
    pub fn starts_keyframe(self, payload: &[u8]) -> bool {
        match self {
            Format::Any => true,
            Format::Vp8 => vp8(payload),
            Format::Vp9 => vp9(payload),
            Format::H264 => h264(payload),
            Format::Av1 => av1(payload),
        }
    }
}

/// RFC 7741 §4.2–4.3: the payload descriptor (`X R N S R PID`, then the optional `I L T K`
/// byte and its fields), then, in the first packet of a frame (S = 1, PID = 0), the VP8 payload
/// header whose lowest bit P is 0 for a key frame (RFC 6386 §9.1).
fn vp8(payload: &[u8]) -> bool {
    let Some(&first) = payload.first() else {
        return false;
    };
    let start_of_partition_0 = first & 0x10 != 0 && first & 0x07 == 0;
    if !start_of_partition_0 {
        return false;
    }
    let mut at = 1;
    if first & 0x80 != 0 {
        let Some(&ext) = payload.get(1) else {
            return false;
        };
        at = 2;
        if ext & 0x80 != 0 {
            // PictureID: one byte, or two when its M bit is set.
            let Some(&pid) = payload.get(at) else {
                return false;
            };
            at += if pid & 0x80 != 0 { 2 } else { 1 };
        }
        if ext & 0x40 != 0 {
            at += 1; // TL0PICIDX
        }
        if ext & 0x30 != 0 {
            at += 1; // TID / Y / KEYIDX
        }
    }
    payload.get(at).is_some_and(|header| header & 0x01 == 0)
}

/// RFC 9628 §4.2: the payload descriptor's first byte `I P L F B E V Z`; the start of a frame
/// (B = 1) that is not inter-picture predicted (P = 0).
fn vp9(payload: &[u8]) -> bool {
    payload
        .first()
        .is_some_and(|&b| b & 0x08 != 0 && b & 0x40 == 0)
}

/// RFC 6184 §5.4–5.8: a NAL unit of type 5 (IDR slice) or 7 (sequence parameter set, which
/// encoders send right before an IDR), alone, inside a STAP-A (type 24), or at the start of a
/// FU-A (type 28).
fn h264(payload: &[u8]) -> bool {
    let starts = |nal_type: u8| nal_type == 5 || nal_type == 7;
    let Some(&first) = payload.first() else {
        return false;
    };
    match first & 0x1F {
        24 => {
            let mut rest = &payload[1..];
            while rest.len() > 2 {
                let size = usize::from(u16::from_be_bytes([rest[0], rest[1]]));
                let Some(nal) = rest.get(2..2 + size) else {
                    return false;
                };
                if nal.first().is_some_and(|&h| starts(h & 0x1F)) {
                    return true;
                }
                rest = &rest[2 + size..];
            }
            false
        }
        28 => payload
            .get(1)
            .is_some_and(|&fu| fu & 0x80 != 0 && starts(fu & 0x1F)),
        nal_type => starts(nal_type),
    }
}

/// The AV1 RTP payload format (AOMedia, v1.0.0, §4.4): the aggregation header `Z Y W W N - - -`
/// whose N bit marks the first packet of a coded video sequence (a keyframe with its sequence
/// header).
fn av1(payload: &[u8]) -> bool {
    payload.first().is_some_and(|&b| b & 0x08 != 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_by_codec_key() {
        let video = RtpCodecKind::Video;
        assert_eq!(Format::of(video, "video/VP8"), Format::Vp8);
        assert_eq!(Format::of(video, "video/H264/42e0/1"), Format::H264);
        assert_eq!(Format::of(video, "video/VP9/0"), Format::Vp9);
        assert_eq!(Format::of(video, "video/AV1/0"), Format::Av1);
        assert_eq!(Format::of(RtpCodecKind::Audio, "audio/opus"), Format::Any);
        assert!(Format::Any.starts_keyframe(b""));
    }

    #[test]
    fn vp8_key_frames_with_and_without_extensions() {
        // S=1 PID=0, payload header P=0 (key) and P=1 (inter).
        assert!(vp8(&[0x10, 0x50, 0x9d]));
        assert!(!vp8(&[0x10, 0x51, 0x9d]));
        // Not the start of partition 0: a later packet of the same key frame.
        assert!(!vp8(&[0x00, 0x50]));
        assert!(!vp8(&[0x11, 0x50]));
        // X=1 with a 15-bit PictureID (as Chromium and GStreamer send), TL0PICIDX and KEYIDX.
        assert!(vp8(&[0x90, 0xF0, 0x81, 0x23, 0x07, 0x40, 0x50]));
        assert!(!vp8(&[0x90, 0xF0, 0x81, 0x23, 0x07, 0x40, 0x51]));
        // A 7-bit PictureID only.
        assert!(vp8(&[0x90, 0x80, 0x05, 0x50]));
        // Truncated.
        assert!(!vp8(&[0x90, 0x80]));
        assert!(!vp8(&[]));
    }

    #[test]
    fn vp9_start_of_a_non_predicted_frame() {
        assert!(vp9(&[0x8C])); // I, B, E
        assert!(!vp9(&[0xCC])); // P set: inter-predicted
        assert!(!vp9(&[0x84])); // not the beginning of the frame
        assert!(!vp9(&[]));
    }

    #[test]
    fn h264_idr_and_sps_alone_aggregated_or_fragmented() {
        assert!(h264(&[0x65, 0x88])); // IDR slice
        assert!(h264(&[0x67, 0x42])); // SPS
        assert!(!h264(&[0x41, 0x9a])); // non-IDR slice
        assert!(!h264(&[0x68, 0xce])); // PPS alone
                                       // STAP-A with SPS and PPS (OBS, aiortc and GStreamer send them so).
        assert!(h264(&[
            0x78, 0x00, 0x02, 0x67, 0x42, 0x00, 0x02, 0x68, 0xce
        ]));
        assert!(!h264(&[
            0x78, 0x00, 0x02, 0x06, 0x05, 0x00, 0x02, 0x41, 0x9a
        ]));
        assert!(!h264(&[0x78, 0x00, 0x09, 0x67])); // sizes past the end
                                                   // FU-A: the first fragment of an IDR; a middle one; the first of a non-IDR slice.
        assert!(h264(&[0x7c, 0x85, 0x88]));
        assert!(!h264(&[0x7c, 0x05, 0x88]));
        assert!(!h264(&[0x7c, 0x81, 0x9a]));
        assert!(!h264(&[]));
    }

    #[test]
    fn av1_new_coded_video_sequence() {
        assert!(av1(&[0x18])); // W=1, N=1
        assert!(!av1(&[0x10]));
        assert!(!av1(&[]));
    }
}
