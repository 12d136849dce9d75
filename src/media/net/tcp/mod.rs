//! ICE-TCP (RFC 6544) on one TCP port shared by every session of every loop: passive host
//! candidates, RFC 4571 framing (each packet preceded by its 16-bit length).
//!
//! One acceptor task takes connections; each connection gets one task that reads frames and
//! writes the frames its loop hands it. The first frame must be a STUN Binding request (at most
//! `FIRST_FRAME_MAX` bytes): the local ufrag in its USERNAME names the media loop
//! (`IceCredentials::loop_of`), which from then on owns the connection as one more path
//! (`PathId::Tcp`) of its transports. A connection that does not start with a request for a
//! known loop, says nothing for the setup wait, or is not answered by its session within the
//! setup wait (a request whose MESSAGE-INTEGRITY does not check out is never answered) is
//! closed. Until it is answered the connection holds a place of its listener's pending pool
//! (`pending.rs`); once its session sends on it, its loop takes it under the ICE-TCP caps (per
//! session, per client and in all: [`TcpConns::claim`]). Every task is tracked and ends with
//! the server's stop signal.

mod framing;
mod intake;

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::sync::mpsc;

use crate::media::cap::{Full, Slot, Slots};
use crate::media::SessionKey;
use crate::ops::metrics::{ConnClosed, LoopMetrics};
pub(crate) use framing::{frame, read_frame};
pub use intake::{accept_failed, announced_local, Acceptor, Intake};

/// A TCP connection of a shared ICE-TCP listener, numbered by whoever accepted it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TcpConnId(pub u64);

/// The longest first frame: a Binding request is about 100 to 200 bytes.
pub(super) const FIRST_FRAME_MAX: usize = 1024;
/// Frames queued towards one connection before further ones are dropped (media is lossy; the
/// loop never waits on a slow connection).
pub(super) const WRITE_QUEUE: usize = 256;
/// A bound connection that sends nothing for this long is closed.
pub(super) const IDLE_WAIT: Duration = Duration::from_secs(30);
/// How long one frame may take to write before the peer counts as gone.
pub(super) const WRITE_WAIT: Duration = Duration::from_secs(5);

/// The limits on TCP connections (README: Limits).
#[derive(Debug, Clone, Copy)]
pub struct TcpLimits {
    /// Unidentified connections per listener (`--max-pending-connections`).
    pub max_pending: usize,
    /// Of those, per client (`--max-pending-connections-per-ip`; 0: none).
    pub max_pending_per_ip: usize,
    /// Each setup step's wait (`--tcp-setup-timeout`).
    pub setup_wait: Duration,
    /// Bound ICE-TCP connections in all (`--max-ice-tcp-connections`, derived when 0).
    pub max_ice_tcp: usize,
    /// Per client (`--max-ice-tcp-connections-per-ip`; 0: none).
    pub max_ice_tcp_per_ip: usize,
    /// Per session (`--max-ice-tcp-connections-per-session`).
    pub max_ice_tcp_per_session: usize,
}
/// Pause after an accept error that is not the connection's own (out of descriptors, say), so
/// that the loop does not spin on a backlog it cannot take (axum's listener does the same).
pub(super) const ACCEPT_PAUSE: Duration = Duration::from_secs(1);

/// What a connection task tells its loop.
#[derive(Debug)]
pub enum TcpEvent {
    /// A connection whose first STUN request named this loop.
    Opened {
        id: TcpConnId,
        peer: SocketAddr,
        /// The announced candidate address it reached.
        local: SocketAddr,
        writer: mpsc::Sender<Bytes>,
    },
    /// One RFC 4571 frame.
    Frame { id: TcpConnId, data: BytesMut },
    /// The connection ended.
    Closed { id: TcpConnId },
}

/// The ICE-TCP connections a loop owns, for sending: by id, and by the peer address rtc names.
pub struct TcpConns {
    by_id: HashMap<TcpConnId, Conn>,
    /// By (announced local, peer): one client port may hold a connection to the ICE-TCP port
    /// and another to the HTTP port.
    by_path: HashMap<(SocketAddr, SocketAddr), TcpConnId>,
    /// Connections each session has sent on ([`TcpConns::claim`]).
    per_session: HashMap<SessionKey, usize>,
    max_per_session: usize,
    /// The caps in all and per client, shared by every loop.
    bound: Slots,
    metrics: LoopMetrics,
}

/// What [`TcpConns::claim`] says of a session's send on a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Claim {
    /// Send it.
    Send,
    /// The connection is another session's: drop the send, keep the connection.
    NotYours,
    /// A cap refused it: close the connection.
    Refused(ConnClosed),
}

struct Conn {
    peer: SocketAddr,
    local: SocketAddr,
    writer: mpsc::Sender<Bytes>,
    /// The session that sent on it first, and its slot under the caps.
    claimed: Option<(SessionKey, Slot)>,
}

impl TcpConns {
    /// No connection yet; `limits` and `bound` (shared by every loop) cap the ones sessions
    /// claim.
    pub fn new(limits: &TcpLimits, bound: Slots, metrics: LoopMetrics) -> Self {
        TcpConns {
            by_id: HashMap::new(),
            by_path: HashMap::new(),
            per_session: HashMap::new(),
            max_per_session: limits.max_ice_tcp_per_session,
            bound,
            metrics,
        }
    }

    /// Adds an opened connection.
    pub fn open(
        &mut self,
        id: TcpConnId,
        peer: SocketAddr,
        local: SocketAddr,
        writer: mpsc::Sender<Bytes>,
    ) {
        self.by_path.insert((local, peer), id);
        self.by_id.insert(
            id,
            Conn {
                peer,
                local,
                writer,
                claimed: None,
            },
        );
    }

    /// Whether session `key` may send on connection `id`. A connection is its first sender's
    /// (RFC 6544: one session's), and that first send takes it under the caps: per session
    /// (`--max-ice-tcp-connections-per-session`), per client and in all. A session sends only
    /// once rtc has checked a request's integrity, so connections that name a session without
    /// its password never count.
    pub fn claim(&mut self, id: TcpConnId, key: SessionKey) -> Claim {
        let Some(conn) = self.by_id.get_mut(&id) else {
            return Claim::Send; // gone: the send fails on its own
        };
        match &conn.claimed {
            Some((owner, _)) if *owner == key => return Claim::Send,
            Some(_) => return Claim::NotYours,
            None => {}
        }
        let held = self.per_session.get(&key).copied().unwrap_or(0);
        if held >= self.max_per_session {
            return Claim::Refused(ConnClosed::IceTcpPerSession);
        }
        let slot = match self.bound.try_take(Some(conn.peer.ip())) {
            Ok(slot) => slot,
            Err(Full::Total) => return Claim::Refused(ConnClosed::IceTcpTotal),
            Err(Full::Client) => return Claim::Refused(ConnClosed::IceTcpPerIp),
        };
        conn.claimed = Some((key, slot));
        self.per_session.insert(key, held + 1);
        self.metrics.ice_tcp_opened();
        Claim::Send
    }

    /// Forgets a closed connection (dropping its writer ends its task's writing side).
    pub fn close(&mut self, id: TcpConnId) {
        if let Some(conn) = self.by_id.remove(&id) {
            if self.by_path.get(&(conn.local, conn.peer)) == Some(&id) {
                self.by_path.remove(&(conn.local, conn.peer));
            }
            if let Some((key, slot)) = conn.claimed {
                if let Some(held) = self.per_session.get_mut(&key) {
                    *held -= 1;
                    if *held == 0 {
                        self.per_session.remove(&key);
                    }
                }
                drop(slot);
                self.metrics.ice_tcp_closed();
            }
        }
    }

    /// The remote and the announced local address of connection `id`.
    pub fn addrs(&self, id: TcpConnId) -> Option<(SocketAddr, SocketAddr)> {
        self.by_id.get(&id).map(|c| (c.peer, c.local))
    }

    /// The connection between `local` and `peer`.
    pub fn conn_to(&self, local: SocketAddr, peer: SocketAddr) -> Option<TcpConnId> {
        self.by_path.get(&(local, peer)).copied()
    }

    /// Queues one frame from `local` to `peer` without waiting; a full queue drops it.
    pub fn send(&self, local: SocketAddr, peer: SocketAddr, data: &[u8]) -> io::Result<()> {
        if data.len() > usize::from(u16::MAX) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "longer than an RFC 4571 frame",
            ));
        }
        let conn = self
            .by_path
            .get(&(local, peer))
            .and_then(|id| self.by_id.get(id))
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotConnected, "no ICE-TCP connection"))?;
        conn.writer
            .try_send(Bytes::copy_from_slice(data))
            .map_err(|_| io::Error::new(io::ErrorKind::WouldBlock, "ICE-TCP queue full"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::negotiate::peer::IceCredentials;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::{TcpListener, TcpStream};
    use tokio_util::sync::CancellationToken;
    use tokio_util::task::TaskTracker;

    #[tokio::test]
    async fn frames_are_length_prefixed() {
        let mut wire: &[u8] = &[0, 3, b'a', b'b', b'c', 0, 1, b'z', 0, 0];
        assert_eq!(&read_frame(&mut wire, 3).await.unwrap()[..], b"abc");
        assert_eq!(&read_frame(&mut wire, 3).await.unwrap()[..], b"z");
        assert!(read_frame(&mut wire, 3).await.is_err(), "an empty frame");
        let mut short: &[u8] = &[0, 5, b'a'];
        assert!(read_frame(&mut short, 5).await.is_err());
        let mut long: &[u8] = &[0, 4, b'a', b'b', b'c', b'd'];
        assert!(read_frame(&mut long, 3).await.is_err(), "over the cap");
        // A long frame in pieces: its buffer grows as they come.
        let big = vec![7u8; 10_000];
        let mut wire = Vec::from(&[0x27, 0x10][..]);
        wire.extend_from_slice(&big);
        let (mut client, mut server) = tokio::io::duplex(64);
        let writer = tokio::spawn(async move { client.write_all(&wire).await });
        let got = read_frame(&mut server, usize::from(u16::MAX))
            .await
            .unwrap();
        assert_eq!(&got[..], &big[..]);
        writer.await.unwrap().unwrap();
    }

    /// A connection whose first frame is not a STUN request for a loop's session is closed, and
    /// no loop hears of it; one that names loop 1 reaches loop 1, and its frames flow both ways.
    #[tokio::test]
    async fn the_first_request_picks_the_loop() {
        use rtc::stun::attributes::ATTR_USERNAME;
        use rtc::stun::message::{Message, Setter, TransactionId, BINDING_REQUEST};
        use rtc::stun::textattrs::Username;

        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx0, mut rx0) = mpsc::channel(8);
        let (tx1, mut rx1) = mpsc::channel(8);
        let (tracker, stop) = (TaskTracker::new(), CancellationToken::new());
        let metrics = crate::ops::metrics::Metrics::new().for_loops();
        let intake = Intake::new(
            vec![tx0, tx1],
            &limits(8),
            metrics,
            tracker.clone(),
            stop.clone(),
        );
        let acceptor = Acceptor {
            listener,
            intake,
            candidates: crate::startup::addresses::candidates(addr, &[addr.ip()], &[], &[]),
        };
        tracker.spawn(acceptor.run());

        let mut garbage = TcpStream::connect(addr).await.unwrap();
        garbage
            .write_all(&[0, 4, 0x16, 0xfe, 0xfd, 0])
            .await
            .unwrap();
        let mut buf = [0u8; 1];
        assert_eq!(
            garbage.read(&mut buf).await.unwrap(),
            0,
            "closed by the server"
        );

        let ufrag = IceCredentials::random_for(1).ufrag;
        let mut request = Message::new();
        let setters: Vec<Box<dyn Setter>> = vec![
            Box::new(BINDING_REQUEST),
            Box::new(TransactionId::new()),
            Box::new(Username::new(ATTR_USERNAME, format!("{ufrag}:client"))),
        ];
        request.build(&setters).unwrap();
        let mut good = TcpStream::connect(addr).await.unwrap();
        let framed = frame(&request.raw);
        good.write_all(&framed).await.unwrap();
        let Some(TcpEvent::Opened { local, writer, .. }) = rx1.recv().await else {
            panic!("loop 1 hears of the connection first");
        };
        assert_eq!(local, addr);
        let Some(TcpEvent::Frame { data, .. }) = rx1.recv().await else {
            panic!("then its first frame");
        };
        assert_eq!(&data[..], &request.raw[..]);
        writer.send(Bytes::from_static(b"hello")).await.unwrap();
        let mut echoed = [0u8; 7];
        good.read_exact(&mut echoed).await.unwrap();
        assert_eq!(&echoed, b"\0\x05hello");
        // A frame that arrives in two pieces, with outgoing frames written in between, comes
        // through whole (the read is never abandoned half-way).
        good.write_all(&framed[..5]).await.unwrap();
        writer
            .send(Bytes::from_static(b"in-between"))
            .await
            .unwrap();
        let mut between = [0u8; 12];
        good.read_exact(&mut between).await.unwrap();
        assert_eq!(&between[2..], b"in-between");
        good.write_all(&framed[5..]).await.unwrap();
        let Some(TcpEvent::Frame { data, .. }) = rx1.recv().await else {
            panic!("the split frame");
        };
        assert_eq!(&data[..], &request.raw[..]);
        drop(good);
        assert!(matches!(rx1.recv().await, Some(TcpEvent::Closed { .. })));
        assert!(rx0.try_recv().is_err(), "loop 0 heard nothing");
        stop.cancel();
        tracker.close();
        tracker.wait().await;
    }

    fn limits(per_session: usize) -> TcpLimits {
        TcpLimits {
            max_pending: 8,
            max_pending_per_ip: 0,
            setup_wait: Duration::from_secs(10),
            max_ice_tcp: 3,
            max_ice_tcp_per_ip: 0,
            max_ice_tcp_per_session: per_session,
        }
    }

    fn conns(per_session: usize) -> TcpConns {
        let limits = limits(per_session);
        let metrics = crate::ops::metrics::Metrics::new().for_loops();
        TcpConns::new(&limits, Slots::new(limits.max_ice_tcp, 0), metrics)
    }

    #[test]
    fn a_connection_is_its_first_senders_and_sessions_claim_a_few() {
        let mut conns = conns(2);
        let local: SocketAddr = "127.0.0.1:8189".parse().unwrap();
        let mut writers = Vec::new();
        for n in 0..5 {
            let (tx, rx) = mpsc::channel(1);
            writers.push(rx);
            let peer = SocketAddr::from(([127, 0, 0, 1], 4000 + n as u16));
            conns.open(TcpConnId(n), peer, local, tx);
        }
        assert_eq!(conns.claim(TcpConnId(0), 1), Claim::Send);
        assert_eq!(conns.claim(TcpConnId(0), 1), Claim::Send, "again: its own");
        assert_eq!(
            conns.claim(TcpConnId(0), 2),
            Claim::NotYours,
            "another session's"
        );
        assert_eq!(conns.claim(TcpConnId(1), 1), Claim::Send);
        assert_eq!(
            conns.claim(TcpConnId(2), 1),
            Claim::Refused(ConnClosed::IceTcpPerSession)
        );
        assert_eq!(conns.claim(TcpConnId(2), 2), Claim::Send);
        assert_eq!(
            conns.claim(TcpConnId(3), 2),
            Claim::Refused(ConnClosed::IceTcpTotal),
            "three in all"
        );
        conns.close(TcpConnId(0));
        assert_eq!(
            conns.claim(TcpConnId(3), 1),
            Claim::Send,
            "a place came back"
        );
        for n in 1..4 {
            conns.close(TcpConnId(n));
        }
        assert!(conns.per_session.is_empty());
        assert_eq!(conns.bound.held(), 0);
    }

    #[test]
    fn connections_are_found_by_peer_and_forgotten() {
        let mut conns = conns(8);
        let peer: SocketAddr = "127.0.0.1:4000".parse().unwrap();
        let (tx, mut rx) = mpsc::channel(1);
        let local: SocketAddr = "127.0.0.1:8189".parse().unwrap();
        conns.open(TcpConnId(1), peer, local, tx);
        assert_eq!(conns.conn_to(local, peer), Some(TcpConnId(1)));
        let other_local: SocketAddr = "127.0.0.1:8080".parse().unwrap();
        assert_eq!(
            conns.conn_to(other_local, peer),
            None,
            "another listener's connection"
        );
        conns.send(local, peer, b"x").unwrap();
        assert_eq!(&rx.try_recv().unwrap()[..], b"x");
        assert!(
            conns.send(local, peer, &vec![0; 70_000]).is_err(),
            "too long to frame"
        );
        conns.send(local, peer, b"y").unwrap();
        assert!(conns.send(local, peer, b"z").is_err(), "a full queue drops");
        conns.close(TcpConnId(1));
        assert_eq!(conns.conn_to(local, peer), None);
        assert!(conns.send(local, peer, b"x").is_err());
    }
}
