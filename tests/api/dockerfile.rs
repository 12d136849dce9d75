//! The Dockerfile, checked without a Docker daemon (there is none on CI machines; `.ci/run`
//! also lints it with hadolint): every path it copies from the build context exists and is not
//! excluded by `.dockerignore`, it builds the binary with the README's command, the runtime
//! image runs and health-checks that binary as a non-root user, and it exposes the default
//! ports.

use std::path::Path;
use std::process::Command;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

/// The Dockerfile's instructions, continuation lines joined, comments dropped.
fn instructions() -> Vec<String> {
    let text = std::fs::read_to_string(Path::new(ROOT).join("Dockerfile")).unwrap();
    let mut out = Vec::new();
    let mut current = String::new();
    for line in text.lines() {
        let line = line.trim();
        if line.starts_with('#') || line.is_empty() {
            continue;
        }
        match line.strip_suffix('\\') {
            Some(part) => current.push_str(part),
            None => {
                current.push_str(line);
                out.push(std::mem::take(&mut current));
            }
        }
    }
    out
}

fn with(prefix: &str) -> Vec<String> {
    instructions()
        .into_iter()
        .filter(|i| i.starts_with(prefix))
        .collect()
}

#[test]
fn what_it_copies_exists_and_is_in_the_build_context() {
    let ignored = std::fs::read_to_string(Path::new(ROOT).join(".dockerignore")).unwrap();
    for copy in with("COPY ") {
        if copy.contains("--from=") {
            continue;
        }
        let args: Vec<&str> = copy.split_whitespace().skip(1).collect();
        for source in &args[..args.len() - 1] {
            assert!(Path::new(ROOT).join(source).exists(), "{copy}: {source}");
        }
    }
    // The sources the build needs are not excluded from the context.
    for needed in [
        "Cargo.toml",
        "Cargo.lock",
        "src",
        "static",
        "vendor",
        "crates",
        "conformance",
        "bench",
    ] {
        assert!(Path::new(ROOT).join(needed).exists(), "{needed}");
        assert!(
            !ignored
                .lines()
                .any(|l| l.trim().trim_end_matches('/') == needed),
            ".dockerignore excludes {needed}"
        );
    }
}

#[test]
fn it_builds_runs_and_health_checks_the_release_binary() {
    let build = with("RUN cargo build ");
    assert_eq!(
        build,
        ["RUN cargo build --release --locked --bin whip-echo"],
        "the README's build command, for the one binary"
    );
    let workdir = with("WORKDIR ").last().cloned().unwrap();
    let workdir = workdir.trim_start_matches("WORKDIR ").trim();
    let copy = with("COPY --from=builder ")
        .pop()
        .expect("the runtime stage copies the binary");
    let parts: Vec<&str> = copy.split_whitespace().collect();
    assert_eq!(
        parts[2],
        format!("{workdir}/target/release/whip-echo"),
        "{copy}"
    );
    let installed = parts[3];
    assert_eq!(
        with("ENTRYPOINT "),
        [format!("ENTRYPOINT [\"{installed}\"]")]
    );
    let health = with("HEALTHCHECK ").pop().expect("a HEALTHCHECK");
    assert!(
        health.ends_with(&format!("CMD [\"{installed}\", \"healthcheck\"]")),
        "{health}"
    );
    // The subcommand it runs exists in the binary cargo built.
    let help = Command::new(env!("CARGO_BIN_EXE_whip-echo"))
        .args(["healthcheck", "--help"])
        .output()
        .unwrap();
    assert!(help.status.success(), "{help:?}");
    let user = with("USER ").pop().expect("a USER");
    assert!(
        !matches!(user.trim_start_matches("USER ").trim(), "root" | "0"),
        "{user}"
    );
}

#[test]
fn it_exposes_the_default_ports() {
    let defaults = <whip_echo::config::Config as clap::Parser>::parse_from(["whip-echo"]);
    let expose = with("EXPOSE ").pop().expect("EXPOSE");
    for port in [
        format!("{}/tcp", defaults.listen.port()),
        format!("{}/udp", defaults.udp_port),
        format!("{}/tcp", defaults.tcp_port),
    ] {
        assert!(
            expose.split_whitespace().any(|p| p == port),
            "{port} in {expose}"
        );
    }
}
