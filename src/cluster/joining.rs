//! This node's cluster membership before the media plane exists, and the cluster it becomes.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64};
use std::sync::{Arc, Mutex};

use tracing::info;

use super::nodes::NodeTable;
use super::store::Store;
use super::{token, Cluster, ClusterConfig, Inner, State, CALL_TIMEOUT};
use crate::media::MediaHandle;

/// This node's membership before the media plane exists: its Redis connections (lazy: only
/// the URL is checked), its HTTP client and its tag, which goes into every resource id the
/// media plane mints. [`Joining::with_media`] makes it the [`Cluster`].
#[derive(Debug)]
pub struct Joining {
    config: ClusterConfig,
    tag: u16,
    store: Store,
    keeper: Store,
    http: reqwest::Client,
}

impl Joining {
    /// This node's membership with a fresh random node tag (the heartbeat claims it; a clash with a
    /// live node is reported, 1 in 65,536 per pair). Nothing is sent before the first call.
    pub fn new(config: ClusterConfig) -> Result<Joining, String> {
        // A record is as old as a tick at most while its node lives.
        let max_age = config.heartbeat_ttl + token::CLOCK_SKEW;
        let connect = || {
            Store::new(&config.redis, CALL_TIMEOUT, &config.secret, max_age).map_err(|e| {
                format!(
                    "--cluster-redis {}: {e}",
                    crate::config::redact_url(&config.redis)
                )
            })
        };
        let (store, keeper) = (connect()?, connect()?);
        let http = reqwest::Client::builder()
            .timeout(CALL_TIMEOUT)
            // RFC 9725 §4.5 redirects are for clients; between nodes a 3xx is an error.
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| format!("HTTP client: {e}"))?;
        let tag = loop {
            let tag: u16 = rand::random();
            if tag != 0 {
                break tag;
            }
        };
        info!(node = format!("{tag:04x}"), url = %config.node_url, "cluster mode");
        Ok(Joining {
            config,
            tag,
            store,
            keeper,
            http,
        })
    }

    /// This node's tag, in every resource id it mints.
    pub fn tag(&self) -> u16 {
        self.tag
    }

    /// The cluster, owning the handle of the media plane it places streams on.
    pub fn with_media(self, media: MediaHandle) -> Cluster {
        let Joining {
            config,
            tag,
            store,
            keeper,
            http,
        } = self;
        Cluster(Arc::new(Inner {
            config,
            tag,
            store,
            keeper,
            media,
            nodes: Mutex::new(NodeTable::new()),
            http,
            state: Mutex::new(State::default()),
            pulling: Mutex::new(HashMap::new()),
            redis_errors: AtomicU64::new(0),
            redis_ok: AtomicBool::new(true),
            joined: AtomicBool::new(false),
        }))
    }
}
