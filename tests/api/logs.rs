//! The log under attack, against the binary: a flood of bad requests and packets of every kind a
//! client can send adds a bounded number of lines (under the default filter and under
//! `--log info`), and a log pipe that is no longer read stalls neither HTTP nor a media loop
//! (lines are dropped and counted instead).

use crate::support;

use std::collections::BTreeMap;
use std::process::Command;
use std::time::{Duration, Instant};

use bytes::Bytes;
use support::binary::{binary, start_with, Server};
use support::client::{Client, Mode, Options};
use support::{hostile, WAIT};
use tokio::io::AsyncWriteExt;

/// Bad requests or packets of each kind in the flood.
const EACH: u32 = 1_500;

/// Lines the whole test may log: the echo session's own (created, its states, ended), the
/// once-a-second warnings of refused requests, the WebRTC stack's budget (20 at once, one a
/// second) and some slack. Before, each bad packet logged one or two lines.
const MAX_LINES: usize = 80;

fn server(log: Option<&str>) -> Server {
    let mut command = Command::new(binary());
    command.env_remove("RUST_LOG").env_remove("WHIP_ECHO_LOG");
    if let Some(filter) = log {
        command.args(["--log", filter]);
    }
    tokio::task::block_in_place(|| start_with(command))
}

async fn echo_client(base: &str, stream: &str) -> Client {
    let url = format!("{base}/echo/{stream}");
    support::connected(&url, Mode::SendRecv, Options::default()).await
}

/// What an attacker on the session's path sends it: SRTP and SRTCP that do not authenticate, a
/// DTLS record of the next epoch, a check with the server's ufrag and a made-up integrity, and an
/// empty datagram.
fn forged_on_path(n: u32, server_ufrag: &str) -> Vec<Bytes> {
    let mut srtp = vec![0x80, 111];
    srtp.extend_from_slice(&(n as u16).to_be_bytes());
    srtp.extend_from_slice(&n.to_be_bytes());
    srtp.extend_from_slice(&0x0BAD_5EEDu32.to_be_bytes());
    srtp.extend_from_slice(&[0x5A; 60]);
    let mut srtcp = vec![0x80, 200, 0, 6, 0x0B, 0xAD, 0x5E, 0xED];
    srtcp.extend_from_slice(&[0xA5; 34]);
    let mut dtls = vec![23, 0xFE, 0xFD, 0, 1, 0, 0, 0, 0];
    dtls.extend_from_slice(&(n as u16).to_be_bytes());
    dtls.extend_from_slice(&[0, 32]);
    dtls.extend_from_slice(&[0x33; 32]);
    let check = support::binding_request(&format!("{server_ufrag}:evil"), n);
    vec![srtp, srtcp, dtls, check, Vec::new()]
        .into_iter()
        .map(Bytes::from)
        .collect()
}

/// `EACH` requests of six kinds that each get a 4xx (or a preflight's 204): a bad offer, PATCH
/// and DELETE of resources that do not exist, a wrong content type, an unknown path and a
/// preflight from another origin. The statuses seen.
async fn bad_requests(base: &str) -> BTreeMap<u16, u32> {
    let http = reqwest::Client::builder().timeout(WAIT).build().unwrap();
    let mut statuses = BTreeMap::new();
    for i in 0..EACH {
        let request = match i % 6 {
            0 => http
                .post(format!("{base}/whip/logs"))
                .header("content-type", "application/sdp")
                .body("v=0\r\nnot an offer\r\n"),
            1 => http
                .patch(format!("{base}/resource/{i:032x}"))
                .header("content-type", "application/trickle-ice-sdpfrag")
                .body("a=ice-ufrag:x\r\n"),
            2 => http.delete(format!("{base}/resource/{i:032x}")),
            3 => http
                .post(format!("{base}/whep/logs"))
                .header("content-type", "text/plain")
                .body("hello"),
            4 => http.get(format!("{base}/no/such/{i}")),
            _ => http
                .request(reqwest::Method::OPTIONS, format!("{base}/whip/logs"))
                .header("origin", "https://elsewhere.example")
                .header("access-control-request-method", "POST"),
        };
        let status = request.send().await.expect("an answer").status().as_u16();
        *statuses.entry(status).or_default() += 1;
    }
    statuses
}

/// 100 ICE-TCP connections whose first frame is no STUN message.
async fn bad_ice_tcp(server: &Server) {
    let mut held = Vec::new();
    for _ in 0..100 {
        let Ok(mut stream) = tokio::net::TcpStream::connect(server.tcp).await else {
            continue;
        };
        let mut frame = vec![0, 16];
        frame.extend_from_slice(&[0xDE; 16]);
        let _ = stream.write_all(&frame).await;
        held.push(stream);
    }
}

/// `EACH` hostile datagrams (five kinds, `support::hostile`) from four sockets that are no
/// session's.
async fn bad_datagrams(server: &Server, server_ufrag: &str) {
    let mut sockets = Vec::new();
    for _ in 0..4 {
        sockets.push(tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap());
    }
    for n in 0..EACH {
        let socket = &sockets[n as usize % sockets.len()];
        let _ = socket.send_to(&hostile(n, server_ufrag), server.udp).await;
        if n % 64 == 0 {
            tokio::task::yield_now().await;
        }
    }
}

/// Five offers such as a Firefox or Chromium page without a microphone permission sends: its
/// only candidate an mDNS name. Each session is created and deleted.
async fn mdns_only_offers(base: &str) {
    let offer = include_str!("../data/offer.sdp").replace(
        "127.0.0.1 50000 typ host",
        "0d6c9a64-9d9c-4a4c-8d63-bd2f3c1e8b7a.local 50000 typ host",
    );
    let http = reqwest::Client::builder().timeout(WAIT).build().unwrap();
    for i in 0..5 {
        support::create_and_delete(&http, base, &format!("/whip/logs-mdns-{i}"), &offer).await;
    }
}

/// The lines grouped by message, for a failure's report.
fn by_message(lines: &[String]) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for line in lines {
        let message = line
            .split("\"message\":\"")
            .nth(1)
            .and_then(|r| r.split('"').next())
            .unwrap_or(line)
            .chars()
            .take(100)
            .collect::<String>();
        *counts.entry(message).or_default() += 1;
    }
    counts
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_bad_requests_and_packets_adds_a_bounded_number_of_log_lines() {
    for log in [None, Some("info")] {
        let server = server(log);
        let base = server.base.clone();
        let mut client = echo_client(&base, "logs").await;
        let (server_ufrag, _) = support::credentials(&client.answer);
        let started = Instant::now();
        // First: before the bad requests spend the client's request rate, and before the
        // stack's budget of warnings is spent.
        mdns_only_offers(&base).await;
        for n in 0..EACH {
            client.send_raw(forged_on_path(n, &server_ufrag));
            if n % 64 == 0 {
                tokio::task::yield_now().await;
            }
        }
        bad_datagrams(&server, &server_ufrag).await;
        bad_ice_tcp(&server).await;
        let statuses = bad_requests(&base).await;
        // The echo answers after every datagram sent before it was read (one socket, in order).
        support::echoed(&mut client, b"after the flood").await;
        // Nothing was lost to the writer (so the count below is all there was), and the stack's
        // warnings beyond their budget were counted instead.
        let http = reqwest::Client::new();
        let dropped = metric(&http, &base, "whip_echo_log_lines_dropped_total").await;
        let suppressed = metric(&http, &base, "whip_echo_log_lines_suppressed_total").await;
        assert_eq!(dropped, 0.0);
        assert!(suppressed > 1_000.0, "{suppressed} suppressed");
        assert_eq!(client.delete().await, 200);
        let ended =
            |line: &str| line.contains("session ended") && line.contains(r#""stream":"logs""#);
        let lines = tokio::task::block_in_place(|| server.lines_until("the session's end", ended));
        let took = started.elapsed();
        println!(
            "# --log {log:?}: {} bad packets, 100 bad ICE-TCP connections and {EACH} bad \
             requests ({statuses:?}) in {took:.1?}: {} log lines in all: {:?}",
            EACH * 10,
            lines.len(),
            by_message(&lines)
        );
        assert!(
            statuses.keys().all(|s| (200..500).contains(s)),
            "{statuses:?}"
        );
        assert!(
            lines.len() <= MAX_LINES,
            "{} lines under --log {log:?}: {:#?}",
            lines.len(),
            by_message(&lines)
        );
        // An mDNS candidate is left out of the offer (and counted), never warned about.
        assert!(!lines.iter().any(|l| l.contains("mDNS")), "{lines:#?}");
        client.close().await;
    }
}

/// The value of the counter `name` in the binary's `/metrics`.
async fn metric(http: &reqwest::Client, base: &str, name: &str) -> f64 {
    let text = http
        .get(format!("{base}/metrics"))
        .send()
        .await
        .expect("/metrics answers")
        .text()
        .await
        .unwrap();
    support::metric(&text, name)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_log_pipe_nobody_reads_stalls_no_request_and_no_media() {
    // Debug logs three lines per request: enough to fill the pipe and the writer's queue.
    let server = server(Some("debug"));
    let base = server.base.clone();
    let mut before = echo_client(&base, "stalled-a").await;
    server.stall_logs();
    let http = reqwest::Client::builder().timeout(WAIT).build().unwrap();
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut requests = 0;
    while metric(&http, &base, "whip_echo_log_lines_dropped_total").await == 0.0 {
        assert!(
            Instant::now() < deadline,
            "no line dropped after {requests} requests"
        );
        for _ in 0..500 {
            let r = http.get(format!("{base}/no/such/path")).send().await;
            assert_eq!(r.expect("answered").status(), 404);
            requests += 1;
        }
    }
    println!("# the log queue overflowed after {requests} requests");
    // The pipe is full and the queue too: the loop logs as before (a new session's lines among
    // them) and nothing waits.
    support::echoed(&mut before, b"while the log is stalled").await;
    let mut after = echo_client(&base, "stalled-b").await;
    support::echoed(&mut after, b"a session created meanwhile").await;
    for client in [before, after] {
        assert_eq!(client.delete().await, 200);
        client.close().await;
    }
    assert!(metric(&http, &base, "whip_echo_log_lines_dropped_total").await > 0.0);
}
