//! ICE-TCP connections from any listener: the shared ICE-TCP port's acceptor and the HTTP port
//! hand them to the [`Intake`], which serves each in a tracked task: its first frame picks the
//! loop, then frames flow both ways.

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::io::AsyncWriteExt;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::debug;

use super::framing::{frame, read_frame, read_frame_within};
use super::{
    TcpConnId, TcpEvent, TcpLimits, ACCEPT_PAUSE, FIRST_FRAME_MAX, IDLE_WAIT, WRITE_QUEUE,
    WRITE_WAIT,
};
use crate::media::negotiate::peer::IceCredentials;
use crate::media::net::pending::{self, Place};
use crate::media::net::socket::{map_local, Announced, Candidates};
use crate::media::net::stun::stun_request_local_ufrag;
use crate::ops::metrics::{ConnClosed, LoopMetrics};

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
    /// The ICE-TCP port's places for connections not yet answered.
    pending: pending::Pending,
    setup_wait: Duration,
    metrics: LoopMetrics,
    tracker: TaskTracker,
    stop: CancellationToken,
}

impl Intake {
    pub fn new(
        loops: Vec<mpsc::Sender<TcpEvent>>,
        limits: &TcpLimits,
        metrics: LoopMetrics,
        tracker: TaskTracker,
        stop: CancellationToken,
    ) -> Self {
        Intake(Arc::new(IntakeInner {
            loops,
            ids: AtomicU64::new(0),
            pending: pending::Pending::new(
                "ice_tcp",
                limits.max_pending,
                limits.max_pending_per_ip,
                metrics.clone(),
            ),
            setup_wait: limits.setup_wait,
            metrics,
            tracker,
            stop,
        }))
    }

    /// Serves `stream` as an ICE-TCP connection whose announced local address is `local`;
    /// `place` is its place in its listener's pending pool until its session answers it.
    pub fn take(&self, stream: TcpStream, peer: SocketAddr, local: SocketAddr, place: Place) {
        let inner = self.0.clone();
        self.0.tracker.spawn(async move {
            let id = TcpConnId(inner.ids.fetch_add(1, Ordering::Relaxed));
            if let Err(e) = serve(stream, id, (peer, local), &inner, place).await {
                debug!(%peer, error = %e, "ICE-TCP connection ended");
            }
        });
    }

    /// The tracker of the ICE-TCP tasks, and the stop signal they end with.
    pub fn tasks(&self) -> (&TaskTracker, &CancellationToken) {
        (&self.0.tracker, &self.0.stop)
    }

    /// Each setup step's wait.
    pub fn setup_wait(&self) -> Duration {
        self.0.setup_wait
    }

    /// Counts a connection closed by a limit.
    pub fn closed(&self, why: ConnClosed) {
        self.0.metrics.tcp_closed(why);
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
    /// Where its connections go; its pending pool is the ICE-TCP port's.
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
            let Some(place) = self.intake.0.pending.admit(peer.ip()) else {
                continue; // closed: this client holds its share of unanswered connections
            };
            let local = announced_local(&self.candidates, port, &stream, peer);
            self.intake.take(stream, peer, local, place);
        }
    }
}

/// One connection: its first frame picks the loop; then frames flow both ways until either side
/// ends, a limit closes it, or the server stops.
async fn serve(
    mut stream: TcpStream,
    id: TcpConnId,
    (peer, local): (SocketAddr, SocketAddr),
    inner: &IntakeInner,
    place: Place,
) -> io::Result<()> {
    let _ = stream.set_nodelay(true);
    let first = tokio::select! {
        _ = inner.stop.cancelled() => return Ok(()),
        // Counted when it was taken.
        _ = place.evicted() => return Err(io::Error::other("evicted: its pool was full")),
        first = first_frame(&mut stream, inner) => first?,
    };
    let owner = owner_of(&first, inner)?;
    let answer_by = tokio::time::Instant::now() + inner.setup_wait;
    let (writer, outgoing) = mpsc::channel(WRITE_QUEUE);
    let opened = TcpEvent::Opened {
        id,
        peer,
        local,
        writer,
    };
    owner.send(opened).await.map_err(|_| loop_gone())?;
    let frame = TcpEvent::Frame { id, data: first };
    owner.send(frame).await.map_err(|_| loop_gone())?;
    let (reader, write_half) = stream.into_split();
    // Until its session answers, every frame is held to the first frame's cap.
    let answered = AtomicBool::new(false);
    // Reading and writing are two futures of their own: a frame is never half-read and then
    // resumed by another future (reads are not cancel-safe), and a peer that stops reading
    // holds only the writer, for at most `WRITE_WAIT`. Whichever ends first ends the connection.
    let pending = Pending {
        place,
        answer_by,
        answered: &answered,
        metrics: &inner.metrics,
    };
    let result = tokio::select! {
        _ = inner.stop.cancelled() => Ok(()),
        read = read_frames(reader, owner, id, &answered) => read,
        written = write_frames(write_half, outgoing, pending) => written,
    };
    let _ = owner.send(TcpEvent::Closed { id }).await;
    result
}

/// The connection's first frame, within the setup wait and the first frame's cap.
async fn first_frame(stream: &mut TcpStream, inner: &IntakeInner) -> io::Result<BytesMut> {
    let read = tokio::time::timeout(inner.setup_wait, read_frame(stream, FIRST_FRAME_MAX));
    match read.await {
        Ok(Ok(first)) => Ok(first),
        Ok(Err(e)) => {
            if e.kind() == io::ErrorKind::InvalidData {
                inner.metrics.tcp_closed(ConnClosed::BadFirstFrame);
            }
            Err(e)
        }
        Err(_) => Err(limit(
            &inner.metrics,
            ConnClosed::SetupTimeout,
            "no first frame",
        )),
    }
}

/// The loop a first frame names: a STUN request whose local ufrag names one.
fn owner_of<'a>(first: &[u8], inner: &'a IntakeInner) -> io::Result<&'a mpsc::Sender<TcpEvent>> {
    let owner = stun_request_local_ufrag(first)
        .and_then(|ufrag| IceCredentials::loop_of(&ufrag))
        .and_then(|index| inner.loops.get(index));
    owner.ok_or_else(|| {
        inner.metrics.tcp_closed(ConnClosed::BadFirstFrame);
        io::Error::new(io::ErrorKind::InvalidData, "not a request for a session")
    })
}

/// Frames from the peer to its loop; a live peer sends consent checks every few seconds (RFC
/// 7675), so one silent for `IDLE_WAIT` is gone.
async fn read_frames(
    mut reader: OwnedReadHalf,
    owner: &mpsc::Sender<TcpEvent>,
    id: TcpConnId,
    answered: &AtomicBool,
) -> io::Result<()> {
    let max = || {
        if answered.load(Ordering::Relaxed) {
            usize::from(u16::MAX)
        } else {
            FIRST_FRAME_MAX
        }
    };
    loop {
        match tokio::time::timeout(IDLE_WAIT, read_frame_within(&mut reader, max)).await {
            Ok(Ok(data)) => {
                if owner.send(TcpEvent::Frame { id, data }).await.is_err() {
                    return Err(loop_gone());
                }
            }
            Ok(Err(e)) => return Err(e),
            Err(_) => return Err(io::Error::new(io::ErrorKind::TimedOut, "idle")),
        }
    }
}

/// A connection until its session answers it: evictable from its pool, and closed at the
/// deadline (a request whose integrity rtc could not check is never answered).
struct Pending<'a> {
    place: Place,
    answer_by: tokio::time::Instant,
    answered: &'a AtomicBool,
    metrics: &'a LoopMetrics,
}

/// Frames from the loop to the peer, once its session answered.
async fn write_frames(
    mut write_half: OwnedWriteHalf,
    mut outgoing: mpsc::Receiver<Bytes>,
    pending: Pending<'_>,
) -> io::Result<()> {
    let answer = tokio::select! {
        _ = pending.place.evicted() => return Err(io::Error::other("evicted: its pool was full")),
        _ = tokio::time::sleep_until(pending.answer_by) => {
            let why = "its session did not answer";
            return Err(limit(pending.metrics, ConnClosed::Unanswered, why));
        }
        answer = outgoing.recv() => answer,
    };
    let Some(answer) = answer else {
        // The loop forgot it: its session ended, or a cap refused it.
        return Ok(());
    };
    // Answered: the loop holds it under the ICE-TCP caps from now on.
    pending.answered.store(true, Ordering::Relaxed);
    drop(pending.place);
    let mut next = Some(answer);
    while let Some(data) = next {
        tokio::time::timeout(WRITE_WAIT, write_half.write_all(&frame(&data)))
            .await
            .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "peer not reading"))??;
        next = outgoing.recv().await;
    }
    // The loop forgot the connection (its session ended).
    Ok(())
}

/// A connection closed by a limit: counted, and the error it ends with.
fn limit(metrics: &LoopMetrics, why: ConnClosed, what: &str) -> io::Error {
    metrics.tcp_closed(why);
    io::Error::new(io::ErrorKind::TimedOut, what.to_owned())
}

fn loop_gone() -> io::Error {
    io::Error::new(io::ErrorKind::BrokenPipe, "media loop gone")
}
