//! Cluster mode (`--cluster-redis`): several whip-echo nodes behind any load balancer, stream
//! placement in Redis. Single-node mode, the default, never builds any of this.
//!
//! - **Liveness** (`keeper.rs`): each node refreshes a heartbeat key (its URL and load) with a
//!   short TTL; a node whose key expired is dead.
//! - **Placement**: the node of a stream's publisher holds its lease (`store.rs`: taken
//!   atomically when free, ours, or held by a dead node; renewed while the publisher is live;
//!   released by compare-and-delete) with a fencing epoch. A WHIP POST on another node gets 307
//!   to the holder (RFC 9725 §4.5). A node that could not renew in time (it was frozen, or cut off)
//!   drops its claim and ends its publisher ([`EndReason::Fenced`]).
//! - **Resources**: ids carry the node's tag ([`ResourceId::node_tag`]); the 201 `Location` is
//!   absolute and names the node, and a PATCH, DELETE or GET that lands elsewhere is forwarded.
//! - **Pull** (`pull.rs`): a WHEP viewer is served where it lands; a node that does not hold
//!   the stream pulls it once from the holder (a WHEP session of its own, signed with the cluster
//!   secret and the epoch: `token.rs`) and fans it out locally.
//!
//! Ownership: [`Cluster`] is a cheap handle; the claims and pulls sit behind one `std` mutex
//! held only for map updates, never across an await. The keeper task is owned by the server and
//! stops with it (releasing its leases and its heartbeat).

mod config;
mod joining;
mod keeper;
mod nodes;
mod pull;
pub mod store;
pub mod token;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tracing::info;

pub use config::ClusterConfig;
pub use joining::Joining;
pub use keeper::spawn_keeper;
use nodes::NodeTable;
pub use nodes::{NODE_LOOKUPS_PER_SECOND, NODE_LOOKUP_BURST};
use store::{Acquired, Store};

use crate::media::MediaHandle;
use crate::session::{ResourceId, StreamName};

/// How long a node waits for Redis, or for another node, before it answers 503 or 502.
pub(crate) const CALL_TIMEOUT: Duration = Duration::from_secs(2);

/// Logs (at most every 10 s) that node `tag`'s record in Redis was not taken: not signed with
/// this node's cluster secret, or too old. Nothing is sent to its URL; a stream it "holds" gets
/// 503 until its lease expires.
pub(crate) fn unverified_record(tag: u16) {
    static LAST: AtomicU64 = AtomicU64::new(0);
    if crate::ops::telemetry::once_every(&LAST, 10) {
        tracing::error!(
            node = format!("{tag:04x}"),
            "cluster: a node record in Redis is not signed with this node's --cluster-secret, or \
             is stale: ignored (every node needs the same secret, this version, and a synchronised clock)"
        );
    }
}

/// Where a new publisher of a stream goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Placement {
    /// Here: this node holds the stream's lease; `taken_now` when this call took it.
    Local {
        /// Whether the lease was free (or its holder dead) until this call.
        taken_now: bool,
    },
    /// To the live holder at this base URL (307).
    Redirect(String),
}

/// The cluster's Redis cannot be reached, so this node cannot decide.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoreDown;

/// Why a request on another node's resource cannot reach that node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unreachable {
    /// The node that minted it is dead (no signed heartbeat): its sessions died with it.
    Dead,
    /// Redis cannot be reached, so this node cannot tell.
    StoreDown,
    /// The tag is unknown here and the lookups of unknown tags are spent for now.
    Busy,
}

/// Why a pull of a stream from this node is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PullRefused {
    /// Not signed with the cluster secret for this stream.
    BadToken,
    /// Not at this node's current epoch of the stream.
    Stale,
}

/// This node's claim on a stream it holds.
#[derive(Debug, Clone)]
struct Claim {
    epoch: u64,
    /// The last successful renewal (or the acquisition), on the monotonic clock.
    renewed: Instant,
    /// When this node took the lease (a publisher is created just after).
    taken: Instant,
    /// Renewals failed for want of Redis: the claim is not authoritative (pulls are refused)
    /// but the publisher keeps flowing; it is re-taken, or fenced, when Redis answers.
    suspended: bool,
}

/// This node's pull of a stream from its holder.
#[derive(Debug, Clone)]
struct Pull {
    /// The holder's tag and epoch the pull was made at (both: an epoch counter lost with a
    /// Redis that restarted empty starts again at 1).
    holder: u16,
    epoch: u64,
    /// The local publisher session that is the pull.
    local: ResourceId,
    /// The pull's resource URL at the holder.
    resource: String,
    /// The holder's base URL.
    holder_url: String,
    /// Since when the stream has had no local viewer.
    idle_since: Option<Instant>,
}

#[derive(Debug, Default)]
struct State {
    claims: HashMap<StreamName, Claim>,
    pulls: HashMap<StreamName, Pull>,
    /// The nonces of pull tokens taken, with their expiry (Unix seconds): a token is taken once.
    /// Only valid tokens enter, and each leaves when it can no longer verify (its 10 s and the
    /// clock skew allowed).
    pull_nonces: HashMap<u64, u64>,
}

#[derive(Debug)]
struct Inner {
    config: ClusterConfig,
    tag: u16,
    /// Redis for what requests ask (placement, lookups).
    store: Store,
    /// Redis for the keeper alone (heartbeat, renewals, the node table): its own connection.
    keeper: Store,
    /// The media plane whose streams it places, pulls and fences.
    media: MediaHandle,
    nodes: Mutex<NodeTable>,
    http: reqwest::Client,
    state: Mutex<State>,
    /// One pull of a stream is set up at a time (a burst of viewers makes one pull), each
    /// stream's apart (a slow holder holds up only its own streams' viewers). An entry lives
    /// while someone waits on it (`pull::PullTurn`).
    pulling: Mutex<HashMap<StreamName, Arc<tokio::sync::Mutex<()>>>>,
    redis_errors: AtomicU64,
    redis_ok: AtomicBool,
    /// Whether the heartbeat is up (logged when it comes up).
    joined: AtomicBool,
}

/// The cluster as this node takes part in it: cheap to clone.
#[derive(Debug, Clone)]
pub struct Cluster(Arc<Inner>);

/// What `/api/streams` shows of the cluster.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct ClusterView {
    /// This node's tag (4 hex digits; the top of its resource ids).
    pub node: String,
    /// This node's base URL.
    pub node_url: String,
    /// Whether Redis answered the last call.
    pub redis_ok: bool,
    /// Failed Redis calls since start.
    pub redis_errors: u64,
    /// Streams this node holds, with their epochs.
    pub holds: Vec<(String, u64)>,
    /// Streams this node pulls from their holders (they are its pulls): stream, epoch, holder.
    pub pulls: Vec<(String, u64, String)>,
}

impl Cluster {
    /// This node's tag.
    pub fn tag(&self) -> u16 {
        self.0.tag
    }

    /// This node's base URL.
    pub fn node_url(&self) -> &str {
        &self.0.config.node_url
    }

    /// The absolute URL of `path` on this node.
    pub fn url_of(&self, path: &str) -> String {
        format!("{}{path}", self.0.config.node_url)
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.0.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Counts a store call's outcome (for `/metrics` and `/api/streams`).
    fn noted<T>(&self, result: Result<T, store::StoreError>) -> Result<T, store::StoreError> {
        match &result {
            Ok(_) => self.0.redis_ok.store(true, Ordering::Relaxed),
            Err(e) => {
                self.0.redis_errors.fetch_add(1, Ordering::Relaxed);
                if self.0.redis_ok.swap(false, Ordering::Relaxed) {
                    tracing::warn!(error = %e, "cluster store unreachable");
                }
            }
        }
        result
    }

    /// Where a new publisher of `stream` goes: here (this node holds, or has just taken, the
    /// lease) or to the live holder.
    pub async fn place_publisher(&self, stream: &StreamName) -> Result<Placement, StoreDown> {
        let acquired = self
            .noted(
                self.0
                    .store
                    .acquire(stream.as_str(), self.0.tag, self.0.config.lease_ttl)
                    .await,
            )
            .map_err(|_| StoreDown)?;
        match acquired {
            Acquired::Mine(epoch) => {
                let now = Instant::now();
                let mut state = self.state();
                let taken_now = state.claims.get(stream).map(|c| c.epoch) != Some(epoch);
                if taken_now {
                    info!(%stream, epoch, "cluster: took the stream's lease");
                }
                state.claims.insert(
                    stream.clone(),
                    Claim {
                        epoch,
                        renewed: now,
                        taken: now,
                        suspended: false,
                    },
                );
                // A pull of a stream this node now publishes itself is over (the new publisher
                // replaces its session).
                state.pulls.remove(stream);
                Ok(Placement::Local { taken_now })
            }
            Acquired::Theirs(holder) => match holder.url {
                Some(url) => Ok(Placement::Redirect(url)),
                // The script only answers "theirs" for a live holder.
                None => Err(StoreDown),
            },
        }
    }

    /// Gives back the lease of `stream` that a POST took and could not use (its offer was
    /// refused after placement).
    pub async fn abandon(&self, stream: &StreamName) {
        let claim = self.state().claims.remove(stream);
        if let Some(claim) = claim {
            let released = self
                .0
                .store
                .release(stream.as_str(), self.0.tag, claim.epoch);
            let _ = self.noted(released.await);
        }
    }

    /// Whether `token` lets its bearer pull `stream` from this node: a valid pull token of a live
    /// node of the cluster, not taken before ([`PullRefused::BadToken`] otherwise), at the epoch
    /// of this node's current, authoritative claim ([`PullRefused::Stale`] otherwise: the
    /// puller read an older lease, or this node lost or could not renew it).
    pub async fn check_pull(&self, stream: &StreamName, token: &str) -> Result<(), PullRefused> {
        let now = std::time::SystemTime::now();
        let secret = &self.0.config.secret;
        let pull = token::verify(secret, stream.as_str(), self.0.tag, token, now)
            .ok_or(PullRefused::BadToken)?;
        // The puller is a node with a signed heartbeat (a token is bound to its tag).
        if self.url_of_node(pull.puller).await.is_err() {
            return Err(PullRefused::BadToken);
        }
        let epoch = pull.epoch;
        let mut state = self.state();
        let oldest = token::unix(now).saturating_sub(token::CLOCK_SKEW.as_secs());
        state.pull_nonces.retain(|_, expires| *expires >= oldest);
        if state.pull_nonces.insert(pull.nonce, pull.expires).is_some() {
            return Err(PullRefused::BadToken);
        }
        let claim = state.claims.get(stream).ok_or(PullRefused::Stale)?;
        let fresh = claim.renewed.elapsed() < self.fence_after();
        (claim.epoch == epoch && !claim.suspended && fresh)
            .then_some(())
            .ok_or(PullRefused::Stale)
    }

    /// A claim not renewed for this long is dropped: three quarters of the shorter of the two
    /// TTLs, since another node may take the stream once either the lease or this node's
    /// heartbeat (both refreshed by the keeper's one timer) has expired. With the defaults
    /// (heartbeat 6 s, lease 10 s, a tick every 2 s): 4.5 s, so one late tick is tolerated.
    fn fence_after(&self) -> Duration {
        let config = &self.0.config;
        config.heartbeat_ttl.min(config.lease_ttl) * 3 / 4
    }

    /// The base URL of the node that minted `resource`, when it is another live node; `None`
    /// when it is this one.
    pub async fn owner_of(&self, resource: &ResourceId) -> Result<Option<String>, Unreachable> {
        let tag = resource.node_tag();
        if tag == self.0.tag {
            return Ok(None);
        }
        self.url_of_node(tag).await.map(Some)
    }

    /// The mark this node puts on a request it forwards for `resource` to the resource's node.
    pub fn forward_mark(&self, resource: &ResourceId) -> String {
        let now = std::time::SystemTime::now();
        token::mint_forward(&self.0.config.secret, &resource.to_string(), now)
    }

    /// Whether `mark` is another node's valid mark of a request forwarded for `resource`.
    pub fn is_forwarded(&self, resource: &ResourceId, mark: &str) -> bool {
        let now = std::time::SystemTime::now();
        token::verify_forward(&self.0.config.secret, &resource.to_string(), mark, now)
    }

    /// The client of node-to-node calls (forwarded requests, pulls).
    pub fn http(&self) -> &reqwest::Client {
        &self.0.http
    }

    /// What `/api/streams` shows of the cluster.
    pub fn view(&self) -> ClusterView {
        let state = self.state();
        let mut holds: Vec<(String, u64)> = state
            .claims
            .iter()
            .map(|(s, c)| (s.to_string(), c.epoch))
            .collect();
        let mut pulls: Vec<(String, u64, String)> = state
            .pulls
            .iter()
            .map(|(s, p)| (s.to_string(), p.epoch, p.holder_url.clone()))
            .collect();
        holds.sort();
        pulls.sort();
        ClusterView {
            node: format!("{:04x}", self.0.tag),
            node_url: self.0.config.node_url.clone(),
            redis_ok: self.0.redis_ok.load(Ordering::Relaxed),
            redis_errors: self.0.redis_errors.load(Ordering::Relaxed),
            holds,
            pulls,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::rate::TokenBucket;
    use nodes::Known;
    use std::net::SocketAddr;
    use std::time::SystemTime;

    fn config(args: &[&str]) -> Config {
        use clap::Parser;
        Config::parse_from(std::iter::once("whip-echo").chain(args.iter().copied()))
    }

    #[test]
    fn cluster_settings_come_from_the_flags() {
        let bound: SocketAddr = "10.0.0.2:8080".parse().unwrap();
        assert!(ClusterConfig::from_config(&config(&[]), Some(bound))
            .unwrap()
            .is_none());
        let redis = ["--cluster-redis", "redis://r:6379"];
        let no_secret = ClusterConfig::from_config(&config(&redis), Some(bound));
        assert!(no_secret.unwrap_err().contains("--cluster-secret"));
        let with = |extra: &[&str]| {
            let args: Vec<&str> = redis
                .iter()
                .chain(&["--cluster-secret", "s"])
                .chain(extra)
                .copied()
                .collect();
            ClusterConfig::from_config(&config(&args), Some(bound))
        };
        assert_eq!(with(&[]).unwrap().unwrap().node_url, "http://10.0.0.2:8080");
        let named = with(&["--node-url", "https://a.example.com/"])
            .unwrap()
            .unwrap();
        assert_eq!(named.node_url, "https://a.example.com");
        assert!(with(&["--node-url", "a.example.com"]).is_err());
        assert!(with(&["--node-url", "ftp://a.example.com"]).is_err());
        let any: SocketAddr = "0.0.0.0:8080".parse().unwrap();
        let args = [redis[0], redis[1], "--cluster-secret", "s"];
        let unbound = ClusterConfig::from_config(&config(&args), Some(any));
        assert!(unbound.unwrap_err().contains("--node-url"));
    }

    #[test]
    fn the_node_table_answers_what_it_knows_and_budgets_lookups_of_the_rest() {
        let mut table = NodeTable::new();
        let now = Instant::now();
        table.urls.insert(1, "http://a".into());
        table.dead.insert(2);
        let fresh_for = Duration::from_secs(6);
        // Never read: nothing in it is trusted.
        assert_eq!(table.find(1, now, fresh_for), Known::Ask);
        table.refreshed = Some(now);
        table.lookups = TokenBucket::full(NODE_LOOKUP_BURST, now);
        let asks = (3..1000)
            .filter(|&tag| table.find(tag, now, fresh_for) == Known::Ask)
            .count();
        assert_eq!(asks, NODE_LOOKUP_BURST as usize);
        assert_eq!(table.find(1000, now, fresh_for), Known::OverBudget);
        // Known tags cost nothing, spent budget or not.
        assert_eq!(
            table.find(1, now, fresh_for),
            Known::Live("http://a".into())
        );
        assert_eq!(table.find(2, now, fresh_for), Known::Dead);
        let later = now + Duration::from_secs(1);
        assert_eq!(table.find(1000, later, fresh_for), Known::Ask);
        // Not read for longer than a heartbeat TTL (Redis down): its nodes may be gone.
        let stale = now + Duration::from_secs(7);
        assert_eq!(table.find(1, stale, fresh_for), Known::Ask);
    }

    #[tokio::test]
    async fn a_frozen_claim_is_dropped_before_its_lease_expires() {
        let c = Joining::new(ClusterConfig {
            redis: "redis://127.0.0.1:1".into(),
            node_url: "http://127.0.0.1:1".into(),
            secret: "s".into(),
            heartbeat_ttl: Duration::from_secs(6),
            lease_ttl: Duration::from_secs(10),
            edge_idle: Duration::from_secs(10),
        })
        .unwrap()
        .with_media(MediaHandle::detached());
        // Heartbeat 6 s (the shorter TTL): dropped after 4.5 s without a renewal.
        assert_eq!(c.fence_after(), Duration::from_millis(4500));
        let stream = StreamName::parse("s").unwrap();
        let now = Instant::now();
        let claim = |renewed, suspended| Claim {
            epoch: 3,
            renewed,
            taken: now,
            suspended,
        };
        let mint = |secret, epoch| token::mint(secret, "s", c.tag(), 7, epoch, SystemTime::now());
        let token = mint("s", 3);
        // The puller (tag 7) is a live node.
        {
            let mut nodes = c.nodes();
            nodes.refreshed = Some(now);
            nodes.urls.insert(7, "http://127.0.0.1:2".into());
        }
        c.state().claims.insert(stream.clone(), claim(now, false));
        assert_eq!(c.check_pull(&stream, &token).await, Ok(()));
        assert_eq!(
            c.check_pull(&stream, &token).await,
            Err(PullRefused::BadToken),
            "a token is taken once"
        );
        assert_eq!(
            c.check_pull(&stream, &mint("s", 2)).await,
            Err(PullRefused::Stale)
        );
        assert_eq!(
            c.check_pull(&stream, &mint("x", 3)).await,
            Err(PullRefused::BadToken)
        );
        let elsewhere = token::mint("s", "s", c.tag() ^ 1, 7, 3, SystemTime::now());
        assert_eq!(
            c.check_pull(&stream, &elsewhere).await,
            Err(PullRefused::BadToken)
        );
        c.state().claims.insert(stream.clone(), claim(now, true));
        assert_eq!(
            c.check_pull(&stream, &mint("s", 3)).await,
            Err(PullRefused::Stale)
        );
        if let Some(old) = now.checked_sub(Duration::from_secs(5)) {
            c.state().claims.insert(stream.clone(), claim(old, false));
            assert_eq!(
                c.check_pull(&stream, &mint("s", 3)).await,
                Err(PullRefused::Stale)
            );
        }
    }
}
