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
    /// The format of a codec by its key (`Codec::key` in `negotiate/codecs.rs`, which starts with the
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
    vp8_header_at(payload)
        .and_then(|at| payload.get(at))
        .is_some_and(|header| header & 0x01 == 0)
}

/// Where the VP8 payload header starts, in the first packet of a frame (S = 1, PID = 0).
fn vp8_header_at(payload: &[u8]) -> Option<usize> {
    let first = *payload.first()?;
    let start_of_partition_0 = first & 0x10 != 0 && first & 0x07 == 0;
    if !start_of_partition_0 {
        return None;
    }
    let mut at = 1;
    if first & 0x80 != 0 {
        let ext = *payload.get(1)?;
        at = 2;
        if ext & 0x80 != 0 {
            // PictureID: one byte, or two when its M bit is set.
            at += if payload.get(at)? & 0x80 != 0 { 2 } else { 1 };
        }
        if ext & 0x40 != 0 {
            at += 1; // TL0PICIDX
        }
        if ext & 0x30 != 0 {
            at += 1; // TID / Y / KEYIDX
        }
    }
    Some(at)
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

/// A keyframe's picture size, where its first packet carries it: H.264's sequence parameter set
/// (alone or in a STAP-A, RFC 6184 §5.7.1; ITU-T H.264 §7.3.2.1.1), VP8's key frame header
/// (RFC 6386 §9.1) and VP9's scalability structure (RFC 9628 §4.2.1, the top spatial layer's).
/// AV1's sequence header is not read (none).
pub fn resolution(format: Format, payload: &[u8]) -> Option<(u32, u32)> {
    match format {
        Format::H264 => h264_sps(payload).and_then(|sps| {
            let mut rbsp = [0u8; RBSP_BYTES];
            let len = unescape(sps, &mut rbsp);
            sps_size(&rbsp[..len])
        }),
        Format::Vp8 => vp8_size(payload),
        Format::Vp9 => vp9_size(payload),
        Format::Av1 | Format::Any => None,
    }
}

/// The SPS NAL unit in `payload`: the packet itself or one unit of a STAP-A.
fn h264_sps(payload: &[u8]) -> Option<&[u8]> {
    match payload.first()? & 0x1F {
        7 => Some(payload),
        24 => {
            let mut rest = &payload[1..];
            while rest.len() > 2 {
                let size = usize::from(u16::from_be_bytes([rest[0], rest[1]]));
                let nal = rest.get(2..2 + size)?;
                if nal.first().is_some_and(|&h| h & 0x1F == 7) {
                    return Some(nal);
                }
                rest = &rest[2 + size..];
            }
            None
        }
        _ => None,
    }
}

/// The bytes of an SPS read: a few dozen carry the picture size (more only with scaling lists,
/// whose end then reads as truncated: no size).
const RBSP_BYTES: usize = 96;

/// The RBSP of a NAL unit into `out`: its header byte dropped and emulation prevention bytes
/// (the `03` of `00 00 03`, H.264 §7.4.1) removed. Its length.
fn unescape(nal: &[u8], out: &mut [u8; RBSP_BYTES]) -> usize {
    let mut len = 0;
    let mut zeros = 0;
    for &b in nal.iter().skip(1) {
        if len == out.len() {
            break;
        }
        if zeros >= 2 && b == 3 {
            zeros = 0;
            continue;
        }
        zeros = if b == 0 { zeros + 1 } else { 0 };
        out[len] = b;
        len += 1;
    }
    len
}

/// A big-endian bit reader with Exp-Golomb codes (H.264 §9.1).
struct Bits<'a> {
    data: &'a [u8],
    at: usize,
}

impl Bits<'_> {
    fn bit(&mut self) -> Option<u32> {
        let byte = self.data.get(self.at / 8)?;
        let bit = (byte >> (7 - self.at % 8)) & 1;
        self.at += 1;
        Some(u32::from(bit))
    }

    fn bits(&mut self, n: u32) -> Option<u32> {
        (0..n).try_fold(0, |v, _| Some(v << 1 | self.bit()?))
    }

    fn ue(&mut self) -> Option<u32> {
        let mut zeros = 0;
        while self.bit()? == 0 {
            zeros += 1;
            if zeros > 31 {
                return None;
            }
        }
        Some((1u64 << zeros) as u32 - 1 + self.bits(zeros)?)
    }

    fn se(&mut self) -> Option<i64> {
        let k = self.ue()?;
        let magnitude = i64::from(k.div_ceil(2));
        Some(if k % 2 == 1 { magnitude } else { -magnitude })
    }
}

/// Width and height from an SPS's RBSP (H.264 §7.3.2.1.1, cropping per §7.4.2.1.1).
fn sps_size(rbsp: &[u8]) -> Option<(u32, u32)> {
    let mut b = Bits { data: rbsp, at: 0 };
    let profile = b.bits(8)?;
    b.bits(16)?; // constraint flags, level
    b.ue()?; // seq_parameter_set_id
    let chroma_format = if matches!(
        profile,
        100 | 110 | 122 | 244 | 44 | 83 | 86 | 118 | 128 | 138 | 139 | 134 | 135
    ) {
        high_profile_fields(&mut b)?
    } else {
        1
    };
    b.ue()?; // log2_max_frame_num_minus4
    pic_order_fields(&mut b)?;
    b.ue()?; // max_num_ref_frames
    b.bit()?; // gaps_in_frame_num_value_allowed_flag
    let width_mbs = b.ue()?.checked_add(1)?;
    let height_units = b.ue()?.checked_add(1)?;
    let frame_mbs_only = b.bit()?;
    if frame_mbs_only == 0 {
        b.bit()?; // mb_adaptive_frame_field_flag
    }
    b.bit()?; // direct_8x8_inference_flag
    let (mut crop_x, mut crop_y) = (0, 0);
    if b.bit()? == 1 {
        let (left, right, top, bottom) = (b.ue()?, b.ue()?, b.ue()?, b.ue()?);
        let (sub_w, sub_h) = match chroma_format {
            1 => (2, 2),
            2 => (2, 1),
            _ => (1, 1),
        };
        crop_x = left.checked_add(right)?.checked_mul(sub_w)?;
        crop_y = top
            .checked_add(bottom)?
            .checked_mul(sub_h * (2 - frame_mbs_only))?;
    }
    let width = width_mbs.checked_mul(16)?.checked_sub(crop_x)?;
    let height = height_units
        .checked_mul(16 * (2 - frame_mbs_only))?
        .checked_sub(crop_y)?;
    (width > 0 && height > 0).then_some((width, height))
}

/// Reads past the fields high profiles add (chroma format, bit depths, scaling lists); the
/// chroma format.
fn high_profile_fields(b: &mut Bits) -> Option<u32> {
    let chroma_format = b.ue()?;
    if chroma_format == 3 {
        b.bit()?; // separate_colour_plane_flag
    }
    b.ue()?; // bit_depth_luma_minus8
    b.ue()?; // bit_depth_chroma_minus8
    b.bit()?; // qpprime_y_zero_transform_bypass_flag
    if b.bit()? == 1 {
        let lists = if chroma_format == 3 { 12 } else { 8 };
        for i in 0..lists {
            if b.bit()? == 1 {
                skip_scaling_list(b, if i < 6 { 16 } else { 64 })?;
            }
        }
    }
    Some(chroma_format)
}

/// Reads past the picture order count fields (`pic_order_cnt_type` and what it brings).
fn pic_order_fields(b: &mut Bits) -> Option<()> {
    match b.ue()? {
        0 => {
            b.ue()?; // log2_max_pic_order_cnt_lsb_minus4
        }
        1 => {
            b.bit()?;
            b.se()?;
            b.se()?;
            for _ in 0..b.ue()?.min(255) {
                b.se()?;
            }
        }
        _ => {}
    }
    Some(())
}

/// Skips a scaling list of `size` entries (H.264 §7.3.2.1.1.1).
fn skip_scaling_list(b: &mut Bits, size: usize) -> Option<()> {
    let (mut last, mut next) = (8i64, 8i64);
    for _ in 0..size {
        if next != 0 {
            // A hostile delta is any 32-bit value: no overflow, whatever it is.
            next = (last + b.se()?).rem_euclid(256);
        }
        if next != 0 {
            last = next;
        }
    }
    Some(())
}

/// The width and height (14 bits each) after a VP8 key frame's start code `9d 01 2a`, behind
/// the payload descriptor and the 3-byte frame tag.
fn vp8_size(payload: &[u8]) -> Option<(u32, u32)> {
    let header = vp8_header_at(payload)?;
    if payload.get(header)? & 0x01 != 0 {
        return None; // an inter frame
    }
    // The 3-byte frame tag, then the start code (RFC 6386 §9.1).
    if payload.get(header + 3..header + 6)? != [0x9d, 0x01, 0x2a] {
        return None;
    }
    let at = header + 6;
    let size = payload.get(at..at + 4)?;
    let width = u32::from(u16::from_le_bytes([size[0], size[1]]) & 0x3FFF);
    let height = u32::from(u16::from_le_bytes([size[2], size[3]]) & 0x3FFF);
    (width > 0 && height > 0).then_some((width, height))
}

/// The top spatial layer's size in a VP9 payload descriptor's scalability structure (V = 1,
/// then Y = 1), which encoders send with each key frame.
fn vp9_size(payload: &[u8]) -> Option<(u32, u32)> {
    let first = *payload.first()?;
    if first & 0x02 == 0 {
        return None; // no scalability structure
    }
    let mut at = 1;
    if first & 0x80 != 0 {
        at += if payload.get(at)? & 0x80 != 0 { 2 } else { 1 }; // PictureID
    }
    if first & 0x20 != 0 {
        at += if first & 0x10 == 0 { 2 } else { 1 }; // layer indices, TL0PICIDX when not flexible
    }
    if first & 0x50 == 0x50 {
        // Flexible mode with inter-picture prediction: P_DIFF bytes, the last with N = 0.
        while payload.get(at)? & 0x01 != 0 {
            at += 1;
        }
        at += 1;
    }
    let ss = *payload.get(at)?;
    if ss & 0x10 == 0 {
        return None; // no resolutions (Y = 0)
    }
    let layers = usize::from(ss >> 5) + 1;
    let top = payload.get(at + 1 + (layers - 1) * 4..at + 1 + layers * 4)?;
    let width = u32::from(u16::from_be_bytes([top[0], top[1]]));
    let height = u32::from(u16::from_be_bytes([top[2], top[3]]));
    (width > 0 && height > 0).then_some((width, height))
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

    #[test]
    fn picture_sizes_from_keyframes() {
        let hex = |s: &str| -> Vec<u8> {
            (0..s.len())
                .step_by(2)
                .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
                .collect()
        };
        // SPSs of GStreamer's openh264enc (constrained baseline) at four sizes, and x264's
        // 1920x1080 High profile one (1088 lines cropped to 1080, an emulation prevention byte).
        for (sps, size) in [
            ("6742c01f8c8d402802dd00f08846a000", (1280, 720)),
            ("6742c01f8c8d406c1ef3f00f08846a00", (852, 480)),
            ("6742c0158c8d40d8fb2700f08846a000", (426, 240)),
            ("6742c01e8c8d405017fcb00f08846a00", (640, 360)),
        ] {
            let sps = hex(sps);
            assert_eq!(resolution(Format::H264, &sps), Some(size));
            // In a STAP-A with the PPS, as OBS and GStreamer send them.
            let mut stap = vec![0x78, 0, sps.len() as u8];
            stap.extend_from_slice(&sps);
            stap.extend_from_slice(&[0, 2, 0x68, 0xce]);
            assert_eq!(resolution(Format::H264, &stap), Some(size));
        }
        let high = hex("6764002aacd940780227e584000003000400000300f03c60c658");
        assert_eq!(resolution(Format::H264, &high), Some((1920, 1080)));
        assert_eq!(
            resolution(Format::H264, &[0x65, 0x88]),
            None,
            "an IDR slice"
        );
        assert_eq!(resolution(Format::H264, &[0x67, 0x42]), None, "truncated");
        // High profile with a scaling matrix whose first delta_scale is 2^31 - 1: it overflowed
        // an i32 (a panic in debug builds); now it reads on, to no size.
        let mut bits = String::from("1"); // seq_parameter_set_id 0
        bits += "010"; // chroma_format_idc 1
        bits += "11"; // bit depths
        bits += "0"; // qpprime_y_zero_transform_bypass_flag
        bits += "1"; // seq_scaling_matrix_present_flag
        bits += "1"; // list 0 present
        bits += &"0".repeat(31); // se(v) of code number 2^32 - 3: 2^31 - 1
        bits += "1";
        bits += &"1".repeat(30);
        bits += "0";
        while bits.len() % 8 != 0 {
            bits.push('0');
        }
        let mut hostile = vec![0x67, 100, 0, 40];
        hostile.extend(
            (0..bits.len() / 8).map(|i| u8::from_str_radix(&bits[i * 8..i * 8 + 8], 2).unwrap()),
        );
        assert_eq!(resolution(Format::H264, &hostile), None);
        // GStreamer's rtpvp8pay and rtpvp9pay, 320x180 key frames.
        let vp8 = [
            0x10, 0x30, 0x51, 0x00, 0x9d, 0x01, 0x2a, 0x40, 0x01, 0xb4, 0x00,
        ];
        assert_eq!(resolution(Format::Vp8, &vp8), Some((320, 180)));
        assert_eq!(resolution(Format::Vp8, &vp8[..8]), None);
        let vp9 = [0x0a, 0x18, 0x01, 0x40, 0x00, 0xb4, 0x01, 0x04];
        assert_eq!(resolution(Format::Vp9, &vp9), Some((320, 180)));
        assert_eq!(resolution(Format::Vp9, &[0x08, 0x18]), None, "no V bit");
        assert_eq!(resolution(Format::Av1, &[0x18]), None);
    }
}
