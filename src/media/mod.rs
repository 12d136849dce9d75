//! The media plane: a media loop (one task) owns its UDP socket and every peer connection on it
//! (sans-IO `rtc`), so protocol state needs no locks. By default there is one loop; with
//! `--media-threads N` there are N, each with its own port, and a stream's sessions share a loop.
//! The HTTP plane talks to them only through [`MediaHandle`].

mod commands;
mod conn;
mod event_loop;
mod forward;
pub mod offer;
mod peer;
mod routes;
mod socket;
mod timers;

use std::hash::{Hash, Hasher};
use std::net::SocketAddr;
use std::sync::atomic::AtomicUsize;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::UdpSocket;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::config::PublisherConflict;
use crate::error::ApiError;
use crate::session::{ResourceId, Role, StreamName};

pub use peer::host_candidate;
pub use socket::local_ips;

/// Queue depth between the HTTP plane and the media loop.
const COMMAND_QUEUE: usize = 1024;

/// A request from the HTTP plane, with the channel for its answer.
#[derive(Debug)]
pub(crate) enum Command {
    Create {
        role: Role,
        stream: StreamName,
        offer: String,
        info: offer::OfferInfo,
        reply: oneshot::Sender<Result<Created, ApiError>>,
    },
    Delete {
        resource: ResourceId,
        reply: oneshot::Sender<Result<(), ApiError>>,
    },
    Exists {
        resource: ResourceId,
        reply: oneshot::Sender<bool>,
    },
}

/// A session the media plane created.
#[derive(Debug, Clone)]
pub struct Created {
    /// The capability naming the session.
    pub resource: ResourceId,
    /// The SDP answer.
    pub answer: String,
    /// Entity tag of the ICE session (RFC 9725 §4.3.1), quoted.
    pub etag: String,
}

/// What the media loop publishes after every change, for health checks and tests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    /// Live sessions.
    pub sessions: usize,
    /// Sessions whose ICE and DTLS are up.
    pub connected: usize,
    /// Sessions whose consent checks are failing (RFC 7675), not yet torn down.
    pub disconnected: usize,
    /// No session, stream or route is left anywhere in the loop.
    pub idle: bool,
    /// Whether the loop is still running.
    pub running: bool,
}

/// Settings of the media plane.
#[derive(Debug, Clone)]
pub struct MediaConfig {
    /// Local interface addresses to announce.
    pub local_ips: Vec<std::net::IpAddr>,
    /// NAT 1:1 public addresses to announce.
    pub public_ips: Vec<std::net::IpAddr>,
    /// Session cap.
    pub max_sessions: usize,
    /// ICE setup and consent timeout.
    pub ice_timeout: Duration,
    /// What a second publisher of a live stream gets.
    pub publisher_conflict: PublisherConflict,
}

/// One media loop as the HTTP plane sees it.
#[derive(Debug)]
struct Shard {
    commands: mpsc::Sender<Command>,
    udp_addr: SocketAddr,
}

/// The HTTP plane's handle on the media loops: cheap to clone.
#[derive(Debug, Clone)]
pub struct MediaHandle {
    shards: Arc<[Shard]>,
    stats: watch::Receiver<Vec<Stats>>,
}

impl MediaHandle {
    /// Checks `offer` for `role` and asks the stream's media loop for a session on `stream`.
    pub async fn create(
        &self,
        role: Role,
        stream: StreamName,
        offer: String,
    ) -> Result<Created, ApiError> {
        // Parsing happens here, on the request's task, so the media loop only negotiates.
        let info = offer::inspect(&offer, role)?;
        let shard = self.shard_of(&stream);
        self.request(shard, |reply| Command::Create {
            role,
            stream,
            offer,
            info,
            reply,
        })
        .await?
    }

    /// Ends the session `resource` (DELETE). An ended resource within its grace period is `Ok`.
    /// Resource ids do not name their loop, so each loop is asked until one knows the id.
    pub async fn delete(&self, resource: ResourceId) -> Result<(), ApiError> {
        for shard in self.shards.iter() {
            match self
                .request(shard, |reply| Command::Delete { resource, reply })
                .await?
            {
                Err(ApiError::NotFound(_)) => continue,
                done => return done,
            }
        }
        Err(ApiError::NotFound("no such resource"))
    }

    /// Whether `resource` names a live or recently ended session.
    pub async fn exists(&self, resource: ResourceId) -> Result<bool, ApiError> {
        for shard in self.shards.iter() {
            if self
                .request(shard, |reply| Command::Exists { resource, reply })
                .await?
            {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// The statistics of every loop together, and a way to wait for changes.
    pub fn stats(&self) -> StatsWatch {
        StatsWatch(self.stats.clone())
    }

    /// The bound addresses of every loop's UDP socket.
    pub fn udp_addrs(&self) -> Vec<SocketAddr> {
        self.shards.iter().map(|s| s.udp_addr).collect()
    }

    /// The loop that owns `stream`: every session of a stream lives in one loop, so a
    /// publisher's packets reach its viewers without crossing threads.
    fn shard_of(&self, stream: &StreamName) -> &Shard {
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        stream.hash(&mut hasher);
        &self.shards[(hasher.finish() % self.shards.len() as u64) as usize]
    }

    async fn request<T>(
        &self,
        shard: &Shard,
        command: impl FnOnce(oneshot::Sender<T>) -> Command,
    ) -> Result<T, ApiError> {
        let (reply, answer) = oneshot::channel();
        shard
            .commands
            .send(command(reply))
            .await
            .map_err(|_| ApiError::ShuttingDown)?;
        answer.await.map_err(|_| ApiError::ShuttingDown)
    }
}

/// The loops' statistics summed: counts add up; idle and running hold when they hold everywhere.
#[derive(Debug, Clone)]
pub struct StatsWatch(watch::Receiver<Vec<Stats>>);

impl StatsWatch {
    /// The latest totals.
    pub fn borrow(&self) -> Stats {
        total(&self.0.borrow())
    }

    /// The latest totals, marking them seen.
    pub fn borrow_and_update(&mut self) -> Stats {
        total(&self.0.borrow_and_update())
    }

    /// Waits until the totals satisfy `f`.
    pub async fn wait_for(
        &mut self,
        mut f: impl FnMut(&Stats) -> bool,
    ) -> Result<Stats, watch::error::RecvError> {
        let all = self.0.wait_for(|all| f(&total(all))).await?;
        Ok(total(&all))
    }
}

fn total(all: &[Stats]) -> Stats {
    all.iter().fold(
        Stats {
            idle: true,
            running: true,
            ..Stats::default()
        },
        |t, s| Stats {
            sessions: t.sessions + s.sessions,
            connected: t.connected + s.connected,
            disconnected: t.disconnected + s.disconnected,
            idle: t.idle && s.idle,
            running: t.running && s.running,
        },
    )
}

/// Where one loop publishes its statistics: its slot of the shared board.
#[derive(Debug, Clone)]
pub(crate) struct StatsSlot {
    board: Arc<watch::Sender<Vec<Stats>>>,
    index: usize,
}

impl StatsSlot {
    pub(crate) fn publish(&self, stats: Stats) {
        self.board.send_if_modified(|all| {
            let changed = all[self.index] != stats;
            all[self.index] = stats;
            changed
        });
    }

    pub(crate) fn modify(&self, f: impl FnOnce(&mut Stats)) {
        self.board.send_modify(|all| f(&mut all[self.index]));
    }
}

/// Starts one media loop per socket. They run until `stop` is cancelled, then tear every session
/// down and end; the returned `JoinHandle`s are their owner's to await. Sessions are capped at
/// `config.max_sessions` across all loops.
pub fn spawn(
    sockets: Vec<UdpSocket>,
    config: MediaConfig,
    stop: CancellationToken,
) -> std::io::Result<(MediaHandle, Vec<JoinHandle<()>>)> {
    let idle = Stats {
        idle: true,
        running: true,
        ..Stats::default()
    };
    let (board, stats_rx) = watch::channel(vec![idle; sockets.len()]);
    let board = Arc::new(board);
    let live = Arc::new(AtomicUsize::new(0));
    let mut shards = Vec::with_capacity(sockets.len());
    let mut tasks = Vec::with_capacity(sockets.len());
    for (index, socket) in sockets.into_iter().enumerate() {
        let udp_addr = socket.local_addr()?;
        let io = socket::UdpIo::new(socket, &config.local_ips, &config.public_ips)?;
        let settings = peer::PeerSettings::new(&io.candidate_addrs(), config.ice_timeout)
            .map_err(std::io::Error::other)?;
        let (commands_tx, commands_rx) = mpsc::channel(COMMAND_QUEUE);
        let slot = StatsSlot {
            board: board.clone(),
            index,
        };
        let media_loop =
            event_loop::MediaLoop::new(io, settings, config.clone(), slot, live.clone());
        tasks.push(tokio::spawn(media_loop.run(commands_rx, stop.clone())));
        shards.push(Shard {
            commands: commands_tx,
            udp_addr,
        });
    }
    let handle = MediaHandle {
        shards: shards.into(),
        stats: stats_rx,
    };
    Ok((handle, tasks))
}
