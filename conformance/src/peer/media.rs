//! The client peer's media: which codec it offers per kind, its tracks, and writing synthetic RTP
//! (any payload: servers that forward, like whip-echo, pass it through unchanged).

use bytes::Bytes;
use rtc::media_stream::MediaStreamTrack;
use rtc::peer_connection::configuration::media_engine::{
    MediaEngine, MIME_TYPE_AV1, MIME_TYPE_G722, MIME_TYPE_H264, MIME_TYPE_PCMA, MIME_TYPE_PCMU,
    MIME_TYPE_VP8, MIME_TYPE_VP9,
};
use rtc::peer_connection::RTCPeerConnection;
use rtc::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;
use rtc::rtcp::transport_feedbacks::transport_layer_nack::{NackPair, TransportLayerNack};
use rtc::rtp::header::Header;
use rtc::rtp::packet::Packet;
use rtc::rtp_transceiver::rtp_sender::{
    RTCPFeedback, RTCRtpCodec, RTCRtpCodecParameters, RTCRtpCodingParameters,
    RTCRtpEncodingParameters, RTCRtpSender, RtpCodecKind,
};
use rtc::rtp_transceiver::{RTCRtpTransceiverDirection, RTCRtpTransceiverInit};
use std::time::Instant;

use super::Mode;

/// The audio codec the client offers (only that one).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum AudioCodec {
    /// Opus, mono (48 kHz).
    #[default]
    Opus,
    /// Opus with `stereo=1; sprop-stereo=1`.
    OpusStereo,
    /// G.711 µ-law.
    Pcmu,
    /// G.711 A-law.
    Pcma,
    /// G.722.
    G722,
    /// No audio section at all.
    None,
}

/// The video codec the client offers (only that one).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VideoCodec {
    /// VP8.
    Vp8,
    /// VP9 profile 0.
    Vp9,
    /// H.264 constrained baseline, packetization-mode 1 (what browsers and OBS send).
    H264,
    /// AV1 profile 0.
    Av1,
}

impl AudioCodec {
    /// The codec and its payload type, `None` for [`AudioCodec::None`].
    pub fn rtc(self) -> Option<(RTCRtpCodec, u8)> {
        let simple = |mime: &str, pt| {
            let codec = RTCRtpCodec {
                mime_type: mime.to_owned(),
                clock_rate: 8000,
                channels: 0,
                sdp_fmtp_line: String::new(),
                rtcp_feedback: vec![],
            };
            Some((codec, pt))
        };
        match self {
            AudioCodec::Opus => Some((rtc_util::opus_codec(false), 111)),
            AudioCodec::OpusStereo => Some((rtc_util::opus_codec(true), 111)),
            AudioCodec::Pcmu => simple(MIME_TYPE_PCMU, 0),
            AudioCodec::Pcma => simple(MIME_TYPE_PCMA, 8),
            AudioCodec::G722 => simple(MIME_TYPE_G722, 9),
            AudioCodec::None => None,
        }
    }

    /// RTP timestamp ticks per 20 ms frame.
    pub fn frame_ticks(self) -> u32 {
        match self {
            AudioCodec::Opus | AudioCodec::OpusStereo => 960,
            _ => 160,
        }
    }
}

impl VideoCodec {
    /// The payload header the client puts before a video payload, in the codec's RTP payload
    /// format: one packet that is a whole frame, a key frame or not (RFC 7741 §4.2 descriptor
    /// S=1 PID=0 then the VP8 header's P bit; RFC 9628 §4.2 B, E and P bits; RFC 6184 NAL type 5
    /// IDR or 1 non-IDR; AV1 aggregation header W=1 with N for a new coded video sequence). A
    /// server may forward a new source only from a key frame, so the client marks its frames as
    /// an encoder would.
    pub fn payload_header(self, key: bool) -> &'static [u8] {
        match (self, key) {
            (VideoCodec::Vp8, true) => &[0x10, 0x00],
            (VideoCodec::Vp8, false) => &[0x10, 0x01],
            (VideoCodec::Vp9, true) => &[0x0C],
            (VideoCodec::Vp9, false) => &[0x4C],
            (VideoCodec::H264, true) => &[0x65],
            (VideoCodec::H264, false) => &[0x41],
            (VideoCodec::Av1, true) => &[0x18],
            (VideoCodec::Av1, false) => &[0x10],
        }
    }

    /// A received payload without the header [`VideoCodec::payload_header`] put before it, and
    /// whether it was a key frame's; `None` when it does not start with either header.
    pub fn strip_payload_header(self, payload: &Bytes) -> Option<(bool, Bytes)> {
        [true, false].into_iter().find_map(|key| {
            let header = self.payload_header(key);
            payload
                .starts_with(header)
                .then(|| (key, payload.slice(header.len()..)))
        })
    }

    /// The codec, with NACK, PLI and FIR feedback, and its payload type.
    pub fn rtc(self) -> (RTCRtpCodec, u8) {
        let (mime, fmtp, pt) = match self {
            VideoCodec::Vp8 => (MIME_TYPE_VP8, "", 96),
            VideoCodec::Vp9 => (MIME_TYPE_VP9, "profile-id=0", 98),
            VideoCodec::H264 => (
                MIME_TYPE_H264,
                "level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f",
                102,
            ),
            VideoCodec::Av1 => (MIME_TYPE_AV1, "profile-id=0", 45),
        };
        let fb = |typ: &str, parameter: &str| RTCPFeedback {
            typ: typ.to_owned(),
            parameter: parameter.to_owned(),
        };
        let codec = RTCRtpCodec {
            mime_type: mime.to_owned(),
            clock_rate: 90000,
            channels: 0,
            sdp_fmtp_line: fmtp.to_owned(),
            rtcp_feedback: vec![fb("nack", ""), fb("nack", "pli"), fb("ccm", "fir")],
        };
        (codec, pt)
    }
}

/// Registers the client's codecs.
pub fn register(
    media_engine: &mut MediaEngine,
    audio: AudioCodec,
    video: Option<VideoCodec>,
) -> Result<(), String> {
    let audio = audio.rtc().map(|c| (RtpCodecKind::Audio, c));
    let video = video.map(|v| (RtpCodecKind::Video, v.rtc()));
    for (kind, (rtp_codec, payload_type)) in audio.into_iter().chain(video) {
        let params = RTCRtpCodecParameters {
            rtp_codec,
            payload_type,
        };
        media_engine
            .register_codec(params, kind)
            .map_err(|e| e.to_string())?;
    }
    Ok(())
}

/// Adds the client's transceivers for `mode`: audio (unless none), then video (if any; as
/// simulcast layers with the rids `simulcast`, if any).
pub fn add_tracks(
    pc: &mut RTCPeerConnection,
    mode: Mode,
    audio: AudioCodec,
    video: Option<VideoCodec>,
    simulcast: &[&str],
) -> Result<(), rtc::shared::error::Error> {
    let audio = audio.rtc().map(|(c, _)| (RtpCodecKind::Audio, c));
    let video = video.map(|v| (RtpCodecKind::Video, v.rtc().0));
    for (kind, codec) in audio.into_iter().chain(video) {
        let rids = if kind == RtpCodecKind::Video {
            simulcast
        } else {
            &[]
        };
        add_transceiver(pc, mode, kind, codec, rids)?;
    }
    Ok(())
}

fn add_transceiver(
    pc: &mut RTCPeerConnection,
    mode: Mode,
    kind: RtpCodecKind,
    codec: RTCRtpCodec,
    rids: &[&str],
) -> Result<(), rtc::shared::error::Error> {
    let name = if kind == RtpCodecKind::Video {
        "video"
    } else {
        "audio"
    };
    let track = MediaStreamTrack::new(
        "whip-conformance".into(),
        format!("whip-conformance-{name}"),
        format!("conformance {name}"),
        kind,
        if rids.is_empty() {
            vec![RTCRtpEncodingParameters {
                rtp_coding_parameters: RTCRtpCodingParameters {
                    ssrc: Some(rand::random()),
                    ..Default::default()
                },
                codec,
                ..Default::default()
            }]
        } else {
            rids.iter()
                .map(|rid| RTCRtpEncodingParameters {
                    rtp_coding_parameters: RTCRtpCodingParameters {
                        rid: (*rid).into(),
                        ssrc: Some(rand::random()),
                        ..Default::default()
                    },
                    codec: codec.clone(),
                    ..Default::default()
                })
                .collect()
        },
    );
    let init = |direction| RTCRtpTransceiverInit {
        direction,
        streams: vec![],
        send_encodings: vec![],
    };
    match mode {
        Mode::Send => {
            pc.add_transceiver_from_track(track, Some(init(RTCRtpTransceiverDirection::Sendonly)))?;
        }
        Mode::SendRecv => {
            pc.add_track(track)?;
        }
        Mode::Recv => {
            pc.add_transceiver_from_kind(kind, Some(init(RTCRtpTransceiverDirection::Recvonly)))?;
        }
    }
    Ok(())
}

/// Writes one RTP packet with `payload` on the client's sender of `kind`.
pub fn write_packet(
    pc: &mut RTCPeerConnection,
    kind: RtpCodecKind,
    payload: Bytes,
    seq: u16,
    ts: u32,
) {
    let Some(mut sender) = sender_of(pc, kind) else {
        return;
    };
    let params = sender.get_parameters();
    let Some(pt) = params.rtp_parameters.codecs.first().map(|c| c.payload_type) else {
        return;
    };
    let Some(ssrc) = params
        .encodings
        .first()
        .and_then(|e| e.rtp_coding_parameters.ssrc)
    else {
        return;
    };
    let header = Header {
        version: 2,
        payload_type: pt,
        sequence_number: seq,
        timestamp: ts,
        ssrc,
        // A video frame of one packet: the marker ends it (RFC 3550 §5.1).
        marker: kind == RtpCodecKind::Video,
        ..Default::default()
    };
    let _ = sender.write_rtp(Instant::now(), Packet { header, payload });
}

/// The client's sender of `kind`, if it has one.
fn sender_of(pc: &mut RTCPeerConnection, kind: RtpCodecKind) -> Option<RTCRtpSender<'_>> {
    let senders: Vec<_> = pc.get_senders().collect();
    let id = senders
        .into_iter()
        .find(|&id| pc.rtp_sender(id).is_some_and(|s| s.track().kind() == kind))?;
    pc.rtp_sender(id)
}

/// The SSRC of each simulcast layer of the client's video sender, in layer order.
pub fn layer_ssrcs(pc: &mut RTCPeerConnection) -> Vec<u32> {
    let Some(mut sender) = sender_of(pc, RtpCodecKind::Video) else {
        return Vec::new();
    };
    let params = sender.get_parameters();
    params
        .encodings
        .iter()
        .filter_map(|e| e.rtp_coding_parameters.ssrc)
        .collect()
}

/// One RTP packet of a simulcast layer.
pub struct LayerPacket {
    /// The layer's index among the sender's encodings.
    pub layer: usize,
    pub payload: Bytes,
    pub seq: u16,
    pub ts: u32,
}

/// Writes `packet` on its layer of the client's video sender, with the mid and rid header
/// extensions (RFC 8843 §15, RFC 8852 §3.1) that bind it to its layer where the offer signalled
/// no SSRC, unless not `extensions`.
pub fn write_layer_packet(pc: &mut RTCPeerConnection, packet: LayerPacket, extensions: bool) {
    let LayerPacket {
        layer,
        payload,
        seq,
        ts,
    } = packet;
    let transceivers: Vec<_> = pc.get_transceivers().collect();
    for id in transceivers {
        let Some(transceiver) = pc.rtp_transceiver(id) else {
            continue;
        };
        let (Some(mid), Some(sender)) = (transceiver.mid().clone(), transceiver.sender()) else {
            continue;
        };
        let Some(mut sender) = pc.rtp_sender(sender) else {
            continue;
        };
        if sender.track().kind() != RtpCodecKind::Video {
            continue;
        }
        let params = sender.get_parameters();
        let Some(pt) = params.rtp_parameters.codecs.first().map(|c| c.payload_type) else {
            return;
        };
        let Some(encoding) = params.encodings.get(layer) else {
            return;
        };
        let (Some(ssrc), rid) = (
            encoding.rtp_coding_parameters.ssrc,
            encoding.rtp_coding_parameters.rid.clone(),
        ) else {
            return;
        };
        let id_of = |uri: &str| {
            params
                .rtp_parameters
                .header_extensions
                .iter()
                .find(|h| h.uri == uri)
                .map(|h| h.id as u8)
        };
        let (mid_id, rid_id) = (
            id_of(rtc::sdp::extmap::SDES_MID_URI),
            id_of(rtc::sdp::extmap::SDES_RTP_STREAM_ID_URI),
        );
        let mut header = Header {
            version: 2,
            payload_type: pt,
            sequence_number: seq,
            timestamp: ts,
            ssrc,
            marker: true,
            extension: extensions,
            extension_profile: if extensions { 0xBEDE } else { 0 },
            ..Default::default()
        };
        if let (Some(id), true) = (mid_id, extensions) {
            let _ = header.set_extension(id, Bytes::from(mid.into_bytes()));
        }
        if let (Some(id), true) = (rid_id, extensions) {
            let _ = header.set_extension(id, Bytes::from(rid.to_string().into_bytes()));
        }
        let _ = sender.write_rtp(Instant::now(), Packet { header, payload });
        return;
    }
}

/// The kind of the received track `track`.
pub fn kind_of(pc: &mut RTCPeerConnection, track: &str) -> RtpCodecKind {
    let receivers: Vec<_> = pc.get_receivers().collect();
    receivers
        .into_iter()
        .find_map(|id| {
            let receiver = pc.rtp_receiver(id)?;
            let t = receiver.track();
            (t.track_id() == track).then(|| t.kind())
        })
        .unwrap_or(RtpCodecKind::Audio)
}

/// Sends generic NACKs for `media_ssrc` on the client's video receiver, one FCI per id, in one
/// compound RTCP packet (rtc marshals at most 253 FCIs per NACK, so one NACK per 250 ids).
pub fn nack(pc: &mut RTCPeerConnection, media_ssrc: u32, ids: &[u16]) {
    let nacks = ids
        .chunks(250)
        .map(|chunk| {
            let nack = TransportLayerNack {
                sender_ssrc: 0,
                media_ssrc,
                nacks: chunk
                    .iter()
                    .map(|&packet_id| NackPair {
                        packet_id,
                        lost_packets: 0,
                    })
                    .collect(),
            };
            Box::new(nack) as Box<dyn rtc::rtcp::Packet>
        })
        .collect();
    write_video_rtcp(pc, nacks);
}

/// Sends a PLI for `media_ssrc` on the client's video receiver.
pub fn request_keyframe(pc: &mut RTCPeerConnection, media_ssrc: u32) {
    let pli = PictureLossIndication {
        sender_ssrc: 0,
        media_ssrc,
    };
    write_video_rtcp(pc, vec![Box::new(pli)]);
}

/// Writes `packets` (one compound) on the client's video receiver.
fn write_video_rtcp(pc: &mut RTCPeerConnection, packets: Vec<Box<dyn rtc::rtcp::Packet>>) {
    let _ = rtc_util::write_on_video_receiver(pc, packets, Instant::now());
}

/// The packets the NACKs among `packets` name (each FCI's id and its bitmask's), and how many of
/// them are TWCC feedback.
pub fn feedback_in(packets: &[Box<dyn rtc::rtcp::Packet>]) -> (u32, u32) {
    use rtc::rtcp::transport_feedbacks::transport_layer_cc::TransportLayerCc;
    use rtc::rtcp::transport_feedbacks::transport_layer_nack::TransportLayerNack;
    let (mut nacked, mut twcc) = (0, 0);
    for packet in packets {
        let any = packet.as_any();
        if let Some(nack) = any.downcast_ref::<TransportLayerNack>() {
            nacked += (nack.nacks.iter())
                .map(|pair| 1 + pair.lost_packets.count_ones())
                .sum::<u32>();
        }
        if any.downcast_ref::<TransportLayerCc>().is_some() {
            twcc += 1;
        }
    }
    (nacked, twcc)
}
