//! `whip-echo-bench`: drives whip-echo (and the aiortc baseline) over loopback and prints tables
//! with units: webrtc-rs client peers for connect, fan-out and churn, the one-thread swarm
//! (`swarm/`) for the capacity sweep. Run it through `bench/run.sh`, which puts both servers and
//! the load in a network namespace of their own.
#![forbid(unsafe_code)]

mod burst;
mod callgrind;
mod load;
mod plot;
mod scenarios;
mod server;
mod swarm;

use std::fmt::Write as _;
use std::path::PathBuf;

use clap::Parser;
use whip_conformance::http::Http;

use server::{Kind, Server};

/// Benchmarks: connect time, capacity, fan-out, churn.
#[derive(Debug, Parser)]
#[command(name = "whip-echo-bench")]
struct Cli {
    /// Which servers: whip-echo, baseline or both.
    #[arg(long, default_value = "both")]
    servers: String,
    /// A few sessions for a few seconds (CI).
    #[arg(long)]
    smoke: bool,
    /// Scenario 1: sequential sessions.
    #[arg(long, default_value_t = 200)]
    connect: usize,
    /// Scenario 2: concurrent echo sessions per step.
    #[arg(long, value_delimiter = ',', default_values_t = [100, 250, 500, 750, 1000, 2000])]
    sessions: Vec<usize>,
    /// Seconds of media per capacity step and per fan-out step.
    #[arg(long, default_value_t = 30)]
    seconds: u64,
    /// Scenario 3: WHEP viewers per step (whip-echo only).
    #[arg(long, value_delimiter = ',', default_values_t = [10, 100, 1000])]
    viewers: Vec<usize>,
    /// Scenario 4: create → media → DELETE cycles.
    #[arg(long, default_value_t = 10_000)]
    churn: usize,
    /// Scenario 4 for the baseline (aiortc needs ~0.5 s of CPU per cycle).
    #[arg(long, default_value_t = 1_000)]
    baseline_churn: usize,
    /// whip-echo's media loops (`--media-threads`), all on one UDP port; 0: one per core.
    #[arg(long, default_value_t = 1)]
    media_threads: u16,
    /// Only count whip-echo's instructions per echoed packet under callgrind, with as many
    /// sessions as the first `--sessions` value.
    #[arg(long)]
    callgrind: bool,
    /// Only scenario 5: a burst of this many POSTs while the first `--sessions` value of echo
    /// sessions stream for `--seconds` (whip-echo only).
    #[arg(long)]
    burst: Option<usize>,
    /// With `--burst`: send the POSTs to a second whip-echo process instead (a control run that
    /// shows the burst's cost through CPU share alone).
    #[arg(long)]
    burst_elsewhere: bool,
    /// Scenario 1 only, for whip-echo only: sessions whose client puts its candidate in the
    /// offer, then sessions whose client offers none and trickles it by PATCH (RFC 9725 §4.3.2).
    #[arg(long)]
    trickle: bool,
    /// Also write the report to this file.
    #[arg(long)]
    out: Option<PathBuf>,
}

#[tokio::main]
async fn main() {
    let mut cli = Cli::parse();
    if cli.smoke {
        cli.connect = 5;
        cli.sessions = vec![5];
        cli.seconds = 2;
        cli.viewers = vec![5];
        cli.churn = 20;
        cli.baseline_churn = 20;
    }
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    if cli.callgrind {
        let sessions = cli.sessions.first().copied().unwrap_or(8);
        match callgrind::run(&root, &Http::new(None), sessions, cli.seconds).await {
            Ok(report) => print!("{}{report}", header(&cli)),
            Err(e) => {
                eprintln!("callgrind: {e}");
                std::process::exit(1);
            }
        }
        return;
    }
    if let Some(posts) = cli.burst {
        let sessions = cli.sessions.first().copied().unwrap_or(100);
        let server = match Server::start(
            Kind::WhipEcho,
            &root,
            sessions + posts + 100,
            cli.media_threads,
        )
        .await
        {
            Ok(s) => s,
            Err(e) => {
                eprintln!("{e}");
                std::process::exit(1);
            }
        };
        eprintln!(
            "burst: {posts} POSTs while {sessions} sessions stream for {} s",
            cli.seconds
        );
        let other = if cli.burst_elsewhere {
            match Server::start(Kind::WhipEcho, &root, posts + 100, 1).await {
                Ok(s) => Some(s),
                Err(e) => {
                    eprintln!("{e}");
                    std::process::exit(1);
                }
            }
        } else {
            None
        };
        let target = other.as_ref().unwrap_or(&server);
        let b = burst::run(
            &server,
            target,
            &Http::new(None),
            sessions,
            posts,
            cli.seconds,
        )
        .await;
        server.stop().await;
        if let Some(other) = other {
            other.stop().await;
        }
        let report = format!("{}{}", header(&cli), burst::table(&b));
        print!("{report}");
        if let Some(path) = cli.out {
            std::fs::write(&path, &report).expect("write report");
        }
        return;
    }
    if cli.trickle {
        let report = format!("{}{}", header(&cli), trickle_connect(&root, &cli).await);
        print!("{report}");
        if let Some(path) = cli.out {
            std::fs::write(&path, &report).expect("write report");
        }
        return;
    }
    let kinds: Vec<Kind> = match cli.servers.as_str() {
        "whip-echo" => vec![Kind::WhipEcho],
        "baseline" => vec![Kind::Baseline],
        _ => vec![Kind::WhipEcho, Kind::Baseline],
    };
    let http = Http::new(None);
    let mut report = header(&cli);
    let mut connect_p50 = Vec::new();
    let mut capacity_rows = Vec::new();
    let mut churn_rows = Vec::new();
    let mut fanout_rows = Vec::new();
    let max = cli
        .sessions
        .iter()
        .chain(&cli.viewers)
        .max()
        .copied()
        .unwrap_or(100)
        + 100;
    for &kind in &kinds {
        let exact = kind == Kind::WhipEcho;
        let server = match Server::start(kind, &root, max, cli.media_threads).await {
            Ok(s) => s,
            Err(e) => {
                eprintln!("{e}");
                std::process::exit(1);
            }
        };
        eprintln!("{}: connect x{}", kind.name(), cli.connect);
        let c = scenarios::connect(&server, &http, cli.connect, exact, Default::default()).await;
        connect_p50.push((kind, c.first_echo_ms.clone(), c.post_ms.clone()));
        write_connect(&mut report, kind, c);
        for &n in &cli.sessions {
            eprintln!("{}: capacity {n} sessions x {} s", kind.name(), cli.seconds);
            let row = scenarios::capacity(&server, &http, n, cli.seconds, exact).await;
            let survived = row.connected * 10 >= n * 9 && row.loss_pct < 20.0;
            capacity_rows.push((kind, row));
            if !survived {
                eprintln!("{}: stopping the sweep at {n} sessions", kind.name());
                break;
            }
        }
        if kind == Kind::WhipEcho {
            for &v in &cli.viewers {
                eprintln!("fan-out 1 -> {v}");
                if let Some(row) = scenarios::fanout(&server, &http, v, cli.seconds).await {
                    fanout_rows.push(row);
                }
            }
        }
        let cycles = if kind == Kind::Baseline {
            cli.baseline_churn
        } else {
            cli.churn
        };
        eprintln!("{}: churn x{cycles}", kind.name());
        let points = scenarios::churn(&server, &http, cycles, exact).await;
        churn_rows.push((kind, points));
        server.stop().await;
    }
    write_capacity(&mut report, &capacity_rows);
    write_fanout(&mut report, &fanout_rows);
    write_churn(&mut report, &churn_rows);
    write_ratios(&mut report, &connect_p50, &capacity_rows);
    print!("{report}");
    if let Some(path) = cli.out {
        std::fs::write(&path, &report).expect("write report");
        let dir = path.parent().unwrap_or(std::path::Path::new("."));
        write_plots(dir, &connect_p50, &capacity_rows);
    }
}

/// `--trickle`: scenario 1 twice against one whip-echo, candidates in the offer vs trickled.
async fn trickle_connect(root: &std::path::Path, cli: &Cli) -> String {
    let server = match Server::start(Kind::WhipEcho, root, 100, cli.media_threads).await {
        Ok(s) => s,
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(1);
        }
    };
    let http = Http::new(None);
    let mut out = String::from(
        "### Connect with and without trickle ICE (sequential /echo sessions), ms, p50 / p95 / p99\n\n\
         | candidates | ok / failed | POST → 201 | POST → connected | POST → first echo |\n|---|---|---|---|---|\n",
    );
    for (label, trickle) in [("in the offer", false), ("trickled by PATCH", true)] {
        eprintln!("connect x{} ({label})", cli.connect);
        let options = whip_conformance::peer::Options {
            trickle,
            ..Default::default()
        };
        let mut c = scenarios::connect(&server, &http, cli.connect, true, options).await;
        let _ = writeln!(
            out,
            "| {label} | {} / {} | {} | {} | {} |",
            c.ok,
            c.failed,
            pct3(&mut c.post_ms),
            pct3(&mut c.connected_ms),
            pct3(&mut c.first_echo_ms)
        );
    }
    server.stop().await;
    out.push('\n');
    out
}

fn header(cli: &Cli) -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpu
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .map_or("unknown", |m| m.trim_start_matches([' ', '\t', ':']));
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let args: Vec<String> = std::env::args().skip(1).collect();
    format!(
        "Machine: {cores} cores, {model}. Command: `bench/run.sh {}`{}.\n\n",
        args.join(" "),
        if cli.smoke { " (smoke)" } else { "" }
    )
}

fn pct3(v: &mut [f64]) -> String {
    let q = |v: &mut [f64], q| load::quantile(v, q);
    format!("{:.1} / {:.1} / {:.1}", q(v, 0.5), q(v, 0.95), q(v, 0.99))
}

fn write_connect(out: &mut String, kind: Kind, mut c: scenarios::Connect) {
    if !out.contains("### 1. Connect") {
        out.push_str("### 1. Connect (sequential sessions), ms, p50 / p95 / p99\n\n");
        out.push_str("| server | ok / failed | POST → 201 | POST → connected | POST → first echo |\n|---|---|---|---|---|\n");
    }
    let _ = writeln!(
        out,
        "| {} | {} / {} | {} | {} | {} |",
        kind.name(),
        c.ok,
        c.failed,
        pct3(&mut c.post_ms),
        pct3(&mut c.connected_ms),
        pct3(&mut c.first_echo_ms)
    );
}

fn write_capacity(out: &mut String, rows: &[(Kind, scenarios::Capacity)]) {
    out.push_str("\n### 2. Capacity (concurrent echo sessions, 50 packets/s each)\n\n");
    out.push_str("| server | sessions | connected | seconds | server CPU % | CPU µs / echoed packet (kernel) | echo loss % | echo RTT p50 / p99 ms | RSS KiB / session |\n|---|---|---|---|---|---|---|---|---|\n");
    for (kind, r) in rows {
        let rtt = if r.rtt_p50_ms.is_nan() {
            "n/a (re-encoded)".to_string()
        } else {
            format!("{:.2} / {:.2}", r.rtt_p50_ms, r.rtt_p99_ms)
        };
        let _ = writeln!(
            out,
            "| {} | {} | {} | {:.0} | {:.1} | {:.1} ({:.1}) | {:.2} | {rtt} | {:.0} |",
            kind.name(),
            r.sessions,
            r.connected,
            r.seconds,
            r.cpu_pct,
            r.cpu_us_per_packet,
            r.sys_us_per_packet,
            r.loss_pct,
            r.rss_kib_per_session
        );
    }
}

fn write_fanout(out: &mut String, rows: &[scenarios::Fanout]) {
    out.push_str("\n### 3. Fan-out (whip-echo: 1 WHIP publisher → WHEP viewers, 50 packets/s)\n\n");
    out.push_str("| viewers | connected | packets sent | delivered | delivery loss % | CPU µs / delivered packet | server CPU % |\n|---|---|---|---|---|---|---|\n");
    for r in rows {
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {:.2} | {:.2} | {:.1} |",
            r.viewers,
            r.connected,
            r.sent,
            r.delivered,
            r.loss_pct,
            r.cpu_us_per_delivered,
            r.cpu_pct
        );
    }
}

fn write_churn(out: &mut String, rows: &[(Kind, Vec<scenarios::ChurnPoint>)]) {
    out.push_str("\n### 4. Churn (create → media → DELETE, 8 in parallel)\n\n");
    out.push_str("| server | after cycles | failed | server RSS MiB | server fds | live sessions |\n|---|---|---|---|---|---|\n");
    for (kind, points) in rows {
        for p in points {
            let sessions = p.sessions.map_or("n/a".to_string(), |s| s.to_string());
            let _ = writeln!(
                out,
                "| {} | {} | {} | {:.1} | {} | {} |",
                kind.name(),
                p.cycles,
                p.failed,
                p.usage.rss_kib as f64 / 1024.0,
                p.usage.fds,
                sessions
            );
        }
    }
}

fn write_ratios(
    out: &mut String,
    connect: &[(Kind, Vec<f64>, Vec<f64>)],
    capacity: &[(Kind, scenarios::Capacity)],
) {
    let find = |k| connect.iter().find(|(kind, _, _)| *kind == k);
    let (Some(w), Some(b)) = (find(Kind::WhipEcho), find(Kind::Baseline)) else {
        return;
    };
    let p50 = |v: &[f64]| load::quantile(&mut v.to_vec(), 0.5);
    out.push_str("\n### Ratios (whip-echo / baseline; below 1 means whip-echo is better)\n\n| measure | ratio |\n|---|---|\n");
    let _ = writeln!(out, "| POST → 201 p50 | {:.3} |", p50(&w.2) / p50(&b.2));
    let _ = writeln!(
        out,
        "| POST → first echo p50 | {:.3} |",
        p50(&w.1) / p50(&b.1)
    );
    for (kind, r) in capacity.iter().filter(|(k, _)| *k == Kind::Baseline) {
        let _ = kind;
        if let Some((_, wr)) = capacity
            .iter()
            .find(|(k, x)| *k == Kind::WhipEcho && x.sessions == r.sessions)
        {
            let _ = writeln!(
                out,
                "| CPU µs / echoed packet at {} sessions | {:.3} |",
                r.sessions,
                wr.cpu_us_per_packet / r.cpu_us_per_packet
            );
        }
    }
}

/// Writes `connect-cdf.svg` and `capacity.svg` next to the report.
fn write_plots(
    dir: &std::path::Path,
    connect: &[(Kind, Vec<f64>, Vec<f64>)],
    capacity: &[(Kind, scenarios::Capacity)],
) {
    use plot::{cdf, line_chart, Series};
    let color = |k| {
        if k == Kind::WhipEcho {
            "#2563eb"
        } else {
            "#dc2626"
        }
    };
    let series: Vec<Series> = connect
        .iter()
        .map(|(k, first_echo, _)| Series {
            name: format!("{} (POST → first echo)", k.name()),
            color: color(*k),
            points: cdf(first_echo),
        })
        .collect();
    let svg = line_chart(
        "Connect time: POST → first echoed packet (CDF)",
        "ms (log scale)",
        "% of sessions",
        &series,
        true,
    );
    std::fs::write(dir.join("connect-cdf.svg"), svg).expect("write connect-cdf.svg");
    let mut lines = Vec::new();
    for kind in [Kind::WhipEcho, Kind::Baseline] {
        let rows: Vec<&scenarios::Capacity> = capacity
            .iter()
            .filter(|(k, _)| *k == kind)
            .map(|(_, r)| r)
            .collect();
        if rows.is_empty() {
            continue;
        }
        let cpu = rows
            .iter()
            .map(|r| (r.sessions as f64, r.cpu_pct))
            .collect();
        let loss = rows
            .iter()
            .map(|r| (r.sessions as f64, r.loss_pct))
            .collect();
        lines.push(Series {
            name: format!("{} server CPU %", kind.name()),
            color: color(kind),
            points: cpu,
        });
        let dashed = if kind == Kind::WhipEcho {
            "#93c5fd"
        } else {
            "#fca5a5"
        };
        lines.push(Series {
            name: format!("{} echo loss %", kind.name()),
            color: dashed,
            points: loss,
        });
    }
    let svg = line_chart(
        "Capacity: server CPU and echo loss vs concurrent sessions",
        "concurrent echo sessions (50 packets/s each)",
        "%",
        &lines,
        false,
    );
    std::fs::write(dir.join("capacity.svg"), svg).expect("write capacity.svg");
}
