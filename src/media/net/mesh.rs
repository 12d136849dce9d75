//! The media loops that share the one UDP port. Each loop has a socket of its own bound to it
//! (SO_REUSEPORT), and the kernel picks the socket a datagram goes to by a hash of its addresses,
//! not by session: a loop's socket also receives datagrams for sessions of other loops. Sessions
//! stay in the loop that minted them (a stream's sessions in one loop, so fan-out never crosses
//! threads; resource ids and ufrags name their loop, so DELETE, PATCH and ICE-TCP find them), and
//! such a datagram is handed over to its owner, in one [`Parcel`] per loop and wake-up (at most
//! [`MAX_QUEUED_BYTES`] of them waiting for one loop: a flood that names one loop's ufrags,
//! which anyone can guess by their first digits, costs that loop no more), with the
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

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use tokio::sync::mpsc;

use super::routes::PathClaim;
use super::transport::Inbound;
use crate::ops::metrics::{Dropped, LoopMetrics};

/// Parcels queued towards one loop at most (a parcel holds what one wake-up of one loop handed
/// over).
const PARCEL_QUEUE: usize = 256;
/// Bytes of datagrams queued towards one loop at most, whatever the number of parcels: about a
/// socket receive buffer's worth. Past it the others drop what they would hand it (a flood that
/// names one loop, hundreds of megabytes of it once, is held to this much memory and this much
/// delay for that loop's own clients).
pub const MAX_QUEUED_BYTES: usize = 4 << 20;
/// Claims kept for a loop whose queue is full, to tell it later; beyond, the oldest are dropped
/// (the queue of a live loop empties every wake-up, so this is only reached by a stuck one).
const MAX_HELD_CLAIMS: usize = 65_536;
/// Answers to checks one loop offers the others per wake-up.
const MAX_PROOFS_PER_WAKE: usize = 64;

/// One loop's queue, as the other loops hand it parcels: the channel and the bytes of datagrams
/// waiting in it.
#[derive(Clone)]
pub struct Queue {
    parcels: mpsc::Sender<Parcel>,
    bytes: Arc<AtomicUsize>,
}

/// One loop's end of its queue.
pub struct Inbox {
    parcels: mpsc::Receiver<Parcel>,
    bytes: Arc<AtomicUsize>,
}

/// A loop's queue: the end the others hand parcels to and its own.
pub fn queue() -> (Queue, Inbox) {
    let (tx, rx) = mpsc::channel(PARCEL_QUEUE);
    let bytes = Arc::new(AtomicUsize::new(0));
    let queue = Queue {
        parcels: tx,
        bytes: bytes.clone(),
    };
    (queue, Inbox { parcels: rx, bytes })
}

impl Inbox {
    /// The next parcel, waiting for one (`None`: every other loop has stopped).
    pub async fn recv(&mut self) -> Option<Parcel> {
        let parcel = self.parcels.recv().await;
        self.taken(parcel)
    }

    /// The next parcel if one is queued.
    pub fn try_recv(&mut self) -> Option<Parcel> {
        let parcel = self.parcels.try_recv().ok();
        self.taken(parcel)
    }

    fn taken(&self, parcel: Option<Parcel>) -> Option<Parcel> {
        if let Some(parcel) = &parcel {
            self.bytes.fetch_sub(parcel.bytes, Ordering::Relaxed);
        }
        parcel
    }

    /// Bytes of datagrams queued.
    #[cfg(test)]
    fn queued_bytes(&self) -> usize {
        self.bytes.load(Ordering::Relaxed)
    }
}

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
    /// The bytes of its datagrams, counted against [`MAX_QUEUED_BYTES`].
    bytes: usize,
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
    loops: Vec<Queue>,
    /// What this wake-up hands each loop.
    outbox: Vec<Parcel>,
    /// Answers to checks offered this wake-up.
    offered: usize,
}

impl Mesh {
    /// Loop `me`'s links, given every loop's queue in loop order.
    pub fn new(me: usize, loops: Vec<Queue>) -> Self {
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
            parcel.bytes += packet.data.len();
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
                parcel.bytes += packet.data.len();
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

    /// Sends each loop its parcel. A queue that is full, in parcels or in bytes, drops the
    /// parcel's datagrams (counted; media is loss-tolerant and checks are retransmitted), and its
    /// claims wait for the next wake-up.
    pub fn send(&mut self, metrics: &LoopMetrics) {
        self.offered = 0;
        for (index, queue) in self.loops.iter().enumerate() {
            let parcel = &mut self.outbox[index];
            if index == self.me || parcel.is_empty() {
                continue;
            }
            let mut parcel = std::mem::take(parcel);
            let mut handed = parcel.packets.len();
            if queue.bytes.load(Ordering::Relaxed) + parcel.bytes > MAX_QUEUED_BYTES {
                metrics.dropped(Dropped::HandoverFull, handed as u64);
                parcel.packets.clear();
                parcel.proofs.clear();
                (parcel.bytes, handed) = (0, 0);
                if parcel.claims.is_empty() {
                    continue;
                }
            }
            let bytes = parcel.bytes;
            queue.bytes.fetch_add(bytes, Ordering::Relaxed);
            match queue.parcels.try_send(parcel) {
                Ok(()) => metrics.handed_over(handed),
                Err(mpsc::error::TrySendError::Full(mut refused)) => {
                    queue.bytes.fetch_sub(bytes, Ordering::Relaxed);
                    metrics.dropped(Dropped::HandoverFull, handed as u64);
                    let excess = refused.claims.len().saturating_sub(MAX_HELD_CLAIMS);
                    refused.claims.drain(..excess);
                    self.outbox[index].claims = refused.claims;
                }
                // The loop has stopped (shutdown): nothing is waiting for it.
                Err(mpsc::error::TrySendError::Closed(_)) => {
                    queue.bytes.fetch_sub(bytes, Ordering::Relaxed);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::net::routes::ClaimKind;
    use crate::media::net::transport::PathId;
    use crate::ops::metrics::{Gauges, Metrics};

    fn datagram(len: usize) -> Inbound {
        let peer: std::net::SocketAddr = "127.0.0.1:5000".parse().unwrap();
        Inbound {
            path: PathId::Udp(peer),
            local: "127.0.0.1:8189".parse().unwrap(),
            peer,
            data: bytes::BytesMut::from(&vec![0x80; len][..]),
        }
    }

    fn counted(metrics: &Metrics, line: &str) -> String {
        let text = metrics.encode(&Gauges::default());
        let found = text.lines().find(|l| l.starts_with(line)).unwrap_or("");
        found.rsplit(' ').next().unwrap_or("").to_owned()
    }

    #[test]
    fn a_loop_that_does_not_take_its_parcels_holds_at_most_its_bytes() {
        let (zero, _zero_inbox) = queue();
        let (one, mut inbox) = queue();
        let mut mesh = Mesh::new(0, vec![zero, one]);
        let metrics = Metrics::new();
        let loop_metrics = metrics.for_loops();
        // Loop 1 is busy: wake-up after wake-up, loop 0 hands it 64 KiB, far past its bytes.
        for _ in 0..(2 * MAX_QUEUED_BYTES / (64 << 10)) {
            for _ in 0..64 {
                mesh.hand(1, datagram(1024));
            }
            mesh.send(&loop_metrics);
        }
        assert_eq!(inbox.queued_bytes(), MAX_QUEUED_BYTES);
        let full = r#"whip_echo_dropped_packets_total{cause="handover_full"}"#;
        assert_eq!(counted(&metrics, full), (64 * 64).to_string());
        // Claims still go while datagrams cannot.
        let addr = "127.0.0.1:6000".parse().unwrap();
        let claim = PathClaim {
            addr,
            owner: 0,
            kind: ClaimKind::Learnt,
        };
        mesh.hand(1, datagram(1024));
        mesh.tell(&[claim]);
        mesh.send(&loop_metrics);
        let mut parcels = Vec::new();
        while let Some(parcel) = inbox.try_recv() {
            parcels.push(parcel);
        }
        let last = parcels.last().unwrap();
        assert_eq!((last.claims.len(), last.packets.len()), (1, 0));
        let handed: usize = parcels.iter().map(|p| p.packets.len()).sum();
        assert_eq!(handed * 1024, MAX_QUEUED_BYTES);
        // Taken, the room is back.
        assert_eq!(inbox.queued_bytes(), 0);
        mesh.hand(1, datagram(1024));
        mesh.send(&loop_metrics);
        assert_eq!(inbox.try_recv().unwrap().packets.len(), 1);
    }
}
