//! The built `whip-echo` binary as a child process on ephemeral loopback ports, its JSON log
//! lines read on a thread.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::time::Duration;

/// The running binary; killed when dropped, so a failing test leaves no server behind.
pub struct Server {
    pub child: Option<Child>,
    pub base: String,
    /// The media plane's UDP socket and its ICE-TCP listener.
    pub udp: SocketAddr,
    pub tcp: SocketAddr,
    /// Its log lines after the one with its HTTP address.
    logs: mpsc::Receiver<String>,
    /// Set: the reader stops reading its output (a log pipe that stalls).
    stalled: Arc<AtomicBool>,
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Starts the built `whip-echo` (or `$WHIP_ECHO_BIN`, another build to compare with) on
/// ephemeral loopback ports and reads its addresses from its JSON log.
pub fn start() -> Server {
    start_with(Command::new(binary()))
}

/// The binary under test: the one cargo built, unless `WHIP_ECHO_BIN` names another.
pub fn binary() -> std::ffi::OsString {
    std::env::var_os("WHIP_ECHO_BIN").unwrap_or_else(|| env!("CARGO_BIN_EXE_whip-echo").into())
}

/// `command` (the server, or a program that execs it with the arguments that follow) started
/// with the server's arguments.
pub fn start_with(mut command: Command) -> Server {
    let mut child = command
        .args([
            "--listen",
            "127.0.0.1:0",
            "--udp-host",
            "127.0.0.1",
            "--udp-port",
            "0",
            "--tcp-port",
            "0",
        ])
        .args(["--log-format", "json"])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start whip-echo");
    let stdout = child.stdout.take().unwrap();
    let (tx, logs) = mpsc::channel();
    let stalled = Arc::new(AtomicBool::new(false));
    let stall = stalled.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                return;
            }
            // The pipe stays open and unread until the process ends.
            while stall.load(Ordering::Relaxed) {
                std::thread::park_timeout(Duration::from_secs(1));
            }
        }
    });
    let field = |line: &str, name: &str| -> SocketAddr {
        line.split(&format!("\"{name}\":\""))
            .nth(1)
            .and_then(|r| r.split('"').next())
            .and_then(|a| a.parse().ok())
            .unwrap_or_else(|| panic!("{name} in {line}"))
    };
    let (mut udp, mut tcp) = (None, None);
    let http = loop {
        let line = logs
            .recv_timeout(Duration::from_secs(30))
            .expect("server logs its addresses");
        if line.contains("media plane listening") {
            udp = Some(field(&line, "udp"));
        } else if line.contains("ICE-TCP listening") {
            tcp = Some(field(&line, "tcp"));
        } else if line.contains("HTTP listening") {
            break field(&line, "addr");
        }
    };
    Server {
        child: Some(child),
        base: format!("http://{http}"),
        udp: udp.expect("the media plane's address before HTTP's"),
        tcp: tcp.expect("the ICE-TCP address before HTTP's"),
        logs,
        stalled,
    }
}

impl Server {
    /// Waits for a log line containing `text`.
    pub fn wait_for_log(&self, text: &str) {
        self.lines_until(text, |line| line.contains(text));
    }

    /// The log lines up to and with the first that is `wanted` (described by `what`).
    pub fn lines_until(&self, what: &str, wanted: impl Fn(&str) -> bool) -> Vec<String> {
        let mut lines = Vec::new();
        loop {
            let line = self
                .logs
                .recv_timeout(Duration::from_secs(30))
                .unwrap_or_else(|_| panic!("a log line: {what}"));
            let found = wanted(&line);
            lines.push(line);
            if found {
                return lines;
            }
        }
    }

    /// Stops reading the server's output: once the pipe's buffer is full, every write of its
    /// log would block.
    pub fn stall_logs(&self) {
        self.stalled.store(true, Ordering::Relaxed);
    }
}

/// SIGTERM, and the exit that follows within 30 s, which must be clean.
pub fn sigterm_and_wait(mut server: Server) {
    let mut child = server.child.take().expect("running");
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait());
    });
    let exit = rx
        .recv_timeout(Duration::from_secs(30))
        .expect("exits after SIGTERM")
        .unwrap();
    assert!(exit.success(), "clean exit: {exit:?}");
}
