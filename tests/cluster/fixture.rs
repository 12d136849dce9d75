//! A real Redis server and real whip-echo node processes on loopback (127.0.0.2, .3, .4: every
//! 127/8 address is the loopback interface's on Linux), each node its own process so that a test
//! can kill or freeze one.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// Generous bound for any one event.
pub const WAIT: Duration = Duration::from_secs(20);
/// The secret every test node shares.
pub const SECRET: &str = "cluster-test-secret";

/// A child process with its stdout lines on a channel; killed when dropped.
pub struct Proc {
    pub child: Option<Child>,
    pub lines: mpsc::Receiver<String>,
    name: String,
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = signal(&child, "CONT");
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Proc {
    fn spawn(name: &str, command: &mut Command) -> Proc {
        let mut child = command
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| panic!("start {name}: {e}"));
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        let echo = std::env::var_os("CLUSTER_LOGS").is_some();
        let tag = name.to_owned();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if echo {
                    eprintln!("[{tag}] {line}");
                }
                let _ = tx.send(line);
            }
        });
        Proc {
            child: Some(child),
            lines,
            name: name.to_owned(),
        }
    }

    /// Waits (blocking) for an output line containing `text`; returns it.
    pub fn wait_for(&self, text: &str) -> String {
        loop {
            let line = self
                .lines
                .recv_timeout(WAIT)
                .unwrap_or_else(|_| panic!("{}: no line with {text:?} in time", self.name));
            if line.contains(text) {
                return line;
            }
        }
    }

    /// Sends `sig` (`KILL`, `STOP`, `CONT`, `TERM`).
    pub fn signal(&self, sig: &str) {
        let child = self.child.as_ref().expect("running");
        assert!(signal(child, sig), "kill -{sig}");
    }

    /// Waits for the process to exit (after a signal).
    pub fn reap(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.wait();
        }
    }
}

fn signal(child: &Child, sig: &str) -> bool {
    Command::new("kill")
        .args([&format!("-{sig}"), &child.id().to_string()])
        .status()
        .is_ok_and(|s| s.success())
}

/// A Redis server on a unix socket in a directory of its own (`--port 0`: no TCP at all), with
/// expiry events published, so a test can wait for a lease to expire.
pub struct Redis {
    pub proc: Proc,
    pub socket: PathBuf,
    dir: PathBuf,
    /// Its directory outlives it (a restart in the same one).
    keep_dir: bool,
}

impl Redis {
    pub fn start(dir: &Path) -> Redis {
        let socket = dir.join("redis.sock");
        let proc = Proc::spawn(
            "redis",
            Command::new("redis-server")
                .args(["--port", "0", "--unixsocket"])
                .arg(&socket)
                .args([
                    "--unixsocketperm",
                    "700",
                    "--save",
                    "",
                    "--appendonly",
                    "no",
                ])
                .args(["--notify-keyspace-events", "Ex"])
                .arg("--dir")
                .arg(dir),
        );
        proc.wait_for("eady to accept connections");
        Redis {
            proc,
            socket,
            dir: dir.to_owned(),
            keep_dir: false,
        }
    }

    pub fn url(&self) -> String {
        format!("unix://{}", self.socket.display())
    }

    /// Stops it (SIGTERM) and waits for it to exit.
    pub fn stop(&mut self) {
        self.proc.signal("TERM");
        self.proc.reap();
    }

    /// Starts it again on the same socket, empty.
    pub fn restart(&mut self) {
        self.keep_dir = true;
        *self = Redis::start(&self.dir.clone());
    }

    /// Runs a command with `redis-cli` and returns its output.
    pub fn cli(&self, args: &[&str]) -> String {
        let out = Command::new("redis-cli")
            .arg("-s")
            .arg(&self.socket)
            .args(args)
            .output()
            .expect("redis-cli");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// How many times Redis has run `command` (scripts' calls included), from `INFO
    /// commandstats`.
    pub fn calls(&self, command: &str) -> u64 {
        self.cli(&["INFO", "commandstats"])
            .lines()
            .find_map(|l| l.strip_prefix(&format!("cmdstat_{command}:calls=")))
            .and_then(|r| r.split(',').next()?.parse().ok())
            .unwrap_or(0)
    }

    /// A `redis-cli` subscribed to key expiry events; its lines name the expired keys.
    pub fn expiries(&self) -> Proc {
        let proc = Proc::spawn(
            "redis-cli",
            Command::new("redis-cli").arg("-s").arg(&self.socket).args([
                "--csv",
                "SUBSCRIBE",
                "__keyevent@0__:expired",
            ]),
        );
        proc.wait_for("subscribe");
        proc
    }
}

/// One whip-echo node.
pub struct Node {
    pub proc: Proc,
    /// Its base URL (`http://127.0.0.x:port`), which is also its node URL.
    pub base: String,
}

impl Node {
    /// Starts a node on `ip` (HTTP, UDP and ICE-TCP on ephemeral ports) in the cluster of
    /// `redis`, with short TTLs so that failover happens within a test.
    pub fn start(ip: &str, redis: &Redis) -> Node {
        let proc = Proc::spawn(
            ip,
            Command::new(crate::support::binary::binary())
                .args(["--listen", &format!("{ip}:0"), "--udp-host", ip])
                .args(["--udp-port", "0", "--tcp-port", "0", "--self-test", "false"])
                .args(["--cluster-redis", &redis.url(), "--cluster-secret", SECRET])
                .args(["--cluster-heartbeat-ttl", "3", "--cluster-lease-ttl", "6"])
                .args(["--cluster-edge-idle", "2", "--ice-timeout", "6"])
                // A second publisher takes a stream over (the default with tokens; these
                // nodes have none).
                .args(["--publisher-conflict", "takeover"])
                .args([
                    "--log-format",
                    "json",
                    "--log",
                    "info,rtc=warn,rtc_ice=warn,rtc_dtls=error,rtc_srtp=warn,whip_echo=debug",
                ]),
        );
        let line = proc.wait_for("HTTP listening");
        let addr = line
            .split("\"addr\":\"")
            .nth(1)
            .and_then(|r| r.split('"').next())
            .expect("address field")
            .to_owned();
        // Its heartbeat is in Redis: the other nodes see it alive.
        proc.wait_for("node joined");
        Node {
            proc,
            base: format!("http://{addr}"),
        }
    }
}

impl Drop for Redis {
    /// Its directory goes with it (its socket; it saves nothing): no test leaves one behind.
    fn drop(&mut self) {
        if !self.keep_dir {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// A fresh directory for one test's Redis socket.
pub fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("whip-echo-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}
