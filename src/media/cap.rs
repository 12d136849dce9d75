//! Caps on what clients hold, shared by every media loop: [`SessionCap`] (live sessions in all,
//! per client and per IPv6 /48, connecting ones per client, the oldest connecting one evicted
//! when full), [`Slots`] (a count in all and per client, for the ICE-TCP connection cap), both
//! as guards given back on drop, and [`PerClient`], the per-client count behind them and the
//! HTTP connection loop.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::error::MediaError;
use crate::session::ResourceId;

/// How many of something are held, in all and by each client ([`client_key`]), under a cap of
/// each (a per-client cap of 0: none). Touched when something is taken or given back, never per
/// packet.
#[derive(Debug, Clone)]
pub(crate) struct Slots(Arc<SlotsInner>);

#[derive(Debug)]
struct SlotsInner {
    max: usize,
    max_per_client: usize,
    held: Mutex<Held>,
}

#[derive(Debug, Default)]
struct Held {
    total: usize,
    per_client: PerClient,
}

/// Which cap refused a slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Full {
    /// The cap in all.
    Total,
    /// The client's own cap.
    Client,
}

/// One slot of [`Slots`], given back when dropped.
#[derive(Debug)]
pub(crate) struct Slot {
    slots: Arc<SlotsInner>,
    client: Option<IpAddr>,
}

impl Slots {
    /// At most `max` in all, `max_per_client` (0: any number) of them by one client.
    pub(crate) fn new(max: usize, max_per_client: usize) -> Self {
        Slots(Arc::new(SlotsInner {
            max,
            max_per_client,
            held: Mutex::new(Held::default()),
        }))
    }

    /// A slot for `client` (none: counted in all only), if both caps allow one.
    pub(crate) fn try_take(&self, client: Option<IpAddr>) -> Result<Slot, Full> {
        let inner = &self.0;
        let client = client.map(client_key).filter(|_| inner.max_per_client > 0);
        let mut held = inner.lock();
        if held.total >= inner.max {
            return Err(Full::Total);
        }
        if let Some(key) = client {
            if !held.per_client.try_take(key, inner.max_per_client) {
                return Err(Full::Client);
            }
        }
        held.total += 1;
        Ok(Slot {
            slots: inner.clone(),
            client,
        })
    }

    /// How many are held in all.
    #[cfg(test)]
    pub(crate) fn held(&self) -> usize {
        self.0.lock().total
    }
}

impl SlotsInner {
    fn lock(&self) -> std::sync::MutexGuard<'_, Held> {
        self.held.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut held = self.slots.lock();
        held.total -= 1;
        if let Some(key) = self.client {
            held.per_client.release(key);
        }
    }
}

/// The session caps (README: Limits).
#[derive(Debug, Clone, Copy)]
pub struct SessionLimits {
    /// Live sessions in all (`--max-sessions`).
    pub max: usize,
    /// Per client: an IPv4 address, an IPv6 /64 (`--max-sessions-per-ip`; 0: none).
    pub max_per_ip: usize,
    /// Per IPv6 /48, its /64s together (`--max-sessions-per-prefix`; 0: none).
    pub max_per_prefix: usize,
    /// Sessions not yet connected, per client (`--max-connecting-sessions-per-ip`; 0: none).
    pub max_connecting_per_ip: usize,
    /// How long after its loop took it a session still connecting may be evicted to make room
    /// (`--evict-connecting-after`): clients connect in milliseconds (a few seconds through a
    /// relay), so a session this old and still connecting is most likely one whose client
    /// never will.
    pub evictable_after: Duration,
}

/// The live-session caps of the whole media plane: in all, per client, per IPv6 /48, and of
/// sessions still connecting per client. When the plane is full, the oldest session that has not
/// connected yet (ICE and DTLS) and has been connecting for `evictable_after` makes room for a
/// new one, unless the newcomer's client has sessions still connecting itself: silent POSTs
/// cannot hold the plane for the setup timeout each, and a client cannot evict others' sessions
/// while it holds connecting ones of its own.
#[derive(Debug, Clone)]
pub struct SessionCap(Arc<CapInner>);

#[derive(Debug)]
struct CapInner {
    limits: SessionLimits,
    state: Mutex<CapState>,
}

#[derive(Debug, Default)]
struct CapState {
    total: usize,
    per_client: PerClient,
    per_prefix: PerClient,
    /// Sessions admitted and not yet connected, per client.
    connecting_per_client: PerClient,
    /// Connecting sessions a loop has adopted, oldest first: whom to evict.
    evictable: BTreeMap<u64, Evictable>,
    /// Permits evicted: their counts were given back when they were.
    evicted: HashSet<u64>,
    next: u64,
}

#[derive(Debug, Clone, Copy)]
struct Evictable {
    resource: ResourceId,
    client: IpAddr,
    since: Instant,
}

/// One admitted session's place under the caps, given back when it is dropped: with the session
/// at teardown, or with a request that never became a session.
#[derive(Debug)]
pub struct Permit {
    cap: Arc<CapInner>,
    seq: u64,
    /// Its client's key, when counted per client.
    client: Option<IpAddr>,
    /// Counted as connecting (it has a client and has not connected yet).
    connecting: bool,
}

/// A place under the caps, and the session evicted to make it, if one was.
#[derive(Debug)]
pub struct Admitted {
    /// The new session's place.
    pub permit: Permit,
    /// The connecting session that made room: to be ended (`EndReason::Evicted`). It is out of
    /// every count already.
    pub evicted: Option<ResourceId>,
}

impl SessionCap {
    /// The caps of `limits`.
    pub fn new(limits: SessionLimits) -> Self {
        SessionCap(Arc::new(CapInner {
            limits,
            state: Mutex::new(CapState::default()),
        }))
    }

    /// A place under the caps for a session of `client` (none: counted in all only, and never
    /// evicted), if one is free or a connecting session can make room at `now`.
    pub fn try_admit(&self, client: Option<IpAddr>, now: Instant) -> Result<Admitted, MediaError> {
        let limits = &self.0.limits;
        let key = client.map(client_key);
        let prefix = client.and_then(prefix_key);
        let mut state = self.0.lock();
        if let Some(key) = key {
            if limits.max_per_ip > 0 && state.per_client.held(key) >= limits.max_per_ip {
                return Err(MediaError::TooManyFromClient(limits.max_per_ip));
            }
            if limits.max_connecting_per_ip > 0
                && state.connecting_per_client.held(key) >= limits.max_connecting_per_ip
            {
                return Err(MediaError::TooManyConnecting(limits.max_connecting_per_ip));
            }
        }
        if let Some(prefix) = prefix {
            if limits.max_per_prefix > 0 && state.per_prefix.held(prefix) >= limits.max_per_prefix {
                return Err(MediaError::TooManyFromNetwork(limits.max_per_prefix));
            }
        }
        let mut evicted = None;
        if state.total >= limits.max {
            let may_evict = key.is_some_and(|k| state.connecting_per_client.held(k) == 0);
            let victim = state
                .evictable
                .first_key_value()
                .filter(|(_, v)| {
                    may_evict && now.saturating_duration_since(v.since) >= limits.evictable_after
                })
                .map(|(seq, v)| (*seq, *v));
            let Some((seq, victim)) = victim else {
                return Err(MediaError::OverCapacity);
            };
            state.evictable.remove(&seq);
            state.connecting_per_client.release(victim.client);
            state.release(Some(victim.client));
            state.evicted.insert(seq);
            evicted = Some(victim.resource);
        }
        state.total += 1;
        if let Some(key) = key {
            state.per_client.try_take(key, 0);
            state.connecting_per_client.try_take(key, 0);
            if let Some(prefix) = prefix {
                state.per_prefix.try_take(prefix, 0);
            }
        }
        let seq = state.next;
        state.next += 1;
        Ok(Admitted {
            permit: Permit {
                cap: self.0.clone(),
                seq,
                client: key,
                connecting: key.is_some(),
            },
            evicted,
        })
    }
}

impl CapInner {
    fn lock(&self) -> std::sync::MutexGuard<'_, CapState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl CapState {
    /// Gives back one session's counts in all, per client and per prefix.
    fn release(&mut self, key: Option<IpAddr>) {
        self.total -= 1;
        if let Some(key) = key {
            self.per_client.release(key);
            if let Some(prefix) = prefix_key(key) {
                self.per_prefix.release(prefix);
            }
        }
    }
}

impl Permit {
    /// Its session `resource` is in a loop now (adopted at `now`): while it is still connecting
    /// it may be evicted to make room. Only a live session is ever evicted, so ending it is what
    /// gives its place back.
    pub fn adopted(&self, resource: ResourceId, now: Instant) {
        let (Some(client), true) = (self.client, self.connecting) else {
            return;
        };
        let mut state = self.cap.lock();
        if !state.evicted.contains(&self.seq) {
            let entry = Evictable {
                resource,
                client,
                since: now,
            };
            state.evictable.insert(self.seq, entry);
        }
    }

    /// The session connected (ICE and DTLS): no longer counted as connecting, nor evictable.
    pub fn connected(&mut self) {
        if !std::mem::take(&mut self.connecting) {
            return;
        }
        let mut state = self.cap.lock();
        // An evicted permit gave its counts back already.
        if state.evicted.contains(&self.seq) {
            return;
        }
        state.evictable.remove(&self.seq);
        if let Some(key) = self.client {
            state.connecting_per_client.release(key);
        }
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        let mut state = self.cap.lock();
        if state.evicted.remove(&self.seq) {
            return;
        }
        if self.connecting {
            state.evictable.remove(&self.seq);
            if let Some(key) = self.client {
                state.connecting_per_client.release(key);
            }
        }
        state.release(self.client);
    }
}

/// The /48 an IPv6 client belongs to (IPv4 clients have none: their address is their key).
fn prefix_key(ip: IpAddr) -> Option<IpAddr> {
    match ip.to_canonical() {
        IpAddr::V6(v6) => {
            let prefix = u128::from(v6) & !((1u128 << 80) - 1);
            Some(IpAddr::V6(std::net::Ipv6Addr::from(prefix)))
        }
        IpAddr::V4(_) => None,
    }
}

pub(crate) use crate::rate::client_key;

/// How many of something (live sessions, open HTTP connections) each client holds, by
/// [`client_key`]; only clients holding at least one are kept. One owner each: the session cap
/// behind its mutex, the HTTP connection loop on its own.
#[derive(Debug, Default)]
pub(crate) struct PerClient(HashMap<IpAddr, usize>);

impl PerClient {
    /// Counts one more for client `key` unless it holds `max` already (0: no limit).
    pub(crate) fn try_take(&mut self, key: IpAddr, max: usize) -> bool {
        let n = self.0.entry(key).or_insert(0);
        // A refused client already holds `max` (at least one): no empty entry is left.
        if max > 0 && *n >= max {
            return false;
        }
        *n += 1;
        true
    }

    /// One of client `key`'s ended.
    pub(crate) fn release(&mut self, key: IpAddr) {
        if let Some(n) = self.0.get_mut(&key) {
            *n -= 1;
            if *n == 0 {
                self.0.remove(&key);
            }
        }
    }

    /// What client `key` holds.
    fn held(&self, key: IpAddr) -> usize {
        self.0.get(&key).copied().unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(max: usize, max_per_ip: usize) -> SessionLimits {
        SessionLimits {
            max,
            max_per_ip,
            max_per_prefix: 0,
            max_connecting_per_ip: 0,
            evictable_after: EVICTABLE_AFTER,
        }
    }

    fn ip(s: &str) -> Option<IpAddr> {
        Some(s.parse().unwrap())
    }

    const EVICTABLE_AFTER: Duration = Duration::from_secs(5);

    fn resource() -> ResourceId {
        ResourceId::random_on(None, 0, 1)
    }

    fn admit(cap: &SessionCap, client: Option<IpAddr>) -> Result<Permit, MediaError> {
        cap.try_admit(client, Instant::now()).map(|a| a.permit)
    }

    #[test]
    fn permits_are_capped_and_given_back_on_drop() {
        let cap = SessionCap::new(limits(2, 0));
        let a = admit(&cap, None).unwrap();
        let b = admit(&cap, None).unwrap();
        assert_eq!(admit(&cap, None).err(), Some(MediaError::OverCapacity));
        drop(a);
        let c = admit(&cap, None).unwrap();
        assert!(admit(&cap, None).is_err());
        drop((b, c));
        let again: Vec<Permit> = (0..2).filter_map(|_| admit(&cap, None).ok()).collect();
        assert_eq!(again.len(), 2);
    }

    #[test]
    fn one_ip_is_capped_apart_from_the_others() {
        let cap = SessionCap::new(limits(3, 2));
        let one = ip("192.0.2.1");
        let other = ip("192.0.2.2");
        let a = admit(&cap, one).unwrap();
        let _b = admit(&cap, ip("::ffff:192.0.2.1")).unwrap();
        assert_eq!(
            admit(&cap, one).err(),
            Some(MediaError::TooManyFromClient(2)),
            "the IPv4-mapped address is the same client"
        );
        let _c = admit(&cap, other).unwrap();
        // The plane is full (and nobody connecting has a resource to evict): refused as such,
        // and the IP's count is not left raised.
        assert_eq!(admit(&cap, other).err(), Some(MediaError::OverCapacity));
        assert_eq!(cap.0.lock().per_client.held(other.unwrap()), 1);
        drop(a);
        // Two addresses of one IPv6 /64 are one client.
        let wide = SessionCap::new(limits(10, 1));
        let _v6 = admit(&wide, ip("2001:db8::1")).unwrap();
        assert!(admit(&wide, ip("2001:db8::ffff:2")).is_err());
        assert!(admit(&wide, ip("2001:db8:0:1::1")).is_ok());
        let d = admit(&cap, one);
        assert!(d.is_ok(), "{d:?}");
        assert!(admit(&cap, None).is_err());
    }

    #[test]
    fn the_64s_of_one_48_share_its_cap() {
        let cap = SessionCap::new(SessionLimits {
            max_per_prefix: 3,
            ..limits(100, 2)
        });
        let held: Vec<Permit> = ["2001:db8:1:1::1", "2001:db8:1:1::2", "2001:db8:1:2::1"]
            .iter()
            .map(|a| admit(&cap, ip(a)).unwrap())
            .collect();
        assert_eq!(
            admit(&cap, ip("2001:db8:1:3::1")).err(),
            Some(MediaError::TooManyFromNetwork(3)),
            "a fourth /64 of the same /48"
        );
        assert!(admit(&cap, ip("2001:db8:2::1")).is_ok(), "another /48");
        assert!(
            admit(&cap, ip("192.0.2.1")).is_ok(),
            "IPv4 has no prefix cap"
        );
        drop(held);
        assert!(admit(&cap, ip("2001:db8:1:3::1")).is_ok());
    }

    #[test]
    fn connecting_sessions_have_a_quota_and_the_oldest_makes_room_when_full() {
        let cap = SessionCap::new(SessionLimits {
            max_connecting_per_ip: 2,
            ..limits(3, 0)
        });
        let t0 = Instant::now();
        let later = t0 + EVICTABLE_AFTER;
        let (one, two, three) = (ip("192.0.2.1"), ip("192.0.2.2"), ip("192.0.2.3"));
        let (r1, r2) = (resource(), resource());
        let mut first = cap.try_admit(one, t0).unwrap().permit;
        let second = cap.try_admit(one, t0).unwrap().permit;
        assert_eq!(
            cap.try_admit(one, t0).err(),
            Some(MediaError::TooManyConnecting(2))
        );
        first.adopted(r1, t0);
        second.adopted(r2, t0);
        first.connected();
        // Not adopted by a loop: never evicted.
        let third = cap.try_admit(two, t0).unwrap().permit;
        // Full. A session adopted less than `evictable_after` ago is not evicted, nor does a
        // client with a connecting session of its own (one) or no client evict anyone.
        assert_eq!(
            cap.try_admit(three, t0).err(),
            Some(MediaError::OverCapacity)
        );
        assert_eq!(
            cap.try_admit(one, later).err(),
            Some(MediaError::OverCapacity)
        );
        assert_eq!(
            cap.try_admit(None, later).err(),
            Some(MediaError::OverCapacity)
        );
        // The oldest adopted connecting session (the second; the first connected) makes room.
        let fourth = cap.try_admit(three, later).unwrap();
        assert_eq!(fourth.evicted, Some(r2));
        assert_eq!(cap.0.lock().total, 3);
        // Its counts were given back once: not again when it connects late or is dropped.
        let mut second = second;
        second.connected();
        drop(second);
        assert_eq!(cap.0.lock().total, 3);
        assert_eq!(cap.0.lock().connecting_per_client.held(one.unwrap()), 0);
        assert_eq!(
            cap.try_admit(ip("192.0.2.4"), later + EVICTABLE_AFTER)
                .err(),
            Some(MediaError::OverCapacity),
            "the third was never adopted"
        );
        drop((first, third, fourth));
        let state = cap.0.lock();
        assert_eq!(state.total, 0);
        assert!(state.evictable.is_empty() && state.evicted.is_empty());
        assert_eq!(state.connecting_per_client.held(two.unwrap()), 0);
    }
}
