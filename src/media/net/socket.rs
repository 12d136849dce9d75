//! The shared UDP socket: batched receive with each datagram's destination address (IP_PKTINFO),
//! through `quinn-udp`, and batched sends with an explicit source address (`batch.rs`).
//!
//! On a socket bound to 0.0.0.0 the kernel does not say which local address a datagram reached, yet
//! rtc-ice matches the local address handed in with each packet against its candidates exactly
//! (`find_local_candidate`). So the destination is recovered per datagram and mapped to the
//! announced candidate, and replies leave from the address the client talked to.

use std::io::{self, IoSliceMut};
use std::net::{IpAddr, SocketAddr};
use std::os::fd::AsRawFd;

use bytes::BytesMut;
use quinn_udp::{RecvMeta, UdpSocketState};

use super::batch::{SendBatch, Sent};
use tokio::io::Interest;
use tokio::net::UdpSocket;

/// Datagrams read per system call.
const BATCH: usize = 16;
/// Requested socket receive buffer.
const RECV_BUFFER: usize = 4 << 20;
/// Bytes per receive slot (large enough for GRO-coalesced datagrams).
const SLOT: usize = 64 * 1024;

/// One received datagram.
pub struct Datagram<'a> {
    /// Sender.
    pub from: SocketAddr,
    /// The announced candidate address it reached.
    pub local: SocketAddr,
    /// Payload.
    pub data: &'a [u8],
}

/// The socket plus the candidate mapping.
pub struct UdpIo {
    socket: UdpSocket,
    state: UdpSocketState,
    port: u16,
    /// Announced candidates, to map each datagram's destination and each reply's source.
    candidates: Candidates,
    bufs: Vec<Vec<u8>>,
    metas: Vec<RecvMeta>,
    /// What this wake-up sends.
    outgoing: SendBatch,
}

/// One announced candidate address, with the source IP replies from it must use (`None` where
/// the kernel should choose: a specific bind address, a NAT 1:1 public address, or a forwarded
/// one).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Announced {
    /// The address put in the answer (and told to rtc as the packet's local address).
    pub addr: SocketAddr,
    /// The source IP of replies, when the socket must be told.
    pub source: Option<IpAddr>,
}

/// Every announced candidate of one socket or listener.
pub type Candidates = Vec<Announced>;

/// Every announced candidate, by socket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Announcements {
    /// Each media loop's UDP socket's, in loop order.
    pub udp: Vec<Candidates>,
    /// The ICE-TCP port's: its own addresses, then the forwards to it (a connection through a
    /// forward reaches the listener like any other).
    pub tcp: Candidates,
    /// The HTTP port's, when it carries ICE-TCP.
    pub http: Option<Candidates>,
    /// Every ICE-TCP candidate address in the order answers list them.
    pub tcp_addrs: Vec<SocketAddr>,
}

impl UdpIo {
    /// Wraps `socket`, announcing `candidates` (from [`candidates`]).
    pub fn new(socket: UdpSocket, candidates: Candidates) -> io::Result<Self> {
        let state = UdpSocketState::new((&socket).into())?;
        // Bursts from thousands of sessions overflow the default ~208 KiB receive buffer long
        // before the loop is out of CPU; the kernel caps this at net.core.rmem_max.
        let _ = socket2::SockRef::from(&socket).set_recv_buffer_size(RECV_BUFFER);
        let bound = socket.local_addr()?;
        Ok(UdpIo {
            port: bound.port(),
            socket,
            state,
            candidates,
            bufs: vec![vec![0; SLOT]; BATCH],
            metas: vec![RecvMeta::default(); BATCH],
            outgoing: SendBatch::default(),
        })
    }

    /// Waits until the socket is readable.
    pub async fn readable(&self) -> io::Result<()> {
        self.socket.readable().await
    }

    /// Reads one batch without waiting and calls `f` for every datagram; `Ok(0)` when none is
    /// pending.
    pub fn recv_batch(&mut self, mut f: impl FnMut(Datagram<'_>)) -> io::Result<usize> {
        // On the stack: nothing allocated per receive.
        let mut bufs = self.bufs.iter_mut();
        let mut slices: [IoSliceMut<'_>; BATCH] =
            std::array::from_fn(|_| IoSliceMut::new(bufs.next().map_or(&mut [], |b| &mut b[..])));
        let result = self.socket.try_io(Interest::READABLE, || {
            self.state
                .recv((&self.socket).into(), &mut slices, &mut self.metas)
        });
        let n = match result {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(0),
            Err(e) => return Err(e),
        };
        let mut count = 0;
        for (meta, buf) in self.metas.iter().zip(slices.iter()).take(n) {
            let local = map_local(&self.candidates, self.port, meta.dst_ip, meta.addr);
            let stride = meta.stride.max(1);
            for chunk in buf[..meta.len].chunks(stride) {
                count += 1;
                f(Datagram {
                    from: meta.addr,
                    local,
                    data: chunk,
                });
            }
        }
        Ok(count)
    }

    /// Queues `data` for `to` from the candidate `local`, sent with the rest of the wake-up's by
    /// [`UdpIo::send_queued`]; whether the batch is full (to send it now).
    pub fn queue(&mut self, to: SocketAddr, local: SocketAddr, data: BytesMut) -> bool {
        let source = self
            .candidates
            .iter()
            .find(|c| c.addr == local)
            .and_then(|c| c.source);
        self.outgoing.queue(to, source, data)
    }

    /// Emptied buffers of sent datagrams, for the next ones ([`SendBatch::spare`]).
    pub fn spare(&mut self) -> &mut Vec<BytesMut> {
        self.outgoing.spare()
    }

    /// Sends the queued datagrams without waiting: a full socket buffer drops them (media is
    /// loss-tolerant; the loop never blocks on one slow path).
    pub fn send_queued(&mut self) -> Sent {
        if self.outgoing.is_empty() {
            return Sent::default();
        }
        self.outgoing.send(self.socket.as_raw_fd())
    }
}

/// The candidate address a datagram to `dst_ip` (on a socket bound to `port`) belongs to: the
/// candidate itself when announced, otherwise (NAT 1:1 or a port forward: the packet reached a
/// private address behind the public one) the first candidate of the same address family.
pub(in crate::media) fn map_local(
    candidates: &[Announced],
    port: u16,
    dst_ip: Option<IpAddr>,
    from: SocketAddr,
) -> SocketAddr {
    let same_family = |c: &&Announced| c.addr.is_ipv4() == from.is_ipv4();
    dst_ip
        .and_then(|dst| {
            let exact = SocketAddr::new(dst, port);
            candidates
                .iter()
                .find(|c| c.addr == exact)
                .or_else(|| candidates.iter().find(|c| c.addr.ip() == dst))
        })
        .or_else(|| candidates.iter().find(same_family))
        .or_else(|| candidates.first())
        .map_or(SocketAddr::new(from.ip(), port), |c| c.addr)
}

/// The machine's interface addresses to announce for a socket bound to `bind`: `bind` itself when
/// specific; otherwise every non-loopback, non-link-local address of the same family, or loopback
/// when there is nothing else (a network namespace with only `lo`).
pub fn local_ips(bind: IpAddr) -> Vec<IpAddr> {
    if !bind.is_unspecified() {
        return vec![bind];
    }
    let all: Vec<IpAddr> = if_addrs::get_if_addrs()
        .unwrap_or_default()
        .into_iter()
        .map(|i| i.ip())
        .filter(|ip| ip.is_ipv4() == bind.is_ipv4())
        .collect();
    let routable: Vec<IpAddr> = all
        .iter()
        .copied()
        .filter(|ip| !ip.is_loopback() && !is_link_local(ip))
        .collect();
    if routable.is_empty() {
        all.into_iter().filter(|ip| ip.is_loopback()).collect()
    } else {
        routable
    }
}

fn is_link_local(ip: &IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4.is_link_local(),
        IpAddr::V6(v6) => (v6.segments()[0] & 0xffc0) == 0xfe80,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::startup::addresses::candidates;

    #[test]
    fn maps_destination_to_candidate() {
        let private: IpAddr = "10.0.0.5".parse().unwrap();
        let public: IpAddr = "203.0.113.9".parse().unwrap();
        let from: SocketAddr = "198.51.100.1:5000".parse().unwrap();
        let bound: SocketAddr = "0.0.0.0:8189".parse().unwrap();
        let both = candidates(bound, &[private], &[public], &[]);
        assert_eq!(map_local(&both, 8189, Some(private), from).ip(), private);
        let public_only = candidates(bound, &[], &[public], &[]);
        assert_eq!(
            map_local(&public_only, 8189, Some(private), from).ip(),
            public
        );
        assert_eq!(map_local(&public_only, 8189, None, from).port(), 8189);
        // A port forward: only the outside address is announced, and a datagram reaching the
        // bound port is told to rtc as having reached it.
        let outside: SocketAddr = "203.0.113.9:40000".parse().unwrap();
        let forwarded = candidates(bound, &[], &[], &[outside]);
        assert_eq!(map_local(&forwarded, 8189, Some(private), from), outside);
        // A public IPv6 address is not announced for an IPv4 socket, but is for a [::] one.
        let v6: IpAddr = "2001:db8::1".parse().unwrap();
        assert_eq!(candidates(bound, &[], &[public, v6], &[]).len(), 1);
        let any6: SocketAddr = "[::]:8189".parse().unwrap();
        assert_eq!(candidates(any6, &[], &[public, v6], &[]).len(), 2);
        // Replies from an interface address name it as their source; the others do not.
        assert_eq!(both[0].source, Some(private));
        assert_eq!(both[1].source, None);
    }

    #[test]
    fn specific_bind_is_the_only_local_ip() {
        let lo: IpAddr = "127.0.0.1".parse().unwrap();
        assert_eq!(local_ips(lo), vec![lo]);
        assert!(!local_ips("0.0.0.0".parse().unwrap()).is_empty());
    }
}
