//! The session cap shared by every media loop, as a guard owned by the session it admits.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

/// The live-session count of the whole media plane and its cap.
#[derive(Debug, Clone)]
pub struct SessionCap {
    live: Arc<AtomicUsize>,
    max: usize,
}

/// One admitted session's place under the cap, given back when it is dropped: with the session
/// at teardown, or with a request that never became a session.
#[derive(Debug)]
pub struct Permit(Arc<AtomicUsize>);

impl SessionCap {
    /// A cap of `max` live sessions.
    pub fn new(max: usize) -> Self {
        SessionCap {
            live: Arc::new(AtomicUsize::new(0)),
            max,
        }
    }

    /// A place under the cap, if one is free.
    pub fn try_admit(&self) -> Option<Permit> {
        let taken = self
            .live
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < self.max).then_some(n + 1)
            })
            .is_ok();
        taken.then(|| Permit(self.live.clone()))
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn permits_are_capped_and_given_back_on_drop() {
        let cap = SessionCap::new(2);
        let a = cap.try_admit().unwrap();
        let b = cap.try_admit().unwrap();
        assert!(cap.try_admit().is_none());
        drop(a);
        let c = cap.try_admit().unwrap();
        assert!(cap.try_admit().is_none());
        drop((b, c));
        let again: Vec<Permit> = (0..2).filter_map(|_| cap.try_admit()).collect();
        assert_eq!(again.len(), 2);
    }
}
