//! Check results and their two renderings: one line per check for people, JSON for machines.

use serde::Serialize;

/// How strongly the specification asks for the behaviour.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Level {
    /// MUST / SHALL / MUST NOT.
    Must,
    /// SHOULD / RECOMMENDED.
    Should,
    /// Not in the specification: a server's own extension or a robustness expectation.
    Extension,
}

/// What happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Outcome {
    /// The server behaves as required.
    Pass,
    /// It does not.
    Fail,
    /// The check could not apply (feature not advertised, option not given).
    Skip,
}

/// One check's result.
#[derive(Debug, Clone, Serialize)]
pub struct CheckResult {
    /// Stable name, e.g. `rfc9725-4.2-post-returns-201-with-location`.
    pub id: &'static str,
    /// The specification and section the check tests.
    pub reference: &'static str,
    /// Requirement level.
    pub level: Level,
    /// Outcome.
    pub outcome: Outcome,
    /// What was observed (status, header, timing) or why it was skipped.
    pub evidence: String,
}

/// All results of one run.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Report {
    /// Results in the order the checks ran.
    pub results: Vec<CheckResult>,
}

impl Report {
    /// Records a result.
    pub fn push(
        &mut self,
        id: &'static str,
        reference: &'static str,
        level: Level,
        outcome: Outcome,
        evidence: impl Into<String>,
    ) {
        self.results.push(CheckResult {
            id,
            reference,
            level,
            outcome,
            evidence: evidence.into(),
        });
    }

    /// Records a pass or a failure.
    pub fn check(
        &mut self,
        id: &'static str,
        reference: &'static str,
        level: Level,
        ok: bool,
        evidence: impl Into<String>,
    ) {
        let outcome = if ok { Outcome::Pass } else { Outcome::Fail };
        self.push(id, reference, level, outcome, evidence);
    }

    /// Records a skipped check.
    pub fn skip(
        &mut self,
        id: &'static str,
        reference: &'static str,
        level: Level,
        why: impl Into<String>,
    ) {
        self.push(id, reference, level, Outcome::Skip, why);
    }

    /// (passed, failed, skipped).
    pub fn counts(&self) -> (usize, usize, usize) {
        let n = |o| self.results.iter().filter(|r| r.outcome == o).count();
        (n(Outcome::Pass), n(Outcome::Fail), n(Outcome::Skip))
    }

    /// Failed checks at `level`.
    pub fn failed(&self, level: Level) -> impl Iterator<Item = &CheckResult> {
        self.results
            .iter()
            .filter(move |r| r.level == level && r.outcome == Outcome::Fail)
    }

    /// The result of check `id`.
    pub fn get(&self, id: &str) -> Option<&CheckResult> {
        self.results.iter().find(|r| r.id == id)
    }

    /// One line per check, then `N passed, N failed, N skipped`.
    pub fn to_text(&self) -> String {
        let mut out = String::new();
        for r in &self.results {
            let outcome = match r.outcome {
                Outcome::Pass => "PASS",
                Outcome::Fail => "FAIL",
                Outcome::Skip => "SKIP",
            };
            let level = match r.level {
                Level::Must => "MUST",
                Level::Should => "SHOULD",
                Level::Extension => "EXT",
            };
            out.push_str(&format!(
                "{outcome} {level:<6} {:<52} {} | {}\n",
                r.id, r.reference, r.evidence
            ));
        }
        let (p, f, s) = self.counts();
        out.push_str(&format!("{p} passed, {f} failed, {s} skipped\n"));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_and_text() {
        let mut r = Report::default();
        r.check("a", "RFC 9725 §4.2", Level::Must, true, "201");
        r.check("b", "RFC 9725 §4.2", Level::Should, false, "200");
        r.skip("c", "RFC 9725 §4.3", Level::Must, "no PATCH");
        assert_eq!(r.counts(), (1, 1, 1));
        assert_eq!(r.failed(Level::Should).count(), 1);
        assert_eq!(r.failed(Level::Must).count(), 0);
        assert!(r.to_text().ends_with("1 passed, 1 failed, 1 skipped\n"));
        assert!(serde_json::to_string(&r)
            .unwrap()
            .contains("\"outcome\":\"SKIP\""));
    }
}
