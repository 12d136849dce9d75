//! The real binary: the README's curl lifecycle example against it, and a clean exit on SIGTERM.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// The running binary; killed when dropped, so a failing test leaves no server behind.
struct Server {
    child: Option<Child>,
    base: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Starts the built `whip-echo` on ephemeral loopback ports and reads its HTTP address from its
/// JSON log.
fn start() -> Server {
    let mut child = Command::new(env!("CARGO_BIN_EXE_whip-echo"))
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
        .args(["--log-format", "json", "--log", "info"])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start whip-echo");
    let stdout = child.stdout.take().unwrap();
    let mut server = Server {
        child: Some(child),
        base: String::new(),
    };
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if line.contains("HTTP listening") {
                let addr = line
                    .split("\"addr\":\"")
                    .nth(1)
                    .and_then(|r| r.split('"').next());
                let _ = tx.send(addr.map(str::to_owned));
            }
        }
    });
    let addr = rx
        .recv_timeout(Duration::from_secs(30))
        .expect("server logs its address")
        .expect("address field");
    server.base = format!("http://{addr}");
    server
}

fn sigterm_and_wait(mut server: Server) {
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

#[test]
fn readme_curl_lifecycle_against_the_binary() {
    let server = start();
    let root = env!("CARGO_MANIFEST_DIR");
    let output = Command::new("bash")
        .arg(format!("{root}/examples/curl-lifecycle.sh"))
        .arg(&server.base)
        .arg(format!("{root}/tests/data/offer.sdp"))
        .output()
        .expect("run the curl example");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let location = stdout
        .lines()
        .find_map(|l| l.strip_prefix("created "))
        .expect("a Location");
    assert!(location.starts_with("/resource/"), "{stdout}");
    assert!(stdout.contains("DELETE 200"), "{stdout}");
    // The resource is gone afterwards.
    let again = Command::new("curl")
        .args([
            "-s",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "-X",
            "DELETE",
        ])
        .arg(format!("{}{location}", server.base))
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&again.stdout), "404");
    sigterm_and_wait(server);
}
