//! Who is where: resource id → session, stream → publisher + viewers, and recently ended resources.
//!
//! Pure bookkeeping with no axum or webrtc types. The media loop owns the one instance, so no lock
//! guards it; every transition is a method here and unit-tested below.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use crate::session::{ResourceId, Role, StreamName};

/// How long an ended resource still answers DELETE with 200. Some clients (the `whip-whep` JS
/// library) close the peer connection first and send DELETE right after.
pub const ENDED_GRACE: Duration = Duration::from_secs(60);

/// What a resource id refers to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lookup<K> {
    /// A live session.
    Live(K),
    /// A session that ended within the grace period.
    Ended,
    /// Never existed, or ended long ago.
    Unknown,
}

#[derive(Debug)]
struct Entry<K> {
    key: K,
    role: Role,
    stream: StreamName,
}

#[derive(Debug)]
struct Stream<K> {
    publisher: Option<K>,
    viewers: Vec<K>,
}

/// The registry, generic over the media loop's session key.
#[derive(Debug)]
pub struct Registry<K> {
    resources: HashMap<ResourceId, Entry<K>>,
    streams: HashMap<StreamName, Stream<K>>,
    ended: HashMap<ResourceId, Instant>,
}

impl<K> Default for Registry<K> {
    fn default() -> Self {
        Registry {
            resources: HashMap::new(),
            streams: HashMap::new(),
            ended: HashMap::new(),
        }
    }
}

impl<K: Copy + PartialEq> Registry<K> {
    /// Number of live sessions.
    pub fn len(&self) -> usize {
        self.resources.len()
    }

    /// Whether no session is live and no stream is left.
    pub fn is_empty(&self) -> bool {
        self.resources.is_empty() && self.streams.is_empty()
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
    pub fn insert(&mut self, resource: ResourceId, key: K, role: Role, stream: StreamName) {
        let entry = self.streams.entry(stream.clone()).or_insert(Stream {
            publisher: None,
            viewers: Vec::new(),
        });
        if role.publishes() {
            entry.publisher = Some(key);
        }
        if role == Role::Viewer {
            entry.viewers.push(key);
        }
        self.resources.insert(resource, Entry { key, role, stream });
    }

    /// What `resource` refers to at `now`.
    pub fn lookup(&self, resource: &ResourceId, now: Instant) -> Lookup<K> {
        if let Some(entry) = self.resources.get(resource) {
            return Lookup::Live(entry.key);
        }
        match self.ended.get(resource) {
            Some(until) if *until > now => Lookup::Ended,
            _ => Lookup::Unknown,
        }
    }

    /// Removes a live session; it stays deletable until `now + ENDED_GRACE`. Returns the stream it
    /// belonged to.
    pub fn end(&mut self, resource: &ResourceId, now: Instant) -> Option<StreamName> {
        let entry = self.resources.remove(resource)?;
        if let Some(stream) = self.streams.get_mut(&entry.stream) {
            if entry.role.publishes() && stream.publisher == Some(entry.key) {
                stream.publisher = None;
            }
            stream.viewers.retain(|k| *k != entry.key);
            if stream.publisher.is_none() && stream.viewers.is_empty() {
                self.streams.remove(&entry.stream);
            }
        }
        self.ended.insert(*resource, now + ENDED_GRACE);
        Some(entry.stream)
    }

    /// A DELETE of an ended resource: true (and forgotten) if it was still in its grace period.
    pub fn forget_ended(&mut self, resource: &ResourceId, now: Instant) -> bool {
        matches!(self.ended.remove(resource), Some(until) if until > now)
    }

    /// Drops ended resources whose grace period is over.
    pub fn prune(&mut self, now: Instant) {
        self.ended.retain(|_, until| *until > now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(s: &str) -> StreamName {
        StreamName::parse(s).unwrap()
    }

    #[test]
    fn publisher_and_viewers_share_a_stream() {
        let mut r = Registry::default();
        let (p, v1, v2) = (
            ResourceId::random(),
            ResourceId::random(),
            ResourceId::random(),
        );
        r.insert(v1, 1, Role::Viewer, name("s"));
        assert_eq!(r.publisher(&name("s")), None);
        r.insert(p, 2, Role::Publisher, name("s"));
        r.insert(v2, 3, Role::Viewer, name("s"));
        assert_eq!(r.publisher(&name("s")), Some(2));
        assert_eq!(r.viewers(&name("s")), &[1, 3]);
        assert_eq!(r.len(), 3);
    }

    #[test]
    fn ended_resources_are_deletable_during_grace() {
        let t0 = Instant::now();
        let mut r = Registry::default();
        let p = ResourceId::random();
        r.insert(p, 1, Role::Echo, name("s"));
        assert_eq!(r.lookup(&p, t0), Lookup::Live(1));
        assert_eq!(r.end(&p, t0), Some(name("s")));
        assert!(r.is_empty());
        assert_eq!(r.lookup(&p, t0), Lookup::Ended);
        assert_eq!(r.lookup(&p, t0 + ENDED_GRACE), Lookup::Unknown);
        assert!(r.forget_ended(&p, t0));
        assert!(!r.forget_ended(&p, t0));
        assert_eq!(r.lookup(&p, t0), Lookup::Unknown);
    }

    #[test]
    fn viewers_keep_the_stream_when_the_publisher_leaves() {
        let t0 = Instant::now();
        let mut r = Registry::default();
        let (p, v) = (ResourceId::random(), ResourceId::random());
        r.insert(p, 1, Role::Publisher, name("s"));
        r.insert(v, 2, Role::Viewer, name("s"));
        r.end(&p, t0);
        assert_eq!(r.publisher(&name("s")), None);
        assert_eq!(r.viewers(&name("s")), &[2]);
        r.end(&v, t0);
        assert!(r.is_empty());
        r.prune(t0 + ENDED_GRACE);
        assert!(r.ended.is_empty());
    }
}
