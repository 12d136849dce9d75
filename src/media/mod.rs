//! The media plane: a media loop owns its UDP socket and every peer connection on it (sans-IO
//! `rtc`), so protocol state needs no locks. By default there is one loop; with `--media-threads
//! N` there are N, each on its own OS thread and port, and a stream's sessions share a loop.
//! The HTTP plane talks to them only through [`MediaHandle`], which negotiates each new peer
//! connection on the request's own task and hands the finished connection to its loop.

mod cap;
mod conn;
mod error;
mod event_loop;
pub mod forward;
mod listing;
mod loops;
pub mod negotiate;
pub(crate) mod net;
mod pull;
mod sessions;
mod shield;
mod timers;

pub(crate) use crate::ops::metrics::NackMetrics;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot, watch};

use crate::config::PublisherConflict;
use crate::session::{EndReason, ResourceId, Role, StreamName};

pub use cap::SessionLimits;
pub use error::MediaError;
pub use loops::{spawn, LoopEnd, MediaLoops};
pub use net::socket::{local_ips, Announced, Announcements, Candidates};
pub use net::tcp::TcpLimits;
pub use pull::PendingPull;

pub(crate) use cap::PerClient;
pub(crate) use net::stun::stun_request_local_ufrag;

/// Index of a session inside its media loop.
pub type SessionKey = usize;

/// Test builds only (feature `fault-injection`): a datagram with these bytes makes the media loop
/// panic while a session's peer connection handles it, as a bug in `rtc` would.
#[cfg(feature = "fault-injection")]
pub const FAULT_DATAGRAM: &[u8] = b"\x80 whip-echo fault injection: panic here";

pub(crate) use net::tcp::{frame as rfc4571_frame, read_frame as read_rfc4571_frame};

/// Queue depth between the HTTP plane and a media loop.
const COMMAND_QUEUE: usize = 1024;

/// A request from the HTTP plane, with the channel for its answer.
pub(crate) enum Command {
    /// Adopt a negotiated session.
    Create {
        session: Box<NewSession>,
        reply: oneshot::Sender<Result<(), MediaError>>,
    },
    Delete {
        resource: ResourceId,
        reason: EndReason,
        reply: oneshot::Sender<Result<(), MediaError>>,
    },
    /// Ends the publisher of a stream, if it has one (cluster fencing).
    EndPublisher {
        stream: StreamName,
        reason: EndReason,
        reply: oneshot::Sender<()>,
    },
    Exists {
        resource: ResourceId,
        reply: oneshot::Sender<ResourceState>,
    },
    /// The codecs of a stream's publisher and viewers, for a new session's negotiation.
    StreamCodecs {
        stream: StreamName,
        reply: oneshot::Sender<negotiate::codecs::StreamCodecs>,
    },
    /// The loop's streams, for `GET /api/streams`.
    ListStreams {
        reply: oneshot::Sender<Vec<StreamInfo>>,
    },
    /// A viewer's video layer: reported, and changed first when `change` is given (to a rid, or
    /// to the top layer with none).
    Layer {
        resource: ResourceId,
        change: Option<Option<String>>,
        reply: oneshot::Sender<Result<LayerState, MediaError>>,
    },
    /// Trickled candidates or an ICE restart (RFC 9725 §4.3).
    Patch {
        resource: ResourceId,
        patch: IcePatch,
        reply: oneshot::Sender<Result<Patched, MediaError>>,
    },
    /// Makes the loop panic, to test that a dead loop is seen.
    #[cfg(test)]
    Panic,
}

/// One stream as `GET /api/streams` lists it.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct StreamInfo {
    /// Its name.
    pub stream: String,
    /// Its publisher (WHIP or echo), if one is live.
    pub publisher: Option<PublisherInfo>,
    /// Live WHEP viewers.
    pub viewers: usize,
    /// Cluster mode: of those, other nodes' pulls of the stream (its edges).
    pub edges: usize,
    /// Each viewer (edges too), with the video layer it gets.
    pub players: Vec<PlayerInfo>,
}

/// A viewer as `GET /api/streams` lists it.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct PlayerInfo {
    /// `connecting`, `connected` or `disconnected`.
    pub state: &'static str,
    /// The rid of the simulcast layer it gets now (none: no video yet, or no simulcast).
    pub layer: Option<String>,
    /// The layer it asked for (none: the top one).
    pub requested: Option<String>,
    /// Whether it is another node's pull of the stream (cluster mode).
    pub edge: bool,
}

impl StreamInfo {
    /// Whether a client publishes it on this node (cluster mode: not a pull from its holder).
    pub fn has_local_publisher(&self) -> bool {
        (self.publisher.as_ref()).is_some_and(|p| p.kind != PublisherKind::Pull)
    }
}

/// What publishes a stream, as `GET /api/streams` names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum PublisherKind {
    /// A WHIP client.
    Whip,
    /// An `/echo` session.
    Echo,
    /// Cluster mode: this node's pull of the stream from its holder (`"relay"` in the JSON, as
    /// it always was).
    #[serde(rename = "relay")]
    Pull,
}

/// A stream's publisher as `GET /api/streams` lists it.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct PublisherInfo {
    /// Who publishes.
    pub kind: PublisherKind,
    /// `connecting`, `connected` or `disconnected`.
    pub state: &'static str,
    /// The codec of each kind it sends (`audio/opus`, `video/H264/42e0/1`).
    pub codecs: Vec<String>,
    /// Seconds since its POST.
    pub uptime_seconds: f64,
    /// Each SSRC it sends (a simulcast publisher's layers), with its rate and picture size.
    pub sources: Vec<forward::sources::SourceInfo>,
    /// RTP packets of it that no track took (`dropped_packets_total{cause="unbound"}`): media
    /// that arrives but cannot be forwarded ("connected, but no video").
    pub unbound_packets: u64,
}

/// A session negotiated on the request's task, handed to its loop.
pub(crate) struct NewSession {
    pub resource: ResourceId,
    pub role: Role,
    pub stream: StreamName,
    pub negotiated: negotiate::peer::Negotiated,
    pub permit: cap::Permit,
    /// When negotiation started: the setup deadline counts from here.
    pub started: Instant,
    /// Cluster mode: a publisher that is this node's pull of the stream from its holder, or a
    /// viewer that is another node's pull of it.
    pub pull: bool,
    /// Remote candidates its offer brought (at most `negotiate::offer::MAX_REMOTE_CANDIDATES`).
    pub remote_candidates: usize,
    /// A viewer's simulcast layer, by rid (`?layer=`; none: the top one).
    pub layer: Option<String>,
}

/// A viewer's video layer, as its layer URL reports it: the layers it can choose from, the one
/// it asked for and the one it gets.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct LayerState {
    /// The rid it asked for (none: the top layer).
    pub requested: Option<String>,
    /// The rid of the layer it gets now (none: no video yet, or the publisher sends no rids).
    pub current: Option<String>,
    /// The publisher's video sources, the top layer first.
    pub layers: Vec<forward::sources::SourceInfo>,
}

/// A PATCH of a session as the HTTP plane parsed it: the fragment and the request's `If-Match`.
#[derive(Debug, Clone)]
pub struct IcePatch {
    /// The RFC 8840 fragment.
    pub frag: crate::sdpfrag::SdpFrag,
    /// The `If-Match` precondition.
    pub if_match: IfMatch,
}

/// An `If-Match` header (RFC 9110 §13.1.1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IfMatch {
    /// No `If-Match`.
    Absent,
    /// `If-Match: *`.
    Any,
    /// The entity tags listed, as sent (quoted; weak tags never match: RFC 9110 §8.8.3.2).
    Tags(Vec<String>),
}

/// What a PATCH did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Patched {
    /// Candidates added (or ignored), or end-of-candidates noted: 204.
    Trickled,
    /// ICE restarted: 200 with the server's new credentials and candidates, and a new ETag.
    Restarted {
        /// The `application/trickle-ice-sdpfrag` body.
        frag: String,
        /// The new entity tag, quoted.
        etag: String,
    },
}

/// What a resource id names, as `GET /resource/{id}` reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResourceState {
    /// A live session.
    Live,
    /// A session that ended within the grace period.
    Ended(EndReason),
    /// Nothing (never, or ended long ago).
    Unknown,
}

/// The transport protocol of a candidate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// UDP.
    Udp,
    /// TCP (RFC 6544 passive, RFC 4571 framing).
    Tcp,
}

impl std::fmt::Display for Transport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Transport::Udp => "udp",
            Transport::Tcp => "tcp",
        })
    }
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
    /// Whether the loop is still running (cleared when it ends, a panic included).
    pub running: bool,
    /// Live sessions by role (publisher, viewer, echo) and link (connecting, connected,
    /// disconnected).
    pub by_role: [[usize; 3]; 3],
    /// Streams with a publisher or a viewer.
    pub streams: usize,
}

/// Settings of the media plane.
#[derive(Debug, Clone)]
pub struct MediaConfig {
    /// The session caps.
    pub session_limits: SessionLimits,
    /// ICE setup and consent timeout.
    pub ice_timeout: Duration,
    /// What a second publisher of a live stream gets.
    pub publisher_conflict: PublisherConflict,
    /// Bits per second a publishing session may send (0: no cap).
    pub max_bitrate: u64,
    /// The counters the loops move.
    pub metrics: crate::ops::metrics::LoopMetrics,
    /// Cluster mode: this node's tag, put in every resource id it mints.
    pub node_tag: Option<u16>,
    /// The limits on TCP connections, pending and ICE-TCP.
    pub tcp_limits: TcpLimits,
    /// ICE restarts a session may make per minute (0: any number).
    pub ice_restarts_per_minute: u32,
    /// Checks per second to addresses that never answered one, per loop (0: any number).
    pub unanswered_checks_per_second: u32,
}

/// One media loop as the HTTP plane sees it.
#[derive(Debug)]
struct Shard {
    commands: mpsc::Sender<Command>,
    udp_addr: SocketAddr,
    settings: Arc<negotiate::peer::PeerSettings>,
}

/// The HTTP plane's handle on the media loops: cheap to clone.
#[derive(Debug, Clone)]
pub struct MediaHandle {
    shards: Arc<[Shard]>,
    stats: watch::Receiver<Vec<Stats>>,
    cap: cap::SessionCap,
    tcp_addr: SocketAddr,
    node_tag: Option<u16>,
    metrics: crate::ops::metrics::LoopMetrics,
}

impl MediaHandle {
    /// Checks `offer` for `role`, negotiates the peer connection here (on the caller's task, so
    /// a burst of POSTs never stalls a loop's media) and hands it to the stream's media loop.
    /// `pull`: cluster mode, the session is another node's pull of the stream (counted apart
    /// in `/api/streams`).
    pub async fn create(
        &self,
        stream: StreamName,
        offer: negotiate::offer::CheckedOffer,
        client: Option<std::net::IpAddr>,
        pull: bool,
        layer: Option<String>,
    ) -> Result<Created, MediaError> {
        let negotiate::offer::CheckedOffer {
            sdp: offer,
            role,
            info,
        } = offer;
        let index = stream_loop(&stream, self.shards.len());
        let shard = &self.shards[index];
        let admitted = self.cap.try_admit(client, Instant::now())?;
        if let Some(victim) = admitted.evicted {
            self.end_soon(victim, EndReason::Evicted);
        }
        let permit = admitted.permit;
        // The stream's codecs first (one round trip to the loop): a viewer gets its publisher's,
        // a publisher prefers its waiting viewers' (whip-echo forwards, never transcodes).
        let stream_codecs = self
            .request(shard, |reply| Command::StreamCodecs {
                stream: stream.clone(),
                reply,
            })
            .await?;
        let started = Instant::now();
        let credentials = negotiate::peer::IceCredentials::random_for(index);
        let own = own_addrs(&shard.settings);
        let (offer, remote_candidates, ignored) = negotiate::offer::limit_candidates(
            &offer,
            &own,
            negotiate::offer::MAX_REMOTE_CANDIDATES,
        );
        self.metrics.candidates_ignored(ignored);
        // A panic of the WebRTC stack on this offer (a bug) refuses it, as an offer it cannot
        // apply, rather than dropping the connection without an answer.
        let settings = &shard.settings;
        let mut negotiated = shield::shielded(|| {
            negotiate::peer::negotiate(
                settings,
                role,
                &info,
                offer,
                credentials,
                &stream_codecs,
                started,
            )
        })
        .unwrap_or_else(|panic| {
            tracing::error!(%panic, "the WebRTC stack panicked on an offer");
            Err(MediaError::BadOffer(
                "the server failed while applying it (a bug, logged)".into(),
            ))
        })?;
        let resource = self.new_resource(index);
        // RFC 9725 §4.3.1: the ETag identifies the ICE session; it changes only on ICE restart.
        let etag = format!("\"{}\"", negotiated.ufrag);
        let answer = std::mem::take(&mut negotiated.answer);
        let session = Box::new(NewSession {
            resource,
            role,
            stream,
            negotiated,
            permit,
            started,
            pull,
            remote_candidates,
            layer,
        });
        self.request(shard, |reply| Command::Create { session, reply })
            .await??;
        Ok(Created {
            resource,
            answer,
            etag,
        })
    }

    /// Ends the session `resource` (DELETE). An ended resource within its grace period is `Ok`.
    pub async fn delete(&self, resource: ResourceId) -> Result<(), MediaError> {
        self.end(resource, EndReason::Deleted).await
    }

    /// Ends the session `resource` for `reason`, through the one teardown path.
    pub async fn end(&self, resource: ResourceId, reason: EndReason) -> Result<(), MediaError> {
        let shard = self.owner(&resource);
        self.request(shard, |reply| Command::Delete {
            resource,
            reason,
            reply,
        })
        .await?
    }

    /// Ends the session `resource` for `reason` without waiting for it, so that no caller can
    /// drop the request half-way (a client that hangs up): its loop is told at once, or, with
    /// its queue full or the loop gone, the session ends by itself at its setup deadline.
    fn end_soon(&self, resource: ResourceId, reason: EndReason) {
        let (reply, _) = oneshot::channel();
        let command = Command::Delete {
            resource,
            reason,
            reply,
        };
        if self.owner(&resource).commands.try_send(command).is_err() {
            tracing::debug!(%resource, %reason, "media loop busy: the session ends at its deadline");
        }
    }

    /// Ends `stream`'s publisher, if it has one, for `reason`.
    pub async fn end_publisher(
        &self,
        stream: &StreamName,
        reason: EndReason,
    ) -> Result<(), MediaError> {
        let shard = &self.shards[stream_loop(stream, self.shards.len())];
        self.request(shard, |reply| Command::EndPublisher {
            stream: stream.clone(),
            reason,
            reply,
        })
        .await
    }

    /// A fresh resource id of loop `index` (naming this node in cluster mode).
    fn new_resource(&self, index: usize) -> ResourceId {
        ResourceId::random_on(self.node_tag, index, self.shards.len())
    }

    /// Whether `resource` names a live session, one that ended within the grace period (and
    /// why), or nothing.
    pub async fn exists(&self, resource: ResourceId) -> Result<ResourceState, MediaError> {
        let shard = self.owner(&resource);
        self.request(shard, |reply| Command::Exists { resource, reply })
            .await
    }

    /// The video layer of viewer `resource`, after changing it to `change` if given (a rid, or
    /// none for the top layer).
    pub async fn layer(
        &self,
        resource: ResourceId,
        change: Option<Option<String>>,
    ) -> Result<LayerState, MediaError> {
        let shard = self.owner(&resource);
        self.request(shard, |reply| Command::Layer {
            resource,
            change,
            reply,
        })
        .await?
    }

    /// Applies a PATCH (RFC 9725 §4.3) to the session `resource`.
    pub async fn patch(
        &self,
        resource: ResourceId,
        mut patch: IcePatch,
    ) -> Result<Patched, MediaError> {
        let shard = self.owner(&resource);
        let own = own_addrs(&shard.settings);
        for section in &mut patch.frag.sections {
            let before = section.candidates.len();
            section
                .candidates
                .retain(|c| !negotiate::offer::unusable_candidate(c, &own));
            self.metrics
                .candidates_ignored(before - section.candidates.len());
        }
        self.request(shard, |reply| Command::Patch {
            resource,
            patch,
            reply,
        })
        .await?
    }

    /// The statistics of every loop together, and a way to wait for changes.
    pub fn stats(&self) -> StatsWatch {
        StatsWatch(self.stats.clone())
    }

    /// The bound address of the shared ICE-TCP listener.
    pub fn tcp_addr(&self) -> SocketAddr {
        self.tcp_addr
    }

    /// The bound addresses of every loop's UDP socket.
    pub fn udp_addrs(&self) -> Vec<SocketAddr> {
        self.shards.iter().map(|s| s.udp_addr).collect()
    }

    /// Every announced candidate address, each once: the loops' UDP ones, then the TCP ones.
    pub fn announced(&self) -> Vec<(Transport, SocketAddr)> {
        let mut all: Vec<(Transport, SocketAddr)> = Vec::new();
        let udp = self.shards.iter().flat_map(|s| s.settings.udp.iter());
        let tcp = self.shards.iter().flat_map(|s| s.settings.tcp.iter());
        for entry in udp
            .map(|a| (Transport::Udp, *a))
            .chain(tcp.map(|a| (Transport::Tcp, *a)))
        {
            if !all.contains(&entry) {
                all.push(entry);
            }
        }
        all
    }

    /// The loop that minted `resource` (its id says which).
    fn owner(&self, resource: &ResourceId) -> &Shard {
        &self.shards[resource.loop_index(self.shards.len())]
    }

    async fn request<T>(
        &self,
        shard: &Shard,
        command: impl FnOnce(oneshot::Sender<T>) -> Command,
    ) -> Result<T, MediaError> {
        let (reply, answer) = oneshot::channel();
        shard
            .commands
            .send(command(reply))
            .await
            .map_err(|_| MediaError::NotRunning)?;
        answer.await.map_err(|_| MediaError::NotRunning)
    }

    /// Every stream of every loop, by name.
    pub async fn streams(&self) -> Result<Vec<StreamInfo>, MediaError> {
        let mut all = Vec::new();
        for shard in self.shards.iter() {
            all.extend(
                self.request(shard, |reply| Command::ListStreams { reply })
                    .await?,
            );
        }
        all.sort_by(|a, b| a.stream.cmp(&b.stream));
        Ok(all)
    }

    /// Makes loop `index` panic (tests of crash visibility).
    #[cfg(test)]
    pub(crate) async fn panic_loop(&self, index: usize) {
        let _ = self.shards[index].commands.send(Command::Panic).await;
    }
}

/// A loop's own candidate addresses, which no remote candidate may name.
fn own_addrs(settings: &negotiate::peer::PeerSettings) -> Vec<SocketAddr> {
    settings.udp.iter().chain(&settings.tcp).copied().collect()
}

/// The loop (of `loops`) that owns `stream`: every session of a stream lives in one loop, so a
/// publisher's packets reach its viewers without crossing threads. FNV-1a over the name: stable
/// across builds and platforms, unlike `DefaultHasher`, whose output std does not specify.
pub fn stream_loop(stream: &StreamName, loops: usize) -> usize {
    const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0100_0000_01b3;
    let hash = stream
        .as_str()
        .bytes()
        .fold(OFFSET, |h, b| (h ^ u64::from(b)).wrapping_mul(PRIME));
    (hash % loops.max(1) as u64) as usize
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
            by_role: std::array::from_fn(|r| {
                std::array::from_fn(|l| t.by_role[r][l] + s.by_role[r][l])
            }),
            streams: t.streams + s.streams,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn streams_map_to_loops_stably() {
        let name = |s: &str| StreamName::parse(s).unwrap();
        assert_eq!(stream_loop(&name("anything"), 1), 0);
        // FNV-1a of one byte alternates parity with the byte: "a".."h" use both of two loops.
        let two: Vec<usize> = ["a", "b", "c", "d"]
            .iter()
            .map(|s| stream_loop(&name(s), 2))
            .collect();
        assert_eq!(two, [0, 1, 0, 1]);
        assert!((0..100).all(|i| stream_loop(&name(&format!("s{i}")), 3) < 3));
    }
}
