//! Who is where: resource id → session, stream → publisher + viewers, and recently ended resources.
//!
//! Pure bookkeeping with no axum or webrtc types. The media loop owns the one instance, so no lock
//! guards it; every transition is a method here and unit-tested below.

use std::collections::HashMap;
use std::hash::Hash;
use std::time::{Duration, Instant};

use crate::session::{EndReason, ResourceId, Role, StreamName};

/// How long an ended resource still answers DELETE with 200. Some clients (the `whip-whep` JS
/// library) close the peer connection first and send DELETE right after.
pub const ENDED_GRACE: Duration = Duration::from_secs(60);

/// What a resource id refers to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lookup<K> {
    /// A live session.
    Live(K),
    /// A session that ended within the grace period, and why.
    Ended(EndReason),
    /// Never existed, or ended long ago.
    Unknown,
}

/// What the registry knows of a live session: the one place that holds its resource id, role and
/// stream (the media loop's `Conn` holds only protocol state).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// The capability naming the session.
    pub resource: ResourceId,
    /// What the session does with its stream.
    pub role: Role,
    /// The stream it publishes or plays.
    pub stream: StreamName,
}

#[derive(Debug)]
struct Stream<K> {
    publisher: Option<K>,
    viewers: Vec<K>,
}

/// The registry, generic over the media loop's session key.
#[derive(Debug)]
pub struct Registry<K> {
    /// Keyed by the media loop's own keys: a fast non-keyed hash is safe (looked up per packet).
    sessions: rustc_hash::FxHashMap<K, Entry>,
    resources: HashMap<ResourceId, K>,
    streams: HashMap<StreamName, Stream<K>>,
    ended: HashMap<ResourceId, Ended>,
}

/// A resource whose session ended: until when it is remembered, why it ended, and whether a
/// DELETE still answers 200 (once, RFC 9725 §4.4; after that, 404).
#[derive(Debug, Clone, Copy)]
struct Ended {
    until: Instant,
    reason: EndReason,
    deletable: bool,
}

impl<K> Default for Registry<K> {
    fn default() -> Self {
        Registry {
            sessions: rustc_hash::FxHashMap::default(),
            resources: HashMap::new(),
            streams: HashMap::new(),
            ended: HashMap::new(),
        }
    }
}

impl<K: Copy + Eq + Hash> Registry<K> {
    /// Number of live sessions.
    pub fn len(&self) -> usize {
        self.sessions.len()
    }

    /// Every stream: its name, its publisher and its viewers.
    pub fn streams_iter(&self) -> impl Iterator<Item = (&StreamName, Option<K>, &[K])> {
        self.streams
            .iter()
            .map(|(name, s)| (name, s.publisher, s.viewers.as_slice()))
    }

    /// Number of streams with a publisher or a viewer.
    pub fn streams(&self) -> usize {
        self.streams.len()
    }

    /// Whether no session is live and no stream is left.
    pub fn is_empty(&self) -> bool {
        self.sessions.is_empty() && self.resources.is_empty() && self.streams.is_empty()
    }

    /// The live session `key`.
    pub fn session(&self, key: K) -> Option<&Entry> {
        self.sessions.get(&key)
    }

    /// The live publisher of `stream`, if any.
    pub fn publisher(&self, stream: &StreamName) -> Option<K> {
        self.streams.get(stream).and_then(|s| s.publisher)
    }

    /// The viewers of `stream`.
    pub fn viewers(&self, stream: &StreamName) -> &[K] {
        self.streams.get(stream).map_or(&[], |s| &s.viewers)
    }

    /// Adds a live session. A publishing role takes the stream's publisher slot; the caller has
    /// checked with [`Registry::publisher`] that it was free.
    pub fn insert(&mut self, key: K, entry: Entry) {
        let stream = self.streams.entry(entry.stream.clone()).or_insert(Stream {
            publisher: None,
            viewers: Vec::new(),
        });
        if entry.role.publishes() {
            stream.publisher = Some(key);
        }
        if entry.role == Role::Viewer {
            stream.viewers.push(key);
        }
        self.resources.insert(entry.resource, key);
        self.sessions.insert(key, entry);
    }

    /// What `resource` refers to at `now`.
    pub fn lookup(&self, resource: &ResourceId, now: Instant) -> Lookup<K> {
        if let Some(key) = self.resources.get(resource) {
            return Lookup::Live(*key);
        }
        match self.ended.get(resource) {
            Some(ended) if ended.until > now => Lookup::Ended(ended.reason),
            _ => Lookup::Unknown,
        }
    }

    /// Removes the live session `key`, which ended for `reason`; its resource stays deletable
    /// (and says why it ended) until `now + ENDED_GRACE`.
    pub fn end(&mut self, key: K, now: Instant, reason: EndReason) -> Option<Entry> {
        let entry = self.sessions.remove(&key)?;
        self.resources.remove(&entry.resource);
        if let Some(stream) = self.streams.get_mut(&entry.stream) {
            if stream.publisher == Some(key) {
                stream.publisher = None;
            }
            stream.viewers.retain(|k| *k != key);
            if stream.publisher.is_none() && stream.viewers.is_empty() {
                self.streams.remove(&entry.stream);
            }
        }
        let ended = Ended {
            until: now + ENDED_GRACE,
            reason,
            deletable: reason != EndReason::Deleted,
        };
        self.ended.insert(entry.resource, ended);
        Some(entry)
    }

    /// A DELETE of an ended resource: true once if it was still in its grace period (it keeps
    /// saying why it ended, to GET, until the grace period is over).
    pub fn delete_ended(&mut self, resource: &ResourceId, now: Instant) -> bool {
        match self.ended.get_mut(resource) {
            Some(ended) if ended.until > now && ended.deletable => {
                ended.deletable = false;
                true
            }
            _ => false,
        }
    }

    /// Drops ended resources whose grace period is over.
    pub fn prune(&mut self, now: Instant) {
        self.ended.retain(|_, ended| ended.until > now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(s: &str) -> StreamName {
        StreamName::parse(s).unwrap()
    }

    fn entry(resource: ResourceId, role: Role, stream: &str) -> Entry {
        Entry {
            resource,
            role,
            stream: name(stream),
        }
    }

    #[test]
    fn publisher_and_viewers_share_a_stream() {
        let mut r = Registry::default();
        let (p, v1, v2) = (
            ResourceId::random(),
            ResourceId::random(),
            ResourceId::random(),
        );
        r.insert(1, entry(v1, Role::Viewer, "s"));
        assert_eq!(r.publisher(&name("s")), None);
        r.insert(2, entry(p, Role::Publisher, "s"));
        r.insert(3, entry(v2, Role::Viewer, "s"));
        assert_eq!(r.publisher(&name("s")), Some(2));
        assert_eq!(r.viewers(&name("s")), &[1, 3]);
        assert_eq!(r.len(), 3);
        assert_eq!(r.session(2), Some(&entry(p, Role::Publisher, "s")));
    }

    #[test]
    fn ended_resources_are_deletable_during_grace() {
        let t0 = Instant::now();
        let mut r = Registry::default();
        let p = ResourceId::random();
        r.insert(1, entry(p, Role::Echo, "s"));
        assert_eq!(r.lookup(&p, t0), Lookup::Live(1));
        assert_eq!(
            r.end(1, t0, EndReason::Replaced),
            Some(entry(p, Role::Echo, "s"))
        );
        assert_eq!(r.session(1), None);
        assert!(r.is_empty());
        assert_eq!(r.lookup(&p, t0), Lookup::Ended(EndReason::Replaced));
        assert_eq!(r.lookup(&p, t0 + ENDED_GRACE), Lookup::Unknown);
        assert!(r.delete_ended(&p, t0));
        assert!(!r.delete_ended(&p, t0));
        // Deleted, it still says why it ended until the grace period is over.
        assert_eq!(r.lookup(&p, t0), Lookup::Ended(EndReason::Replaced));
        r.prune(t0 + ENDED_GRACE);
        assert_eq!(r.lookup(&p, t0), Lookup::Unknown);
        // A session ended by DELETE is not deletable again.
        let q = ResourceId::random();
        r.insert(2, entry(q, Role::Echo, "s"));
        r.end(2, t0, EndReason::Deleted);
        assert!(!r.delete_ended(&q, t0));
        assert_eq!(r.lookup(&q, t0), Lookup::Ended(EndReason::Deleted));
    }

    #[test]
    fn viewers_keep_the_stream_when_the_publisher_leaves() {
        let t0 = Instant::now();
        let mut r = Registry::default();
        let (p, v) = (ResourceId::random(), ResourceId::random());
        r.insert(1, entry(p, Role::Publisher, "s"));
        r.insert(2, entry(v, Role::Viewer, "s"));
        r.end(1, t0, EndReason::Deleted);
        assert_eq!(r.publisher(&name("s")), None);
        assert_eq!(r.viewers(&name("s")), &[2]);
        r.end(2, t0, EndReason::Deleted);
        assert!(r.is_empty());
        r.prune(t0 + ENDED_GRACE);
        assert!(r.ended.is_empty());
    }
}
