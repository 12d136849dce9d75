//! The session caps shared by every media loop (the whole plane's, and each client IP's), as a
//! guard owned by the session it admits.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use super::error::MediaError;

/// The live-session count of the whole media plane and of each client IP, and their caps.
#[derive(Debug, Clone)]
pub struct SessionCap(Arc<Counts>);

#[derive(Debug)]
struct Counts {
    live: AtomicUsize,
    max: usize,
    /// Live sessions per client; touched at admission and teardown, never per packet.
    per_ip: Mutex<PerClient>,
    /// 0: no per-IP cap.
    max_per_ip: usize,
}

/// One admitted session's place under the caps, given back when it is dropped: with the session
/// at teardown, or with a request that never became a session.
#[derive(Debug)]
pub struct Permit {
    counts: Arc<Counts>,
    ip: Option<IpAddr>,
}

impl SessionCap {
    /// A cap of `max` live sessions, at most `max_per_ip` of them (0: any number) from one IP.
    pub fn new(max: usize, max_per_ip: usize) -> Self {
        SessionCap(Arc::new(Counts {
            live: AtomicUsize::new(0),
            max,
            per_ip: Mutex::new(PerClient::default()),
            max_per_ip,
        }))
    }

    /// A place under the caps for a session of `client` (none: not counted per IP), if one is
    /// free.
    pub fn try_admit(&self, client: Option<IpAddr>) -> Result<Permit, MediaError> {
        let counts = &self.0;
        let ip = client.map(client_key).filter(|_| counts.max_per_ip > 0);
        if let Some(ip) = ip {
            if !counts.per_ip().try_take(ip, counts.max_per_ip) {
                return Err(MediaError::TooManyFromClient(counts.max_per_ip));
            }
        }
        let taken = counts
            .live
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < counts.max).then_some(n + 1)
            })
            .is_ok();
        if !taken {
            counts.release_ip(ip);
            return Err(MediaError::OverCapacity);
        }
        Ok(Permit {
            counts: counts.clone(),
            ip,
        })
    }
}

/// Whom a client IP counts as: an IPv4 client seen on a dual-stack socket is the same client as
/// over IPv4, and an IPv6 client is its /64 (one subscriber's prefix: anyone with one has 2^64
/// addresses to pick from).
pub(crate) fn client_key(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V6(v6) => {
            let prefix = u128::from(v6) & !((1u128 << 64) - 1);
            IpAddr::V6(std::net::Ipv6Addr::from(prefix))
        }
        v4 => v4,
    }
}

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
    #[cfg(test)]
    fn held(&self, key: IpAddr) -> usize {
        self.0.get(&key).copied().unwrap_or(0)
    }
}

impl Counts {
    fn per_ip(&self) -> std::sync::MutexGuard<'_, PerClient> {
        self.per_ip.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn release_ip(&self, ip: Option<IpAddr>) {
        if let Some(ip) = ip {
            self.per_ip().release(ip);
        }
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        self.counts.release_ip(self.ip);
        self.counts.live.fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn permits_are_capped_and_given_back_on_drop() {
        let cap = SessionCap::new(2, 0);
        let a = cap.try_admit(None).unwrap();
        let b = cap.try_admit(None).unwrap();
        assert_eq!(cap.try_admit(None).err(), Some(MediaError::OverCapacity));
        drop(a);
        let c = cap.try_admit(None).unwrap();
        assert!(cap.try_admit(None).is_err());
        drop((b, c));
        let again: Vec<Permit> = (0..2).filter_map(|_| cap.try_admit(None).ok()).collect();
        assert_eq!(again.len(), 2);
    }

    #[test]
    fn one_ip_is_capped_apart_from_the_others() {
        let cap = SessionCap::new(3, 2);
        let one: IpAddr = "192.0.2.1".parse().unwrap();
        let other: IpAddr = "192.0.2.2".parse().unwrap();
        let mapped: IpAddr = "::ffff:192.0.2.1".parse().unwrap();
        let a = cap.try_admit(Some(one)).unwrap();
        let _b = cap.try_admit(Some(mapped)).unwrap();
        assert_eq!(
            cap.try_admit(Some(one)).err(),
            Some(MediaError::TooManyFromClient(2)),
            "the IPv4-mapped address is the same client"
        );
        let _c = cap.try_admit(Some(other)).unwrap();
        // The plane is full: refused as such, and the IP's count is not left raised.
        assert_eq!(
            cap.try_admit(Some(other)).err(),
            Some(MediaError::OverCapacity)
        );
        assert_eq!(cap.0.per_ip().held(other), 1);
        drop(a);
        // Two addresses of one IPv6 /64 are one client.
        let wide = SessionCap::new(10, 1);
        let _v6 = wide
            .try_admit(Some("2001:db8::1".parse().unwrap()))
            .unwrap();
        assert!(wide
            .try_admit(Some("2001:db8::ffff:2".parse().unwrap()))
            .is_err());
        assert!(wide
            .try_admit(Some("2001:db8:0:1::1".parse().unwrap()))
            .is_ok());
        let d = cap.try_admit(Some(one));
        assert!(d.is_ok(), "{d:?}");
        assert!(cap.try_admit(None).is_err());
    }
}
