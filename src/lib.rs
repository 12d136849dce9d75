//! whip-echo: a WHIP (RFC 9725) ingest and WHEP (draft-ietf-wish-whep) egress server for audio,
//! with a single-connection echo extension.
//!
//! # Layout
//!
//! | module       | its one job |
//! |--------------|-------------|
//! | [`config`]   | the clap `Config` (flags and `WHIP_ECHO_*` env vars), parsed once in `main` |
//! | [`telemetry`]| tracing subscriber set-up |
//! | [`server`]   | `run(listener, config, shutdown)`: binds the UDP sockets, starts both planes, stops them; ends with an error if a media loop dies |
//! | [`http`]     | the HTTP plane: `router()`, the offer extractor, CORS, one file per resource |
//! | [`error`]    | `ApiError` and the one mapping of errors (the media plane's included) to statuses |
//! | [`media`]    | the media plane: `MediaHandle` (negotiates on the caller's task, hands the connection over), media loops on their own threads, each owning a UDP socket and its `rtc` peer connections |
//! | [`registry`] | session → resource id, role, stream; stream → publisher + viewers (pure bookkeeping) |
//! | [`session`]  | loop-addressed resource ids, roles, stream names, end reasons |
//! | [`tls`]      | the `--tls-cert`/`--tls-key` acceptor for HTTPS on the HTTP port |
//! | [`fd_limit`] | the open-file limit raised to the hard one at start; the ICE-TCP cap derived from it |
//! | [`rate`]     | token buckets: POSTs and PATCHes per client, ICE restarts per session |
//! | [`cluster`]  | cluster mode: heartbeats, stream leases and fencing in Redis, 307s, forwarding, the WHEP cascade |
//!
//! Inside [`media`]: `loops` (threads and their end guard), `peer` (negotiation, per-loop
//! certificate, loop-addressed ICE credentials), `offer` (pure offer checks), `event_loop` (the
//! loop), `commands` (the loop's side of the HTTP commands), `conn` (one session's protocol state
//! and legs per track), `transport` (the transport seam: `PathId`, `Inbound`, `Transports`),
//! `tcp` (ICE-TCP on the shared port), `shared_port` (the HTTP listener that also takes
//! ICE-TCP), `pending` (each listener's pool of connections not yet identified), `early_dtls`
//! (DTLS held until ICE nominates), `answer` (the one text edit of rtc's answer), `routes`,
//! `timers`, `forward`, `cap` (the session caps and ICE-TCP slots), `socket`, `error`
//! (`MediaError`).
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
pub mod discover;
pub mod error;
pub mod fd_limit;
#[doc(hidden)]
pub mod fuzzing;
pub mod healthcheck;
pub mod http;
pub mod ice_servers;
pub mod media;
pub mod metrics;
pub mod ports;
pub mod rate;
pub mod registry;
pub mod sdpfrag;
pub mod selftest;
pub mod server;
pub mod session;
mod stun_client;
pub mod telemetry;
pub mod tls;
