//! Starting the media loops, each on an OS thread of its own with a single-threaded runtime (so
//! `--media-threads N` really is N threads, whatever the HTTP plane is doing), and seeing them
//! end. A loop that dies, by a panic in rtc's parsing of an attacker's datagram for instance,
//! must not leave a server that says "ok" while every POST to that loop gets 503: its guard clears
//! `running` (so `/healthz` says so) and reports the death, which `server::serve` turns into a
//! non-zero exit for a supervisor to act on.

use std::sync::Arc;
use std::thread::JoinHandle;

use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::error;

use super::cap::SessionCap;
use super::cap::Slots;
use super::event_loop::{Inputs, MediaLoop};
use super::negotiate::peer::PeerSettings;
use super::net::mesh::{self, Inbox, Mesh};
use super::net::pending::Pending;
use super::net::socket::{Announcements, Candidates, UdpIo};
use super::net::tcp::{Acceptor, Intake, TcpConns, TcpEvent};
use super::{MediaConfig, MediaError, MediaHandle, Shard, Stats, StatsSlot, COMMAND_QUEUE};

/// How a media loop ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoopEnd {
    /// It was told to stop and tore its sessions down.
    Stopped,
    /// It panicked.
    Died,
}

/// ICE-TCP events queued towards one loop before a connection task waits.
const TCP_EVENT_QUEUE: usize = 1024;

/// The running media loops: their threads, the reports of their ends, and the ICE-TCP tasks.
#[derive(Debug)]
pub struct MediaLoops {
    threads: Vec<JoinHandle<()>>,
    ended: mpsc::UnboundedReceiver<(usize, LoopEnd)>,
    /// The ICE-TCP acceptor and its connections' tasks.
    tcp_tasks: TaskTracker,
    /// Where ICE-TCP connections go, from whichever listener.
    intake: Intake,
    /// The HTTP port's announced addresses, when it carries media too.
    http_candidates: Option<Candidates>,
    /// The HTTP port's places for connections not yet classified.
    http_pending: Pending,
}

impl MediaLoops {
    /// Resolves when a loop ends: which one, and how. Pending forever once all have reported.
    pub async fn next_end(&mut self) -> (usize, LoopEnd) {
        match self.ended.recv().await {
            Some(end) => end,
            None => std::future::pending().await,
        }
    }

    /// What the HTTP port needs to hand ICE-TCP connections to the media plane (`http/port.rs`):
    /// the intake, the port's pool of connections not yet classified, and its announced
    /// addresses when it carries ICE-TCP (`None`: it does not).
    pub fn http_port_intake(&self) -> (Intake, Pending, Option<Candidates>) {
        let intake = self.intake.clone();
        (
            intake,
            self.http_pending.clone(),
            self.http_candidates.clone(),
        )
    }

    /// Whether the HTTP port was announced as an ICE-TCP candidate.
    pub fn media_on_http_port(&self) -> bool {
        self.http_candidates.is_some()
    }

    /// Waits for every loop and ICE-TCP task to end (after `stop`); `Err` names a loop that died.
    pub async fn join(mut self) -> Result<(), usize> {
        self.tcp_tasks.close();
        self.tcp_tasks.wait().await;
        let mut died = None;
        // The channel closes once every loop's guard has reported.
        while let Some((index, end)) = self.ended.recv().await {
            if end == LoopEnd::Died {
                died.get_or_insert(index);
            }
        }
        // Every loop has left its runtime, so joining only waits for the threads to exit.
        for (index, thread) in self.threads.into_iter().enumerate() {
            if thread.join().is_err() {
                died.get_or_insert(index);
            }
        }
        died.map_or(Ok(()), Err)
    }
}

/// Clears the loop's `running` flag and reports its end however the loop leaves (a panic
/// included, since this runs while unwinding).
struct EndGuard {
    index: usize,
    stats: StatsSlot,
    ended: mpsc::UnboundedSender<(usize, LoopEnd)>,
}

impl Drop for EndGuard {
    fn drop(&mut self) {
        let end = if std::thread::panicking() {
            error!(media_loop = self.index, "media loop died");
            LoopEnd::Died
        } else {
            LoopEnd::Stopped
        };
        self.stats.modify(|s| s.running = false);
        let _ = self.ended.send((self.index, end));
    }
}

/// What one media loop's thread starts from.
struct LoopParts {
    socket: std::net::UdpSocket,
    candidates: Candidates,
    config: MediaConfig,
    inputs: Inputs,
    /// Its links to the other loops on the UDP port.
    mesh: Mesh,
    /// The ICE-TCP caps in all and per client, shared by every loop.
    tcp_bound: Slots,
    stop: CancellationToken,
}

/// Runs loop `index` on a thread of its own with a single-threaded runtime; `guard` reports how
/// it ends.
fn start_loop(
    index: usize,
    guard: EndGuard,
    parts: LoopParts,
) -> Result<JoinHandle<()>, MediaError> {
    std::thread::Builder::new()
        .name(format!("whip-echo-media-{index}"))
        .spawn(move || {
            let guard = guard;
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a single-threaded runtime for the media loop");
            runtime.block_on(async {
                let socket = tokio::net::UdpSocket::from_std(parts.socket)
                    .expect("the bound UDP socket joins the loop's runtime");
                let io = UdpIo::new(socket, parts.candidates).expect("UDP socket options");
                let tcp = TcpConns::new(
                    &parts.config.tcp_limits,
                    parts.tcp_bound,
                    parts.config.metrics.clone(),
                );
                let transports = (io, tcp, parts.mesh);
                let media_loop = MediaLoop::new(transports, parts.config, guard.stats.clone());
                media_loop.run(parts.inputs, parts.stop).await;
            });
            drop(guard);
        })
        .map_err(MediaError::internal)
}

/// Starts one media loop per socket (bound, non-blocking std sockets), announcing `announced`
/// (`startup/addresses.rs`), and the ICE-TCP acceptor. They run until `stop` is cancelled, then
/// tear every session down and end. Sessions are capped at `config.session_limits` across all
/// loops.
pub fn spawn(
    sockets: Vec<std::net::UdpSocket>,
    tcp: std::net::TcpListener,
    announced: Announcements,
    config: MediaConfig,
    stop: CancellationToken,
) -> Result<(MediaHandle, MediaLoops), MediaError> {
    let tcp_addr = tcp.local_addr().map_err(MediaError::internal)?;
    let Announcements {
        udp,
        tcp: tcp_candidates,
        http: http_candidates,
        tcp_addrs,
    } = announced;
    let sockets = sockets.into_iter().zip(udp).collect();
    let started = start_loops(sockets, &tcp_addrs, &config, &stop)?;
    let handle = MediaHandle {
        shards: started.shards.into(),
        stats: started.stats,
        cap: SessionCap::new(config.session_limits),
        tcp_addr,
        node_tag: config.node_tag,
        metrics: config.metrics.clone(),
    };
    let (tcp_tasks, intake) = start_ice_tcp(tcp, started.tcp, tcp_candidates, &config, stop)?;
    let limits = &config.tcp_limits;
    let http_pending = Pending::new(
        "http",
        limits.max_pending,
        limits.max_pending_per_ip,
        config.metrics.clone(),
    );
    let loops = MediaLoops {
        threads: started.threads,
        ended: started.ended,
        tcp_tasks,
        intake,
        http_candidates,
        http_pending,
    };
    Ok((handle, loops))
}

/// The loops [`start_loops`] started.
struct Started {
    shards: Vec<Shard>,
    threads: Vec<JoinHandle<()>>,
    /// Each loop's ICE-TCP event channel, by loop index.
    tcp: Vec<mpsc::Sender<TcpEvent>>,
    stats: watch::Receiver<Vec<Stats>>,
    ended: mpsc::UnboundedReceiver<(usize, LoopEnd)>,
}

/// One loop per socket, each announcing its candidates (and `tcp_addrs` for ICE-TCP), each
/// with a queue the others hand it datagrams through (`net/mesh.rs`).
fn start_loops(
    sockets: Vec<(std::net::UdpSocket, Candidates)>,
    tcp_addrs: &[std::net::SocketAddr],
    config: &MediaConfig,
    stop: &CancellationToken,
) -> Result<Started, MediaError> {
    let limits = &config.tcp_limits;
    let tcp_bound = Slots::new(limits.max_ice_tcp, limits.max_ice_tcp_per_ip);
    let idle = Stats {
        idle: true,
        running: true,
        ..Stats::default()
    };
    let (board, stats) = watch::channel(vec![idle; sockets.len()]);
    let board = Arc::new(board);
    let (ended_tx, ended) = mpsc::unbounded_channel();
    let (mut shards, mut threads, mut tcp) = (Vec::new(), Vec::new(), Vec::new());
    let (queues, parcels): (Vec<_>, Vec<Inbox>) = sockets.iter().map(|_| mesh::queue()).unzip();
    let each = sockets.into_iter().zip(parcels).enumerate();
    for (index, ((socket, candidates), parcels)) in each {
        let udp_addr = socket.local_addr().map_err(MediaError::internal)?;
        let addrs: Vec<_> = candidates.iter().map(|c| c.addr).collect();
        let nack = config.metrics.nack();
        let settings = PeerSettings::new(&addrs, tcp_addrs, config.ice_timeout, nack)?;
        let (commands_tx, commands_rx) = mpsc::channel(COMMAND_QUEUE);
        let (tcp_tx, tcp_rx) = mpsc::channel(TCP_EVENT_QUEUE);
        tcp.push(tcp_tx);
        let stats = StatsSlot {
            board: board.clone(),
            index,
        };
        let ended = ended_tx.clone();
        let guard = EndGuard {
            index,
            stats,
            ended,
        };
        let run = LoopParts {
            socket,
            candidates,
            config: config.clone(),
            inputs: Inputs {
                commands: commands_rx,
                tcp: tcp_rx,
                parcels,
            },
            mesh: Mesh::new(index, queues.clone()),
            tcp_bound: tcp_bound.clone(),
            stop: stop.clone(),
        };
        threads.push(start_loop(index, guard, run)?);
        shards.push(Shard {
            commands: commands_tx,
            udp_addr,
            settings: Arc::new(settings),
        });
    }
    Ok(Started {
        shards,
        threads,
        tcp,
        stats,
        ended,
    })
}

/// The shared ICE-TCP port's acceptor, handing connections to `loops` through the intake (which
/// the HTTP port uses too); its tasks' tracker.
fn start_ice_tcp(
    tcp: std::net::TcpListener,
    loops: Vec<mpsc::Sender<TcpEvent>>,
    candidates: Candidates,
    config: &MediaConfig,
    stop: CancellationToken,
) -> Result<(TaskTracker, Intake), MediaError> {
    let tcp_tasks = TaskTracker::new();
    let listener = tokio::net::TcpListener::from_std(tcp).map_err(MediaError::internal)?;
    let metrics = config.metrics.clone();
    let intake = Intake::new(loops, &config.tcp_limits, metrics, tcp_tasks.clone(), stop);
    let acceptor = Acceptor {
        listener,
        intake: intake.clone(),
        candidates,
    };
    tcp_tasks.spawn(acceptor.run());
    Ok((tcp_tasks, intake))
}
