//! What reaches a media loop: its socket's datagrams and its ICE-TCP frames (which may be for
//! another loop's session on the port: handed over, `net/mesh.rs`), and what the other loops hand
//! it. Each packet goes to its session; the sessions touched are then driven. The buffers are the
//! loop's own, reused from one wake-up to the next.

use std::time::Instant;

use tokio::sync::mpsc;

use super::{MediaLoop, Via, MAX_PARCELS_PER_WAKE};
use crate::media::net::mesh::{Inbox, Parcel};
use crate::media::net::routes::Destination;
use crate::media::net::stun::is_binding_success;
use crate::media::net::tcp::TcpEvent;
use crate::media::net::transport::{Inbound, PathId};
use crate::media::shield::shielded;
use crate::media::SessionKey;

impl MediaLoop {
    /// Takes in `first` and what else the other loops handed over (bounded): their claims, then
    /// their packets.
    pub(super) fn handle_parcels(&mut self, parcels: &mut Inbox, first: Option<Parcel>) {
        let mut next = first.or_else(|| parcels.try_recv());
        let mut handled = 0;
        while let Some(parcel) = next.take() {
            for claim in parcel.claims {
                self.sessions.claimed(claim);
            }
            let now = Instant::now();
            let (mut packets, mut proofs) = (parcel.packets, parcel.proofs);
            self.handle_inbound(&mut packets, now, Via::Handed);
            self.handle_inbound(&mut proofs, now, Via::Proof);
            handled += 1;
            if handled < MAX_PARCELS_PER_WAKE {
                next = parcels.try_recv();
            }
        }
    }

    /// Feeds what the ICE-TCP connections queued in like datagrams, then forgets the closed ones.
    pub(super) fn handle_tcp(
        &mut self,
        events: &mut mpsc::Receiver<TcpEvent>,
        first: Option<TcpEvent>,
    ) {
        let (mut inbound, closed) = self.net.tcp_events(events, first);
        self.handle_inbound(&mut inbound, Instant::now(), Via::Own);
        for id in closed {
            self.net.close_tcp(id);
            self.sessions.forget_path(PathId::Tcp(id));
        }
    }

    /// Feeds packets from any transport to their sessions, then drives the sessions touched.
    pub(super) fn handle_inbound(&mut self, inbound: &mut Vec<Inbound>, now: Instant, via: Via) {
        // Sessions touched by this batch, and whether a DTLS record reached them.
        let mut touched = std::mem::take(&mut self.scratch.touched);
        for packet in inbound.drain(..) {
            let Some((key, packet)) = self.owner(packet, via) else {
                continue;
            };
            let Some(conn) = self.sessions.conn_mut(key) else {
                continue;
            };
            let path = packet.path;
            let input = packet.into_tagged(now);
            let metrics = &self.config.metrics;
            let dtls = match shielded(|| conn.receive(path, input, metrics)) {
                Ok(dtls) => dtls,
                Err(panic) => {
                    self.note_panic(key, &panic);
                    continue;
                }
            };
            match touched.iter_mut().find(|(k, _)| *k == key) {
                Some((_, seen)) => *seen |= dtls,
                None => touched.push((key, dtls)),
            }
        }
        for (key, dtls) in touched.drain(..) {
            self.drive(key, now);
            if dtls {
                self.check_closed(key);
            }
        }
        self.scratch.touched = touched;
    }

    /// The session of this loop `packet` is for, if one is; a packet for another loop's session
    /// is handed over to it (`mesh.rs`), one that names no session is counted.
    pub(super) fn owner(&mut self, packet: Inbound, via: Via) -> Option<(SessionKey, Inbound)> {
        let key = match via {
            Via::Own => return self.destination(packet),
            Via::Handed => self.sessions.route(packet.path, &packet.data),
            Via::Proof => {
                return (self.sessions.proven(packet.path, &packet.data)).zip(Some(packet))
            }
        };
        if key.is_none() {
            self.net.unroutable(packet.path, &self.config);
        }
        key.zip(Some(packet))
    }

    /// Where a packet that reached this loop's own transports goes: a session of this loop, or
    /// another loop on the port. An answer to a check that no session here sent is offered to the
    /// other loops too: the session that sent the check may be theirs.
    pub(super) fn destination(&mut self, packet: Inbound) -> Option<(SessionKey, Inbound)> {
        let destination = self.sessions.destination(packet.path, &packet.data);
        let unproven = self.net.mesh().shared()
            && matches!(packet.path, PathId::Udp(_))
            && !matches!(destination, Destination::Proven(_))
            && is_binding_success(&packet.data);
        if unproven {
            let owner = match destination {
                Destination::Loop(owner) => Some(owner),
                _ => None,
            };
            self.net.mesh().offer_proof(&packet, owner);
        }
        match destination {
            Destination::Proven(key) | Destination::Session(key) => Some((key, packet)),
            Destination::Loop(owner) => {
                self.net.mesh().hand(owner, packet);
                None
            }
            // Counted here even when offered: nothing here took it, and what the other loops
            // do not take they drop without a word.
            Destination::Nowhere => {
                self.net.unroutable(packet.path, &self.config);
                None
            }
        }
    }
}
