//! Cluster mode's settings, from `--cluster-*` and `--node-url`, checked once.

use std::net::SocketAddr;
use std::time::Duration;

/// Cluster settings, from `--cluster-*` and `--node-url`.
#[derive(Debug, Clone)]
pub struct ClusterConfig {
    /// The Redis URL.
    pub redis: String,
    /// This node's base URL, without a trailing slash.
    pub node_url: String,
    /// The shared secret of node-to-node pulls.
    pub secret: String,
    /// Heartbeat TTL (refreshed every third of it).
    pub heartbeat_ttl: Duration,
    /// Lease TTL (renewed every fifth of it).
    pub lease_ttl: Duration,
    /// How long a pull outlives its last local viewer.
    pub edge_idle: Duration,
}

impl ClusterConfig {
    /// The cluster settings of `config`, `None` in single-node mode. `bound` is the HTTP
    /// listener's address, the default node URL's.
    pub fn from_config(
        config: &crate::config::Config,
        bound: Option<SocketAddr>,
    ) -> Result<Option<ClusterConfig>, String> {
        let Some(redis) = &config.cluster.cluster_redis else {
            return Ok(None);
        };
        let secret = config
            .cluster
            .cluster_secret
            .clone()
            .filter(|s| !s.is_empty())
            .ok_or("--cluster-redis needs --cluster-secret (the same on every node)")?;
        let scheme = if config.tls_cert.is_some() {
            "https"
        } else {
            "http"
        };
        let node_url = match (&config.cluster.node_url, bound) {
            (Some(url), _) => url.trim_end_matches('/').to_owned(),
            (None, Some(addr)) if !addr.ip().is_unspecified() => format!("{scheme}://{addr}"),
            _ => {
                return Err(
                    "--cluster-redis needs --node-url when HTTP listens on every \
                            address (0.0.0.0 or ::)"
                        .into(),
                )
            }
        };
        let parsed =
            reqwest::Url::parse(&node_url).map_err(|e| format!("--node-url {node_url}: {e}"))?;
        if !matches!(parsed.scheme(), "http" | "https") || parsed.host().is_none() {
            return Err(format!(
                "--node-url {node_url}: not an absolute http(s) URL"
            ));
        }
        Ok(Some(ClusterConfig {
            redis: redis.clone(),
            node_url,
            secret,
            heartbeat_ttl: config.cluster.cluster_heartbeat_ttl,
            lease_ttl: config.cluster.cluster_lease_ttl,
            edge_idle: config.cluster.cluster_edge_idle,
        }))
    }
}
