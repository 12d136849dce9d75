//! The host's network as start-up and the self-test see it: public-address discovery, whip-echo
//! as a STUN client, the ports browsers refuse, and the open-file limit that caps ICE-TCP.

pub mod discover;
pub mod fd_limit;
pub mod ports;
pub(crate) mod stun_client;
