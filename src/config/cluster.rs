//! Cluster mode: Redis, this node's URL, the shared secret, the TTLs.

use std::path::PathBuf;
use std::time::Duration;

use clap::Args;

use super::parse_seconds;

/// Cluster mode: Redis, this node's URL, the shared secret, the TTLs.
#[derive(Debug, Clone, Args)]
pub struct ClusterFlags {
    /// Cluster mode: the Redis (or Valkey) server that holds node liveness and stream placement
    /// (`redis://host:port/db`, `rediss://...`, `unix:///path/redis.sock`). Unset: one node,
    /// nothing shared (README: Cluster mode).
    #[arg(long, env = "WHIP_ECHO_CLUSTER_REDIS")]
    pub cluster_redis: Option<String>,

    /// A file holding --cluster-redis (a URL with a password in it).
    #[arg(
        long,
        env = "WHIP_ECHO_CLUSTER_REDIS_FILE",
        conflicts_with = "cluster_redis"
    )]
    pub cluster_redis_file: Option<PathBuf>,

    /// Cluster mode: the absolute base URL clients and the other nodes reach this node at
    /// (`https://node-a.example.com`), used in redirects and `Location`s. Default: `http://` and
    /// the bound HTTP address, which suits nodes that share a private network.
    #[arg(long, env = "WHIP_ECHO_NODE_URL")]
    pub node_url: Option<String>,

    /// Cluster mode: the secret nodes sign their pulls of each other's streams with (required
    /// with --cluster-redis; the same on every node).
    #[arg(long, env = "WHIP_ECHO_CLUSTER_SECRET")]
    pub cluster_secret: Option<String>,

    /// A file holding --cluster-secret.
    #[arg(
        long,
        env = "WHIP_ECHO_CLUSTER_SECRET_FILE",
        conflicts_with = "cluster_secret"
    )]
    pub cluster_secret_file: Option<PathBuf>,

    /// Cluster mode: seconds a node's heartbeat lives in Redis without a refresh (refreshed every
    /// third of it); a node unseen for this long is dead and its streams can be taken.
    #[arg(long, env = "WHIP_ECHO_CLUSTER_HEARTBEAT_TTL", default_value = "6",
          value_parser = parse_seconds)]
    pub cluster_heartbeat_ttl: Duration,

    /// Cluster mode: seconds a stream's lease lives without a renewal (renewed every fifth of
    /// it while its publisher is live).
    #[arg(long, env = "WHIP_ECHO_CLUSTER_LEASE_TTL", default_value = "10",
          value_parser = parse_seconds)]
    pub cluster_lease_ttl: Duration,

    /// Cluster mode: seconds an edge keeps pulling a stream from its holder after its last local
    /// viewer left.
    #[arg(long, env = "WHIP_ECHO_CLUSTER_EDGE_IDLE", default_value = "10",
          value_parser = parse_seconds)]
    pub cluster_edge_idle: Duration,
}
