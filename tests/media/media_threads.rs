//! Several media loops (`--media-threads`): each on its own UDP port, a stream's sessions in one
//! loop, resources found whichever loop holds them, one session cap across loops.

use crate::support;

use std::collections::BTreeSet;

use support::client::{Client, Mode};
use support::{start, wait_idle, WAIT};
use whip_echo::config::Config;

const PUBLISH: &str = include_str!("../data/offer.sdp");
const PLAY: &str = include_str!("../data/recvonly-offer.sdp");
const SENDRECV: &str = include_str!("../data/pcma-first-stereo.sdp");

fn threads(n: u16) -> Config {
    let mut config = Config::for_tests();
    config.media_threads = n;
    // Sessions that never connect, more than one client may hold (`limits.rs` tests that).
    config.max_connecting_sessions_per_ip = 0;
    config
}

/// The port of the answer's first host candidate: which loop took the session.
fn candidate_port(answer: &str) -> u16 {
    answer
        .lines()
        .find_map(|l| l.strip_prefix("a=candidate:"))
        .and_then(|c| c.split_whitespace().nth(5)?.parse().ok())
        .expect("answer has a candidate")
}

/// A `Location` (relative or absolute) as an absolute URL.
fn absolute(base: &str, location: &str) -> String {
    if location.starts_with("http") {
        location.to_owned()
    } else {
        format!("{base}{location}")
    }
}

async fn post(http: &reqwest::Client, url: &str, offer: &'static str) -> reqwest::Response {
    http.post(url)
        .header("content-type", "application/sdp")
        .body(offer)
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn streams_spread_over_loops_and_stay_together() {
    let server = start(threads(2)).await;
    let base = server.base_url();
    let ports: BTreeSet<u16> = server.media.udp_addrs().iter().map(|a| a.port()).collect();
    assert_eq!(ports.len(), 2, "two loops, two ports");
    let http = reqwest::Client::new();

    let mut used = BTreeSet::new();
    let mut resources = Vec::new();
    for name in ["a", "b", "c", "d", "e", "f", "g", "h"] {
        // A publisher and a viewer of one stream land on the same loop.
        let whip = post(&http, &format!("{base}/whip/{name}"), PUBLISH).await;
        assert_eq!(whip.status(), 201);
        let location = whip.headers()["location"].to_str().unwrap().to_owned();
        let whip_port = candidate_port(&whip.text().await.unwrap());
        let whep = post(&http, &format!("{base}/whep/{name}"), PLAY).await;
        assert_eq!(whep.status(), 201);
        let whep_location = whep.headers()["location"].to_str().unwrap().to_owned();
        assert_eq!(candidate_port(&whep.text().await.unwrap()), whip_port);
        assert!(ports.contains(&whip_port));
        used.insert(whip_port);
        resources.push(location);
        resources.push(whep_location);
    }
    assert_eq!(used, ports, "eight stream names use both loops");
    assert_eq!(server.media.stats().borrow().sessions, 16);

    // DELETE reaches the session whichever loop holds it.
    for location in &resources {
        let url = absolute(&base, location);
        assert_eq!(http.delete(&url).send().await.unwrap().status(), 200);
        assert_eq!(http.delete(&url).send().await.unwrap().status(), 404);
    }
    wait_idle(&server).await;
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn echo_works_on_every_loop() {
    let server = start(threads(2)).await;
    let ports: BTreeSet<u16> = server.media.udp_addrs().iter().map(|a| a.port()).collect();
    let mut seen = BTreeSet::new();
    for name in ["a", "b", "c", "d", "e", "f", "g", "h"] {
        let url = format!("{}/echo/{name}", server.base_url());
        let mut client = Client::connect(&url, Mode::SendRecv).await.expect("201");
        let port = candidate_port(&client.answer);
        if !seen.insert(port) {
            client.delete().await;
            client.close().await;
            continue;
        }
        client.wait_connected(WAIT).await;
        client.send(b"ping");
        assert_eq!(client.next_packet(WAIT).await.payload, &b"ping"[..]);
        client.delete().await;
        client.close().await;
    }
    assert_eq!(seen, ports);
    wait_idle(&server).await;
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn the_session_cap_holds_across_loops() {
    let mut config = threads(2);
    config.max_sessions = 3;
    let server = start(config).await;
    let base = server.base_url();
    let http = reqwest::Client::new();
    // Connected sessions (one that has not connected yet would make room: `limits.rs`).
    let mut clients = Vec::new();
    for name in ["a", "b", "c"] {
        let url = format!("{base}/echo/{name}");
        clients.push(support::connected(&url, Mode::SendRecv, Default::default()).await);
    }
    for name in ["d", "e", "f", "g"] {
        let refused = post(&http, &format!("{base}/echo/{name}"), SENDRECV).await;
        assert_eq!(refused.status(), 503, "stream {name}");
        assert!(refused.headers().contains_key("retry-after"));
    }
    // Ending one frees a place, whichever loop it was on.
    let first = clients.remove(0);
    assert_eq!(first.delete().await, 200);
    first.close().await;
    assert_eq!(
        post(&http, &format!("{base}/echo/z"), SENDRECV)
            .await
            .status(),
        201
    );
    for client in clients {
        client.close().await;
    }
    drop(http);
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_port_range_past_65535_is_refused() {
    let mut config = threads(2);
    config.udp_port = 65535;
    let stop = tokio_util::sync::CancellationToken::new();
    let result = whip_echo::server::start_media(&config, stop).await;
    assert!(matches!(
        result.err(),
        Some(whip_echo::server::ServerError::PortRange)
    ));
}
