//! What a session says happened ([`Conn::poll`](super::Conn::poll)'s typed events, str0m's `Output` habit), what
//! draining it produced, and what a timer of its did.

use rtc::rtp::packet::Packet;
use rtc::rtp_transceiver::rtp_sender::RtpCodecKind;

use crate::session::EndReason;

/// What happened to a session, as [`Conn::poll`](super::Conn::poll) reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// It connected (ICE and DTLS up, again after a restart or a consent gap).
    Connected,
    /// Its consent checks fail (RFC 7675).
    Disconnected,
    /// The connection ended (failed or closed).
    Ended(EndReason),
    /// The client asked for a keyframe of the video it receives (PLI or FIR).
    KeyframeWanted,
}

/// What draining a session produced.
#[derive(Default)]
pub struct Polled {
    /// What happened, in order.
    pub events: Vec<Event>,
    /// RTP received from a publishing client that reaches the fan-out, with the kind of the
    /// track it came on (within the bitrate cap).
    pub media: Vec<(RtpCodecKind, Packet)>,
}

/// What [`Conn::fire`](super::Conn::fire) makes of a timer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fired {
    /// Superseded by an earlier entry.
    Stale,
    /// The setup deadline passed while connecting.
    SetupTimeout,
    /// Its peer connection's deadline: handled.
    Handled,
}
