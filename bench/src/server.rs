//! The server under test as a child process, and its costs read from /proc (the server process
//! only, never the load generator's).

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

/// Which server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// The release `whip-echo` binary.
    WhipEcho,
    /// `bench/baseline/server.py` (aiortc) in the bench venv.
    Baseline,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::WhipEcho => "whip-echo",
            Kind::Baseline => "aiortc baseline",
        }
    }
}

/// A running server.
pub struct Server {
    pub base: String,
    child: Child,
    pid: u32,
}

/// CPU time, memory and descriptors of the server process.
#[derive(Debug, Clone, Copy, Default)]
pub struct Usage {
    /// User + system CPU seconds.
    pub cpu_s: f64,
    /// System (kernel) CPU seconds alone.
    pub sys_s: f64,
    /// Resident set size, KiB.
    pub rss_kib: u64,
    /// Open file descriptors.
    pub fds: usize,
}

impl Server {
    pub async fn start(
        kind: Kind,
        root: &Path,
        max_sessions: usize,
        threads: u16,
    ) -> Result<Server, String> {
        Self::start_wrapped(kind, root, max_sessions, threads, &[]).await
    }

    /// Starts the server under `wrapper` (a program and its arguments, e.g. valgrind), if any.
    pub async fn start_wrapped(
        kind: Kind,
        root: &Path,
        max_sessions: usize,
        threads: u16,
        wrapper: &[String],
    ) -> Result<Server, String> {
        // `WHIP_ECHO_BENCH_BINARY`: another build (an older commit's, to compare in one sitting).
        let binary = std::env::var_os("WHIP_ECHO_BENCH_BINARY")
            .map_or_else(|| root.join("target/release/whip-echo"), PathBuf::from);
        let mut command = match kind {
            Kind::WhipEcho => {
                let mut c = match wrapper.split_first() {
                    Some((program, args)) => {
                        let mut c = Command::new(program);
                        c.args(args).arg(binary);
                        c
                    }
                    None => Command::new(binary),
                };
                c.args([
                    "--listen",
                    "127.0.0.1:0",
                    "--udp-host",
                    "127.0.0.1",
                    "--udp-port",
                    "0",
                    "--tcp-port",
                    "0",
                ])
                .args(["--log-format", "json", "--log"])
                .arg(format!(
                    "{},whip_echo::server=info",
                    server_log().unwrap_or("warn")
                ))
                .args(["--max-sessions", &max_sessions.to_string()])
                // The load generator is one client IP: every per-client cap is lifted.
                .args(["--max-sessions-per-ip", "0"])
                .args(["--max-connecting-sessions-per-ip", "0"])
                .args(["--request-rate-per-ip", "0"])
                .args(["--max-http-connections-per-ip", "0"])
                .args(["--max-pending-connections-per-ip", "0"])
                .args(["--max-ice-tcp-connections-per-ip", "0"])
                .args(["--media-threads", &threads.to_string()]);
                c
            }
            Kind::Baseline => {
                let mut c = Command::new(root.join("target/bench-venv/bin/python"));
                c.arg(root.join("bench/baseline/server.py"));
                c
            }
        };
        command
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .kill_on_drop(true);
        let mut child = command
            .spawn()
            .map_err(|e| format!("start {}: {e}", kind.name()))?;
        let pid = child.id().ok_or("no pid")?;
        let stdout = child.stdout.take().ok_or("no stdout")?;
        let mut lines = BufReader::new(stdout).lines();
        let find = async {
            while let Ok(Some(line)) = lines.next_line().await {
                if line.contains("HTTP listening") {
                    let addr = line
                        .split("\"addr\":\"")
                        .nth(1)?
                        .split('"')
                        .next()?
                        .to_owned();
                    return Some(addr);
                }
            }
            None
        };
        let addr = tokio::time::timeout(Duration::from_secs(120), find)
            .await
            .map_err(|_| format!("{} did not start", kind.name()))?
            .ok_or_else(|| format!("{} exited", kind.name()))?;
        // Keep draining stdout so the server never blocks on a full pipe.
        // BENCH_SERVER_LOG (a filter such as `whip_echo=debug`) also copies them to stderr.
        let echo = server_log().is_some();
        tokio::spawn(async move {
            while let Ok(Some(line)) = lines.next_line().await {
                if echo {
                    eprintln!("{line}");
                }
            }
        });
        Ok(Server {
            base: format!("http://{addr}"),
            child,
            pid,
        })
    }

    pub fn pid(&self) -> u32 {
        self.pid
    }

    pub fn usage(&self) -> Usage {
        usage(self.pid)
    }

    /// Live sessions from `/healthz`.
    pub async fn sessions(&self) -> Option<usize> {
        let text = reqwest::get(format!("{}/healthz", self.base))
            .await
            .ok()?
            .text()
            .await
            .ok()?;
        text.split("sessions=").nth(1)?.trim().parse().ok()
    }

    pub async fn stop(mut self) {
        let _ = self.child.kill().await;
    }
}

/// Extra log filter for whip-echo, from `BENCH_SERVER_LOG`.
fn server_log() -> Option<&'static str> {
    static LOG: std::sync::OnceLock<Option<String>> = std::sync::OnceLock::new();
    LOG.get_or_init(|| std::env::var("BENCH_SERVER_LOG").ok())
        .as_deref()
}

/// Reads /proc/<pid>/stat (utime, stime), /proc/<pid>/status (VmRSS) and /proc/<pid>/fd.
pub fn usage(pid: u32) -> Usage {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name, which may contain spaces, closed by ')'.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map_or("", |(_, r)| r)
        .split_whitespace()
        .collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // utime and stime are fields 14 and 15 of stat; here indices 11 and 12 after the name.
    let cpu_s = (ticks(11) + ticks(12)) / clock_ticks();
    let sys_s = ticks(12) / clock_ticks();
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let rss_kib = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0);
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count());
    Usage {
        cpu_s,
        sys_s,
        rss_kib,
        fds,
    }
}

fn clock_ticks() -> f64 {
    // getconf CLK_TCK; 100 on every Linux this runs on, read once to be sure.
    static TCK: std::sync::OnceLock<f64> = std::sync::OnceLock::new();
    *TCK.get_or_init(|| {
        std::process::Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8(o.stdout).ok()?.trim().parse().ok())
            .unwrap_or(100.0)
    })
}
