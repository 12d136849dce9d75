//! A session's peer connection, with what it may have to give since it was last drained. Each
//! drain (events, reads, writes, deadline) walks rtc's whole pipeline, about 1,500 instructions a
//! packet on the echo; a session whose packets all took the fast path gave rtc nothing, so it has
//! nothing new to give, and is not asked. Every way in that may change rtc is [`Rtc::get`], which
//! marks it; the fast path's SRTP contexts are not (the pipeline's queues do not see them).

use std::time::Instant;

use rtc::peer_connection::RTCPeerConnection;
use rtc::sansio::Protocol;
use rtc::shared::{TaggedBytesMut, TransportContext};

/// The peer connection and whether it was driven since it was drained.
pub(super) struct Rtc {
    pc: RTCPeerConnection,
    /// Events and received messages may be waiting ([`super::Conn::poll`] drains them).
    unpolled: bool,
    /// Datagrams may be waiting, and its deadline may have moved.
    unflushed: bool,
    /// Its deadline when it was last asked.
    deadline: Option<Instant>,
    /// Its selected pair as a transport context, when it was last asked (none: ask again).
    transport: Option<TransportContext>,
}

impl Rtc {
    pub(super) fn new(pc: RTCPeerConnection) -> Self {
        Rtc {
            pc,
            unpolled: true,
            unflushed: true,
            deadline: None,
            transport: None,
        }
    }

    /// The peer connection, to drive: what it gives is drained at the next poll and flush.
    pub(super) fn get(&mut self) -> &mut RTCPeerConnection {
        self.unpolled = true;
        self.unflushed = true;
        self.transport = None;
        &mut self.pc
    }

    /// The peer connection, to read.
    pub(super) fn peek(&self) -> &RTCPeerConnection {
        &self.pc
    }

    /// Whether events or received messages may be waiting; from now on none are, until it is
    /// driven again (the caller drains them, through [`Rtc::draining`]).
    pub(super) fn take_unpolled(&mut self) -> bool {
        if !std::mem::take(&mut self.unpolled) {
            return false;
        }
        // Draining may move datagrams and timers along.
        self.unflushed = true;
        true
    }

    /// The peer connection, for the drain that [`Rtc::take_unpolled`] allowed.
    pub(super) fn draining(&mut self) -> &mut RTCPeerConnection {
        &mut self.pc
    }

    /// The next datagram it sends, if it may have one.
    pub(super) fn poll_write(&mut self) -> Option<TaggedBytesMut> {
        if !self.unflushed {
            return None;
        }
        self.pc.poll_write()
    }

    /// Its next deadline: asked again only if it was driven since (called once its datagrams
    /// are drained, which the loop's flush does first).
    pub(super) fn deadline(&mut self) -> Option<Instant> {
        if std::mem::take(&mut self.unflushed) {
            self.deadline = self.pc.poll_timeout();
        }
        self.deadline
    }

    /// The SRTP contexts (vendored rtc change 8), for the fast path.
    pub(super) fn srtp_contexts(
        &mut self,
    ) -> Option<(
        &mut rtc::srtp::context::Context,
        &mut rtc::srtp::context::Context,
    )> {
        self.pc.srtp_contexts()
    }

    /// Where what the fast path sends goes: the selected pair (vendored rtc change 8), asked
    /// again only after rtc was driven (only then can the selection change).
    pub(super) fn transport(&mut self) -> Option<TransportContext> {
        if self.transport.is_none() {
            self.transport = self.pc.selected_transport();
        }
        self.transport
    }
}
