//! The reports of sessions that ended, kept for the grace period after (`registry::ENDED_GRACE`)
//! so a client that reads its report after its DELETE (or after it vanished) still finds it: at
//! most [`MAX_KEPT`] per media loop, the oldest dropped first.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use super::Report;
use crate::session::ResourceId;

/// Reports of ended sessions one media loop keeps at most (a report is bounded: a few KiB).
pub const MAX_KEPT: usize = 512;

/// Ended sessions' reports, oldest first.
#[derive(Debug, Default)]
pub struct Kept {
    reports: VecDeque<(ResourceId, Instant, Report)>,
}

impl Kept {
    /// Keeps `report` of `resource`, which ended at `now`, for `grace`.
    pub fn keep(&mut self, resource: ResourceId, report: Report, now: Instant, grace: Duration) {
        self.expire(now);
        if self.reports.len() == MAX_KEPT {
            self.reports.pop_front();
        }
        self.reports.push_back((resource, now + grace, report));
    }

    /// The report of `resource`, if it is still kept at `now`.
    pub fn get(&self, resource: &ResourceId, now: Instant) -> Option<&Report> {
        (self.reports.iter())
            .find(|(id, until, _)| id == resource && now < *until)
            .map(|(_, _, report)| report)
    }

    /// The report of the ended session whose public id is `id` (`report::public_id`), if kept.
    pub fn by_public_id(&self, id: &str, now: Instant) -> Option<&Report> {
        (self.reports.iter())
            .find(|(resource, until, _)| now < *until && super::public_id(resource) == id)
            .map(|(_, _, report)| report)
    }

    /// The summaries of the ended sessions still kept at `now`, by public id.
    pub fn summaries(&self, now: Instant) -> Vec<super::SessionSummary> {
        (self.reports.iter())
            .filter(|(_, until, _)| now < *until)
            .map(|(resource, _, report)| {
                super::SessionSummary::of(super::public_id(resource), report)
            })
            .collect()
    }

    /// `resource`'s session was deleted after it ended (a client that closed its peer
    /// connection before its DELETE).
    pub fn deleted(&mut self, resource: &ResourceId) {
        if let Some((_, _, report)) = self.reports.iter_mut().find(|(id, ..)| id == resource) {
            report.http.deleted = true;
        }
    }

    /// Drops what has expired at `now`.
    fn expire(&mut self, now: Instant) {
        while self
            .reports
            .front()
            .is_some_and(|(_, until, _)| *until <= now)
        {
            self.reports.pop_front();
        }
    }

    /// How many are kept.
    pub fn len(&self) -> usize {
        self.reports.len()
    }

    /// Whether none is kept.
    pub fn is_empty(&self) -> bool {
        self.reports.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::{Connectivity, Http, OfferFacts};

    fn report() -> Report {
        Report {
            role: "whip",
            stream: "s".into(),
            state: "ended",
            ended: Some("deleted"),
            age_ms: 0,
            findings: Vec::new(),
            http: Http::default(),
            offer: OfferFacts::default(),
            chosen: Vec::new(),
            connectivity: Connectivity::default(),
            tracks: Vec::new(),
            rtcp: Default::default(),
            keyframes: None,
        }
    }

    #[test]
    fn ended_reports_are_kept_within_their_bound_and_grace() {
        let mut kept = Kept::default();
        let t0 = Instant::now();
        let grace = Duration::from_secs(60);
        let ids: Vec<ResourceId> = (0..MAX_KEPT + 10).map(|_| ResourceId::random()).collect();
        for id in &ids {
            kept.keep(*id, report(), t0, grace);
        }
        assert_eq!(kept.len(), MAX_KEPT);
        assert!(kept.get(&ids[0], t0).is_none(), "the oldest went first");
        let last = ids.last().unwrap();
        assert!(kept.get(last, t0).is_some());
        assert!(
            kept.get(last, t0 + grace).is_none(),
            "gone after the grace period"
        );
        kept.keep(ResourceId::random(), report(), t0 + grace, grace);
        assert_eq!(kept.len(), 1, "the expired ones dropped");
    }
}
