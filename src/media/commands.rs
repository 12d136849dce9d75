//! The media loop's side of the HTTP plane's commands: create, delete, look up.

use std::sync::atomic::Ordering;
use std::time::Instant;

use tracing::info;

use super::conn::{Conn, Leg, Link};
use super::event_loop::MediaLoop;
use super::forward::Forwarder;
use super::offer::OfferInfo;
use super::peer;
use super::routes::SessionKey;
use super::{Command, Created};
use crate::config::PublisherConflict;
use crate::error::ApiError;
use crate::registry::Lookup;
use crate::session::{EndReason, ResourceId, Role, StreamName};

impl MediaLoop {
    pub(super) fn handle_command(&mut self, command: Command) {
        let now = Instant::now();
        match command {
            Command::Create {
                role,
                stream,
                offer,
                info,
                reply,
            } => {
                let result = if self.reserve() {
                    let created = self.create(role, stream, offer, &info, now);
                    if created.is_err() {
                        self.release();
                    }
                    created
                } else {
                    Err(ApiError::OverCapacity)
                };
                let resource = result.as_ref().ok().map(|c| c.resource);
                if reply.send(result).is_err() {
                    // The client gave up before the answer: nobody can reach this session.
                    if let Some(key) = resource.and_then(|r| self.live_key(&r, now)) {
                        self.teardown(key, EndReason::Deleted);
                    }
                }
            }
            Command::Delete { resource, reply } => {
                let _ = reply.send(self.delete(resource, now));
            }
            Command::Exists { resource, reply } => {
                let _ = reply.send(self.registry.lookup(&resource, now) != Lookup::Unknown);
            }
        }
    }

    /// RFC 9725 §4.4: DELETE ends the session. A resource that already ended on its own (the peer
    /// closed first) answers 200 once more within the grace period; after that, 404.
    fn delete(&mut self, resource: ResourceId, now: Instant) -> Result<(), ApiError> {
        match self.registry.lookup(&resource, now) {
            Lookup::Live(key) => {
                self.teardown(key, EndReason::Deleted);
                self.registry.forget_ended(&resource, now);
                Ok(())
            }
            Lookup::Ended => {
                self.registry.forget_ended(&resource, now);
                Ok(())
            }
            Lookup::Unknown => Err(ApiError::NotFound("no such resource")),
        }
    }

    fn live_key(&self, resource: &ResourceId, now: Instant) -> Option<SessionKey> {
        match self.registry.lookup(resource, now) {
            Lookup::Live(key) => Some(key),
            _ => None,
        }
    }

    /// Takes a place under the cap shared by every media loop; `teardown` gives it back.
    fn reserve(&self) -> bool {
        if self.live.fetch_add(1, Ordering::SeqCst) < self.config.max_sessions {
            return true;
        }
        self.release();
        false
    }

    /// Gives back a place taken by `reserve`.
    pub(super) fn release(&self) {
        self.live.fetch_sub(1, Ordering::SeqCst);
    }

    fn create(
        &mut self,
        role: Role,
        stream: StreamName,
        offer: String,
        info: &OfferInfo,
        now: Instant,
    ) -> Result<Created, ApiError> {
        let negotiated = peer::negotiate(&self.settings, role, info, offer, now)?;
        // Only a publisher that is ready to go may push the current one out.
        if role.publishes() {
            self.claim_publisher_slot(&stream)?;
        }
        let key = self.next_key;
        self.next_key += 1;
        let resource = ResourceId::random();
        let span = tracing::info_span!("session", %resource, %stream, %role);
        span.in_scope(|| info!("session created"));
        self.routes.add_ufrag(&negotiated.ufrag, key);
        self.registry.insert(resource, key, role, stream.clone());
        // RFC 9725 §4.3.1: the ETag identifies the ICE session; it changes only on ICE restart.
        let etag = format!("\"{}\"", negotiated.ufrag);
        let leg = negotiated.sender.map(|(sender, ssrc, pt)| Leg {
            sender,
            forwarder: Forwarder::new(ssrc, pt),
        });
        let conn = Conn {
            resource,
            role,
            stream,
            pc: negotiated.pc,
            ufrag: negotiated.ufrag,
            link: Link::Connecting,
            setup_deadline: now + self.config.ice_timeout,
            armed: None,
            leg,
            span,
            early_dtls: Vec::new(),
        };
        self.sessions.insert(key, conn);
        self.drive(key, now);
        self.publish_stats();
        Ok(Created {
            resource,
            answer: negotiated.answer,
            etag,
        })
    }

    /// A stream has one publisher. By default a new one takes over (a reconnecting encoder after
    /// a network drop, a reloaded page without DELETE): the old session ends through the one
    /// teardown path, its resource still answers DELETE within the grace period, and viewers
    /// continue on their own SSRC and sequence (`Forwarder`). With `reject`, only a publisher
    /// whose consent checks already fail (RFC 7675) is replaced; a live one keeps the stream.
    fn claim_publisher_slot(&mut self, stream: &StreamName) -> Result<(), ApiError> {
        let Some(current) = self.registry.publisher(stream) else {
            return Ok(());
        };
        let fading = self.sessions.get(&current).map(|c| c.link) == Some(Link::Disconnected);
        if !fading && self.config.publisher_conflict == PublisherConflict::Reject {
            return Err(ApiError::PublisherExists(stream.to_string()));
        }
        self.teardown(current, EndReason::Replaced);
        Ok(())
    }
}
