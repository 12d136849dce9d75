//! Building one server-side peer connection from an offer, on the request's task (never on the
//! media loop): an Opus-only media engine, the loop's one DTLS certificate, DTLS server role, mDNS
//! off, ICE credentials that name the loop, the shared socket's host candidates, and the answer,
//! all without any network round trip (the POST returns as soon as this does).

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use rtc::crypto::SignatureScheme;
use rtc::interceptor::Registry;
use rtc::media_stream::MediaStreamTrack;
use rtc::peer_connection::certificate::{CertificateParams, RTCCertificate};
use rtc::peer_connection::configuration::interceptor_registry::configure_rtcp_reports;
use rtc::peer_connection::configuration::media_engine::MediaEngine;
use rtc::peer_connection::configuration::setting_engine::SettingEngineBuilder;
use rtc::peer_connection::configuration::RTCConfigurationBuilder;
use rtc::peer_connection::sdp::RTCSessionDescription;
use rtc::peer_connection::transport::{RTCDtlsRole, RTCIceCandidateInit};
use rtc::peer_connection::{RTCPeerConnection, RTCPeerConnectionBuilder};
use rtc::rtp_transceiver::rtp_sender::{
    RTCRtpCodec, RTCRtpCodecParameters, RTCRtpCodingParameters, RTCRtpEncodingParameters,
    RtpCodecKind,
};
use rtc::rtp_transceiver::{RTCRtpSenderId, RTCRtpTransceiverDirection};

use super::MediaError;
use crate::media::offer::OfferInfo;
use crate::session::Role;

/// Payload type whip-echo prefers for Opus; the answer uses the offer's own number.
const OPUS_PT: u8 = 111;

/// Settings shared by every peer connection of one media loop, computed once at start-up.
#[derive(Clone)]
pub struct PeerSettings {
    /// Host candidates of the shared socket, as `add_local_candidate` takes them.
    pub candidates: Vec<RTCIceCandidateInit>,
    /// Time without connectivity after which ICE reports `failed`.
    pub ice_timeout: Duration,
    /// The loop's one DTLS certificate. Generating an ECDSA key and a self-signed certificate
    /// per session cost more than the rest of the negotiation; browsers also reuse one
    /// certificate across their connections. The fingerprint is public (it is in every answer),
    /// the key never leaves the process.
    pub certificate: RTCCertificate,
    /// Which media loop the sessions built with these settings belong to.
    pub loop_index: usize,
}

impl std::fmt::Debug for PeerSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PeerSettings")
            .field("candidates", &self.candidates)
            .field("ice_timeout", &self.ice_timeout)
            .field("loop_index", &self.loop_index)
            .finish_non_exhaustive()
    }
}

impl PeerSettings {
    /// Settings announcing `addrs` (IP and the shared UDP port) as host candidates, for the
    /// sessions of loop `loop_index`.
    pub fn new(
        addrs: &[SocketAddr],
        ice_timeout: Duration,
        loop_index: usize,
    ) -> Result<Self, MediaError> {
        let candidates = addrs
            .iter()
            .map(|addr| rtc_util::host_candidate(*addr))
            .collect::<Result<Vec<_>, _>>()
            .map_err(MediaError::Internal)?;
        let provider = rtc::crypto::default_provider().map_err(MediaError::internal)?;
        let params =
            CertificateParams::new(vec!["whip-echo".to_owned()]).map_err(MediaError::internal)?;
        let certificate =
            RTCCertificate::generate(provider.crypto(), SignatureScheme::EcdsaP256Sha256, params)
                .map_err(MediaError::internal)?;
        Ok(PeerSettings {
            candidates,
            ice_timeout,
            certificate,
            loop_index,
        })
    }
}

/// A session's local ICE credentials (RFC 8445 §5.3: at least 24 random bits in the ufrag and
/// 128 in the password), chosen by whip-echo rather than rtc so that the ufrag names the media
/// loop: its first two hex digits are the loop index. A transport shared by every loop (ICE-TCP
/// on one port) finds the owner of a STUN request from its USERNAME alone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IceCredentials {
    /// 16 hex digits: the loop index (2), then 56 random bits.
    pub ufrag: String,
    /// 32 hex digits: 128 random bits.
    pub pwd: String,
}

impl IceCredentials {
    /// Fresh credentials for a session of loop `index` (at most 255).
    pub fn random_for(index: usize) -> Self {
        let random: u64 = rand::random();
        IceCredentials {
            ufrag: format!("{:02x}{:014x}", index.min(0xff), random >> 8),
            pwd: format!("{:032x}", rand::random::<u128>()),
        }
    }

    /// The loop a local ufrag minted by [`IceCredentials::random_for`] belongs to.
    pub fn loop_of(ufrag: &str) -> Option<usize> {
        usize::from_str_radix(ufrag.get(..2)?, 16).ok()
    }
}

/// A send track of a viewer or echo session, as negotiated.
#[derive(Debug, Clone, Copy)]
pub struct SendTrack {
    /// The rtc sender that writes it.
    pub sender: RTCRtpSenderId,
    /// Audio or video.
    pub kind: RtpCodecKind,
    /// Its SSRC.
    pub ssrc: u32,
    /// The payload type negotiated for it.
    pub payload_type: u8,
    /// The codec's RTP clock rate.
    pub clock_rate: u32,
}

/// A negotiated peer connection, ready to be handed to its media loop.
pub struct Negotiated {
    /// The peer connection, with local and remote descriptions applied.
    pub pc: RTCPeerConnection,
    /// The SDP answer for the 201 body.
    pub answer: String,
    /// The local ICE ufrag: the routing key of STUN requests for this session, and its ETag.
    pub ufrag: String,
    /// The send tracks of a `Viewer`/`Echo` session (none for a publisher).
    pub tracks: Vec<SendTrack>,
}

/// Answers `offer` for `role` with `credentials`. Errors from applying the offer are the
/// client's ([`MediaError::BadOffer`]); the others are internal.
pub fn negotiate(
    settings: &PeerSettings,
    role: Role,
    info: &OfferInfo,
    offer: String,
    credentials: IceCredentials,
    now: Instant,
) -> Result<Negotiated, MediaError> {
    let codec = rtc_util::opus_codec(info.stereo);
    let mut pc = build_peer(settings, &codec, &credentials, now)?;
    let track = if role.receives() {
        Some(add_send_track(&mut pc, codec)?)
    } else {
        None
    };
    apply_offer(&mut pc, role, offer, settings, now)?;
    let answer = answer(&mut pc, now)?;
    let tracks = track
        .map(|(sender, ssrc)| negotiated_track(&mut pc, sender, ssrc))
        .transpose()?
        .into_iter()
        .collect();
    Ok(Negotiated {
        pc,
        answer,
        ufrag: credentials.ufrag,
        tracks,
    })
}

/// The peer connection before any description: one codec, RTCP reports, consent timeouts, DTLS
/// server role, mDNS off, the loop's certificate and the session's credentials.
fn build_peer(
    settings: &PeerSettings,
    codec: &RTCRtpCodec,
    credentials: &IceCredentials,
    now: Instant,
) -> Result<RTCPeerConnection, MediaError> {
    let mut media_engine = MediaEngine::default();
    media_engine
        .register_codec(
            RTCRtpCodecParameters {
                rtp_codec: codec.clone(),
                payload_type: OPUS_PT,
            },
            RtpCodecKind::Audio,
        )
        .map_err(MediaError::internal)?;
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
        .with_ice_credentials(credentials.ufrag.clone(), credentials.pwd.clone())
        .build();
    let configuration = RTCConfigurationBuilder::new()
        .with_certificates(vec![settings.certificate.clone()])
        .build();
    RTCPeerConnectionBuilder::new()
        .with_configuration(configuration)
        .with_media_engine(media_engine)
        .with_setting_engine(setting_engine)
        .with_interceptor_registry(registry)
        .build(now)
        .map_err(MediaError::internal)
}

/// The audio track a viewer or echo session sends, with a random SSRC.
fn add_send_track(
    pc: &mut RTCPeerConnection,
    codec: RTCRtpCodec,
) -> Result<(RTCRtpSenderId, u32), MediaError> {
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
    let sender = pc.add_track(track).map_err(MediaError::internal)?;
    Ok((sender, ssrc))
}

/// Applies the client's offer, narrows a viewer's direction, adds the shared socket's candidates.
fn apply_offer(
    pc: &mut RTCPeerConnection,
    role: Role,
    offer: String,
    settings: &PeerSettings,
    now: Instant,
) -> Result<(), MediaError> {
    let offer = RTCSessionDescription::offer(offer).map_err(MediaError::bad_offer)?;
    pc.set_remote_description(now, offer)
        .map_err(MediaError::bad_offer)?;
    if role == Role::Viewer {
        send_only(pc);
    }
    for candidate in &settings.candidates {
        pc.add_local_candidate(candidate.clone())
            .map_err(MediaError::internal)?;
    }
    Ok(())
}

/// Creates and applies the answer; returns its text as the client gets it.
fn answer(pc: &mut RTCPeerConnection, now: Instant) -> Result<String, MediaError> {
    let answer = pc.create_answer(None).map_err(MediaError::bad_offer)?;
    pc.set_local_description(now, answer)
        .map_err(MediaError::internal)?;
    let sdp = pc
        .local_description()
        .ok_or_else(|| MediaError::Internal("no local description after answer".into()))?
        .sdp;
    Ok(edit_answer(&sdp))
}

/// The negotiated parameters of a send track.
fn negotiated_track(
    pc: &mut RTCPeerConnection,
    sender: RTCRtpSenderId,
    ssrc: u32,
) -> Result<SendTrack, MediaError> {
    let codec = pc.rtp_sender(sender).and_then(|mut s| {
        let codec = s.get_parameters().rtp_parameters.codecs.first()?;
        Some((codec.payload_type, codec.rtp_codec.clock_rate))
    });
    let (payload_type, clock_rate) =
        codec.ok_or_else(|| MediaError::BadOffer("no Opus codec negotiated for sending".into()))?;
    Ok(SendTrack {
        sender,
        kind: RtpCodecKind::Audio,
        ssrc,
        payload_type,
        clock_rate: if clock_rate == 0 {
            rtc_util::OPUS_CLOCK_RATE
        } else {
            clock_rate
        },
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

/// The text edits of rtc's answer, in one place (rtc has no setting for either):
/// [`finish_answer`], then [`complete_rejected_sections`]. The client gets this text, while rtc's
/// `local_description()` keeps its own; the differences are attributes rtc does not act on.
fn edit_answer(sdp: &str) -> String {
    complete_rejected_sections(&finish_answer(sdp))
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
    fn credentials_name_their_loop_and_are_fresh() {
        for index in [0, 1, 63, 255] {
            let c = IceCredentials::random_for(index);
            assert_eq!(c.ufrag.len(), 16);
            assert_eq!(c.pwd.len(), 32);
            // RFC 8839 §5.4: ice-char is ALPHA / DIGIT / "+" / "/".
            assert!(c
                .ufrag
                .bytes()
                .chain(c.pwd.bytes())
                .all(|b| b.is_ascii_alphanumeric()));
            assert_eq!(IceCredentials::loop_of(&c.ufrag), Some(index));
        }
        assert_ne!(IceCredentials::random_for(0), IceCredentials::random_for(0));
        assert_eq!(IceCredentials::loop_of("x"), None);
    }

    #[test]
    fn finds_attributes() {
        let sdp = "v=0\r\na=ice-ufrag:abcd\r\na=ice-pwd:xyz\r\n";
        assert_eq!(sdp_attribute(sdp, "ice-ufrag"), Some("abcd"));
        assert_eq!(sdp_attribute(sdp, "ice-pwd"), Some("xyz"));
        assert_eq!(sdp_attribute(sdp, "fingerprint"), None);
    }
}
