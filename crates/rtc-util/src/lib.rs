//! Small helpers over webrtc-rs's sans-IO `rtc` that the server (`whip-echo`) and the
//! conformance checker's client peer both need. Only rtc vocabulary lives here: the checker still
//! talks to servers over the wire alone and knows nothing of whip-echo.
#![forbid(unsafe_code)]

mod keyframe_feedback;
pub use keyframe_feedback::{
    asks_for_keyframe, keyframes_asked, message_asks_for_keyframe, with_all_rtcp_delivered,
    with_keyframe_feedback, write_on_video_receiver, KeyframeFeedback,
};

use std::net::SocketAddr;

use rtc::ice::tcp_type::TcpType;
use rtc::peer_connection::configuration::media_engine::MIME_TYPE_OPUS;
use rtc::peer_connection::transport::{
    CandidateConfig, CandidateHostConfig, RTCDtlsTransport, RTCDtlsTransportState, RTCIceCandidate,
    RTCIceCandidateInit,
};
use rtc::peer_connection::RTCPeerConnection;
use rtc::rtp_transceiver::rtp_sender::RTCRtpCodec;

/// Opus RTP clock rate (RFC 7587 §4.1).
pub const OPUS_CLOCK_RATE: u32 = 48_000;

/// A UDP host candidate for `addr` (RFC 8445 §5.1.1.1), as `add_local_candidate` takes it.
pub fn host_candidate(addr: SocketAddr) -> Result<RTCIceCandidateInit, String> {
    host(addr, "udp", TcpType::Unspecified, 0)
}

/// A passive ICE-TCP host candidate for `addr` (RFC 6544 §4.5: the server only accepts
/// connections). Its priority follows RFC 6544 §4.2: host type preference 126, local preference
/// 2^13 × 4 (passive) + other-pref, below every UDP host candidate; `rank` (0 first) lowers the
/// other-pref so that several TCP candidates never share a priority (RFC 8445 §5.1.2.1).
pub fn tcp_passive_candidate(addr: SocketAddr, rank: u16) -> Result<RTCIceCandidateInit, String> {
    let other_pref = 8191u32.saturating_sub(u32::from(rank));
    let local_pref = (1 << 13) * 4 + other_pref;
    let priority = (1 << 24) * 126 + (1 << 8) * local_pref + (256 - 1);
    host(addr, "tcp", TcpType::Passive, priority)
}

/// A component-1 host candidate; `priority` 0 lets rtc compute it.
fn host(
    addr: SocketAddr,
    network: &str,
    tcp_type: TcpType,
    priority: u32,
) -> Result<RTCIceCandidateInit, String> {
    let host = CandidateHostConfig {
        base_config: CandidateConfig {
            network: network.to_owned(),
            address: addr.ip().to_string(),
            port: addr.port(),
            component: 1,
            priority,
            ..Default::default()
        },
        tcp_type,
    }
    .new_candidate_host()
    .map_err(|e| e.to_string())?;
    RTCIceCandidate::from(&host)
        .to_json()
        .map_err(|e| e.to_string())
}

/// Opus at 48 kHz, two channels in the rtpmap as RFC 7587 §7 requires; `stereo=1` and
/// `sprop-stereo=1` only for stereo.
pub fn opus_codec(stereo: bool) -> RTCRtpCodec {
    let mut fmtp = "minptime=10;useinbandfec=1".to_owned();
    if stereo {
        fmtp.push_str(";stereo=1;sprop-stereo=1");
    }
    RTCRtpCodec {
        mime_type: MIME_TYPE_OPUS.to_owned(),
        clock_rate: OPUS_CLOCK_RATE,
        channels: 2,
        sdp_fmtp_line: fmtp,
        rtcp_feedback: vec![],
    }
}

/// Asks the connection's one (bundled) DTLS transport, reached through its first sender or
/// receiver; `None` before there is either.
pub fn dtls_transport<T>(
    pc: &mut RTCPeerConnection,
    f: impl FnOnce(&RTCDtlsTransport<'_>) -> T,
) -> Option<T> {
    let sender = pc.get_senders().next();
    let receiver = pc.get_receivers().next();
    match (sender, receiver) {
        (Some(id), _) => pc.rtp_sender(id)?.transport().map(|t| f(&t)),
        (None, Some(id)) => pc.rtp_receiver(id)?.transport().map(|t| f(&t)),
        (None, None) => None,
    }
}

/// Whether the other side closed the DTLS transport (its close_notify). rtc keeps the connection
/// state at `connected` then (ICE is still up), so the transport itself is asked.
pub fn dtls_closed(pc: &mut RTCPeerConnection) -> bool {
    dtls_transport(pc, |t| t.state()) == Some(RTCDtlsTransportState::Closed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_candidates_are_udp_component_1() {
        let c = host_candidate("127.0.0.1:8189".parse().unwrap()).unwrap();
        assert!(c.candidate.contains(" 1 udp "), "{}", c.candidate);
        assert!(
            c.candidate.contains("127.0.0.1 8189 typ host"),
            "{}",
            c.candidate
        );
    }

    #[test]
    fn tcp_candidates_are_passive() {
        let c = tcp_passive_candidate("127.0.0.1:8189".parse().unwrap(), 0).unwrap();
        assert!(
            c.candidate.contains(" 1 tcp 2124414975 "),
            "{}",
            c.candidate
        );
        let second = tcp_passive_candidate("127.0.0.1:8080".parse().unwrap(), 1).unwrap();
        assert!(
            second.candidate.contains(" 1 tcp 2124414719 "),
            "{}",
            second.candidate
        );
        let udp = host_candidate("127.0.0.1:8189".parse().unwrap()).unwrap();
        assert!(
            udp.candidate.contains(" 1 udp 2130706431 "),
            "{}",
            udp.candidate
        );
        assert!(
            c.candidate.contains("typ host tcptype passive"),
            "{}",
            c.candidate
        );
    }

    #[test]
    fn opus_keeps_stereo_only_when_asked() {
        assert_eq!(
            opus_codec(false).sdp_fmtp_line,
            "minptime=10;useinbandfec=1"
        );
        assert!(opus_codec(true)
            .sdp_fmtp_line
            .ends_with(";stereo=1;sprop-stereo=1"));
        assert_eq!(opus_codec(true).channels, 2);
    }
}
