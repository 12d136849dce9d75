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
use tracing::error;

use super::cap::SessionCap;
use super::event_loop::MediaLoop;
use super::peer::PeerSettings;
use super::socket::{self, UdpIo};
use super::{MediaConfig, MediaError, MediaHandle, Shard, Stats, StatsSlot, COMMAND_QUEUE};

/// How a media loop ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoopEnd {
    /// It was told to stop and tore its sessions down.
    Stopped,
    /// It panicked.
    Died,
}

/// The running media loops: their threads and the reports of their ends.
#[derive(Debug)]
pub struct MediaLoops {
    threads: Vec<JoinHandle<()>>,
    ended: mpsc::UnboundedReceiver<(usize, LoopEnd)>,
}

impl MediaLoops {
    /// Resolves when a loop ends: which one, and how. Pending forever once all have reported.
    pub async fn next_end(&mut self) -> (usize, LoopEnd) {
        match self.ended.recv().await {
            Some(end) => end,
            None => std::future::pending().await,
        }
    }

    /// Waits for every loop's thread to finish (after `stop`); `Err` names a loop that died.
    pub async fn join(self) -> Result<(), usize> {
        let threads = self.threads;
        let joined = tokio::task::spawn_blocking(move || {
            threads
                .into_iter()
                .enumerate()
                .map(|(i, t)| t.join().map_err(|_| i))
                .collect::<Result<Vec<()>, usize>>()
        })
        .await
        .unwrap_or(Err(0));
        joined.map(|_| ())
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

/// Starts one media loop per socket (bound, non-blocking std sockets). They run until `stop` is
/// cancelled, then tear every session down and end. Sessions are capped at
/// `config.max_sessions` across all loops.
pub fn spawn(
    sockets: Vec<std::net::UdpSocket>,
    config: MediaConfig,
    stop: CancellationToken,
) -> Result<(MediaHandle, MediaLoops), MediaError> {
    let idle = Stats {
        idle: true,
        running: true,
        ..Stats::default()
    };
    let (board, stats_rx) = watch::channel(vec![idle; sockets.len()]);
    let board = Arc::new(board);
    let (ended_tx, ended) = mpsc::unbounded_channel();
    let mut shards = Vec::with_capacity(sockets.len());
    let mut threads = Vec::with_capacity(sockets.len());
    for (index, socket) in sockets.into_iter().enumerate() {
        let udp_addr = socket.local_addr().map_err(MediaError::internal)?;
        let candidates = socket::candidates(udp_addr, &config.local_ips, &config.public_ips);
        let addrs = socket::candidate_addrs(&candidates, udp_addr.port());
        let settings = Arc::new(PeerSettings::new(&addrs, config.ice_timeout, index)?);
        let (commands_tx, commands_rx) = mpsc::channel(COMMAND_QUEUE);
        let guard = EndGuard {
            index,
            stats: StatsSlot {
                board: board.clone(),
                index,
            },
            ended: ended_tx.clone(),
        };
        let (config, stop) = (config.clone(), stop.clone());
        let thread = std::thread::Builder::new()
            .name(format!("whip-echo-media-{index}"))
            .spawn(move || {
                let guard = guard;
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("a single-threaded runtime for the media loop");
                runtime.block_on(async {
                    let socket = tokio::net::UdpSocket::from_std(socket)
                        .expect("the bound UDP socket joins the loop's runtime");
                    let io = UdpIo::new(socket, candidates).expect("UDP socket options");
                    let media_loop = MediaLoop::new(io, config, guard.stats.clone());
                    media_loop.run(commands_rx, stop).await;
                });
                drop(guard);
            })
            .map_err(MediaError::internal)?;
        threads.push(thread);
        shards.push(Shard {
            commands: commands_tx,
            udp_addr,
            settings,
        });
    }
    let handle = MediaHandle {
        shards: shards.into(),
        stats: stats_rx,
        cap: SessionCap::new(config.max_sessions),
    };
    Ok((handle, MediaLoops { threads, ended }))
}
