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
        assert!(
            Instant::now() < deadline,
            "media reached every viewer in time"
        );
        pace.tick().await;
        let n = sent.len() as u64;
        sent.push(Instant::now());
        sender.send(&n.to_be_bytes());
        let everyone = started.iter().all(|s| *s);
        for (i, viewer) in viewers.iter_mut().enumerate() {
            // Each packet is waited for once every viewer is receiving; before, what arrived.
            let within = if everyone {
                WAIT
            } else {
                Duration::from_millis(15)
            };
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
        publisher
            .resource_url
            .starts_with(&format!("{}/resource/", cl.a.base)),
        "absolute Location naming node A: {}",
        publisher.resource_url
    );
    let mut va = client(&format!("{}/whep/live", cl.a.base), Mode::Recv).await;
    let mut vb = client(&format!("{}/whep/live", cl.b.base), Mode::Recv).await;
    let mut vc = client(&format!("{}/whep/live", cl.c.base), Mode::Recv).await;
    let delays = flow(&publisher, &mut [&mut va, &mut vb, &mut vc], 50).await;
    let [a, b, c] = [&delays[0], &delays[1], &delays[2]].map(|d| median(d));
    eprintln!("publisher → viewer, median of 50: on the holder {a:?}, by cascade {b:?} and {c:?}");

    // Each node shows its part: A holds the stream at epoch 1 and feeds two edges; B and C
    // pull it (their publisher is the pull).
    let on_a = streams(&cl.a.base).await;
    assert_eq!(
        on_a["cluster"]["holds"],
        serde_json::json!([["live", 1]]),
        "{on_a}"
    );
    assert_eq!(on_a["streams"][0]["publisher"]["kind"], "whip", "{on_a}");
    assert_eq!(on_a["streams"][0]["viewers"], 3, "{on_a}");
    assert_eq!(on_a["streams"][0]["edges"], 2, "{on_a}");
    for edge in [&cl.b, &cl.c] {
        let on_edge = streams(&edge.base).await;
        assert_eq!(
            on_edge["cluster"]["pulls"],
            serde_json::json!([["live", 1, cl.a.base]]),
            "{on_edge}"
        );
        assert_eq!(
            on_edge["streams"][0]["publisher"]["kind"], "relay",
            "{on_edge}"
        );
    }
    let on_a = support::get_text(&format!("{}/metrics", cl.a.base)).await;
    let on_b = support::get_text(&format!("{}/metrics", cl.b.base)).await;
    assert_eq!(support::metric(&on_a, "whip_echo_cluster_leases"), 1.0);
    assert_eq!(support::metric(&on_b, "whip_echo_cluster_pulls"), 1.0);
    assert_eq!(support::metric(&on_b, "whip_echo_cluster_redis_up"), 1.0);
    assert_eq!(
        support::metric(&on_b, "whip_echo_cluster_redis_errors_total"),
        0.0
    );

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
    assert!(second
        .resource_url
        .starts_with(&format!("{}/resource/", cl.a.base)));
    flow(&second, &mut [&mut va, &mut vb, &mut vc], 10).await;

    // B's last viewer leaves: after --cluster-edge-idle its pull ends, at A too.
    assert_eq!(vb.delete().await, 200);
    tokio::task::block_in_place(|| cl.b.proc.wait_for("the pull ended"));
    // B logs it once its DELETE at A has been answered.
    let on_a = streams(&cl.a.base).await;
    assert_eq!(on_a["streams"][0]["edges"], 1, "{on_a}");
    drop(cl);
}

/// A node that stops (SIGTERM) gives its leases and heartbeat up on the way out: its
/// publisher's reconnect through B is served by B at once, without a 307 or waiting for a TTL.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_that_stops_hands_its_streams_over_at_once() {
    let mut cl = cluster("handover");
    let publisher = client(&format!("{}/whip/live", cl.a.base), Mode::Send).await;
    let mut vc = client(&format!("{}/whep/live", cl.c.base), Mode::Recv).await;
    flow(&publisher, &mut [&mut vc], 5).await;
    cl.a.proc.signal("TERM");
    tokio::task::block_in_place(|| cl.a.proc.wait_for("cluster: left"));
    let moved = client(&format!("{}/whip/live", cl.b.base), Mode::Send).await;
    assert!(moved
        .resource_url
        .starts_with(&format!("{}/resource/", cl.b.base)));
    flow(&moved, &mut [&mut vc], 10).await;
    cl.a.proc.reap();
}

/// A client of `url` that tries again, as an encoder reconnects (every 100 ms), until its POST
/// succeeds; connected.
async fn reconnect(url: &str, mode: Mode) -> Client {
    let url = reqwest::Url::parse(url).unwrap();
    let http = whip_conformance::http::Http::new(None);
    let loopback = std::net::IpAddr::from([127, 0, 0, 1]);
    let deadline = Instant::now() + WAIT;
    let mut pace = tokio::time::interval(Duration::from_millis(100));
    loop {
        pace.tick().await;
        match Client::connect_with_options(&http, &url, mode, loopback, Options::default()).await {
            Ok(mut c) => {
                c.wait_connected(WAIT).await;
                return c;
            }
            Err(r) => assert!(Instant::now() < deadline, "reconnected in time: {r:?}"),
        }
    }
}

/// `GET /api/streams` of a node, as JSON.
async fn streams(base: &str) -> serde_json::Value {
    support::get_json(&format!("{base}/api/streams")).await
}

/// The epoch at which the node at `base` holds `stream`, if it does.
async fn held_epoch(base: &str, stream: &str) -> Option<u64> {
    let list = streams(base).await;
    list["cluster"]["holds"]
        .as_array()?
        .iter()
        .find(|h| h[0] == stream)
        .and_then(|h| h[1].as_u64())
}

/// Test 2: kill -9 the holder. The publisher reconnects through B (307 to A while A's
/// heartbeat lives, then B takes the stream at a new epoch); the viewer on C keeps its
/// connection and hears the new publisher through a pull from B.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_the_holder_dies_the_stream_moves_and_edge_viewers_stay() {
    let mut cl = cluster("failover");
    let publisher = client(&format!("{}/whip/live", cl.a.base), Mode::Send).await;
    let mut vc = client(&format!("{}/whep/live", cl.c.base), Mode::Recv).await;
    flow(&publisher, &mut [&mut vc], 5).await;
    assert_eq!(held_epoch(&cl.a.base, "live").await, Some(1));

    let killed = Instant::now();
    cl.a.proc.signal("KILL");
    cl.a.proc.reap();
    let moved = reconnect(&format!("{}/whip/live", cl.b.base), Mode::Send).await;
    let published = killed.elapsed();
    assert!(moved
        .resource_url
        .starts_with(&format!("{}/resource/", cl.b.base)));
    assert_eq!(held_epoch(&cl.b.base, "live").await, Some(2), "a new epoch");
    flow(&moved, &mut [&mut vc], 10).await;
    let heard = killed.elapsed();
    assert!(!vc.state().ended, "the viewer on C kept its connection");
    eprintln!("failover: kill -9 → publisher's 201 on B {published:?}, → audio at C {heard:?}");
    drop(publisher);
}

/// Test 3: SIGSTOP the holder until its heartbeat has expired (another node could take the
/// stream from then on) while its lease still stands, then SIGCONT: it fences itself by its own
/// clock (its publisher ends, its claim is gone) and refuses a pull at its old epoch, which it
/// took before the freeze.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_holder_frozen_past_its_heartbeat_fences_itself() {
    let cl = cluster("fence");
    let publisher = client(&format!("{}/whip/live", cl.a.base), Mode::Send).await;
    let mut vb = client(&format!("{}/whep/live", cl.b.base), Mode::Recv).await;
    flow(&publisher, &mut [&mut vb], 5).await;
    let epoch = held_epoch(&cl.a.base, "live")
        .await
        .expect("A holds the stream");
    let node = streams(&cl.a.base).await["cluster"]["node"]
        .as_str()
        .unwrap()
        .to_owned();
    let tag = u16::from_str_radix(&node, 16).unwrap();
    // A pull token as node B would mint it (a token of a tag no live node has is refused).
    let b_node = streams(&cl.b.base).await["cluster"]["node"]
        .as_str()
        .unwrap()
        .to_owned();
    let b_tag = u16::from_str_radix(&b_node, 16).unwrap();
    let mint_as = |puller: u16, epoch: u64| {
        whip_echo::cluster::token::mint(
            fixture::SECRET,
            "live",
            tag,
            puller,
            epoch,
            std::time::SystemTime::now(),
        )
    };
    let mint = |epoch: u64| mint_as(b_tag, epoch);
    let pull_with = |token: String| {
        reqwest::Client::new()
            .post(format!("{}/whep/live", cl.a.base))
            .header("content-type", "application/sdp")
            .bearer_auth(token)
            .body(whip_conformance::peer::offer(Mode::Recv))
            .send()
    };
    let pull = |epoch: u64| pull_with(mint(epoch));
    // A token is taken once: the same one again (a replay) is refused.
    let token = mint(epoch);
    let first = pull_with(token.clone()).await.unwrap();
    assert_eq!(first.status(), 201);
    let replayed = pull_with(token).await.unwrap();
    assert_eq!(replayed.status(), 401, "a replayed pull token is refused");
    let no_node = pull_with(mint_as(b_tag ^ 0x5555, epoch)).await.unwrap();
    assert_eq!(no_node.status(), 401, "a token of no live node is refused");
    let other_epoch = pull(epoch + 1).await.unwrap();
    assert_eq!(
        other_epoch.status(),
        409,
        "the holder refuses another epoch"
    );

    let expiries = cl.redis.expiries();
    cl.a.proc.signal("STOP");
    let heartbeat = format!("whip-echo:node:{node}");
    tokio::task::block_in_place(|| expiries.wait_for(&heartbeat));
    cl.a.proc.signal("CONT");
    tokio::task::block_in_place(|| cl.a.proc.wait_for("its lease was not renewed in time"));

    assert_eq!(
        held_epoch(&cl.a.base, "live").await,
        None,
        "A dropped its claim"
    );
    let list = streams(&cl.a.base).await;
    let live = list["streams"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["stream"] == "live");
    assert!(
        live.is_none_or(|s| s["publisher"].is_null()),
        "A no longer serves the stream: {list}"
    );
    let stale = pull(epoch).await.unwrap();
    assert_eq!(stale.status(), 409, "a pull at the old epoch is refused");
    drop(publisher);
}

/// Test 4: Redis stops and comes back empty. Live sessions keep flowing, a viewer on an edge
/// included; new POSTs get 503 with Retry-After meanwhile; then the holder takes its lease
/// again and placement works: a new viewer on C hears the stream by cascade.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_outage_keeps_live_sessions_and_placement_recovers() {
    let mut cl = cluster("outage");
    let publisher = client(&format!("{}/whip/live", cl.a.base), Mode::Send).await;
    let mut va = client(&format!("{}/whep/live", cl.a.base), Mode::Recv).await;
    let mut vb = client(&format!("{}/whep/live", cl.b.base), Mode::Recv).await;
    flow(&publisher, &mut [&mut va, &mut vb], 5).await;

    cl.redis.stop();
    tokio::task::block_in_place(|| cl.a.proc.wait_for("Redis unreachable"));
    let metrics = support::get_text(&format!("{}/metrics", cl.a.base)).await;
    assert_eq!(support::metric(&metrics, "whip_echo_cluster_redis_up"), 0.0);
    assert!(support::metric(&metrics, "whip_echo_cluster_redis_errors_total") >= 1.0);
    flow(&publisher, &mut [&mut va, &mut vb], 50).await;
    let http = reqwest::Client::new();
    for url in [
        format!("{}/whip/other", cl.b.base),
        format!("{}/whip/live", cl.c.base),
    ] {
        let refused = http
            .post(&url)
            .header("content-type", "application/sdp")
            .body(whip_conformance::peer::offer(Mode::Send))
            .send()
            .await
            .unwrap();
        assert_eq!(refused.status(), 503, "{url}");
        assert!(refused.headers().contains_key("retry-after"), "{url}");
    }

    cl.redis.restart();
    tokio::task::block_in_place(|| cl.a.proc.wait_for("lease taken again"));
    flow(&publisher, &mut [&mut va, &mut vb], 10).await;
    // C's Redis connection comes back on its own: it takes viewers again.
    let mut vc = reconnect(&format!("{}/whep/live", cl.c.base), Mode::Recv).await;
    flow(&publisher, &mut [&mut va, &mut vb, &mut vc], 10).await;
}

/// Test 5: PATCH, GET and DELETE of A's session sent to B and C reach A.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_for_a_resource_on_the_wrong_node_reach_its_node() {
    let cl = cluster("forward");
    let mut publisher = client(&format!("{}/whip/live", cl.a.base), Mode::Send).await;
    let path = publisher
        .resource_url
        .strip_prefix(&cl.a.base)
        .expect("A's resource")
        .to_owned();
    let etag = publisher.etag.clone().expect("an ETag");
    let http = reqwest::Client::new();
    let patch = |base: &str, tag: &str| {
        http.patch(format!("{base}{path}"))
            .header("content-type", "application/trickle-ice-sdpfrag")
            .header("if-match", tag)
            .body("a=end-of-candidates\r\n")
            .send()
    };
    assert_eq!(patch(&cl.b.base, &etag).await.unwrap().status(), 204);
    let stale = patch(&cl.c.base, "\"stale\"").await.unwrap();
    assert_eq!(stale.status(), 412, "A's answer, relayed");
    let get = |base: String| http.get(base).send();
    assert_eq!(
        get(format!("{}{path}", cl.c.base)).await.unwrap().status(),
        204
    );
    // A request another node already forwarded is answered where it lands, never sent on.
    let hop = http
        .get(format!("{}{path}", cl.b.base))
        .header("x-whip-echo-forwarded", "1")
        .send()
        .await
        .unwrap();
    assert_eq!(hop.status(), 404);
    // A video viewer's layer URL too: changed on B, asked on C, both answered by A.
    let video = Options {
        video: Some(support::client::VideoCodec::Vp8),
        ..Options::default()
    };
    let viewer = support::connected(&format!("{}/whep/layers", cl.a.base), Mode::Recv, video).await;
    let layer = format!(
        "{}/layer",
        viewer
            .resource_url
            .strip_prefix(&cl.a.base)
            .expect("A's resource")
    );
    let chosen = http
        .post(format!("{}{layer}", cl.b.base))
        .header("content-type", "application/json")
        .body(r#"{"encodingId":"q"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(chosen.status(), 200);
    let state = http
        .get(format!("{}{layer}", cl.c.base))
        .send()
        .await
        .unwrap();
    assert_eq!(state.status(), 200);
    let state: serde_json::Value = serde_json::from_str(&state.text().await.unwrap()).unwrap();
    assert_eq!(state["requested"], "q", "{state}");
    assert_eq!(viewer.delete().await, 200);
    let deleted = http
        .delete(format!("{}{path}", cl.c.base))
        .send()
        .await
        .unwrap();
    assert_eq!(deleted.status(), 200);
    assert!(
        publisher.until(WAIT, |s| s.ended).await,
        "the publisher is told its session ended"
    );
    assert_eq!(
        get(format!("{}{path}", cl.a.base)).await.unwrap().status(),
        410
    );
    assert_eq!(
        get(format!("{}{path}", cl.b.base)).await.unwrap().status(),
        410
    );
}

/// Test 6: a flood of GETs of made-up resource ids of other nodes, sent to the holder for two
/// lease TTLs, asks Redis about a handful of them (the node table answers the rest), and the
/// holder keeps its stream: its renewals have a connection of their own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_other_nodes_resource_ids_costs_redis_little_and_fences_nobody() {
    let cl = cluster("lookups");
    let mut publisher = client(&format!("{}/whip/live", cl.a.base), Mode::Send).await;
    let epoch = held_epoch(&cl.a.base, "live").await.expect("A holds live");
    let gets_before = cl.redis.calls("get");
    let until = Instant::now() + Duration::from_secs(12);
    let mut senders = Vec::new();
    for _ in 0..8 {
        let base = cl.a.base.clone();
        senders.push(tokio::spawn(async move {
            let http = reqwest::Client::builder().timeout(WAIT).build().unwrap();
            let mut statuses = std::collections::BTreeMap::<u16, u32>::new();
            while Instant::now() < until {
                let id = rand::random::<u128>();
                let r = http.get(format!("{base}/resource/{id:032x}")).send().await;
                *statuses.entry(r.unwrap().status().as_u16()).or_default() += 1;
            }
            statuses
        }));
    }
    let mut statuses = std::collections::BTreeMap::<u16, u32>::new();
    for sender in senders {
        for (status, n) in sender.await.unwrap() {
            *statuses.entry(status).or_default() += n;
        }
    }
    let requests: u32 = statuses.values().sum();
    let gets = cl.redis.calls("get") - gets_before;
    eprintln!("{requests} GETs of other nodes' made-up ids in 12 s: {statuses:?}; Redis GET ran {gets} times (the keepers' scripts included)");
    // Dead tags are 404; over the lookup budget, 503 (retry).
    assert!(
        statuses.keys().all(|s| [404, 503].contains(s)),
        "{statuses:?}"
    );
    // Each node's keeper reads a few keys a tick (heartbeat, renewals, the node table): about
    // 200 in 12 s for three nodes; lookups add at most 5 a second. Before: one per request.
    assert!(gets < 600, "{gets} Redis GETs for {requests} requests");
    assert!(requests > 500, "a flood: {requests}");
    assert_eq!(
        held_epoch(&cl.a.base, "live").await,
        Some(epoch),
        "not fenced"
    );
    assert!(
        !publisher
            .until(Duration::from_millis(100), |s| s.ended)
            .await,
        "the publisher lives on"
    );
}

/// Test 7: a node record written into Redis by someone without the cluster secret (a forged
/// heartbeat pointing elsewhere, and a lease it "holds") is not followed: no 307 and no forwarded
/// request goes to its address.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_records_not_signed_with_the_cluster_secret_are_not_followed() {
    let cl = cluster("forged");
    let forged = r#"{"url":"http://127.0.0.9:9","sessions":0,"streams":0,"at":0,"mac":""}"#;
    cl.redis
        .cli(&["SET", "whip-echo:node:beef", forged, "PX", "60000"]);
    cl.redis.cli(&["SADD", "whip-echo:nodes", "beef"]);
    cl.redis
        .cli(&["SET", "whip-echo:lease:taken", "beef:999", "PX", "60000"]);
    // The stream's "holder" is no node: no 307 to 127.0.0.9 (before), but 503 until its lease
    // expires.
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let offer = whip_conformance::peer::offer(Mode::Send);
    let post = http
        .post(format!("{}/whip/taken", cl.b.base))
        .header("content-type", "application/sdp")
        .body(offer)
        .send()
        .await
        .unwrap();
    assert_eq!(post.status(), 503);
    // A resource of the forged node is no one's (before: forwarded there, 502).
    let id = format!("beef{}", "0".repeat(28));
    for base in [&cl.a.base, &cl.c.base] {
        let r = http
            .get(format!("{base}/resource/{id}"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 404, "{base}");
    }
    tokio::task::block_in_place(|| {
        cl.b.proc
            .wait_for("not signed with this node's --cluster-secret")
    });
}
