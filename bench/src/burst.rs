//! Scenario 5: signalling must not stall media. `sessions` echo sessions stream probes for
//! `seconds`; one second in, `posts` offers are POSTed at once (all concurrent, as a reconnect storm
//! after a network blip would). The echo RTT of the probes sent while the burst is being answered
//! is compared with that of the probes sent outside it, in the same run.

use std::sync::mpsc as std_mpsc;
use std::time::{Duration, Instant};

use reqwest::{Method, Url};
use whip_conformance::http::Http;
use whip_conformance::peer::{self, Mode};

use crate::load::{ms, quantile};
use crate::server::Server;
use crate::swarm;

/// How long after streaming starts the burst is sent.
const BURST_AFTER: Duration = Duration::from_secs(1);
/// Probes sent this long after the last 201 still count as "during the burst" (their echo may
/// have queued behind it).
const TAIL: Duration = Duration::from_millis(200);

/// What the scenario measured.
pub struct Burst {
    /// Where the POSTs went.
    pub target: &'static str,
    pub sessions: usize,
    pub connected: usize,
    pub posts: usize,
    pub created: usize,
    /// First POST sent → last response, ms.
    pub burst_ms: f64,
    /// POST → response, ms: p50 and p99.
    pub post_p50_ms: f64,
    pub post_p99_ms: f64,
    /// Echo RTT, ms: (p50, p99, max) outside and during the burst, and sample counts.
    pub quiet: (f64, f64, f64, usize),
    pub during: (f64, f64, f64, usize),
    pub loss_pct: f64,
}

/// Streams on `server` and sends the burst to `target`: the same server, or (a control run)
/// another server process on the same machine, which shows what the burst costs through CPU
/// share alone.
pub async fn run(
    server: &Server,
    target: &Server,
    http: &Http,
    sessions: usize,
    posts: usize,
    seconds: u64,
) -> Burst {
    let urls = (0..sessions)
        .map(|i| url(server, "echo", &format!("burst-live-{i}")))
        .collect();
    let (started_tx, started_rx) = std_mpsc::channel::<Instant>();
    let hook: swarm::run::Hook = Box::new(move |starting| {
        if starting {
            let _ = started_tx.send(Instant::now());
        }
    });
    let offer = peer::offer(Mode::SendRecv);
    let burst = {
        let http = http.clone();
        let base = target.base.clone();
        tokio::spawn(async move {
            let started = tokio::task::spawn_blocking(move || started_rx.recv().ok())
                .await
                .ok()
                .flatten()?;
            tokio::time::sleep_until((started + BURST_AFTER).into()).await;
            let t0 = Instant::now();
            let tasks: Vec<_> = (0..posts)
                .map(|i| {
                    let (http, offer) = (http.clone(), offer.clone());
                    let url = Url::parse(&format!("{base}/echo/burst-{i}")).expect("URL");
                    tokio::spawn(async move {
                        let sent = Instant::now();
                        let ex = http.post(&url, Some("application/sdp"), offer).await.ok();
                        let location = ex.filter(|e| e.status == 201).and_then(|e| e.location());
                        (ms(sent.elapsed()), location)
                    })
                })
                .collect();
            let mut done = Vec::with_capacity(posts);
            for task in tasks {
                if let Ok(result) = task.await {
                    done.push(result);
                }
            }
            Some((started, t0, Instant::now(), done))
        })
    };
    let step = swarm::run::step(http, server.pid(), urls, seconds, true, Some(hook)).await;
    let (outcome, _) = step.unwrap_or_else(|e| {
        eprintln!("burst: {e}");
        Default::default()
    });
    let Some((started, t0, t1, done)) = burst.await.ok().flatten() else {
        eprintln!("burst: the burst never ran");
        std::process::exit(1);
    };
    // The burst's sessions never connect: delete them.
    for (_, location) in &done {
        if let Some(location) = location {
            let _ = http.call(Method::DELETE, location).await;
        }
    }
    let mut post_ms: Vec<f64> = done.iter().map(|(ms, _)| *ms).collect();
    // The pacer's t0 is the instant streaming started (within the hook's few µs).
    let from = t0.duration_since(started).as_micros() as u64;
    let to = (t1 + TAIL).duration_since(started).as_micros() as u64;
    let tally = &outcome.tally;
    let (mut quiet, mut during) = (Vec::new(), Vec::new());
    for (&rtt, &sent) in tally.rtt_us.iter().zip(&tally.sent_us) {
        let rtt = rtt as f64 / 1000.0;
        if (from..=to).contains(&sent) {
            during.push(rtt);
        } else {
            quiet.push(rtt);
        }
    }
    Burst {
        target: if std::ptr::eq(server, target) {
            "the streaming server"
        } else {
            "another whip-echo process"
        },
        sessions,
        connected: outcome.connected,
        posts,
        created: done.iter().filter(|(_, l)| l.is_some()).count(),
        burst_ms: ms(t1 - t0),
        post_p50_ms: quantile(&mut post_ms, 0.5),
        post_p99_ms: quantile(&mut post_ms, 0.99),
        quiet: summary(&mut quiet),
        during: summary(&mut during),
        loss_pct: 100.0 * (1.0 - tally.received as f64 / tally.sent.max(1) as f64),
    }
}

fn summary(v: &mut [f64]) -> (f64, f64, f64, usize) {
    (
        quantile(v, 0.5),
        quantile(v, 0.99),
        quantile(v, 1.0),
        v.len(),
    )
}

fn url(server: &Server, endpoint: &str, name: &str) -> Url {
    Url::parse(&format!("{}/{endpoint}/{name}", server.base)).expect("valid URL")
}

/// The report's table.
pub fn table(b: &Burst) -> String {
    format!(
        "### 5. Signalling burst ({} POSTs at once, to {}) while {} echo sessions stream\n\n\
         | connected | created | burst (first POST → last answer) ms | POST → answer p50 / p99 ms | \
         echo RTT outside the burst p50 / p99 / max ms (samples) | echo RTT during the burst \
         p50 / p99 / max ms (samples) | echo loss % |\n|---|---|---|---|---|---|---|\n\
         | {} / {} | {} / {} | {:.0} | {:.1} / {:.1} | {:.2} / {:.2} / {:.2} ({}) | \
         {:.2} / {:.2} / {:.2} ({}) | {:.2} |\n",
        b.posts,
        b.target,
        b.sessions,
        b.connected,
        b.sessions,
        b.created,
        b.posts,
        b.burst_ms,
        b.post_p50_ms,
        b.post_p99_ms,
        b.quiet.0,
        b.quiet.1,
        b.quiet.2,
        b.quiet.3,
        b.during.0,
        b.during.1,
        b.during.2,
        b.during.3,
        b.loss_pct,
    )
}
