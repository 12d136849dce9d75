//! The cluster's shared state in Redis (or Valkey), and nothing else: each operation is one
//! command or one Lua script, so each is atomic on the server. Keys, all with a TTL except the
//! epoch counters:
//!
//! | key                         | value                         | TTL |
//! |-----------------------------|-------------------------------|-----|
//! | `whip-echo:node:{tag}`      | JSON: URL, load               | heartbeat TTL, refreshed every third of it |
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

/// Sets the heartbeat unless another live node has the same tag: 1 set, 0 taken.
const HEARTBEAT: &str = r#"
local cur = redis.call('GET', KEYS[1])
if cur and cjson.decode(cur).url ~= ARGV[2] then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[3])
return 1
"#;

const NODE: &str = "whip-echo:node:";

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

/// The cluster's Redis connection (redis-rs's connection manager: one multiplexed connection,
/// reconnected in the background; cheap to clone).
#[derive(Clone)]
pub struct Store {
    conn: ConnectionManager,
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
    pub fn new(url: &str, timeout: Duration) -> Result<Store, StoreError> {
        let client = redis::Client::open(url)?;
        let config = redis::aio::ConnectionManagerConfig::new()
            .set_connection_timeout(Some(timeout))
            .set_response_timeout(Some(timeout))
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_secs(1));
        let conn = ConnectionManager::new_lazy_with_config(client, config)?;
        Ok(Store { conn })
    }

    /// Refreshes this node's heartbeat; `false` when another live node has its tag.
    pub async fn heartbeat(
        &self,
        tag: u16,
        record: &NodeRecord,
        ttl: Duration,
    ) -> Result<bool, StoreError> {
        let json = serde_json::to_string(record).unwrap_or_default();
        let set: i64 = Script::new(HEARTBEAT)
            .key(format!("{NODE}{tag:04x}"))
            .arg(json)
            .arg(&record.url)
            .arg(millis(ttl))
            .invoke_async(&mut self.conn.clone())
            .await?;
        Ok(set == 1)
    }

    /// Removes this node's heartbeat (it leaves the cluster).
    pub async fn forget_node(&self, tag: u16) -> Result<(), StoreError> {
        let _: i64 = self.conn.clone().del(format!("{NODE}{tag:04x}")).await?;
        Ok(())
    }

    /// The node `tag`, if its heartbeat is live.
    pub async fn node(&self, tag: u16) -> Result<Option<NodeRecord>, StoreError> {
        let json: Option<String> = self.conn.clone().get(format!("{NODE}{tag:04x}")).await?;
        Ok(json.and_then(|j| serde_json::from_str(&j).ok()))
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
        let (tag, epoch) = parse_lease(&value).unwrap_or((0, 0));
        let url = serde_json::from_str::<NodeRecord>(&node)
            .ok()
            .map(|n| n.url);
        Ok(Acquired::Theirs(Holder { tag, epoch, url }))
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
