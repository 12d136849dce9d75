//! Pure checks on an SDP offer before any peer connection is built: is it SDP, does it carry audio
//! whip-echo can serve (Opus), and does its direction fit the endpoint.

use std::io::Cursor;

use rtc::sdp::description::media::MediaDescription;
use rtc::sdp::description::session::SessionDescription;

use super::MediaError;
use crate::session::Role;

/// What the media plane needs to know about an accepted offer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OfferInfo {
    /// The offer asked for stereo Opus (`stereo=1` in its fmtp); the answer keeps it.
    pub stereo: bool,
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

/// Checks an offer for `role`. Errors are client mistakes with a short reason.
pub fn inspect(sdp: &str, role: Role) -> Result<OfferInfo, MediaError> {
    let bad = |why: &str| MediaError::BadOffer(why.to_owned());
    if !sdp.starts_with("v=") {
        return Err(bad("does not start with v="));
    }
    let parsed = SessionDescription::unmarshal(&mut Cursor::new(sdp.as_bytes()))
        .map_err(MediaError::bad_offer)?;
    if parsed.media_descriptions.is_empty() {
        return Err(bad("no m= sections"));
    }
    let audio = parsed
        .media_descriptions
        .iter()
        .filter(|m| m.media_name.media == "audio" && m.media_name.port.value != 0)
        .find_map(|m| opus_payload_type(m).map(|pt| (m, pt)));
    let Some((media, pt)) = audio else {
        return Err(bad(
            "no Opus audio section (whip-echo serves Opus audio only)",
        ));
    };
    let direction = direction(media);
    // RFC 9725 §4.2: a WHIP client sends media; WHEP (draft §4.2) clients receive it.
    let fits = match role {
        Role::Publisher => matches!(direction, Direction::SendOnly | Direction::SendRecv),
        Role::Viewer => matches!(direction, Direction::RecvOnly | Direction::SendRecv),
        Role::Echo => direction == Direction::SendRecv,
    };
    if !fits {
        let needs = match role {
            Role::Publisher => "a WHIP endpoint receives the client's audio: offer sendonly",
            Role::Viewer => "a WHEP endpoint sends audio to the client: offer recvonly",
            Role::Echo => "the echo endpoint sends the client's audio back: offer sendrecv",
        };
        return Err(MediaError::BadOffer(format!(
            "the offer's audio is {direction}, but {needs}"
        )));
    }
    Ok(OfferInfo {
        stereo: fmtp_param(media, &pt, "stereo") == Some("1"),
    })
}

/// The payload type of the first `opus/48000` rtpmap of a media section.
fn opus_payload_type(media: &MediaDescription) -> Option<String> {
    attributes(media, "rtpmap").find_map(|value| {
        let (pt, codec) = value.split_once(' ')?;
        let codec = codec.to_ascii_lowercase();
        (codec == "opus/48000" || codec.starts_with("opus/48000/")).then(|| pt.to_owned())
    })
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

/// The value of `param` in the fmtp line of payload type `pt`.
fn fmtp_param<'a>(media: &'a MediaDescription, pt: &str, param: &str) -> Option<&'a str> {
    attributes(media, "fmtp").find_map(|value| {
        let (fmt, params) = value.split_once(' ')?;
        if fmt != pt {
            return None;
        }
        params.split(';').find_map(|kv| {
            let (k, v) = kv.trim().split_once('=')?;
            k.eq_ignore_ascii_case(param).then_some(v.trim())
        })
    })
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
    fn opus_found_even_when_not_first() {
        let info = inspect(&offer("sendonly", OPUS_AFTER_PCMA, ""), Role::Publisher).unwrap();
        assert!(!info.stereo);
    }

    #[test]
    fn stereo_is_detected() {
        let sdp = offer(
            "sendrecv",
            OPUS_AFTER_PCMA,
            "a=fmtp:111 minptime=10;stereo=1\r\n",
        );
        assert!(inspect(&sdp, Role::Echo).unwrap().stereo);
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
    fn rejects_garbage_and_no_audio() {
        assert!(inspect("hello", Role::Publisher).is_err());
        assert!(inspect("v=0\r\n", Role::Publisher).is_err());
        let no_opus = offer("sendonly", "a=rtpmap:8 PCMA/8000\r\n", "");
        assert!(inspect(&no_opus, Role::Publisher).is_err());
        let video = "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n\
                     m=video 9 UDP/TLS/RTP/SAVPF 96\r\na=rtpmap:96 VP8/90000\r\n";
        assert!(inspect(video, Role::Publisher).is_err());
    }
}
