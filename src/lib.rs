//! whip-echo: a WHIP (RFC 9725) ingest and WHEP (draft-ietf-wish-whep) egress server for audio,
//! with a single-connection echo extension.
//!
//! # Module map
//!
//! The one map of the crate: every module with its one job (`module_map` below fails when a
//! source file is not on it). The README's architecture section points here.
//!
//! | module | its one job |
//! |---|---|
//! | `config` | the clap `Config` (flags and `WHIP_ECHO_*` env vars), parsed once in `main`; secret files read once |
//! | `config::secrets` | the `--*-file` secrets read once; secrets hidden from the start-up log line |
//! | `config::access` | the flags of who may publish and play (tokens, JWTs) and read `/api/streams` |
//! | `config::turn` | the flags of the STUN/TURN servers clients are told of, and TURN credentials |
//! | `config::cluster` | cluster mode's flags (Redis, node URL, secret, TTLs) |
//! | `startup` | `Plan::resolve` (auth, TURN, ICE servers, cluster, DNS, ports, limits, configuration errors first) and `Plan::bind` (the media sockets, STUN discovery) |
//! | `startup::addresses` | every announced candidate, computed once from the bound and configured addresses (pure) |
//! | `startup::dns` | names looked up once at start-up: bind hosts, `--public-ip`, forwards, the STUN-discovered address |
//! | `server` | `run(listener, config, shutdown)` and `spawn` (tests): binds, starts both planes and the cluster, stops them; an error if a media loop dies |
//! | `ops` | operations: metrics, the health check, logs (the room of the three below) |
//! | `ops::metrics` | Prometheus metrics (`prometheus-client`): every counter and gauge, the text exposition |
//! | `ops::metrics::loops` | the counters a media loop moves (resolved once), the NACK responders' |
//! | `ops::metrics::causes` | the label sets and the causes metrics count by |
//! | `ops::healthcheck` | `whip-echo healthcheck`: one `GET /readyz`, for a container's health check |
//! | `selftest` | the start-up self-test: a loopback client over each media path (UDP, ICE-TCP, the HTTP port) |
//! | `ops::telemetry` | the tracing subscriber: the non-blocking writer, the WebRTC stack's log budget, rate gates |
//! | `auth` | who may publish and play: bearer tokens and JWTs (RFC 9725 §4.7.1) |
//! | `rate` | token buckets: POSTs and PATCHes per client (a bounded map), ICE restarts per session |
//! | `session` | loop-addressed (and node-tagged) resource ids, roles, stream names, end reasons |
//! | `registry` | session → resource id, role, stream; stream → publisher + viewers (pure bookkeeping) |
//! | `sdpfrag` | RFC 8840 SDP fragments: parse a PATCH body, build a restart's answer |
//! | `ice_servers` | the STUN/TURN servers clients are told of (RFC 9725 §4.6 `Link`s, TURN REST credentials) |
//! | `network` | the host's network at start-up: discovery, STUN client, browser port rules, the open-file limit |
//! | `network::discover` | public-address discovery at start-up (`--stun-discover`) |
//! | `network::stun_client` | whip-echo as a STUN client: the self-test's checks, discovery's Binding request |
//! | `network::ports` | whether browsers will use an announced candidate (ports Chromium and Firefox refuse) |
//! | `network::fd_limit` | the open-file limit raised to the hard one at start; the ICE-TCP cap derived from it |
//! | `fuzzing` | the fuzz targets' entry points (`fuzz/`), also run by `tests/api/properties.rs` |
//! | `streams` | the domain door: `Streams::admit`/`open` (auth, checked offer, placement, lease given back, pull prepared, absolute `Location`), `resource` (here, on another node, gone) |
//! | `http` | the HTTP plane: `router()`, extracting and checking requests, one `Streams` or media call each, the responses |
//! | `http::endpoints` | `POST /whip`, `/whep`, `/echo` (offer in, 201 out), OPTIONS with `Link`s, placement in cluster mode |
//! | `http::resource` | `/resource/{id}`: PATCH (trickle, ICE restart), GET, DELETE |
//! | `http::layer` | a WHEP viewer's simulcast layer: `/resource/{id}/layer` and `?layer=` |
//! | `http::sessions` | operators' `/api/sessions`: the live sessions by public id, each one's report, the kick (admin token) |
//! | `http::report` | a session's client report: `/resource/{id}/report` (JSON, or text for `Accept: text/plain`) |
//! | `http::forward` | cluster mode: a request for another node's session relayed there |
//! | `http::sdp` | the body extractors: media type, size, UTF-8 of offers and fragments |
//! | `http::error` | `ApiError` and the one mapping of errors (the media plane's included) to statuses |
//! | `http::cors` | CORS on the endpoints and resources |
//! | `http::assets` | the embedded page, `/healthz` |
//! | `http::ops` | `/metrics`, `/readyz`, `/api/streams`, the response counter |
//! | `http::serve` | the HTTP connection loop (hyper): header timeout, connection caps, drain at shutdown |
//! | `http::port` | the port classifier: the HTTP listener that also takes ICE-TCP and TLS (HTTP, HTTPS, ICE-TCP), by each connection's first byte |
//! | `http::tls` | the `--tls-cert`/`--tls-key` acceptor (rustls) for HTTPS on the HTTP port |
//! | `media` | the media plane: its rooms below, re-exporting what callers use |
//! | `media::handle` | `MediaHandle`: negotiates on the caller's task, hands the connection to its loop, sends the other commands to the loop that minted the resource |
//! | `media::command` | the commands a loop takes, and the negotiated session a `Create` hands over |
//! | `media::api` | the media plane's types as callers see them (`/api/streams`, layers, PATCH, `MediaConfig`) |
//! | `media::stats` | what each loop publishes after every change, and the totals |
//! | `media::loops` | one OS thread per media loop, the guard that reports a loop's end |
//! | `media::event_loop` | the loop: bounded wake-ups; it only dispatches (packets to sessions, their events, fan-out, the one teardown) |
//! | `media::event_loop::commands` | the loop's side of the HTTP commands: adopt, delete, layer, PATCH |
//! | `media::event_loop::inbound` | what reaches a loop (its datagrams, ICE-TCP frames, the other loops' parcels) to its sessions, in reused buffers |
//! | `media::event_loop::io` | the loop's transports: inbound batches, sends learnt as routes, the ICE-TCP caps, the unanswered-check budget |
//! | `media::event_loop::fan_out` | the fan-out over a loop's sessions: a publisher's packets to its stream's legs |
//! | `media::sessions` | `Sessions`: the one writer of the connection map, the registry and the routes (adopt, teardown, restarts) |
//! | `media::listing` | what a loop reports (`/api/streams`, a stream's codecs, a viewer's layer) and a viewer's layer choice |
//! | `media::conn` | one session: receive (early DTLS hold), poll (typed events), deadlines; fields private |
//! | `media::conn::ice` | a session's ICE generations and its side of a PATCH (trickle, restart) |
//! | `media::conn::ingest` | a publisher's side of a session: SSRC kinds, sources, bitrate budget, keyframe requests |
//! | `media::conn::receive` | what a session receives, classified by it alone: early DTLS held, the rest to rtc, refusals counted |
//! | `media::conn::fast` | a session's fast path once DTLS is up: SRTP opened and protected with its own contexts, sends queued, its viewers' NACKs answered |
//! | `media::conn::fast::rtcp` | a fast-path session's own RTCP: reports and feedback when due, written through rtc |
//! | `media::conn::fast::feedback` | a fast-path publisher's NACK and TWCC feedback: rtc-interceptor's generator and recorder, driven by the fast path |
//! | `media::conn::pipeline` | a session's peer connection and whether it was driven since drained: the fast path's sessions skip rtc's drains |
//! | `media::conn::events` | what a session says happened (typed events), what a drain produced, what a timer did |
//! | `media::reports` | the client reports as the HTTP plane asks: by resource, every session, by public id and the kick |
//! | `media::conn::report` | a session's side of its client report: its client's PATCHes, path and first media, and the report built from them |
//! | `media::conn::fast::client` | what the fast path saw of its client for the report: the client's RTCP, each track's statistics |
//! | `media::conn::early_dtls` | DTLS that arrives before ICE nominates, held (bounded) |
//! | `media::negotiate` | negotiation, on the request's task (the room of the seven below) |
//! | `media::negotiate::peer` | negotiation in named steps, per-loop certificate, loop-addressed ICE credentials |
//! | `media::negotiate::engine` | the peer connection before any description: media engine, interceptors, setting engine (consent, DTLS role and resends, ICE-TCP) |
//! | `media::negotiate::offer` | pure checks of an offer (SDP, audio, direction, candidates) |
//! | `media::negotiate::transport_attrs` | the offer's ICE and DTLS attributes, checked before rtc sees them |
//! | `media::negotiate::codecs` | the codecs whip-echo forwards and the choice of one per section |
//! | `media::negotiate::answer` | the text edits of rtc's answer |
//! | `media::negotiate::patch` | PATCH's pure part: what a fragment asks, `If-Match`, the restart's re-offer |
//! | `media::forward` | the per-packet path, knowing no sessions or sockets (the room of the ten below) |
//! | `media::forward::legs` | a viewer's send legs and what one fan-out lets each take (codec, layer, keyframe wait), written |
//! | `media::forward::forwarder` | rewriting a publisher's RTP for one leg (SSRC, payload type, sequence, timestamps) |
//! | `media::forward::sources` | a publisher's sources: the audio one forwarded, its video layers, the layer each viewer takes |
//! | `media::forward::layers` | a publisher's layers as a fan-out reads them (no allocation), the bounded SSRC set, rids |
//! | `media::forward::keyframes` | a publisher's keyframe-request state: the layers wanted, one request per 500 ms, PLI or FIR |
//! | `media::forward::random_access` | where a video payload starts a keyframe, and the picture size it carries |
//! | `media::forward::bitrate` | the per-publisher bitrate cap (`--max-bitrate`) |
//! | `media::forward::nack` | whip-echo's NACK responder: resends bounded per packet, RTT and second |
//! | `media::forward::reports` | the fast path's RTCP statistics: loss, jitter and LSR per received SSRC, counts per send leg (RFC 3550) |
//! | `media::forward::history` | a video leg's sent packets kept for resending and the rules of a resend (count, RTT, bytes) |
//! | `media::net` | the network under the loops (the room of the six below) |
//! | `media::net::routes` | which session an inbound packet belongs to (ufrag, path, proof of return routability) |
//! | `media::net::stun` | what whip-echo reads of a STUN message before rtc: Binding type, transaction id, the local ufrag |
//! | `media::net::transport` | the transport seam: `PathId`, `Inbound`, `Transports::send` |
//! | `media::net::socket` | the shared UDP socket: batched receive with destination addresses |
//! | `media::net::batch` | what a loop sends in one wake-up, sent by `sendmmsg` per source address |
//! | `media::net::mesh` | the loops on the one UDP port: datagrams for another loop's session handed over, the claims of remote addresses |
//! | `media::net::tcp` | ICE-TCP on the shared port: RFC 4571 framing, the loop's connections and their caps |
//! | `media::net::tcp::intake` | ICE-TCP connections from any listener: the acceptor, each connection's task (first frame picks the loop, then both ways) |
//! | `media::net::tcp::framing` | RFC 4571 framing: a 16-bit length before each packet, read with a growing buffer |
//! | `media::net::pending` | each listener's pool of connections not yet identified |
//! | `media::pull` | cluster mode: the pull's peer connection (a WHEP client of the holder), adopted as the stream's publisher |
//! | `media::timers` | the loop's deadlines: one min-heap with lazy invalidation |
//! | `media::cap` | the session caps (in all, per client, per /48, connecting) and ICE-TCP slots |
//! | `media::shield` | a panic of the WebRTC stack ends its session alone |
//! | `media::error` | `MediaError`, the media plane's own refusals |
//! | `report` | the client report: what a client did, right and wrong, with the RFC section each finding rests on (pure data) |
//! | `report::offer` | what a client's offer says (bundle, candidates, codecs, Opus parameters, extensions, rids), bounded |
//! | `report::findings` | the verdicts of a report, each with its evidence and basis |
//! | `report::text` | a report as plain text |
//! | `report::kept` | ended sessions' reports for the grace period, bounded per loop |
//! | `cluster` | cluster mode's handle: placement (lease or 307), pull tokens, the node of a resource id |
//! | `cluster::store` | the Redis keys and Lua scripts, one atomic call each |
//! | `cluster::keeper` | the one background task per node: lease renewal, fencing, heartbeat, the node table |
//! | `cluster::config` | cluster mode's settings (`--cluster-*`, `--node-url`), checked once |
//! | `cluster::joining` | the membership before the media plane exists (Redis, HTTP client, node tag); `with_media` makes the cluster |
//! | `cluster::nodes` | the node table: another node's URL without a Redis call, lookups of unknown tags budgeted |
//! | `cluster::pull` | the pull (one word for it everywhere): one per stream per node, following the lease |
//! | `cluster::token` | pull tokens, forwarded-request marks and signed node records (HMAC-SHA256) |
//!
//! # Ownership
//!
//! The HTTP plane holds only a [`media::MediaHandle`] (command channels, the per-loop peer
//! settings, the session cap). It negotiates a new peer connection on the request's task and
//! sends the finished connection to the loop that owns the stream, with a oneshot reply; DELETE
//! and GET go to the loop that minted the resource id. Each media loop owns its socket, peer
//! connections, routing tables and registry, so nothing is locked (the one shared value is the
//! atomic session count behind the cap's permits). Every session ends through one teardown
//! function in the media loop (DELETE, ICE failure, setup timeout, peer close, takeover,
//! abandoned POST, shutdown).
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod auth;
pub mod cluster;
pub mod config;
#[doc(hidden)]
pub mod fuzzing;
pub mod http;
pub mod ice_servers;
pub mod media;
pub mod network;
pub mod ops;
pub mod rate;
pub mod registry;
pub mod report;
pub mod sdpfrag;
pub mod selftest;
pub mod server;
pub mod session;
pub mod startup;
pub mod streams;

#[cfg(test)]
mod module_map {
    use std::path::Path;

    /// Every source file's module is named on the map at the top of this file.
    #[test]
    fn every_module_is_on_the_map() {
        let map = include_str!("lib.rs");
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        let mut modules = Vec::new();
        walk(&root, &root, &mut modules);
        assert!(modules.len() > 50, "{modules:?}");
        let missing: Vec<_> = modules
            .iter()
            .filter(|m| !map.contains(&format!("//! | `{m}` |")))
            .collect();
        assert!(
            missing.is_empty(),
            "not on the module map in lib.rs: {missing:?}"
        );
    }

    /// No module imports another that imports it back, directly or through others: neither
    /// between the crate's top-level modules (each with everything below it) nor between the
    /// modules one level down (`media::conn`, `http::layer`, …). Imports are the `crate::` and
    /// `super::` paths outside test code.
    #[test]
    fn no_module_imports_one_that_imports_it_back() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        let mut files = Vec::new();
        walk_files(&root, &root, &mut files);
        for level in [1, 2] {
            let node = |module: &str| {
                module
                    .split("::")
                    .take(level)
                    .collect::<Vec<_>>()
                    .join("::")
            };
            let nodes: std::collections::BTreeSet<String> =
                files.iter().map(|(m, _)| node(m)).collect();
            let mut edges: std::collections::BTreeMap<String, std::collections::BTreeSet<String>> =
                Default::default();
            for (module, text) in &files {
                let from = node(module);
                let code = text.split("#[cfg(test)]").next().unwrap_or_default();
                let parent: Vec<&str> = module.split("::").collect();
                let parent = parent[..parent.len().saturating_sub(1)].join("::");
                for (prefix, base) in [("crate::", String::new()), ("super::", parent)] {
                    for path in code.split(prefix).skip(1) {
                        let ident: String = path
                            .chars()
                            .take_while(|c| c.is_alphanumeric() || *c == '_' || *c == ':')
                            .collect();
                        let full = if base.is_empty() {
                            ident
                        } else {
                            format!("{base}::{ident}")
                        };
                        let to = node(&full);
                        if to != from && nodes.contains(&to) {
                            edges.entry(from.clone()).or_default().insert(to);
                        }
                    }
                }
            }
            // A cycle: a module reached again from itself.
            for start in &nodes {
                let mut seen = std::collections::BTreeSet::new();
                let mut todo: Vec<&String> = edges.get(start).into_iter().flatten().collect();
                while let Some(next) = todo.pop() {
                    assert!(
                        next != start,
                        "{start} imports a module that imports it back"
                    );
                    if seen.insert(next) {
                        todo.extend(edges.get(next).into_iter().flatten());
                    }
                }
            }
        }
    }

    /// Each `.rs` file under `dir` as (its module path, its text).
    fn walk_files(root: &Path, dir: &Path, files: &mut Vec<(String, String)>) {
        let mut modules = Vec::new();
        walk(root, dir, &mut modules);
        for module in modules {
            let relative = module.replace("::", "/");
            let file = root.join(format!("{relative}.rs"));
            let path = if file.exists() {
                file
            } else {
                root.join(relative).join("mod.rs")
            };
            files.push((
                module,
                std::fs::read_to_string(path).expect("a source file"),
            ));
        }
    }

    /// The module path of each `.rs` file under `dir` (`media/forward/sources.rs`: `media::forward::sources`).
    fn walk(root: &Path, dir: &Path, modules: &mut Vec<String>) {
        for entry in std::fs::read_dir(dir).expect("src/ is readable") {
            let path = entry.expect("a directory entry").path();
            if path.is_dir() {
                walk(root, &path, modules);
                continue;
            }
            let relative = path.strip_prefix(root).expect("under src/");
            let mut parts: Vec<String> = relative
                .with_extension("")
                .iter()
                .map(|p| p.to_string_lossy().into_owned())
                .collect();
            if parts.last().is_some_and(|p| p == "mod") {
                parts.pop();
            }
            let module = parts.join("::");
            if module != "lib" && module != "main" {
                modules.push(module);
            }
        }
    }
}
