//! The network under the media loops: the shared UDP socket, ICE-TCP and the listeners it shares,
//! the transport seam (`PathId`, `Inbound`), the routes from a packet to its session, and what is
//! read of STUN before rtc.

pub(crate) mod batch;
pub(crate) mod mesh;
pub(crate) mod pending;
pub(crate) mod routes;
pub(crate) mod socket;
pub(crate) mod stun;
pub(crate) mod tcp;
pub(crate) mod transport;
