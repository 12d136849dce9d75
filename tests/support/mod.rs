//! Shared test helpers: the in-process server and a real WebRTC client peer.
#![allow(dead_code, unused_imports)]

/// The WebRTC client peer lives in the conformance crate, which knows nothing of the server.
pub use whip_conformance::peer as client;

pub mod binary;

use std::time::Duration;

use whip_echo::config::Config;
use whip_echo::server::{self, Running};

/// Generous upper bound for any event a test waits on.
pub const WAIT: Duration = Duration::from_secs(15);

/// Starts the real server in-process on ephemeral loopback ports.
pub async fn start(config: Config) -> Running {
    // RUST_LOG=whip_echo=debug shows the server's logs in failing tests.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
    let listener = tokio::net::TcpListener::bind(config.listen).await.unwrap();
    server::spawn(listener, config).await.unwrap()
}

/// Waits until the media plane has no session, stream or route left.
pub async fn wait_idle(server: &Running) {
    let mut stats = server.media.stats();
    tokio::time::timeout(WAIT, stats.wait_for(|s| s.idle && s.sessions == 0))
        .await
        .expect("server idle in time")
        .expect("media loop alive");
}

/// Ends a test: every client's session is deleted (each DELETE answers 200), the media plane
/// becomes idle (no session, stream or route leaked), the clients close and the server stops.
pub async fn delete_all_and_stop(server: Running, clients: Vec<client::Client>) {
    for c in &clients {
        assert_eq!(c.delete().await, 200, "DELETE {}", c.resource_url);
    }
    wait_idle(&server).await;
    for c in clients {
        c.close().await;
    }
    server.shutdown().await.unwrap();
}

/// A client of `url` (`{base}/echo/{stream}` and the like) with `options`, connected (ICE and
/// DTLS up on its side); panics with the server's answer if the POST is refused.
pub async fn connected(url: &str, mode: client::Mode, options: client::Options) -> client::Client {
    let mut c = connecting(url, mode, options).await;
    c.wait_connected(WAIT).await;
    c
}

/// A client of `url` with `options` whose POST was answered 201, its connection under way (a
/// test of a handshake held half-way waits for what it needs itself).
pub async fn connecting(url: &str, mode: client::Mode, options: client::Options) -> client::Client {
    let url = reqwest::Url::parse(url).unwrap();
    let loopback = std::net::IpAddr::from([127, 0, 0, 1]);
    let http = whip_conformance::http::Http::new(None);
    client::Client::connect_with_options(&http, &url, mode, loopback, options)
        .await
        .unwrap_or_else(|r| panic!("{}: {}", r.status, r.body))
}

/// Sends `payload` on `client` and waits (up to [`WAIT`] a packet) until it comes back.
pub async fn echoed(client: &mut client::Client, payload: &[u8]) {
    client.send(payload);
    while client.next_packet(WAIT).await.payload[..] != *payload {}
}

/// The worst round trip of 20 echoed packets on `echo`, marked `{label}-{n}`.
pub async fn worst_echo(echo: &mut client::Client, label: &str) -> Duration {
    let mut worst = Duration::ZERO;
    for n in 0..20 {
        let sent = std::time::Instant::now();
        echoed(echo, format!("{label}-{n}").as_bytes()).await;
        worst = worst.max(sent.elapsed());
    }
    worst
}

/// Waits (up to 60 s) until the media plane has no session left: reaping on an ICE timeout
/// takes that long for the last of many.
pub async fn wait_reaped(server: &Running) {
    let mut stats = server.media.stats();
    tokio::time::timeout(
        Duration::from_secs(60),
        stats.wait_for(|s| s.idle && s.sessions == 0),
    )
    .await
    .expect("every session reaped")
    .expect("media loop alive");
}

/// Resident set size of this process (server and test together), in KiB.
pub fn rss_kib() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap();
    let pages: u64 = statm.split(' ').nth(1).unwrap().parse().unwrap();
    pages * 4
}

/// The value of the Prometheus sample `name` (with its labels, as exposed) in the text
/// exposition `text`, 0 when absent.
pub fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or(0.0)
}

/// `whip_echo_tcp_connections_closed_total` of `cause` in the exposition `text`.
pub fn tcp_closed(text: &str, cause: &str) -> f64 {
    metric(
        text,
        &format!(r#"whip_echo_tcp_connections_closed_total{{cause="{cause}"}}"#),
    )
}

/// The body of `GET url` as text (the request must succeed; any status).
pub async fn get_text(url: &str) -> String {
    reqwest::get(url).await.unwrap().text().await.unwrap()
}

/// The body of `GET url` as JSON.
pub async fn get_json(url: &str) -> serde_json::Value {
    serde_json::from_str(&get_text(url).await).unwrap()
}

/// A STUN Binding request (RFC 8489 §5) with `username` and a MESSAGE-INTEGRITY that no
/// password produced.
pub fn binding_request(username: &str, n: u32) -> Vec<u8> {
    let mut attrs = Vec::new();
    let mut attr = |typ: u16, value: &[u8]| {
        attrs.extend_from_slice(&typ.to_be_bytes());
        attrs.extend_from_slice(&(value.len() as u16).to_be_bytes());
        attrs.extend_from_slice(value);
        attrs.resize(attrs.len().div_ceil(4) * 4, 0);
    };
    attr(0x0006, username.as_bytes());
    attr(0x0008, &[0xAB; 20]);
    let mut m = vec![0x00, 0x01];
    m.extend_from_slice(&(attrs.len() as u16).to_be_bytes());
    m.extend_from_slice(&[0x21, 0x12, 0xA4, 0x42]);
    m.extend_from_slice(&n.to_be_bytes());
    m.extend_from_slice(&[7; 8]);
    m.extend_from_slice(&attrs);
    m
}

/// The `n`-th hostile datagram, of five kinds in turn.
pub fn hostile(n: u32, server_ufrag: &str) -> Vec<u8> {
    match n % 5 {
        // Garbage, of a first byte no demultiplexer claims (RFC 7983: 64..=127 is TURN
        // channel data, unused here).
        0 => (0..64)
            .map(|i| (n.wrapping_mul(31).wrapping_add(i) % 256) as u8 | 0x40)
            .collect(),
        1 => binding_request(&format!("nosuchufrag:{n}"), n),
        2 => binding_request(&format!("{server_ufrag}:evil"), n),
        // A DTLS handshake record header that promises more than it carries.
        3 => vec![22, 0xFE, 0xFD, 0, 0, 0, 0, 0, 0, 0, 1, 0x40, 0x00, 1, 2],
        // RTP (version 2, Opus payload type) from an address no session has.
        _ => {
            let mut rtp = vec![0x80, 111];
            rtp.extend_from_slice(&(n as u16).to_be_bytes());
            rtp.extend_from_slice(&n.to_be_bytes());
            rtp.extend_from_slice(&0xDEAD_BEEFu32.to_be_bytes());
            rtp.extend_from_slice(&[0x55; 80]);
            rtp
        }
    }
}

/// POSTs `offer` to `{base}{path}` (201 expected), then DELETEs the resource its `Location`
/// names (200 expected): the HTTP lifecycle of a session that never connects.
pub async fn create_and_delete(http: &reqwest::Client, base: &str, path: &str, offer: &str) {
    let created = http
        .post(format!("{base}{path}"))
        .header("content-type", "application/sdp")
        .body(offer.to_owned())
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201, "POST {path}");
    let location = created.headers()["location"].to_str().unwrap().to_owned();
    let deleted = http
        .delete(format!("{base}{location}"))
        .send()
        .await
        .unwrap();
    assert_eq!(deleted.status(), 200, "DELETE {location}");
}

/// A controlling connectivity check (RFC 8445 §7.2.2) for the server's ufrag `ufrag`, signed with
/// its password `pwd`, from the client of `tests/data/offer.sdp` (whose ufrag is `Xk3d`).
pub fn signed_check(ufrag: &str, pwd: &str) -> Vec<u8> {
    use rtc::ice::attributes::control::AttrControlling;
    use rtc::ice::attributes::priority::PriorityAttr;
    use rtc::stun::attributes::ATTR_USERNAME;
    use rtc::stun::fingerprint::FINGERPRINT;
    use rtc::stun::integrity::MessageIntegrity;
    use rtc::stun::message::{Message, Setter, TransactionId, BINDING_REQUEST};
    use rtc::stun::textattrs::Username;
    let provider = rtc::crypto::default_provider().unwrap();
    let mut m = Message::new();
    let setters: Vec<Box<dyn Setter>> = vec![
        Box::new(BINDING_REQUEST),
        Box::new(TransactionId::new()),
        Box::new(Username::new(ATTR_USERNAME, format!("{ufrag}:Xk3d"))),
        Box::new(AttrControlling(7)),
        Box::new(PriorityAttr(2_105_524_479)),
        Box::new(MessageIntegrity::new_short_term_integrity_with_provider(
            pwd.to_owned(),
            provider.crypto(),
        )),
        Box::new(FINGERPRINT),
    ];
    m.build(&setters).unwrap();
    m.raw
}

/// The server's ICE ufrag and password in an answer.
pub fn credentials(answer: &str) -> (String, String) {
    let attr = |name: &str| {
        answer
            .lines()
            .find_map(|l| l.trim().strip_prefix(name))
            .unwrap()
            .to_owned()
    };
    (attr("a=ice-ufrag:"), attr("a=ice-pwd:"))
}

/// A TCP connection to `addr` from the loopback address `from` (127.0.0.2, say: another client
/// than the tests' usual 127.0.0.1).
pub async fn connect_from(from: [u8; 4], addr: std::net::SocketAddr) -> tokio::net::TcpStream {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind(std::net::SocketAddr::from((from, 0))).unwrap();
    socket.connect(addr).await.unwrap()
}

/// Whether the server closes `stream` (EOF or reset) within `WAIT`, whatever it sends first.
pub async fn closed_by_server(mut stream: tokio::net::TcpStream) -> bool {
    use tokio::io::AsyncReadExt;
    let mut buf = [0u8; 64];
    loop {
        match tokio::time::timeout(WAIT, stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            Ok(Ok(_)) => continue,
            Err(_) => return false,
        }
    }
}
