//! Which session an inbound packet belongs to.
//!
//! All sessions of a loop share its transports, so the media loop demultiplexes by hand (the
//! design of pion's UDPMux and str0m's chat example): a STUN Binding request names its session by
//! the local ufrag in USERNAME (RFC 8445 §7.2.2: "LFRAG:RFRAG" from the receiver's point of view);
//! every other packet is routed by its path (a remote address on the UDP socket, or a TCP
//! connection) learnt from the paths the session itself sends on (a path nobody owns yet), and
//! moved from one session to another only on proof of return routability: a Binding success
//! response, on that path, to a check the session itself sent there (its transaction id: RFC 8445
//! §7.2.5.2.1, RFC 8489 §6, RFC 7675 §5.1). The session's answers to requests prove nothing: a
//! request's source address can be spoofed.
//!
//! Loops that share the UDP port (`mesh.rs`) each keep their own tables and tell the others
//! which remote addresses they own ([`PathClaim`]): a datagram the kernel gives to another loop's
//! socket is handed to the owner by the ufrag a request names or by that claim
//! ([`Destination::Loop`]). A claim proven by an answer takes a path from whichever loop had it.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use rustc_hash::FxHashMap;

use super::stun::{
    binding_transaction, stun_request_local_ufrag, BINDING_REQUEST_TYPE, BINDING_SUCCESS_TYPE,
};
use super::transport::PathId;
use crate::media::negotiate::peer::IceCredentials;

pub use crate::media::SessionKey;

/// Binding requests remembered for their answers: a check is retransmitted for a few seconds
/// at most, and consent checks go out every couple of seconds per session.
const CHECK_TTL: Duration = Duration::from_secs(10);
/// Checks remembered per loop at most (a few per session); beyond it, expired ones are
/// forgotten, and if none has expired a new check is not remembered (its answer then moves no
/// path: the next check's will).
const MAX_CHECKS: usize = 16_384;

/// Where a packet that reached a loop's own socket goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Destination {
    /// The session whose check it answers (the path is proven and now that session's).
    Proven(SessionKey),
    /// A session of this loop, by its ufrag or its path.
    Session(SessionKey),
    /// Another loop on the same port: the one its ufrag names or that claimed its path.
    Loop(usize),
    /// No session.
    Nowhere,
}

/// What one loop tells the others about a remote address on the shared UDP port.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PathClaim {
    pub addr: SocketAddr,
    /// The loop that sends it.
    pub owner: usize,
    pub kind: ClaimKind,
}

/// How a loop came to own a path, or that it no longer does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClaimKind {
    /// A session of it sent there first (no other loop's claim was known).
    Learnt,
    /// An answer to its session's check came from there: it takes the path from any loop.
    Proven,
    /// It no longer owns the path.
    Released,
}

/// The routing tables of one socket. Owned by the media loop; no locks.
#[derive(Debug, Default)]
pub struct Routes {
    by_ufrag: HashMap<String, SessionKey>,
    /// Remote addresses are chosen by clients: keep the DoS-resistant default hasher.
    by_path: HashMap<PathId, SessionKey>,
    paths_of: FxHashMap<SessionKey, Vec<PathId>>,
    /// The Binding requests sessions sent, by transaction id: whose, on which path, when.
    checks: FxHashMap<[u8; 12], (SessionKey, PathId, Instant)>,
    /// Paths that answered a session's check (and are still a session's).
    answered: HashSet<PathId>,
    /// This loop's index, among `loops` on the UDP port (with one, no claim is made).
    me: usize,
    loops: usize,
    /// Remote addresses other loops claimed, and which.
    foreign: HashMap<SocketAddr, usize>,
    /// This loop's claims not yet told to the others.
    journal: Vec<PathClaim>,
    /// Bumped whenever a path leaves `by_path` or `foreign`: a sender that learnt its path
    /// before the last change need not learn it again ([`Routes::changes`]).
    changes: u64,
}

impl Routes {
    /// The tables of loop `me` of `loops` sharing the UDP port.
    pub fn for_loop(me: usize, loops: usize) -> Self {
        Routes {
            me,
            loops,
            ..Routes::default()
        }
    }

    /// Registers a session's local ICE ufrag.
    pub fn add_ufrag(&mut self, ufrag: &str, key: SessionKey) {
        self.by_ufrag.insert(ufrag.to_owned(), key);
    }

    /// Forgets a ufrag of session `key` (the one before an ICE restart's).
    pub fn remove_ufrag(&mut self, ufrag: &str, key: SessionKey) {
        if self.by_ufrag.get(ufrag) == Some(&key) {
            self.by_ufrag.remove(ufrag);
        }
    }

    /// Learns that session `key` sent `datagram` on `path`. A path is one session's: a
    /// session's own sends (its connectivity checks, DTLS, media) claim a path no other session
    /// has, and its Binding requests are remembered, so that an answer to one of them can prove
    /// the path ([`Routes::proven`]). No send takes a path over from another session: a success
    /// response the session sends answers a request whose source address anyone could have
    /// written (nor from another loop on the port: [`Routes::claimed`]).
    pub fn learn_sent(&mut self, path: PathId, key: SessionKey, datagram: &[u8]) {
        if let Some(id) = binding_transaction(datagram, BINDING_REQUEST_TYPE) {
            self.note_check(id, key, path, Instant::now());
        }
        if !self.by_path.contains_key(&path) && self.foreign_owner(path).is_none() {
            self.learn(path, key, ClaimKind::Learnt);
        }
    }

    fn note_check(&mut self, id: [u8; 12], key: SessionKey, path: PathId, now: Instant) {
        if self.checks.len() >= MAX_CHECKS {
            self.checks
                .retain(|_, (_, _, at)| now.saturating_duration_since(*at) < CHECK_TTL);
            if self.checks.len() >= MAX_CHECKS {
                return;
            }
        }
        self.checks.insert(id, (key, path, now));
    }

    /// The session a Binding success response that came on `path` proves the path for: the one
    /// that sent the check it answers, on that same path. The path becomes that session's (a
    /// client that reuses its port for a new session moves the route with it; the old session,
    /// still sending consent checks there until it times out, gets no answers and takes nothing
    /// back).
    pub fn proven(&mut self, path: PathId, datagram: &[u8]) -> Option<SessionKey> {
        let id = binding_transaction(datagram, BINDING_SUCCESS_TYPE)?;
        let (key, sent_on, _) = self.checks.remove(&id)?;
        if sent_on != path {
            return None;
        }
        // The first proof of a path tells the other loops even when this loop's session had it
        // already: a loop that learnt it at the same time gives it up.
        let first_proof = self.answered.insert(path);
        if !self.learn(path, key, ClaimKind::Proven) && first_proof {
            self.note(path, ClaimKind::Proven);
        }
        Some(key)
    }

    /// Whether `path` has answered a session's check.
    pub fn has_answered(&self, path: PathId) -> bool {
        self.answered.contains(&path)
    }

    /// Makes `path` session `key`'s; a path new to this loop is claimed as `how` (whether it
    /// was).
    fn learn(&mut self, path: PathId, key: SessionKey, how: ClaimKind) -> bool {
        let new = match self.by_path.insert(path, key) {
            Some(old) if old == key => return false,
            Some(old) => {
                if let Some(list) = self.paths_of.get_mut(&old) {
                    list.retain(|p| *p != path);
                }
                false
            }
            None => {
                self.note(path, how);
                true
            }
        };
        self.paths_of.entry(key).or_default().push(path);
        new
    }

    /// Journals a change of this loop's UDP paths for the other loops on the port.
    fn note(&mut self, path: PathId, kind: ClaimKind) {
        if let (PathId::Udp(addr), true) = (path, self.loops > 1) {
            self.changes += 1;
            self.foreign.remove(&addr);
            let owner = self.me;
            self.journal.push(PathClaim { addr, owner, kind });
        }
    }

    /// How many times a path left the tables: a session that learnt its path when this was
    /// the same has nothing more to teach by sending there (but its checks).
    pub fn changes(&self) -> u64 {
        self.changes
    }

    /// The claims made since the last call, to tell the other loops.
    pub fn take_claims(&mut self) -> Vec<PathClaim> {
        std::mem::take(&mut self.journal)
    }

    /// Another loop's claim: a proven one takes the path from whichever loop had it (this loop's
    /// session included); a learnt one takes a path nobody claimed (the loop that sent there first
    /// keeps it until an answer decides).
    pub fn claimed(&mut self, claim: PathClaim) {
        let PathClaim { addr, owner, kind } = claim;
        if owner == self.me || owner >= self.loops {
            return;
        }
        let path = PathId::Udp(addr);
        match kind {
            ClaimKind::Released => {
                if self.foreign.get(&addr) == Some(&owner) {
                    self.changes += 1;
                    self.foreign.remove(&addr);
                }
            }
            ClaimKind::Learnt if self.by_path.contains_key(&path) => {}
            ClaimKind::Learnt => {
                self.foreign.entry(addr).or_insert(owner);
            }
            ClaimKind::Proven => {
                self.foreign.insert(addr, owner);
                self.drop_path(path);
            }
        }
    }

    /// The loop that claimed `path`, when another one did.
    fn foreign_owner(&self, path: PathId) -> Option<usize> {
        match path {
            PathId::Udp(addr) => self.foreign.get(&addr).copied(),
            PathId::Tcp(_) => None,
        }
    }

    /// Where a packet that reached this loop's own socket goes: the session whose check it
    /// answers, the one it names or whose path it came on, else the loop that does (a STUN
    /// request's ufrag names its loop; other packets go by the claims). ICE-TCP connections are
    /// their loop's already, and are never handed over.
    pub fn destination(&mut self, path: PathId, packet: &[u8]) -> Destination {
        match self.proven(path, packet) {
            Some(key) => Destination::Proven(key),
            None => self.find(path, packet, true),
        }
    }

    /// The session a packet names by its ufrag, else the one its path belongs to; with
    /// `across_loops`, first the loop its ufrag names, then the loop that claimed its path.
    fn find(&self, path: PathId, packet: &[u8], across_loops: bool) -> Destination {
        if let Some(ufrag) = stun_request_local_ufrag(packet) {
            if let Some(&key) = self.by_ufrag.get(&ufrag) {
                return Destination::Session(key);
            }
            let named = IceCredentials::loop_of(&ufrag);
            let other = named.filter(|&i| across_loops && i != self.me && i < self.loops);
            if let (Some(owner), PathId::Udp(_)) = (other, path) {
                return Destination::Loop(owner);
            }
        }
        if let Some(&key) = self.by_path.get(&path) {
            return Destination::Session(key);
        }
        let claimed = self.foreign_owner(path).filter(|_| across_loops);
        claimed.map_or(Destination::Nowhere, Destination::Loop)
    }

    /// The session a packet that came on `path` belongs to: the one a STUN request names by
    /// ufrag, else the one that path was learnt for. A request does not teach its path: its
    /// USERNAME is not yet checked (anyone who saw or guessed the ufrag can send one, from any
    /// address), so the path is learnt only when the session answers on it ([`Routes::learn`]
    /// from the loop's sends), which rtc does for a request whose integrity checks out.
    pub fn route(&self, path: PathId, packet: &[u8]) -> Option<SessionKey> {
        match self.find(path, packet, false) {
            Destination::Session(key) => Some(key),
            _ => None,
        }
    }

    /// Forgets a path that is gone (a closed ICE-TCP connection).
    pub fn forget(&mut self, path: PathId) {
        if self.drop_path(path) {
            self.note(path, ClaimKind::Released);
        }
    }

    /// Takes `path` from the session that has it; whether one had.
    fn drop_path(&mut self, path: PathId) -> bool {
        self.answered.remove(&path);
        let Some(key) = self.by_path.remove(&path) else {
            return false;
        };
        self.changes += 1;
        if let Some(list) = self.paths_of.get_mut(&key) {
            list.retain(|p| *p != path);
        }
        true
    }

    /// Forgets everything about a session (part of teardown); returns the paths it had, so
    /// that connections of its own (ICE-TCP) can be closed.
    pub fn remove(&mut self, key: SessionKey, ufrag: &str) -> Vec<PathId> {
        self.remove_ufrag(ufrag, key);
        self.checks.retain(|_, (k, _, _)| *k != key);
        let paths = self.paths_of.remove(&key).unwrap_or_default();
        for path in &paths {
            if self.by_path.get(path) == Some(&key) {
                self.changes += 1;
                self.by_path.remove(path);
                self.answered.remove(path);
                self.note(*path, ClaimKind::Released);
            }
        }
        paths
    }

    /// Whether no route of this loop's own is left (tests and leak checks; the other loops'
    /// claims are theirs to release).
    pub fn is_empty(&self) -> bool {
        self.by_ufrag.is_empty()
            && self.by_path.is_empty()
            && self.paths_of.is_empty()
            && self.checks.is_empty()
            && self.answered.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rtc::stun::attributes::ATTR_USERNAME;
    use rtc::stun::message::{Message, Setter, TransactionId, BINDING_REQUEST};
    use rtc::stun::textattrs::Username;

    fn binding_request(username: &str) -> Vec<u8> {
        let mut m = Message::new();
        let setters: Vec<Box<dyn Setter>> = vec![
            Box::new(BINDING_REQUEST),
            Box::new(TransactionId::new()),
            Box::new(Username::new(ATTR_USERNAME, username.to_owned())),
        ];
        m.build(&setters).unwrap();
        m.raw
    }

    fn addr(port: u16) -> PathId {
        PathId::Udp(std::net::SocketAddr::from(([127, 0, 0, 1], port)))
    }

    fn tcp(n: u64) -> PathId {
        PathId::Tcp(crate::media::net::tcp::TcpConnId(n))
    }

    #[test]
    fn parses_local_ufrag() {
        assert_eq!(
            stun_request_local_ufrag(&binding_request("srv:cli")).as_deref(),
            Some("srv")
        );
        assert_eq!(stun_request_local_ufrag(&[0x80; 40]), None);
        assert_eq!(stun_request_local_ufrag(&[0u8; 20]), None);
    }

    #[test]
    fn a_request_routes_by_ufrag_but_only_an_answer_teaches_its_path() {
        let mut routes = Routes::default();
        routes.add_ufrag("srv", 7);
        assert_eq!(routes.route(addr(1000), &[0x80, 0, 0, 0]), None);
        assert_eq!(
            routes.route(addr(1000), &binding_request("srv:cli")),
            Some(7)
        );
        // Not checked yet (a spoofed source or a guessed ufrag): the path is not the session's.
        assert_eq!(routes.route(addr(1000), &[0x80, 0, 0, 0]), None);
        // The session answered on it (rtc checked the request's integrity).
        routes.learn(addr(1000), 7, ClaimKind::Learnt);
        assert_eq!(routes.route(addr(1000), &[0x80, 0, 0, 0]), Some(7));
        assert_eq!(
            routes.route(addr(1001), &binding_request("other:cli")),
            None
        );
    }

    #[test]
    fn tcp_connections_route_like_addresses_and_never_collide_with_them() {
        let mut routes = Routes::default();
        routes.add_ufrag("srv", 7);
        routes.add_ufrag("other", 8);
        assert_eq!(routes.route(tcp(1), &[0x80, 0]), None);
        assert_eq!(routes.route(tcp(1), &binding_request("srv:cli")), Some(7));
        routes.learn(tcp(1), 7, ClaimKind::Learnt);
        assert_eq!(routes.route(tcp(1), &[0x80, 0]), Some(7));
        // The same numbers as a UDP port, or another connection, are other paths.
        assert_eq!(routes.route(addr(1), &[0x80, 0]), None);
        assert_eq!(routes.route(tcp(2), &binding_request("other:cli")), Some(8));
        routes.learn(tcp(2), 8, ClaimKind::Learnt);
        assert_eq!(routes.route(tcp(2), &[0x80, 0]), Some(8));
        routes.learn(addr(9), 7, ClaimKind::Learnt);
        routes.remove(7, "srv");
        assert_eq!(routes.route(tcp(1), &[0x80, 0]), None);
        assert_eq!(routes.route(addr(9), &[0x80, 0]), None);
        routes.remove(8, "other");
        assert!(routes.is_empty());
    }

    /// A STUN message of type `typ` with transaction id `id` (all its bytes `id`).
    fn stun(typ: [u8; 2], id: u8) -> Vec<u8> {
        let mut m = vec![typ[0], typ[1], 0, 0, 0x21, 0x12, 0xA4, 0x42];
        m.extend_from_slice(&[id; 12]);
        m
    }

    #[test]
    fn only_an_answer_to_its_own_check_moves_a_path_to_a_session() {
        let mut routes = Routes::default();
        let (request, success) = (BINDING_REQUEST_TYPE, BINDING_SUCCESS_TYPE);
        // Session 1's client vanished; its port is reused by session 2's client.
        routes.learn_sent(addr(5), 1, &[0x80; 20]);
        assert_eq!(routes.route(addr(5), &[0x80]), Some(1));
        // Session 2 answers a request that came "from" that port (its source could be
        // spoofed), and checks the port itself: neither moves it.
        routes.learn_sent(addr(5), 2, &stun(success, 9));
        routes.learn_sent(addr(5), 2, &stun(request, 7));
        assert_eq!(
            routes.route(addr(5), &[0x80]),
            Some(1),
            "sends move nothing"
        );
        // An answer to another transaction, or to session 2's check but from another path,
        // proves nothing.
        assert_eq!(routes.proven(addr(5), &stun(success, 8)), None);
        assert_eq!(routes.proven(addr(6), &stun(success, 7)), None);
        assert_eq!(routes.route(addr(5), &[0x80]), Some(1));
        // The answer to session 2's check, on that path: proof.
        routes.learn_sent(addr(5), 2, &stun(request, 3));
        assert!(!routes.has_answered(addr(5)));
        assert_eq!(routes.proven(addr(5), &stun(success, 3)), Some(2));
        assert!(routes.has_answered(addr(5)));
        assert_eq!(routes.route(addr(5), &[0x80]), Some(2));
        assert_eq!(routes.proven(addr(5), &stun(success, 3)), None, "used once");
        // The old session's checks and sends take nothing back.
        routes.learn_sent(addr(5), 1, &stun(request, 4));
        routes.learn_sent(addr(5), 1, &[0x80; 20]);
        assert_eq!(routes.route(addr(5), &[0x80]), Some(2));
        routes.remove(1, "a");
        assert_eq!(
            routes.proven(addr(5), &stun(success, 4)),
            None,
            "an ended session's checks are forgotten"
        );
        assert_eq!(routes.route(addr(5), &[0x80]), Some(2));
        routes.remove(2, "b");
        assert!(routes.is_empty());
    }

    #[test]
    fn remembered_checks_are_bounded() {
        let mut routes = Routes::default();
        let t0 = Instant::now();
        for n in 0..MAX_CHECKS as u64 + 10 {
            let mut id = [0u8; 12];
            id[..8].copy_from_slice(&n.to_be_bytes());
            routes.note_check(id, 1, addr(5), t0);
        }
        assert_eq!(routes.checks.len(), MAX_CHECKS);
        // Once they have expired, new ones take their place.
        routes.note_check([0xff; 12], 1, addr(5), t0 + CHECK_TTL);
        assert_eq!(routes.checks.len(), 1);
    }

    #[test]
    fn outbound_learning_and_removal() {
        let mut routes = Routes::default();
        routes.add_ufrag("a", 1);
        routes.add_ufrag("b", 2);
        routes.learn(addr(5), 1, ClaimKind::Learnt);
        routes.learn(addr(5), 2, ClaimKind::Learnt);
        assert_eq!(routes.route(addr(5), &[0x80]), Some(2));
        routes.remove(1, "a");
        assert_eq!(routes.route(addr(5), &[0x80]), Some(2));
        routes.remove(2, "b");
        assert!(routes.is_empty());
    }

    #[test]
    fn loops_on_one_port_hand_packets_to_the_owner_and_a_proof_moves_a_path() {
        let (mut zero, mut one) = (Routes::for_loop(0, 2), Routes::for_loop(1, 2));
        let client = addr(5000);
        let PathId::Udp(client_addr) = client else {
            unreachable!()
        };
        let media = [0x80; 20];
        // Loop 0's session sends a check there first: loop 1 learns the claim.
        zero.learn_sent(client, 3, &stun(BINDING_REQUEST_TYPE, 1));
        let claims = zero.take_claims();
        let learnt = PathClaim {
            addr: client_addr,
            owner: 0,
            kind: ClaimKind::Learnt,
        };
        assert_eq!(claims, [learnt]);
        assert!(zero.take_claims().is_empty());
        claims.into_iter().for_each(|c| one.claimed(c));
        assert_eq!(one.destination(client, &media), Destination::Loop(0));
        assert_eq!(zero.destination(client, &media), Destination::Session(3));
        // Loop 1's session does not take a path another loop claimed by sending there...
        one.learn_sent(client, 8, &stun(BINDING_REQUEST_TYPE, 2));
        assert!(one.take_claims().is_empty());
        // ...but an answer to its check does, from loop 0 too.
        assert_eq!(
            one.destination(client, &stun(BINDING_SUCCESS_TYPE, 2)),
            Destination::Proven(8)
        );
        let claims = one.take_claims();
        assert_eq!(claims[0].kind, ClaimKind::Proven);
        claims.into_iter().for_each(|c| zero.claimed(c));
        assert_eq!(zero.destination(client, &media), Destination::Loop(1));
        // A request names its loop by its ufrag, wherever it arrives.
        let ufrag = IceCredentials::random_for(1).ufrag;
        let request = binding_request(&format!("{ufrag}:client"));
        assert_eq!(zero.destination(addr(6000), &request), Destination::Loop(1));
        // The owner's session ends: its path is released, and nobody's.
        assert_eq!(one.remove(8, "gone"), vec![client]);
        one.take_claims().into_iter().for_each(|c| zero.claimed(c));
        assert_eq!(zero.destination(client, &media), Destination::Nowhere);
        assert!(zero.foreign.is_empty());
        // A single loop makes no claim.
        let mut alone = Routes::default();
        alone.learn_sent(client, 1, &media);
        assert!(alone.take_claims().is_empty());
    }

    #[test]
    fn claims_converge_when_two_loops_learn_one_path_at_once() {
        let mut loops: Vec<Routes> = (0..3).map(|i| Routes::for_loop(i, 3)).collect();
        let client = addr(7000);
        let PathId::Udp(client_addr) = client else {
            unreachable!()
        };
        // Loops 0 and 1 send there before either hears of the other.
        loops[0].learn_sent(client, 1, &stun(BINDING_REQUEST_TYPE, 1));
        loops[1].learn_sent(client, 2, &stun(BINDING_REQUEST_TYPE, 2));
        let from_zero = loops[0].take_claims();
        let from_one = loops[1].take_claims();
        // Loop 2 hears loop 1 first; each of the two keeps its own.
        from_one.iter().for_each(|c| loops[2].claimed(*c));
        from_zero.iter().for_each(|c| loops[2].claimed(*c));
        from_zero.iter().for_each(|c| loops[1].claimed(*c));
        from_one.iter().for_each(|c| loops[0].claimed(*c));
        assert_eq!(loops[2].foreign.get(&client_addr), Some(&1));
        // Loop 0's session gets the answer: the path is proven, and every loop learns it, loop
        // 0 having had it already.
        let answer = stun(BINDING_SUCCESS_TYPE, 1);
        assert_eq!(
            loops[0].destination(client, &answer),
            Destination::Proven(1)
        );
        let proven = loops[0].take_claims();
        assert_eq!(proven.len(), 1);
        assert_eq!(proven[0].kind, ClaimKind::Proven);
        proven.iter().for_each(|c| loops[1].claimed(*c));
        proven.iter().for_each(|c| loops[2].claimed(*c));
        let media = [0x80; 20];
        assert_eq!(loops[1].destination(client, &media), Destination::Loop(0));
        assert_eq!(loops[2].destination(client, &media), Destination::Loop(0));
        // A later learnt claim does not take a proven path from loop 0 either.
        let late = PathClaim {
            addr: client_addr,
            owner: 1,
            kind: ClaimKind::Learnt,
        };
        loops[2].claimed(late);
        assert_eq!(loops[2].destination(client, &media), Destination::Loop(0));
        // A second answer makes no new claim.
        loops[0].learn_sent(client, 1, &stun(BINDING_REQUEST_TYPE, 3));
        loops[0].destination(client, &stun(BINDING_SUCCESS_TYPE, 3));
        assert!(loops[0].take_claims().is_empty());
    }
}
