//! Churn: 1,000 sessions created, streamed on and deleted, and 1,000 whose client vanishes
//! without a word (the server reaps them on the ICE timeout). Afterwards no session is left,
//! open file descriptors are back where they were and the resident set has not grown beyond a
//! few percent. (`bench/run.sh` runs 10,000 cycles against the release binary.)

mod support;

use std::time::Duration;

use support::client::{Mode, Options};
use support::{start, wait_idle, WAIT};
use whip_echo::config::Config;

const CYCLES: usize = 1000;
/// Cycles run at once.
const AT_ONCE: usize = 10;
/// Vanished sessions left to the reaper before it is waited for: bounds how many are alive at
/// once, so the allocator's high-water mark does not depend on the machine's speed.
const VANISHED_AT_MOST: usize = 200;

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").unwrap().count()
}

/// One session on `/echo/{stream}`: connected, one packet echoed; then deleted, or abandoned
/// without DTLS close_notify or DELETE.
async fn cycle(base: &str, stream: String, vanish: bool) {
    let mut client = support::connected(
        &format!("{base}/echo/{stream}"),
        Mode::SendRecv,
        Options::default(),
    )
    .await;
    // The client may be up a moment before the server's side: resend until one comes back.
    let echoed = tokio::time::timeout(WAIT, async {
        loop {
            client.send(b"churn");
            if let Some(p) = client.try_next_packet(Duration::from_millis(50)).await {
                break p;
            }
        }
    })
    .await
    .expect("an echo in time");
    assert_eq!(&echoed.payload[..], b"churn");
    if vanish {
        client.vanish().await;
    } else {
        assert_eq!(client.delete().await, 200);
        client.close().await;
    }
}

async fn cycles(base: &str, tag: &str, n: usize, vanish: bool) {
    for batch in 0..n / AT_ONCE {
        let runs: Vec<_> = (0..AT_ONCE)
            .map(|i| {
                let base = base.to_owned();
                let stream = format!("{tag}-{batch}-{i}");
                tokio::spawn(async move { cycle(&base, stream, vanish).await })
            })
            .collect();
        for run in runs {
            run.await.unwrap();
        }
    }
}

/// `n` vanished cycles, `VANISHED_AT_MOST` at a time, each lot reaped before the next; the
/// last lot too (through the one teardown path, on the ICE timeout).
async fn vanished(server: &whip_echo::server::Running, tag: &str, n: usize) {
    let base = server.base_url();
    for lot in 0..n / VANISHED_AT_MOST {
        cycles(&base, &format!("{tag}-{lot}"), VANISHED_AT_MOST, true).await;
        support::wait_reaped(server).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_deleted_and_a_thousand_vanished_sessions_leave_nothing_behind() {
    let mut config = Config::for_tests();
    // Vanished clients are reaped on consent expiry: 1 s instead of 30 here.
    config.ice_timeout = Duration::from_secs(1);
    config.max_sessions_per_ip = 0;
    // Every session comes from one address, 10 at once: the per-client rate is lifted (it is
    // tested in `limits.rs`).
    config.request_rate_per_ip = 0;
    let server = start(config).await;
    let base = server.base_url();
    // Warm-up: allocator pools, rtc's lazily built tables, the runtime's threads, and the
    // high-water mark of vanished sessions alive at once (up to `VANISHED_AT_MOST`, each living
    // for the ICE timeout): memory the allocator keeps for reuse, not a leak. The warm-up runs
    // as many vanished cycles as the measured round.
    cycles(&base, "warm", 50, false).await;
    // Twice: on a loaded machine (a build beside it) the first round's high-water mark of
    // sessions alive at once came out lower than the measured round's, which then looked like
    // 12 % growth (46,396 → 52,324 KiB) where a quiet run grows 0.6 %.
    vanished(&server, "warm-vanished", CYCLES).await;
    vanished(&server, "warm-vanished-again", CYCLES).await;
    let (fds, rss) = (open_fds(), support::rss_kib());

    cycles(&base, "deleted", CYCLES, false).await;
    wait_idle(&server).await;
    vanished(&server, "vanished", CYCLES).await;
    let (fds_after, rss_after) = (open_fds(), support::rss_kib());
    println!(
        "# churn: {CYCLES} deleted + {CYCLES} vanished: fds {fds} -> {fds_after}, RSS {rss} -> \
         {rss_after} KiB"
    );
    assert!(fds_after <= fds, "open fds {fds} -> {fds_after}");
    let growth = rss_after.saturating_sub(rss) as f64 / rss as f64;
    // A leak of 2 KiB per session would show as about 8 %.
    assert!(growth < 0.08, "RSS grew {:.1} %", growth * 100.0);
    server.shutdown().await.unwrap();
}
