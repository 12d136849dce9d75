//! Building one server-side peer connection from an offer: an Opus-only media engine, DTLS server
//! role, mDNS off, the shared socket's host candidates, and the answer, all without any network
//! round trip (the POST returns as soon as this does).

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use rtc::interceptor::Registry;
use rtc::media_stream::MediaStreamTrack;
use rtc::peer_connection::configuration::interceptor_registry::configure_rtcp_reports;
use rtc::peer_connection::configuration::media_engine::{MediaEngine, MIME_TYPE_OPUS};
use rtc::peer_connection::configuration::setting_engine::SettingEngineBuilder;
use rtc::peer_connection::configuration::RTCConfigurationBuilder;
use rtc::peer_connection::sdp::RTCSessionDescription;
use rtc::peer_connection::transport::{
    CandidateConfig, CandidateHostConfig, RTCDtlsRole, RTCIceCandidate, RTCIceCandidateInit,
};
use rtc::peer_connection::{RTCPeerConnection, RTCPeerConnectionBuilder};
use rtc::rtp_transceiver::rtp_sender::{
    RTCRtpCodec, RTCRtpCodecParameters, RTCRtpCodingParameters, RTCRtpEncodingParameters,
    RtpCodecKind,
};
use rtc::rtp_transceiver::{RTCRtpSenderId, RTCRtpTransceiverDirection};

use crate::error::ApiError;
use crate::media::offer::OfferInfo;
use crate::session::Role;

/// Payload type whip-echo prefers for Opus; the answer uses the offer's own number.
const OPUS_PT: u8 = 111;

/// Settings shared by every peer connection of one media loop, computed once at start-up.
#[derive(Debug, Clone)]
pub struct PeerSettings {
    /// Host candidates of the shared socket, as `add_local_candidate` takes them.
    pub candidates: Vec<RTCIceCandidateInit>,
    /// Time without connectivity after which ICE reports `failed`.
    pub ice_timeout: Duration,
}

impl PeerSettings {
    /// Settings announcing `addrs` (IP and the shared UDP port) as host candidates.
    pub fn new(addrs: &[SocketAddr], ice_timeout: Duration) -> Result<Self, String> {
        let candidates = addrs
            .iter()
            .map(|addr| host_candidate(*addr))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(PeerSettings {
            candidates,
            ice_timeout,
        })
    }
}

/// A UDP host candidate for `addr` (RFC 8445 §5.1.1.1), as `add_local_candidate` takes it.
pub fn host_candidate(addr: SocketAddr) -> Result<RTCIceCandidateInit, String> {
    let host = CandidateHostConfig {
        base_config: CandidateConfig {
            network: "udp".to_owned(),
            address: addr.ip().to_string(),
            port: addr.port(),
            component: 1,
            ..Default::default()
        },
        ..Default::default()
    }
    .new_candidate_host()
    .map_err(|e| e.to_string())?;
    RTCIceCandidate::from(&host)
        .to_json()
        .map_err(|e| e.to_string())
}

/// A negotiated peer connection, ready to be driven by the media loop.
pub struct Negotiated {
    /// The peer connection, with local and remote descriptions applied.
    pub pc: RTCPeerConnection,
    /// The SDP answer for the 201 body.
    pub answer: String,
    /// The answer's ICE ufrag: the routing key of STUN requests for this session.
    pub ufrag: String,
    /// The sender of a `Viewer`/`Echo` session: its id, SSRC and negotiated payload type.
    pub sender: Option<(RTCRtpSenderId, u32, u8)>,
}

/// Answers `offer` for `role`. Errors from applying the offer are the client's (400); the others
/// are internal.
pub fn negotiate(
    settings: &PeerSettings,
    role: Role,
    info: &OfferInfo,
    offer: String,
    now: Instant,
) -> Result<Negotiated, ApiError> {
    let internal = |e: rtc::shared::error::Error| ApiError::Internal(e.to_string());
    let codec = opus_codec(info.stereo);
    let mut media_engine = MediaEngine::default();
    media_engine
        .register_codec(
            RTCRtpCodecParameters {
                rtp_codec: codec.clone(),
                payload_type: OPUS_PT,
            },
            RtpCodecKind::Audio,
        )
        .map_err(internal)?;
    // Sender and receiver reports only: NACK and TWCC are of little use for Opus audio.
    let registry = configure_rtcp_reports(Registry::new());
    // RFC 7675 consent: `disconnected` after a short silence, `failed` when the configured timeout
    // has passed without any response.
    let disconnected = (settings.ice_timeout / 2).min(Duration::from_secs(5));
    let keepalive = (disconnected / 2).min(Duration::from_secs(2));
    let setting_engine = SettingEngineBuilder::new()
        // DTLS server (`a=setup:passive`): the client starts the handshake as soon as ICE
        // connects, with no timer in between, and GStreamer 1.22 (RSA certificate) can connect.
        .with_answering_dtls_role(RTCDtlsRole::Server)
        // mDNS off: rtc-ice would send every packet from a peer port 5353 down its mDNS path.
        .with_multicast_dns_mode(rtc::ice::mdns::MulticastDnsMode::Disabled)
        .with_ice_timeouts(
            Some(disconnected),
            Some(settings.ice_timeout.saturating_sub(disconnected)),
            Some(keepalive),
        )
        .build();
    let mut pc = RTCPeerConnectionBuilder::new()
        .with_configuration(RTCConfigurationBuilder::new().build())
        .with_media_engine(media_engine)
        .with_setting_engine(setting_engine)
        .with_interceptor_registry(registry)
        .build(now)
        .map_err(internal)?;

    let sender = if role.receives() {
        let ssrc: u32 = rand::random();
        let track = MediaStreamTrack::new(
            "whip-echo".to_owned(),
            format!("whip-echo-audio-{ssrc:08x}"),
            "whip-echo audio".to_owned(),
            RtpCodecKind::Audio,
            vec![RTCRtpEncodingParameters {
                rtp_coding_parameters: RTCRtpCodingParameters {
                    ssrc: Some(ssrc),
                    ..Default::default()
                },
                codec,
                ..Default::default()
            }],
        );
        Some((pc.add_track(track).map_err(internal)?, ssrc))
    } else {
        None
    };

    let offer = RTCSessionDescription::offer(offer).map_err(|e| ApiError::BadSdp(e.to_string()))?;
    pc.set_remote_description(now, offer)
        .map_err(|e| ApiError::BadSdp(e.to_string()))?;
    if role == Role::Viewer {
        send_only(&mut pc);
    }
    for candidate in &settings.candidates {
        pc.add_local_candidate(candidate.clone())
            .map_err(internal)?;
    }
    let answer = pc
        .create_answer(None)
        .map_err(|e| ApiError::BadSdp(e.to_string()))?;
    pc.set_local_description(now, answer).map_err(internal)?;
    let answer = pc
        .local_description()
        .ok_or_else(|| ApiError::Internal("no local description after answer".into()))?
        .sdp;
    let answer = complete_rejected_sections(&finish_answer(&answer));
    let ufrag = sdp_attribute(&answer, "ice-ufrag")
        .ok_or_else(|| ApiError::Internal("answer has no ice-ufrag".into()))?
        .to_owned();

    let sender = match sender {
        Some((id, ssrc)) => {
            let pt = pc
                .rtp_sender(id)
                .and_then(|mut s| {
                    s.get_parameters()
                        .rtp_parameters
                        .codecs
                        .first()
                        .map(|c| c.payload_type)
                })
                .ok_or_else(|| ApiError::BadSdp("no Opus codec negotiated for sending".into()))?;
            Some((id, ssrc, pt))
        }
        None => None,
    };
    Ok(Negotiated {
        pc,
        answer,
        ufrag,
        sender,
    })
}

/// WHEP draft §4.3.5 (media direction): the resource only sends, so a viewer's `sendrecv` offer is answered
/// `sendonly` (the twin of RFC 9725 §4.2's `recvonly` rule for WHIP) and nothing such a viewer
/// sends is read. rtc pairs the offer's section with the send track's `sendrecv` transceiver, whose
/// direction is narrowed here, before the answer is created.
fn send_only(pc: &mut RTCPeerConnection) {
    let ids: Vec<_> = pc.get_transceivers().collect();
    for id in ids {
        if let Some(mut transceiver) = pc.rtp_transceiver(id) {
            if transceiver.sender().is_some() {
                transceiver.set_direction(RTCRtpTransceiverDirection::Sendonly);
            }
        }
    }
}

/// Opus at 48 kHz, two channels in the rtpmap as RFC 7587 §7 requires; `stereo=1` only when the
/// client offered it.
fn opus_codec(stereo: bool) -> RTCRtpCodec {
    let mut fmtp = "minptime=10;useinbandfec=1".to_owned();
    if stereo {
        fmtp.push_str(";stereo=1;sprop-stereo=1");
    }
    RTCRtpCodec {
        mime_type: MIME_TYPE_OPUS.to_owned(),
        clock_rate: 48_000,
        channels: 2,
        sdp_fmtp_line: fmtp,
        rtcp_feedback: vec![],
    }
}

/// Final touches on rtc's answer text:
/// - RFC 9725 §4.4.1 (and the WHEP draft): every bundled m-section carries `a=rtcp-mux-only`
///   (RFC 8858 §3), which rtc does not write;
/// - with RTP/RTCP multiplexing there is no RTCP component, so rtc's component-2 copies of the
///   candidates are dropped.
fn finish_answer(sdp: &str) -> String {
    let mut out = String::with_capacity(sdp.len() + 64);
    for line in sdp.lines() {
        let line = line.trim_end();
        if line.is_empty() || line == "a=rtcp-mux-only" || is_rtcp_candidate(line) {
            continue;
        }
        out.push_str(line);
        out.push_str("\r\n");
        if line == "a=rtcp-mux" {
            out.push_str("a=rtcp-mux-only\r\n");
        }
    }
    out
}

/// Gives every rejected m-section (port 0) the session's ICE credentials, DTLS role and
/// fingerprint. rtc writes only `a=mid` there, and GStreamer's webrtcbin (1.22) refuses the whole
/// answer when any section lacks `a=ice-ufrag`, `a=ice-pwd` or `a=setup` ("media 1 is missing or
/// contains an empty 'ice-ufrag' attribute"), although RFC 8843 §7.3.3 leaves a rejected section
/// out of the bundle: its attributes are harmless to every other parser.
fn complete_rejected_sections(sdp: &str) -> String {
    const COPIED: [&str; 4] = ["ice-ufrag", "ice-pwd", "setup", "fingerprint"];
    let values: Vec<(&str, &str)> = COPIED
        .iter()
        .filter_map(|key| sdp_attribute(sdp, key).map(|v| (*key, v)))
        .collect();
    let mut out = String::with_capacity(sdp.len() + 256);
    let mut sections = sdp.split_inclusive('\n').peekable();
    while let Some(line) = sections.next() {
        out.push_str(line);
        if !is_rejected_m_line(line) {
            continue;
        }
        let mut section = String::new();
        while let Some(next) = sections.next_if(|l| !l.starts_with("m=")) {
            section.push_str(next);
        }
        out.push_str(&section);
        for (key, value) in &values {
            if sdp_attribute(&section, key).is_none() {
                out.push_str(&format!("a={key}:{value}\r\n"));
            }
        }
    }
    out
}

/// `m=<media> 0 ...`: an m-line the answer rejects (RFC 8866 §5.14, RFC 3264 §6).
fn is_rejected_m_line(line: &str) -> bool {
    line.strip_prefix("m=")
        .and_then(|rest| rest.split_whitespace().nth(1))
        == Some("0")
}

/// `a=candidate:<foundation> 2 ...`: a candidate for the RTCP component.
fn is_rtcp_candidate(line: &str) -> bool {
    line.strip_prefix("a=candidate:")
        .and_then(|rest| rest.split_whitespace().nth(1))
        == Some("2")
}

/// The value of the first `a=<key>:<value>` line of an SDP text.
pub fn sdp_attribute<'a>(sdp: &'a str, key: &str) -> Option<&'a str> {
    sdp.lines().find_map(|line| {
        line.trim_end()
            .strip_prefix("a=")?
            .strip_prefix(key)?
            .strip_prefix(':')
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answer_gets_rtcp_mux_only_and_loses_rtcp_candidates() {
        let sdp = "v=0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=rtcp-mux\r\n\
                   a=candidate:1 1 udp 2130706431 127.0.0.1 5000 typ host\r\n\
                   a=candidate:1 2 udp 2130706431 127.0.0.1 5000 typ host\r\n";
        let done = finish_answer(sdp);
        assert!(done.contains("a=rtcp-mux\r\na=rtcp-mux-only\r\n"), "{done}");
        assert!(done.contains(" 1 udp "));
        assert!(!done.contains(" 2 udp "));
        assert_eq!(finish_answer(&done), done, "idempotent");
    }

    #[test]
    fn rejected_sections_get_the_session_credentials() {
        let sdp = "v=0\r\na=fingerprint:sha-256 AB:CD\r\na=group:BUNDLE 0\r\n\
                   m=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=setup:passive\r\na=mid:0\r\n\
                   a=ice-ufrag:uf\r\na=ice-pwd:pw\r\n\
                   m=video 0 UDP/TLS/RTP/SAVPF 0\r\nc=IN IP4 0.0.0.0\r\na=mid:1\r\n\
                   m=application 0 UDP/DTLS/SCTP webrtc-datachannel\r\na=mid:2\r\n";
        let done = complete_rejected_sections(sdp);
        let video = &done[done.find("m=video").unwrap()..done.find("m=application").unwrap()];
        let app = &done[done.find("m=application").unwrap()..];
        for section in [video, app] {
            for line in [
                "a=ice-ufrag:uf\r\n",
                "a=ice-pwd:pw\r\n",
                "a=setup:passive\r\n",
                "a=fingerprint:sha-256 AB:CD\r\n",
            ] {
                assert!(section.contains(line), "{line} in {section}");
            }
        }
        assert!(
            video.starts_with("m=video 0 UDP/TLS/RTP/SAVPF 0\r\nc=IN IP4 0.0.0.0\r\na=mid:1\r\n")
        );
        // The accepted section is untouched, and a second pass changes nothing.
        assert_eq!(
            done[..done.find("m=video").unwrap()],
            sdp[..sdp.find("m=video").unwrap()]
        );
        assert_eq!(complete_rejected_sections(&done), done);
    }

    #[test]
    fn finds_attributes() {
        let sdp = "v=0\r\na=ice-ufrag:abcd\r\na=ice-pwd:xyz\r\n";
        assert_eq!(sdp_attribute(sdp, "ice-ufrag"), Some("abcd"));
        assert_eq!(sdp_attribute(sdp, "ice-pwd"), Some("xyz"));
        assert_eq!(sdp_attribute(sdp, "fingerprint"), None);
    }
}
