//! The codecs whip-echo forwards, and how it picks one per media section of an offer. Pure: no
//! peer connection here. whip-echo never transcodes, so a stream's viewers get the publisher's
//! codec; every session therefore negotiates exactly one codec per kind, and the loop forwards a
//! packet to a leg only when the two codecs are the same ([`Codec::key`]).

use rtc::peer_connection::configuration::media_engine::{
    MIME_TYPE_AV1, MIME_TYPE_G722, MIME_TYPE_H264, MIME_TYPE_OPUS, MIME_TYPE_PCMA, MIME_TYPE_PCMU,
    MIME_TYPE_VP8, MIME_TYPE_VP9,
};
use rtc::rtp_transceiver::rtp_sender::{RTCPFeedback, RTCRtpCodec, RtpCodecKind};

/// One codec as a session negotiates it: the offer's payload type and format parameters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Codec {
    /// Audio or video.
    pub kind: RtpCodecKind,
    /// rtc's MIME type (`audio/opus`, `video/H264`, ...).
    pub mime: &'static str,
    /// RTP clock rate (G.722: 8000 in SDP, RFC 3551 §4.5.2).
    pub clock_rate: u32,
    /// Channels in the rtpmap (Opus: 2, RFC 7587 §7; others 0 = unstated).
    pub channels: u16,
    /// The `a=fmtp` parameters (for Opus, whip-echo's own, stereo kept).
    pub fmtp: String,
    /// The offer's payload type for it.
    pub payload_type: u8,
}

/// One `a=rtpmap` of an offered section, with its `a=fmtp`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Offered {
    /// Payload type.
    pub payload_type: u8,
    /// Encoding name as written (`opus`, `H264`, ...).
    pub name: String,
    /// Clock rate.
    pub clock_rate: u32,
    /// Channels, when given.
    pub channels: Option<u16>,
    /// Format parameters.
    pub fmtp: String,
}

/// The supported codecs of a kind, by encoding name and clock rate, in whip-echo's preference.
/// Audio: Opus whenever offered; otherwise the first of the others in the offer's order. Video:
/// the offer's order (clients list their preferred codec first).
const AUDIO: [(&str, u32, &str); 4] = [
    ("opus", 48000, MIME_TYPE_OPUS),
    ("pcmu", 8000, MIME_TYPE_PCMU),
    ("pcma", 8000, MIME_TYPE_PCMA),
    ("g722", 8000, MIME_TYPE_G722),
];
const VIDEO: [(&str, u32, &str); 4] = [
    ("vp8", 90000, MIME_TYPE_VP8),
    ("vp9", 90000, MIME_TYPE_VP9),
    ("h264", 90000, MIME_TYPE_H264),
    ("av1", 90000, MIME_TYPE_AV1),
];

impl Codec {
    /// The identity two sessions must share for one's packets to go to the other: the MIME type
    /// and, where a payload format says so, the parameters that change the bitstream: H.264's
    /// profile (`profile_idc` and `profile-iop`, not the level: RFC 6184 §8.2.2) and
    /// packetization mode, VP9's and AV1's profile. Not Opus's `stereo`: it states what a
    /// receiver prefers, and every Opus decoder plays mono and stereo alike (RFC 7587 §3.4, §6.1).
    pub fn key(&self) -> String {
        let param = |name: &str| fmtp_param(&self.fmtp, name);
        match self.mime {
            MIME_TYPE_H264 => {
                let profile = param("profile-level-id")
                    .and_then(|p| p.get(..4))
                    .unwrap_or("42e0")
                    .to_ascii_lowercase();
                let mode = param("packetization-mode").unwrap_or("0");
                format!("{}/{profile}/{mode}", self.mime)
            }
            MIME_TYPE_VP9 | MIME_TYPE_AV1 => {
                format!("{}/{}", self.mime, param("profile-id").unwrap_or("0"))
            }
            mime => mime.to_owned(),
        }
    }

    /// A short name for logs and refusals (`H264`, `opus`).
    pub fn name(&self) -> &'static str {
        self.mime.split_once('/').map_or(self.mime, |(_, n)| n)
    }

    /// The codec as rtc registers it, with the RTCP feedback whip-echo negotiates for its kind:
    /// for video, NACK, PLI and FIR (RFC 4585, RFC 5104), so that viewers can ask for
    /// retransmissions and keyframes; none for audio.
    pub fn rtc_codec(&self) -> RTCRtpCodec {
        let fb = |typ: &str, parameter: &str| RTCPFeedback {
            typ: typ.to_owned(),
            parameter: parameter.to_owned(),
        };
        let rtcp_feedback = if self.kind == RtpCodecKind::Video {
            vec![fb("nack", ""), fb("nack", "pli"), fb("ccm", "fir")]
        } else {
            vec![]
        };
        RTCRtpCodec {
            mime_type: self.mime.to_owned(),
            clock_rate: self.clock_rate,
            channels: self.channels,
            sdp_fmtp_line: self.fmtp.clone(),
            rtcp_feedback,
        }
    }
}

/// What a stream's other sessions fix or suggest for a new session's codecs, by kind (keys).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StreamCodecs {
    /// The live publisher's codecs: a viewer must take them (whip-echo does not transcode).
    pub publisher: Vec<(RtpCodecKind, String)>,
    /// The codecs the stream's viewers were given: a new publisher prefers them when offered.
    pub viewers: Vec<(RtpCodecKind, String)>,
}

impl StreamCodecs {
    /// The publisher's codec key of `kind`.
    pub fn publisher_of(&self, kind: RtpCodecKind) -> Option<&str> {
        key_of(&self.publisher, kind)
    }

    /// The viewers' codec key of `kind`.
    pub fn viewers_of(&self, kind: RtpCodecKind) -> Option<&str> {
        key_of(&self.viewers, kind)
    }
}

fn key_of(keys: &[(RtpCodecKind, String)], kind: RtpCodecKind) -> Option<&str> {
    keys.iter()
        .find(|(k, _)| *k == kind)
        .map(|(_, key)| key.as_str())
}

/// The codec whip-echo negotiates for a section of `kind` offering `offered`: `required` (a key)
/// when given (a viewer of a live stream gets its publisher's codec, or nothing), otherwise
/// `preferred` when offered (a publisher joining waiting viewers takes theirs), otherwise the
/// default preference above. `None`: nothing in common.
pub fn choose(
    kind: RtpCodecKind,
    offered: &[Offered],
    required: Option<&str>,
    preferred: Option<&str>,
) -> Option<Codec> {
    let candidates: Vec<Codec> = offered.iter().filter_map(|o| supported(kind, o)).collect();
    if let Some(key) = required {
        return candidates.into_iter().find(|c| c.key() == key);
    }
    if let Some(c) = preferred.and_then(|key| candidates.iter().find(|c| c.key() == key)) {
        return Some(c.clone());
    }
    if kind == RtpCodecKind::Audio {
        if let Some(opus) = candidates.iter().find(|c| c.mime == MIME_TYPE_OPUS) {
            return Some(opus.clone());
        }
    }
    candidates.into_iter().next()
}

/// `offered` as whip-echo would negotiate it, if it can forward it.
fn supported(kind: RtpCodecKind, offered: &Offered) -> Option<Codec> {
    let table: &[(&str, u32, &str)] = match kind {
        RtpCodecKind::Audio => &AUDIO,
        RtpCodecKind::Video => &VIDEO,
        _ => return None,
    };
    let name = offered.name.to_ascii_lowercase();
    let &(_, clock_rate, mime) = table
        .iter()
        .find(|(n, rate, _)| *n == name && *rate == offered.clock_rate)?;
    let (channels, fmtp) = match mime {
        MIME_TYPE_OPUS => {
            let stereo = fmtp_param(&offered.fmtp, "stereo") == Some("1");
            (2, opus_fmtp(stereo))
        }
        // RFC 6184 §6.2: mode 0 sends only single NAL units; browsers and OBS use mode 1.
        MIME_TYPE_H264 if fmtp_param(&offered.fmtp, "packetization-mode") != Some("1") => {
            return None;
        }
        _ => (offered.channels.unwrap_or(0), offered.fmtp.clone()),
    };
    Some(Codec {
        kind,
        mime,
        clock_rate,
        channels,
        fmtp,
        payload_type: offered.payload_type,
    })
}

/// Every codec whip-echo forwards, with payload types of its own: what a node offers when it
/// pulls a stream from another (cluster mode), so that the holder can answer with its
/// publisher's codec whatever that is. H.264 in the four profiles browsers and encoders send.
pub fn every() -> Vec<Codec> {
    let h264 = |pt: u8, profile: &str| {
        (
            pt,
            "H264",
            format!("level-asymmetry-allowed=1;packetization-mode=1;profile-level-id={profile}"),
        )
    };
    let offered = [
        (RtpCodecKind::Audio, (111, "opus", String::new())),
        (RtpCodecKind::Audio, (0, "PCMU", String::new())),
        (RtpCodecKind::Audio, (8, "PCMA", String::new())),
        (RtpCodecKind::Audio, (9, "G722", String::new())),
        (RtpCodecKind::Video, (96, "VP8", String::new())),
        (RtpCodecKind::Video, (98, "VP9", "profile-id=0".to_owned())),
        (RtpCodecKind::Video, h264(102, "42e01f")),
        (RtpCodecKind::Video, h264(104, "42001f")),
        (RtpCodecKind::Video, h264(106, "4d001f")),
        (RtpCodecKind::Video, h264(108, "64001f")),
        (RtpCodecKind::Video, (45, "AV1", "profile-id=0".to_owned())),
    ];
    offered
        .into_iter()
        .filter_map(|(kind, (payload_type, name, fmtp))| {
            let clock_rate = if kind == RtpCodecKind::Video {
                90000
            } else if name == "opus" {
                48000
            } else {
                8000
            };
            let channels = (name == "opus").then_some(2);
            let offered = Offered {
                payload_type,
                name: name.to_owned(),
                clock_rate,
                channels,
                fmtp,
            };
            supported(kind, &offered)
        })
        .collect()
}

/// Opus's format parameters; `stereo=1` and `sprop-stereo=1` only when the offer asked for
/// stereo (RFC 7587 §6.1), so a stereo stream stays stereo.
pub fn opus_fmtp(stereo: bool) -> String {
    let mut fmtp = "minptime=10;useinbandfec=1".to_owned();
    if stereo {
        fmtp.push_str(";stereo=1;sprop-stereo=1");
    }
    fmtp
}

/// The value of `name` in an fmtp parameter list (`a=1;b=2`), case-insensitive in the name.
pub fn fmtp_param<'a>(fmtp: &'a str, name: &str) -> Option<&'a str> {
    fmtp.split(';').find_map(|kv| {
        let (k, v) = kv.trim().split_once('=')?;
        k.eq_ignore_ascii_case(name).then_some(v.trim())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn offered(pt: u8, name: &str, rate: u32, fmtp: &str) -> Offered {
        Offered {
            payload_type: pt,
            name: name.to_owned(),
            clock_rate: rate,
            channels: None,
            fmtp: fmtp.to_owned(),
        }
    }

    const AUDIO_KIND: RtpCodecKind = RtpCodecKind::Audio;
    const VIDEO_KIND: RtpCodecKind = RtpCodecKind::Video;

    #[test]
    fn opus_whenever_offered_else_the_first_supported() {
        let sip = [
            offered(9, "G722", 8000, ""),
            offered(0, "PCMU", 8000, ""),
            offered(101, "telephone-event", 8000, "0-16"),
        ];
        let c = choose(AUDIO_KIND, &sip, None, None).unwrap();
        assert_eq!(
            (c.mime, c.payload_type, c.clock_rate),
            (MIME_TYPE_G722, 9, 8000)
        );
        let mut with_opus = sip.to_vec();
        with_opus.push(offered(111, "opus", 48000, "minptime=10;stereo=1"));
        let c = choose(AUDIO_KIND, &with_opus, None, None).unwrap();
        assert_eq!(
            (c.mime, c.payload_type, c.channels),
            (MIME_TYPE_OPUS, 111, 2)
        );
        assert!(c.fmtp.contains("stereo=1") && c.fmtp.contains("sprop-stereo=1"));
        assert_eq!(c.key(), "audio/opus");
        assert!(choose(AUDIO_KIND, &[offered(18, "G729", 8000, "")], None, None).is_none());
    }

    #[test]
    fn video_follows_the_offer_order_and_skips_what_cannot_be_forwarded() {
        let chrome = [
            offered(96, "VP8", 90000, ""),
            offered(97, "rtx", 90000, "apt=96"),
            offered(
                102,
                "H264",
                90000,
                "level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42001f",
            ),
        ];
        assert_eq!(
            choose(VIDEO_KIND, &chrome, None, None).unwrap().mime,
            MIME_TYPE_VP8
        );
        // A live publisher's H.264 is required: the viewer gets it, level aside (RFC 6184).
        let c = choose(VIDEO_KIND, &chrome, Some("video/H264/4200/1"), None).unwrap();
        assert_eq!((c.mime, c.payload_type), (MIME_TYPE_H264, 102));
        assert!(choose(VIDEO_KIND, &chrome, Some("video/AV1/0"), None).is_none());
        // Waiting viewers' codec is preferred when offered, ignored when not.
        let pref = choose(VIDEO_KIND, &chrome, None, Some("video/H264/4200/1")).unwrap();
        assert_eq!(pref.mime, MIME_TYPE_H264);
        let other = choose(VIDEO_KIND, &chrome, None, Some("video/AV1/0")).unwrap();
        assert_eq!(other.mime, MIME_TYPE_VP8);
        // Single-NAL-unit H.264 (mode 0) is not forwarded.
        let mode0 = [offered(126, "H264", 90000, "profile-level-id=42e01f")];
        assert!(choose(VIDEO_KIND, &mode0, None, None).is_none());
    }

    #[test]
    fn keys_compare_what_changes_the_bitstream() {
        let h264 = |fmtp: &str| {
            choose(VIDEO_KIND, &[offered(100, "h264", 90000, fmtp)], None, None)
                .unwrap()
                .key()
        };
        assert_eq!(
            h264("packetization-mode=1;profile-level-id=42e01f"),
            h264("profile-level-id=42E034;packetization-mode=1")
        );
        assert_ne!(
            h264("packetization-mode=1;profile-level-id=42e01f"),
            h264("packetization-mode=1;profile-level-id=64001f")
        );
        let vp9 = |fmtp: &str| {
            choose(VIDEO_KIND, &[offered(98, "VP9", 90000, fmtp)], None, None)
                .unwrap()
                .key()
        };
        assert_eq!(vp9(""), vp9("profile-id=0"));
        assert_ne!(vp9("profile-id=0"), vp9("profile-id=2"));
        // Stereo or not, Opus is Opus: a mono viewer plays a stereo publisher.
        let mono = choose(AUDIO_KIND, &[offered(111, "opus", 48000, "")], None, None).unwrap();
        let stereo = offered(111, "opus", 48000, "stereo=1");
        assert_eq!(
            mono.key(),
            choose(AUDIO_KIND, &[stereo], None, None).unwrap().key()
        );
        assert_eq!(mono.name(), "opus");
    }
}
