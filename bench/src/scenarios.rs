//! The four scenarios. Each returns rows for its table.

use std::sync::Arc;
use std::time::{Duration, Instant};

use reqwest::Url;
use tokio::sync::Semaphore;
use whip_conformance::http::Http;
use whip_conformance::peer::{Mode, Options};

use crate::load::{self, ms, quantile, Session, Tally};
use crate::server::{Server, Usage};
use crate::swarm;

/// Concurrent connects while building up a load.
const CONNECT_CONCURRENCY: usize = 16;

fn echo_url(server: &Server, name: &str) -> Url {
    Url::parse(&format!("{}/echo/{name}", server.base)).expect("valid URL")
}

/// Scenario 1: sequential sessions, each timed from POST to 201, to connected, to first echo.
pub struct Connect {
    pub ok: usize,
    pub failed: usize,
    pub post_ms: Vec<f64>,
    pub connected_ms: Vec<f64>,
    pub first_echo_ms: Vec<f64>,
}

pub async fn connect(
    server: &Server,
    http: &Http,
    count: usize,
    exact: bool,
    options: Options,
) -> Connect {
    let mut out = Connect {
        ok: 0,
        failed: 0,
        post_ms: vec![],
        connected_ms: vec![],
        first_echo_ms: vec![],
    };
    let t0 = Instant::now();
    for i in 0..count {
        let url = echo_url(server, &format!("connect-{i}"));
        let mut session = match load::open_with(http, &url, i as u32, Mode::SendRecv, options).await
        {
            Ok(s) => s,
            Err(e) => {
                eprintln!("connect {i}: {e}");
                out.failed += 1;
                continue;
            }
        };
        // Stream like a microphone until the first echo arrives.
        let first = first_echo(&mut session, t0, exact).await;
        match first {
            Some(at) => {
                out.ok += 1;
                out.post_ms.push(session.post_ms);
                out.connected_ms.push(session.connected_ms);
                out.first_echo_ms.push(ms(at - session.client.posted_at));
            }
            None => out.failed += 1,
        }
        session.close().await;
    }
    out
}

async fn first_echo(session: &mut Session, t0: Instant, exact: bool) -> Option<Instant> {
    let mut tick = tokio::time::interval(Duration::from_millis(20));
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut seq = 0;
    loop {
        tokio::select! {
            _ = tick.tick() => {
                if Instant::now() > deadline { return None; }
                session.sender.send(&load::payload(session.id, seq, t0));
                seq += 1;
            }
            packet = session.client.received.recv() => {
                let packet = packet?;
                if !exact || load::parse(&packet.payload).is_some() {
                    return Some(Instant::now());
                }
            }
        }
    }
}

/// Scenario 2: N concurrent echo sessions for a while.
pub struct Capacity {
    pub sessions: usize,
    pub connected: usize,
    pub seconds: f64,
    pub cpu_pct: f64,
    pub cpu_us_per_packet: f64,
    /// The kernel's part of `cpu_us_per_packet` (system time: the UDP stack, on loopback also
    /// delivering each packet into the receiver's socket).
    pub sys_us_per_packet: f64,
    pub loss_pct: f64,
    pub rtt_p50_ms: f64,
    pub rtt_p99_ms: f64,
    pub rss_kib_per_session: f64,
}

/// Opens `n` sessions of `mode`, session `i` at `url(i)`, `CONNECT_CONCURRENCY` at a time.
/// Failures are reported on stderr under `label` and left out.
async fn open_many(
    http: &Http,
    n: usize,
    mode: Mode,
    label: &str,
    url: impl Fn(usize) -> Url,
) -> Vec<Session> {
    let gate = Arc::new(Semaphore::new(CONNECT_CONCURRENCY));
    let mut tasks = Vec::new();
    for i in 0..n {
        let (gate, http, url) = (gate.clone(), http.clone(), url(i));
        tasks.push(tokio::spawn(async move {
            let _permit = gate.acquire().await;
            load::open(&http, &url, i as u32, mode).await
        }));
    }
    let mut sessions = Vec::new();
    for task in tasks {
        match task.await {
            Ok(Ok(s)) => sessions.push(s),
            Ok(Err(e)) => eprintln!("{label}: {e}"),
            Err(e) => eprintln!("{label}: {e}"),
        }
    }
    sessions
}

pub async fn capacity(
    server: &Server,
    http: &Http,
    n: usize,
    seconds: u64,
    exact: bool,
) -> Capacity {
    let idle_before = server.usage();
    let urls = (0..n)
        .map(|i| echo_url(server, &format!("cap{n}-{i}")))
        .collect();
    let (outcome, marks) =
        match swarm::run::step(http, server.pid(), urls, seconds, exact, None).await {
            Ok(done) => done,
            Err(e) => {
                eprintln!("capacity {n}: {e}");
                (swarm::Outcome::default(), swarm::run::Marks::default())
            }
        };
    if outcome.send_failures > 0 {
        eprintln!(
            "capacity {n}: {} probes not sent by the load generator",
            outcome.send_failures
        );
    }
    summarize(
        n,
        outcome.connected,
        seconds as f64,
        idle_before,
        marks.idle,
        marks.start,
        marks.end,
        outcome.tally,
    )
}

#[allow(clippy::too_many_arguments)]
fn summarize(
    n: usize,
    connected: usize,
    seconds: f64,
    before: Usage,
    idle: Usage,
    start: Usage,
    end: Usage,
    mut tally: Tally,
) -> Capacity {
    let cpu = end.cpu_s - start.cpu_s;
    let mut rtt: Vec<f64> = tally.rtt_us.drain(..).map(|u| u as f64 / 1000.0).collect();
    Capacity {
        sessions: n,
        connected,
        seconds,
        cpu_pct: cpu / seconds * 100.0,
        cpu_us_per_packet: cpu * 1e6 / tally.received.max(1) as f64,
        sys_us_per_packet: (end.sys_s - start.sys_s) * 1e6 / tally.received.max(1) as f64,
        loss_pct: 100.0 * (1.0 - tally.received as f64 / tally.sent.max(1) as f64),
        rtt_p50_ms: quantile(&mut rtt, 0.5),
        rtt_p99_ms: quantile(&mut rtt, 0.99),
        rss_kib_per_session: (idle.rss_kib as f64 - before.rss_kib as f64)
            / connected.max(1) as f64,
    }
}

async fn close_all(sessions: Vec<Session>) {
    let gate = Arc::new(Semaphore::new(64));
    let tasks: Vec<_> = sessions
        .into_iter()
        .map(|s| {
            let gate = gate.clone();
            tokio::spawn(async move {
                let _permit = gate.acquire().await;
                s.close().await
            })
        })
        .collect();
    for t in tasks {
        let _ = t.await;
    }
}

/// Scenario 3: one WHIP publisher, V WHEP viewers.
pub struct Fanout {
    pub viewers: usize,
    pub connected: usize,
    pub sent: u64,
    pub delivered: u64,
    pub loss_pct: f64,
    pub cpu_us_per_delivered: f64,
    pub cpu_pct: f64,
}

pub async fn fanout(server: &Server, http: &Http, viewers: usize, seconds: u64) -> Option<Fanout> {
    let stream = format!("fanout-{viewers}");
    let whep = Url::parse(&format!("{}/whep/{stream}", server.base)).ok()?;
    let whip = Url::parse(&format!("{}/whip/{stream}", server.base)).ok()?;
    let list = open_many(http, viewers, Mode::Recv, &stream, |_| whep.clone()).await;
    let publisher = load::open(http, &whip, u32::MAX, Mode::Send).await.ok()?;
    let connected = list.len();
    let t0 = Instant::now();
    let until = t0 + Duration::from_secs(seconds);
    let start = server.usage();
    let receivers: Vec<_> = list
        .into_iter()
        .map(|mut s| {
            tokio::spawn(async move {
                let tally = load::media(None, &mut s.client, s.id, until, t0, true).await;
                (s, tally)
            })
        })
        .collect();
    let mut publisher = publisher;
    let sender = publisher.sender.clone();
    let sent = load::media(
        Some(&sender),
        &mut publisher.client,
        u32::MAX,
        until,
        t0,
        true,
    )
    .await
    .sent;
    let mut delivered = 0;
    let mut done = Vec::new();
    for r in receivers {
        if let Ok((s, t)) = r.await {
            delivered += t.received;
            done.push(s);
        }
    }
    let end = server.usage();
    done.push(publisher);
    close_all(done).await;
    let cpu = end.cpu_s - start.cpu_s;
    Some(Fanout {
        viewers,
        connected,
        sent,
        delivered,
        loss_pct: 100.0 * (1.0 - delivered as f64 / (sent * connected as u64).max(1) as f64),
        cpu_us_per_delivered: cpu * 1e6 / delivered.max(1) as f64,
        cpu_pct: cpu / seconds as f64 * 100.0,
    })
}

/// Scenario 4: create → media → DELETE cycles.
pub struct ChurnPoint {
    pub cycles: usize,
    pub failed: usize,
    pub usage: Usage,
    pub sessions: Option<usize>,
}

pub async fn churn(server: &Server, http: &Http, cycles: usize, exact: bool) -> Vec<ChurnPoint> {
    const PARALLEL: usize = 8;
    let mut points = vec![ChurnPoint {
        cycles: 0,
        failed: 0,
        usage: server.usage(),
        sessions: server.sessions().await,
    }];
    let mut checkpoints = vec![100.min(cycles), cycles];
    checkpoints.dedup();
    let t0 = Instant::now();
    let mut done = 0;
    let mut failed = 0;
    for &checkpoint in &checkpoints {
        while done < checkpoint {
            let batch = PARALLEL.min(checkpoint - done);
            let tasks: Vec<_> = (0..batch)
                .map(|k| {
                    let http = http.clone();
                    let url = echo_url(server, &format!("churn-{}", done + k));
                    let id = (done + k) as u32;
                    tokio::spawn(async move {
                        let mut s = load::open(&http, &url, id, Mode::SendRecv).await?;
                        let echoed = first_echo(&mut s, t0, exact).await.is_some();
                        s.close().await;
                        echoed.then_some(()).ok_or_else(|| "no echo".to_string())
                    })
                })
                .collect();
            for t in tasks {
                if !matches!(t.await, Ok(Ok(()))) {
                    failed += 1;
                }
            }
            done += batch;
        }
        // Give the server a moment to finish teardown before reading it.
        tokio::time::sleep(Duration::from_millis(300)).await;
        points.push(ChurnPoint {
            cycles: done,
            failed,
            usage: server.usage(),
            sessions: server.sessions().await,
        });
    }
    points
}
