//! Every hostile HTTP input we could think of, against a real server over real sockets: each gets
//! its 4xx with a plain-text reason (never a 5xx), nothing is left behind, and a normal echo
//! session works afterwards.

use crate::support;

use reqwest::Method;
use support::client::{Mode, Options};
use support::{start, wait_idle, WAIT};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use whip_echo::config::Config;

const OFFER: &str = include_str!("../data/offer.sdp");
const SDP: Option<&str> = Some("application/sdp");

/// `OFFER` with `from` replaced by `to` (once).
fn edit(from: &str, to: &str) -> String {
    assert!(OFFER.contains(from), "{from}");
    OFFER.replacen(from, to, 1)
}

/// `OFFER` with `extra` inserted after its `a=mid:0` line.
fn with_lines(extra: &str) -> String {
    edit("a=mid:0\r\n", &format!("a=mid:0\r\n{extra}"))
}

struct Case {
    name: &'static str,
    method: Method,
    path: String,
    content_type: Option<&'static str>,
    body: Vec<u8>,
    status: u16,
}

fn case(
    name: &'static str,
    method: Method,
    path: impl Into<String>,
    content_type: Option<&'static str>,
    body: impl Into<Vec<u8>>,
    status: u16,
) -> Case {
    Case {
        name,
        method,
        path: path.into(),
        content_type,
        body: body.into(),
        status,
    }
}

fn offers() -> Vec<Case> {
    let post = |name, body: Vec<u8>, status| case(name, Method::POST, "/whip/h", SDP, body, status);
    let many_sections: String = (0..1000)
        .map(|i| format!("m=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=mid:{i}\r\n"))
        .collect();
    vec![
        post("empty body", vec![], 400),
        post("10 MB body", vec![b'v'; 10 * 1024 * 1024], 413),
        post("binary", (0..=255u8).cycle().take(4096).collect(), 400),
        post("not UTF-8", b"v=0\r\n\xff\xfe\xfd\r\n".to_vec(), 400),
        post(
            "no m-lines",
            b"v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\n".to_vec(),
            400,
        ),
        post(
            "1,000 m-lines",
            format!("{OFFER}{many_sections}").into_bytes(),
            400,
        ),
        post(
            "a 100 KB attribute line",
            with_lines(&format!("a=x-junk:{}\r\n", "j".repeat(100_000))).into_bytes(),
            400,
        ),
        post(
            "two ICE ufrags",
            with_lines("a=ice-ufrag:Other\r\n").into_bytes(),
            400,
        ),
        post(
            "two ICE passwords",
            with_lines("a=ice-pwd:AnotherPasswordOf22Chars\r\n").into_bytes(),
            400,
        ),
        post(
            "conflicting sha-256 fingerprints",
            with_lines(&format!(
                "a=fingerprint:sha-256 {}\r\n",
                ["00"; 32].join(":")
            ))
            .into_bytes(),
            400,
        ),
        post(
            "bogus fingerprint",
            edit("a=fingerprint:sha-256 3A:1F", "a=fingerprint:sha-256 ZZ:1F").into_bytes(),
            400,
        ),
        post(
            "fingerprint with an unknown hash",
            edit("a=fingerprint:sha-256", "a=fingerprint:sha-1024").into_bytes(),
            400,
        ),
        post(
            "ufrag too short",
            edit("a=ice-ufrag:Xk3d", "a=ice-ufrag:Xk").into_bytes(),
            400,
        ),
        post(
            "no ICE credentials",
            edit("a=ice-pwd:9fK2mQ8sLr4TzP1vWc7nYb0e\r\n", "")
                .replacen("a=ice-ufrag:Xk3d\r\n", "", 1)
                .into_bytes(),
            400,
        ),
        post(
            "no fingerprint",
            OFFER
                .lines()
                .filter(|l| !l.starts_with("a=fingerprint"))
                .map(|l| format!("{l}\r\n"))
                .collect::<String>()
                .into_bytes(),
            400,
        ),
        post(
            "no setup role",
            edit("a=setup:actpass\r\n", "").into_bytes(),
            201,
        ),
        post(
            "setup holdconn",
            edit("a=setup:actpass", "a=setup:holdconn").into_bytes(),
            400,
        ),
        post(
            "SDP cut in half",
            OFFER.as_bytes()[..OFFER.len() / 2].to_vec(),
            400,
        ),
    ]
}

fn requests() -> Vec<Case> {
    let offer = || OFFER.as_bytes().to_vec();
    vec![
        case(
            "no Content-Type",
            Method::POST,
            "/whip/h",
            None,
            offer(),
            415,
        ),
        case(
            "Content-Type text/plain",
            Method::POST,
            "/whip/h",
            Some("text/plain"),
            offer(),
            415,
        ),
        case(
            "Content-Type application/sdpx",
            Method::POST,
            "/whip/h",
            Some("application/sdpx"),
            offer(),
            415,
        ),
        case(
            "Content-Type garbage",
            Method::POST,
            "/whip/h",
            Some(";;;/"),
            offer(),
            415,
        ),
        case(
            "stream name of 128 characters",
            Method::POST,
            format!("/whip/{}", "n".repeat(128)),
            SDP,
            offer(),
            201,
        ),
        case(
            "stream name of 129 characters",
            Method::POST,
            format!("/whip/{}", "n".repeat(129)),
            SDP,
            offer(),
            400,
        ),
        case(
            "stream name with a NUL",
            Method::POST,
            "/whip/a%00b",
            SDP,
            offer(),
            400,
        ),
        case(
            "stream name with a space",
            Method::POST,
            "/whip/a%20b",
            SDP,
            offer(),
            400,
        ),
        case(
            "stream name with a slash",
            Method::POST,
            "/whip/a%2Fb",
            SDP,
            offer(),
            400,
        ),
        case(
            "empty stream name",
            Method::POST,
            "/whip/",
            SDP,
            offer(),
            404,
        ),
        case(
            "guessed resource id",
            Method::DELETE,
            format!("/resource/{}", "0".repeat(32)),
            None,
            vec![],
            404,
        ),
        case(
            "resource id of 10,000 characters",
            Method::DELETE,
            format!("/resource/{}", "f".repeat(10_000)),
            None,
            vec![],
            404,
        ),
        case(
            "resource id not hex",
            Method::GET,
            "/resource/zz%ff",
            None,
            vec![],
            400,
        ),
        case(
            "PATCH of a guessed resource",
            Method::PATCH,
            "/resource/00112233445566778899aabbccddeeff",
            Some("application/trickle-ice-sdpfrag"),
            b"a=end-of-candidates\r\n".to_vec(),
            404,
        ),
        case(
            "PUT on an endpoint",
            Method::PUT,
            "/whip/h",
            SDP,
            offer(),
            405,
        ),
        case(
            "DELETE on an endpoint",
            Method::DELETE,
            "/whep/h",
            None,
            vec![],
            405,
        ),
        case("POST to the page", Method::POST, "/", SDP, offer(), 405),
        case(
            "unknown path",
            Method::GET,
            "/admin/../../etc/passwd",
            None,
            vec![],
            404,
        ),
    ]
}

#[tokio::test]
async fn every_hostile_request_gets_its_4xx_with_a_reason_and_the_server_still_echoes() {
    let server = start(Config::for_tests()).await;
    let base = server.base_url();
    let http = reqwest::Client::new();
    let mut created = Vec::new();
    for c in offers().into_iter().chain(requests()) {
        let mut request = http.request(c.method.clone(), format!("{base}{}", c.path));
        if let Some(ct) = c.content_type {
            request = request.header("content-type", ct);
        }
        let response = request.body(c.body).send().await.unwrap();
        let status = response.status().as_u16();
        if let Some(location) = response.headers().get("location") {
            created.push(location.to_str().unwrap().to_owned());
        }
        let text = response.text().await.unwrap_or_default();
        assert_eq!(status, c.status, "{}: {text}", c.name);
        assert!(status < 500, "{}: {status}", c.name);
        if status >= 400 {
            assert!(
                !text.trim().is_empty() && text.len() < 400,
                "{}: a short reason, got {text:?}",
                c.name
            );
        }
    }

    // Deleted resources: PATCH and a second DELETE are 404, not a crash.
    let first = created.first().expect("a created session").clone();
    assert_eq!(
        http.delete(format!("{base}{first}"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    for method in [Method::DELETE, Method::PATCH, Method::GET] {
        let status = http
            .request(method.clone(), format!("{base}{first}"))
            .header("content-type", "application/trickle-ice-sdpfrag")
            .body("a=end-of-candidates\r\n")
            .send()
            .await
            .unwrap()
            .status()
            .as_u16();
        // GET says for 60 s that the session ended (410); DELETE and PATCH find nothing.
        let expected = if method == Method::GET { 410 } else { 404 };
        assert_eq!(status, expected, "{method} after DELETE");
    }
    for location in &created[1..] {
        assert_eq!(
            http.delete(format!("{base}{location}"))
                .send()
                .await
                .unwrap()
                .status(),
            200
        );
    }

    // Huge headers, over raw TCP (clients refuse to send them): 431.
    let mut raw = tokio::net::TcpStream::connect(server.http_addr)
        .await
        .unwrap();
    let head = format!(
        "GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n",
        "h".repeat(200_000)
    );
    let _ = raw.write_all(head.as_bytes()).await;
    let mut got = Vec::new();
    let _ = tokio::time::timeout(WAIT, raw.read_to_end(&mut got)).await;
    assert!(
        got.starts_with(b"HTTP/1.1 431"),
        "{}",
        String::from_utf8_lossy(&got)
    );

    // Still serving, with nothing left of any of it.
    wait_idle(&server).await;
    let mut client = support::connected(
        &format!("{base}/echo/after"),
        Mode::SendRecv,
        Options::default(),
    )
    .await;
    client.send(b"still here");
    assert_eq!(&client.next_packet(WAIT).await.payload[..], b"still here");
    support::delete_all_and_stop(server, vec![client]).await;
}

/// `n` UDP sinks on loopback, and `a=candidate` lines naming them.
fn sinks(n: usize) -> (Vec<std::net::UdpSocket>, String) {
    let sinks: Vec<std::net::UdpSocket> = (0..n)
        .map(|_| {
            let sink = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
            sink.set_nonblocking(true).unwrap();
            sink
        })
        .collect();
    let mut lines = String::new();
    for (i, sink) in sinks.iter().enumerate() {
        let port = sink.local_addr().unwrap().port();
        lines.push_str(&format!(
            "a=candidate:{i} 1 udp 2122260223 127.0.0.1 {port} typ host\r\n"
        ));
    }
    (sinks, lines)
}

/// How many of `sinks` heard anything, and how many datagrams they heard in all.
fn drain(sinks: &[std::net::UdpSocket]) -> (usize, usize) {
    let (mut reached, mut received) = (0, 0);
    let mut buf = [0u8; 1500];
    for sink in sinks {
        let before = received;
        while sink.recv_from(&mut buf).is_ok() {
            received += 1;
        }
        reached += usize::from(received > before);
    }
    (reached, received)
}

/// POSTs a WHIP offer naming `candidates` to `/whip/{stream}`; 201.
async fn post_with_candidates(server: &whip_echo::server::Running, stream: &str, candidates: &str) {
    let created = reqwest::Client::new()
        .post(format!("{}/whip/{stream}", server.base_url()))
        .header("content-type", "application/sdp")
        .body(with_lines(candidates))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201);
}

/// The review's amplification: one offer naming 2,000 candidates at a UDP sink made the server
/// send 16,000 Binding requests there. A session takes at most 24 remote candidates from its
/// offer, and rtc-ice checks each at most 8 times: at most 24 of 2,000 sinks hear from it.
#[tokio::test]
async fn an_offer_of_2000_candidates_is_no_amplifier() {
    let (sinks, lines) = sinks(2000);
    assert!(with_lines(&lines).len() < 128 * 1024);
    let mut config = Config::for_tests();
    config.ice_timeout = std::time::Duration::from_secs(2);
    let server = start(config).await;
    // Another session echoes meanwhile: every packet comes back (its RTT is printed).
    let mut bystander = support::connected(
        &format!("{}/echo/bystander", server.base_url()),
        Mode::SendRecv,
        Options::default(),
    )
    .await;
    post_with_candidates(&server, "sink", &lines).await;
    let worst = support::worst_echo(&mut bystander, "bystander").await;
    eprintln!("bystander's echo RTT during the attack: at most {worst:?} (20 packets)");
    assert_eq!(bystander.delete().await, 200);
    bystander.close().await;
    // Nobody answers the sinks' session: it ends at its setup deadline, its checks with it.
    support::wait_reaped(&server).await;
    let (reached, received) = drain(&sinks);
    assert!(reached <= 24, "{reached} sinks reached");
    assert!(received <= 24 * 8, "{received} datagrams at the sinks");
    assert!(received > 0, "the kept candidates were checked");
    let text = support::get_text(&format!("{}/metrics", server.base_url())).await;
    let ignored = support::metric(&text, "whip_echo_remote_candidates_ignored_total");
    assert!(ignored >= 2000.0 - 24.0, "{text}");
    server.shutdown().await.unwrap();
}

/// Many sessions, each with its 24 candidates at addresses that never answer: the loop sends
/// them at most `--unanswered-checks-per-second` checks a second (twice that at once), counted
/// as dropped beyond it.
#[tokio::test]
async fn checks_to_addresses_that_never_answer_have_a_budget() {
    let (sinks, lines) = sinks(240);
    let mut config = Config::for_tests();
    config.ice_timeout = std::time::Duration::from_secs(2);
    config.unanswered_checks_per_second = 20;
    let server = start(config).await;
    let batches: Vec<&str> = lines.split_inclusive("\r\n").collect();
    for (i, batch) in batches.chunks(24).enumerate() {
        post_with_candidates(&server, &format!("sink{i}"), &batch.concat()).await;
    }
    support::wait_reaped(&server).await;
    let (_, received) = drain(&sinks);
    // 40 at once, then 20 a second for the ~2 s the sessions live (and some slack).
    assert!(received <= 40 + 20 * 4, "{received} datagrams at the sinks");
    let text = support::get_text(&format!("{}/metrics", server.base_url())).await;
    let dropped = support::metric(
        &text,
        r#"whip_echo_dropped_packets_total{cause="check_budget"}"#,
    );
    assert!(dropped > 0.0, "{text}");
    server.shutdown().await.unwrap();
}

/// The review's path takeover: a client with a session of its own sent a valid check of that
/// session "from" a victim's address; the server's answer to it moved the victim's path to the
/// attacker's session, and the victim's media went there until its next consent check. Now only
/// an answer to a session's own check moves a path. The spoofed source needs a raw socket
/// (CAP_NET_RAW, so root): skipped with a message otherwise.
#[tokio::test]
async fn a_spoofed_check_of_another_session_does_not_take_the_victims_path() {
    use socket2::{Domain, Protocol, Socket, Type};
    let raw = match Socket::new(Domain::IPV4, Type::RAW, Some(Protocol::UDP)) {
        Ok(raw) => raw,
        Err(e) => {
            eprintln!("skipped: spoofing a source port needs a raw socket (root): {e}");
            return;
        }
    };
    let server = start(Config::for_tests()).await;
    let base = server.base_url();
    let mut victim = support::connected(
        &format!("{base}/echo/victim"),
        Mode::SendRecv,
        Options::default(),
    )
    .await;
    let created = reqwest::Client::new()
        .post(format!("{base}/whip/attacker"))
        .header("content-type", "application/sdp")
        .body(OFFER)
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201);
    let (ufrag, pwd) = support::credentials(&created.text().await.unwrap());
    let server_udp = server.media.udp_addrs()[0];
    for round in 0..5 {
        // The attacker's own, valid check, as a UDP datagram from the victim's port (the
        // kernel writes the IP header: both are 127.0.0.1).
        let check = support::signed_check(&ufrag, &pwd);
        let mut datagram = Vec::with_capacity(8 + check.len());
        datagram.extend_from_slice(&victim.local.port().to_be_bytes());
        datagram.extend_from_slice(&server_udp.port().to_be_bytes());
        datagram.extend_from_slice(&(8 + check.len() as u16).to_be_bytes());
        datagram.extend_from_slice(&[0, 0]); // no checksum (IPv4)
        datagram.extend_from_slice(&check);
        raw.send_to(&datagram, &server_udp.into()).unwrap();
        // The victim's very next packet still reaches its own session, and comes back.
        let marker = format!("after-spoof-{round}");
        victim.send(marker.as_bytes());
        loop {
            let echoed = victim.next_packet(WAIT).await;
            if echoed.payload[..] == *marker.as_bytes() {
                break;
            }
        }
    }
    assert_eq!(victim.delete().await, 200);
    victim.close().await;
    server.shutdown().await.unwrap();
}

/// RFC 7675 §5.1: consent is a valid answer to the server's own check. A client that is gone,
/// whose address keeps sending Binding indications and requests that fail their integrity check
/// (anyone on that address can), no longer keeps its session alive: it ends within the ICE
/// timeout.
#[tokio::test]
async fn unauthenticated_stun_from_a_departed_clients_address_keeps_nothing_alive() {
    let mut config = Config::for_tests();
    config.ice_timeout = std::time::Duration::from_secs(2);
    let server = start(config).await;
    let base = server.base_url();
    let victim = support::connected(
        &format!("{base}/echo/departed"),
        Mode::SendRecv,
        Options::default(),
    )
    .await;
    let (ufrag, _) = support::credentials(&victim.answer);
    let resource = victim.resource_url.clone();
    let address = victim.local;
    victim.vanish().await;
    // Its address now sends only what anyone there could.
    let socket = tokio::net::UdpSocket::bind(address).await.unwrap();
    let server_udp = server.media.udp_addrs()[0];
    let noise = async {
        let mut every = tokio::time::interval(std::time::Duration::from_millis(100));
        for n in 0u32.. {
            every.tick().await;
            let mut indication = vec![0x00, 0x11, 0, 0, 0x21, 0x12, 0xA4, 0x42];
            indication.extend_from_slice(&[0; 8]);
            indication.extend_from_slice(&n.to_be_bytes());
            let forged = support::signed_check(&ufrag, "not-the-password-not-the-pw");
            for datagram in [indication, forged] {
                socket.send_to(&datagram, server_udp).await.unwrap();
            }
        }
    };
    let mut stats = server.media.stats();
    let ended = stats.wait_for(|s| s.sessions == 0);
    tokio::select! {
        _ = noise => unreachable!(),
        ended = tokio::time::timeout(WAIT, ended) => {
            ended.expect("the session ends").expect("media loop alive");
        }
    }
    let gone = reqwest::get(&resource).await.unwrap();
    assert_eq!(gone.status(), 410);
    let reason = gone.text().await.unwrap();
    assert!(reason.contains("lost contact"), "{reason}");
    server.shutdown().await.unwrap();
}
