//! The per-packet path of forwarding: what reaches the fan-out of a publisher's sources, each
//! viewer leg's rewrite and layer, keyframe requests and where keyframes start, the bitrate cap,
//! and NACK answers. None of it knows sessions or sockets, so the fast path can take it whole.

pub(crate) mod bitrate;
pub(crate) mod forwarder;
mod history;
pub(crate) mod keyframes;
pub(crate) mod layers;
pub(crate) mod legs;
pub(crate) mod nack;
pub(crate) mod random_access;
pub(crate) mod reports;
pub mod sources;
