//! The HTTP plane's limits against a real server on loopback: sessions per client IP (429),
//! open connections (503), slow headers and idle keep-alive (closed), slow bodies (408),
//! oversized request heads (431), the token checked before the body is read, and connections
//! that say nothing (pending pools per listener, a share per client, the oldest evicted).

use crate::support;

use std::time::Duration;

use support::{
    closed_by_server, connect_from, get_text, metric, start, tcp_closed, wait_idle, WAIT,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use whip_echo::config::Config;

const OFFER: &str = include_str!("../data/offer.sdp");

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

/// `/healthz` from 127.0.0.3, on a new connection each time: `n` times, all 200.
async fn health_from_another_client(server: &whip_echo::server::Running, n: usize) {
    let http = reqwest::Client::builder()
        .local_address(std::net::IpAddr::from([127, 0, 0, 3]))
        .pool_max_idle_per_host(0)
        .timeout(WAIT)
        .build()
        .unwrap();
    let health = format!("{}/healthz", server.base_url());
    for i in 0..n {
        let response = http.get(&health).send().await;
        let status = response.map(|r| r.status().as_u16());
        assert!(matches!(status, Ok(200)), "GET {i}: {status:?}");
    }
}

/// The review's reproduction: 1,030 idle connections from one address made `/healthz` get an
/// empty reply (one pool of 1,024 for both ports). `--max-pending-connections` + 1 silent
/// connections from 127.0.0.2 to each port now leave every GET from 127.0.0.3 answered.
#[tokio::test]
async fn silent_connections_from_one_client_lock_nobody_else_out() {
    let mut config = Config::for_tests();
    // Only the per-client share closes them within the test.
    config.tcp_setup_timeout = Duration::from_secs(600);
    let server = start(config).await;
    let mut silent = Vec::new();
    for addr in [server.http_addr, server.media.tcp_addr()] {
        for _ in 0..=1024 {
            silent.push(connect_from([127, 0, 0, 2], addr).await);
        }
    }
    health_from_another_client(&server, 20).await;
    // 32 of each port's 1,025 are held; the others are closed at once (once accepted).
    let metrics = format!("{}/metrics", server.base_url());
    let settled = tokio::time::timeout(WAIT, async {
        loop {
            let text = get_text(&metrics).await;
            if tcp_closed(&text, "pending_per_ip") >= 2.0 * 993.0 {
                break text;
            }
        }
    })
    .await
    .expect("every connection over the share closed");
    for listener in ["http", "ice_tcp"] {
        let name = format!(r#"whip_echo_tcp_connections_pending{{listener="{listener}"}}"#);
        assert_eq!(metric(&settled, &name), 32.0, "{settled}");
    }
    drop(silent);
    server.shutdown().await.unwrap();
}

/// A full pool closes its oldest connection to make room for the newest: silent connections
/// from many addresses (no per-client share here) delay a real client, never lock it out.
#[tokio::test]
async fn a_full_pending_pool_closes_its_oldest_connection() {
    let mut config = Config::for_tests();
    config.max_pending_connections = 8;
    config.max_pending_connections_per_ip = 0;
    // Only eviction closes them within the test.
    config.tcp_setup_timeout = Duration::from_secs(600);
    let server = start(config).await;
    for addr in [server.http_addr, server.media.tcp_addr()] {
        let mut silent = Vec::new();
        for _ in 0..8 {
            silent.push(connect_from([127, 0, 0, 2], addr).await);
        }
        // Three more, from another address: the three oldest make room.
        for _ in 0..3 {
            silent.push(connect_from([127, 0, 0, 4], addr).await);
        }
        let oldest: Vec<TcpStream> = silent.drain(..3).collect();
        for stream in oldest {
            assert!(
                closed_by_server(stream).await,
                "the oldest are evicted: {addr}"
            );
        }
        if addr == server.http_addr {
            // A real client beside the full pool is served.
            health_from_another_client(&server, 3).await;
        }
    }
    let text = get_text(&format!("{}/metrics", server.base_url())).await;
    assert!(tcp_closed(&text, "pending_evicted") >= 6.0, "{text}");
    server.shutdown().await.unwrap();
}

/// RFC 9725 §4.7.1 and the README: the token is checked first. A POST without one, announcing
/// a 100 KB body and sending none of it, is answered 401 at once, not after the request
/// timeout spent waiting for the body.
#[tokio::test]
async fn the_token_is_checked_before_the_body_is_read() {
    let mut config = Config::for_tests();
    config.access.publish_tokens = vec!["s3cret".into()];
    config.http_request_timeout = Duration::from_secs(600);
    let server = start(config).await;
    let mut stream = TcpStream::connect(server.http_addr).await.unwrap();
    stream
        .write_all(
            b"POST /whip/x HTTP/1.1\r\nHost: x\r\nContent-Type: application/sdp\r\n\
              Content-Length: 100000\r\n\r\nv=0\r\n",
        )
        .await
        .unwrap();
    let mut head = [0u8; 12];
    tokio::time::timeout(WAIT, stream.read_exact(&mut head))
        .await
        .expect("answered before the body came")
        .unwrap();
    assert_eq!(&head, b"HTTP/1.1 401");
    server.shutdown().await.unwrap();
}

/// POSTs the offer to `/whip/{stream}` as the client `client` names (through
/// `X-Forwarded-For`, which the test's server trusts).
async fn post_as(base: &str, stream: &str, client: &str) -> reqwest::Response {
    post(&reqwest::Client::new(), base, stream, Some(client)).await
}

/// A server that takes the client's address from `X-Forwarded-For`, so that one test can be
/// many clients (IPv6 ones too).
fn behind_a_proxy() -> Config {
    let mut config = Config::for_tests();
    config.client_ip_header = Some("X-Forwarded-For".into());
    config
}

#[tokio::test]
async fn the_64s_of_one_ipv6_48_share_a_cap() {
    let mut config = behind_a_proxy();
    config.max_sessions_per_prefix = 3;
    let server = start(config).await;
    let base = server.base_url();
    let mut created = Vec::new();
    for (i, client) in ["2001:db8:1:1::1", "2001:db8:1:2::1", "2001:db8:1:3::1"]
        .iter()
        .enumerate()
    {
        let response = post_as(&base, &format!("s{i}"), client).await;
        assert_eq!(response.status(), 201);
        created.push(response);
    }
    let refused = post_as(&base, "s4", "2001:db8:1:4::1").await;
    assert_eq!(refused.status(), 429);
    assert_eq!(refused.headers()["retry-after"], "5");
    let reason = refused.text().await.unwrap();
    assert!(reason.contains("from your network"), "{reason}");
    let other = post_as(&base, "s5", "2001:db8:2::1").await;
    assert_eq!(other.status(), 201, "another /48");
    created.push(other);
    let http = reqwest::Client::new();
    for response in &created {
        delete(&http, &base, response).await;
    }
    let text = get_text(&format!("{base}/metrics")).await;
    assert_eq!(
        metric(
            &text,
            r#"whip_echo_sessions_rejected_total{cause="per_prefix"}"#
        ),
        1.0
    );
    wait_idle(&server).await;
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_client_holds_few_sessions_that_never_connect() {
    let mut config = behind_a_proxy();
    config.max_connecting_sessions_per_ip = 2;
    let server = start(config).await;
    let base = server.base_url();
    let a = post_as(&base, "a", "198.51.100.1").await;
    let b = post_as(&base, "b", "198.51.100.1").await;
    assert_eq!((a.status().as_u16(), b.status().as_u16()), (201, 201));
    let refused = post_as(&base, "c", "198.51.100.1").await;
    assert_eq!(refused.status(), 429);
    assert_eq!(refused.headers()["retry-after"], "1");
    let reason = refused.text().await.unwrap();
    assert!(reason.contains("still connecting"), "{reason}");
    assert_eq!(post_as(&base, "c", "198.51.100.2").await.status(), 201);
    server.shutdown().await.unwrap();
}

/// At `--max-sessions`, the oldest session still connecting after `--evict-connecting-after`
/// makes room for a new POST: it ends (410 with the reason) while the connected one plays on.
/// A client with a session of its own still connecting evicts nobody.
#[tokio::test]
async fn a_full_server_evicts_its_oldest_connecting_session() {
    let mut config = behind_a_proxy();
    config.max_sessions = 2;
    config.evict_connecting_after = Duration::from_millis(200);
    // The newest client asks again and again until room is made.
    config.request_rate_per_ip = 0;
    let server = start(config).await;
    let base = server.base_url();
    let http = reqwest::Client::new();
    let live = support::connected(
        &format!("{base}/echo/live"),
        support::client::Mode::SendRecv,
        support::client::Options::default(),
    )
    .await;
    let silent = post_as(&base, "silent", "198.51.100.1").await;
    assert_eq!(silent.status(), 201);
    // Its client, still connecting, cannot evict it.
    assert_eq!(post_as(&base, "again", "198.51.100.1").await.status(), 503);
    // Another client gets in once the silent session has been connecting long enough.
    let newest = tokio::time::timeout(WAIT, async {
        loop {
            let response = post_as(&base, "newest", "198.51.100.2").await;
            if response.status() != 503 {
                break response;
            }
        }
    })
    .await
    .expect("room is made");
    assert_eq!(newest.status(), 201);
    let location = silent.headers()["location"].to_str().unwrap().to_owned();
    let gone = http.get(format!("{base}{location}")).send().await.unwrap();
    assert_eq!(gone.status(), 410);
    let reason = gone.text().await.unwrap();
    assert!(reason.contains("made room"), "{reason}");
    // The connected one is never evicted, nor is the newest (its client, 198.51.100.2, asks
    // again at once): 503.
    assert_eq!(post_as(&base, "third", "198.51.100.3").await.status(), 503);
    let text = get_text(&format!("{base}/metrics")).await;
    assert_eq!(
        metric(&text, r#"whip_echo_sessions_ended_total{reason="evicted"}"#),
        1.0,
        "{text}"
    );
    assert_eq!(live.delete().await, 200);
    live.close().await;
    server.shutdown().await.unwrap();
}

/// An ICE restart of `location` (new client credentials numbered `n`): its status and its
/// `Retry-After`.
async fn restart(base: &str, location: &str, n: usize) -> (u16, Option<String>) {
    let fragment = format!("a=ice-ufrag:r{n:03}\r\na=ice-pwd:{:0>24}\r\n", n);
    let response = reqwest::Client::new()
        .patch(format!("{base}{location}"))
        .header("content-type", "application/trickle-ice-sdpfrag")
        .header("if-match", "*")
        .body(fragment)
        .send()
        .await
        .unwrap();
    let retry = response
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().unwrap().to_owned());
    (response.status().as_u16(), retry)
}

#[tokio::test]
async fn ice_restarts_are_rate_limited_per_session() {
    let server = start(Config::for_tests()).await;
    let base = server.base_url();
    let created = post(&reqwest::Client::new(), &base, "restarts", None).await;
    let location = created.headers()["location"].to_str().unwrap().to_owned();
    // Three at once (the burst), then one per 10 s (6 a minute).
    for n in 0..3 {
        assert_eq!(restart(&base, &location, n).await.0, 200, "restart {n}");
    }
    let (status, retry) = restart(&base, &location, 3).await;
    assert_eq!((status, retry.as_deref()), (429, Some("10")));
    let text = get_text(&format!("{base}/metrics")).await;
    assert_eq!(
        metric(
            &text,
            r#"whip_echo_sessions_rejected_total{cause="restart_rate"}"#
        ),
        1.0
    );
    server.shutdown().await.unwrap();
}

/// Restarts no longer keep a session that never connected alive: it ends at the deadline its
/// POST set, however often it restarts.
#[tokio::test]
async fn restarts_do_not_extend_a_never_connected_sessions_deadline() {
    let mut config = Config::for_tests();
    config.ice_timeout = Duration::from_secs(1);
    config.ice_restarts_per_minute = 0;
    config.request_rate_per_ip = 0;
    let server = start(config).await;
    let base = server.base_url();
    let http = reqwest::Client::new();
    let created = post(&http, &base, "forever", None).await;
    let location = created.headers()["location"].to_str().unwrap().to_owned();
    let ended = tokio::time::timeout(WAIT, async {
        for n in 0.. {
            match restart(&base, &location, n % 1000).await.0 {
                200 => continue,
                status => return status,
            }
        }
        unreachable!()
    })
    .await
    .expect("the session ends at its setup deadline");
    // The restart that found it ended: 404 or 410.
    assert!(matches!(ended, 404 | 410), "{ended}");
    server.shutdown().await.unwrap();
}

/// `--request-rate-per-ip`: POSTs and PATCHes beyond a client's bucket get 429 with the wait,
/// before any body is read; another client has a bucket of its own.
#[tokio::test]
async fn posts_and_patches_are_rate_limited_per_client() {
    let mut config = behind_a_proxy();
    config.request_rate_per_ip = 1;
    config.request_burst_per_ip = 2;
    let server = start(config).await;
    let base = server.base_url();
    let first = post_as(&base, "r1", "198.51.100.1").await;
    assert_eq!(first.status(), 201);
    let location = first.headers()["location"].to_str().unwrap().to_owned();
    let trickle = reqwest::Client::new()
        .patch(format!("{base}{location}"))
        .header("content-type", "application/trickle-ice-sdpfrag")
        .header("x-forwarded-for", "198.51.100.1")
        .header("if-match", "*")
        .body("a=end-of-candidates\r\n");
    // The bucket refills at one a second: however slow the machine, a few quick requests
    // outrun it.
    let mut statuses = Vec::new();
    let refused = loop {
        let response = trickle.try_clone().unwrap().send().await.unwrap();
        if response.status() == 429 || statuses.len() > 20 {
            break response;
        }
        statuses.push(response.status().as_u16());
    };
    assert_eq!(refused.status(), 429, "{statuses:?}");
    assert!(statuses.iter().all(|s| *s == 204), "{statuses:?}");
    assert_eq!(refused.headers()["retry-after"], "1");
    // POSTs too, before their body is looked at (these have the wrong media type: 415 while
    // allowed).
    let mut statuses = Vec::new();
    let refused = loop {
        let response = reqwest::Client::new()
            .post(format!("{base}/whip/r2"))
            .header("x-forwarded-for", "198.51.100.1")
            .body("not sdp")
            .send()
            .await
            .unwrap();
        if response.status() == 429 || statuses.len() > 20 {
            break response;
        }
        statuses.push(response.status().as_u16());
    };
    assert_eq!(refused.status(), 429, "{statuses:?}");
    let reason = refused.text().await.unwrap();
    assert!(reason.contains("too many requests"), "{reason}");
    assert_eq!(post_as(&base, "r2", "198.51.100.2").await.status(), 201);
    let text = get_text(&format!("{base}/metrics")).await;
    assert!(metric(&text, r#"whip_echo_sessions_rejected_total{cause="rate"}"#) >= 2.0);
    server.shutdown().await.unwrap();
}
