//! A media loop's sessions: the one writer of the three tables that must agree, the connection
//! map, the registry (who is where) and the routes (which session a packet is for). A live session
//! has a [`Conn`], a registry entry and its ICE ufrags routed; an ended one has none of them, and
//! its resource answers from the registry's ended list for the grace period. Everything that
//! changes more than one table is a method here: [`Sessions::adopt`], [`Sessions::teardown`],
//! [`Sessions::restarted`] and [`Sessions::restart_done`].

use std::time::Instant;

use rustc_hash::FxHashMap;

use super::conn::{Conn, Link};
use super::net::routes::{Destination, PathClaim, Routes};
use super::net::transport::PathId;
use super::{MediaError, SessionKey, Stats};
use crate::config::PublisherConflict;
use crate::registry::{Entry, Lookup, Registry};
use crate::report::Level;
use crate::session::{EndReason, ResourceId, Role, StreamName};

/// The sessions of one media loop.
#[derive(Default)]
pub struct Sessions {
    /// Keyed by the loop's own sequential keys, so a fast non-keyed hash is safe here (several
    /// lookups per packet; SipHash was ~4 % of the per-packet instructions under callgrind).
    conns: FxHashMap<SessionKey, Conn>,
    next_key: SessionKey,
    routes: Routes,
    registry: Registry<SessionKey>,
    /// The client reports of the sessions that ended, for the grace period.
    reports: crate::report::kept::Kept,
}

/// A session taken out by [`Sessions::teardown`]: its connection, to close, and the paths it
/// used (its ICE-TCP connections end with it, RFC 6544).
pub struct Removed {
    pub conn: Conn,
    pub paths: Vec<PathId>,
}

/// A session's sends being learnt as its routes ([`Sessions::sending`]).
pub struct Sending<'a> {
    pub conn: &'a mut Conn,
    key: SessionKey,
    routes: &'a mut Routes,
}

impl Sending<'_> {
    /// Learns that the session sent `datagram` on `path` ([`Routes::learn_sent`]).
    pub fn learn_sent(&mut self, path: PathId, datagram: &[u8]) {
        // RFC 7983: STUN starts with 0..=3 (a check to note); anything else teaches the path
        // only, which the session taught already if it sent there since the tables last changed
        // (one route lookup per path, not per datagram).
        let stun = datagram.first().is_some_and(|b| *b <= 3);
        let learnt = Some((path, self.routes.changes()));
        if !stun && *self.conn.learnt() == learnt {
            return;
        }
        self.routes.learn_sent(path, self.key, datagram);
        *self.conn.learnt() = Some((path, self.routes.changes()));
    }

    /// The claims made since the last call ([`Routes::take_claims`]).
    pub fn take_claims(&mut self) -> Vec<PathClaim> {
        self.routes.take_claims()
    }

    /// Whether `path` has answered a check ([`Routes::has_answered`]).
    pub fn has_answered(&self, path: PathId) -> bool {
        self.routes.has_answered(path)
    }

    /// Forgets `path` (an ICE-TCP connection refused by its cap).
    pub fn forget(&mut self, path: PathId) {
        self.routes.forget(path);
    }
}

impl Sessions {
    /// The sessions of loop `me` of `loops` sharing the UDP port.
    pub fn for_loop(me: usize, loops: usize) -> Self {
        Sessions {
            routes: Routes::for_loop(me, loops),
            ..Sessions::default()
        }
    }

    /// Takes a negotiated session in: registered as `entry`, routed by its ufrag.
    pub fn adopt(&mut self, entry: Entry, conn: Conn) -> SessionKey {
        let key = self.next_key;
        self.next_key += 1;
        self.routes.add_ufrag(conn.ufrag(), key);
        self.registry.insert(key, entry);
        self.conns.insert(key, conn);
        key
    }

    /// Ends session `key`: out of the map, its routes and its registry entry (remembered as
    /// ended for `reason`). What is left to close comes back.
    pub fn teardown(
        &mut self,
        key: SessionKey,
        reason: EndReason,
        now: Instant,
    ) -> Option<Removed> {
        let conn = self.conns.remove(&key)?;
        let paths = self.end(key, &conn, reason, now);
        Some(Removed { conn, paths })
    }

    /// Takes session `key`'s connection out of the map only: nothing finds it to call into it
    /// again, while its routes and entry stay until [`Sessions::end`] (a peer connection that
    /// panicked, ended at the end of the wake-up).
    pub fn take(&mut self, key: SessionKey) -> Option<Conn> {
        self.conns.remove(&key)
    }

    /// The rest of the teardown of `conn`, taken out by [`Sessions::take`]: the paths it used.
    pub fn end(
        &mut self,
        key: SessionKey,
        conn: &Conn,
        reason: EndReason,
        now: Instant,
    ) -> Vec<PathId> {
        if let Some(previous) = conn.previous_ufrag() {
            self.routes.remove_ufrag(previous, key);
        }
        let paths = self.routes.remove(key, conn.ufrag());
        if let Some(entry) = self.registry.session(key) {
            let report = conn.report(entry, Some(reason), now);
            let (resource, grace) = (entry.resource, crate::registry::ENDED_GRACE);
            // The session's last log line: its report in one line (none for the server's own).
            if !conn.internal() {
                let judged = crate::report::findings::judge(&report);
                let count = |level| judged.iter().filter(|f| f.level == level).count();
                let (warn, fail) = (count(Level::Warn), count(Level::Fail));
                let worst = judged.first().map(|f| f.text.as_str()).unwrap_or_default();
                conn.span().in_scope(|| {
                    let agent = report.http.user_agent.as_deref().unwrap_or_default();
                    tracing::info!(warn, fail, worst, user_agent = agent, "client report")
                });
            }
            self.reports.keep(resource, report, now, grace);
        }
        self.registry.end(key, now, reason);
        paths
    }

    /// The summary of every live session at `now` (`GET /api/sessions`), then of those that ended
    /// within the grace period.
    pub fn summaries(&self, now: Instant) -> Vec<crate::report::SessionSummary> {
        let ended = self.reports.summaries(now);
        let live = (self.conns.keys()).filter_map(|&key| {
            let entry = self.registry.session(key)?;
            let report = self.report_of(key, now)?;
            let id = crate::report::public_id(&entry.resource);
            Some(crate::report::SessionSummary::of(id, &report))
        });
        live.chain(ended).collect()
    }

    /// The live session whose public id is `id` ([`crate::report::public_id`]).
    pub fn by_public_id(&self, id: &str) -> Option<SessionKey> {
        (self.conns.keys().copied()).find(|&key| {
            (self.registry.session(key))
                .is_some_and(|e| crate::report::public_id(&e.resource) == id)
        })
    }

    /// The report an ended session of public id `id` left, if still kept at `now`.
    pub fn ended_report(&self, id: &str, now: Instant) -> Option<crate::report::Report> {
        self.reports.by_public_id(id, now).cloned()
    }

    /// The live session `key`'s report at `now`, without findings.
    pub fn report_of(&self, key: SessionKey, now: Instant) -> Option<crate::report::Report> {
        let (conn, entry) = (self.conns.get(&key)?, self.registry.session(key)?);
        Some(conn.report(entry, None, now))
    }

    /// The client report of `resource` at `now`: its session's, live, or the one it left when it
    /// ended (within the grace period); without findings.
    pub fn report(
        &self,
        resource: &ResourceId,
        now: Instant,
    ) -> Result<crate::report::Report, MediaError> {
        if let Lookup::Live(key) = self.lookup(resource, now) {
            if let Some(report) = self.report_of(key, now) {
                return Ok(report);
            }
        }
        (self.reports.get(resource, now).cloned()).ok_or(MediaError::UnknownResource)
    }

    /// An ICE restart of session `key` under the new local `ufrag` (RFC 9725 §4.3.3): routed
    /// from now on, with the one before it until [`Sessions::restart_done`]; a second restart
    /// before that stops routing the oldest.
    pub fn restarted(&mut self, key: SessionKey, ufrag: &str) {
        let Some(conn) = self.conns.get_mut(&key) else {
            return;
        };
        if let Some(older) = conn.replace_ufrag(ufrag) {
            self.routes.remove_ufrag(&older, key);
        }
        self.routes.add_ufrag(ufrag, key);
    }

    /// The restart of session `key` completed (the new generation connected): the old ufrag has
    /// no checks left in flight, so it stops naming the session.
    pub fn restart_done(&mut self, key: SessionKey) {
        let Some(conn) = self.conns.get_mut(&key) else {
            return;
        };
        if let Some(previous) = conn.take_previous_ufrag() {
            self.routes.remove_ufrag(&previous, key);
        }
    }

    /// The session a packet that came on `path` is for: the one whose check it answers (which
    /// proves the path, `routes.rs`), else the one it names or its path belongs to.
    pub fn route(&mut self, path: PathId, data: &[u8]) -> Option<SessionKey> {
        let proven = self.routes.proven(path, data);
        proven.or_else(|| self.routes.route(path, data))
    }

    /// Where a packet that reached this loop's own socket goes ([`Routes::destination`]).
    pub fn destination(&mut self, path: PathId, data: &[u8]) -> Destination {
        self.routes.destination(path, data)
    }

    /// The session whose check a Binding success response answers, if one of this loop's did.
    pub fn proven(&mut self, path: PathId, data: &[u8]) -> Option<SessionKey> {
        self.routes.proven(path, data)
    }

    /// Learns another loop's claim ([`Routes::claimed`]).
    pub fn claimed(&mut self, claim: PathClaim) {
        self.routes.claimed(claim);
    }

    /// This loop's claims since the last call, for the other loops.
    pub fn take_claims(&mut self) -> Vec<PathClaim> {
        self.routes.take_claims()
    }

    /// Forgets a path that is gone (a closed ICE-TCP connection).
    pub fn forget_path(&mut self, path: PathId) {
        self.routes.forget(path);
    }

    /// Session `key`'s connection, with its sends learnt as its routes.
    pub fn sending(&mut self, key: SessionKey) -> Option<Sending<'_>> {
        let conn = self.conns.get_mut(&key)?;
        Some(Sending {
            conn,
            key,
            routes: &mut self.routes,
        })
    }

    /// The publisher of `stream` that a new one (`pull`: another node's pull) replaces, if any. A stream has
    /// one publisher. By default a new one takes over (a reconnecting encoder after a network
    /// drop, a reloaded page without DELETE): the old session ends through the one teardown
    /// path, its resource still answers DELETE within the grace period, and viewers continue on
    /// their own SSRC and sequence (`Forwarder`). With `reject`, only a publisher whose consent
    /// checks already fail (RFC 7675) is replaced; a live one keeps the stream.
    ///
    /// Cluster mode: a pull stands in for a publisher elsewhere; a real publisher here replaces
    /// it, and it never replaces a real one (which took the stream while the pull was being set
    /// up).
    pub fn publisher_to_replace(
        &self,
        stream: &StreamName,
        pull: bool,
        conflict: PublisherConflict,
    ) -> Result<Option<SessionKey>, MediaError> {
        let Some(current) = self.registry.publisher(stream) else {
            return Ok(None);
        };
        let conn = self.conns.get(&current);
        let fading = conn.map(Conn::link) == Some(Link::Disconnected);
        let current_pull = conn.is_some_and(Conn::pull);
        let taken = (pull && !current_pull)
            || (!fading && !current_pull && conflict == PublisherConflict::Reject);
        if taken {
            return Err(MediaError::PublisherExists(stream.to_string()));
        }
        Ok(Some(current))
    }

    /// Forgets ended resources past their grace period.
    pub fn prune(&mut self, now: Instant) {
        self.registry.prune(now);
    }

    pub fn conn(&self, key: SessionKey) -> Option<&Conn> {
        self.conns.get(&key)
    }

    pub fn conn_mut(&mut self, key: SessionKey) -> Option<&mut Conn> {
        self.conns.get_mut(&key)
    }

    /// Who session `key` is: its resource, role and stream.
    pub fn entry(&self, key: SessionKey) -> Option<&Entry> {
        self.registry.session(key)
    }

    /// Whether session `key` publishes (a publisher or an echo).
    pub fn publishes(&self, key: SessionKey) -> bool {
        self.entry(key).is_some_and(|e| e.role.publishes())
    }

    /// The live publisher of `stream`.
    pub fn publisher(&self, stream: &StreamName) -> Option<SessionKey> {
        self.registry.publisher(stream)
    }

    /// The viewers of `stream`.
    pub fn viewers(&self, stream: &StreamName) -> &[SessionKey] {
        self.registry.viewers(stream)
    }

    /// The publisher of the stream session `key` plays or publishes.
    pub fn publisher_of(&self, key: SessionKey) -> Option<SessionKey> {
        self.publisher(&self.entry(key)?.stream)
    }

    /// What `resource` names.
    pub fn lookup(&self, resource: &ResourceId, now: Instant) -> Lookup<SessionKey> {
        self.registry.lookup(resource, now)
    }

    /// The live session `resource` names.
    pub fn live(&self, resource: &ResourceId, now: Instant) -> Option<SessionKey> {
        match self.lookup(resource, now) {
            Lookup::Live(key) => Some(key),
            _ => None,
        }
    }

    /// A DELETE of a resource that ended on its own ([`Registry::delete_ended`]).
    pub fn delete_ended(&mut self, resource: &ResourceId, now: Instant) -> bool {
        let deleted = self.registry.delete_ended(resource, now);
        if deleted {
            self.reports.deleted(resource);
        }
        deleted
    }

    /// Every stream: its name, its publisher and its viewers.
    pub fn streams(
        &self,
    ) -> impl Iterator<Item = (&StreamName, Option<SessionKey>, &[SessionKey])> {
        self.registry.streams_iter()
    }

    /// The keys of every live session.
    pub fn keys(&self) -> Vec<SessionKey> {
        self.conns.keys().copied().collect()
    }

    /// The counts a loop publishes (`/api/health`, the gauges).
    pub fn stats(&self) -> Stats {
        let idle = self.conns.is_empty() && self.registry.is_empty() && self.routes.is_empty();
        let count = |link| self.conns.values().filter(|s| s.link() == link).count();
        let mut by_role = [[0; 3]; 3];
        for (key, conn) in &self.conns {
            let Some(entry) = self.registry.session(*key) else {
                continue;
            };
            let role = match entry.role {
                Role::Publisher => 0,
                Role::Viewer => 1,
                Role::Echo => 2,
            };
            let link = match conn.link() {
                Link::Connecting => 0,
                Link::Connected => 1,
                Link::Disconnected => 2,
            };
            by_role[role][link] += 1;
        }
        Stats {
            sessions: self.conns.len(),
            connected: count(Link::Connected),
            disconnected: count(Link::Disconnected),
            idle,
            running: true,
            by_role,
            streams: self.registry.streams(),
        }
    }
}
