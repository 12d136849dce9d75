//! The HTTP plane's handle on the media loops: it negotiates each new peer connection on the
//! caller's task and hands the finished connection to its stream's loop; every other request is
//! a command to the loop that minted the resource.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use tokio::sync::{mpsc, oneshot, watch};

use super::command::{Command, NewSession};
use super::stats::{Stats, StatsWatch};
use super::{
    cap, negotiate, Created, IcePatch, LayerState, MediaError, Patched, ResourceState, StreamInfo,
    Transport,
};
use crate::session::{EndReason, ResourceId, Role, StreamName};
use negotiate::offer::OfferInfo;

/// One media loop as the HTTP plane sees it.
#[derive(Debug)]
pub(crate) struct Shard {
    pub(crate) commands: mpsc::Sender<Command>,
    pub(crate) udp_addr: SocketAddr,
    pub(crate) settings: Arc<negotiate::peer::PeerSettings>,
}

/// The HTTP plane's handle on the media loops: cheap to clone.
#[derive(Debug, Clone)]
pub struct MediaHandle {
    pub(crate) shards: Arc<[Shard]>,
    pub(crate) stats: watch::Receiver<Vec<Stats>>,
    pub(crate) cap: cap::SessionCap,
    pub(crate) tcp_addr: SocketAddr,
    pub(crate) node_tag: Option<u16>,
    pub(crate) metrics: crate::ops::metrics::LoopMetrics,
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
        (layer, opening): (Option<String>, crate::report::Opening),
    ) -> Result<Created, MediaError> {
        let role = offer.role;
        let index = stream_loop(&stream, self.shards.len());
        let shard = &self.shards[index];
        let permit = self.admit(client)?;
        // The stream's codecs first (one round trip to the loop): a viewer gets its publisher's,
        // a publisher prefers its waiting viewers' (whip-echo forwards, never transcodes).
        let stream_codecs = self
            .request(shard, |reply| Command::StreamCodecs {
                stream: stream.clone(),
                reply,
            })
            .await?;
        let started = Instant::now();
        let (mut negotiated, remote_candidates) =
            self.negotiate(index, offer, &stream_codecs, started)?;
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
            opening,
        });
        self.request(shard, |reply| Command::Create { session, reply })
            .await??;
        Ok(Created {
            resource,
            answer,
            etag,
        })
    }

    /// A place under the session cap for `client`; a connecting session it evicts ends soon.
    fn admit(&self, client: Option<std::net::IpAddr>) -> Result<cap::Permit, MediaError> {
        let admitted = self.cap.try_admit(client, Instant::now())?;
        if let Some(victim) = admitted.evicted {
            self.end_soon(victim, EndReason::Evicted);
        }
        Ok(admitted.permit)
    }

    /// The negotiation of `offer` for loop `index`, its remote candidates limited first (those
    /// naming the loop's own addresses and those past the cap are dropped, and counted); how
    /// many it kept.
    fn negotiate(
        &self,
        index: usize,
        offer: negotiate::offer::CheckedOffer,
        stream_codecs: &negotiate::codecs::StreamCodecs,
        started: Instant,
    ) -> Result<(negotiate::peer::Negotiated, usize), MediaError> {
        let shard = &self.shards[index];
        let own = own_addrs(&shard.settings);
        let max = negotiate::offer::MAX_REMOTE_CANDIDATES;
        let (sdp, kept, ignored) = negotiate::offer::limit_candidates(&offer.sdp, &own, max);
        self.metrics.candidates_ignored(ignored);
        let offer = (sdp, offer.role, &offer.info);
        let negotiated = negotiate_shielded(shard, index, offer, stream_codecs, started)?;
        Ok((negotiated, kept))
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
    pub(super) fn new_resource(&self, index: usize) -> ResourceId {
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

    /// How many media loops there are (each with its own socket on the UDP port).
    pub fn loops(&self) -> usize {
        self.shards.len()
    }

    /// The bound address of the UDP port (once: every loop's socket is bound to it).
    pub fn udp_addrs(&self) -> Vec<SocketAddr> {
        let mut addrs: Vec<SocketAddr> = Vec::new();
        for shard in self.shards.iter() {
            if !addrs.contains(&shard.udp_addr) {
                addrs.push(shard.udp_addr);
            }
        }
        addrs
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
    pub(super) fn owner(&self, resource: &ResourceId) -> &Shard {
        &self.shards[resource.loop_index(self.shards.len())]
    }

    pub(super) async fn request<T>(
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

    /// A handle on no loop, for unit tests of what holds one without using it.
    #[cfg(test)]
    pub(crate) fn detached() -> MediaHandle {
        MediaHandle {
            shards: Arc::new([]),
            stats: watch::channel(Vec::new()).1,
            cap: cap::SessionCap::new(super::SessionLimits {
                max: 0,
                max_per_ip: 0,
                max_per_prefix: 0,
                max_connecting_per_ip: 0,
                evictable_after: std::time::Duration::ZERO,
            }),
            tcp_addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            node_tag: None,
            metrics: crate::ops::metrics::Metrics::new().for_loops(),
        }
    }

    /// Makes loop `index` panic (tests of crash visibility).
    #[cfg(test)]
    pub(crate) async fn panic_loop(&self, index: usize) {
        let _ = self.shards[index].commands.send(Command::Panic).await;
    }
}

/// Negotiates `offer` on `shard`'s settings with ICE credentials of loop `index`. A panic of the
/// WebRTC stack on an offer (a bug) refuses it, as an offer it cannot apply, rather than
/// dropping the connection without an answer.
fn negotiate_shielded(
    shard: &Shard,
    index: usize,
    (offer, role, info): (String, Role, &OfferInfo),
    stream_codecs: &negotiate::codecs::StreamCodecs,
    started: Instant,
) -> Result<negotiate::peer::Negotiated, MediaError> {
    let credentials = negotiate::peer::IceCredentials::random_for(index);
    let settings = &shard.settings;
    super::shield::shielded(|| {
        negotiate::peer::negotiate(
            settings,
            role,
            info,
            offer,
            credentials,
            stream_codecs,
            started,
        )
    })
    .unwrap_or_else(|panic| {
        tracing::error!(%panic, "the WebRTC stack panicked on an offer");
        Err(MediaError::BadOffer(
            "the server failed while applying it (a bug, logged)".into(),
        ))
    })
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
