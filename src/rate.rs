//! Rate limits as token buckets: [`TokenBucket`] (one client's or one session's), and
//! [`PerClientRate`], a bucket per client (an IPv4 address, an IPv6 /64) in a map that cannot
//! grow without bound.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// `burst` tokens at most, refilled at `per_second`; each event takes one.
#[derive(Debug, Clone, Copy)]
pub struct TokenBucket {
    tokens: f64,
    at: Instant,
}

impl TokenBucket {
    /// A full bucket of `burst` tokens at `now`.
    pub fn full(burst: u32, now: Instant) -> Self {
        TokenBucket {
            tokens: f64::from(burst),
            at: now,
        }
    }

    /// Takes a token at `now`, or says how long until one is there.
    pub fn take(&mut self, now: Instant, per_second: f64, burst: u32) -> Result<(), Duration> {
        self.refill(now, per_second, burst);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            return Ok(());
        }
        Err(Duration::from_secs_f64((1.0 - self.tokens) / per_second))
    }

    /// Takes `n` tokens at `now` if there are that many (a byte budget: one token a byte).
    pub fn take_n(&mut self, now: Instant, per_second: f64, burst: u32, n: u32) -> bool {
        self.refill(now, per_second, burst);
        if self.tokens >= f64::from(n) {
            self.tokens -= f64::from(n);
            return true;
        }
        false
    }

    /// Whether it is full again at `now` (forgetting it then loses nothing).
    fn is_full(&self, now: Instant, per_second: f64, burst: u32) -> bool {
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        self.tokens + elapsed * per_second >= f64::from(burst)
    }

    fn refill(&mut self, now: Instant, per_second: f64, burst: u32) {
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        self.tokens = (self.tokens + elapsed * per_second).min(f64::from(burst));
        self.at = now;
    }
}

/// Clients a [`PerClientRate`] keeps a bucket for at most: beyond it, the full buckets are
/// forgotten; if none is, a new client is refused until one is (an attacker with more /64s
/// than this cannot make the map grow).
const MAX_CLIENTS: usize = 65_536;

/// Whom a client IP counts as: an IPv4 client seen on a dual-stack socket is the same client as
/// over IPv4, and an IPv6 client is its /64 (one subscriber's prefix: anyone with one has 2^64
/// addresses to pick from). Every per-client limit keys by it (rates, session caps, pending
/// connections, HTTP connections).
pub(crate) fn client_key(ip: std::net::IpAddr) -> std::net::IpAddr {
    use std::net::IpAddr;
    match ip.to_canonical() {
        IpAddr::V6(v6) => {
            let prefix = u128::from(v6) & !((1u128 << 64) - 1);
            IpAddr::V6(std::net::Ipv6Addr::from(prefix))
        }
        v4 => v4,
    }
}

/// A token bucket per client, keyed by [`client_key`].
#[derive(Debug)]
pub struct PerClientRate {
    per_second: f64,
    burst: u32,
    buckets: Mutex<HashMap<IpAddr, TokenBucket>>,
    max_clients: usize,
}

impl PerClientRate {
    /// `per_second` events per client on average, `burst` at once; `None` when `per_second` is
    /// 0 (no limit).
    pub fn new(per_second: u32, burst: u32) -> Option<Self> {
        (per_second > 0).then(|| PerClientRate {
            per_second: f64::from(per_second),
            burst: burst.max(1),
            buckets: Mutex::new(HashMap::new()),
            max_clients: MAX_CLIENTS,
        })
    }

    /// One event of `client` at `now`: `Err` with the wait until the next is allowed.
    pub fn check(&self, client: IpAddr, now: Instant) -> Result<(), Duration> {
        let key = client_key(client);
        let (per_second, burst) = (self.per_second, self.burst);
        let mut buckets = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        if !buckets.contains_key(&key) && buckets.len() >= self.max_clients {
            buckets.retain(|_, b| !b.is_full(now, per_second, burst));
            if buckets.len() >= self.max_clients {
                return Err(Duration::from_secs(1));
            }
        }
        buckets
            .entry(key)
            .or_insert_with(|| TokenBucket::full(burst, now))
            .take(now, per_second, burst)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bucket_allows_its_burst_then_its_rate() {
        let t0 = Instant::now();
        let mut bucket = TokenBucket::full(3, t0);
        for _ in 0..3 {
            assert!(bucket.take(t0, 2.0, 3).is_ok());
        }
        let wait = bucket.take(t0, 2.0, 3).unwrap_err();
        assert_eq!(wait, Duration::from_millis(500));
        assert!(bucket.take(t0 + wait, 2.0, 3).is_ok());
        assert!(bucket.take(t0 + wait, 2.0, 3).is_err());
        // Never more than the burst, however long it waited.
        let later = t0 + Duration::from_secs(3600);
        for _ in 0..3 {
            assert!(bucket.take(later, 2.0, 3).is_ok());
        }
        assert!(bucket.take(later, 2.0, 3).is_err());
    }

    #[test]
    fn clients_have_buckets_of_their_own_and_the_map_stays_bounded() {
        let t0 = Instant::now();
        let mut rate = PerClientRate::new(1, 2).unwrap();
        rate.max_clients = 2;
        let (a, b, c): (IpAddr, IpAddr, IpAddr) = (
            "192.0.2.1".parse().unwrap(),
            "2001:db8::1".parse().unwrap(),
            "192.0.2.3".parse().unwrap(),
        );
        assert!(rate.check(a, t0).is_ok() && rate.check(a, t0).is_ok());
        assert!(rate.check(a, t0).is_err());
        assert!(rate.check(b, t0).is_ok());
        assert!(
            rate.check("2001:db8::2".parse().unwrap(), t0).is_ok(),
            "the same /64: its second"
        );
        // Two clients known, neither bucket full: a third waits.
        assert!(rate.check(c, t0).is_err());
        // Once their buckets are full again they are forgotten and the third is served.
        assert!(rate.check(c, t0 + Duration::from_secs(2)).is_ok());
        assert!(PerClientRate::new(0, 10).is_none());
    }
}
