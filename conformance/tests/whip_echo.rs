//! The checker's own tests: against the in-process whip-echo server (every MUST and every SHOULD
//! whip-echo implements must pass; checks of what it is not configured for must be skips, not
//! failures), and against small fake servers for behaviours whip-echo does not show (a 307 in
//! front, a WHEP counter-offer). The checker itself still talks to servers only over the wire.

use reqwest::Url;
use whip_conformance::{run_all, Outcome, Target};
use whip_echo::config::Config;
use whip_echo::server::{self, Running};

/// Generous upper bound for any event a test waits on.
const WAIT: std::time::Duration = std::time::Duration::from_secs(15);

/// Starts the real server in-process on ephemeral loopback ports.
async fn start(config: Config) -> Running {
    let listener = tokio::net::TcpListener::bind(config.listen).await.unwrap();
    server::spawn(listener, config).await.unwrap()
}

/// SHOULDs whip-echo deliberately does not follow, with the reason (none since it forwards
/// video: OBS's audio + video offer is accepted whole, as RFC 9725 §4.4.3 recommends).
const DELIBERATE: &[(&str, &str)] = &[];

#[tokio::test]
async fn whip_echo_passes_the_conformance_suite() {
    passes_the_suite(Config::for_tests()).await;
}

/// The same with two media loops on one UDP port: sessions spread over both, each reached
/// through either loop's socket, resources found in either.
#[tokio::test]
async fn whip_echo_with_two_media_loops_passes_the_conformance_suite() {
    let mut config = Config::for_tests();
    config.media_threads = 2;
    passes_the_suite(config).await;
}

/// With bearer tokens required (RFC 9725 §4.7.1): the checker sends its `--token` everywhere, and
/// its authentication checks run instead of being skipped.
#[tokio::test]
async fn whip_echo_with_tokens_and_ice_servers_passes_the_suite_and_its_auth_and_link_checks() {
    let mut config = Config::for_tests();
    config.access.publish_tokens = vec!["conformance-token".into()];
    config.access.play_tokens = vec!["conformance-token".into()];
    // And ICE servers in Link headers (RFC 9725 §4.6), TURN credentials minted per request.
    config.turn.ice_servers = vec![
        "stun:stun.example.net".into(),
        "turn:turn.example.net:3478?transport=udp".into(),
    ];
    config.turn.turn_secret = Some("conformance-turn-secret".into());
    let report = passes_the_suite_with(config, Some("conformance-token")).await;
    for id in [
        "rfc9725-4.6-link-ice-server-syntax",
        "rfc9725-4.7.1-missing-token-is-401",
        "rfc9725-4.7.1-wrong-token-is-401",
        "rfc9725-4.7.1-valid-token-is-accepted",
    ] {
        assert_eq!(
            report.get(id).map(|r| r.outcome),
            Some(Outcome::Pass),
            "{id}"
        );
    }
}

async fn passes_the_suite(config: Config) {
    passes_the_suite_with(config, None).await;
}

async fn passes_the_suite_with(config: Config, token: Option<&str>) -> whip_conformance::Report {
    let server = start(config).await;
    let mut target = Target::new(Url::parse(&server.base_url()).unwrap());
    target.echo_path = Some("/echo/{stream}".into());
    target.token = token.map(str::to_owned);
    let report = run_all(&target).await;
    println!("{}", report.to_text());

    let failed: Vec<_> = report
        .results
        .iter()
        .filter(|r| r.outcome == Outcome::Fail)
        .filter(|r| !DELIBERATE.iter().any(|(id, _)| *id == r.id))
        .map(|r| format!("{} ({}): {}", r.id, r.reference, r.evidence))
        .collect();
    assert!(failed.is_empty(), "failed checks:\n{}", failed.join("\n"));
    for (id, why) in DELIBERATE {
        let result = report.get(id).expect("the deliberate deviation is checked");
        assert_eq!(
            result.outcome,
            Outcome::Fail,
            "{id} now passes: drop it from DELIBERATE ({why})"
        );
    }
    // The media checks really ran: WHIP → WHEP and the echo extension; and so did the PATCH
    // checks (RFC 9725 §4.3: trickle ICE and ICE restart).
    for id in [
        "rfc9725-4.2-whip-media-reaches-whep-viewer",
        "extension-echo-returns-same-payloads",
        "rfc9725-4.3.2-trickle-patch-returns-204",
        "rfc9725-4.3.1-patch-wrong-content-type-is-4xx",
        "rfc9725-4.3.1-patch-stale-etag-is-412",
        "rfc9725-4.3.1-patch-missing-etag-is-428",
        "rfc9725-4.3.3-ice-restart-returns-200-sdpfrag",
    ] {
        assert_eq!(
            report.get(id).map(|r| r.outcome),
            Some(Outcome::Pass),
            "{id}"
        );
    }
    server.shutdown().await.unwrap();
    report
}

/// RFC 9725 §4.5: a load balancer in front answers 307; the checker follows it with the same
/// method and body and reports the redirect.
#[tokio::test]
async fn checker_follows_307_from_a_load_balancer() {
    use axum::http::{header, StatusCode, Uri};
    use axum::response::IntoResponse;

    let server = start(Config::for_tests()).await;
    let upstream = server.base_url();
    let balancer = axum::Router::new().fallback(move |uri: Uri| {
        let upstream = upstream.clone();
        async move {
            let path = uri.path().trim_start_matches("/lb");
            let to = format!("{upstream}{path}");
            (StatusCode::TEMPORARY_REDIRECT, [(header::LOCATION, to)]).into_response()
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let lb_addr = listener.local_addr().unwrap();
    let lb = tokio::spawn(async move { axum::serve(listener, balancer).await });

    let mut target = Target::new(Url::parse(&format!("http://{lb_addr}")).unwrap());
    target.whip_path = "/lb/whip/{stream}".into();
    target.skip_media = true;
    let report = run_all(&target).await;
    let redirect = report.get("rfc9725-4.5-redirects-are-307-or-308").unwrap();
    assert_eq!(redirect.outcome, Outcome::Pass, "{}", redirect.evidence);
    let created = report
        .get("rfc9725-4.2-post-returns-201-with-location")
        .unwrap();
    assert_eq!(created.outcome, Outcome::Pass, "{}", created.evidence);
    lb.abort();
    server.shutdown().await.unwrap();
}

/// WHEP draft §4.3.2: a server may answer the POST with 406 and its own offer; the checker's peer
/// answers it with PATCH and plays the stream. A tiny counter-offering WHEP server (an `rtc` peer
/// sending RTP on loopback) stands in for such servers (Janus answers this way).
#[tokio::test]
async fn checker_peer_follows_a_406_counter_offer() {
    let (base, server) = counter_offer::start().await;
    let url = format!("{base}/whep/janus-like");
    let mut viewer =
        whip_conformance::peer::Client::connect(&url, whip_conformance::peer::Mode::Recv)
            .await
            .expect("406 followed by PATCH");
    assert!(
        viewer.counter_offer,
        "the server's 406 counter-offer was used"
    );
    viewer.wait_connected(WAIT).await;
    let packet = viewer.next_packet(WAIT).await;
    assert_eq!(packet.payload, &b"counter-offer"[..]);
    viewer.close().await;
    server.abort();
}

mod counter_offer {
    use std::sync::{Arc, Mutex};
    use std::time::{Duration, Instant};

    use axum::extract::State;
    use axum::http::{header, StatusCode};
    use axum::response::IntoResponse;
    use axum::routing::{patch, post};
    use bytes::BytesMut;
    use rtc::interceptor::Registry;
    use rtc::media_stream::MediaStreamTrack;
    use rtc::peer_connection::configuration::media_engine::MediaEngine;
    use rtc::peer_connection::sdp::RTCSessionDescription;
    use rtc::peer_connection::{RTCPeerConnection, RTCPeerConnectionBuilder};
    use rtc::rtp::header::Header;
    use rtc::rtp::packet::Packet;
    use rtc::rtp_transceiver::rtp_sender::{
        RTCRtpCodecParameters, RTCRtpCodingParameters, RTCRtpEncodingParameters, RtpCodecKind,
    };
    use rtc::sansio::Protocol;
    use rtc::shared::{TaggedBytesMut, TransportContext, TransportProtocol};
    use tokio::net::UdpSocket;
    use tokio::task::JoinHandle;

    /// The pending peer, waiting for the client's answer.
    type Pending = Arc<Mutex<Option<(RTCPeerConnection, UdpSocket)>>>;

    pub async fn start() -> (String, JoinHandle<()>) {
        let pending: Pending = Arc::default();
        let app = axum::Router::new()
            .route("/whep/{stream}", post(offer))
            .route("/session/1", patch(answer))
            .with_state(pending);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        (base, task)
    }

    /// POST: ignore the client's offer, answer 406 with the server's own sendonly offer.
    async fn offer(State(pending): State<Pending>) -> impl IntoResponse {
        let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let local = socket.local_addr().unwrap();
        let mut engine = MediaEngine::default();
        let params = RTCRtpCodecParameters {
            rtp_codec: rtc_util::opus_codec(false),
            payload_type: 111,
        };
        engine.register_codec(params, RtpCodecKind::Audio).unwrap();
        let mut pc = RTCPeerConnectionBuilder::new()
            .with_media_engine(engine)
            .with_interceptor_registry(Registry::new())
            .build(Instant::now())
            .unwrap();
        let encoding = RTCRtpEncodingParameters {
            rtp_coding_parameters: RTCRtpCodingParameters {
                ssrc: Some(4242),
                ..Default::default()
            },
            codec: rtc_util::opus_codec(false),
            ..Default::default()
        };
        let track = MediaStreamTrack::new(
            "s".into(),
            "t".into(),
            "l".into(),
            RtpCodecKind::Audio,
            vec![encoding],
        );
        pc.add_track(track).unwrap();
        let offer = pc.create_offer(None).unwrap();
        pc.set_local_description(Instant::now(), offer).unwrap();
        pc.add_local_candidate(rtc_util::host_candidate(local).unwrap())
            .unwrap();
        let sdp = pc.local_description().unwrap().sdp;
        *pending.lock().unwrap() = Some((pc, socket));
        (
            StatusCode::NOT_ACCEPTABLE,
            [
                (header::CONTENT_TYPE, "application/sdp"),
                (header::LOCATION, "/session/1"),
            ],
            sdp,
        )
    }

    /// PATCH: the client's answer; start sending RTP once connected.
    async fn answer(State(pending): State<Pending>, body: String) -> StatusCode {
        let Some((mut pc, socket)) = pending.lock().unwrap().take() else {
            return StatusCode::NOT_FOUND;
        };
        let answer = RTCSessionDescription::answer(body).unwrap();
        if pc.set_remote_description(Instant::now(), answer).is_err() {
            return StatusCode::BAD_REQUEST;
        }
        tokio::spawn(drive(pc, socket));
        StatusCode::NO_CONTENT
    }

    async fn drive(mut pc: RTCPeerConnection, socket: UdpSocket) {
        let local = socket.local_addr().unwrap();
        let mut buf = vec![0u8; 2048];
        let mut tick = tokio::time::interval(Duration::from_millis(20));
        let mut seq = 0u16;
        for _ in 0..2000 {
            while pc.poll_event().is_some() {}
            while let Some(out) = pc.poll_write() {
                let _ = socket.send_to(&out.message, out.transport.peer_addr).await;
            }
            while pc.poll_read().is_some() {}
            let deadline = pc
                .poll_timeout()
                .unwrap_or_else(|| Instant::now() + Duration::from_secs(1));
            tokio::select! {
                _ = tick.tick() => {
                    let Some(id) = pc.get_senders().next() else { continue };
                    let Some(mut sender) = pc.rtp_sender(id) else { continue };
                    let header = Header { version: 2, payload_type: 111, sequence_number: seq, ssrc: 4242, ..Default::default() };
                    seq = seq.wrapping_add(1);
                    // Refused until DTLS is up; then every tick sends one packet.
                    let _ = sender.write_rtp(Instant::now(), Packet { header, payload: bytes::Bytes::from_static(b"counter-offer") });
                }
                r = socket.recv_from(&mut buf) => {
                    let Ok((n, peer)) = r else { return };
                    let transport = TransportContext { local_addr: local, peer_addr: peer, ecn: None, transport_protocol: TransportProtocol::UDP };
                    let _ = pc.handle_read(TaggedBytesMut { now: Instant::now(), transport, message: BytesMut::from(&buf[..n]) });
                }
                _ = tokio::time::sleep_until(deadline.into()) => {
                    let _ = pc.handle_timeout(Instant::now());
                }
            }
        }
    }
}
