//! The cluster's one background task on each node, with two timers: every tick one checks and
//! renews this node's leases (fencing itself where it could not renew in time) and refreshes its
//! heartbeat; the other keeps its pulls, apart, so that a slow holder never delays a renewal. On
//! shutdown it gives its leases, its pulls and its heartbeat up, so that a publisher that
//! reconnects elsewhere takes its stream at once.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use super::store::{Acquired, NodeRecord};
use super::{Claim, Cluster};
use crate::media::StreamInfo;
use crate::session::{EndReason, StreamName};

/// Starts the keeper; it ends when `stop` is cancelled, after leaving the cluster.
pub fn spawn_keeper(cluster: Cluster, stop: CancellationToken) -> JoinHandle<()> {
    tokio::spawn(async move {
        let config = &cluster.0.config;
        let every = (config.heartbeat_ttl / 3)
            .min(config.lease_ttl / 5)
            .max(Duration::from_millis(100));
        let ticker = || {
            let mut ticks = tokio::time::interval(every);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            ticks
        };
        let (mut liveness, mut pulls_tick) = (ticker(), ticker());
        let keep_alive = async {
            loop {
                tokio::select! {
                    () = stop.cancelled() => break,
                    _ = liveness.tick() => cluster.keep_alive().await,
                }
            }
        };
        let keep_pulls = async {
            loop {
                tokio::select! {
                    () = stop.cancelled() => break,
                    _ = pulls_tick.tick() => cluster.tend_pulls().await,
                }
            }
        };
        tokio::join!(keep_alive, keep_pulls);
        // Bounded: with Redis down, each call would wait for its own timeout.
        let leave = tokio::time::timeout(super::CALL_TIMEOUT, cluster.leave());
        if leave.await.is_err() {
            warn!("cluster: leaving timed out; the leases and heartbeat expire by themselves");
        }
    })
}

impl Cluster {
    /// Leases and heartbeat. Nothing is decided without the loops' answer (a dead loop's
    /// streams are not "without a publisher").
    async fn keep_alive(&self) {
        let Ok(streams) = self.0.media.streams().await else {
            return;
        };
        self.keep_claims(&streams).await;
        self.heartbeat(&streams).await;
        self.refresh_nodes().await;
    }

    /// Reads the live nodes into the node table (a failed read keeps the old one).
    async fn refresh_nodes(&self) {
        if let Ok(nodes) = self.noted(self.0.keeper.nodes().await) {
            let mut table = self.nodes();
            table.urls = nodes.into_iter().map(|(tag, n)| (tag, n.url)).collect();
            table.dead.clear();
            table.refreshed = Some(Instant::now());
        }
    }

    async fn tend_pulls(&self) {
        if let Ok(streams) = self.0.media.streams().await {
            self.keep_pulls(&streams).await;
        }
    }

    async fn heartbeat(&self, streams: &[StreamInfo]) {
        let record = NodeRecord {
            url: self.0.config.node_url.clone(),
            sessions: self.0.media.stats().borrow().sessions,
            streams: streams.len(),
            at: 0,
            mac: String::new(),
        };
        let ttl = self.0.config.heartbeat_ttl;
        let node = format!("{:04x}", self.0.tag);
        match self.noted(self.0.keeper.heartbeat(self.0.tag, &record, ttl).await) {
            Ok(true) if !self.0.joined.swap(true, Ordering::Relaxed) => {
                info!(%node, url = %record.url, "cluster: heartbeat up, node joined");
            }
            Ok(false) => error!(
                %node,
                "cluster: another live node has this node's tag; restart this node"
            ),
            Ok(true) => {}
            Err(_) => self.0.joined.store(false, Ordering::Relaxed),
        }
    }

    /// Renews the lease of every stream this node publishes; releases those it no longer does;
    /// fences itself out of those it could not renew in time.
    async fn keep_claims(&self, streams: &[StreamInfo]) {
        let claims: Vec<(StreamName, Claim)> = self
            .state()
            .claims
            .iter()
            .map(|(s, c)| (s.clone(), c.clone()))
            .collect();
        let config = &self.0.config;
        for (stream, claim) in claims {
            let now = Instant::now();
            // Not renewed in time without having seen Redis fail: this node was frozen (or its
            // clock stalled). Another node may hold the stream by now; this one must not
            // serve it (the monotonic clock counts the time it was stopped).
            if !claim.suspended && now.duration_since(claim.renewed) > self.fence_after() {
                self.fence(&stream, "its lease was not renewed in time")
                    .await;
                continue;
            }
            let publishing = streams
                .iter()
                .any(|i| i.stream == stream.as_str() && i.has_local_publisher());
            // The POST that took the lease creates its publisher just after.
            let starting = now.duration_since(claim.taken) < config.lease_ttl / 2;
            if !publishing && !starting {
                self.release(&stream, &claim).await;
                continue;
            }
            self.renew(&stream, &claim, now).await;
        }
    }

    /// Gives the lease of `stream` back (its publisher is gone): forgotten here first, and only
    /// if no POST took it again since the snapshot `claim`.
    async fn release(&self, stream: &StreamName, claim: &Claim) {
        let unchanged = {
            let mut state = self.state();
            let same = state.claims.get(stream).map(|c| c.taken) == Some(claim.taken);
            if same {
                state.claims.remove(stream);
            }
            same
        };
        if !unchanged {
            return;
        }
        let released = self
            .0
            .keeper
            .release(stream.as_str(), self.0.tag, claim.epoch);
        let _ = self.noted(released.await);
        info!(%stream, epoch = claim.epoch, "cluster: no publisher left, lease released");
    }

    /// Renews the lease of `stream` (held as `claim`).
    async fn renew(&self, stream: &StreamName, claim: &Claim, now: Instant) {
        let ttl = self.0.config.lease_ttl;
        let renewed = self
            .0
            .keeper
            .renew(stream.as_str(), self.0.tag, claim.epoch, ttl);
        match self.noted(renewed.await) {
            Ok(true) => self.update(stream, |c| {
                c.renewed = now;
                c.suspended = false;
            }),
            // Not ours any more: Redis came back empty or the lease expired during an outage,
            // or a POST here re-took it just as this tick released it. Take it again if nobody
            // else did; fence only if another node holds it. (A node that slept past its lease
            // was fenced before any renewal.)
            Ok(false) => self.retake(stream).await,
            Err(_) => {
                if !claim.suspended {
                    warn!(%stream, "cluster: lease not renewed (Redis unreachable); the \
                           publisher keeps flowing, pulls of it are refused meanwhile");
                }
                self.update(stream, |c| c.suspended = true);
            }
        }
    }

    async fn retake(&self, stream: &StreamName) {
        let ttl = self.0.config.lease_ttl;
        let acquired = self.noted(
            self.0
                .keeper
                .acquire(stream.as_str(), self.0.tag, ttl)
                .await,
        );
        match acquired {
            Ok(Acquired::Mine(epoch)) => {
                info!(%stream, epoch, "cluster: lease taken again");
                self.update(stream, |c| {
                    c.epoch = epoch;
                    c.renewed = Instant::now();
                    c.suspended = false;
                });
            }
            Ok(Acquired::Theirs(_)) => self.fence(stream, "another node holds its lease").await,
            Err(_) => {}
        }
    }

    fn update(&self, stream: &StreamName, f: impl FnOnce(&mut Claim)) {
        if let Some(claim) = self.state().claims.get_mut(stream) {
            f(claim);
        }
    }

    /// Drops this node's claim on `stream` and ends its local publisher: it is no longer the
    /// stream's. Its local viewers stay; the keeper pulls the stream for them from the new
    /// holder, if there is one.
    async fn fence(&self, stream: &StreamName, why: &str) {
        let claim = self.state().claims.remove(stream);
        let epoch = claim.map(|c| c.epoch);
        warn!(%stream, ?epoch, reason = why, "cluster: fenced out of the stream");
        let _ = self.0.media.end_publisher(stream, EndReason::Fenced).await;
        // Still ours in Redis (compare-and-delete): free it, so nobody is sent here meanwhile.
        if let Some(epoch) = epoch {
            let released = self.0.keeper.release(stream.as_str(), self.0.tag, epoch);
            let _ = self.noted(released.await);
        }
    }

    /// Gives every lease and the heartbeat up (shutdown).
    async fn leave(&self) {
        let claims: Vec<(StreamName, u64)> = self
            .state()
            .claims
            .drain()
            .map(|(s, c)| (s, c.epoch))
            .collect();
        for (stream, epoch) in claims {
            let _ = self
                .0
                .keeper
                .release(stream.as_str(), self.0.tag, epoch)
                .await;
        }
        let pulls: Vec<String> = self
            .state()
            .pulls
            .drain()
            .map(|(_, p)| p.resource)
            .collect();
        for resource in pulls {
            self.delete_pulled(&resource).await;
        }
        let _ = self.0.keeper.forget_node(self.0.tag).await;
        info!("cluster: left (leases and heartbeat given up)");
    }
}
