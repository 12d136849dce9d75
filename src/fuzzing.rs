//! Entry points for the fuzz targets (`fuzz/`) and the property tests (`tests/api/properties.rs`):
//! every parser and validator that reads bytes a client or peer controls, each wrapped so that
//! it must not panic on any input and must keep its invariants. Not an API.

use std::net::{IpAddr, SocketAddr};
use std::sync::OnceLock;

use crate::auth::{Action, Auth};
use crate::session::{Role, StreamName};

/// An SDP offer: the checks every POST runs before a peer connection exists.
pub fn offer(data: &[u8]) {
    let Ok(sdp) = std::str::from_utf8(data) else {
        return;
    };
    for role in [Role::Publisher, Role::Viewer, Role::Echo] {
        if let Ok(info) = crate::media::negotiate::offer::inspect(sdp, role) {
            assert!(info.audio.is_some() || info.video.is_some());
        }
    }
}

/// A stream name from a URL path segment.
pub fn stream_name(data: &[u8]) {
    let Ok(name) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(parsed) = StreamName::parse(name) {
        let text = parsed.to_string();
        assert!(!text.is_empty() && text.len() <= 128, "{text:?}");
        assert!(
            !text.contains('/') && text != "." && text != "..",
            "{text:?}"
        );
    }
}

/// A datagram on the media port: its STUN USERNAME's local ufrag (routing), the media loop it
/// names, and the RFC 7983 demultiplexing of the HTTP port's first byte.
pub fn datagram(data: &[u8]) {
    if let Some(ufrag) = crate::media::stun_request_local_ufrag(data) {
        assert!(!ufrag.contains(':'));
        let _ = crate::media::negotiate::peer::IceCredentials::loop_of(&ufrag);
    }
    if let Some(&first) = data.first() {
        let _ = crate::http::port::classify(first);
    }
}

/// A byte stream on an ICE-TCP connection: RFC 4571 frames read one after the other, and the
/// media loop the first one names.
pub fn tcp_stream(data: &[u8]) {
    let frames = read_frames(data);
    let total: usize = frames.iter().map(|f| 2 + f.len()).sum();
    assert!(total <= data.len());
    if let Some(first) = frames.first() {
        datagram(first);
    }
}

/// An RFC 8840 fragment (a PATCH body): what parses builds into a fragment that parses again
/// to the same credentials and candidates.
pub fn sdpfrag(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(frag) = crate::sdpfrag::parse(text) else {
        return;
    };
    let (Some(ufrag), Some(pwd)) = (&frag.ufrag, &frag.pwd) else {
        return;
    };
    let sections: Vec<(String, Vec<String>)> = frag
        .sections
        .iter()
        .map(|s| {
            let mid = s.mid.clone().unwrap_or_else(|| s.index.to_string());
            (mid, s.candidates.clone())
        })
        .collect();
    let again = crate::sdpfrag::parse(&crate::sdpfrag::build(ufrag, pwd, &sections))
        .expect("a built fragment parses");
    assert_eq!((&again.ufrag, &again.pwd), (&frag.ufrag, &frag.pwd));
    let candidates = |f: &crate::sdpfrag::SdpFrag| {
        f.sections
            .iter()
            .flat_map(|s| s.candidates.clone())
            .collect::<Vec<_>>()
    };
    assert_eq!(candidates(&again), candidates(&frag));
}

/// `If-Match` field values, split at NUL bytes (one field each).
pub fn if_match(data: &[u8]) {
    let mut headers = axum::http::HeaderMap::new();
    for value in data.split(|&b| b == 0) {
        if let Ok(v) = axum::http::HeaderValue::from_bytes(value) {
            headers.append(axum::http::header::IF_MATCH, v);
        }
    }
    if let crate::media::IfMatch::Tags(tags) = crate::http::if_match(&headers) {
        assert!(tags.iter().all(|t| !t.is_empty() && t != "*"));
    }
}

/// An `Authorization` header: the bearer token taken from it, checked against static tokens
/// and an HS256 JWT secret.
pub fn authorization(data: &[u8]) {
    static AUTH: OnceLock<Auth> = OnceLock::new();
    let auth = AUTH.get_or_init(|| {
        Auth::from_config(
            &["publish-secret@live".to_owned()],
            &["play-secret".to_owned()],
            Some("a-jwt-secret-of-at-least-thirty-two-bytes"),
            None,
        )
        .expect("valid test policy")
        .expect("auth on")
    });
    let Ok(header) = std::str::from_utf8(data) else {
        return;
    };
    let token = crate::auth::bearer(header);
    let stream = StreamName::parse("live").expect("a valid name");
    for action in [Action::Publish, Action::Play] {
        let allowed = auth.check(token, action, &stream).is_ok();
        if allowed {
            // Only the configured secrets or a signed JWT get through.
            let t = token.unwrap_or_default();
            assert!(t == "publish-secret" || t == "play-secret" || t.matches('.').count() == 2);
        }
    }
}

/// A video RTP payload: does it start a keyframe, and the picture size a keyframe carries (an
/// H.264 SPS, VP8's key frame header, VP9's scalability structure), in each format whip-echo reads.
pub fn video_payload(data: &[u8]) {
    use crate::media::forward::random_access::{resolution, Format};
    for format in [Format::Vp8, Format::Vp9, Format::H264, Format::Av1] {
        format.starts_keyframe(data);
        if let Some((width, height)) = resolution(format, data) {
            assert!(width > 0 && height > 0);
        }
    }
}

/// The client IP from a proxy's header, as `--client-ip-header` reads it.
pub fn client_ip_header(data: &[u8]) {
    let mut headers = axum::http::HeaderMap::new();
    if let Ok(v) = axum::http::HeaderValue::from_bytes(data) {
        headers.append("x-forwarded-for", v);
    }
    let peer = SocketAddr::from(([127, 0, 0, 1], 9));
    let name = axum::http::HeaderName::from_static("x-forwarded-for");
    let ip = crate::http::client_ip_from(Some(&name), &headers, Some(peer));
    let _: Option<IpAddr> = ip;
}

/// RTP that rtc parses after SRTP decryption, rewritten for a viewer leg: the rewritten packet
/// marshals and parses back with the leg's identity.
pub fn rtp(data: &[u8]) {
    use rtc::shared::marshal::{Marshal, Unmarshal};
    let mut buf = data;
    let Ok(mut packet) = rtc::rtp::packet::Packet::unmarshal(&mut buf) else {
        return;
    };
    let mut leg = crate::media::forward::forwarder::Forwarder::new(42, 96, 90_000, 3000);
    leg.rewrite(&mut packet.header, std::time::Instant::now());
    let bytes = packet.marshal().expect("a rewritten packet marshals");
    let back = rtc::rtp::packet::Packet::unmarshal(&mut &bytes[..]).expect("and parses back");
    assert_eq!((back.header.ssrc, back.header.payload_type), (42, 96));
    assert_eq!(back.payload, packet.payload);
}

/// The RFC 4571 frames of a byte stream, read as an ICE-TCP connection reads them, up to the
/// first error.
fn read_frames(mut data: &[u8]) -> Vec<bytes::BytesMut> {
    use std::future::Future;
    let mut frames = Vec::new();
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    loop {
        // Reading a slice never waits, so one poll finishes the read.
        let read = std::pin::pin!(crate::media::net::tcp::read_frame(
            &mut data,
            usize::from(u16::MAX)
        ))
        .poll(&mut cx);
        match read {
            std::task::Poll::Ready(Ok(frame)) => frames.push(frame),
            _ => return frames,
        }
    }
}

/// A compound RTCP packet that rtc parses after SRTCP decryption, and the NACKs in it answered.
pub fn rtcp(data: &[u8]) {
    crate::media::forward::nack::answer_fuzzed(data);
}

/// DTLS datagrams as whip-echo's DTLS server reads them before and during a handshake (rtc-dtls's
/// endpoint with the server's role and a certificate): the input once, then again as a second
/// datagram (a retransmission, or the next flight).
pub fn dtls(data: &[u8]) {
    use rtc::dtls::config::{ConfigBuilder, HandshakeConfig};
    use rtc::dtls::crypto::Certificate;
    use rtc::dtls::endpoint::Endpoint;
    use rtc::shared::TransportProtocol;
    use std::sync::Arc;
    static CONFIG: OnceLock<Arc<HandshakeConfig>> = OnceLock::new();
    let config = CONFIG.get_or_init(|| {
        let provider = rtc::crypto::default_provider().expect("a crypto provider");
        let certificate =
            Certificate::generate_self_signed(vec!["whip-echo".to_owned()], provider.crypto())
                .expect("a certificate");
        let config = ConfigBuilder::default()
            .with_crypto_provider(provider)
            .with_certificates(vec![certificate])
            .build(false, None)
            .expect("a server configuration");
        Arc::new(config)
    });
    let local = SocketAddr::from(([127, 0, 0, 1], 1));
    let remote = SocketAddr::from(([127, 0, 0, 1], 2));
    let mut server = Endpoint::new(local, TransportProtocol::UDP, Some(config.clone()));
    let now = std::time::Instant::now();
    for _ in 0..2 {
        let _ = server.read(now, remote, None, bytes::BytesMut::from(data));
        while server.poll_transmit().is_some() {}
    }
}

/// A STUN message as rtc-ice reads a connectivity check: its attributes, and its integrity and
/// fingerprint checked.
pub fn stun(data: &[u8]) {
    use rtc::stun::attributes::ATTR_USERNAME;
    use rtc::stun::fingerprint::FINGERPRINT;
    use rtc::stun::integrity::MessageIntegrity;
    use rtc::stun::message::{Getter, Message};
    use rtc::stun::textattrs::TextAttribute;
    use rtc::stun::xoraddr::XorMappedAddress;
    let mut m = Message::new();
    if m.unmarshal_binary(data).is_err() {
        return;
    }
    let _ = TextAttribute::get_from_as(&m, ATTR_USERNAME);
    let _ = XorMappedAddress::default().get_from(&m);
    let _ = rtc::ice::attributes::priority::PriorityAttr::default().get_from(&m);
    let _ = rtc::ice::attributes::use_candidate::UseCandidateAttr::is_set(&m);
    let _ = rtc::ice::attributes::control::AttrControlling::default().get_from(&m);
    let _ = FINGERPRINT.check(&m);
    let provider = rtc::crypto::default_provider().expect("a crypto provider");
    let _ = MessageIntegrity::check(&mut m, b"a-password-of-22-chars", provider.crypto());
}
