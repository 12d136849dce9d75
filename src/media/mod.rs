//! The media plane: a media loop owns its UDP socket and every peer connection on it (sans-IO
//! `rtc`), so protocol state needs no locks. There is one loop per core (`--media-threads N`: N),
//! each on its own OS thread with its own socket on the one UDP port (`net/mesh.rs`), and a
//! stream's sessions share a loop.
//! The HTTP plane talks to them only through [`MediaHandle`], which negotiates each new peer
//! connection on the request's own task and hands the finished connection to its loop.

mod api;
mod cap;
mod command;
mod conn;
mod error;
mod event_loop;
pub mod forward;
mod handle;
mod listing;
mod loops;
pub mod negotiate;
pub(crate) mod net;
mod pull;
mod reports;
mod sessions;
mod shield;
mod stats;
mod timers;

pub(crate) use crate::ops::metrics::NackMetrics;

pub use cap::SessionLimits;
pub use error::MediaError;
pub use loops::{spawn, LoopEnd, MediaLoops};
pub use net::socket::{local_ips, Announced, Announcements, Candidates};
pub use net::tcp::TcpLimits;
pub use pull::PendingPull;

pub(crate) use cap::PerClient;
pub(crate) use net::stun::stun_request_local_ufrag;

/// Index of a session inside its media loop.
pub type SessionKey = usize;

/// Test builds only (feature `fault-injection`): a datagram with these bytes makes the media loop
/// panic while a session's peer connection handles it, as a bug in `rtc` would.
#[cfg(feature = "fault-injection")]
pub const FAULT_DATAGRAM: &[u8] = b"\x80 whip-echo fault injection: panic here";

pub(crate) use net::tcp::{frame as rfc4571_frame, read_frame as read_rfc4571_frame};

/// Queue depth between the HTTP plane and a media loop.
const COMMAND_QUEUE: usize = 1024;

pub use api::{
    Created, IcePatch, IfMatch, LayerState, MediaConfig, Patched, PlayerInfo, PublisherInfo,
    PublisherKind, ResourceState, StreamInfo, Transport,
};
pub(crate) use command::{Command, NewSession};
pub(crate) use handle::Shard;
pub use handle::{stream_loop, MediaHandle};
pub(crate) use stats::StatsSlot;
pub use stats::{Stats, StatsWatch};
