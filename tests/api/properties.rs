//! The fuzz targets' entry points (`src/fuzzing.rs`) as property tests, so CI runs them on every
//! change without a nightly toolchain: random bytes, random edits of the seed corpus, and every
//! file of `fuzz/corpus/` and `fuzz/regressions/` (inputs the fuzzers found, kept as tests).
//! Each entry point must not panic and must keep its invariants.

use std::path::Path;

use proptest::prelude::*;
use whip_echo::fuzzing;

type Entry = fn(&[u8]);

const TARGETS: [(&str, Entry); 13] = [
    ("offer", fuzzing::offer),
    ("stream_name", fuzzing::stream_name),
    ("datagram", fuzzing::datagram),
    ("tcp_stream", fuzzing::tcp_stream),
    ("sdpfrag", fuzzing::sdpfrag),
    ("if_match", fuzzing::if_match),
    ("authorization", fuzzing::authorization),
    ("video_payload", fuzzing::video_payload),
    ("client_ip_header", fuzzing::client_ip_header),
    ("rtp", fuzzing::rtp),
    ("rtcp", fuzzing::rtcp),
    ("dtls", fuzzing::dtls),
    ("stun", fuzzing::stun),
];

/// The files of `fuzz/<dir>/<target>/`.
fn files(dir: &str, target: &str) -> Vec<Vec<u8>> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz")
        .join(dir)
        .join(target);
    let Ok(entries) = std::fs::read_dir(path) else {
        return Vec::new();
    };
    // Only the kept seeds of a corpus (a local fuzzing run adds thousands of its own).
    let keep = |name: &str| dir != "corpus" || name.starts_with("seed-");
    let mut out: Vec<Vec<u8>> = entries
        .filter_map(|e| {
            let e = e.ok()?;
            keep(&e.file_name().to_string_lossy()).then_some(())?;
            std::fs::read(e.path()).ok()
        })
        .collect();
    out.sort();
    out
}

#[test]
fn every_corpus_and_regression_input_passes() {
    for (target, entry) in TARGETS {
        let seeds = files("corpus", target);
        assert!(!seeds.is_empty(), "fuzz/corpus/{target} has seeds");
        for input in seeds.iter().chain(&files("regressions", target)) {
            entry(input);
        }
    }
}

/// A seed of `target` with up to 8 bytes overwritten, inserted or removed.
fn edited_seed(target: &'static str) -> impl Strategy<Value = Vec<u8>> {
    let seeds = files("corpus", target);
    let edits = prop::collection::vec((any::<usize>(), any::<u8>(), 0..3u8), 0..8);
    (0..seeds.len().max(1), edits).prop_map(move |(i, edits)| {
        let mut input = seeds.get(i).cloned().unwrap_or_default();
        for (at, byte, op) in edits {
            let at = if input.is_empty() {
                0
            } else {
                at % input.len()
            };
            match op {
                0 if !input.is_empty() => input[at] = byte,
                1 => input.insert(at, byte),
                _ if !input.is_empty() => {
                    input.remove(at);
                }
                _ => {}
            }
        }
        input
    })
}

macro_rules! properties {
    ($($name:ident => $target:literal, $entry:path;)*) => {
        proptest! {
            #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]
            $(
                #[test]
                fn $name(bytes in prop::collection::vec(any::<u8>(), 0..2048),
                         edited in edited_seed($target)) {
                    $entry(&bytes);
                    $entry(&edited);
                }
            )*
        }
    };
}

properties! {
    offer_checks => "offer", fuzzing::offer;
    stream_names => "stream_name", fuzzing::stream_name;
    datagram_routing => "datagram", fuzzing::datagram;
    ice_tcp_framing => "tcp_stream", fuzzing::tcp_stream;
    sdp_fragments => "sdpfrag", fuzzing::sdpfrag;
    if_match_fields => "if_match", fuzzing::if_match;
    bearer_tokens => "authorization", fuzzing::authorization;
    video_payload_headers => "video_payload", fuzzing::video_payload;
    client_ip_headers => "client_ip_header", fuzzing::client_ip_header;
    rtp_after_srtp => "rtp", fuzzing::rtp;
    rtcp_after_srtcp => "rtcp", fuzzing::rtcp;
    dtls_before_and_during_the_handshake => "dtls", fuzzing::dtls;
    stun_checks => "stun", fuzzing::stun;
}
