//! The HTTP plane's limits against a real server on loopback: sessions per client IP (429),
//! open connections (503), slow headers and idle keep-alive (closed), slow bodies (408) and
//! oversized request heads (431).

mod support;

use std::time::Duration;

use support::{start, wait_idle, WAIT};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use whip_echo::config::Config;

const OFFER: &str = include_str!("data/offer.sdp");

/// POSTs the (sendonly) offer to `/whip/{stream}`, with `X-Forwarded-For: forwarded` if given.
async fn post(
    http: &reqwest::Client,
    base: &str,
    stream: &str,
    forwarded: Option<&str>,
) -> reqwest::Response {
    let mut request = http
        .post(format!("{base}/whip/{stream}"))
        .header("content-type", "application/sdp")
        .body(OFFER);
    if let Some(ip) = forwarded {
        request = request.header("x-forwarded-for", ip);
    }
    request.send().await.unwrap()
}

async fn delete(http: &reqwest::Client, base: &str, created: &reqwest::Response) {
    let location = created.headers()["location"].to_str().unwrap();
    let status = http
        .delete(format!("{base}{location}"))
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(status, 200);
}

#[tokio::test]
async fn sessions_per_client_ip_are_capped_with_429_and_given_back() {
    let mut config = Config::for_tests();
    config.max_sessions_per_ip = 2;
    let server = start(config).await;
    let base = server.base_url();
    let http = reqwest::Client::new();
    let a = post(&http, &base, "a", None).await;
    let b = post(&http, &base, "b", None).await;
    assert_eq!((a.status().as_u16(), b.status().as_u16()), (201, 201));
    let refused = post(&http, &base, "c", None).await;
    assert_eq!(refused.status(), 429);
    assert_eq!(refused.headers()["retry-after"], "5");
    let reason = refused.text().await.unwrap();
    assert!(
        reason.contains("too many sessions from your address"),
        "{reason}"
    );
    // Without --client-ip-header the header is the client's word, not taken: still refused.
    assert_eq!(
        post(&http, &base, "c", Some("198.51.100.7")).await.status(),
        429
    );
    // An ended session gives its place back.
    delete(&http, &base, &a).await;
    let c = post(&http, &base, "c", None).await;
    assert_eq!(c.status(), 201);
    for created in [&b, &c] {
        delete(&http, &base, created).await;
    }
    wait_idle(&server).await;
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn behind_a_proxy_the_client_ip_comes_from_the_configured_header() {
    let mut config = Config::for_tests();
    config.max_sessions_per_ip = 1;
    config.client_ip_header = Some("X-Forwarded-For".into());
    let server = start(config).await;
    let base = server.base_url();
    let http = reqwest::Client::new();
    // The last entry is the one the proxy wrote; what the client put before it is not trusted.
    let one = post(&http, &base, "a", Some("10.9.9.9, 198.51.100.7")).await;
    assert_eq!(one.status(), 201);
    let same = post(&http, &base, "b", Some("10.8.8.8, 198.51.100.7")).await;
    assert_eq!(same.status(), 429);
    // With a port, as some proxies write it: the same client.
    let with_port = post(&http, &base, "b", Some("198.51.100.7:51234")).await;
    assert_eq!(with_port.status(), 429);
    let other = post(&http, &base, "b", Some("198.51.100.8")).await;
    assert_eq!(other.status(), 201);
    for created in [&one, &other] {
        delete(&http, &base, created).await;
    }
    wait_idle(&server).await;
    server.shutdown().await.unwrap();
}

/// Reads what the server sends on `stream` until it closes the connection, within `within`.
async fn read_to_close_within(stream: &mut TcpStream, within: Duration) -> String {
    let mut got = Vec::new();
    tokio::time::timeout(within, stream.read_to_end(&mut got))
        .await
        .expect("the server closes the connection in time")
        .ok();
    String::from_utf8_lossy(&got).into_owned()
}

async fn read_to_close(stream: &mut TcpStream) -> String {
    read_to_close_within(stream, WAIT).await
}

#[tokio::test]
async fn slow_headers_idle_keep_alive_and_slow_bodies_do_not_hold_a_connection() {
    let mut config = Config::for_tests();
    config.http_header_timeout = Duration::from_millis(300);
    config.http_request_timeout = Duration::from_millis(300);
    let server = start(config).await;
    let addr = server.http_addr;

    // Slowloris: the headers never end. Closed after the configured 300 ms, not the default
    // 10 s (the bound below is generous for a slow machine, and far under 10 s).
    let bound = Duration::from_secs(5);
    let mut slow = TcpStream::connect(addr).await.unwrap();
    slow.write_all(b"POST /echo/x HTTP/1.1\r\nHost: x\r\nX-A: ")
        .await
        .unwrap();
    read_to_close_within(&mut slow, bound).await;

    // A connection that goes quiet after a request is closed too.
    let mut idle = TcpStream::connect(addr).await.unwrap();
    idle.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let got = read_to_close_within(&mut idle, bound).await;
    assert!(got.starts_with("HTTP/1.1 200"), "{got}");

    // A body that stops coming: 408 with its reason.
    let mut body = TcpStream::connect(addr).await.unwrap();
    body.write_all(
        b"POST /echo/x HTTP/1.1\r\nHost: x\r\nContent-Type: application/sdp\r\n\
          Content-Length: 1000\r\n\r\nv=0\r\n",
    )
    .await
    .unwrap();
    let got = read_to_close_within(&mut body, bound).await;
    assert!(got.starts_with("HTTP/1.1 408"), "{got}");
    assert!(got.ends_with("request took too long\n"), "{got}");

    // A request head of 100 KB: refused, not buffered.
    let mut big = TcpStream::connect(addr).await.unwrap();
    let head = format!(
        "GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n",
        "a".repeat(100_000)
    );
    let _ = big.write_all(head.as_bytes()).await;
    let got = read_to_close(&mut big).await;
    assert!(got.starts_with("HTTP/1.1 431"), "{got}");
    server.shutdown().await.unwrap();
}

/// `n` connections, each holding its place: a request on each answered proves it.
async fn hold_connections(addr: std::net::SocketAddr, n: usize) -> Vec<TcpStream> {
    let mut held = Vec::new();
    for _ in 0..n {
        let mut c = TcpStream::connect(addr).await.unwrap();
        c.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        let mut buf = [0u8; 12];
        c.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"HTTP/1.1 200");
        held.push(c);
    }
    held
}

/// What the server sends on one more connection with a request, until it closes it.
async fn one_more_connection(addr: std::net::SocketAddr) -> String {
    let mut over = TcpStream::connect(addr).await.unwrap();
    over.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    read_to_close(&mut over).await
}

/// Whether a new connection is served (200) within `WAIT`, retrying while places are still
/// being given back.
async fn served_again(server: &whip_echo::server::Running) -> bool {
    let http = reqwest::Client::new();
    let health = format!("{}/healthz", server.base_url());
    tokio::time::timeout(WAIT, async {
        loop {
            match http.get(&health).send().await {
                Ok(r) if r.status() == 200 => break,
                _ => tokio::task::yield_now().await,
            }
        }
    })
    .await
    .is_ok()
}

#[tokio::test]
async fn one_client_ip_cannot_take_every_connection() {
    let mut config = Config::for_tests();
    config.max_http_connections = 10;
    config.max_http_connections_per_ip = 2;
    let server = start(config).await;
    let addr = server.http_addr;
    let held = hold_connections(addr, 2).await;
    // A third from the same address (all of loopback is one client here), though 8 places are
    // free.
    let got = one_more_connection(addr).await;
    assert!(got.starts_with("HTTP/1.1 503"), "{got}");
    drop(held);
    assert!(
        served_again(&server).await,
        "its places come back when its connections close"
    );
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn connections_over_the_cap_get_503_and_closed_ones_free_their_place() {
    let mut config = Config::for_tests();
    config.max_http_connections = 2;
    config.max_http_connections_per_ip = 0;
    let server = start(config).await;
    let addr = server.http_addr;
    let held = hold_connections(addr, 2).await;
    let got = one_more_connection(addr).await;
    assert!(got.starts_with("HTTP/1.1 503"), "{got}");
    assert!(got.contains("Retry-After: 1\r\n"), "{got}");
    assert!(
        got.ends_with("too many open HTTP connections, retry shortly\n"),
        "{got}"
    );
    drop(held);
    // The closed connections' places come back (their tasks see the close and end).
    assert!(
        served_again(&server).await,
        "a new connection is served once the others closed"
    );
    server.shutdown().await.unwrap();
}
