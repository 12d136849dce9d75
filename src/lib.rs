//! whip-echo: a WHIP (RFC 9725) ingest and WHEP (draft-ietf-wish-whep) egress server for audio,
//! with a single-connection echo extension.
//!
//! # Layout
//!
//! | module       | its one job |
//! |--------------|-------------|
//! | [`config`]   | the clap `Config` (flags and `WHIP_ECHO_*` env vars), parsed once in `main` |
//! | [`telemetry`]| tracing subscriber set-up |
//! | [`server`]   | `run(listener, config, shutdown)`: binds the UDP sockets, starts both planes, stops them |
//! | [`http`]     | the HTTP plane: `router()`, the offer extractor, CORS, one file per resource |
//! | [`error`]    | `ApiError` and the one mapping of errors to statuses |
//! | [`media`]    | the media plane: media loops, each one task owning a UDP socket and its `rtc` peer connections |
//! | [`registry`] | resource id → session, stream → publisher + viewers (pure bookkeeping) |
//! | [`session`]  | ids, roles, stream names, end reasons |
//!
//! # Ownership
//!
//! The HTTP plane holds only a [`media::MediaHandle`] (command channels). Each media loop owns its
//! socket, peer connections, routing tables and registry, so nothing is locked (the one shared value
//! is an atomic session count for the global cap): an HTTP request becomes a command with a oneshot
//! reply, sent to the loop that owns the stream. Every session ends through one teardown function
//! in the media loop (DELETE, ICE failure, setup timeout, peer close, shutdown).

#![warn(missing_docs)]

pub mod config;
pub mod error;
pub mod http;
pub mod media;
pub mod registry;
pub mod server;
pub mod session;
pub mod telemetry;
