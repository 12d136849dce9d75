//! TCP connections that have not yet said what they are: no first byte, no finished TLS
//! handshake, or an ICE-TCP connection whose session has not answered yet. Each listener (the
//! HTTP port, the ICE-TCP port) has a pool of its own, so silence on one never darkens the other.
//! A client (an IPv4 address, an IPv6 /64) holds at most a few places of a pool: one more from it
//! is closed at once. When a pool is full, its oldest place is taken back (that connection is
//! closed) to make room for the newest: a flood of silent connections from many addresses
//! delays a real client by at most the time it takes the flood to fill the pool again, instead of
//! refusing every new connection for as long as the flood holds its places.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use tokio_util::sync::CancellationToken;

use crate::media::cap::{client_key, PerClient};
use prometheus_client::metrics::gauge::Gauge;

use crate::ops::metrics::{ConnClosed, LoopMetrics};

/// A listener's pool of places for connections not yet identified.
#[derive(Debug, Clone)]
pub struct Pending(Arc<Pool>);

#[derive(Debug)]
struct Pool {
    max: usize,
    /// 0: any number.
    max_per_client: usize,
    state: Mutex<PoolState>,
    metrics: LoopMetrics,
    /// Places held, as `/metrics` shows them.
    held: Gauge,
}

#[derive(Debug, Default)]
struct PoolState {
    /// Admission order (oldest first): each place's client and its eviction signal.
    places: BTreeMap<u64, (IpAddr, CancellationToken)>,
    per_client: PerClient,
    next: u64,
}

/// One connection's place in a pool, given back when dropped (the connection said what it is,
/// or ended). [`Place::evicted`] resolves when the pool took it back for a newer connection.
#[derive(Debug)]
pub struct Place {
    pool: Arc<Pool>,
    seq: u64,
    evicted: CancellationToken,
}

impl Pending {
    /// A pool of `max` places (at least one), at most `max_per_client` (0: any number) of them
    /// held by one client; `listener` (`http`, `ice_tcp`) names it in the metrics.
    pub fn new(
        listener: &'static str,
        max: usize,
        max_per_client: usize,
        metrics: LoopMetrics,
    ) -> Self {
        Pending(Arc::new(Pool {
            max: max.max(1),
            max_per_client,
            state: Mutex::new(PoolState::default()),
            held: metrics.tcp_pending(listener),
            metrics,
        }))
    }

    /// A place for a new connection from `peer`: `None` when that client holds its share
    /// already (the connection is to be closed at once). When the pool is full, the oldest
    /// place is taken back to make room.
    pub fn admit(&self, peer: IpAddr) -> Option<Place> {
        let pool = &self.0;
        let key = client_key(peer);
        let mut state = pool.lock();
        if !state.per_client.try_take(key, pool.max_per_client) {
            drop(state);
            pool.metrics.tcp_closed(ConnClosed::PendingPerIp);
            return None;
        }
        let mut evicted = 0;
        while state.places.len() >= pool.max {
            let Some((_, (client, signal))) = state.places.pop_first() else {
                break;
            };
            state.per_client.release(client);
            signal.cancel();
            evicted += 1;
        }
        let seq = state.next;
        state.next += 1;
        let signal = CancellationToken::new();
        state.places.insert(seq, (key, signal.clone()));
        // Under the lock, so that the gauge never goes back to an older value.
        pool.held.set(state.places.len() as i64);
        drop(state);
        for _ in 0..evicted {
            pool.metrics.tcp_closed(ConnClosed::PendingEvicted);
        }
        Some(Place {
            pool: pool.clone(),
            seq,
            evicted: signal,
        })
    }

    /// Places held now.
    pub fn held(&self) -> usize {
        self.0.lock().places.len()
    }
}

impl Pool {
    fn lock(&self) -> std::sync::MutexGuard<'_, PoolState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Place {
    /// Resolves when the pool took this place back for a newer connection.
    pub async fn evicted(&self) {
        self.evicted.cancelled().await
    }
}

impl Drop for Place {
    fn drop(&mut self) {
        let mut state = self.pool.lock();
        // An evicted place was given back when it was taken.
        if let Some((client, _)) = state.places.remove(&self.seq) {
            state.per_client.release(client);
        }
        self.pool.held.set(state.places.len() as i64);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn one_client_holds_its_share_and_a_full_pool_evicts_the_oldest() {
        let pool = Pending::new(
            "test",
            3,
            2,
            crate::ops::metrics::Metrics::new().for_loops(),
        );
        let a1 = pool.admit(ip("192.0.2.1")).unwrap();
        let _a2 = pool.admit(ip("192.0.2.1")).unwrap();
        assert!(pool.admit(ip("192.0.2.1")).is_none(), "over its share");
        assert!(
            pool.admit(ip("2001:db8::1")).is_some(),
            "another client; dropped at once"
        );
        let _b1 = pool.admit(ip("2001:db8::1")).unwrap();
        assert_eq!(pool.held(), 3);
        // Full: the oldest (a1) makes room, and its client's share comes back.
        let _c1 = pool.admit(ip("198.51.100.1")).unwrap();
        assert_eq!(pool.held(), 3);
        assert!(a1.evicted.is_cancelled());
        let _a3 = pool.admit(ip("192.0.2.1")).expect("a1's share came back");
        // Dropping an evicted place gives nothing back twice.
        drop(a1);
        assert_eq!(pool.held(), 3);
        let wide = Pending::new(
            "test",
            10,
            1,
            crate::ops::metrics::Metrics::new().for_loops(),
        );
        let _v6 = wide.admit(ip("2001:db8::1")).unwrap();
        assert!(
            wide.admit(ip("2001:db8::ffff")).is_none(),
            "the same /64 is the same client"
        );
        assert!(wide.admit(ip("2001:db8:0:1::1")).is_some());
    }
}
