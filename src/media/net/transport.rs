//! The transport seam of a media loop: every inbound packet names the path it came on, every
//! outgoing packet leaves by the path its protocol and peer name (the str0m habit: `Receive {
//! proto, source, destination }`; quinn's `Endpoint::handle(remote, local_ip, ...)`). A loop has
//! its UDP socket and the ICE-TCP connections handed to it (`tcp.rs`): each is one source in the
//! loop's select and one arm in [`Transports::send`]; nothing else knows which carried a packet.

use std::io;
use std::net::SocketAddr;

use bytes::BytesMut;
use rtc::shared::{TaggedBytesMut, TransportContext, TransportProtocol};

use super::socket::UdpIo;
use super::tcp::TcpConns;

pub use super::tcp::TcpConnId;

/// What tells apart the sessions sharing one transport: the remote address on the shared UDP
/// socket, the connection on a TCP listener (whose framed packets carry no address of their own).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PathId {
    /// A remote address on the loop's UDP socket.
    Udp(SocketAddr),
    /// One accepted ICE-TCP connection (RFC 4571 framing, `tcp.rs`).
    Tcp(TcpConnId),
}

/// One word for the keyed hash (SipHash: these keys are chosen by clients), where the derived
/// hash wrote five (the variant, the address family, the length and bytes of the address, the
/// port) and cost 300 instructions a packet's route lookup. Equal paths hash alike; what tells
/// two paths apart beyond the address and port (an IPv6 flow label) only makes them share a hash.
impl std::hash::Hash for PathId {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        let word = match self {
            PathId::Udp(addr) => {
                let ip = match addr.ip() {
                    std::net::IpAddr::V4(v4) => u128::from(v4.to_ipv6_mapped()),
                    std::net::IpAddr::V6(v6) => u128::from(v6),
                };
                ip.rotate_left(16) ^ u128::from(addr.port())
            }
            // A connection id that shares an address's word only shares its hash.
            PathId::Tcp(id) => u128::from(id.0) | (1 << 127),
        };
        state.write_u128(word);
    }
}

impl PathId {
    /// The protocol rtc is told a packet on this path used.
    pub fn protocol(&self) -> TransportProtocol {
        match self {
            PathId::Udp(_) => TransportProtocol::UDP,
            PathId::Tcp(_) => TransportProtocol::TCP,
        }
    }
}

/// One inbound packet as a transport hands it to the loop.
#[derive(Debug, Clone)]
pub struct Inbound {
    /// The path it came on.
    pub path: PathId,
    /// The announced local candidate address it reached.
    pub local: SocketAddr,
    /// The remote address (for TCP, the connection's peer).
    pub peer: SocketAddr,
    /// The packet (one datagram, or one RFC 4571 frame).
    pub data: BytesMut,
}

impl Inbound {
    /// The packet as rtc's `handle_read` takes it.
    pub fn into_tagged(self, now: std::time::Instant) -> TaggedBytesMut {
        TaggedBytesMut {
            now,
            transport: TransportContext {
                local_addr: self.local,
                peer_addr: self.peer,
                ecn: None,
                transport_protocol: self.path.protocol(),
            },
            message: self.data,
        }
    }
}

/// The transports a media loop owns.
pub struct Transports {
    /// The loop's shared UDP socket.
    pub udp: UdpIo,
    /// The ICE-TCP connections whose first request named one of this loop's sessions.
    pub tcp: TcpConns,
}

impl Transports {
    /// The path an outgoing packet of rtc leaves by, learnt as a route of its session (its own
    /// checks' responses carry no USERNAME). `None` for a protocol this loop has no transport for.
    pub fn path_of(&self, transport: &TransportContext) -> Option<PathId> {
        match transport.transport_protocol {
            TransportProtocol::UDP => Some(PathId::Udp(transport.peer_addr)),
            TransportProtocol::TCP => self
                .tcp
                .conn_to(transport.local_addr, transport.peer_addr)
                .map(PathId::Tcp),
            _ => None,
        }
    }

    /// Sends one packet by the transport its context names, without waiting (a full buffer
    /// drops it: media is loss-tolerant and the loop never blocks on one slow path). UDP
    /// datagrams are queued, and sent with the rest of the wake-up's (`batch.rs`): whether the
    /// batch is full, to send now.
    pub fn send(&mut self, transport: &TransportContext, data: BytesMut) -> io::Result<bool> {
        match transport.transport_protocol {
            TransportProtocol::UDP => {
                let (to, local) = (transport.peer_addr, transport.local_addr);
                Ok(self.udp.queue(to, local, data))
            }
            TransportProtocol::TCP => {
                let (local, peer) = (transport.local_addr, transport.peer_addr);
                self.tcp.send(local, peer, &data).map(|()| false)
            }
            other => Err(io::Error::new(
                io::ErrorKind::Unsupported,
                format!("this media loop has no {other:?} transport"),
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inbound_packets_tell_rtc_their_protocol() {
        let peer: SocketAddr = "127.0.0.1:5000".parse().unwrap();
        let local: SocketAddr = "127.0.0.1:8189".parse().unwrap();
        for (path, protocol) in [
            (PathId::Udp(peer), TransportProtocol::UDP),
            (PathId::Tcp(TcpConnId(7)), TransportProtocol::TCP),
        ] {
            let inbound = Inbound {
                path,
                local,
                peer,
                data: BytesMut::from(&b"x"[..]),
            };
            let tagged = inbound.into_tagged(std::time::Instant::now());
            assert_eq!(tagged.transport.transport_protocol, protocol);
            assert_eq!(
                (tagged.transport.local_addr, tagged.transport.peer_addr),
                (local, peer)
            );
        }
    }
}
