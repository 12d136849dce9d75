//! Real WebRTC round trips against the in-process server: echo, WHIP → WHEP, codecs, trickle and
//! ICE restarts, DTLS roles, the fast path, simulcast, ICE-TCP, several media threads. One test binary (each is
//! a link on a 2-core machine).

#[path = "../support/mod.rs"]
mod support;

mod codecs;
mod dtls_roles;
mod echo;
mod fanout;
mod fast_path;
mod ice_tcp;
mod media_threads;
mod report;
mod simulcast;
mod trickle;
