//! The HTTP API through `router().oneshot`: every status and header shape, no HTTP sockets (the
//! media plane still binds its loopback UDP socket, since the router talks to it).

use axum::body::Body;
use axum::http::{header, Method, Request, StatusCode};
use axum::response::Response;
use axum::Router;
use http_body_util::BodyExt;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;
use whip_echo::config::{Config, PublisherConflict};
use whip_echo::server::start_media;

const OFFER: &str = include_str!("../data/offer.sdp");
const OBS_OFFER: &str = include_str!("../data/obs-offer.sdp");
const STEREO_PCMA_FIRST: &str = include_str!("../data/pcma-first-stereo.sdp");
const RECVONLY_OFFER: &str = include_str!("../data/recvonly-offer.sdp");
/// The shape GStreamer's `whepsrc` (webrtcbin 1.22) offers: recvonly audio + video, one bundle.
const GSTREAMER_WHEP_OFFER: &str = include_str!("../data/gstreamer-whep-offer.sdp");

struct Api {
    router: Router,
    stop: CancellationToken,
}

impl Api {
    async fn new(config: Config) -> Api {
        let stop = CancellationToken::new();
        let (_media, _task, router) = start_media(&config, stop.clone()).await.unwrap();
        Api { router, stop }
    }

    async fn send(&self, request: Request<Body>) -> (Response, String) {
        let response = self.router.clone().oneshot(request).await.unwrap();
        let (parts, body) = response.into_parts();
        let bytes = body.collect().await.unwrap().to_bytes();
        let text = String::from_utf8_lossy(&bytes).into_owned();
        (Response::from_parts(parts, Body::empty()), text)
    }

    async fn post(
        &self,
        path: &str,
        content_type: Option<&str>,
        body: impl Into<Body>,
    ) -> (Response, String) {
        let mut request = Request::post(path);
        if let Some(ct) = content_type {
            request = request.header(header::CONTENT_TYPE, ct);
        }
        self.send(request.body(body.into()).unwrap()).await
    }

    async fn sdp(&self, path: &str, offer: &str) -> (Response, String) {
        self.post(path, Some("application/sdp"), offer.to_owned())
            .await
    }

    async fn call(&self, method: Method, path: &str) -> (Response, String) {
        self.send(
            Request::builder()
                .method(method)
                .uri(path)
                .body(Body::empty())
                .unwrap(),
        )
        .await
    }
}

impl Drop for Api {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

fn header_of<'a>(response: &'a Response, name: &str) -> &'a str {
    response
        .headers()
        .get(name)
        .map(|v| v.to_str().unwrap())
        .unwrap_or_else(|| panic!("missing header {name}: {:?}", response.headers()))
}

/// The OBS offer without its audio section.
fn video_only_offer() -> String {
    let audio = OBS_OFFER.find("m=audio").unwrap();
    let video = OBS_OFFER.find("m=video").unwrap();
    format!("{}{}", &OBS_OFFER[..audio], &OBS_OFFER[video..])
}

/// `offer` with its video codecs renamed to H.263, which whip-echo cannot forward.
fn with_h263_video(offer: &str) -> String {
    ["H264/90000", "VP8/90000", "VP9/90000", "AV1/90000"]
        .iter()
        .fold(offer.to_owned(), |o, codec| o.replace(codec, "H263/90000"))
}

fn audio_section(sdp: &str) -> &str {
    let start = sdp.find("m=audio").expect("answer has audio");
    let rest = &sdp[start..];
    &rest[..rest[2..].find("m=").map_or(rest.len(), |i| i + 2)]
}

#[tokio::test]
async fn whip_post_creates_a_resource() {
    let api = Api::new(Config::for_tests()).await;
    let (r, answer) = api.sdp("/whip/s1", OFFER).await;
    assert_eq!(r.status(), StatusCode::CREATED, "{answer}");
    assert_eq!(header_of(&r, "content-type"), "application/sdp");
    let location = header_of(&r, "location").to_owned();
    let id = location
        .strip_prefix("/resource/")
        .expect("relative resource URL");
    assert_eq!(id.len(), 32);
    assert!(id.bytes().all(|b| b.is_ascii_hexdigit()));
    let etag = header_of(&r, "etag");
    assert!(etag.starts_with('"') && etag.ends_with('"') && etag.len() > 2);
    // RFC 9725 §4.2: recvonly answer; candidates and DTLS parameters inline, no trickle needed.
    let audio = audio_section(&answer);
    assert!(audio.contains("a=recvonly"), "{answer}");
    assert!(
        answer.contains("a=candidate:") && answer.contains("typ host"),
        "{answer}"
    );
    assert!(answer.contains("a=fingerprint:sha-256"), "{answer}");
    assert!(answer.contains("a=setup:passive"), "{answer}");
    assert!(
        answer.contains("a=ice-ufrag:") && answer.contains("a=ice-pwd:"),
        "{answer}"
    );
    assert!(
        audio.to_ascii_lowercase().contains("opus/48000/2"),
        "{answer}"
    );

    assert_eq!(
        api.call(Method::GET, &location).await.0.status(),
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        api.call(Method::DELETE, &location).await.0.status(),
        StatusCode::OK
    );
    assert_eq!(
        api.call(Method::DELETE, &location).await.0.status(),
        StatusCode::NOT_FOUND
    );
    // Gone, and it says why (for the grace period; a client whose connection closed asks).
    let (r, text) = api.call(Method::GET, &location).await;
    assert_eq!(r.status(), StatusCode::GONE);
    assert_eq!(
        text,
        "session ended: its resource was deleted (a DELETE request)\n"
    );
}

#[tokio::test]
async fn whep_and_echo_answer_directions() {
    let api = Api::new(Config::for_tests()).await;
    let (r, answer) = api.sdp("/whep/s1", RECVONLY_OFFER).await;
    assert_eq!(r.status(), StatusCode::CREATED, "{answer}");
    assert!(audio_section(&answer).contains("a=sendonly"), "{answer}");
    let (r, answer) = api.sdp("/echo/s2", STEREO_PCMA_FIRST).await;
    assert_eq!(r.status(), StatusCode::CREATED, "{answer}");
    let audio = audio_section(&answer);
    assert!(audio.contains("a=sendrecv"), "{answer}");
    // Opus is chosen although PCMA is listed first, and stereo is kept.
    let m_line = audio.lines().next().unwrap();
    assert!(
        m_line.trim_end().ends_with(" 111"),
        "only Opus in the answer: {m_line}"
    );
    assert!(audio.contains("stereo=1"), "{answer}");
}

#[tokio::test]
async fn whep_answers_a_sendrecv_offer_sendonly() {
    let api = Api::new(Config::for_tests()).await;
    let sendrecv = OFFER.replace("a=sendonly", "a=sendrecv");
    assert!(audio_section(&sendrecv).contains("a=sendrecv"));
    let (r, answer) = api.sdp("/whep/s1", &sendrecv).await;
    assert_eq!(r.status(), StatusCode::CREATED, "{answer}");
    // WHEP draft §4.3.5: the resource only sends, whatever the player offered.
    let audio = audio_section(&answer);
    assert!(audio.contains("a=sendonly"), "{answer}");
    assert!(!audio.contains("a=sendrecv"), "{answer}");
}

/// Every m-section of `sdp`, each starting at its `m=` line.
fn sections(sdp: &str) -> Vec<&str> {
    let mut starts: Vec<usize> = sdp.match_indices("\nm=").map(|(i, _)| i + 1).collect();
    starts.push(sdp.len());
    starts.windows(2).map(|w| &sdp[w[0]..w[1]]).collect()
}

#[tokio::test]
async fn rejected_sections_carry_ice_and_dtls_attributes() {
    let api = Api::new(Config::for_tests()).await;
    // A section whip-echo cannot serve (video in a codec it does not forward) is rejected.
    for (path, offer) in [
        ("/whep/gst", GSTREAMER_WHEP_OFFER),
        ("/whip/obs", OBS_OFFER),
    ] {
        let (r, answer) = api.sdp(path, &with_h263_video(offer)).await;
        assert_eq!(r.status(), StatusCode::CREATED, "{answer}");
        let all = sections(&answer);
        assert_eq!(all.len(), 2, "{answer}");
        assert!(all[1].starts_with("m=video 0 "), "video rejected: {answer}");
        let session_fingerprint = answer[..answer.find("\nm=").unwrap()].contains("a=fingerprint:");
        // webrtcbin refuses an answer whose any section lacks these (even a rejected one).
        for section in all {
            for attr in ["a=mid:", "a=ice-ufrag:", "a=ice-pwd:", "a=setup:"] {
                assert!(section.contains(attr), "{attr} missing in\n{section}");
            }
            assert!(
                session_fingerprint || section.contains("a=fingerprint:"),
                "{section}"
            );
        }
    }
}

#[tokio::test]
async fn obs_audio_and_h264_video_are_both_accepted() {
    let api = Api::new(Config::for_tests()).await;
    let (r, answer) = api.sdp("/whip/obs", OBS_OFFER).await;
    assert_eq!(r.status(), StatusCode::CREATED, "{answer}");
    // OBS's shape (obs-webrtc: Opus + H.264 packetization-mode 1 with RTX): both sections are
    // accepted, each with the one codec whip-echo forwards, and video asks for NACK and PLI.
    let video = &answer[answer.find("m=video").expect("a video section")..];
    assert!(
        video.starts_with("m=video 9 UDP/TLS/RTP/SAVPF 96\r\n"),
        "{answer}"
    );
    assert!(video.contains("a=rtpmap:96 H264/90000"), "{answer}");
    assert!(video.contains("packetization-mode=1"), "{answer}");
    // Only the RTX the offer pairs with H.264 is left out (whip-echo negotiates no RTX).
    assert!(!video.contains("apt=96"), "{answer}");
    assert!(video.contains("a=recvonly"), "{answer}");
    assert!(
        !audio_section(&answer).starts_with("m=audio 0 "),
        "{answer}"
    );
    let (r, answer) = api.sdp("/whip/obs-video", &video_only_offer()).await;
    assert_eq!(r.status(), StatusCode::CREATED, "video alone: {answer}");
}

#[tokio::test]
async fn content_type_is_checked() {
    let api = Api::new(Config::for_tests()).await;
    let (r, text) = api.post("/whip/s", None, OFFER).await;
    assert_eq!(r.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
    assert!(text.contains("application/sdp"));
    assert_eq!(header_of(&r, "content-type"), "text/plain; charset=utf-8");
    let (r, _) = api.post("/whep/s", Some("text/plain"), OFFER).await;
    assert_eq!(r.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
    let (r, _) = api.post("/echo/s", Some("application/json"), "{}").await;
    assert_eq!(r.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
    let (r, body) = api
        .post("/whip/s", Some("application/SDP; charset=utf-8"), OFFER)
        .await;
    assert_eq!(r.status(), StatusCode::CREATED, "{body}");
}

#[tokio::test]
async fn oversized_and_malformed_bodies_are_4xx() {
    let api = Api::new(Config::for_tests()).await;
    let huge = "a".repeat(10 * 1024 * 1024);
    let (r, _) = api.post("/whip/s", Some("application/sdp"), huge).await;
    assert_eq!(r.status(), StatusCode::PAYLOAD_TOO_LARGE);
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("empty", vec![]),
        ("garbage", b"\x00\x01\x02 hello".to_vec()),
        (
            "not utf-8",
            vec![b'v', b'=', b'0', b'\r', b'\n', 0xff, 0xfe],
        ),
        (
            "no m-lines",
            b"v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\n".to_vec(),
        ),
        (
            "video only, in a codec whip-echo cannot forward",
            with_h263_video(&video_only_offer()).into_bytes(),
        ),
    ];
    for (name, body) in cases {
        let (r, text) = api.post("/whip/s", Some("application/sdp"), body).await;
        assert_eq!(r.status(), StatusCode::BAD_REQUEST, "{name}: {text}");
        assert!(!text.is_empty(), "{name}: a reason is given");
    }
    // A WHIP offer that only wants to receive cannot publish.
    let (r, text) = api.sdp("/whip/s", RECVONLY_OFFER).await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST, "{text}");
    let long = format!("/whip/{}", "x".repeat(129));
    assert_eq!(
        api.sdp(&long, OFFER).await.0.status(),
        StatusCode::BAD_REQUEST
    );
}

#[tokio::test]
async fn second_publisher_conflicts_and_cap_gives_503() {
    let mut config = Config::for_tests();
    config.publisher_conflict = Some(PublisherConflict::Reject);
    config.max_sessions = 2;
    let api = Api::new(config).await;
    assert_eq!(
        api.sdp("/whip/a", OFFER).await.0.status(),
        StatusCode::CREATED
    );
    let (r, text) = api.sdp("/whip/a", OFFER).await;
    assert_eq!(r.status(), StatusCode::CONFLICT, "{text}");
    assert_eq!(
        api.sdp("/echo/a", STEREO_PCMA_FIRST).await.0.status(),
        StatusCode::CONFLICT
    );
    assert_eq!(
        api.sdp("/whep/a", RECVONLY_OFFER).await.0.status(),
        StatusCode::CREATED
    );
    let (r, _) = api.sdp("/whep/a", RECVONLY_OFFER).await;
    assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(header_of(&r, "retry-after").parse::<u32>().is_ok());
}

#[tokio::test]
async fn a_second_publisher_is_refused_by_default_when_anyone_may_publish() {
    let api = Api::new(Config::for_tests()).await;
    let (r, _) = api.sdp("/whip/a", OFFER).await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let (r, text) = api.sdp("/whip/a", OFFER).await;
    assert_eq!(r.status(), StatusCode::CONFLICT, "{text}");
}

/// `--publisher-conflict takeover` (the default when tokens are required).
#[tokio::test]
async fn a_second_publisher_takes_over_with_takeover() {
    let mut config = Config::for_tests();
    config.publisher_conflict = Some(PublisherConflict::Takeover);
    let api = Api::new(config).await;
    let (r, _) = api.sdp("/whip/a", OFFER).await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let old = header_of(&r, "location").to_owned();
    let (r, text) = api.sdp("/echo/a", STEREO_PCMA_FIRST).await;
    assert_eq!(r.status(), StatusCode::CREATED, "{text}");
    let (r, text) = api.sdp("/whip/a", OFFER).await;
    assert_eq!(r.status(), StatusCode::CREATED, "{text}");
    let new = header_of(&r, "location").to_owned();
    // The replaced session's resource says why it ended (410, so its client can tell the user)...
    let (r, text) = api.call(Method::GET, &old).await;
    assert_eq!(r.status(), StatusCode::GONE);
    assert_eq!(
        text,
        "session ended: a new publisher took the stream over\n"
    );
    // ...and still answers DELETE once, within the grace period.
    assert_eq!(
        api.call(Method::DELETE, &old).await.0.status(),
        StatusCode::OK
    );
    assert_eq!(
        api.call(Method::DELETE, &old).await.0.status(),
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        api.call(Method::GET, &new).await.0.status(),
        StatusCode::NO_CONTENT
    );
}

#[tokio::test]
async fn unknown_resources_and_routes_are_404() {
    let api = Api::new(Config::for_tests()).await;
    let guessed = format!("/resource/{}", "0".repeat(32));
    assert_eq!(
        api.call(Method::DELETE, &guessed).await.0.status(),
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        api.call(Method::DELETE, "/resource/1").await.0.status(),
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        api.call(Method::GET, "/nope").await.0.status(),
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        api.call(Method::GET, "/healthz").await.0.status(),
        StatusCode::OK
    );
    let (r, page) = api.call(Method::GET, "/").await;
    assert_eq!(r.status(), StatusCode::OK);
    assert!(page.contains("<html"));
    for (path, media_type) in [
        ("/app.js", "text/javascript"),
        ("/whip-client.js", "text/javascript"),
        ("/style.css", "text/css"),
    ] {
        let (r, body) = api.call(Method::GET, path).await;
        assert_eq!(r.status(), StatusCode::OK, "{path}");
        assert!(
            header_of(&r, "content-type").starts_with(media_type),
            "{path}"
        );
        assert!(
            page.contains(path) || path == "/whip-client.js",
            "{path} is linked"
        );
        assert!(!body.is_empty());
    }
}

#[tokio::test]
async fn methods_options_and_cors() {
    let api = Api::new(Config::for_tests()).await;
    for path in ["/whip/s", "/whep/s", "/echo/s"] {
        let (r, _) = api.call(Method::PUT, path).await;
        assert_eq!(r.status(), StatusCode::METHOD_NOT_ALLOWED, "{path}");
        assert!(header_of(&r, "allow").contains("POST"));
        // RFC 9725 §4.1 and the WHEP draft: GET on the endpoint is 2xx with no content.
        let (r, body) = api.call(Method::GET, path).await;
        assert!(r.status().is_success() && body.is_empty(), "{path}");

        let preflight = Request::builder()
            .method(Method::OPTIONS)
            .uri(path)
            .header(header::ORIGIN, "https://player.example")
            .header(header::ACCESS_CONTROL_REQUEST_METHOD, "POST")
            .body(Body::empty())
            .unwrap();
        let (r, _) = api.send(preflight).await;
        assert_eq!(r.status(), StatusCode::NO_CONTENT, "{path}");
        assert_eq!(header_of(&r, "accept-post"), "application/sdp");
        assert_eq!(header_of(&r, "access-control-allow-origin"), "*");
        // PATCH is listed for the sessions the endpoint creates: clients decide to trickle
        // from this list (RFC 9725 §4.3.1 servers that take trickle ICE advertise it).
        let methods = header_of(&r, "access-control-allow-methods");
        assert!(
            methods.contains("POST") && methods.contains("PATCH"),
            "{methods}"
        );
        assert_eq!(
            header_of(&r, "accept-patch"),
            "application/trickle-ice-sdpfrag"
        );
        assert!(!header_of(&r, "allow").contains("PATCH"), "{path}");
        let allowed = header_of(&r, "access-control-allow-headers").to_ascii_lowercase();
        for h in ["authorization", "if-match", "content-type"] {
            assert!(allowed.contains(h), "{allowed}");
        }
    }
    let (r, _) = api.call(Method::HEAD, "/whep/s").await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(header_of(&r, "content-type"), "application/sdp");

    // Exposed headers on the 201, for scripts on other origins.
    let request = Request::post("/whip/cors")
        .header(header::CONTENT_TYPE, "application/sdp")
        .header(header::ORIGIN, "https://player.example")
        .body(Body::from(OFFER))
        .unwrap();
    let (r, _) = api.send(request).await;
    let exposed = header_of(&r, "access-control-expose-headers").to_ascii_lowercase();
    for h in ["location", "etag", "link", "accept-patch"] {
        assert!(exposed.contains(h), "{exposed}");
    }
    assert_eq!(
        header_of(&r, "accept-patch"),
        "application/trickle-ice-sdpfrag"
    );
    let location = header_of(&r, "location").to_owned();
    let etag = header_of(&r, "etag").to_owned();
    // The resource takes PATCH, and says so.
    let (r, _) = api.call(Method::OPTIONS, &location).await;
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    assert!(header_of(&r, "allow").contains("PATCH"));
    assert!(header_of(&r, "access-control-allow-methods").contains("PATCH"));
    assert_eq!(
        header_of(&r, "accept-patch"),
        "application/trickle-ice-sdpfrag"
    );
    let (r, _) = api.call(Method::PUT, &location).await;
    assert_eq!(r.status(), StatusCode::METHOD_NOT_ALLOWED);
    assert!(header_of(&r, "allow").contains("PATCH"));

    // RFC 9725 §4.3: the refusals of PATCH, each with a reason.
    let patch = |uri: &str, content_type: Option<&str>, if_match: Option<&str>, body: Vec<u8>| {
        let mut request = Request::builder().method(Method::PATCH).uri(uri);
        if let Some(t) = content_type {
            request = request.header(header::CONTENT_TYPE, t);
        }
        if let Some(tag) = if_match {
            request = request.header(header::IF_MATCH, tag);
        }
        request.body(Body::from(body)).unwrap()
    };
    const FRAG: &str = "application/trickle-ice-sdpfrag";
    let candidate = b"a=candidate:1 1 udp 2130706431 127.0.0.1 9 typ host\r\n".to_vec();
    let guessed = "/resource/00000000000000000000000000000000";
    for (request, status) in [
        (patch(&location, None, None, candidate.clone()), 415),
        (patch(&location, Some("application/sdp"), None, candidate.clone()), 415),
        (patch(&location, Some(FRAG), None, vec![b'a'; 20_000]), 413),
        (patch(&location, Some(FRAG), None, vec![0xff, 0xfe]), 400),
        (patch(&location, Some(FRAG), None, b"not sdp".to_vec()), 400),
        (patch(&location, Some(FRAG), None, b"a=candidate:x\r\n".to_vec()), 400),
        (patch(&location, Some(FRAG), Some("\"stale\""), candidate.clone()), 412),
        (patch(guessed, Some(FRAG), None, candidate.clone()), 404),
        (patch("/resource/nope", Some(FRAG), None, candidate.clone()), 404),
        // RFC 9725 §4.3.1: a trickle without If-Match is 428; the current ETag or * are fine.
        (patch(&location, Some(FRAG), None, candidate.clone()), 428),
        (patch(&location, Some(FRAG), Some(&etag), candidate.clone()), 204),
        (patch(&location, Some(FRAG), Some("*"), b"a=end-of-candidates\r\n".to_vec()), 204),
        // Candidates of an unknown mid, and duplicates, are ignored, not errors.
        (
            patch(
                &location,
                Some(FRAG),
                Some(&etag),
                b"m=audio 9 UDP/TLS/RTP/SAVPF 0\r\na=mid:nope\r\na=candidate:1 1 udp 1 127.0.0.1 9 typ host\r\n".to_vec(),
            ),
            204,
        ),
        (patch(&location, Some(FRAG), Some(&etag), candidate.clone()), 204),
    ] {
        let (r, text) = api.send(request).await;
        assert_eq!(r.status().as_u16(), status, "{text}");
        if status == 415 {
            // RFC 5789 §2.2: the 415 names the patch document type taken.
            assert_eq!(header_of(&r, "accept-patch"), FRAG);
        }
        if status != 204 {
            assert!(!text.trim().is_empty(), "a reason for {status}");
        } else {
            assert!(text.is_empty() && r.headers().get("etag").is_none());
        }
    }
    // DELETE ignores If-Match; after it, PATCH finds nothing.
    let delete = Request::delete(&location)
        .header(header::IF_MATCH, "\"stale\"")
        .body(Body::empty())
        .unwrap();
    assert_eq!(api.send(delete).await.0.status(), StatusCode::OK);
    let (r, _) = api
        .send(patch(&location, Some(FRAG), None, candidate))
        .await;
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
}

/// CORS on the WHIP, WHEP and echo endpoints and resources only; the page with a
/// Content-Security-Policy that forbids framing and inline scripts; no response type sniffed.
#[tokio::test]
async fn cors_only_where_clients_post_and_the_page_locked_down() {
    let api = Api::new(Config::for_tests()).await;
    let from_elsewhere = |method: Method, path: &str| {
        Request::builder()
            .method(method)
            .uri(path)
            .header(header::ORIGIN, "https://elsewhere.example")
            .body(Body::empty())
            .unwrap()
    };
    for path in [
        "/metrics",
        "/healthz",
        "/readyz",
        "/api/streams",
        "/",
        "/app.js",
    ] {
        let (r, _) = api.send(from_elsewhere(Method::GET, path)).await;
        assert!(
            r.headers().get("access-control-allow-origin").is_none(),
            "{path}: {:?}",
            r.headers()
        );
        assert_eq!(header_of(&r, "x-content-type-options"), "nosniff", "{path}");
    }
    for path in ["/whip/s", "/whep/s", "/echo/s", "/resource/00"] {
        let (r, _) = api.send(from_elsewhere(Method::OPTIONS, path)).await;
        assert_eq!(header_of(&r, "access-control-allow-origin"), "*", "{path}");
    }
    let (page, _) = api.call(Method::GET, "/").await;
    let csp = header_of(&page, "content-security-policy");
    for directive in [
        "default-src 'self'",
        "frame-ancestors 'none'",
        "object-src 'none'",
    ] {
        assert!(csp.contains(directive), "{csp}");
    }
    assert_eq!(header_of(&page, "x-frame-options"), "DENY");
}

#[tokio::test]
async fn configured_origins_only() {
    let mut config = Config::for_tests();
    config.cors_origins = vec!["https://ok.example".into()];
    let api = Api::new(config).await;
    let with_origin = |origin: &'static str| {
        Request::builder()
            .method(Method::OPTIONS)
            .uri("/whip/s")
            .header(header::ORIGIN, origin)
            .body(Body::empty())
            .unwrap()
    };
    let (r, _) = api.send(with_origin("https://ok.example")).await;
    assert_eq!(
        header_of(&r, "access-control-allow-origin"),
        "https://ok.example"
    );
    let (r, _) = api.send(with_origin("https://evil.example")).await;
    assert!(r.headers().get("access-control-allow-origin").is_none());
}

#[tokio::test]
async fn messages_are_in_users_words() {
    let api = Api::new(Config::for_tests()).await;
    // A recvonly offer to the echo endpoint: SDP's own word, and what would fit.
    let (res, text) = api.sdp("/echo/words", RECVONLY_OFFER).await;
    assert_eq!(res.status(), StatusCode::BAD_REQUEST);
    assert!(text.contains("audio is recvonly"), "{text}");
    assert!(text.contains("offer sendrecv"), "{text}");
    // `.` and `..` are path segments clients remove: never stream names.
    for name in [".", ".."] {
        let (res, text) = api.sdp(&format!("/whip/{name}"), OFFER).await;
        assert_eq!(res.status(), StatusCode::BAD_REQUEST, "{name}");
        assert!(text.contains("path segments"), "{text}");
    }
    // Any method the page's files and /healthz do not take: 405 with a reason and Allow.
    for (method, path) in [
        (Method::POST, "/"),
        (Method::DELETE, "/healthz"),
        (Method::PUT, "/app.js"),
    ] {
        let (res, text) = api.call(method.clone(), path).await;
        assert_eq!(
            res.status(),
            StatusCode::METHOD_NOT_ALLOWED,
            "{method} {path}"
        );
        assert_eq!(res.headers()[header::ALLOW], "GET, HEAD");
        assert_eq!(text, "method not allowed\n");
    }
    // The icon browsers ask for on every first load.
    let (res, _) = api.call(Method::GET, "/favicon.ico").await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(res.headers()[header::CONTENT_TYPE], "image/x-icon");
    api.stop.cancel();
}

/// An ES256 JWT for `stream` and `actions`, expiring `exp_in` seconds from now.
fn es256_jwt(stream: &str, actions: &[&str], exp_in: i64) -> String {
    use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let claims = serde_json::json!({ "exp": now + exp_in, "stream": stream, "actions": actions });
    let key = EncodingKey::from_ec_pem(include_bytes!("../data/jwt-es256-private.pem")).unwrap();
    encode(&Header::new(Algorithm::ES256), &claims, &key).unwrap()
}

#[tokio::test]
async fn bearer_tokens_guard_publishing_and_playing() {
    let mut config = Config::for_tests();
    config.access.publish_tokens = vec!["pub-secret@room".into()];
    config.access.play_tokens = vec!["play-secret".into()];
    config.access.jwt_public_key = Some(
        concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/data/jwt-es256-public.pem"
        )
        .into(),
    );
    let api = Api::new(config).await;
    let post = |path: &'static str, token: Option<String>, content_type: &'static str| {
        let mut request = Request::post(path).header(header::CONTENT_TYPE, content_type);
        if let Some(token) = token {
            request = request.header(header::AUTHORIZATION, format!("Bearer {token}"));
        }
        let offer = match path.split('/').nth(1) {
            Some("whep") => RECVONLY_OFFER,
            Some("echo") => STEREO_PCMA_FIRST,
            _ => OFFER,
        };
        request.body(Body::from(offer)).unwrap()
    };
    let www = |r: &Response| {
        r.headers()
            .get(header::WWW_AUTHENTICATE)
            .map(|v| v.to_str().unwrap().to_owned())
    };
    let sdp = "application/sdp";

    // No token: 401 and the challenge (RFC 6750 §3), before the body is even looked at.
    for content_type in [sdp, "text/plain"] {
        let (r, text) = api.send(post("/whip/room", None, content_type)).await;
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED, "{text}");
        assert_eq!(www(&r).as_deref(), Some(r#"Bearer realm="whip-echo""#));
    }
    // A token nobody issued, and an expired JWT: 401 with error="invalid_token".
    for token in ["guess".to_owned(), es256_jwt("*", &["publish"], -300)] {
        let (r, _) = api.send(post("/whip/room", Some(token), sdp)).await;
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(
            www(&r).as_deref(),
            Some(r#"Bearer realm="whip-echo", error="invalid_token""#)
        );
    }
    // Valid tokens for another action or stream: 403 with the reason.
    for (path, token) in [
        ("/whip/room", "play-secret".to_owned()),
        ("/whip/other", "pub-secret".to_owned()),
        ("/echo/room", "play-secret".to_owned()),
        ("/whep/room", "pub-secret".to_owned()),
        ("/whip/room", es256_jwt("room", &["play"], 300)),
        ("/whep/other", es256_jwt("room*", &["play"], 300)),
    ] {
        let (r, text) = api.send(post(path, Some(token), sdp)).await;
        assert_eq!(r.status(), StatusCode::FORBIDDEN, "{path}: {text}");
        assert!(text.starts_with("this token does not allow"), "{text}");
    }
    // The right ones: 201, and the resource URL alone is enough to delete the session.
    for (path, token) in [
        ("/whip/room", "pub-secret".to_owned()),
        ("/whep/room", "play-secret".to_owned()),
        ("/whep/room-2", es256_jwt("room*", &["play"], 300)),
        ("/echo/room", "pub-secret".to_owned()),
    ] {
        let (r, text) = api.send(post(path, Some(token), sdp)).await;
        assert_eq!(r.status(), StatusCode::CREATED, "{path}: {text}");
        let location = header_of(&r, "location").to_owned();
        assert_eq!(
            api.call(Method::DELETE, &location).await.0.status(),
            StatusCode::OK
        );
    }
    // Preflights need no token.
    assert_eq!(
        api.call(Method::OPTIONS, "/whip/room").await.0.status(),
        StatusCode::NO_CONTENT
    );
    api.stop.cancel();
}

#[tokio::test]
async fn ice_servers_are_announced_one_link_field_each() {
    let mut config = Config::for_tests();
    config.turn.ice_servers = vec![
        "stun:stun.example.net".into(),
        "turn:turn.example.net:3478?transport=udp".into(),
    ];
    config.turn.turn_secret = Some("shared".into());
    let api = Api::new(config).await;
    let (created, _) = api.sdp("/whip/linked", OFFER).await;
    let (options, _) = api.call(Method::OPTIONS, "/whip/linked").await;
    for r in [&created, &options] {
        let links = links_of(r);
        assert_eq!(links.len(), 2, "{links:?}");
        assert_eq!(links[0], r#"<stun:stun.example.net>; rel="ice-server""#);
        assert!(
            links[1].starts_with(
                r#"<turn:turn.example.net:3478?transport=udp>; rel="ice-server"; username=""#
            ) && links[1].ends_with(r#""; credential-type="password""#),
            "{}",
            links[1]
        );
        // A username per response, naming the stream.
        assert!(links[1].contains(":linked:"), "{}", links[1]);
    }
    api.stop.cancel();
}

/// The `Link` fields of `response`.
/// The ICE server `Link`s of `response` (RFC 9725 §4.6), in order; a 201's other links (the
/// report's, a viewer's layer) aside.
fn links_of(response: &Response) -> Vec<String> {
    let links = response.headers().get_all(header::LINK).iter();
    let links = links.map(|v| v.to_str().unwrap().to_owned());
    links
        .filter(|l| l.contains(r#"rel="ice-server""#))
        .collect()
}

/// The security review's preflight: with tokens and a TURN secret configured, an OPTIONS from any
/// origin (a CORS preflight, which carries no token) got freshly minted 24 h TURN credentials
/// while a POST without a token got 401. RFC 9725 §4.6: none on a preflight; on another OPTIONS
/// only with a token that may POST there; static TURN credentials never on OPTIONS.
#[tokio::test]
async fn turn_credentials_only_for_whoever_may_post() {
    let mut config = Config::for_tests();
    config.turn.ice_servers = vec![
        "stun:stun.example.net".into(),
        "turn:turn.example.net:3478".into(),
    ];
    config.turn.turn_secret = Some("shared".into());
    config.access.publish_tokens = vec!["pub-secret@room".into()];
    config.access.play_tokens = vec!["play-secret".into()];
    let api = Api::new(config).await;
    let options = |path: &str, headers: &[(&str, &str)]| {
        let mut request = Request::builder().method(Method::OPTIONS).uri(path);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        request.body(Body::empty()).unwrap()
    };
    let preflight = [
        ("origin", "https://anyone.example"),
        ("access-control-request-method", "POST"),
        (
            "access-control-request-headers",
            "authorization, content-type",
        ),
    ];
    let (r, _) = api.send(options("/whip/room", &preflight)).await;
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    assert!(links_of(&r).is_empty(), "a preflight: {:?}", links_of(&r));
    let (r, _) = api.send(options("/whip/room", &[])).await;
    assert!(links_of(&r).is_empty(), "no token: {:?}", links_of(&r));
    let wrong = [("authorization", "Bearer play-secret")];
    let (r, _) = api.send(options("/whip/room", &wrong)).await;
    assert!(
        links_of(&r).is_empty(),
        "a play token on WHIP: {:?}",
        links_of(&r)
    );
    let other = [("authorization", "Bearer pub-secret")];
    let (r, _) = api.send(options("/whip/elsewhere", &other)).await;
    assert!(
        links_of(&r).is_empty(),
        "another stream's: {:?}",
        links_of(&r)
    );
    // The token that may publish `room` gets both servers, with credentials of its own.
    let (r, _) = api.send(options("/whip/room", &other)).await;
    let links = links_of(&r);
    assert_eq!(links.len(), 2, "{links:?}");
    assert!(
        links[1].contains("username=\"") && links[1].contains(":room:"),
        "{links:?}"
    );
    let (again, _) = api.send(options("/whip/room", &other)).await;
    assert_ne!(links_of(&again)[1], links[1], "a username per response");
    let (r, _) = api
        .send(options(
            "/whep/room",
            &[("authorization", "Bearer play-secret")],
        ))
        .await;
    assert_eq!(links_of(&r).len(), 2);
    api.stop.cancel();

    // Static credentials: on the 201 of a POST only.
    let mut config = Config::for_tests();
    config.turn.ice_servers = vec![
        "stun:stun.example.net".into(),
        "turn:turn.example.net:3478".into(),
    ];
    config.turn.turn_username = Some("user".into());
    config.turn.turn_password = Some("pass".into());
    let api = Api::new(config).await;
    let (r, _) = api.send(options("/whip/room", &[])).await;
    assert_eq!(
        links_of(&r),
        vec![r#"<stun:stun.example.net>; rel="ice-server""#]
    );
    let (created, _) = api.sdp("/whip/room", OFFER).await;
    assert_eq!(created.status(), StatusCode::CREATED);
    assert!(links_of(&created)[1].contains(r#"username="user""#));
    api.stop.cancel();
}
