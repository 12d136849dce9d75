//! The media loop's deadlines: one min-heap for all sessions, with lazy invalidation.
//!
//! Each session remembers the earliest deadline it has in the heap. A new deadline is pushed only
//! when it is earlier than that one, so the heap holds at most a few entries per session however
//! often deadlines move; an entry that fires early costs one harmless `handle_timeout`.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::Instant;

use super::net::routes::SessionKey;

/// Deadlines of every session of one loop.
#[derive(Debug, Default)]
pub struct Timers {
    heap: BinaryHeap<Reverse<(Instant, SessionKey)>>,
}

impl Timers {
    /// Arms `at` for `key`, whose earliest armed deadline is `*armed`.
    pub fn arm(&mut self, key: SessionKey, at: Instant, armed: &mut Option<Instant>) {
        if armed.is_none_or(|current| at < current) {
            *armed = Some(at);
            self.heap.push(Reverse((at, key)));
        }
    }

    /// The earliest deadline in the heap.
    pub fn next(&self) -> Option<Instant> {
        self.heap.peek().map(|Reverse((at, _))| *at)
    }

    /// Pops the next entry due at `now`: `(at, key)`. The caller checks `at` against the session's
    /// armed deadline and ignores superseded entries.
    pub fn pop_due(&mut self, now: Instant) -> Option<(Instant, SessionKey)> {
        match self.heap.peek() {
            Some(Reverse((at, _))) if *at <= now => self.heap.pop().map(|Reverse(e)| e),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn only_earlier_deadlines_are_pushed() {
        let t0 = Instant::now();
        let mut timers = Timers::default();
        let mut armed = None;
        timers.arm(1, t0 + Duration::from_secs(5), &mut armed);
        timers.arm(1, t0 + Duration::from_secs(9), &mut armed);
        timers.arm(1, t0 + Duration::from_secs(2), &mut armed);
        assert_eq!(timers.heap.len(), 2);
        assert_eq!(armed, Some(t0 + Duration::from_secs(2)));
        assert_eq!(timers.next(), Some(t0 + Duration::from_secs(2)));
        assert_eq!(timers.pop_due(t0), None);
        assert_eq!(
            timers.pop_due(t0 + Duration::from_secs(3)),
            Some((t0 + Duration::from_secs(2), 1))
        );
        assert_eq!(timers.pop_due(t0 + Duration::from_secs(3)), None);
    }
}
