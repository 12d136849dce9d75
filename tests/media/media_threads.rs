//! Several media loops (`--media-threads`): every loop's socket on the one UDP port, the kernel
//! spreading clients over them and a loop handing a datagram for another loop's session over to
//! it; a stream's sessions in one loop, resources found whichever loop holds them, one session
//! cap across loops.

use crate::support;

use std::collections::BTreeSet;

use support::client::{Client, Mode, Options};
use support::{metric, start, wait_idle, WAIT};
use whip_echo::config::Config;
use whip_echo::media::stream_loop;
use whip_echo::session::{ResourceId, StreamName};

const PUBLISH: &str = include_str!("../data/offer.sdp");
const PLAY: &str = include_str!("../data/recvonly-offer.sdp");
const SENDRECV: &str = include_str!("../data/pcma-first-stereo.sdp");

fn threads(n: u16) -> Config {
    let mut config = Config::for_tests();
    config.media_threads = n;
    // Sessions that never connect, more than one client may hold (`limits.rs` tests that).
    config.max_connecting_sessions_per_ip = 0;
    // Many sessions from one address.
    config.max_sessions_per_ip = 0;
    config.max_sessions_per_prefix = 0;
    config
}

/// The ports of the answer's host candidates.
fn candidate_ports(answer: &str) -> BTreeSet<u16> {
    answer
        .lines()
        .filter_map(|l| l.strip_prefix("a=candidate:"))
        .filter(|c| c.contains(" udp ") || c.contains(" UDP "))
        .filter_map(|c| c.split_whitespace().nth(5)?.parse().ok())
        .collect()
}

/// The loop (of `loops`) that holds the session at `location`, named by its resource id.
fn loop_of(location: &str, loops: usize) -> usize {
    let id = location.rsplit('/').next().unwrap();
    ResourceId::parse(id)
        .expect("a resource id")
        .loop_index(loops)
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
async fn streams_spread_over_loops_on_one_port_and_stay_together() {
    let server = start(threads(2)).await;
    let base = server.base_url();
    let udp = server.media.udp_addrs();
    assert_eq!(udp.len(), 1, "two loops, one UDP port");
    let port = BTreeSet::from([udp[0].port()]);
    let http = reqwest::Client::new();

    let mut used = BTreeSet::new();
    let mut resources = Vec::new();
    for name in ["a", "b", "c", "d", "e", "f", "g", "h"] {
        // A publisher and a viewer of one stream land on the same loop, on the one port.
        let whip = post(&http, &format!("{base}/whip/{name}"), PUBLISH).await;
        assert_eq!(whip.status(), 201);
        let location = whip.headers()["location"].to_str().unwrap().to_owned();
        assert_eq!(candidate_ports(&whip.text().await.unwrap()), port);
        let whep = post(&http, &format!("{base}/whep/{name}"), PLAY).await;
        assert_eq!(whep.status(), 201);
        let whep_location = whep.headers()["location"].to_str().unwrap().to_owned();
        assert_eq!(candidate_ports(&whep.text().await.unwrap()), port);
        assert_eq!(loop_of(&location, 2), loop_of(&whep_location, 2));
        used.insert(loop_of(&location, 2));
        resources.push(location);
        resources.push(whep_location);
    }
    assert_eq!(
        used,
        BTreeSet::from([0, 1]),
        "eight stream names use both loops"
    );
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

/// Sixteen clients, each from a port of its own, echo through two loops on one port. The kernel
/// picks a loop's socket by the client's address, the session's loop is its stream's: about half
/// the sessions are reached through the other loop's socket, and echo as well (the chance that
/// none is, 2^-16).
#[tokio::test]
async fn echo_works_on_every_loop_through_one_port() {
    let server = start(threads(2)).await;
    let base = server.base_url();
    let http = reqwest::Client::new();
    let mut loops = BTreeSet::new();
    let mut clients = Vec::new();
    for n in 0..16 {
        let url = format!("{base}/echo/s{n}");
        let mut client = Client::connect(&url, Mode::SendRecv).await.expect("201");
        assert_eq!(candidate_ports(&client.answer).len(), 1);
        loops.insert(loop_of(&client.resource_url, 2));
        client.wait_connected(WAIT).await;
        support::echoed(&mut client, b"ping").await;
        clients.push(client);
    }
    assert_eq!(loops, BTreeSet::from([0, 1]));
    let text = support::get_text(&format!("{base}/metrics")).await;
    let handed = metric(&text, "whip_echo_handed_over_packets_total");
    assert!(handed > 0.0, "no datagram was handed to another loop");
    assert_eq!(
        metric(
            &text,
            "whip_echo_dropped_packets_total{cause=\"handover_full\"}"
        ),
        0.0
    );
    // Still echoing after the handovers, and every session ends cleanly.
    for client in &mut clients {
        support::echoed(client, b"pong").await;
    }
    drop(http);
    support::delete_all_and_stop(server, clients).await;
}

/// A stream name of loop `index` (of two).
fn stream_of_loop(index: usize, tag: &str) -> String {
    (0..)
        .map(|n| format!("{tag}{n}"))
        .find(|name| stream_loop(&StreamName::parse(name).unwrap(), 2) == index)
        .unwrap()
}

/// A client that vanishes and comes back from the same port for a new session, on the other
/// loop each time, while the old session still holds the port (until its consent runs out). The
/// kernel gives the port's datagrams to one loop's socket, so in one of the two moves the old
/// owner's loop takes the new session's answers to its checks: it offers them to the other loop,
/// whose session proves the path and takes it over.
#[tokio::test]
async fn a_client_reusing_its_port_for_a_session_on_another_loop_connects() {
    let server = start(threads(2)).await;
    let base = server.base_url();
    let port = std::net::UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let options = Options {
        port,
        ..Options::default()
    };
    for (round, index) in [0, 1, 0].into_iter().enumerate() {
        let url = format!(
            "{base}/echo/{}",
            stream_of_loop(index, &format!("r{round}-"))
        );
        let mut client = support::connected(&url, Mode::SendRecv, options).await;
        assert_eq!(client.local.port(), port);
        assert_eq!(loop_of(&client.resource_url, 2), index);
        support::echoed(&mut client, b"again").await;
        client.vanish().await;
    }
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
async fn a_udp_port_another_group_shares_is_refused() {
    // Someone else's SO_REUSEPORT socket on the port: joining its group would split the
    // datagrams with it, so start-up refuses the port as taken.
    let other = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::DGRAM, None).unwrap();
    other.set_reuse_port(true).unwrap();
    let at: std::net::SocketAddr = "127.0.0.1:0".parse().unwrap();
    other.bind(&at.into()).unwrap();
    let port = other.local_addr().unwrap().as_socket().unwrap().port();
    let mut config = threads(2);
    config.udp_port = port;
    let stop = tokio_util::sync::CancellationToken::new();
    let result = whip_echo::server::start_media(&config, stop).await;
    let Err(error) = result else {
        panic!("the port is refused");
    };
    let error = error.to_string();
    assert!(
        error.contains(&format!("binding UDP 127.0.0.1:{port}")),
        "{error}"
    );
}
