//! Cluster mode against real processes: a real Redis and three whip-echo nodes on 127.0.0.2,
//! .3 and .4, real WebRTC peers as publishers and viewers.

mod fixture;
#[path = "../support/mod.rs"]
mod support;

use std::time::{Duration, Instant};

use fixture::{temp_dir, Node, Redis, WAIT};
use support::client::{Client, Mode, Options};

/// A connected client of `url`; panics with the answer when refused.
async fn client(url: &str, mode: Mode) -> Client {
    support::connected(url, mode, Options::default()).await
}

/// A cluster of three nodes and its Redis.
struct Cluster {
    redis: Redis,
    a: Node,
    b: Node,
    c: Node,
}

fn cluster(name: &str) -> Cluster {
    let redis = Redis::start(&temp_dir(name));
    let a = Node::start("127.0.0.2", &redis);
    let b = Node::start("127.0.0.3", &redis);
    let c = Node::start("127.0.0.4", &redis);
    Cluster { redis, a, b, c }
}

/// Sends numbered payloads from `publisher` every 20 ms until every viewer has received one
/// (a cascade's first packets arrive once its pull is up), then `count` more; returns, per
/// viewer, the delay of each of those from send to receipt.
async fn flow(publisher: &Client, viewers: &mut [&mut Client], count: usize) -> Vec<Vec<Duration>> {
    let sender = publisher.clone_sender();
    let mut sent: Vec<Instant> = Vec::new();
    let mut delays = vec![Vec::new(); viewers.len()];
    let mut started = vec![false; viewers.len()];
    let deadline = Instant::now() + WAIT;
    let mut measured = 0;
    let mut pace = tokio::time::interval(Duration::from_millis(20));
    while measured < count {
        assert!(Instant::now() < deadline, "media reached every viewer in time");
        pace.tick().await;
        let n = sent.len() as u64;
        sent.push(Instant::now());
        sender.send(&n.to_be_bytes());
        let everyone = started.iter().all(|s| *s);
        for (i, viewer) in viewers.iter_mut().enumerate() {
            // Each packet is waited for once every viewer is receiving; before, what arrived.
            let within = if everyone { WAIT } else { Duration::from_millis(15) };
            while let Some(p) = viewer.try_next_packet(within).await {
                let got = u64::from_be_bytes(p.payload[..8].try_into().unwrap());
                started[i] = true;
                if everyone {
                    delays[i].push(sent[got as usize].elapsed());
                }
                if got == n {
                    break;
                }
            }
        }
        if everyone {
            measured += 1;
        }
    }
    delays
}

fn median(d: &[Duration]) -> Duration {
    let mut d = d.to_vec();
    d.sort();
    d[d.len() / 2]
}

/// Test 1: a publisher on A; viewers on A, B and C all hear it (B and C by cascade); a WHIP
/// POST to B is sent to A with 307, and a client that follows it publishes on A.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn viewers_on_every_node_hear_a_publisher_and_publishers_are_sent_to_its_node() {
    let cl = cluster("fanout");
    let publisher = client(&format!("{}/whip/live", cl.a.base), Mode::Send).await;
    assert!(
        publisher.resource_url.starts_with(&format!("{}/resource/", cl.a.base)),
        "absolute Location naming node A: {}",
        publisher.resource_url
    );
    let mut va = client(&format!("{}/whep/live", cl.a.base), Mode::Recv).await;
    let mut vb = client(&format!("{}/whep/live", cl.b.base), Mode::Recv).await;
    let mut vc = client(&format!("{}/whep/live", cl.c.base), Mode::Recv).await;
    let delays = flow(&publisher, &mut [&mut va, &mut vb, &mut vc], 50).await;
    let [a, b, c] = [&delays[0], &delays[1], &delays[2]].map(|d| median(d));
    eprintln!("publisher → viewer, median of 50: on the holder {a:?}, by cascade {b:?} and {c:?}");

    // RFC 9725 §4.5: a publisher sent to B is redirected to the holder with 307.
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let offer = whip_conformance::peer::offer(Mode::Send);
    let redirected = http
        .post(format!("{}/whip/live", cl.b.base))
        .header("content-type", "application/sdp")
        .body(offer)
        .send()
        .await
        .unwrap();
    assert_eq!(redirected.status(), 307);
    assert_eq!(
        redirected.headers()["location"].to_str().unwrap(),
        format!("{}/whip/live", cl.a.base)
    );
    // A client that follows it (the checker's HTTP client follows 307 with the same body)
    // publishes on A and takes the stream over; every viewer hears the new publisher.
    let second = client(&format!("{}/whip/live", cl.b.base), Mode::Send).await;
    assert!(second.resource_url.starts_with(&format!("{}/resource/", cl.a.base)));
    flow(&second, &mut [&mut va, &mut vb, &mut vc], 10).await;
    drop(cl);
}
