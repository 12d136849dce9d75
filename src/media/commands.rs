//! The media loop's side of the HTTP plane's commands: adopt a negotiated session, delete, look
//! up. None of them builds a peer connection: that happened on the request's task.

use std::time::Instant;

use rtc::rtp_transceiver::rtp_sender::RtpCodecKind;
use tracing::info;

use super::bitrate::Budget;
use super::codecs::StreamCodecs;
use super::conn::{Conn, Link};
use super::event_loop::MediaLoop;
use super::routes::SessionKey;
use super::sources::rid_id;
use super::{Command, MediaError, NewSession, ResourceState};
use crate::config::PublisherConflict;
use crate::registry::{Entry, Lookup};
use crate::session::{EndReason, ResourceId, Role, StreamName};

impl MediaLoop {
    pub(super) fn handle_command(&mut self, command: Command) {
        let now = Instant::now();
        match command {
            Command::Create { session, reply } => {
                // A client that gave up while its session waited in the queue must not take a
                // stream over from a live publisher; dropping the session frees its place.
                if reply.is_closed() {
                    return;
                }
                let resource = session.resource;
                let result = self.adopt(*session, now);
                if reply.send(result).is_err() {
                    // The client gave up before the answer: nobody can reach this session.
                    if let Some(key) = self.live_key(&resource, now) {
                        self.teardown(key, EndReason::Abandoned);
                    }
                }
            }
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
                if let Some(key) = self.registry.publisher(&stream) {
                    self.teardown(key, reason);
                }
                let _ = reply.send(());
            }
            Command::Exists { resource, reply } => {
                let _ = reply.send(match self.registry.lookup(&resource, now) {
                    Lookup::Live(_) => ResourceState::Live,
                    Lookup::Ended(reason) => ResourceState::Ended(reason),
                    Lookup::Unknown => ResourceState::Unknown,
                });
            }
            Command::StreamCodecs { stream, reply } => {
                let _ = reply.send(self.stream_codecs(&stream));
            }
            Command::ListStreams { reply } => {
                let _ = reply.send(self.list_streams(now));
            }
            Command::Layer {
                resource,
                change,
                reply,
            } => {
                let result = match self.live_key(&resource, now) {
                    Some(key) => self.layer(key, change, now),
                    None => Err(MediaError::UnknownResource),
                };
                let _ = reply.send(result);
            }
            Command::Patch {
                resource,
                patch,
                reply,
            } => {
                let result = match self.live_key(&resource, now) {
                    Some(key) => self.patch(key, patch, now),
                    None => Err(MediaError::UnknownResource),
                };
                let _ = reply.send(result);
            }
            #[cfg(test)]
            Command::Panic => panic!("media loop told to panic (test)"),
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
        match self.registry.lookup(&resource, now) {
            Lookup::Live(key) => {
                self.teardown(key, reason);
                Ok(())
            }
            Lookup::Ended(_) if self.registry.delete_ended(&resource, now) => Ok(()),
            Lookup::Ended(_) | Lookup::Unknown => Err(MediaError::UnknownResource),
        }
    }

    /// A WHEP viewer's video layer ([`Command::Layer`]): changed to `change` if given, then
    /// reported. A rid the publisher has never sent is refused while it sends others (a typo
    /// would otherwise silently give the top layer); before the publisher sends, any rid waits.
    fn layer(
        &mut self,
        key: SessionKey,
        change: Option<Option<String>>,
        now: Instant,
    ) -> Result<super::LayerState, MediaError> {
        let entry = self
            .registry
            .session(key)
            .ok_or(MediaError::UnknownResource)?;
        if entry.role != Role::Viewer {
            return Err(MediaError::BadLayer(
                "only a WHEP viewer chooses a layer".into(),
            ));
        }
        let publisher = self.registry.publisher(&entry.stream);
        let sources = publisher
            .and_then(|p| self.sessions.get(&p))
            .map(|p| &p.sources);
        if let (Some(Some(rid)), Some(sources)) = (&change, sources) {
            check_rid(rid, sources, now)?;
        }
        let layers = sources.map(|s| s.layers(now)).unwrap_or_default();
        if let Some(change) = change {
            let conn = self
                .sessions
                .get_mut(&key)
                .ok_or(MediaError::UnknownResource)?;
            let ask = choose_layer(conn, change, &layers)?;
            if let (Some(ssrc), Some(publisher)) = (ask, publisher) {
                // The switch happens at the new layer's keyframe: ask for one now.
                self.request_keyframe(publisher, Some(ssrc), now);
            }
        }
        let publisher = publisher.and_then(|p| self.sessions.get(&p));
        let viewer = self.sessions.get(&key).ok_or(MediaError::UnknownResource)?;
        let info = player_info(viewer, publisher);
        Ok(super::LayerState {
            requested: info.requested,
            current: info.layer,
            layers: publisher
                .map(|p| p.sources.info(now))
                .unwrap_or_default()
                .into_iter()
                .filter(|s| s.kind == "video")
                .collect(),
        })
    }

    /// This loop's streams, for `GET /api/streams`.
    fn list_streams(&self, now: Instant) -> Vec<super::StreamInfo> {
        self.registry
            .streams_iter()
            .map(|(name, publisher, viewers)| super::StreamInfo {
                stream: name.to_string(),
                publisher: publisher.and_then(|key| {
                    let conn = self.sessions.get(&key)?;
                    let role = self.registry.session(key)?.role;
                    Some(super::PublisherInfo {
                        kind: match role {
                            Role::Echo => "echo",
                            _ if conn.relay => super::RELAY,
                            _ => "whip",
                        },
                        state: conn.link.name(),
                        codecs: conn.codecs.iter().map(|(_, c)| c.clone()).collect(),
                        uptime_seconds: now.saturating_duration_since(conn.started).as_secs_f64(),
                        sources: conn.sources.info(now),
                        unbound_packets: conn.pc.unbound_rtp_packets(),
                    })
                }),
                viewers: viewers.len(),
                edges: viewers
                    .iter()
                    .filter(|k| self.sessions.get(k).is_some_and(|c| c.relay))
                    .count(),
                players: {
                    let publisher = publisher.and_then(|p| self.sessions.get(&p));
                    viewers
                        .iter()
                        .filter_map(|k| self.sessions.get(k))
                        .map(|viewer| player_info(viewer, publisher))
                        .collect()
                },
            })
            .collect()
    }

    /// The codecs of `stream`'s live publisher, and those its first viewer was given.
    fn stream_codecs(&self, stream: &StreamName) -> StreamCodecs {
        let codecs_of = |key: Option<SessionKey>| {
            key.and_then(|k| self.sessions.get(&k))
                .map(|c| c.codecs.clone())
                .unwrap_or_default()
        };
        StreamCodecs {
            publisher: codecs_of(self.registry.publisher(stream)),
            viewers: codecs_of(self.registry.viewers(stream).first().copied()),
        }
    }

    fn live_key(&self, resource: &ResourceId, now: Instant) -> Option<SessionKey> {
        match self.registry.lookup(resource, now) {
            Lookup::Live(key) => Some(key),
            _ => None,
        }
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
            relay,
            remote_candidates,
            layer,
        } = session;
        if role.publishes() {
            self.claim_publisher_slot(&stream, relay)?;
            // The stream's viewers start the new publisher afresh: at its first keyframe, even
            // under the old publisher's SSRC.
            for viewer in self.registry.viewers(&stream).to_vec() {
                if let Some(conn) = self.sessions.get_mut(&viewer) {
                    for leg in &mut conn.legs {
                        leg.forwarder.forget_source();
                    }
                }
            }
        }
        let key = self.next_key;
        self.next_key += 1;
        let span = tracing::info_span!("session", %resource, %stream, %role);
        span.in_scope(|| info!("session created"));
        self.routes.add_ufrag(&negotiated.ufrag, key);
        self.registry.insert(
            key,
            Entry {
                resource,
                role,
                stream,
            },
        );
        let deadline = started + self.config.ice_timeout;
        let budget = Budget::new(self.config.max_bitrate);
        // In a loop now: while it connects, it may make room for a newer session.
        permit.adopted(resource, now);
        let mut conn = Conn::new(negotiated, budget, started, deadline, span, permit);
        conn.relay = relay;
        conn.remote_candidates = remote_candidates;
        if let Some(leg) = conn.legs.iter_mut().find(|l| l.kind == RtpCodecKind::Video) {
            leg.wanted = layer.map(|rid| {
                let id = rid_id(&rid);
                (rid, id)
            });
        }
        self.sessions.insert(key, conn);
        self.drive(key, now);
        self.publish_stats();
        Ok(())
    }

    /// A stream has one publisher. By default a new one takes over (a reconnecting encoder after
    /// a network drop, a reloaded page without DELETE): the old session ends through the one
    /// teardown path, its resource still answers DELETE within the grace period, and viewers
    /// continue on their own SSRC and sequence (`Forwarder`). With `reject`, only a publisher
    /// whose consent checks already fail (RFC 7675) is replaced; a live one keeps the stream.
    ///
    /// Cluster mode: a pull (`relay`) stands in for a publisher elsewhere; a real publisher here
    /// replaces it, and it never replaces a real one (which took the stream while the pull was
    /// being set up).
    fn claim_publisher_slot(&mut self, stream: &StreamName, relay: bool) -> Result<(), MediaError> {
        let Some(current) = self.registry.publisher(stream) else {
            return Ok(());
        };
        let fading = self.sessions.get(&current).map(|c| c.link) == Some(Link::Disconnected);
        let current_relay = self.sessions.get(&current).is_some_and(|c| c.relay);
        if relay && !current_relay {
            return Err(MediaError::PublisherExists(stream.to_string()));
        }
        if !fading && !current_relay && self.config.publisher_conflict == PublisherConflict::Reject
        {
            return Err(MediaError::PublisherExists(stream.to_string()));
        }
        self.teardown(current, EndReason::Replaced);
        Ok(())
    }
}

/// A viewer as `GET /api/streams` lists it: its video leg's layer, by the rid the publisher's
/// source has.
fn player_info(viewer: &Conn, publisher: Option<&Conn>) -> super::PlayerInfo {
    let video = viewer.legs.iter().find(|l| l.kind == RtpCodecKind::Video);
    let layer = video
        .and_then(|l| l.forwarder.source_ssrc())
        .zip(publisher)
        .and_then(|(ssrc, p)| p.sources.rid_of(ssrc))
        .map(str::to_owned);
    super::PlayerInfo {
        state: viewer.link.name(),
        layer,
        requested: video
            .and_then(|l| l.wanted.as_ref())
            .map(|(rid, _)| rid.clone()),
        edge: viewer.relay,
    }
}

/// A rid a viewer asks for is refused when the publisher, sending for a window already (its
/// layers start one by one), has never sent it: a typo would otherwise give the top layer.
fn check_rid(rid: &str, sources: &super::sources::Sources, now: Instant) -> Result<(), MediaError> {
    let rids = sources.rids();
    if sources.settled(now) && !rids.is_empty() && !rids.contains(&rid) {
        return Err(MediaError::BadLayer(format!(
            "no layer {rid:?}: the publisher sends {}",
            rids.join(", ")
        )));
    }
    Ok(())
}

/// Sets viewer `conn`'s layer to `change` (a rid, or none for the top one); the SSRC of the
/// layer it should switch to now, if that is not the one it plays.
fn choose_layer(
    conn: &mut Conn,
    change: Option<String>,
    layers: &super::sources::Layers,
) -> Result<Option<u32>, MediaError> {
    let Some(leg) = conn.legs.iter_mut().find(|l| l.kind == RtpCodecKind::Video) else {
        return Err(MediaError::BadLayer("this session plays no video".into()));
    };
    leg.wanted = change.map(|rid| {
        let id = rid_id(&rid);
        (rid, id)
    });
    let target = layers.target(leg.wanted_id());
    let requested = leg.wanted.as_ref().map(|(rid, _)| rid.as_str());
    conn.span
        .in_scope(|| info!(layer = requested.unwrap_or("top"), "layer chosen"));
    Ok(target.filter(|&t| Some(t) != leg.forwarder.source_ssrc()))
}
