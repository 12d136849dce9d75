//! The client reports as the HTTP plane asks for them (`report/`): a session's by its resource,
//! every loop's live and just-ended sessions, one by its public id (and the kick), each from the
//! loop that holds it, with its findings judged here, off the loops.

use super::{Command, MediaError, MediaHandle};
use crate::session::ResourceId;

impl MediaHandle {
    /// The client report of `resource` (live, or ended within the grace period), with its
    /// findings.
    pub async fn report(&self, resource: ResourceId) -> Result<crate::report::Report, MediaError> {
        let shard = self.owner(&resource);
        let mut report = self
            .request(shard, |reply| Command::Report { resource, reply })
            .await??;
        report.findings = crate::report::findings::judge(&report);
        Ok(report)
    }

    /// Every live session of every loop (`GET /api/sessions`), by stream.
    pub async fn sessions(&self) -> Result<Vec<crate::report::SessionSummary>, MediaError> {
        let mut all = Vec::new();
        for shard in self.shards.iter() {
            all.extend(
                self.request(shard, |reply| Command::ListSessions { reply })
                    .await?,
            );
        }
        all.sort_by(|a, b| (&a.stream, &a.id).cmp(&(&b.stream, &b.id)));
        Ok(all)
    }

    /// The live session of public id `id`, from whichever loop has it: its report with its
    /// findings, and the session ended first if `kick` (`EndReason::Kicked`).
    pub async fn by_session_id(
        &self,
        id: &str,
        kick: bool,
    ) -> Result<crate::report::Report, MediaError> {
        for shard in self.shards.iter() {
            let id = id.to_owned();
            let found = self
                .request(shard, |reply| Command::BySessionId { id, kick, reply })
                .await?;
            if let Some(mut report) = found {
                report.findings = crate::report::findings::judge(&report);
                return Ok(report);
            }
        }
        Err(MediaError::UnknownResource)
    }
}
