//! 5 % random UDP loss (nftables `numgen random mod 100 < 5 drop`; `tc netem` is missing from
//! this kernel) in a network namespace of the test's own: an echo session streams for 30 s and
//! keeps going, the loss its client sees stays near the injected rate, nothing is torn down and
//! consent freshness (RFC 7675, whose checks are dropped at the same rate) survives.
//!
//! The test re-runs itself inside `unshare --net` (with a user namespace when not root), where
//! only the namespace's loopback exists and the drop rule applies to nothing else.

mod support;

use std::process::Command;
use std::time::{Duration, Instant};

use support::client::{Mode, Options};
use support::start;
use whip_echo::config::Config;

/// Set in the re-run inside the namespace.
const INSIDE: &str = "WHIP_ECHO_LOSS_NETNS";
const SECONDS: u64 = 30;
/// Packets per second (one 20 ms audio frame each).
const RATE: u64 = 50;

#[test]
fn five_percent_udp_loss_for_30_s_keeps_the_echo_and_consent_alive() {
    if std::env::var_os(INSIDE).is_some() {
        return inside();
    }
    let root = Command::new("id").arg("-u").output().unwrap();
    let mut unshare = Command::new("unshare");
    if String::from_utf8_lossy(&root.stdout).trim() != "0" {
        unshare.args(["--user", "--map-root-user"]);
    }
    let exe = std::env::current_exe().unwrap();
    let status = unshare
        .args(["--net", "--"])
        .arg(exe)
        .args([
            "--exact",
            "five_percent_udp_loss_for_30_s_keeps_the_echo_and_consent_alive",
            "--nocapture",
        ])
        .env(INSIDE, "1")
        .status()
        .expect("unshare (util-linux) runs");
    assert!(
        status.success(),
        "the test inside its namespace: {status:?}"
    );
}

fn run(program: &str, args: &[&str]) {
    let out = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{program} (apt install iproute2 nftables): {e}"));
    assert!(
        out.status.success(),
        "{program} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn inside() {
    run("ip", &["link", "set", "lo", "up"]);
    // Every UDP datagram leaving anything in this namespace (so each direction of the echo) is
    // dropped with probability 5 %.
    run("nft", &["add", "table", "inet", "loss"]);
    run(
        "nft",
        &["add chain inet loss out { type filter hook output priority 0 ; }"],
    );
    run(
        "nft",
        &["add rule inet loss out meta l4proto udp numgen random mod 100 < 5 counter drop"],
    );
    tokio::runtime::Runtime::new()
        .unwrap()
        .block_on(echo_through_loss());
}

async fn echo_through_loss() {
    let server = start(Config::for_tests()).await;
    let url = format!("{}/echo/lossy", server.base_url());
    let mut client = support::connected(&url, Mode::SendRecv, Options::default()).await;
    let sent = SECONDS * RATE;
    let mut received = std::collections::HashSet::new();
    let mut tick = tokio::time::interval(Duration::from_millis(1000 / RATE));
    let started = Instant::now();
    for i in 0..sent {
        tick.tick().await;
        client.send(format!("loss-{i}").as_bytes());
        while let Some(p) = client.try_next_packet(Duration::ZERO).await {
            received.insert(p.payload);
        }
    }
    // The last echoes in flight.
    while let Some(p) = client.try_next_packet(Duration::from_millis(300)).await {
        received.insert(p.payload);
    }
    let lost = 1.0 - received.len() as f64 / sent as f64;
    println!(
        "# 5 % UDP loss each way for {:?}: {} of {sent} echoed, round-trip loss {:.1} % \
         (expected about 9.75 %)",
        started.elapsed(),
        received.len(),
        lost * 100.0
    );
    // Two independent 5 % drops: 1 - 0.95² = 9.75 % lost on the round trip.
    assert!(
        (0.05..0.15).contains(&lost),
        "round-trip loss {:.1} %",
        lost * 100.0
    );
    let state = client.state();
    assert!(state.connected && !state.ended, "{state:?}");
    let stats = server.media.stats().borrow();
    assert_eq!((stats.sessions, stats.connected), (1, 1), "{stats:?}");
    support::delete_all_and_stop(server, vec![client]).await;
}
