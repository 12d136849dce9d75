//! What each media loop publishes after every change (for `/healthz`, the gauges and tests),
//! and the totals over the loops.

use std::sync::Arc;

use tokio::sync::watch;

/// What the media loop publishes after every change, for health checks and tests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    /// Live sessions.
    pub sessions: usize,
    /// Sessions whose ICE and DTLS are up.
    pub connected: usize,
    /// Sessions whose consent checks are failing (RFC 7675), not yet torn down.
    pub disconnected: usize,
    /// No session, stream or route is left anywhere in the loop.
    pub idle: bool,
    /// Whether the loop is still running (cleared when it ends, a panic included).
    pub running: bool,
    /// Live sessions by role (publisher, viewer, echo) and link (connecting, connected,
    /// disconnected).
    pub by_role: [[usize; 3]; 3],
    /// Streams with a publisher or a viewer.
    pub streams: usize,
}

/// The loops' statistics summed: counts add up; idle and running hold when they hold everywhere.
#[derive(Debug, Clone)]
pub struct StatsWatch(pub(super) watch::Receiver<Vec<Stats>>);

impl StatsWatch {
    /// The latest totals.
    pub fn borrow(&self) -> Stats {
        total(&self.0.borrow())
    }

    /// The latest totals, marking them seen.
    pub fn borrow_and_update(&mut self) -> Stats {
        total(&self.0.borrow_and_update())
    }

    /// Waits until the totals satisfy `f`.
    pub async fn wait_for(
        &mut self,
        mut f: impl FnMut(&Stats) -> bool,
    ) -> Result<Stats, watch::error::RecvError> {
        let all = self.0.wait_for(|all| f(&total(all))).await?;
        Ok(total(&all))
    }
}

fn total(all: &[Stats]) -> Stats {
    all.iter().fold(
        Stats {
            idle: true,
            running: true,
            ..Stats::default()
        },
        |t, s| Stats {
            sessions: t.sessions + s.sessions,
            connected: t.connected + s.connected,
            disconnected: t.disconnected + s.disconnected,
            idle: t.idle && s.idle,
            running: t.running && s.running,
            by_role: std::array::from_fn(|r| {
                std::array::from_fn(|l| t.by_role[r][l] + s.by_role[r][l])
            }),
            streams: t.streams + s.streams,
        },
    )
}

/// Where one loop publishes its statistics: its slot of the shared board.
#[derive(Debug, Clone)]
pub(crate) struct StatsSlot {
    pub(super) board: Arc<watch::Sender<Vec<Stats>>>,
    pub(super) index: usize,
}

impl StatsSlot {
    pub(crate) fn publish(&self, stats: Stats) {
        self.board.send_if_modified(|all| {
            let changed = all[self.index] != stats;
            all[self.index] = stats;
            changed
        });
    }

    pub(crate) fn modify(&self, f: impl FnOnce(&mut Stats)) {
        self.board.send_modify(|all| f(&mut all[self.index]));
    }
}
