//! ICE-TCP (RFC 6544) on one TCP port shared by every session of every loop: passive host
//! candidates, RFC 4571 framing (each packet preceded by its 16-bit length).
//!
//! One acceptor task takes connections; each connection gets one task that reads frames and
//! writes the frames its loop hands it. The first frame must be a STUN Binding request: the
//! local ufrag in its USERNAME names the media loop (`IceCredentials::loop_of`), which from then
//! on owns the connection as one more path (`PathId::Tcp`) of its transports. A connection that
//! does not start with a request for a known loop, or says nothing for `FIRST_FRAME_WAIT`, is
//! closed. Every task is tracked and ends with the server's stop signal.

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::debug;

use super::peer::IceCredentials;
use super::routes::stun_request_local_ufrag;
use super::socket::{map_local, Announced, Candidates};
use super::transport::TcpConnId;

/// How long a new connection has to send its first STUN request.
const FIRST_FRAME_WAIT: Duration = Duration::from_secs(10);
/// Frames queued towards one connection before further ones are dropped (media is lossy; the
/// loop never waits on a slow connection).
const WRITE_QUEUE: usize = 256;
/// A bound connection that sends nothing for this long is closed.
const IDLE_WAIT: Duration = Duration::from_secs(30);
/// How long one frame may take to write before the peer counts as gone.
const WRITE_WAIT: Duration = Duration::from_secs(5);
/// Connections accepted but not yet bound to a session (or, on the HTTP port, not yet
/// classified), across every listener: beyond this, new ones are closed at once.
pub const MAX_PENDING: usize = 1024;
/// Pause after an accept error that is not the connection's own (out of descriptors, say), so
/// that the loop does not spin on a backlog it cannot take (axum's listener does the same).
const ACCEPT_PAUSE: Duration = Duration::from_secs(1);

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
#[derive(Default)]
pub struct TcpConns {
    by_id: HashMap<TcpConnId, Conn>,
    /// By (announced local, peer): one client port may hold a connection to the ICE-TCP port
    /// and another to the HTTP port.
    by_path: HashMap<(SocketAddr, SocketAddr), TcpConnId>,
}

struct Conn {
    peer: SocketAddr,
    local: SocketAddr,
    writer: mpsc::Sender<Bytes>,
}

impl TcpConns {
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
            },
        );
    }

    /// Forgets a closed connection (dropping its writer ends its task's writing side).
    pub fn close(&mut self, id: TcpConnId) {
        if let Some(conn) = self.by_id.remove(&id) {
            if self.by_path.get(&(conn.local, conn.peer)) == Some(&id) {
                self.by_path.remove(&(conn.local, conn.peer));
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

/// Where ICE-TCP connections go, from the shared ICE-TCP port and from the HTTP port alike:
/// each becomes a tracked task that ends with the server's stop signal.
#[derive(Debug, Clone)]
pub struct Intake(Arc<IntakeInner>);

#[derive(Debug)]
struct IntakeInner {
    /// Each loop's event channel, by loop index.
    loops: Vec<mpsc::Sender<TcpEvent>>,
    /// Connection ids, unique across every listener.
    ids: AtomicU64,
    /// Places for connections not yet bound to a session.
    pending: Arc<Semaphore>,
    tracker: TaskTracker,
    stop: CancellationToken,
}

impl Intake {
    pub fn new(
        loops: Vec<mpsc::Sender<TcpEvent>>,
        tracker: TaskTracker,
        stop: CancellationToken,
    ) -> Self {
        Intake(Arc::new(IntakeInner {
            loops,
            ids: AtomicU64::new(0),
            pending: Arc::new(Semaphore::new(MAX_PENDING)),
            tracker,
            stop,
        }))
    }

    /// A place for a connection not yet bound to a session, if one is free: a flood of
    /// connections that say nothing holds at most `MAX_PENDING` of them.
    pub fn admit(&self) -> Option<OwnedSemaphorePermit> {
        self.0.pending.clone().try_acquire_owned().ok()
    }

    /// Serves `stream` as an ICE-TCP connection whose announced local address is `local`;
    /// `pending` is its place until it is bound.
    pub fn take(
        &self,
        stream: TcpStream,
        peer: SocketAddr,
        local: SocketAddr,
        pending: OwnedSemaphorePermit,
    ) {
        let inner = self.0.clone();
        self.0.tracker.spawn(async move {
            let id = TcpConnId(inner.ids.fetch_add(1, Ordering::Relaxed));
            let stop = inner.stop.clone();
            let loops = &inner.loops;
            if let Err(e) = serve(stream, id, (peer, local), loops, pending, stop).await {
                debug!(%peer, error = %e, "ICE-TCP connection ended");
            }
        });
    }

    /// The tracker of the ICE-TCP tasks, and the stop signal they end with.
    pub fn tasks(&self) -> (&TaskTracker, &CancellationToken) {
        (&self.0.tracker, &self.0.stop)
    }
}

/// The local address to tell rtc for a connection accepted on `port`: the announced candidate it
/// reached (as for UDP: `socket::map_local`).
pub fn announced_local(
    candidates: &[Announced],
    port: u16,
    stream: &TcpStream,
    peer: SocketAddr,
) -> SocketAddr {
    let dst = stream.local_addr().ok().map(|a| a.ip());
    map_local(candidates, port, dst, peer)
}

/// After a failed accept: nothing for the connection's own errors, a pause for the others.
pub async fn accept_failed(e: io::Error, stop: &CancellationToken) {
    use io::ErrorKind::{ConnectionAborted, ConnectionRefused, ConnectionReset};
    if matches!(
        e.kind(),
        ConnectionAborted | ConnectionRefused | ConnectionReset
    ) {
        return;
    }
    debug!(error = %e, "accept failed; pausing");
    tokio::select! {
        _ = stop.cancelled() => {}
        _ = tokio::time::sleep(ACCEPT_PAUSE) => {}
    }
}

/// The shared ICE-TCP port's acceptor.
pub struct Acceptor {
    pub listener: TcpListener,
    pub intake: Intake,
    /// Announced candidate IPs, to map an accepted connection's local address.
    pub candidates: Candidates,
}

impl Acceptor {
    /// Accepts connections until the intake's stop signal.
    pub async fn run(self) {
        let port = self.listener.local_addr().map_or(0, |a| a.port());
        let stop = self.intake.tasks().1.clone();
        loop {
            let accepted = tokio::select! {
                _ = stop.cancelled() => break,
                accepted = self.listener.accept() => accepted,
            };
            let (stream, peer) = match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    accept_failed(e, &stop).await;
                    continue;
                }
            };
            let Some(pending) = self.intake.admit() else {
                continue; // dropped: too many connections say nothing yet
            };
            let local = announced_local(&self.candidates, port, &stream, peer);
            self.intake.take(stream, peer, local, pending);
        }
    }
}

/// One connection: its first frame picks the loop; then frames flow both ways until either side
/// ends or the server stops.
async fn serve(
    mut stream: TcpStream,
    id: TcpConnId,
    (peer, local): (SocketAddr, SocketAddr),
    loops: &[mpsc::Sender<TcpEvent>],
    pending: OwnedSemaphorePermit,
    stop: CancellationToken,
) -> io::Result<()> {
    let _ = stream.set_nodelay(true);
    let first = tokio::select! {
        _ = stop.cancelled() => return Ok(()),
        first = tokio::time::timeout(FIRST_FRAME_WAIT, read_frame(&mut stream)) => first
            .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "no first frame"))??,
    };
    let owner = stun_request_local_ufrag(&first)
        .and_then(|ufrag| IceCredentials::loop_of(&ufrag))
        .and_then(|index| loops.get(index))
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "not a request for a session"))?;
    let (writer, mut outgoing) = mpsc::channel(WRITE_QUEUE);
    let opened = TcpEvent::Opened {
        id,
        peer,
        local,
        writer,
    };
    let closed = || io::Error::new(io::ErrorKind::BrokenPipe, "media loop gone");
    owner.send(opened).await.map_err(|_| closed())?;
    owner
        .send(TcpEvent::Frame { id, data: first })
        .await
        .map_err(|_| closed())?;
    drop(pending);
    let (mut reader, mut write_half) = stream.into_split();
    // Reading and writing are two futures of their own: a frame is never half-read and then
    // resumed by another future (reads are not cancel-safe), and a peer that stops reading
    // holds only the writer, for at most `WRITE_WAIT`. Whichever ends first ends the connection.
    let reading = async {
        loop {
            // RFC 7675: a live peer sends consent checks every few seconds.
            match tokio::time::timeout(IDLE_WAIT, read_frame(&mut reader)).await {
                Ok(Ok(data)) => {
                    if owner.send(TcpEvent::Frame { id, data }).await.is_err() {
                        return Err(closed());
                    }
                }
                Ok(Err(e)) => return Err(e),
                Err(_) => return Err(io::Error::new(io::ErrorKind::TimedOut, "idle")),
            }
        }
    };
    let writing = async {
        while let Some(data) = outgoing.recv().await {
            tokio::time::timeout(WRITE_WAIT, write_half.write_all(&frame(&data)))
                .await
                .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "peer not reading"))??;
        }
        // The loop forgot the connection (its session ended).
        Ok(())
    };
    let result = tokio::select! {
        _ = stop.cancelled() => Ok(()),
        read = reading => read,
        written = writing => written,
    };
    let _ = owner.send(TcpEvent::Closed { id }).await;
    result
}

/// One packet as an RFC 4571 §2 frame: a 16-bit length, then the packet (`TcpConns::send`
/// refuses packets too long for it).
pub(crate) fn frame(packet: &[u8]) -> Vec<u8> {
    let mut framed = Vec::with_capacity(2 + packet.len());
    framed.extend_from_slice(&(packet.len() as u16).to_be_bytes());
    framed.extend_from_slice(packet);
    framed
}

/// Reads one RFC 4571 frame.
pub(crate) async fn read_frame(stream: &mut (impl AsyncRead + Unpin)) -> io::Result<BytesMut> {
    let len = stream.read_u16().await?;
    let mut data = BytesMut::zeroed(usize::from(len));
    stream.read_exact(&mut data).await?;
    if data.is_empty() {
        return Err(io::Error::new(io::ErrorKind::InvalidData, "empty frame"));
    }
    Ok(data)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn frames_are_length_prefixed() {
        let mut wire: &[u8] = &[0, 3, b'a', b'b', b'c', 0, 1, b'z', 0, 0];
        assert_eq!(&read_frame(&mut wire).await.unwrap()[..], b"abc");
        assert_eq!(&read_frame(&mut wire).await.unwrap()[..], b"z");
        assert!(read_frame(&mut wire).await.is_err(), "an empty frame");
        let mut short: &[u8] = &[0, 5, b'a'];
        assert!(read_frame(&mut short).await.is_err());
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
        let acceptor = Acceptor {
            listener,
            intake: Intake::new(vec![tx0, tx1], tracker.clone(), stop.clone()),
            candidates: crate::media::socket::candidates(addr, &[addr.ip()], &[], &[]),
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

    #[test]
    fn connections_are_found_by_peer_and_forgotten() {
        let mut conns = TcpConns::default();
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
