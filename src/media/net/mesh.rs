//! The media loops that share the one UDP port. Each loop has a socket of its own bound to it
//! (SO_REUSEPORT), and the kernel picks the socket a datagram goes to by a hash of its addresses,
//! not by session: a loop's socket also receives datagrams for sessions of other loops. Sessions
//! stay in the loop that minted them (a stream's sessions in one loop, so fan-out never crosses
//! threads; resource ids and ufrags name their loop, so DELETE, PATCH and ICE-TCP find them), and
//! such a datagram is handed over to its owner, in one [`Parcel`] per loop and wake-up, with the
//! claims of remote addresses that tell the loops which is whose (`routes.rs`). The owner answers
//! from its own socket: it is bound to the same address and port, so the client sees no
//! difference.
//!
//! A Binding success response that the loop it reached cannot match to a check of its own is
//! offered to every other loop as a proof ([`Parcel::proofs`]): the loop whose session sent the
//! check takes it (and with it the path, `routes.rs`), the others drop it. That is how a client
//! that reuses its port for a new session on another loop moves its path there. Anyone can send
//! such a response, so a loop offers at most `MAX_PROOFS_PER_WAKE` per wake-up.
//!
//! Claims go out with the parcels at the end of the wake-up, before the loop's own datagrams
//! (`batch.rs`), so a claim reaches the other loops before the datagram that teaches it can be
//! answered (the answer may come to any loop's socket).

use tokio::sync::mpsc;

use super::routes::PathClaim;
use super::transport::Inbound;
use crate::ops::metrics::{Dropped, LoopMetrics};

/// Parcels queued towards one loop before the others drop their packets for it (a parcel holds
/// what one wake-up of one loop handed over, at most a few hundred datagrams).
pub const PARCEL_QUEUE: usize = 256;
/// Claims kept for a loop whose queue is full, to tell it later; beyond, the oldest are dropped
/// (the queue of a live loop empties every wake-up, so this is only reached by a stuck one).
const MAX_HELD_CLAIMS: usize = 65_536;
/// Answers to checks one loop offers the others per wake-up.
const MAX_PROOFS_PER_WAKE: usize = 64;

/// What one loop hands another in one wake-up.
#[derive(Debug, Default)]
pub struct Parcel {
    /// The sender's claims, to learn before its packets.
    pub claims: Vec<PathClaim>,
    /// Datagrams for the receiver's sessions (by a ufrag or a claim of the receiver's).
    pub packets: Vec<Inbound>,
    /// Binding success responses for whichever session sent the check they answer, if the
    /// receiver's did.
    pub proofs: Vec<Inbound>,
}

impl Parcel {
    fn is_empty(&self) -> bool {
        self.claims.is_empty() && self.packets.is_empty() && self.proofs.is_empty()
    }
}

/// One loop's links to the others on the port.
pub struct Mesh {
    me: usize,
    /// Every loop's queue, this one's included (never sent to).
    loops: Vec<mpsc::Sender<Parcel>>,
    /// What this wake-up hands each loop.
    outbox: Vec<Parcel>,
    /// Answers to checks offered this wake-up.
    offered: usize,
}

impl Mesh {
    /// Loop `me`'s links, given every loop's queue in loop order.
    pub fn new(me: usize, loops: Vec<mpsc::Sender<Parcel>>) -> Self {
        let outbox = loops.iter().map(|_| Parcel::default()).collect();
        Mesh {
            me,
            loops,
            outbox,
            offered: 0,
        }
    }

    /// This loop's index.
    pub fn me(&self) -> usize {
        self.me
    }

    /// How many loops share the port.
    pub fn len(&self) -> usize {
        self.loops.len()
    }

    /// Whether other loops share the port.
    pub fn shared(&self) -> bool {
        self.loops.len() > 1
    }

    /// Hands `packet` to loop `owner`.
    pub fn hand(&mut self, owner: usize, packet: Inbound) {
        if let Some(parcel) = self.outbox.get_mut(owner) {
            parcel.packets.push(packet);
        }
    }

    /// Offers a Binding success response to every other loop but `owner` (which is handed it);
    /// whether it was (not past this wake-up's budget).
    pub fn offer_proof(&mut self, packet: &Inbound, owner: Option<usize>) -> bool {
        if self.offered >= MAX_PROOFS_PER_WAKE {
            return false;
        }
        self.offered += 1;
        for (index, parcel) in self.outbox.iter_mut().enumerate() {
            if index != self.me && Some(index) != owner {
                parcel.proofs.push(packet.clone());
            }
        }
        true
    }

    /// Tells every other loop this loop's `claims`.
    pub fn tell(&mut self, claims: &[PathClaim]) {
        if claims.is_empty() {
            return;
        }
        for (index, parcel) in self.outbox.iter_mut().enumerate() {
            if index != self.me {
                parcel.claims.extend_from_slice(claims);
            }
        }
    }

    /// Sends each loop its parcel. A full queue drops the parcel's datagrams (counted; media is
    /// loss-tolerant and checks are retransmitted) and keeps its claims for the next wake-up.
    pub fn send(&mut self, metrics: &LoopMetrics) {
        self.offered = 0;
        for (index, queue) in self.loops.iter().enumerate() {
            let parcel = &mut self.outbox[index];
            if index == self.me || parcel.is_empty() {
                continue;
            }
            let handed = parcel.packets.len();
            match queue.try_send(std::mem::take(parcel)) {
                Ok(()) => metrics.handed_over(handed),
                Err(mpsc::error::TrySendError::Full(mut refused)) => {
                    metrics.dropped(Dropped::HandoverFull, handed as u64);
                    let excess = refused.claims.len().saturating_sub(MAX_HELD_CLAIMS);
                    refused.claims.drain(..excess);
                    parcel.claims = refused.claims;
                }
                // The loop has stopped (shutdown): nothing is waiting for it.
                Err(mpsc::error::TrySendError::Closed(_)) => {}
            }
        }
    }
}
