//! A flood of hostile datagrams on the media port while an echo session runs: garbage, STUN
//! binding requests with unknown and with the session's own ufrag (and a made-up integrity),
//! truncated DTLS records, RTP from addresses no session has. The echo goes on, what names no
//! session is counted and dropped, and memory stays flat across a second flood.

mod support;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use support::client::{Client, Mode, Options};
use support::{hostile, start};
use tokio::net::UdpSocket;
use whip_echo::config::Config;

/// Datagrams per flood.
const FLOOD: usize = 100_000;
/// Sockets the flood comes from.
const SENDERS: usize = 8;

/// Sends `FLOOD` hostile datagrams to `target` from `SENDERS` sockets.
async fn flood(target: SocketAddr, server_ufrag: String) {
    let mut senders = Vec::new();
    for s in 0..SENDERS {
        let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let ufrag = server_ufrag.clone();
        senders.push(tokio::spawn(async move {
            for i in 0..FLOOD / SENDERS {
                let n = (i * SENDERS + s) as u32;
                // A full receive buffer on loopback is not an error of the test's.
                let _ = socket.send_to(&hostile(n, &ufrag), target).await;
                if i % 256 == 0 {
                    tokio::task::yield_now().await;
                }
            }
        }));
    }
    for s in senders {
        s.await.unwrap();
    }
}

/// Echoes `count` numbered payloads one at a time; returns how many came back within 200 ms
/// each.
async fn echo(client: &mut Client, tag: &str, count: usize) -> usize {
    let mut back = 0;
    for i in 0..count {
        let payload = format!("{tag}-{i}");
        client.send(payload.as_bytes());
        let deadline = Instant::now() + Duration::from_millis(200);
        while let Some(p) = client
            .try_next_packet(deadline.saturating_duration_since(Instant::now()))
            .await
        {
            if p.payload == payload.as_bytes() {
                back += 1;
                break;
            }
        }
    }
    back
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_hostile_datagrams_leaves_the_echo_running_and_memory_flat() {
    let server = start(Config::for_tests()).await;
    let base = server.base_url();
    let mut client = support::connected(
        &format!("{base}/echo/flood"),
        Mode::SendRecv,
        Options::default(),
    )
    .await;
    let server_ufrag = client
        .answer
        .lines()
        .find_map(|l| l.trim_end().strip_prefix("a=ice-ufrag:"))
        .unwrap()
        .to_owned();
    let target = server.media.udp_addrs()[0];
    assert_eq!(echo(&mut client, "before", 20).await, 20);
    let http = reqwest::Client::new();
    let scrape = || async {
        let r = http.get(format!("{base}/metrics")).send().await.unwrap();
        r.text().await.unwrap()
    };

    let mut rss = Vec::new();
    for round in 0..2 {
        let flooding = tokio::spawn(flood(target, server_ufrag.clone()));
        // The echo during the flood: the flood shares the two cores and the socket's receive
        // buffer with it, so some loss is the flood's own doing; the session must live on.
        let mut during = (0, 0);
        while !flooding.is_finished() {
            during.0 += echo(&mut client, &format!("during-{round}"), 10).await;
            during.1 += 10;
        }
        flooding.await.unwrap();
        println!(
            "# flood round {round}: {} of {} echoed during {FLOOD} hostile datagrams",
            during.0, during.1
        );
        // Afterwards, everything comes back.
        assert_eq!(echo(&mut client, &format!("after-{round}"), 50).await, 50);
        rss.push(support::rss_kib());
    }
    assert!(client.state().connected && !client.state().ended);
    let counted = support::metric(
        &scrape().await,
        "whip_echo_dropped_packets_total{cause=\"unroutable\"}",
    );
    // Garbage, unknown ufrags and RTP and DTLS from unknown addresses name no session (the
    // kernel may drop some of the flood before the server reads it).
    println!(
        "# unroutable datagrams counted: {counted} of {}",
        2 * FLOOD * 4 / 5
    );
    assert!(
        counted > (FLOOD / 2) as f64,
        "{counted} unroutable datagrams counted"
    );
    let growth = rss[1].saturating_sub(rss[0]);
    println!(
        "# RSS after the first flood {} KiB, after the second {} KiB",
        rss[0], rss[1]
    );
    assert!(
        growth < 8 * 1024,
        "RSS grew {growth} KiB over the second flood"
    );
    support::delete_all_and_stop(server, vec![client]).await;
}
