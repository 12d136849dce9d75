//! The real binary: the README's curl lifecycle example against it, and a clean exit on SIGTERM.

use crate::support;

use std::process::{Child, Command};
use std::time::Duration;

use support::binary::{binary, sigterm_and_wait, start, start_with};

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
    // The container health check: `whip-echo healthcheck` with the server's --listen.
    let healthcheck = |listen: &str| {
        Command::new(env!("CARGO_BIN_EXE_whip-echo"))
            .args(["--listen", listen, "healthcheck"])
            .output()
            .unwrap()
    };
    let listen = server.base.trim_start_matches("http://").to_owned();
    let ready = healthcheck(&listen);
    assert!(ready.status.success(), "{ready:?}");
    let nobody = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let closed = nobody.local_addr().unwrap().to_string();
    drop(nobody);
    let down = healthcheck(&closed);
    assert!(!down.status.success());
    assert!(String::from_utf8_lossy(&down.stderr).starts_with("not ready: "));
    sigterm_and_wait(server);
}

/// A connected `/echo` client of the binary at `base`.
async fn echo_client(base: &str, stream: &str) -> whip_conformance::peer::Client {
    use whip_conformance::peer::{Client, Mode, Options};
    let url = reqwest::Url::parse(&format!("{base}/echo/{stream}")).unwrap();
    let loopback = std::net::IpAddr::from([127, 0, 0, 1]);
    let http = whip_conformance::http::Http::new(None);
    let mut client =
        Client::connect_with_options(&http, &url, Mode::SendRecv, loopback, Options::default())
            .await
            .unwrap_or_else(|r| panic!("{}: {}", r.status, r.body));
    client.wait_connected(WAIT).await;
    client.send(b"hello");
    assert_eq!(&client.next_packet(WAIT).await.payload[..], b"hello");
    client
}

const WAIT: Duration = Duration::from_secs(15);

fn kill_term(child: &Child) {
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

/// Waits for the child to exit, on a thread (waiting blocks).
async fn exit_of(mut child: Child) -> std::process::ExitStatus {
    let waited = tokio::task::spawn_blocking(move || child.wait());
    tokio::time::timeout(WAIT, waited)
        .await
        .expect("the server exits")
        .unwrap()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_closes_live_sessions_refuses_new_ones_and_exits_0() {
    let mut server = tokio::task::block_in_place(start);
    let base = server.base.clone();
    let mut clients = Vec::new();
    for stream in ["a", "b"] {
        clients.push(echo_client(&base, stream).await);
    }
    let child = server.child.take().unwrap();
    let started = std::time::Instant::now();
    kill_term(&child);
    // Logged once the stop has begun (the cancellation POSTs see).
    tokio::task::block_in_place(|| server.wait_for_log("stopping: closing every session"));
    // POSTs (of a valid WHIP offer) while it stops: refused with 503 (or, once HTTP is closed,
    // not connected at all); never a new session.
    let http = reqwest::Client::new();
    let refusals = tokio::spawn(async move {
        let mut statuses = Vec::new();
        while let Ok(r) = http
            .post(format!("{base}/whip/late"))
            .header("content-type", "application/sdp")
            .body(include_str!("../data/offer.sdp"))
            .send()
            .await
        {
            statuses.push(r.status().as_u16());
        }
        statuses
    });
    for client in &mut clients {
        // DTLS close_notify from the server (RFC 7675 §5.2: it says goodbye, not silence).
        assert!(
            client.until(WAIT, |s| s.ended).await,
            "the client is told its session ended"
        );
    }
    let exit = exit_of(child).await;
    let took = started.elapsed();
    println!("# SIGTERM with 2 live sessions: exited {exit:?} after {took:?}");
    assert!(exit.success(), "exit 0: {exit:?}");
    assert!(took < Duration::from_secs(2), "exits within 2 s: {took:?}");
    let statuses = refusals.await.unwrap();
    assert!(statuses.iter().all(|&s| s == 503), "{statuses:?}");
    for client in clients {
        client.close().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_sigterm_exits_at_once() {
    use tokio::io::AsyncWriteExt;
    let mut server = tokio::task::block_in_place(start);
    // A request whose body never ends holds the first shutdown's HTTP drain (for up to 1 s).
    let addr = server.base.trim_start_matches("http://").to_owned();
    let mut slow = tokio::net::TcpStream::connect(&addr).await.unwrap();
    slow.write_all(
        b"POST /echo/x HTTP/1.1\r\nHost: x\r\nContent-Type: application/sdp\r\n\
          Content-Length: 1000\r\nExpect: 100-continue\r\n\r\n",
    )
    .await
    .unwrap();
    // hyper answers 100 Continue when the handler starts reading the body: from here on the
    // request is under way (and its body never comes).
    let mut interim = [0u8; 25];
    tokio::io::AsyncReadExt::read_exact(&mut slow, &mut interim)
        .await
        .unwrap();
    assert!(interim.starts_with(b"HTTP/1.1 100 Continue"), "{interim:?}");
    slow.write_all(b"v=0\r\n").await.unwrap();
    let child = server.child.take().unwrap();
    kill_term(&child);
    // Signals sent back to back coalesce into one; the second is sent once the first was seen.
    tokio::task::block_in_place(|| server.wait_for_log("shutdown signal received"));
    kill_term(&child);
    let exit = exit_of(child).await;
    assert_eq!(exit.code(), Some(130), "{exit:?}");
}

/// Every connection is a descriptor: started under a soft open-file limit of 256 (below its
/// hard limit), the server raises it to the hard one, and says so.
#[test]
fn the_open_file_limit_is_raised_to_the_hard_one() {
    use nix::sys::resource::{getrlimit, Resource};
    let (_, hard) = getrlimit(Resource::RLIMIT_NOFILE).unwrap();
    assert!(hard > 256, "a hard limit to raise to: {hard}");
    // util-linux's prlimit sets the soft limit and execs the server (same process).
    let mut command = Command::new("prlimit");
    command.args([
        "--nofile=256:".to_owned(),
        env!("CARGO_BIN_EXE_whip-echo").to_owned(),
    ]);
    let server = start_with(command);
    let pid = server.child.as_ref().unwrap().id();
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap();
    let open_files: Vec<&str> = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .unwrap()
        .split_whitespace()
        .collect();
    // An unlimited hard limit is raised to as far as the kernel allows.
    let expected = if hard == nix::sys::resource::RLIM_INFINITY {
        std::fs::read_to_string("/proc/sys/fs/nr_open")
            .unwrap()
            .trim()
            .to_owned()
    } else {
        hard.to_string()
    };
    assert_eq!(open_files[3], expected, "soft limit: {limits}");
}

/// Listening beyond loopback with no token configured, the server warns at start (and refuses a
/// second publisher by default); with a token it does not. Inside a network namespace of its own
/// (a user namespace too when not root), where 0.0.0.0 reaches nothing but that namespace.
#[test]
fn an_open_server_beyond_loopback_says_so_at_start() {
    let root = Command::new("id").arg("-u").output().unwrap();
    let root = String::from_utf8_lossy(&root.stdout).trim() == "0";
    for (extra, warned) in [(vec![], true), (vec!["--publish-token", "t"], false)] {
        let mut command = Command::new("unshare");
        if !root {
            command.args(["--user", "--map-root-user"]);
        }
        command
            .args(["--net", "--"])
            .arg(binary())
            .args(["--listen", "0.0.0.0:0", "--udp-host", "127.0.0.1"])
            .args(["--udp-port", "0", "--tcp-port", "0", "--self-test", "false"])
            .args(["--log-format", "json"])
            .args(&extra)
            .stdout(std::process::Stdio::piped());
        let mut child = command.spawn().expect("unshare (util-linux) runs");
        let stdout = std::io::BufReader::new(child.stdout.take().unwrap());
        let (mut warning, mut listening) = (None, false);
        for line in std::io::BufRead::lines(stdout).map_while(Result::ok) {
            if line.contains("no bearer tokens") {
                warning = Some(line);
            } else if line.contains("HTTP listening") {
                listening = true;
                break;
            }
        }
        let _ = child.kill();
        let status = child.wait().unwrap();
        if !listening {
            // No namespace to be had (unprivileged user namespaces off): nothing to test here.
            eprintln!("# skipped: unshare --net did not start the server ({status})");
            return;
        }
        assert_eq!(warning.is_some(), warned, "{extra:?}: {warning:?}");
        if let Some(line) = warning {
            assert!(line.contains("WARN") && line.contains("Reject"), "{line}");
        }
    }
}

/// `--publish-token-file`: the token guards publishing and is nowhere in the process's argv
/// (which every user can read in `/proc`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_from_a_file_guards_publishing_and_stays_out_of_argv() {
    const TOKEN: &str = "file-token-5f1c0e";
    let dir = std::env::temp_dir().join(format!("whip-echo-token-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("publish-tokens");
    std::fs::write(&path, format!("{TOKEN}\n")).unwrap();
    let mut command = Command::new(binary());
    command.arg("--publish-token-file").arg(&path);
    let server = tokio::task::block_in_place(|| start_with(command));
    let pid = server.child.as_ref().unwrap().id();
    let argv = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap();
    assert!(!String::from_utf8_lossy(&argv).contains(TOKEN));
    let http = reqwest::Client::new();
    let post = |token: Option<&str>| {
        let mut request = http
            .post(format!("{}/whip/filed", server.base))
            .header("content-type", "application/sdp")
            .body(include_str!("../data/offer.sdp"));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        request.send()
    };
    assert_eq!(post(None).await.unwrap().status(), 401);
    assert_eq!(post(Some("guess")).await.unwrap().status(), 401);
    assert_eq!(post(Some(TOKEN)).await.unwrap().status(), 201);
    std::fs::remove_dir_all(&dir).unwrap();
}
