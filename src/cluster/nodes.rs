//! The live nodes as the keeper last read them: a request on another node's resource finds its
//! node here without a Redis call, and lookups of tags the table does not know are budgeted.

use std::collections::{HashMap, HashSet};
use std::sync::MutexGuard;
use std::time::{Duration, Instant};

use super::{Cluster, Unreachable};
use crate::rate::TokenBucket;

/// Lookups in Redis of node tags that the node table does not know (a node that joined since the
/// keeper's last refresh), per second, at most; beyond them a request for such a tag gets 503.
pub const NODE_LOOKUPS_PER_SECOND: f64 = 5.0;
/// Such lookups at once.
pub const NODE_LOOKUP_BURST: u32 = 10;

/// The live nodes as the keeper last read them (every tick), so that a request on another node's
/// resource costs no Redis call: a flood of made-up tags cost one each, on the connection that
/// renewed the leases, and could make the holders fence themselves.
#[derive(Debug)]
pub(super) struct NodeTable {
    /// When the keeper last read it; a table not read for a heartbeat TTL (Redis unreachable)
    /// is not trusted: its nodes may have died since.
    pub(super) refreshed: Option<Instant>,
    /// Base URL by tag.
    pub(super) urls: HashMap<u16, String>,
    /// Tags looked up since the last refresh and found without a (signed) heartbeat; at most
    /// the 65,536 tags there are.
    pub(super) dead: HashSet<u16>,
    /// The budget of lookups of tags in neither.
    pub(super) lookups: TokenBucket,
}

/// What the node table says of a tag.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Known {
    Live(String),
    Dead,
    /// Not known: look it up in Redis.
    Ask,
    /// Not known, and the lookup budget is spent.
    OverBudget,
}

impl NodeTable {
    pub(super) fn new() -> Self {
        NodeTable {
            refreshed: None,
            urls: HashMap::new(),
            dead: HashSet::new(),
            lookups: TokenBucket::full(NODE_LOOKUP_BURST, Instant::now()),
        }
    }

    /// What the table says of `tag` at `now`, if it was read within `fresh_for`.
    pub(super) fn find(&mut self, tag: u16, now: Instant, fresh_for: Duration) -> Known {
        let fresh = self
            .refreshed
            .is_some_and(|at| now.saturating_duration_since(at) <= fresh_for);
        if fresh {
            if let Some(url) = self.urls.get(&tag) {
                return Known::Live(url.clone());
            }
            if self.dead.contains(&tag) {
                return Known::Dead;
            }
        }
        match self
            .lookups
            .take(now, NODE_LOOKUPS_PER_SECOND, NODE_LOOKUP_BURST)
        {
            Ok(()) => Known::Ask,
            Err(_) => Known::OverBudget,
        }
    }
}

impl Cluster {
    /// The base URL of live node `tag`: from the node table; Redis is asked only about a tag the
    /// table does not know (or when the table is stale), within [`NODE_LOOKUPS_PER_SECOND`].
    pub(super) async fn url_of_node(&self, tag: u16) -> Result<String, Unreachable> {
        let fresh_for = self.0.config.heartbeat_ttl;
        match self.nodes().find(tag, Instant::now(), fresh_for) {
            Known::Live(url) => return Ok(url),
            Known::Dead => return Err(Unreachable::Dead),
            Known::OverBudget => return Err(Unreachable::Busy),
            Known::Ask => {}
        }
        match self.noted(self.0.store.node(tag).await) {
            Ok(Some(node)) => {
                self.nodes().urls.insert(tag, node.url.clone());
                Ok(node.url)
            }
            Ok(None) => {
                self.nodes().dead.insert(tag);
                Err(Unreachable::Dead)
            }
            Err(_) => Err(Unreachable::StoreDown),
        }
    }

    pub(super) fn nodes(&self) -> MutexGuard<'_, NodeTable> {
        self.0.nodes.lock().unwrap_or_else(|e| e.into_inner())
    }
}
