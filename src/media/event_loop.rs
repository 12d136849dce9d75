//! The media loop: waits on a datagram, a command or the earliest deadline, feeds it to the
//! sans-IO peer connections, then drives the touched sessions (events → received RTP → fan-out →
//! outgoing datagrams → next deadline).

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use rtc::peer_connection::event::RTCPeerConnectionEvent;
use rtc::peer_connection::message::RTCMessage;
use rtc::peer_connection::state::RTCPeerConnectionState;
use rtc::peer_connection::transport::RTCDtlsTransportState;
use rtc::peer_connection::RTCPeerConnection;
use rtc::rtp::packet::Packet;
use rtc::rtp_transceiver::RTCRtpSenderId;
use rtc::sansio::Protocol;
use rtc::shared::{TaggedBytesMut, TransportContext, TransportProtocol};
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn, Span};

use super::forward::Forwarder;
use super::peer::{self, PeerSettings};
use super::routes::{Routes, SessionKey};
use super::socket::UdpIo;
use super::{Command, Created, MediaConfig, Stats};
use crate::error::ApiError;
use crate::registry::{Lookup, Registry};
use crate::session::{EndReason, ResourceId, Role, StreamName};

/// How often ended resources past their grace period are forgotten.
const PRUNE_EVERY: Duration = Duration::from_secs(5);
/// Receive batches handled before the loop looks at commands and timers again.
const MAX_BATCHES_PER_WAKE: usize = 8;

/// Connectivity of a session as the media loop sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Link {
    /// ICE and DTLS not yet up; the setup deadline applies.
    Connecting,
    /// Media flows.
    Connected,
    /// Consent checks are failing (RFC 7675); `failed` follows unless the peer comes back.
    Disconnected,
}

/// The send leg of a viewer or echo session.
struct Leg {
    sender: RTCRtpSenderId,
    forwarder: Forwarder,
}

/// One peer connection and what the loop knows about it.
struct Session {
    resource: ResourceId,
    role: Role,
    stream: StreamName,
    pc: RTCPeerConnection,
    ufrag: String,
    link: Link,
    setup_deadline: Instant,
    /// The earliest deadline with an entry in the timer heap.
    wake: Option<Instant>,
    leg: Option<Leg>,
    span: Span,
}

/// State owned by the media task.
pub(super) struct MediaLoop {
    io: UdpIo,
    settings: PeerSettings,
    config: MediaConfig,
    sessions: HashMap<SessionKey, Session>,
    next_key: SessionKey,
    routes: Routes,
    registry: Registry<SessionKey>,
    timers: BinaryHeap<Reverse<(Instant, SessionKey)>>,
    stats: watch::Sender<Stats>,
    unroutable: u64,
}

impl MediaLoop {
    pub(super) fn new(
        io: UdpIo,
        settings: PeerSettings,
        config: MediaConfig,
        stats: watch::Sender<Stats>,
    ) -> Self {
        MediaLoop {
            io,
            settings,
            config,
            sessions: HashMap::new(),
            next_key: 0,
            routes: Routes::default(),
            registry: Registry::default(),
            timers: BinaryHeap::new(),
            stats,
            unroutable: 0,
        }
    }

    pub(super) async fn run(
        mut self,
        mut commands: mpsc::Receiver<Command>,
        stop: CancellationToken,
    ) {
        let mut prune = tokio::time::interval(PRUNE_EVERY);
        loop {
            let next_timer = self.timers.peek().map(|Reverse((at, _))| *at);
            tokio::select! {
                biased;
                _ = stop.cancelled() => break,
                command = commands.recv() => match command {
                    Some(command) => self.handle_command(command),
                    None => break,
                },
                readable = self.io.readable() => match readable {
                    Ok(()) => self.read_datagrams(),
                    Err(e) => warn!(error = %e, "UDP socket not readable"),
                },
                _ = sleep_until(next_timer) => self.fire_timers(Instant::now()),
                _ = prune.tick() => self.registry.prune(Instant::now()),
            }
        }
        let keys: Vec<SessionKey> = self.sessions.keys().copied().collect();
        for key in keys {
            self.teardown(key, EndReason::Shutdown);
        }
        info!(unroutable = self.unroutable, "media loop stopped");
        self.stats.send_modify(|s| s.running = false);
    }

    fn handle_command(&mut self, command: Command) {
        let now = Instant::now();
        match command {
            Command::Create {
                role,
                stream,
                offer,
                info,
                reply,
            } => {
                let result = self.create(role, stream, offer, &info, now);
                let resource = result.as_ref().ok().map(|c| c.resource);
                if reply.send(result).is_err() {
                    // The client gave up before the answer: nobody can reach this session.
                    if let Some(key) = resource.and_then(|r| self.live_key(&r, now)) {
                        self.teardown(key, EndReason::Deleted);
                    }
                }
            }
            Command::Delete { resource, reply } => {
                let result = match self.registry.lookup(&resource, now) {
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
                };
                let _ = reply.send(result);
            }
            Command::Exists { resource, reply } => {
                let _ = reply.send(self.registry.lookup(&resource, now) != Lookup::Unknown);
            }
        }
    }

    fn live_key(&self, resource: &ResourceId, now: Instant) -> Option<SessionKey> {
        match self.registry.lookup(resource, now) {
            Lookup::Live(key) => Some(key),
            _ => None,
        }
    }

    fn create(
        &mut self,
        role: Role,
        stream: StreamName,
        offer: String,
        info: &super::offer::OfferInfo,
        now: Instant,
    ) -> Result<Created, ApiError> {
        if self.sessions.len() >= self.config.max_sessions {
            return Err(ApiError::OverCapacity);
        }
        if role.publishes() {
            if let Some(current) = self.registry.publisher(&stream) {
                // A publisher whose consent checks already fail is on its way out (a client that
                // reconnects after a network change): let the new one take over rather than
                // refusing it until the old one times out.
                let fading =
                    self.sessions.get(&current).map(|s| s.link) == Some(Link::Disconnected);
                if !fading {
                    return Err(ApiError::PublisherExists(stream.to_string()));
                }
                self.teardown(current, EndReason::Replaced);
            }
        }
        let negotiated = peer::negotiate(&self.settings, role, info, offer, now)?;
        let key = self.next_key;
        self.next_key += 1;
        let resource = ResourceId::random();
        let span = tracing::info_span!("session", %resource, %stream, %role);
        span.in_scope(|| info!("session created"));
        self.routes.add_ufrag(&negotiated.ufrag, key);
        self.registry.insert(resource, key, role, stream.clone());
        let etag = format!("\"{}\"", negotiated.ufrag);
        self.sessions.insert(
            key,
            Session {
                resource,
                role,
                stream,
                pc: negotiated.pc,
                ufrag: negotiated.ufrag,
                link: Link::Connecting,
                setup_deadline: now + self.config.ice_timeout,
                wake: None,
                leg: negotiated.sender.map(|(sender, ssrc, pt)| Leg {
                    sender,
                    forwarder: Forwarder::new(ssrc, pt),
                }),
                span,
            },
        );
        self.drive(key, now);
        self.publish_stats();
        Ok(Created {
            resource,
            answer: negotiated.answer,
            etag,
        })
    }

    fn read_datagrams(&mut self) {
        let mut inbound: Vec<(SocketAddr, SocketAddr, BytesMut)> = Vec::new();
        for _ in 0..MAX_BATCHES_PER_WAKE {
            let got = self.io.recv_batch(|d| {
                inbound.push((d.from, d.local, BytesMut::from(d.data)));
            });
            match got {
                Ok(0) => break,
                Ok(_) => {}
                Err(e) => {
                    debug!(error = %e, "UDP receive error");
                    break;
                }
            }
        }
        let now = Instant::now();
        let mut touched: Vec<(SessionKey, bool)> = Vec::new();
        for (from, local, data) in inbound {
            if data.is_empty() {
                continue;
            }
            let Some(key) = self.routes.route(from, &data) else {
                self.unroutable += 1;
                continue;
            };
            let Some(session) = self.sessions.get_mut(&key) else {
                continue;
            };
            let data_first_byte = data[0];
            let input = TaggedBytesMut {
                now,
                transport: TransportContext {
                    local_addr: local,
                    peer_addr: from,
                    ecn: None,
                    transport_protocol: TransportProtocol::UDP,
                },
                message: data,
            };
            if let Err(e) = session.pc.handle_read(input) {
                session
                    .span
                    .in_scope(|| debug!(error = %e, "packet rejected"));
            }
            // RFC 7983 §7: first byte 20..=63 is DTLS; after the handshake that is an alert,
            // possibly the peer's close_notify.
            let dtls = (20..=63).contains(&data_first_byte);
            match touched.iter_mut().find(|(k, _)| *k == key) {
                Some((_, seen_dtls)) => *seen_dtls |= dtls,
                None => touched.push((key, dtls)),
            }
        }
        for (key, dtls) in touched {
            self.drive(key, now);
            if dtls
                && self
                    .sessions
                    .get_mut(&key)
                    .is_some_and(|s| dtls_closed(&mut s.pc))
            {
                self.teardown(key, EndReason::Closed);
            }
        }
    }

    fn fire_timers(&mut self, now: Instant) {
        while let Some(&Reverse((at, key))) = self.timers.peek() {
            if at > now {
                break;
            }
            self.timers.pop();
            let Some(session) = self.sessions.get_mut(&key) else {
                continue;
            };
            if session.wake != Some(at) {
                continue; // superseded by an earlier entry
            }
            session.wake = None;
            if session.link == Link::Connecting && now >= session.setup_deadline {
                self.teardown(key, EndReason::SetupTimeout);
                continue;
            }
            if let Err(e) = session.pc.handle_timeout(now) {
                session
                    .span
                    .in_scope(|| debug!(error = %e, "timeout handling failed"));
            }
            self.drive(key, now);
        }
    }

    /// Drains a session's events, received media and outgoing datagrams, forwards its media, and
    /// schedules its next deadline.
    fn drive(&mut self, key: SessionKey, now: Instant) {
        let Some(session) = self.sessions.get_mut(&key) else {
            return;
        };
        let mut ended = None;
        let mut link_changed = false;
        while let Some(event) = session.pc.poll_event() {
            if let RTCPeerConnectionEvent::OnConnectionStateChangeEvent(state) = event {
                session.span.in_scope(|| info!(%state, "connection state"));
                match state {
                    RTCPeerConnectionState::Connected => {
                        session.link = Link::Connected;
                        link_changed = true;
                    }
                    RTCPeerConnectionState::Disconnected => {
                        session.link = Link::Disconnected;
                        link_changed = true;
                    }
                    RTCPeerConnectionState::Failed => ended = Some(EndReason::Failed),
                    RTCPeerConnectionState::Closed => ended = Some(EndReason::Closed),
                    _ => {}
                }
            }
        }
        let mut media: Vec<Packet> = Vec::new();
        while let Some(message) = session.pc.poll_read() {
            if let RTCMessage::RtpPacket(_, packet) = message.message {
                if session.role.publishes() {
                    media.push(packet);
                }
            }
        }
        self.flush(key, now);
        if link_changed {
            self.publish_stats();
        }
        if let Some(reason) = ended {
            self.teardown(key, reason);
            return;
        }
        if !media.is_empty() {
            self.fan_out(key, media, now);
        }
    }

    /// Sends a publisher's packets to every connected receiving leg of its stream: its viewers,
    /// and itself for `/echo`. A leg whose sender refuses a packet loses it; nobody waits.
    fn fan_out(&mut self, from: SessionKey, media: Vec<Packet>, now: Instant) {
        let Some(source) = self.sessions.get(&from) else {
            return;
        };
        let mut targets = self.registry.viewers(&source.stream).to_vec();
        if source.role == Role::Echo {
            targets.push(from);
        }
        for target in targets {
            let Some(Session {
                pc,
                leg: Some(leg),
                link: Link::Connected,
                span,
                ..
            }) = self.sessions.get_mut(&target)
            else {
                continue;
            };
            for packet in &media {
                let mut packet = packet.clone();
                leg.forwarder.rewrite(&mut packet.header, now);
                if let Some(mut sender) = pc.rtp_sender(leg.sender) {
                    if let Err(e) = sender.write_rtp(now, packet) {
                        span.in_scope(|| debug!(error = %e, "RTP not sent"));
                    }
                }
            }
            self.flush(target, now);
        }
    }

    /// Sends a session's pending datagrams, learning their destinations as its routes, and
    /// re-arms its timer.
    fn flush(&mut self, key: SessionKey, _now: Instant) {
        let Some(session) = self.sessions.get_mut(&key) else {
            return;
        };
        while let Some(out) = session.pc.poll_write() {
            self.routes.learn(out.transport.peer_addr, key);
            let sent = self.io.send(
                out.transport.peer_addr,
                out.transport.local_addr,
                &out.message,
            );
            if let Err(e) = sent {
                session
                    .span
                    .in_scope(|| debug!(error = %e, "UDP send failed"));
            }
        }
        let mut wake = session.pc.poll_timeout();
        if session.link == Link::Connecting {
            wake = Some(wake.map_or(session.setup_deadline, |w| w.min(session.setup_deadline)));
        }
        if let Some(at) = wake {
            if session.wake.is_none_or(|current| at < current) {
                session.wake = Some(at);
                self.timers.push(Reverse((at, key)));
            }
        }
    }

    /// The one teardown path: DELETE, ICE/DTLS failure, peer close, setup timeout and shutdown.
    fn teardown(&mut self, key: SessionKey, reason: EndReason) {
        let Some(mut session) = self.sessions.remove(&key) else {
            return;
        };
        // close() queues a DTLS close_notify so the peer learns at once (RFC 7675 consent revoked).
        let _ = session.pc.close();
        while let Some(out) = session.pc.poll_write() {
            let _ = self.io.send(
                out.transport.peer_addr,
                out.transport.local_addr,
                &out.message,
            );
        }
        self.routes.remove(key, &session.ufrag);
        self.registry.end(&session.resource, Instant::now());
        session.span.in_scope(|| info!(%reason, "session ended"));
        self.publish_stats();
    }

    fn publish_stats(&self) {
        let idle = self.sessions.is_empty() && self.registry.is_empty() && self.routes.is_empty();
        let count = |link| self.sessions.values().filter(|s| s.link == link).count();
        self.stats.send_replace(Stats {
            sessions: self.sessions.len(),
            connected: count(Link::Connected),
            disconnected: count(Link::Disconnected),
            idle,
            running: true,
        });
    }
}

/// Whether the peer closed the DTLS transport (close_notify). rtc keeps the connection state at
/// `connected` then (ICE is still up), so the loop asks the transport itself.
fn dtls_closed(pc: &mut RTCPeerConnection) -> bool {
    let sender = pc.get_senders().next();
    let receiver = pc.get_receivers().next();
    let state = match (sender, receiver) {
        (Some(id), _) => pc
            .rtp_sender(id)
            .and_then(|s| s.transport().map(|t| t.state())),
        (None, Some(id)) => pc
            .rtp_receiver(id)
            .and_then(|r| r.transport().map(|t| t.state())),
        (None, None) => None,
    };
    state == Some(RTCDtlsTransportState::Closed)
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at.into()).await,
        None => std::future::pending().await,
    }
}
