//! `--callgrind`: whip-echo's per-packet path counted in instructions, which a noisy VM cannot
//! blur. The server runs under `valgrind --tool=callgrind`, collecting only inside
//! `MediaLoop::read_datagrams` (receive → rtc pipeline → fan-out → send: the whole per-packet path;
//! timers and HTTP excluded). Counters are zeroed when the swarm starts streaming and dumped when it
//! stops, and the instructions are split by crate. Kernel instructions (the UDP stack) are not
//! counted by valgrind.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use reqwest::Url;
use whip_conformance::http::Http;

use crate::server::{Kind, Server};
use crate::swarm;

/// Where instructions go, by the function's crate (first match wins).
const GROUPS: &[(&str, &[&str])] = &[
    (
        "whip-echo (our loop, routing, forwarding)",
        &["whip_echo::"],
    ),
    (
        "rtc: SRTP and AES-GCM",
        &["rtc_srtp::", "ring_core", "ring::", "rtc_crypto::"],
    ),
    ("rtc: interceptors (RTCP reports)", &["rtc_interceptor::"]),
    (
        "rtc: ICE / STUN / DTLS",
        &["rtc_ice::", "rtc_stun::", "rtc_dtls::"],
    ),
    ("rtc: RTP / RTCP parsing", &["rtc_rtp::", "rtc_rtcp::"]),
    (
        "rtc: peer-connection pipeline",
        &["rtc::", "rtc_shared::", "sansio::"],
    ),
    (
        "memcpy / memmove / malloc / free",
        &["memmove", "memcpy", "malloc", "free", "realloc", "memset"],
    ),
    (
        "quinn-udp / tokio / std",
        &[
            "quinn_udp::",
            "tokio::",
            "std::",
            "core::",
            "alloc::",
            "hashbrown::",
            "mio::",
        ],
    ),
];

pub async fn run(
    root: &Path,
    http: &Http,
    sessions: usize,
    seconds: u64,
) -> Result<String, String> {
    let root = root.canonicalize().map_err(|e| e.to_string())?;
    let root = root.as_path();
    let dir = root.join("target/callgrind");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    let wrapper: Vec<String> = vec![
        "valgrind".into(),
        "--tool=callgrind".into(),
        format!(
            "--callgrind-out-file={}",
            dir.join("callgrind.out").display()
        ),
        "--toggle-collect=*MediaLoop::read_datagrams*".into(),
    ];
    let server = Server::start_wrapped(Kind::WhipEcho, root, sessions + 10, 1, &wrapper).await?;
    let pid = server.pid();
    let urls: Vec<Url> = (0..sessions)
        .map(|i| Url::parse(&format!("{}/echo/cg-{i}", server.base)).expect("URL"))
        .collect();
    let hook: swarm::run::Hook = Box::new(move |start| {
        let flag = if start { "-z" } else { "-d" };
        let _ = Command::new("callgrind_control")
            .args([flag, &pid.to_string()])
            .output();
    });
    let (outcome, _) = swarm::run::step(http, pid, urls, seconds, true, Some(hook)).await?;
    server.stop().await;
    let dump = newest_dump(&dir).ok_or("no callgrind dump")?;
    let raw = std::fs::read_to_string(&dump).map_err(|e| e.to_string())?;
    let packets = outcome.tally.received.max(1);
    let dump = dump.strip_prefix(root).unwrap_or(&dump);
    Ok(report(&raw, packets, sessions, seconds, dump))
}

fn newest_dump(dir: &Path) -> Option<PathBuf> {
    std::fs::read_dir(dir)
        .ok()?
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_string_lossy().starts_with("callgrind.out"))
        .max_by_key(|e| e.metadata().and_then(|m| m.modified()).ok())
        .map(|e| e.path())
}

/// Exclusive instructions per function, and the total, from a callgrind output file (its
/// format: `fn=` names the function whose cost lines follow; the line after `calls=` is the
/// inclusive cost of a call and is not the caller's own; names are compressed as `(id) name`).
fn self_costs(raw: &str) -> (u64, HashMap<String, u64>) {
    let mut names: HashMap<String, String> = HashMap::new();
    let mut resolve = |spec: &str| -> String {
        let (id, name) = match spec.split_once(") ") {
            Some((id, name)) => (id.to_owned(), Some(name)),
            None => (spec.trim_end().trim_end_matches(')').to_owned(), None),
        };
        match name {
            Some(name) => names.entry(id).or_insert_with(|| name.to_owned()).clone(),
            None => names.get(&id).cloned().unwrap_or(id),
        }
    };
    let (mut total, mut costs, mut current) = (0, HashMap::new(), String::new());
    let mut call_cost_next = false;
    for line in raw.lines() {
        if let Some(spec) = line.strip_prefix("fn=") {
            current = resolve(spec);
        } else if let Some(spec) = line.strip_prefix("cfn=") {
            resolve(spec);
        } else if line.starts_with("calls=") {
            call_cost_next = true;
        } else if let Some(t) = line.strip_prefix("totals:") {
            total = t.trim().parse().unwrap_or(total);
        } else if line.starts_with(|c: char| c.is_ascii_digit() || "+-*".contains(c)) {
            let cost: u64 = line
                .split_whitespace()
                .last()
                .and_then(|c| c.parse().ok())
                .unwrap_or(0);
            if !std::mem::take(&mut call_cost_next) {
                *costs.entry(current.clone()).or_insert(0) += cost;
            }
        }
    }
    (total, costs)
}

/// Instructions per echoed packet, in total and by group.
fn report(raw: &str, packets: u64, sessions: usize, seconds: u64, dump: &Path) -> String {
    let (total, costs) = self_costs(raw);
    let mut by_group = vec![0u64; GROUPS.len() + 1];
    for (function, ir) in &costs {
        let group = GROUPS
            .iter()
            .position(|(_, keys)| keys.iter().any(|k| function.contains(k)))
            .unwrap_or(GROUPS.len());
        by_group[group] += ir;
    }
    let per = |ir: u64| ir as f64 / packets as f64;
    let mut out = format!(
        "### Instructions per echoed packet (callgrind, user space only)\n\n\
         {sessions} echo sessions × {seconds} s, {packets} echoed packets, dump `{}`.\n\n\
         | where | instructions / packet | share |\n|---|---|---|\n",
        dump.display()
    );
    let names = GROUPS.iter().map(|(name, _)| *name).chain(["other"]);
    for (name, ir) in names.zip(&by_group) {
        let share = 100.0 * *ir as f64 / total.max(1) as f64;
        out.push_str(&format!("| {name} | {:.0} | {share:.1} % |\n", per(*ir)));
    }
    out.push_str(&format!("| **total** | **{:.0}** | 100 % |\n", per(total)));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn call_costs_are_not_the_callers_own() {
        let raw = "events: Ir\nfn=(1) whip_echo::a\n10 5\ncfn=(2) rtc::b\ncalls=1 3\n11 100\n\
                   +1 2\nfn=(2)\n3 100\nfn=(1)\n* 1\ntotals: 108\n";
        let (total, costs) = self_costs(raw);
        assert_eq!(total, 108);
        assert_eq!(costs["whip_echo::a"], 8);
        assert_eq!(costs["rtc::b"], 100);
    }
}
