//! The media plane: one task owns the shared UDP socket and every peer connection (sans-IO `rtc`),
//! so protocol state needs no locks. The HTTP plane talks to it only through [`MediaHandle`].

mod commands;
mod conn;
mod event_loop;
mod forward;
pub mod offer;
mod peer;
mod routes;
mod socket;
mod timers;

use std::net::SocketAddr;
use std::time::Duration;

use tokio::net::UdpSocket;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

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
}

/// The HTTP plane's handle on the media loop: cheap to clone.
#[derive(Debug, Clone)]
pub struct MediaHandle {
    commands: mpsc::Sender<Command>,
    stats: watch::Receiver<Stats>,
    udp_addr: SocketAddr,
}

impl MediaHandle {
    /// Checks `offer` for `role` and asks the media loop for a session on `stream`.
    pub async fn create(
        &self,
        role: Role,
        stream: StreamName,
        offer: String,
    ) -> Result<Created, ApiError> {
        // Parsing happens here, on the request's task, so the media loop only negotiates.
        let info = offer::inspect(&offer, role)?;
        self.request(|reply| Command::Create {
            role,
            stream,
            offer,
            info,
            reply,
        })
        .await?
    }

    /// Ends the session `resource` (DELETE). An ended resource within its grace period is `Ok`.
    pub async fn delete(&self, resource: ResourceId) -> Result<(), ApiError> {
        self.request(|reply| Command::Delete { resource, reply })
            .await?
    }

    /// Whether `resource` names a live or recently ended session.
    pub async fn exists(&self, resource: ResourceId) -> Result<bool, ApiError> {
        self.request(|reply| Command::Exists { resource, reply })
            .await
    }

    /// The latest published statistics, and a receiver to wait for changes.
    pub fn stats(&self) -> watch::Receiver<Stats> {
        self.stats.clone()
    }

    /// The bound address of the shared UDP socket.
    pub fn udp_addr(&self) -> SocketAddr {
        self.udp_addr
    }

    async fn request<T>(
        &self,
        command: impl FnOnce(oneshot::Sender<T>) -> Command,
    ) -> Result<T, ApiError> {
        let (reply, answer) = oneshot::channel();
        self.commands
            .send(command(reply))
            .await
            .map_err(|_| ApiError::ShuttingDown)?;
        answer.await.map_err(|_| ApiError::ShuttingDown)
    }
}

/// Starts the media loop on `socket`. It runs until `stop` is cancelled, then tears every session
/// down and ends; the returned `JoinHandle` is its owner's to await.
pub fn spawn(
    socket: UdpSocket,
    config: MediaConfig,
    stop: CancellationToken,
) -> std::io::Result<(MediaHandle, JoinHandle<()>)> {
    let udp_addr = socket.local_addr()?;
    let io = socket::UdpIo::new(socket, &config.local_ips, &config.public_ips)?;
    let settings = peer::PeerSettings::new(&io.candidate_addrs(), config.ice_timeout)
        .map_err(std::io::Error::other)?;
    let (commands_tx, commands_rx) = mpsc::channel(COMMAND_QUEUE);
    let (stats_tx, stats_rx) = watch::channel(Stats {
        idle: true,
        running: true,
        ..Stats::default()
    });
    let media_loop = event_loop::MediaLoop::new(io, settings, config, stats_tx);
    let task = tokio::spawn(media_loop.run(commands_rx, stop));
    Ok((
        MediaHandle {
            commands: commands_tx,
            stats: stats_rx,
            udp_addr,
        },
        task,
    ))
}
