//! ICE-TCP on the shared port and on the HTTP port, from the outside: what a client that is not
//! a session gets (the media path itself is proven with Chromium in `browser/`).

use crate::support;

use std::time::Duration;

use rtc::stun::attributes::ATTR_USERNAME;
use rtc::stun::message::{Message, Setter, TransactionId, BINDING_REQUEST};
use rtc::stun::textattrs::Username;
use support::{
    closed_by_server, connect_from, credentials, get_text, metric, start, tcp_closed, WAIT,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use whip_echo::config::Config;

/// An RFC 4571 frame holding a STUN Binding request for local ufrag `ufrag`.
fn framed_request(ufrag: &str) -> Vec<u8> {
    let mut m = Message::new();
    let setters: Vec<Box<dyn Setter>> = vec![
        Box::new(BINDING_REQUEST),
        Box::new(TransactionId::new()),
        Box::new(Username::new(ATTR_USERNAME, format!("{ufrag}:client"))),
    ];
    m.build(&setters).unwrap();
    let mut framed = (m.raw.len() as u16).to_be_bytes().to_vec();
    framed.extend_from_slice(&m.raw);
    framed
}

/// An RFC 4571 frame holding a controlling connectivity check for `ufrag`, signed with `pwd`.
fn framed_check(ufrag: &str, pwd: &str) -> Vec<u8> {
    let check = support::signed_check(ufrag, pwd);
    let mut framed = (check.len() as u16).to_be_bytes().to_vec();
    framed.extend_from_slice(&check);
    framed
}

#[tokio::test]
async fn connections_that_are_no_session_are_closed_and_http_still_works() {
    let server = start(Config::for_tests()).await;
    let tcp = server.media.tcp_addr();
    let http = server.http_addr;

    // On the ICE-TCP port: junk, and a request for a ufrag of loop 0 that no session has.
    for first in [vec![0, 3, 1, 2, 3], framed_request("00ffffffffffffff")] {
        let mut stream = TcpStream::connect(tcp).await.unwrap();
        stream.write_all(&first).await.unwrap();
        assert!(closed_by_server(stream).await, "{first:?}");
    }
    // On the HTTP port: the same stale request is closed too, and a byte that is neither HTTP
    // nor ICE-TCP (TLS's 0x16 here) as well.
    for first in [framed_request("00ffffffffffffff"), vec![0x16, 3, 1, 0, 5]] {
        let mut stream = TcpStream::connect(http).await.unwrap();
        stream.write_all(&first).await.unwrap();
        assert!(closed_by_server(stream).await, "{first:?}");
    }
    // HTTP on the shared port is unaffected.
    let health = reqwest::Client::new()
        .get(format!("{}/healthz", server.base_url()))
        .timeout(Duration::from_secs(15))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), 200);
    server.shutdown().await.unwrap();
}

/// POSTs `tests/data/offer.sdp` to `/whip/{stream}` and checks the 201.
async fn publish(server: &whip_echo::server::Running, stream: &str) -> reqwest::Response {
    let created = reqwest::Client::new()
        .post(format!("{}/whip/{stream}", server.base_url()))
        .header("content-type", "application/sdp")
        .body(include_str!("../data/offer.sdp"))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201);
    created
}

/// The TCP candidates of an answer, as (address, port).
fn tcp_candidates(answer: &str) -> Vec<(String, u16)> {
    answer
        .lines()
        .filter_map(|l| l.strip_prefix("a=candidate:"))
        .filter(|c| c.contains(" tcp ") && c.contains("tcptype passive"))
        .filter_map(|c| {
            let f: Vec<&str> = c.split_whitespace().collect();
            Some((f.get(4)?.to_string(), f.get(5)?.parse().ok()?))
        })
        .collect()
}

#[tokio::test]
async fn public_tcp_addresses_are_announced_after_the_others() {
    let mut config = Config::for_tests();
    config.public_tcp = vec!["127.0.0.1:19999".into(), "localhost:20000".into()];
    let server = start(config).await;
    let created = publish(&server, "mapped").await;
    let candidates = tcp_candidates(&created.text().await.unwrap());
    let ports: Vec<u16> = candidates.iter().map(|(_, p)| *p).collect();
    let tcp_port = server.media.tcp_addr().port();
    let http_port = server.http_addr.port();
    // The shared ICE-TCP port, the HTTP port, then the public ones in the order given (a host
    // name resolved at start-up).
    assert_eq!(ports, [tcp_port, http_port, 19999, 20000], "{candidates:?}");
    assert_eq!(candidates[2].0, "127.0.0.1");
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn an_unresolvable_public_tcp_address_is_refused_at_start() {
    let mut config = Config::for_tests();
    config.public_tcp = vec!["no-port-here".into()];
    let listener = tokio::net::TcpListener::bind(config.listen).await.unwrap();
    let result = whip_echo::server::spawn(listener, config).await;
    assert!(
        matches!(result, Err(whip_echo::server::ServerError::Config(_))),
        "{:?}",
        result.err()
    );
}

#[tokio::test]
async fn a_sessions_tcp_connection_ends_with_the_session() {
    let server = start(Config::for_tests()).await;
    let http = reqwest::Client::new();
    let created = publish(&server, "tcp-owner").await;
    let location = created.headers()["location"].to_str().unwrap().to_owned();
    let (ufrag, pwd) = credentials(&created.text().await.unwrap());
    // A valid connectivity check over TCP: the server answers it, so the loop owns the
    // connection before the session is deleted, and nothing more is sent on it afterwards (so
    // only the teardown can close it).
    let mut stream = TcpStream::connect(server.media.tcp_addr()).await.unwrap();
    stream.write_all(&framed_check(&ufrag, &pwd)).await.unwrap();
    let mut head = [0u8; 4];
    tokio::time::timeout(WAIT, stream.read_exact(&mut head))
        .await
        .expect("the check is answered")
        .unwrap();
    assert_eq!(&head[2..4], &[0x01, 0x01], "a Binding success");
    let len = u16::from_be_bytes([head[0], head[1]]) as usize;
    let mut rest = vec![0u8; len - 2];
    stream.read_exact(&mut rest).await.unwrap();
    let deleted = http
        .delete(format!("{}{location}", server.base_url()))
        .send()
        .await
        .unwrap();
    assert_eq!(deleted.status(), 200);
    assert!(closed_by_server(stream).await, "closed with its session");
    server.shutdown().await.unwrap();
}

/// Reads one RFC 4571 frame and checks that it is a Binding success.
async fn expect_binding_success(stream: &mut TcpStream) {
    let len = tokio::time::timeout(WAIT, stream.read_u16())
        .await
        .expect("the check is answered")
        .unwrap();
    let mut packet = vec![0u8; usize::from(len)];
    stream.read_exact(&mut packet).await.unwrap();
    assert_eq!(&packet[..2], &[0x01, 0x01], "a Binding success");
}

#[tokio::test]
async fn a_check_dribbled_byte_by_byte_onto_the_http_port_is_answered() {
    let server = start(Config::for_tests()).await;
    let (ufrag, pwd) = credentials(&publish(&server, "dribble").await.text().await.unwrap());
    // One byte per write, each its own segment: the classifier sees a lone 0x00 first, and the
    // framing reader gets the frame in 100-odd pieces.
    let mut stream = TcpStream::connect(server.http_addr).await.unwrap();
    stream.set_nodelay(true).unwrap();
    for byte in framed_check(&ufrag, &pwd) {
        stream.write_all(&[byte]).await.unwrap();
        stream.flush().await.unwrap();
        tokio::task::yield_now().await;
    }
    expect_binding_success(&mut stream).await;
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn silent_connections_hold_nothing_up_and_are_closed() {
    let server = start(Config::for_tests()).await;
    // Connections that never send a byte (browsers open speculative ones), on both ports.
    let mut silent = Vec::new();
    for addr in [server.http_addr, server.media.tcp_addr()] {
        for _ in 0..20 {
            silent.push(TcpStream::connect(addr).await.unwrap());
        }
    }
    // Meanwhile HTTP is served and an ICE check is answered, on each port.
    let (ufrag, pwd) = credentials(
        &publish(&server, "beside-silence")
            .await
            .text()
            .await
            .unwrap(),
    );
    for addr in [server.http_addr, server.media.tcp_addr()] {
        let mut stream = TcpStream::connect(addr).await.unwrap();
        stream.write_all(&framed_check(&ufrag, &pwd)).await.unwrap();
        expect_binding_success(&mut stream).await;
    }
    // And the silent ones are closed (after the classifier's and the first frame's 3 s waits).
    for stream in silent {
        assert!(
            closed_by_server(stream).await,
            "a silent connection is closed"
        );
    }
    server.shutdown().await.unwrap();
}

/// What the server does with a connection that sent a check: `Some(true)` when it answers with
/// a Binding success, `Some(false)` when it closes the connection unanswered, `None` when it
/// does neither within `WAIT`.
async fn answered(stream: &mut TcpStream) -> Option<bool> {
    match tokio::time::timeout(WAIT, stream.read_u16()).await {
        Err(_) => None,
        Ok(Err(_)) => Some(false),
        Ok(Ok(len)) => {
            let mut packet = vec![0u8; usize::from(len)];
            stream.read_exact(&mut packet).await.ok()?;
            Some(packet[..2] == [0x01, 0x01])
        }
    }
}

/// A connection from `from` to the ICE-TCP port that sent a check for `(ufrag, pwd)`.
async fn checking(
    server: &whip_echo::server::Running,
    from: [u8; 4],
    (ufrag, pwd): &(String, String),
) -> TcpStream {
    let mut stream = connect_from(from, server.media.tcp_addr()).await;
    stream.write_all(&framed_check(ufrag, pwd)).await.unwrap();
    stream
}

/// The review's reproduction: 1,500 connections that each name a live session's ufrag with a
/// forged MESSAGE-INTEGRITY were all held (30 s each, renewed by every frame). Now one client
/// holds at most its share of unanswered connections, and each is closed when its session has
/// not answered within the setup wait.
#[tokio::test]
async fn connections_with_forged_checks_are_few_and_closed_within_the_setup_wait() {
    let server = start(Config::for_tests()).await;
    let (ufrag, _) = credentials(&publish(&server, "victim").await.text().await.unwrap());
    let forged = (ufrag, "not-the-password-not-the-pw".to_owned());
    let mut held = Vec::new();
    for _ in 0..1500 {
        held.push(checking(&server, [127, 0, 0, 2], &forged).await);
    }
    let metrics = format!("{}/metrics", server.base_url());
    let text = get_text(&metrics).await;
    let pending = metric(
        &text,
        r#"whip_echo_tcp_connections_pending{listener="ice_tcp"}"#,
    );
    assert!(pending <= 32.0, "{pending} unanswered held\n{text}");
    assert_eq!(metric(&text, "whip_echo_ice_tcp_connections"), 0.0);
    for stream in held {
        assert!(closed_by_server(stream).await, "closed");
    }
    let text = get_text(&metrics).await;
    let closed = |cause: &str| tcp_closed(&text, cause);
    assert!(closed("unanswered") >= 1.0, "{text}");
    assert!(
        closed("pending_per_ip") + closed("unanswered") >= 1500.0,
        "{text}"
    );
    server.shutdown().await.unwrap();
}

/// A session holds at most `--max-ice-tcp-connections-per-session` connections and a client
/// `--max-ice-tcp-connections-per-ip`; one beyond either is closed instead of answered.
#[tokio::test]
async fn sessions_and_clients_hold_at_most_their_ice_tcp_connections() {
    let mut config = Config::for_tests();
    config.max_ice_tcp_connections_per_session = 2;
    config.max_ice_tcp_connections_per_ip = 3;
    let server = start(config).await;
    let one = credentials(&publish(&server, "one").await.text().await.unwrap());
    let two = credentials(&publish(&server, "two").await.text().await.unwrap());
    let local = [127, 0, 0, 1];
    let mut open = Vec::new();
    for _ in 0..2 {
        let mut stream = checking(&server, local, &one).await;
        assert_eq!(answered(&mut stream).await, Some(true));
        open.push(stream);
    }
    let mut third = checking(&server, local, &one).await;
    assert_eq!(
        answered(&mut third).await,
        Some(false),
        "over the session's"
    );
    // 127.0.0.1 holds two; session two takes one more, the client's third.
    let mut stream = checking(&server, local, &two).await;
    assert_eq!(answered(&mut stream).await, Some(true));
    open.push(stream);
    let mut fourth = checking(&server, local, &two).await;
    assert_eq!(
        answered(&mut fourth).await,
        Some(false),
        "over the client's"
    );
    // Another client is not held to 127.0.0.1's share.
    let mut other = checking(&server, [127, 0, 0, 2], &two).await;
    assert_eq!(answered(&mut other).await, Some(true));
    open.push(other);
    let text = get_text(&format!("{}/metrics", server.base_url())).await;
    let closed = |cause: &str| tcp_closed(&text, cause);
    assert_eq!(closed("ice_tcp_per_session"), 1.0, "{text}");
    assert_eq!(closed("ice_tcp_per_ip"), 1.0, "{text}");
    assert_eq!(
        metric(&text, "whip_echo_ice_tcp_connections"),
        4.0,
        "{text}"
    );
    server.shutdown().await.unwrap();
}
