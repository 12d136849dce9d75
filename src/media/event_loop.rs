//! The media loop: waits on a datagram batch, a command or the earliest deadline, feeds it to the
//! sans-IO peer connections, then drives the touched sessions (events → received RTP → fan-out →
//! outgoing packets → next deadline). Inbound packets carry their path and outgoing ones leave by
//! their transport (`transport.rs`). Commands from the HTTP plane are in `commands.rs`.

use std::time::{Duration, Instant};

use rtc::rtp::packet::Packet;
use rtc::rtp_transceiver::rtp_sender::RtpCodecKind;
use rtc::sansio::Protocol;
use rustc_hash::FxHashMap;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn, Span};

use super::codecs;
use super::conn::{Conn, LayerStep, Leg, Link};
use super::routes::{Routes, SessionKey};
use super::shield::shielded;
use super::socket::UdpIo;
use super::sources::{Layers, SsrcSet};
use super::stun::is_binding_request;
use super::tcp::{Claim, TcpConns, TcpEvent};
use super::timers::Timers;
use super::transport::{Inbound, PathId, Transports};
use super::{Command, MediaConfig, Stats, StatsSlot};
use crate::metrics::{Dropped, LoopMetrics};
use crate::rate::TokenBucket;
use crate::registry::Registry;
use crate::session::{EndReason, Role};

/// How often ended resources past their grace period are forgotten.
const PRUNE_EVERY: Duration = Duration::from_secs(5);
/// Receive batches handled before the loop looks at commands and timers again.
const MAX_BATCHES_PER_WAKE: usize = 8;
/// Commands handled per wake-up. A command is cheap now (negotiation happens before it), but a
/// burst of a few hundred must still not hold datagrams and timers back for its whole length.
pub(super) const MAX_COMMANDS_PER_WAKE: usize = 16;
/// ICE-TCP events (frames, mostly) handled per wake-up, like a few receive batches.
const MAX_TCP_EVENTS_PER_WAKE: usize = 64;

/// State owned by the media task: nothing here is shared, so nothing is locked.
pub(super) struct MediaLoop {
    pub(super) transports: Transports,
    pub(super) config: MediaConfig,
    /// Keyed by the loop's own sequential keys, so a fast non-keyed hash is safe here (several
    /// lookups per packet; SipHash was ~4 % of the per-packet instructions under callgrind).
    pub(super) sessions: FxHashMap<SessionKey, Conn>,
    pub(super) next_key: SessionKey,
    pub(super) routes: Routes,
    pub(super) registry: Registry<SessionKey>,
    pub(super) timers: Timers,
    pub(super) stats: StatsSlot,
    pub(super) unroutable: u64,
    /// Checks to addresses that never answered one (`--unanswered-checks-per-second`).
    unanswered_checks: TokenBucket,
    /// Sessions whose peer connection panicked (`shield.rs`), moved out of `sessions` so that
    /// nothing finds them to call into again; torn down at the end of the wake-up.
    panicked: Vec<(SessionKey, Conn)>,
}

impl MediaLoop {
    pub(super) fn new(udp: UdpIo, tcp: TcpConns, config: MediaConfig, stats: StatsSlot) -> Self {
        let burst = config.unanswered_checks_per_second.saturating_mul(2);
        MediaLoop {
            transports: Transports { udp, tcp },
            sessions: FxHashMap::default(),
            next_key: 0,
            routes: Routes::default(),
            registry: Registry::default(),
            timers: Timers::default(),
            unanswered_checks: TokenBucket::full(burst, Instant::now()),
            config,
            stats,
            unroutable: 0,
            panicked: Vec::new(),
        }
    }

    /// Runs until `stop` is cancelled (or every handle is dropped), then tears every session down.
    /// Each wake-up does a bounded amount of each kind of work: datagrams, commands, timers.
    pub(super) async fn run(
        mut self,
        mut commands: mpsc::Receiver<Command>,
        mut tcp: mpsc::Receiver<TcpEvent>,
        stop: CancellationToken,
    ) {
        let mut tcp_open = true;
        let mut next_prune = Instant::now() + PRUNE_EVERY;
        loop {
            // The prune is a deadline like the sessions' ones, checked after every wake-up
            // below, so a socket that is always readable cannot keep it from running.
            let next_timer = Some(self.timers.next().map_or(next_prune, |t| t.min(next_prune)));
            tokio::select! {
                biased;
                _ = stop.cancelled() => break,
                readable = self.transports.udp.readable() => match readable {
                    Ok(()) => {
                        self.read_datagrams();
                        // Under steady load the socket is readable again at once and, being
                        // polled first, would starve the other branches: consent checks (RFC
                        // 7675 §5.1) would stop, ICE-TCP would stall and new sessions would wait.
                        self.handle_tcp(&mut tcp, None);
                        self.handle_commands(&mut commands, None);
                        self.fire_timers(Instant::now());
                    }
                    Err(e) => warn!(error = %e, "UDP socket not readable"),
                },
                event = tcp.recv(), if tcp_open => match event {
                    Some(event) => {
                        self.handle_tcp(&mut tcp, Some(event));
                        self.handle_commands(&mut commands, None);
                        self.fire_timers(Instant::now());
                    }
                    None => tcp_open = false,
                },
                command = commands.recv() => match command {
                    Some(command) => self.handle_commands(&mut commands, Some(command)),
                    None => break,
                },
                _ = sleep_until(next_timer) => self.fire_timers(Instant::now()),
            }
            self.end_panicked();
            let now = Instant::now();
            if now >= next_prune {
                self.registry.prune(now);
                next_prune = now + PRUNE_EVERY;
            }
        }
        let keys: Vec<SessionKey> = self.sessions.keys().copied().collect();
        for key in keys {
            self.teardown(key, EndReason::Shutdown);
        }
        info!(unroutable = self.unroutable, "media loop stopped");
    }

    /// Handles `first` and then whatever is queued, up to `MAX_COMMANDS_PER_WAKE` in all.
    fn handle_commands(&mut self, commands: &mut mpsc::Receiver<Command>, first: Option<Command>) {
        let mut handled = 0;
        if let Some(command) = first {
            self.handle_command(command);
            handled += 1;
        }
        while handled < MAX_COMMANDS_PER_WAKE {
            let Ok(command) = commands.try_recv() else {
                break;
            };
            self.handle_command(command);
            handled += 1;
        }
    }

    /// Takes `first` and whatever else the ICE-TCP connections have queued (bounded), then feeds
    /// their frames in like datagrams.
    fn handle_tcp(&mut self, events: &mut mpsc::Receiver<TcpEvent>, first: Option<TcpEvent>) {
        let mut inbound = Vec::new();
        let mut closed = Vec::new();
        let mut next = first.or_else(|| events.try_recv().ok());
        let mut handled = 0;
        while let Some(event) = next.take() {
            match event {
                TcpEvent::Opened {
                    id,
                    peer,
                    local,
                    writer,
                } => self.transports.tcp.open(id, peer, local, writer),
                TcpEvent::Frame { id, data } => {
                    if let Some((peer, local)) = self.transports.tcp.addrs(id) {
                        inbound.push(Inbound {
                            path: PathId::Tcp(id),
                            local,
                            peer,
                            data,
                        });
                    }
                }
                // Applied after this batch's frames, which may still name the connection.
                TcpEvent::Closed { id } => closed.push(id),
            }
            handled += 1;
            if handled < MAX_TCP_EVENTS_PER_WAKE {
                next = events.try_recv().ok();
            }
        }
        self.handle_inbound(inbound, Instant::now());
        for id in closed {
            self.transports.tcp.close(id);
            self.routes.forget(PathId::Tcp(id));
        }
    }

    fn read_datagrams(&mut self) {
        let mut inbound: Vec<Inbound> = Vec::new();
        for _ in 0..MAX_BATCHES_PER_WAKE {
            let got = self.transports.udp.recv_batch(|d| {
                if !d.data.is_empty() {
                    inbound.push(Inbound {
                        path: PathId::Udp(d.from),
                        local: d.local,
                        peer: d.from,
                        data: bytes::BytesMut::from(d.data),
                    });
                }
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
        self.handle_inbound(inbound, Instant::now());
    }

    /// Feeds packets from any transport to their sessions, then drives the sessions touched.
    fn handle_inbound(&mut self, inbound: Vec<Inbound>, now: Instant) {
        // Sessions touched by this batch, and whether a DTLS record reached them.
        let mut touched: Vec<(SessionKey, bool)> = Vec::new();
        for packet in inbound {
            // An answer to a session's own check proves its path first (`routes.rs`).
            let key = self.routes.proven(packet.path, &packet.data);
            let Some(key) = key.or_else(|| self.routes.route(packet.path, &packet.data)) else {
                self.unroutable += 1;
                self.config.metrics.dropped(Dropped::Unroutable, 1);
                // A TCP connection exists for one session (RFC 6544); one that names none is
                // closed rather than kept open for nothing.
                if let PathId::Tcp(id) = packet.path {
                    self.transports.tcp.close(id);
                }
                continue;
            };
            let Some(conn) = self.sessions.get_mut(&key) else {
                continue;
            };
            // RFC 7983 §7: a first byte in 20..=63 is DTLS; after the handshake that is an
            // alert, possibly the peer's close_notify.
            let dtls = (20..=63).contains(&packet.data[0]);
            let path = packet.path;
            let input = packet.into_tagged(now);
            let (errors, unbound) = (conn.pc.read_errors(), conn.pc.unbound_rtp_packets());
            let read = shielded(|| {
                #[cfg(feature = "fault-injection")]
                if input.message[..] == *super::FAULT_DATAGRAM {
                    panic!("fault injected");
                }
                let input = if dtls {
                    conn.hold_early_dtls(path, input)
                } else {
                    Some(input)
                };
                input.map(|input| conn.pc.handle_read(input))
            });
            match read {
                Ok(result) => {
                    let mut refused = conn.pc.read_errors() - errors;
                    if let Some(Err(e)) = result {
                        refused += 1;
                        conn.span.in_scope(|| debug!(error = %e, "packet rejected"));
                    }
                    if refused > 0 {
                        self.config.metrics.dropped(Dropped::Rejected, refused);
                    }
                    let unbound = conn.pc.unbound_rtp_packets() - unbound;
                    if unbound > 0 {
                        self.config.metrics.dropped(Dropped::Unbound, unbound);
                    }
                }
                Err(panic) => {
                    self.note_panic(key, &panic);
                    continue;
                }
            }
            match touched.iter_mut().find(|(k, _)| *k == key) {
                Some((_, seen)) => *seen |= dtls,
                None => touched.push((key, dtls)),
            }
        }
        for (key, dtls) in touched {
            self.drive(key, now);
            if !dtls {
                continue;
            }
            let closed = (self.sessions.get_mut(&key)).map(|conn| shielded(|| conn.dtls_closed()));
            match closed {
                Some(Ok(true)) => self.teardown(key, EndReason::Closed),
                Some(Err(panic)) => self.note_panic(key, &panic),
                _ => {}
            }
        }
    }

    fn fire_timers(&mut self, now: Instant) {
        while let Some((at, key)) = self.timers.pop_due(now) {
            let Some(conn) = self.sessions.get_mut(&key) else {
                continue;
            };
            if conn.armed != Some(at) {
                continue; // superseded by an earlier entry
            }
            conn.armed = None;
            if conn.link == Link::Connecting && now >= conn.setup_deadline {
                self.teardown(key, EndReason::SetupTimeout);
                continue;
            }
            match shielded(|| conn.pc.handle_timeout(now)) {
                Ok(Ok(())) => {}
                Ok(Err(e)) => conn
                    .span
                    .in_scope(|| debug!(error = %e, "timeout handling failed")),
                Err(panic) => {
                    self.note_panic(key, &panic);
                    continue;
                }
            }
            self.drive(key, now);
        }
    }

    /// Drains a session's events, received media and outgoing datagrams, forwards its media, and
    /// schedules its next deadline.
    pub(super) fn drive(&mut self, key: SessionKey, now: Instant) {
        let publishes = self
            .registry
            .session(key)
            .is_some_and(|e| e.role.publishes());
        let Some(conn) = self.sessions.get_mut(&key) else {
            return;
        };
        let mut polled = match shielded(|| conn.poll(publishes)) {
            Ok(polled) => polled,
            Err(panic) => {
                self.note_panic(key, &panic);
                return;
            }
        };
        let metrics = &self.config.metrics;
        if polled.other_source > 0 {
            metrics.dropped(Dropped::OtherSource, polled.other_source);
        }
        // `--max-bitrate`: what a publisher sends over its budget is not forwarded.
        if !polled.media.is_empty() {
            let before = conn.budget.dropped;
            polled.media.retain(|(_, p)| {
                let bytes = rtp_bytes(p);
                metrics.received(bytes);
                conn.budget.admit(bytes, now)
            });
            metrics.dropped(Dropped::RateCap, conn.budget.dropped - before);
            if before == 0 && conn.budget.dropped > 0 {
                let cap = self.config.max_bitrate;
                conn.span
                    .in_scope(|| info!(cap, "over the bitrate cap: packets dropped"));
            }
        }
        let connected_now = polled.link_changed && conn.link == Link::Connected;
        if connected_now && !conn.ever_connected {
            conn.first_connected();
            self.config
                .metrics
                .connected(now.saturating_duration_since(conn.started));
        }
        let plays_video = conn.legs.iter().any(|l| l.kind == RtpCodecKind::Video);
        // An ICE restart completes when the new generation connects: the old ufrag has no
        // checks left in flight, so it stops naming the session.
        if connected_now {
            if let Some(previous) = conn.previous_ufrag.take() {
                self.routes.remove_ufrag(&previous, key);
            }
        }
        self.flush(key);
        if polled.link_changed {
            self.publish_stats();
        }
        if let Some(reason) = polled.ended {
            self.teardown(key, reason);
            return;
        }
        // Keyframes (`keyframes.rs`): a viewer's PLI/FIR, or its video leg coming up, asks the
        // publisher; a publisher that connects (a new one taking a stream over too) is asked
        // at once, so that its viewers start with a decodable picture.
        if polled.keyframe_wanted || (connected_now && plays_video) {
            self.request_keyframe_upstream(key, now);
        }
        if publishes {
            if connected_now {
                self.request_keyframe(key, None, now);
            }
            self.send_due_keyframe_request(key, now);
        }
        if !polled.media.is_empty() {
            self.fan_out(key, polled.media, now);
        }
    }

    /// Sends a publisher's packets to every connected receiving leg of its stream of the same
    /// kind: its viewers, and itself for `/echo`. A leg whose sender refuses a packet loses it;
    /// nobody waits.
    fn fan_out(&mut self, from: SessionKey, media: Vec<(RtpCodecKind, Packet)>, now: Instant) {
        let Some(source) = self.registry.session(from) else {
            return;
        };
        let mut targets = self.registry.viewers(&source.stream).to_vec();
        if source.role == Role::Echo {
            targets.push(from);
        }
        let Some(publisher) = self.sessions.get(&from) else {
            return;
        };
        let mut fan = FanOut::of(publisher, &media, now);
        for target in targets {
            self.forward_to(target, &media, &mut fan, now);
        }
        if fan.video_legs {
            let other = media
                .iter()
                .filter(|(kind, p)| {
                    *kind == RtpCodecKind::Video && !fan.taken.contains(p.header.ssrc)
                })
                .count();
            self.config
                .metrics
                .dropped(Dropped::OtherSource, other as u64);
        }
        if !fan.keyframes_wanted.is_empty() {
            if let Some(conn) = self.sessions.get_mut(&from) {
                for &ssrc in fan.keyframes_wanted.iter() {
                    conn.keyframes.want(Some(ssrc));
                }
            }
            self.send_due_keyframe_request(from, now);
        }
    }

    /// Sends what of `media` the legs of `target` (connected) take: each packet rewritten for
    /// its leg and written by the leg's sender. A leg whose sender refuses a packet loses it.
    fn forward_to(
        &mut self,
        target: SessionKey,
        media: &[(RtpCodecKind, Packet)],
        fan: &mut FanOut,
        now: Instant,
    ) {
        let Some(Conn {
            pc,
            legs,
            link: Link::Connected,
            span,
            ..
        }) = self.sessions.get_mut(&target)
        else {
            return;
        };
        let metrics = &self.config.metrics;
        let mut failed = None;
        for (kind, packet) in media {
            let Some(leg) = legs.iter_mut().find(|l| l.kind == *kind) else {
                continue;
            };
            if !fan.admits(leg, packet, metrics, span) {
                continue;
            }
            let mut packet = packet.clone();
            leg.forwarder.rewrite(&mut packet.header, now);
            let bytes = rtp_bytes(&packet);
            let sender = leg.sender;
            let written = shielded(|| pc.rtp_sender(sender).map(|mut s| s.write_rtp(now, packet)));
            match written {
                Ok(Some(Ok(()))) => metrics.sent(bytes),
                Ok(Some(Err(e))) => {
                    metrics.dropped(Dropped::SendFailed, 1);
                    span.in_scope(|| debug!(error = %e, "RTP not sent"));
                }
                Ok(None) => {}
                Err(panic) => {
                    failed = Some(panic);
                    break;
                }
            }
        }
        match failed {
            Some(panic) => self.note_panic(target, &panic),
            None => self.flush(target),
        }
    }

    /// Sends a session's pending datagrams, learning their destinations as its routes, and
    /// re-arms its timer.
    pub(super) fn flush(&mut self, key: SessionKey) {
        let MediaLoop {
            sessions,
            transports,
            routes,
            config,
            unanswered_checks,
            timers,
            ..
        } = self;
        let Some(conn) = sessions.get_mut(&key) else {
            return;
        };
        // One shielded call for the whole drain (it is on every packet's path).
        let drained = shielded(|| {
            while let Some(out) = conn.pc.poll_write() {
                if let Some(path) = transports.path_of(&out.transport) {
                    // The ICE-TCP caps: a connection beyond one is closed instead of answered.
                    if let PathId::Tcp(id) = path {
                        match transports.tcp.claim(id, key) {
                            Claim::Send => {}
                            Claim::NotYours => continue,
                            Claim::Refused(cap) => {
                                transports.tcp.close(id);
                                routes.forget(path);
                                config.metrics.tcp_closed(cap);
                                continue;
                            }
                        }
                    }
                    // RFC 8445 §19.5.1: checks to addresses that never answered one are what a
                    // client's offer can aim anywhere; each loop sends only so many a second.
                    let rate = config.unanswered_checks_per_second;
                    if rate > 0 && is_binding_request(&out.message) && !routes.has_answered(path) {
                        let burst = rate.saturating_mul(2);
                        let now = Instant::now();
                        if unanswered_checks.take(now, f64::from(rate), burst).is_err() {
                            config.metrics.dropped(Dropped::CheckBudget, 1);
                            continue;
                        }
                    }
                    routes.learn_sent(path, key, &out.message);
                    if conn.link == Link::Connecting {
                        conn.early_dtls.note_sent(path, &out.message);
                    }
                }
                if let Err(e) = transports.send(&out.transport, &out.message) {
                    conn.span.in_scope(|| debug!(error = %e, "send failed"));
                }
            }
            conn.next_deadline()
        });
        match drained {
            Ok(Some(at)) => timers.arm(key, at, &mut conn.armed),
            Ok(None) => {}
            Err(panic) => self.note_panic(key, &panic),
        }
    }

    /// Notes that `key`'s peer connection panicked: logged, and torn down at the end of the
    /// wake-up (or by [`Self::end_panicked`]) without another call into it.
    pub(super) fn note_panic(&mut self, key: SessionKey, panic: &super::shield::Panicked) {
        if let Some(conn) = self.sessions.remove(&key) {
            log_panic(&conn, panic);
            self.panicked.push((key, conn));
        }
    }

    /// Tears down the sessions whose peer connection panicked.
    pub(super) fn end_panicked(&mut self) {
        for (key, conn) in std::mem::take(&mut self.panicked) {
            self.finish(key, conn, EndReason::Panicked);
        }
    }

    /// The one teardown path: DELETE, ICE/DTLS failure, peer close, setup timeout, a publisher
    /// replaced, and shutdown.
    pub(super) fn teardown(&mut self, key: SessionKey, reason: EndReason) {
        if let Some(conn) = self.sessions.remove(&key) {
            self.finish(key, conn, reason);
        }
    }

    /// The teardown of a session out of `sessions`.
    fn finish(&mut self, key: SessionKey, mut conn: Conn, reason: EndReason) {
        // close() queues a DTLS close_notify so the peer learns at once instead of waiting for
        // its consent checks to fail (RFC 7675 §5.2). Not after a panic: the peer connection is
        // not called again (`shield.rs`).
        if reason != EndReason::Panicked {
            let transports = &mut self.transports;
            let closed = shielded(|| {
                let _ = conn.pc.close();
                while let Some(out) = conn.pc.poll_write() {
                    let _ = transports.send(&out.transport, &out.message);
                }
            });
            if let Err(panic) = closed {
                log_panic(&conn, &panic);
            }
        }
        if let Some(previous) = &conn.previous_ufrag {
            self.routes.remove_ufrag(previous, key);
        }
        for path in self.routes.remove(key, &conn.ufrag) {
            // RFC 6544: an ICE-TCP connection belongs to its one session; it ends with it.
            if let PathId::Tcp(id) = path {
                self.transports.tcp.close(id);
            }
        }
        self.registry.end(key, Instant::now(), reason);
        self.config.metrics.ended(reason);
        conn.span.in_scope(|| info!(%reason, "session ended"));
        // Dropping `conn` gives its place under the session cap back; its peer connection's drop
        // is shielded too.
        if let Err(panic) = shielded(move || drop(conn)) {
            error!(%panic, "the WebRTC stack panicked while a session was dropped");
        }
        self.publish_stats();
    }

    pub(super) fn publish_stats(&self) {
        let idle = self.sessions.is_empty() && self.registry.is_empty() && self.routes.is_empty();
        let count = |link| self.sessions.values().filter(|s| s.link == link).count();
        let mut by_role = [[0; 3]; 3];
        for (key, conn) in &self.sessions {
            let Some(entry) = self.registry.session(*key) else {
                continue;
            };
            let role = match entry.role {
                Role::Publisher => 0,
                Role::Viewer => 1,
                Role::Echo => 2,
            };
            let link = match conn.link {
                Link::Connecting => 0,
                Link::Connected => 1,
                Link::Disconnected => 2,
            };
            by_role[role][link] += 1;
        }
        self.stats.publish(Stats {
            sessions: self.sessions.len(),
            connected: count(Link::Connected),
            disconnected: count(Link::Disconnected),
            idle,
            running: true,
            by_role,
            streams: self.registry.streams(),
        });
    }
}

/// An RTP packet's size as counted for the bitrate cap and the metrics: the fixed header, its
/// CSRCs and the payload (extensions left out: a few bytes).
fn rtp_bytes(packet: &Packet) -> usize {
    12 + 4 * packet.header.csrc.len() + packet.payload.len()
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at.into()).await,
        None => std::future::pending().await,
    }
}

/// Logs that `conn`'s peer connection panicked (once per session: it is not called again).
fn log_panic(conn: &Conn, panic: &super::shield::Panicked) {
    conn.span
        .in_scope(|| error!(%panic, "the WebRTC stack panicked: session ended"));
}

/// What one fan-out knows of its publisher's media, and what its legs found out.
struct FanOut {
    /// The codec the publisher sends per kind (audio, video), by [`codecs::key_id`] of its key,
    /// so that comparing it per packet allocates nothing: a leg of another codec gets none of it.
    codecs: [Option<u64>; 2],
    /// The video layers each leg chooses from (`sources.rs`), when the batch has video.
    layers: Layers,
    /// The layers whose keyframe a leg waits for: one request asks for them all.
    keyframes_wanted: SsrcSet,
    /// The layers some video leg takes or waits for; packets of the others are counted.
    taken: SsrcSet,
    /// Whether a leg of the publisher's video codec plays video.
    video_legs: bool,
}

impl FanOut {
    /// The fan-out of `media` from `publisher`.
    fn of(publisher: &Conn, media: &[(RtpCodecKind, Packet)], now: Instant) -> Self {
        let codec_id = |kind: RtpCodecKind| {
            publisher
                .codecs
                .iter()
                .find(|(k, _)| *k == kind)
                .map(|(_, key)| codecs::key_id(key))
        };
        let has_video = media.iter().any(|(kind, _)| *kind == RtpCodecKind::Video);
        FanOut {
            codecs: [codec_id(RtpCodecKind::Audio), codec_id(RtpCodecKind::Video)],
            layers: if has_video {
                publisher.sources.layers(now)
            } else {
                Layers::default()
            },
            keyframes_wanted: SsrcSet::default(),
            taken: SsrcSet::default(),
            video_legs: false,
        }
    }

    /// Whether `leg` takes `packet` now, counting what it does not. First the codec: a leg of
    /// another codec would read the payload by rules that are not its own and wait, asking for
    /// keyframes, for ever. Then the layer (video) or the source (audio) it plays.
    fn admits(
        &mut self,
        leg: &mut Leg,
        packet: &Packet,
        metrics: &LoopMetrics,
        span: &Span,
    ) -> bool {
        let video = leg.kind == RtpCodecKind::Video;
        if self.codecs[usize::from(video)] != Some(leg.codec_id) {
            metrics.dropped(Dropped::CodecMismatch, 1);
            if !leg.mismatch_logged {
                leg.mismatch_logged = true;
                let codec = &leg.codec;
                span.in_scope(|| info!(%codec, "the publisher sends another codec: not forwarded"));
            }
            return false;
        }
        // Audio has one source (`sources.rs`), and every audio packet is a place to start.
        let step = if video {
            self.video_legs = true;
            leg.layer_step(&self.layers, packet)
        } else {
            LayerStep::Forward
        };
        match step {
            LayerStep::Other => false,
            LayerStep::Wait(ssrc) => {
                self.taken.insert(ssrc);
                if video {
                    self.keyframes_wanted.insert(ssrc);
                }
                metrics.dropped(Dropped::AwaitingKeyframe, 1);
                false
            }
            LayerStep::Forward => {
                self.taken.insert(packet.header.ssrc);
                true
            }
        }
    }
}
