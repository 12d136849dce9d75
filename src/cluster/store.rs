//! The cluster's shared state in Redis (or Valkey), and nothing else: each operation is one
//! command or one Lua script, so each is atomic on the server. Keys, all with a TTL except the
//! epoch counters:
//!
//! | key                         | value                         | TTL |
//! |-----------------------------|-------------------------------|-----|
//! | `whip-echo:node:{tag}`      | JSON: URL, load, MAC          | heartbeat TTL, refreshed every third of it |
//! | `whip-echo:nodes`           | set of the tags with a heartbeat key (dead ones pruned on read) | none |
//! | `whip-echo:lease:{stream}`  | `{tag}:{epoch}` of the holder | lease TTL, renewed every fifth of it |
//! | `whip-echo:epoch`           | the fencing counter, one for all streams | none (one integer) |

use std::time::Duration;

use redis::aio::ConnectionManager;
use redis::{AsyncCommands, Script};

/// Why the store could not answer: Redis is unreachable, slow, or said no.
#[derive(Debug, thiserror::Error)]
#[error("cluster store: {0}")]
pub struct StoreError(#[from] redis::RedisError);

/// A node as its heartbeat describes it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct NodeRecord {
    /// Its base URL.
    pub url: String,
    /// Live sessions on it.
    pub sessions: usize,
    /// Streams on it.
    pub streams: usize,
    /// When it was written (Unix seconds, the writer's clock): a record is taken only while it
    /// is recent, so an old one cannot be written back.
    #[serde(default)]
    pub at: u64,
    /// Its tag, URL and time signed with the cluster secret (`token::sign_node`): whoever can
    /// write to Redis without the secret cannot send this cluster's forwarded requests, pulls
    /// or 307s to an address of their own.
    #[serde(default)]
    pub mac: String,
}

impl NodeRecord {
    /// What its MAC vouches for, as node `tag`'s.
    fn claim(&self, tag: u16) -> super::token::NodeClaim<'_> {
        super::token::NodeClaim {
            tag,
            url: &self.url,
            at: self.at,
        }
    }
}

/// Who holds a stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Holder {
    /// The holder's node tag.
    pub tag: u16,
    /// The lease's fencing epoch.
    pub epoch: u64,
    /// The holder's base URL (from its heartbeat), `None` when the holder is dead.
    pub url: Option<String>,
}

/// What taking a lease found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Acquired {
    /// This node holds the stream now, at this epoch.
    Mine(u64),
    /// A live node holds it.
    Theirs(Holder),
}

/// Takes the lease if it is free, ours, or its holder's heartbeat is gone; a new holder gets a
/// new epoch (INCR), so a node that wakes up late can tell it was replaced.
const ACQUIRE: &str = r#"
local cur = redis.call('GET', KEYS[1])
if cur then
  local holder, epoch = string.match(cur, '^(%x+):(%d+)$')
  if holder == ARGV[1] then
    redis.call('PEXPIRE', KEYS[1], ARGV[2])
    return {1, epoch, ''}
  end
  if holder then
    local node = redis.call('GET', ARGV[3] .. holder)
    if node then return {0, cur, node} end
  end
end
local epoch = redis.call('INCR', KEYS[2])
redis.call('SET', KEYS[1], ARGV[1] .. ':' .. epoch, 'PX', ARGV[2])
return {1, tostring(epoch), ''}
"#;

/// Renews the lease only if it is still exactly ours (holder and epoch).
const RENEW: &str = r#"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
"#;

/// Deletes the lease only if it is still exactly ours (compare-and-delete).
const RELEASE: &str = r#"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"#;

/// Sets the heartbeat unless another live node has the same tag: 1 set, 0 taken. The tag joins
/// the set of nodes.
const HEARTBEAT: &str = r#"
local cur = redis.call('GET', KEYS[1])
if cur and cjson.decode(cur).url ~= ARGV[2] then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[3])
redis.call('SADD', KEYS[2], ARGV[4])
return 1
"#;

/// The live nodes as `{tag, record, tag, record, ...}`; tags whose heartbeat expired leave the
/// set.
const NODES: &str = r#"
local out = {}
for _, tag in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  local record = redis.call('GET', ARGV[1] .. tag)
  if record then
    table.insert(out, tag)
    table.insert(out, record)
  else
    redis.call('SREM', KEYS[1], tag)
  end
end
return out
"#;

const NODE: &str = "whip-echo:node:";
/// The set of node tags (each with a heartbeat key, or pruned).
const NODES_SET: &str = "whip-echo:nodes";

fn lease_key(stream: &str) -> String {
    format!("whip-echo:lease:{stream}")
}

/// One counter for every stream: epochs never repeat across streams or holders, and streams
/// leave no key behind (a key per stream would be one more per name ever posted).
const EPOCH: &str = "whip-echo:epoch";

fn lease_value(tag: u16, epoch: u64) -> String {
    format!("{tag:04x}:{epoch}")
}

fn millis(d: Duration) -> u64 {
    d.as_millis().max(1) as u64
}

/// `{tag}:{epoch}` as the lease key holds it.
fn parse_lease(value: &str) -> Option<(u16, u64)> {
    let (tag, epoch) = value.split_once(':')?;
    Some((u16::from_str_radix(tag, 16).ok()?, epoch.parse().ok()?))
}

/// A Redis connection of the cluster's (redis-rs's connection manager: one multiplexed
/// connection, reconnected in the background; cheap to clone). A node has two: one for what
/// requests ask, one for its keeper's renewals, so that no flood of requests can queue up in
/// front of a renewal. Node records are signed when written and checked when read.
#[derive(Clone)]
pub struct Store {
    conn: ConnectionManager,
    secret: std::sync::Arc<str>,
    /// How old a node record may be (by its `at`).
    max_age: Duration,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Store")
    }
}

impl Store {
    /// A store for `url`, connected on first use (a node starts while Redis is down, and
    /// recovers when it returns). Each command gives up after `timeout`, so a POST that needs
    /// the store fails fast with 503 rather than hanging.
    pub fn new(
        url: &str,
        timeout: Duration,
        secret: &str,
        max_age: Duration,
    ) -> Result<Store, StoreError> {
        let client = redis::Client::open(url)?;
        let config = redis::aio::ConnectionManagerConfig::new()
            .set_connection_timeout(Some(timeout))
            .set_response_timeout(Some(timeout))
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_secs(1));
        let conn = ConnectionManager::new_lazy_with_config(client, config)?;
        Ok(Store {
            conn,
            secret: secret.into(),
            max_age,
        })
    }

    /// The record of node `tag` in `json` if its MAC is right and it is recent; `None`
    /// otherwise (not written by a node of this cluster, or written long ago).
    fn record(&self, tag: u16, json: &str) -> Option<NodeRecord> {
        let record: NodeRecord = serde_json::from_str(json).ok()?;
        let now = super::token::unix(std::time::SystemTime::now());
        let signed = super::token::verify_node(&self.secret, record.claim(tag), &record.mac);
        let recent = now.saturating_sub(record.at) <= self.max_age.as_secs();
        if !signed || !recent {
            super::unverified_record(tag);
            return None;
        }
        Some(record)
    }

    /// Refreshes this node's heartbeat; `false` when another live node has its tag.
    pub async fn heartbeat(
        &self,
        tag: u16,
        record: &NodeRecord,
        ttl: Duration,
    ) -> Result<bool, StoreError> {
        let mut signed = NodeRecord {
            at: super::token::unix(std::time::SystemTime::now()),
            ..record.clone()
        };
        signed.mac = super::token::sign_node(&self.secret, signed.claim(tag));
        let json = serde_json::to_string(&signed).unwrap_or_default();
        let set: i64 = Script::new(HEARTBEAT)
            .key(format!("{NODE}{tag:04x}"))
            .key(NODES_SET)
            .arg(json)
            .arg(&record.url)
            .arg(millis(ttl))
            .arg(format!("{tag:04x}"))
            .invoke_async(&mut self.conn.clone())
            .await?;
        Ok(set == 1)
    }

    /// Removes this node's heartbeat (it leaves the cluster).
    pub async fn forget_node(&self, tag: u16) -> Result<(), StoreError> {
        let mut conn = self.conn.clone();
        let _: i64 = conn.del(format!("{NODE}{tag:04x}")).await?;
        let _: i64 = conn.srem(NODES_SET, format!("{tag:04x}")).await?;
        Ok(())
    }

    /// The node `tag`, if its heartbeat is live (and signed).
    pub async fn node(&self, tag: u16) -> Result<Option<NodeRecord>, StoreError> {
        let json: Option<String> = self.conn.clone().get(format!("{NODE}{tag:04x}")).await?;
        Ok(json.and_then(|j| self.record(tag, &j)))
    }

    /// Every live node with a signed record, by tag: one call.
    pub async fn nodes(&self) -> Result<Vec<(u16, NodeRecord)>, StoreError> {
        let flat: Vec<String> = Script::new(NODES)
            .key(NODES_SET)
            .arg(NODE)
            .invoke_async(&mut self.conn.clone())
            .await?;
        Ok(flat
            .chunks_exact(2)
            .filter_map(|pair| {
                let tag = u16::from_str_radix(&pair[0], 16).ok()?;
                Some((tag, self.record(tag, &pair[1])?))
            })
            .collect())
    }

    /// Takes `stream`'s lease for node `tag` unless a live node holds it.
    pub async fn acquire(
        &self,
        stream: &str,
        tag: u16,
        ttl: Duration,
    ) -> Result<Acquired, StoreError> {
        let (mine, value, node): (i64, String, String) = Script::new(ACQUIRE)
            .key(lease_key(stream))
            .key(EPOCH)
            .arg(format!("{tag:04x}"))
            .arg(millis(ttl))
            .arg(NODE)
            .invoke_async(&mut self.conn.clone())
            .await?;
        if mine == 1 {
            return Ok(Acquired::Mine(value.parse().unwrap_or(0)));
        }
        let (holder, epoch) = parse_lease(&value).unwrap_or((0, 0));
        // A holder whose record does not verify is reported with no URL: nobody is sent there.
        let url = self.record(holder, &node).map(|n| n.url);
        Ok(Acquired::Theirs(Holder {
            tag: holder,
            epoch,
            url,
        }))
    }

    /// Renews `stream`'s lease held by `tag` at `epoch`; `false` when it is no longer that.
    pub async fn renew(
        &self,
        stream: &str,
        tag: u16,
        epoch: u64,
        ttl: Duration,
    ) -> Result<bool, StoreError> {
        let renewed: i64 = Script::new(RENEW)
            .key(lease_key(stream))
            .arg(lease_value(tag, epoch))
            .arg(millis(ttl))
            .invoke_async(&mut self.conn.clone())
            .await?;
        Ok(renewed == 1)
    }

    /// Gives `stream`'s lease up if it is still `tag`'s at `epoch`.
    pub async fn release(&self, stream: &str, tag: u16, epoch: u64) -> Result<(), StoreError> {
        let _: i64 = Script::new(RELEASE)
            .key(lease_key(stream))
            .arg(lease_value(tag, epoch))
            .invoke_async(&mut self.conn.clone())
            .await?;
        Ok(())
    }

    /// Who holds `stream`, if anyone (with the holder's URL if it is alive).
    pub async fn holder(&self, stream: &str) -> Result<Option<Holder>, StoreError> {
        let value: Option<String> = self.conn.clone().get(lease_key(stream)).await?;
        let Some((tag, epoch)) = value.as_deref().and_then(parse_lease) else {
            return Ok(None);
        };
        let url = self.node(tag).await?.map(|n| n.url);
        Ok(Some(Holder { tag, epoch, url }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lease_values_round_trip() {
        assert_eq!(parse_lease(&lease_value(0xbeef, 42)), Some((0xbeef, 42)));
        assert_eq!(parse_lease(&lease_value(1, 7)), Some((1, 7)));
        assert_eq!(parse_lease("zz:1"), None);
        assert_eq!(parse_lease("00ff"), None);
    }
}
