//! The media loop's side of the HTTP plane's commands: adopt a negotiated session, delete, look
//! up, choose a layer, PATCH. None of them builds a peer connection: that happened on the
//! request's task.

use std::time::Instant;

use tokio::sync::oneshot;
use tracing::info;

use super::MediaLoop;
use crate::media::conn::{Applied, Conn, PatchNote, Refused, Setup};
use crate::media::listing;
use crate::media::shield::shielded;
use crate::media::{
    Command, IcePatch, LayerState, MediaError, NewSession, Patched, ResourceState, SessionKey,
};
use crate::registry::{Entry, Lookup};
use crate::session::{EndReason, ResourceId};

impl MediaLoop {
    pub(super) fn handle_command(&mut self, command: Command) {
        let now = Instant::now();
        match command {
            Command::Create { session, reply } => self.create(*session, reply, now),
            Command::Delete {
                resource,
                reason,
                reply,
            } => {
                let _ = reply.send(self.delete(resource, reason, now));
            }
            Command::EndPublisher {
                stream,
                reason,
                reply,
            } => {
                if let Some(key) = self.sessions.publisher(&stream) {
                    self.teardown(key, reason);
                }
                let _ = reply.send(());
            }
            Command::Exists { resource, reply } => {
                let _ = reply.send(match self.sessions.lookup(&resource, now) {
                    Lookup::Live(_) => ResourceState::Live,
                    Lookup::Ended(reason) => ResourceState::Ended(reason),
                    Lookup::Unknown => ResourceState::Unknown,
                });
            }
            Command::StreamCodecs { stream, reply } => {
                let _ = reply.send(listing::stream_codecs(&self.sessions, &stream));
            }
            Command::ListStreams { reply } => {
                let _ = reply.send(listing::streams(&self.sessions, now));
            }
            Command::Layer {
                resource,
                change,
                reply,
            } => {
                let _ = reply.send(self.layer(&resource, change, now));
            }
            Command::Patch {
                resource,
                patch,
                reply,
            } => {
                let _ = reply.send(self.patch(&resource, &patch, now));
            }
            Command::Report { resource, reply } => {
                let _ = reply.send(self.sessions.report(&resource, now));
            }
            Command::ListSessions { reply } => {
                let _ = reply.send(self.sessions.summaries(now));
            }
            Command::BySessionId { id, kick, reply } => {
                let found = self.sessions.by_public_id(&id);
                let report = match found {
                    Some(key) => self.sessions.report_of(key, now),
                    None if !kick => self.sessions.ended_report(&id, now),
                    None => None,
                };
                if let (Some(key), true) = (found, kick) {
                    self.teardown(key, EndReason::Kicked);
                }
                let _ = reply.send(report);
            }
            #[cfg(test)]
            Command::Panic => panic!("media loop told to panic (test)"),
        }
    }

    /// Adopts `session` and answers `reply`. A client that gave up while its session waited in
    /// the queue must not take a stream over from a live publisher: dropping the session frees
    /// its place; one that gave up before the answer leaves a session nobody can reach: it ends.
    fn create(
        &mut self,
        session: NewSession,
        reply: oneshot::Sender<Result<(), MediaError>>,
        now: Instant,
    ) {
        if reply.is_closed() {
            return;
        }
        let resource = session.resource;
        let result = self.adopt(session, now);
        if reply.send(result).is_err() {
            if let Some(key) = self.sessions.live(&resource, now) {
                self.teardown(key, EndReason::Abandoned);
            }
        }
    }

    /// RFC 9725 §4.4: DELETE ends the session. A resource that already ended on its own (the peer
    /// closed first) answers 200 once more within the grace period; after that, 404.
    fn delete(
        &mut self,
        resource: ResourceId,
        reason: EndReason,
        now: Instant,
    ) -> Result<(), MediaError> {
        match self.sessions.lookup(&resource, now) {
            Lookup::Live(key) => {
                self.teardown(key, reason);
                Ok(())
            }
            Lookup::Ended(_) if self.sessions.delete_ended(&resource, now) => Ok(()),
            Lookup::Ended(_) | Lookup::Unknown => Err(MediaError::UnknownResource),
        }
    }

    /// A WHEP viewer's video layer ([`Command::Layer`]): changed to `change` if given (the
    /// switch happens at the new layer's keyframe: one is asked for now), then reported.
    fn layer(
        &mut self,
        resource: &ResourceId,
        change: Option<Option<String>>,
        now: Instant,
    ) -> Result<LayerState, MediaError> {
        let key = (self.sessions.live(resource, now)).ok_or(MediaError::UnknownResource)?;
        if let Some(change) = change {
            if let Some((publisher, ssrc)) =
                listing::choose_layer(&mut self.sessions, key, change, now)?
            {
                self.request_keyframe(publisher, Some(ssrc), now);
            }
        }
        listing::layer_state(&self.sessions, key, now)
    }

    /// Applies a PATCH to the live session `resource` names (`conn/ice.rs`): a restart's new
    /// ufrag is routed, a restart rtc refuses ends the session, and a panic ends it too.
    fn patch(
        &mut self,
        resource: &ResourceId,
        patch: &IcePatch,
        now: Instant,
    ) -> Result<Patched, MediaError> {
        let key = (self.sessions.live(resource, now)).ok_or(MediaError::UnknownResource)?;
        let role = (self.sessions.entry(key).map(|e| e.role)).ok_or(MediaError::UnknownResource)?;
        let conn = (self.sessions.conn_mut(key)).ok_or(MediaError::UnknownResource)?;
        let config = &self.config;
        let result = shielded(|| conn.patch(role, patch, config, now));
        let without_if_match = matches!(
            &result,
            Ok(Err(Refused::Precondition(
                MediaError::TrickleNeedsIfMatch | MediaError::RestartNeedsIfMatch
            )))
        );
        let restart = matches!(&result, Ok(Ok(Applied::Restarted { .. })));
        let applied = matches!(&result, Ok(Ok(_)));
        let note = PatchNote::of(&patch.frag, (applied, restart), without_if_match);
        conn.note_patch(note, now);
        let result = match result {
            Ok(Ok(Applied::Trickled)) => Ok(Patched::Trickled),
            Ok(Ok(Applied::Restarted { ufrag, patched })) => {
                self.sessions.restarted(key, &ufrag);
                Ok(patched)
            }
            // Refused before anything was applied: the session is not driven.
            Ok(Err(Refused::Precondition(e))) => return Err(e),
            Ok(Err(Refused::Kept(e))) => Err(e),
            Ok(Err(Refused::Ended(e))) => {
                self.teardown(key, EndReason::Failed);
                return Err(e);
            }
            Err(panic) => {
                // The session ends now, and the client is told.
                self.note_panic(key, &panic);
                self.end_panicked();
                return Err(MediaError::CannotApply(
                    "the server failed while applying it; the session ended".into(),
                ));
            }
        };
        self.drive(key, now);
        result
    }

    /// Takes over a session negotiated on the request's task: the publisher slot, routes,
    /// registry, timers. Its place under the cap comes with it (`permit`) and leaves with it.
    fn adopt(&mut self, session: NewSession, now: Instant) -> Result<(), MediaError> {
        let NewSession {
            resource,
            role,
            stream,
            negotiated,
            permit,
            started,
            pull,
            remote_candidates,
            layer,
            opening,
        } = session;
        if role.publishes() {
            let conflict = self.config.publisher_conflict;
            if let Some(current) = self
                .sessions
                .publisher_to_replace(&stream, pull, conflict)?
            {
                self.teardown(current, EndReason::Replaced);
            }
            // The stream's viewers start the new publisher afresh: at its first keyframe, even
            // under the old publisher's SSRC.
            for viewer in self.sessions.viewers(&stream).to_vec() {
                if let Some(conn) = self.sessions.conn_mut(viewer) {
                    conn.forget_sources();
                }
            }
        }
        let span = tracing::info_span!("session", %resource, %stream, %role);
        span.in_scope(|| info!("session created"));
        // In a loop now: while it connects, it may make room for a newer session.
        permit.adopted(resource, now);
        let setup = Setup {
            started,
            setup_deadline: started + self.config.ice_timeout,
            span,
            permit,
            max_bitrate: self.config.max_bitrate,
            pull,
            remote_candidates,
            layer,
            opening,
        };
        let entry = Entry {
            resource,
            role,
            stream,
        };
        let key: SessionKey = self.sessions.adopt(entry, Conn::new(negotiated, setup));
        self.drive(key, now);
        self.publish_stats();
        Ok(())
    }
}
