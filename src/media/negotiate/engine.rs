//! The peer connection before any description, built in named steps: its media engine (the
//! chosen codecs, header extensions), its interceptors (RTCP reports; for video NACK, keyframe
//! feedback and, for a publisher, TWCC), its setting engine (consent timeouts, DTLS role and
//! resend timing, mDNS off, credentials, ICE-TCP), the loop's certificate.

use std::time::{Duration, Instant};

use rtc::ice::network_type::NetworkType;
use rtc::interceptor::{NackGeneratorBuilder, Registry, Slot};
use rtc::peer_connection::configuration::interceptor_registry::{
    configure_rtcp_reports, configure_twcc_receiver_only,
};
use rtc::peer_connection::configuration::media_engine::MediaEngine;
use rtc::peer_connection::configuration::setting_engine::{SettingEngine, SettingEngineBuilder};
use rtc::peer_connection::configuration::RTCConfigurationBuilder;
use rtc::peer_connection::transport::RTCDtlsRole;
use rtc::peer_connection::{RTCPeerConnection, RTCPeerConnectionBuilder};
use rtc::rtp_transceiver::rtp_sender::{
    RTCPFeedback, RTCRtpCodecParameters, RTCRtpHeaderExtensionCapability, RtpCodecKind,
};

use super::codecs::Codec;
use super::peer::{IceCredentials, PeerSettings};
use crate::media::MediaError;
use crate::session::Role;

/// What a peer connection is for: its session's role, the DTLS role it answers with, and
/// whether it nominates (the controlling side, a pull's offer).
#[derive(Debug, Clone, Copy)]
pub(in crate::media) struct PeerShape {
    pub role: Role,
    pub dtls: RTCDtlsRole,
    pub nominates: Nominates,
    /// Whether its media takes the fast path once DTLS is up (`media/conn/fast.rs`), which keeps
    /// its reports and feedback itself: every answered session; a pull keeps rtc's pipeline.
    pub fast: bool,
}

/// When whip-echo's DTLS handshake, as DTLS client, first resends a flight that got no answer;
/// each later resend waits twice as long (up to [`DTLS_RESEND_CEILING`]). rtc-dtls's 1 s made a
/// client that was not listening yet for the first flight (FFmpeg) wait a second; browsers start
/// at 50 ms. As DTLS server whip-echo keeps rtc-dtls's 1 s: its flights answer the client's, whose
/// own resends (browsers: from 50 ms) ask again for a lost one, and a short timer of its own would
/// only send flight 4 twice to a client farther than 100 ms away.
pub const DTLS_FIRST_RESEND: Duration = Duration::from_millis(100);
/// The longest wait between two resends of a DTLS flight (RFC 6347 §4.2.4.1: 60 s). As DTLS
/// client rtc-dtls resends 7 times (after 0.1, 0.3, 0.7, 1.5, 3.1, 6.3 and 12.7 s) and gives up
/// at its next timer, 25.5 s in; as server its first resend comes after 1 s, doubling. The
/// session's setup deadline (`--ice-timeout`) usually comes first.
pub const DTLS_RESEND_CEILING: Duration = Duration::from_secs(60);

/// The peer connection before any description: the chosen codecs, RTCP reports (and for video
/// NACK, and TWCC feedback where the client sends video), consent timeouts, its DTLS role and
/// resend timing, mDNS off, the loop's certificate and the session's credentials.
pub(in crate::media) fn build_peer(
    settings: &PeerSettings,
    shape: PeerShape,
    chosen: &[Codec],
    credentials: &IceCredentials,
    now: Instant,
) -> Result<RTCPeerConnection, MediaError> {
    let mut media_engine = media_engine(chosen)?;
    let registry = interceptors(settings, shape, chosen, &mut media_engine)?;
    let configuration = RTCConfigurationBuilder::new()
        .with_certificates(vec![settings.certificate()?])
        .build();
    RTCPeerConnectionBuilder::new()
        .with_configuration(configuration)
        .with_media_engine(media_engine)
        .with_setting_engine(setting_engine(settings, shape, credentials))
        .with_interceptor_registry(registry)
        .build(now)
        .map_err(MediaError::internal)
}

/// A media engine with the chosen codecs.
fn media_engine(chosen: &[Codec]) -> Result<MediaEngine, MediaError> {
    let mut media_engine = MediaEngine::default();
    for codec in chosen {
        media_engine
            .register_codec(
                RTCRtpCodecParameters {
                    rtp_codec: codec.rtc_codec(),
                    payload_type: codec.payload_type,
                },
                codec.kind,
            )
            .map_err(MediaError::internal)?;
    }
    Ok(media_engine)
}

/// Sender and receiver reports always. For video also NACK (RFC 4585): lost packets are asked
/// for again from a publisher and answered from the send buffer for a viewer; and, where the
/// client sends video, transport-wide congestion control feedback (TWCC), without which a
/// browser's encoder never raises its bitrate. Audio-only sessions get neither: Opus copes
/// with loss itself, and they stay as cheap as before. A fast-path session negotiates the same
/// but registers no interceptor: the fast path keeps its reports and feedback itself
/// (`conn/fast.rs`, `conn/feedback.rs`), since its packets do not pass the interceptors, which
/// would report what they never saw.
fn interceptors(
    settings: &PeerSettings,
    shape: PeerShape,
    chosen: &[Codec],
    media_engine: &mut MediaEngine,
) -> Result<Registry, MediaError> {
    let mut registry = match shape.fast {
        true => Registry::new(),
        false => configure_rtcp_reports(Registry::new()),
    };
    if !chosen.iter().any(|c| c.kind == RtpCodecKind::Video) {
        return Ok(registry);
    }
    for parameter in ["", "pli"] {
        media_engine.register_feedback(
            RTCPFeedback {
                typ: "nack".to_owned(),
                parameter: parameter.to_owned(),
            },
            RtpCodecKind::Video,
        );
    }
    if !shape.fast {
        // Viewers' keyframe requests reach the loop, which passes them upstream
        // (`forward/keyframes.rs`). rtc's NACK generator asks publishers again for what they
        // lost; whip-echo's own responder answers viewers' NACKs within bounds
        // (`forward/nack.rs`), in the slot of rtc's. (rtc's `configure_nack` with the other
        // responder: replacing it in its slot logs a warning per session.)
        registry = rtc_util::with_keyframe_feedback(registry)
            .with(
                Slot::NackResponder,
                crate::media::forward::nack::NackResponder::new(settings.nack.clone()),
            )
            .with(Slot::NackGenerator, NackGeneratorBuilder::new().build());
    }
    if shape.role.publishes() {
        // The header extension and feedback negotiated either way; on the fast path its own
        // recorder answers, and rtc's is left out.
        let mut twcc = |registry| {
            configure_twcc_receiver_only(registry, media_engine).map_err(MediaError::internal)
        };
        registry = match shape.fast {
            true => twcc(Registry::new()).map(|_| registry)?,
            false => twcc(registry)?,
        };
        simulcast_extensions(media_engine)?;
    }
    Ok(registry)
}

/// What a session's fast path (`media/conn/fast.rs`) needs of its negotiation.
#[derive(Debug, Clone)]
pub struct FastSetup {
    /// The kind and RTP clock rate of each negotiated payload type.
    pub payload_types: Vec<(u8, RtpCodecKind, u32)>,
    /// Whether video was negotiated (then what it receives passes its NACK and TWCC feedback).
    pub video: bool,
    /// The id of the transport-wide sequence number header extension the answer accepted, when
    /// the client sends video: its TWCC feedback is the fast path's.
    pub twcc: Option<u8>,
    /// The counters of its NACK responder.
    pub nack: crate::media::NackMetrics,
}

impl FastSetup {
    /// The fast path of a session that chose `chosen` for `role` and answered `answer`.
    pub fn new(settings: &PeerSettings, role: Role, chosen: &[Codec], answer: &str) -> Self {
        let video = chosen.iter().any(|c| c.kind == RtpCodecKind::Video);
        FastSetup {
            payload_types: (chosen.iter())
                .map(|c| (c.payload_type, c.kind, c.clock_rate))
                .collect(),
            video,
            twcc: (video && role.publishes())
                .then(|| extmap_id(answer, rtc::sdp::extmap::TRANSPORT_CC_URI))
                .flatten(),
            nack: settings.nack.clone(),
        }
    }
}

/// The id `sdp` gives the header extension `uri` (`a=extmap:<id>[/<direction>] <uri>`, RFC
/// 8285 §8; one-byte or two-byte, 1..=255).
fn extmap_id(sdp: &str, uri: &str) -> Option<u8> {
    sdp.lines().find_map(|line| {
        let (id, rest) = line.trim_end().strip_prefix("a=extmap:")?.split_once(' ')?;
        let named = rest.split_whitespace().next()? == uri;
        let id = id.split('/').next()?.parse().ok()?;
        (named && id != 0).then_some(id)
    })
}

/// Simulcast (RFC 8853): each layer's SSRC is bound to its rid by these header extensions (RFC
/// 8852), and an offer without video SSRCs (OBS 32) is bound by mid. rtc answers each only where
/// the offer has it; without the rid extension Chromium refuses an answer that keeps
/// `a=simulcast`, and OBS's layers were never bound.
fn simulcast_extensions(media_engine: &mut MediaEngine) -> Result<(), MediaError> {
    for uri in [
        rtc::sdp::extmap::SDES_MID_URI,
        rtc::sdp::extmap::SDES_RTP_STREAM_ID_URI,
        rtc::sdp::extmap::SDES_REPAIR_RTP_STREAM_ID_URI,
    ] {
        media_engine
            .register_header_extension(
                RTCRtpHeaderExtensionCapability {
                    uri: uri.to_owned(),
                },
                RtpCodecKind::Video,
                None,
            )
            .map_err(MediaError::internal)?;
    }
    Ok(())
}

/// RFC 7675 consent (`disconnected` after a short silence, `failed` when the configured timeout
/// has passed without any response), the DTLS role and resend timing, mDNS off, the session's
/// credentials, the nomination pace and ICE-TCP beside UDP.
fn setting_engine(
    settings: &PeerSettings,
    shape: PeerShape,
    credentials: &IceCredentials,
) -> SettingEngine {
    let disconnected = (settings.ice_timeout / 2).min(Duration::from_secs(5));
    let keepalive = (disconnected / 2).min(Duration::from_secs(2));
    let first_resend = match shape.dtls {
        RTCDtlsRole::Client => DTLS_FIRST_RESEND,
        // Zero: rtc-dtls's default interval.
        _ => Duration::ZERO,
    };
    let nominates = shape.nominates == Nominates::Yes;
    SettingEngineBuilder::new()
        // DTLS server (`a=setup:passive`) unless the offer is passive: the client starts the
        // handshake as soon as ICE connects, with no timer in between, and GStreamer 1.22 (RSA
        // certificate) can connect.
        .with_answering_dtls_role(shape.dtls)
        .with_dtls_flight_interval(first_resend, DTLS_RESEND_CEILING)
        // mDNS off: rtc-ice would send every packet from a peer port 5353 down its mDNS path.
        .with_multicast_dns_mode(rtc::ice::mdns::MulticastDnsMode::Disabled)
        .with_ice_timeouts(
            Some(disconnected),
            Some(settings.ice_timeout.saturating_sub(disconnected)),
            Some(keepalive),
        )
        .with_ice_credentials(credentials.ufrag.clone(), credentials.pwd.clone())
        // The controlling agent (a pull's offer) nominates on its check timer: 200 ms by
        // default, which was the whole of a pull's connect time on a LAN.
        .with_ice_connection_attempts(
            nominates.then_some(Duration::from_millis(20)),
            nominates.then_some(70),
        )
        // RFC 6544: ICE-TCP beside UDP, for networks that drop UDP.
        .with_network_types(vec![
            NetworkType::Udp4,
            NetworkType::Udp6,
            NetworkType::Tcp4,
            NetworkType::Tcp6,
        ])
        .build()
}

/// Whether a peer connection is the ICE controlling side, which nominates (a pull's offer),
/// or the controlled one (every answer).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(in crate::media) enum Nominates {
    /// Controlling: checks (and so nominates) every 20 ms while connecting.
    Yes,
    /// Controlled: rtc's default check timer.
    No,
}

#[cfg(test)]
mod tests {
    use super::extmap_id;

    #[test]
    fn an_extension_id_is_read_from_its_extmap_line() {
        let uri = rtc::sdp::extmap::TRANSPORT_CC_URI;
        let sdp = format!("v=0\r\na=extmap:2 urn:x\r\na=extmap:3/recvonly {uri}\r\n");
        assert_eq!(extmap_id(&sdp, uri), Some(3));
        assert_eq!(extmap_id(&sdp, "urn:y"), None);
        assert_eq!(extmap_id(&format!("a=extmap:0 {uri}"), uri), None);
    }
}
