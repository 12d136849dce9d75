//! Pure checks on an SDP offer before any peer connection is built: is it SDP, does it carry audio
//! or video whip-echo can forward, and do its directions fit the endpoint. Which codec each section
//! gets is decided at negotiation (`codecs::choose`), where the stream's other sessions are known.

use std::io::Cursor;

use rtc::rtp_transceiver::rtp_sender::RtpCodecKind;
use rtc::sdp::description::media::MediaDescription;
use rtc::sdp::description::session::SessionDescription;

use super::codecs::{self, Offered};
use crate::media::MediaError;
use crate::session::Role;

/// What the media plane needs to know about an accepted offer: its first active audio and video
/// sections (one track of each kind per session).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct OfferInfo {
    /// The codecs of the first active audio section, in the offer's order.
    pub audio: Option<Vec<Offered>>,
    /// The codecs of the first active video section, in the offer's order.
    pub video: Option<Vec<Offered>>,
    /// The offer's DTLS role is `a=setup:passive` (FFmpeg's WHIP muxer offers it): the answer is
    /// `active` and whip-echo starts the handshake (RFC 8842 §5.3). The first media section's
    /// role, else the session's (rtc acts on the first media section's alone; with only a
    /// session-level role it follows the answering role set from this, so the two agree).
    pub passive: bool,
}

impl OfferInfo {
    /// The offered codecs of `kind`'s section, if the offer has one.
    pub fn section(&self, kind: RtpCodecKind) -> Option<&[Offered]> {
        match kind {
            RtpCodecKind::Audio => self.audio.as_deref(),
            RtpCodecKind::Video => self.video.as_deref(),
            _ => None,
        }
    }
}

/// Direction of an offered audio section (RFC 8866 §6.7, default `sendrecv`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Direction {
    SendRecv,
    SendOnly,
    RecvOnly,
    Inactive,
}

impl std::fmt::Display for Direction {
    /// As SDP spells it.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Direction::SendRecv => "sendrecv",
            Direction::SendOnly => "sendonly",
            Direction::RecvOnly => "recvonly",
            Direction::Inactive => "inactive",
        })
    }
}

/// The most m= sections an offer may have. A WHIP or WHEP session uses one per kind; browsers
/// with a few extra transceivers stay far below; 1,000 would make rtc build 1,000 transceivers.
const MAX_SECTIONS: usize = 16;

/// The longest SDP line taken (candidates, fingerprints and fmtp lines are a few hundred bytes).
const MAX_LINE: usize = 4096;

/// An offer that passed [`inspect`] for its role: checked once, before anything else is done
/// with it (in cluster mode, before it may take a stream's lease), and negotiated as it is.
#[derive(Debug, Clone)]
pub struct CheckedOffer {
    pub(in crate::media) sdp: String,
    pub(in crate::media) role: Role,
    pub(in crate::media) info: OfferInfo,
}

impl CheckedOffer {
    /// Checks `sdp` for `role` ([`inspect`]).
    pub fn check(sdp: String, role: Role) -> Result<CheckedOffer, MediaError> {
        let info = inspect(&sdp, role)?;
        Ok(CheckedOffer { sdp, role, info })
    }
}

/// Remote candidates a session takes per ICE generation, from its offer and its trickles
/// together. A client has a handful (one per interface and transport, a server-reflexive and a
/// relay or two; libnice keeps 25). RFC 8445 §6.1.2.5 requires a limit on the checks an agent
/// makes, and §19.5.1 describes the attack without one: every candidate is an address the server
/// sends connectivity checks to, up to 8 times each, so an offer of 2,000 made it send 16,000
/// Binding requests to addresses of the client's choosing. The patched rtc-ice learns
/// peer-reflexive candidates only while a session has fewer than 32 in all: this leaves 8 of
/// them for the addresses a client's checks come from.
pub const MAX_REMOTE_CANDIDATES: usize = 24;

/// Whether the `candidate:` value `candidate` (RFC 8839 §5.1: foundation, component, transport,
/// priority, address, port, ...) is one no check should go to: not the RTP component
/// (whip-echo multiplexes RTCP, RFC 8858), an unspecified, multicast or broadcast address, or
/// one of the server's own candidates (`own`), or a host name: whip-echo resolves no mDNS
/// `.local` name (a Firefox or Chromium page without a camera or microphone permission offers
/// only those); the client's checks then reach the server as peer-reflexive candidates.
pub fn unusable_candidate(candidate: &str, own: &[std::net::SocketAddr]) -> bool {
    let fields: Vec<&str> = candidate.split_whitespace().collect();
    if fields.get(1) != Some(&"1") {
        return true;
    }
    let (Some(address), Some(port)) = (fields.get(4), fields.get(5)) else {
        return true;
    };
    let Ok(ip) = address.parse::<std::net::IpAddr>() else {
        return true;
    };
    let port: u16 = port.parse().unwrap_or(0);
    let broadcast = matches!(ip, std::net::IpAddr::V4(v4) if v4.is_broadcast());
    ip.is_unspecified()
        || ip.is_multicast()
        || broadcast
        || own.contains(&std::net::SocketAddr::new(ip.to_canonical(), port))
}

/// `sdp` with its `a=candidate` lines cut down to the usable ones ([`unusable_candidate`]), at
/// most `max`; how many it kept, and how many it left out.
pub fn limit_candidates(
    sdp: &str,
    own: &[std::net::SocketAddr],
    max: usize,
) -> (String, usize, usize) {
    let (mut kept, mut ignored) = (0, 0);
    let mut out = String::with_capacity(sdp.len());
    for line in sdp.lines().map(str::trim_end) {
        if let Some(candidate) = line.strip_prefix("a=") {
            if candidate.starts_with("candidate:") {
                if kept >= max || unusable_candidate(candidate, own) {
                    ignored += 1;
                    continue;
                }
                kept += 1;
            }
        }
        out.push_str(line);
        out.push_str("\r\n");
    }
    (out, kept, ignored)
}

/// Checks an offer for `role`. Errors are client mistakes with a short reason.
pub fn inspect(sdp: &str, role: Role) -> Result<OfferInfo, MediaError> {
    let bad = |why: &str| MediaError::BadOffer(why.to_owned());
    let parsed = parse(sdp)?;
    super::transport_attrs::check(&parsed).map_err(MediaError::BadOffer)?;
    let mut info = OfferInfo {
        passive: setup(&parsed).as_deref() == Some("passive"),
        ..OfferInfo::default()
    };
    for media in &parsed.media_descriptions {
        let kind = match media.media_name.media.as_str() {
            "audio" => RtpCodecKind::Audio,
            "video" => RtpCodecKind::Video,
            _ => continue,
        };
        let direction = direction(media);
        // Port 0 rejects a section, except with `a=bundle-only` (RFC 8843 §6: it then lives on
        // the bundle's transport; GStreamer's webrtcbin offers video that way).
        let bundle_only = media.attributes.iter().any(|a| a.key == "bundle-only");
        let rejected = media.media_name.port.value == 0 && !bundle_only;
        if rejected || direction == Direction::Inactive {
            continue;
        }
        let slot = match kind {
            RtpCodecKind::Audio => &mut info.audio,
            _ => &mut info.video,
        };
        let offered = offered_codecs(media);
        if slot.is_some() || codecs::choose(kind, &offered, None, None).is_none() {
            continue;
        }
        check_direction(kind, direction, role)?;
        *slot = Some(offered);
    }
    if info.audio.is_none() && info.video.is_none() {
        return Err(bad(
            "no audio or video whip-echo can forward (it takes Opus, PCMU, PCMA, G722, VP8, \
             VP9, H264 with packetization-mode=1 and AV1)",
        ));
    }
    Ok(info)
}

/// The offer parsed, within the line and section limits.
fn parse(sdp: &str) -> Result<SessionDescription, MediaError> {
    let bad = |why: &str| MediaError::BadOffer(why.to_owned());
    if !sdp.starts_with("v=") {
        return Err(bad("does not start with v="));
    }
    if sdp.lines().any(|l| l.len() > MAX_LINE) {
        return Err(MediaError::BadOffer(format!(
            "a line longer than {MAX_LINE} bytes"
        )));
    }
    let parsed = SessionDescription::unmarshal(&mut Cursor::new(sdp.as_bytes()))
        .map_err(MediaError::bad_offer)?;
    if parsed.media_descriptions.is_empty() {
        return Err(bad("no m= sections"));
    }
    if parsed.media_descriptions.len() > MAX_SECTIONS {
        return Err(MediaError::BadOffer(format!(
            "more than {MAX_SECTIONS} m= sections"
        )));
    }
    Ok(parsed)
}

/// The offer's `a=setup` (its first media section's, else the session's).
fn setup(parsed: &SessionDescription) -> Option<String> {
    let setup_of = |attributes: &[rtc::sdp::description::common::Attribute]| {
        attributes
            .iter()
            .find(|a| a.key == "setup")
            .and_then(|a| a.value.as_deref().map(str::trim).map(str::to_owned))
    };
    parsed
        .media_descriptions
        .iter()
        .find_map(|m| setup_of(&m.attributes))
        .or_else(|| setup_of(&parsed.attributes))
}

/// RFC 9725 §4.2: a WHIP client sends media; WHEP (draft §4.2) clients receive it.
fn check_direction(kind: RtpCodecKind, direction: Direction, role: Role) -> Result<(), MediaError> {
    let fits = match role {
        Role::Publisher => matches!(direction, Direction::SendOnly | Direction::SendRecv),
        Role::Viewer => matches!(direction, Direction::RecvOnly | Direction::SendRecv),
        Role::Echo => direction == Direction::SendRecv,
    };
    if fits {
        return Ok(());
    }
    let kind = if kind == RtpCodecKind::Audio {
        "audio"
    } else {
        "video"
    };
    let needs = match role {
        Role::Publisher => format!("a WHIP endpoint receives the client's {kind}: offer sendonly"),
        Role::Viewer => format!("a WHEP endpoint sends {kind} to the client: offer recvonly"),
        Role::Echo => format!("the echo endpoint sends the client's {kind} back: offer sendrecv"),
    };
    Err(MediaError::BadOffer(format!(
        "the offer's {kind} is {direction}, but {needs}"
    )))
}

/// The `a=rtpmap`s of a section with their `a=fmtp`s, in the order of the m-line's formats.
fn offered_codecs(media: &MediaDescription) -> Vec<Offered> {
    let rtpmaps: Vec<Offered> = attributes(media, "rtpmap")
        .filter_map(|value| {
            let (pt, codec) = value.split_once(' ')?;
            let payload_type = pt.parse().ok()?;
            let mut parts = codec.split('/');
            let name = parts.next()?.to_owned();
            let clock_rate = parts.next()?.parse().ok()?;
            let channels = parts.next().and_then(|c| c.parse().ok());
            let fmtp = attributes(media, "fmtp")
                .find_map(|f| f.split_once(' ').filter(|(p, _)| *p == pt).map(|(_, v)| v))
                .unwrap_or_default()
                .to_owned();
            Some(Offered {
                payload_type,
                name,
                clock_rate,
                channels,
                fmtp,
            })
        })
        .collect();
    let order = |o: &Offered| {
        media
            .media_name
            .formats
            .iter()
            .position(|f| f.parse::<u8>().ok() == Some(o.payload_type))
            .unwrap_or(usize::MAX)
    };
    let mut sorted = rtpmaps;
    sorted.sort_by_key(order);
    sorted
}

fn direction(media: &MediaDescription) -> Direction {
    let has = |k: &str| media.attributes.iter().any(|a| a.key == k);
    if has("sendonly") {
        Direction::SendOnly
    } else if has("recvonly") {
        Direction::RecvOnly
    } else if has("inactive") {
        Direction::Inactive
    } else {
        Direction::SendRecv
    }
}

fn attributes<'a>(media: &'a MediaDescription, key: &'a str) -> impl Iterator<Item = &'a str> {
    media
        .attributes
        .iter()
        .filter(move |a| a.key == key)
        .filter_map(|a| a.value.as_deref())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn offer(direction: &str, rtpmaps: &str, fmtp: &str) -> String {
        format!(
            "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n\
             m=audio 9 UDP/TLS/RTP/SAVPF 8 111\r\nc=IN IP4 0.0.0.0\r\n\
             a=mid:0\r\na={direction}\r\n{rtpmaps}{fmtp}"
        )
    }

    const OPUS_AFTER_PCMA: &str = "a=rtpmap:8 PCMA/8000\r\na=rtpmap:111 opus/48000/2\r\n";

    #[test]
    fn offers_keep_a_few_usable_candidates() {
        let own: Vec<std::net::SocketAddr> = vec!["192.0.2.1:8189".parse().unwrap()];
        let line = |address: &str, port: u16, component: u8| {
            format!("a=candidate:1 {component} udp 2122260223 {address} {port} typ host\r\n")
        };
        let mut sdp = String::from("v=0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=mid:0\r\n");
        for refused in [
            line("0.0.0.0", 5000, 1),
            line("::", 5000, 1),
            line("224.0.0.251", 5353, 1),
            line("ff02::fb", 5353, 1),
            line("255.255.255.255", 9, 1),
            line("192.0.2.1", 8189, 1),
            line("::ffff:192.0.2.1", 8189, 1),
            line("198.51.100.1", 5001, 2),
        ] {
            sdp.push_str(&refused);
        }
        sdp.push_str(&line("192.0.2.1", 9999, 1));
        sdp.push_str(&line("2b6e1f0c-5d8a-4a5e-9c1f-6f1a2b3c4d5e.local", 5000, 1));
        for port in 0..100 {
            sdp.push_str(&line("198.51.100.1", 6000 + port, 1));
        }
        sdp.push_str("a=end-of-candidates\r\n");
        let (kept, n, ignored) = limit_candidates(&sdp, &own, MAX_REMOTE_CANDIDATES);
        assert_eq!(n, MAX_REMOTE_CANDIDATES);
        assert_eq!(ignored, 9 + 101 - MAX_REMOTE_CANDIDATES);
        let candidates: Vec<&str> = kept
            .lines()
            .filter(|l| l.starts_with("a=candidate"))
            .collect();
        assert_eq!(candidates.len(), MAX_REMOTE_CANDIDATES);
        assert!(
            candidates[0].contains("192.0.2.1 9999"),
            "another port of ours is not ours"
        );
        assert!(
            !kept.contains(".local"),
            "an mDNS name is never resolved, so never taken"
        );
        assert!(kept.starts_with("v=0\r\nm=audio") && kept.ends_with("a=end-of-candidates\r\n"));
    }

    fn audio_choice(sdp: &str, role: Role) -> codecs::Codec {
        let info = inspect(sdp, role).unwrap();
        codecs::choose(
            RtpCodecKind::Audio,
            info.audio.as_deref().unwrap(),
            None,
            None,
        )
        .unwrap()
    }

    #[test]
    fn opus_found_even_when_not_first() {
        let c = audio_choice(&offer("sendonly", OPUS_AFTER_PCMA, ""), Role::Publisher);
        assert_eq!(
            (c.name(), c.payload_type, c.key().as_str()),
            ("opus", 111, "audio/opus")
        );
    }

    #[test]
    fn stereo_is_detected() {
        let sdp = offer(
            "sendrecv",
            OPUS_AFTER_PCMA,
            "a=fmtp:111 minptime=10;stereo=1\r\n",
        );
        let c = audio_choice(&sdp, Role::Echo);
        assert!(c.fmtp.contains("stereo=1") && c.fmtp.contains("sprop-stereo=1"));
    }

    #[test]
    fn codecs_keep_the_m_line_order_and_their_fmtp() {
        let sdp = "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n\
                   m=video 9 UDP/TLS/RTP/SAVPF 102 96\r\na=mid:0\r\na=sendonly\r\n\
                   a=rtpmap:96 VP8/90000\r\na=rtpmap:102 H264/90000\r\n\
                   a=fmtp:102 packetization-mode=1;profile-level-id=42e01f\r\n";
        let info = inspect(sdp, Role::Publisher).unwrap();
        assert!(info.audio.is_none());
        let video = info.video.unwrap();
        assert_eq!(video[0].name, "H264");
        assert_eq!(
            video[0].fmtp,
            "packetization-mode=1;profile-level-id=42e01f"
        );
        assert_eq!(video[1].name, "VP8");
    }

    #[test]
    fn direction_must_fit_role() {
        let recvonly = offer("recvonly", OPUS_AFTER_PCMA, "");
        assert!(inspect(&recvonly, Role::Viewer).is_ok());
        assert!(matches!(
            inspect(&recvonly, Role::Publisher),
            Err(MediaError::BadOffer(_))
        ));
        let sendonly = offer("sendonly", OPUS_AFTER_PCMA, "");
        assert!(inspect(&sendonly, Role::Echo).is_err());
        assert!(inspect(&sendonly, Role::Viewer).is_err());
        // The reason is in SDP's words and says what would fit.
        let Err(MediaError::BadOffer(why)) = inspect(&recvonly, Role::Echo) else {
            panic!("refused")
        };
        assert_eq!(
            why,
            "the offer's audio is recvonly, but the echo endpoint sends the client's audio back: \
             offer sendrecv"
        );
    }

    #[test]
    fn rejects_garbage_and_what_cannot_be_forwarded() {
        assert!(inspect("hello", Role::Publisher).is_err());
        assert!(inspect("v=0\r\n", Role::Publisher).is_err());
        // G.711 alone is fine; G.729 alone is not.
        let pcma = offer("sendonly", "a=rtpmap:8 PCMA/8000\r\n", "");
        assert_eq!(audio_choice(&pcma, Role::Publisher).name(), "PCMA");
        let g729 = offer("sendonly", "a=rtpmap:18 G729/8000\r\n", "");
        assert!(inspect(&g729, Role::Publisher).is_err());
        let video = |codec: &str| {
            format!(
                "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n\
                 m=video 9 UDP/TLS/RTP/SAVPF 96\r\na=sendonly\r\na=rtpmap:96 {codec}\r\n"
            )
        };
        assert!(inspect(&video("VP8/90000"), Role::Publisher)
            .unwrap()
            .video
            .is_some());
        assert!(inspect(&video("H263/90000"), Role::Publisher).is_err());
        // Port 0 is a rejected section, unless bundle-only (RFC 8843 §6).
        let port0 = video("VP8/90000").replace("m=video 9 ", "m=video 0 ");
        assert!(inspect(&port0, Role::Publisher).is_err());
        let bundle_only = format!("{port0}a=bundle-only\r\n");
        assert!(inspect(&bundle_only, Role::Publisher)
            .unwrap()
            .video
            .is_some());
        // A video section's direction is checked like audio's.
        let Err(MediaError::BadOffer(why)) = inspect(&video("VP8/90000"), Role::Viewer) else {
            panic!("refused")
        };
        assert!(why.starts_with("the offer's video is sendonly"), "{why}");
    }
}
