//! What a media loop sends on its UDP socket in one wake-up, queued and sent together: one
//! `sendmmsg(2)` (nix) per run of datagrams with the same source address (a call's control
//! message, IP_PKTINFO, is shared by its datagrams), instead of a `sendmsg` each. The datagrams are
//! moved in, not copied; the message headers are allocated once, and each call builds one small
//! list of its datagrams' slices.
//!
//! A datagram the kernel refuses (no route to its destination, say: a client's offer names any
//! address it likes) ends that call at it; the rest of the run is sent by the next call, so one
//! bad destination never costs the others their datagrams. A full socket buffer (or no buffer
//! memory, or a source address that is gone) drops what is left of the run: media is
//! loss-tolerant, and the loop never waits on its socket.
//!
//! nix reports how many datagrams a call sent only through the iterator of its results, whose
//! items it builds from each sent header (reading the unused address slot of each as initialised
//! memory): only its count is used here. Linux only, as whip-echo's deployment is (SO_REUSEPORT
//! balancing, IP_PKTINFO).

use std::io::IoSlice;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::RawFd;

use bytes::BytesMut;
use nix::errno::Errno;
use nix::libc;
use nix::sys::socket::{sendmmsg, ControlMessage, MsgFlags, MultiHeaders, SockaddrStorage};

/// Datagrams queued before they are sent without waiting for the end of the wake-up.
pub const SEND_BATCH: usize = 64;
/// Sent datagrams' buffers kept for the fast path to build the next ones in (a loop's, not a
/// client's: at most this many, of at most [`SPARE_CAPACITY`] bytes each, 512 KiB in all).
pub const MAX_SPARE: usize = 256;
/// The largest buffer kept for reuse (an MTU-sized datagram and its tag fit).
pub const SPARE_CAPACITY: usize = 2048;

/// One queued datagram.
struct Queued {
    to: SocketAddr,
    /// The source IP the kernel must use, when it must be told.
    source: Option<IpAddr>,
    data: BytesMut,
}

/// What [`SendBatch::send`] did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Sent {
    /// Datagrams the kernel took.
    pub sent: usize,
    /// Datagrams it refused (each with the error logged) or that found the socket buffer full.
    pub dropped: usize,
}

/// The datagrams of one wake-up and the reused headers of the calls that send them.
pub struct SendBatch {
    queued: Vec<Queued>,
    /// The destinations of one call, reused.
    addrs: Vec<Option<SockaddrStorage>>,
    /// Headers without a control message, with an IPv4 one and with an IPv6 one.
    plain: MultiHeaders<SockaddrStorage>,
    v4: MultiHeaders<SockaddrStorage>,
    v6: MultiHeaders<SockaddrStorage>,
    /// Buffers of sent datagrams, emptied, for the next ones ([`SendBatch::spare`]).
    spare: Vec<BytesMut>,
}

impl Default for SendBatch {
    fn default() -> Self {
        SendBatch {
            queued: Vec::with_capacity(SEND_BATCH),
            addrs: Vec::with_capacity(SEND_BATCH),
            plain: MultiHeaders::preallocate(SEND_BATCH, None),
            v4: MultiHeaders::preallocate(SEND_BATCH, Some(nix::cmsg_space!(libc::in_pktinfo))),
            v6: MultiHeaders::preallocate(SEND_BATCH, Some(nix::cmsg_space!(libc::in6_pktinfo))),
            spare: Vec::with_capacity(MAX_SPARE),
        }
    }
}

impl SendBatch {
    /// Queues `data` for `to`, from `source` when the kernel must be told; whether the batch is
    /// full (time to send it).
    pub fn queue(&mut self, to: SocketAddr, source: Option<IpAddr>, data: BytesMut) -> bool {
        self.queued.push(Queued { to, source, data });
        self.queued.len() >= SEND_BATCH
    }

    /// Whether nothing is queued.
    pub fn is_empty(&self) -> bool {
        self.queued.is_empty()
    }

    /// Sends everything queued on socket `fd`, one call per run of datagrams with one source.
    pub fn send(&mut self, fd: RawFd) -> Sent {
        let mut total = Sent::default();
        let mut start = 0;
        while start < self.queued.len() {
            let source = self.queued[start].source;
            let len = (self.queued[start..].iter())
                .take_while(|q| q.source == source)
                .count();
            let run = self.send_run(fd, start, start + len);
            total.sent += run.sent;
            total.dropped += run.dropped;
            start += len;
        }
        for queued in self.queued.drain(..) {
            let mut data = queued.data;
            if self.spare.len() < MAX_SPARE && data.capacity() <= SPARE_CAPACITY {
                data.clear();
                self.spare.push(data);
            }
        }
        total
    }

    /// Emptied buffers of sent datagrams, to build new ones in without allocating: take one
    /// (none left: allocate), it comes back once sent.
    pub fn spare(&mut self) -> &mut Vec<BytesMut> {
        &mut self.spare
    }

    /// Sends `queued[start..end]`, which share a source, skipping what the kernel refuses.
    fn send_run(&mut self, fd: RawFd, mut start: usize, end: usize) -> Sent {
        let mut sent = Sent::default();
        while start < end {
            match self.call(fd, start, end) {
                Err(Errno::EINTR) => {}
                Ok(0) | Err(Errno::EAGAIN | Errno::ENOBUFS | Errno::EADDRNOTAVAIL) => {
                    sent.dropped += end - start;
                    break;
                }
                Ok(n) => {
                    sent.sent += n;
                    start += n;
                }
                Err(e) => {
                    let to = self.queued[start].to;
                    tracing::debug!(error = %e, %to, "UDP send failed");
                    sent.dropped += 1;
                    start += 1;
                }
            }
        }
        sent
    }

    /// One `sendmmsg` of `queued[start..end]`: how many the kernel took.
    fn call(&mut self, fd: RawFd, start: usize, end: usize) -> nix::Result<usize> {
        let run = &self.queued[start..end.min(start + SEND_BATCH)];
        // On the stack: nothing allocated per send.
        let mut slices = [[IoSlice::new(&[])]; SEND_BATCH];
        for (slice, q) in slices.iter_mut().zip(run) {
            *slice = [IoSlice::new(&q.data)];
        }
        let slices = &slices[..run.len()];
        self.addrs.clear();
        (self.addrs).extend(run.iter().map(|q| Some(SockaddrStorage::from(q.to))));
        let addrs = &self.addrs;
        let flags = MsgFlags::MSG_DONTWAIT;
        match run[0].source {
            None => {
                let none: [ControlMessage<'_>; 0] = [];
                sendmmsg(fd, &mut self.plain, slices, addrs, none, flags).map(Iterator::count)
            }
            Some(IpAddr::V4(ip)) => {
                let info = libc::in_pktinfo {
                    ipi_ifindex: 0,
                    ipi_spec_dst: libc::in_addr {
                        s_addr: u32::from_ne_bytes(ip.octets()),
                    },
                    ipi_addr: libc::in_addr { s_addr: 0 },
                };
                let cmsg = [ControlMessage::Ipv4PacketInfo(&info)];
                sendmmsg(fd, &mut self.v4, slices, addrs, cmsg, flags).map(Iterator::count)
            }
            Some(IpAddr::V6(ip)) => {
                let info = libc::in6_pktinfo {
                    ipi6_addr: libc::in6_addr {
                        s6_addr: ip.octets(),
                    },
                    ipi6_ifindex: 0,
                };
                let cmsg = [ControlMessage::Ipv6PacketInfo(&info)];
                sendmmsg(fd, &mut self.v6, slices, addrs, cmsg, flags).map(Iterator::count)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsRawFd;

    fn socket(at: &str) -> std::net::UdpSocket {
        let s = std::net::UdpSocket::bind(at).unwrap();
        s.set_read_timeout(Some(std::time::Duration::from_secs(5)))
            .unwrap();
        s
    }

    #[test]
    fn a_batch_reaches_every_destination_and_one_refused_costs_the_others_nothing() {
        // Sent from a socket bound to every address, as the media loops' are by default: each
        // datagram's source is the one its run names, or the kernel's choice.
        let from = socket("0.0.0.0:0");
        let (a, b) = (socket("127.0.0.1:0"), socket("127.0.0.1:0"));
        let mut batch = SendBatch::default();
        let other = IpAddr::from([127, 0, 0, 2]);
        let dest = |s: &std::net::UdpSocket| s.local_addr().unwrap();
        let port = dest(&from).port();
        // Port 0 is refused by the kernel (EINVAL), between datagrams that are not.
        let refused: SocketAddr = "127.0.0.1:0".parse().unwrap();
        assert!(!batch.queue(dest(&a), None, BytesMut::from(&b"one"[..])));
        batch.queue(refused, None, BytesMut::from(&b"lost"[..]));
        batch.queue(dest(&b), None, BytesMut::from(&b"two"[..]));
        batch.queue(dest(&a), Some(other), BytesMut::from(&b"three"[..]));
        let sent = batch.send(from.as_raw_fd());
        let expected = Sent {
            sent: 3,
            dropped: 1,
        };
        assert_eq!(sent, expected);
        assert!(batch.is_empty());
        let mut buf = [0; 16];
        let mut read = |s: &std::net::UdpSocket| {
            let (n, peer) = s.recv_from(&mut buf).unwrap();
            assert_eq!(peer.port(), port);
            (buf[..n].to_vec(), peer.ip())
        };
        let lo = IpAddr::from([127, 0, 0, 1]);
        assert_eq!(read(&a), (b"one".to_vec(), lo));
        assert_eq!(read(&a), (b"three".to_vec(), other));
        assert_eq!(read(&b), (b"two".to_vec(), lo));
    }

    #[test]
    fn sent_buffers_come_back_for_reuse_within_bounds() {
        let from = socket("127.0.0.1:0");
        let to = socket("127.0.0.1:0").local_addr().unwrap();
        let mut batch = SendBatch::default();
        for round in 0..10 {
            for i in 0..SEND_BATCH {
                // Every 8th a jumbo buffer, which is not kept.
                let size = if i % 8 == 0 { 4 * SPARE_CAPACITY } else { 1200 };
                let mut data = batch.spare().pop().unwrap_or_default();
                assert!(
                    data.is_empty(),
                    "round {round}: a spare buffer comes back empty"
                );
                data.resize(size, 7);
                batch.queue(to, None, data);
            }
            batch.send(from.as_raw_fd());
        }
        let spare = batch.spare();
        assert!(!spare.is_empty() && spare.len() <= MAX_SPARE);
        assert!(spare
            .iter()
            .all(|b| b.is_empty() && b.capacity() <= SPARE_CAPACITY));
    }
}
