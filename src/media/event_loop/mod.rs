//! The media loop: waits on a datagram batch, a command or the earliest deadline, feeds it to the
//! sessions, then drives the touched ones (events → fan-out → outgoing packets → next deadline).
//! It dispatches only: its sessions are [`Sessions`]' (the one writer of the connection map, the
//! registry and the routes), its sockets [`Net`]'s, what a connection does [`Conn`]'s, the
//! fan-out `fan_out.rs`'s (what each leg takes: `forward/legs.rs`); commands from the HTTP plane are in `commands.rs`.
//! Datagrams its socket took for another loop's sessions go to that loop ([`Mesh`]), and what the
//! other loops hand it comes in like its own.

mod commands;
mod fan_out;
mod inbound;
mod io;

use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use super::conn::{Conn, Event, Fired, Link, Polled};
use super::event_loop::fan_out::fan_out;
use super::event_loop::io::Net;
use super::listing;
use super::net::mesh::{Inbox, Mesh};
use super::net::socket::UdpIo;
use super::net::tcp::{TcpConns, TcpEvent};
use super::net::transport::Inbound;
use super::sessions::Sessions;
use super::shield::{shielded, Panicked};
use super::timers::Timers;
use super::{Command, MediaConfig, SessionKey, StatsSlot};
use crate::session::EndReason;
use rtc::rtp::packet::Packet;
use rtc::rtp_transceiver::rtp_sender::RtpCodecKind;

/// How often ended resources past their grace period are forgotten.
const PRUNE_EVERY: Duration = Duration::from_secs(5);
/// Commands handled per wake-up. A command is cheap now (negotiation happens before it), but a
/// burst of a few hundred must still not hold datagrams and timers back for its whole length.
pub(super) const MAX_COMMANDS_PER_WAKE: usize = 16;
/// Parcels from the other loops on the port handled per wake-up (one per loop and its wake-up:
/// as many as there can be loops).
const MAX_PARCELS_PER_WAKE: usize = 64;

/// What a loop waits on besides its socket and its timers.
pub(super) struct Inputs {
    /// Commands from the HTTP plane.
    pub commands: mpsc::Receiver<Command>,
    /// ICE-TCP connections and their frames.
    pub tcp: mpsc::Receiver<TcpEvent>,
    /// What the other loops on the UDP port hand this one.
    pub parcels: Inbox,
}

/// How a packet reached the loop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Via {
    /// Its own socket or ICE-TCP connection: it may be for another loop's session.
    Own,
    /// Handed over by another loop, for one of this loop's sessions.
    Handed,
    /// Offered by another loop as the answer to a check, if one of this loop's sessions sent it.
    Proof,
}

/// State owned by the media task: nothing here is shared, so nothing is locked.
pub(super) struct MediaLoop {
    net: Net,
    sessions: Sessions,
    timers: Timers,
    config: MediaConfig,
    stats: StatsSlot,
    /// Sessions whose peer connection panicked (`shield.rs`), moved out of `sessions` so that
    /// nothing finds them to call into again; torn down at the end of the wake-up.
    panicked: Vec<(SessionKey, Conn)>,
    /// Buffers of the per-packet path, reused from one wake-up to the next (taken while in use).
    scratch: Scratch,
}

/// The per-packet path's buffers: no allocation per packet once they have grown.
#[derive(Default)]
struct Scratch {
    /// The socket's datagrams of a wake-up.
    inbound: Vec<Inbound>,
    /// The sessions a batch touched, and whether DTLS reached them.
    touched: Vec<(SessionKey, bool)>,
    /// What draining a session produced.
    polled: Polled,
    /// The legs a fan-out wrote to.
    targets: Vec<SessionKey>,
}

impl MediaLoop {
    pub(super) fn new(
        (udp, tcp, mesh): (UdpIo, TcpConns, Mesh),
        config: MediaConfig,
        stats: StatsSlot,
    ) -> Self {
        MediaLoop {
            sessions: Sessions::for_loop(mesh.me(), mesh.len()),
            net: Net::new((udp, tcp, mesh), &config),
            timers: Timers::default(),
            config,
            stats,
            panicked: Vec::new(),
            scratch: Scratch::default(),
        }
    }

    /// Runs until `stop` is cancelled (or every handle is dropped), then tears every session down.
    /// Each wake-up does a bounded amount of each kind of work: datagrams, commands, timers.
    pub(super) async fn run(mut self, mut inputs: Inputs, stop: CancellationToken) {
        let (mut tcp_open, mut parcels_open) = (true, true);
        let mut next_prune = Instant::now() + PRUNE_EVERY;
        loop {
            // The prune is a deadline like the sessions' ones, checked after every wake-up
            // below, so a socket that is always readable cannot keep it from running.
            let next_timer = Some(self.timers.next().map_or(next_prune, |t| t.min(next_prune)));
            tokio::select! {
                biased;
                _ = stop.cancelled() => break,
                readable = self.net.readable() => match readable {
                    Ok(()) => {
                        // What the other loops handed over first: their claims may name the
                        // senders of these datagrams.
                        self.handle_parcels(&mut inputs.parcels, None);
                        self.read_datagrams();
                        // Under steady load the socket is readable again at once and, being
                        // polled first, would starve the other branches: consent checks (RFC
                        // 7675 §5.1) would stop, ICE-TCP would stall and new sessions would wait.
                        self.catch_up(&mut inputs);
                    }
                    Err(e) => warn!(error = %e, "UDP socket not readable"),
                },
                parcel = inputs.parcels.recv(), if parcels_open => match parcel {
                    Some(parcel) => {
                        self.handle_parcels(&mut inputs.parcels, Some(parcel));
                        self.catch_up(&mut inputs);
                    }
                    None => parcels_open = false,
                },
                event = inputs.tcp.recv(), if tcp_open => match event {
                    Some(event) => {
                        self.handle_tcp(&mut inputs.tcp, Some(event));
                        self.catch_up(&mut inputs);
                    }
                    None => tcp_open = false,
                },
                command = inputs.commands.recv() => match command {
                    Some(command) => self.handle_commands(&mut inputs.commands, Some(command)),
                    None => break,
                },
                _ = sleep_until(next_timer) => self.fire_timers(Instant::now()),
            }
            self.end_panicked();
            self.send_all_queued();
            let now = Instant::now();
            if now >= next_prune {
                self.sessions.prune(now);
                next_prune = now + PRUNE_EVERY;
            }
        }
        for key in self.sessions.keys() {
            self.teardown(key, EndReason::Shutdown);
        }
        self.send_all_queued();
        info!(
            unroutable = self.net.unroutable_count(),
            "media loop stopped"
        );
    }

    /// The queued ICE-TCP events and commands, and the timers due, after a wake-up for another
    /// reason (a bounded amount of each).
    fn catch_up(&mut self, inputs: &mut Inputs) {
        self.handle_tcp(&mut inputs.tcp, None);
        self.handle_commands(&mut inputs.commands, None);
        self.fire_timers(Instant::now());
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

    /// Takes the socket's receive batches in, drives the sessions they touched and sends what
    /// they sent (one batch) and what goes to the other loops: the whole per-packet path of UDP
    /// (the bench's callgrind mode measures this function, by name).
    #[inline(never)]
    fn read_datagrams(&mut self) {
        let mut inbound = std::mem::take(&mut self.scratch.inbound);
        self.net.read_datagrams(&mut inbound);
        self.handle_inbound(&mut inbound, Instant::now(), Via::Own);
        self.scratch.inbound = inbound;
        self.send_all_queued();
    }

    /// The end of every wake-up: tells the other loops on the port this loop's new claims, hands
    /// them their packets, and sends the datagrams it queued (one batch, `net/batch.rs`).
    fn send_all_queued(&mut self) {
        let claims = self.sessions.take_claims();
        self.net.tell_others(&claims, &self.config);
        self.net.send_queued(&self.config);
    }

    /// After DTLS reached session `key`: ends it if that was the peer's close_notify.
    fn check_closed(&mut self, key: SessionKey) {
        let closed = (self.sessions.conn_mut(key)).map(|conn| shielded(|| conn.dtls_closed()));
        match closed {
            Some(Ok(true)) => self.teardown(key, EndReason::Closed),
            Some(Err(panic)) => self.note_panic(key, &panic),
            _ => {}
        }
    }

    fn fire_timers(&mut self, now: Instant) {
        while let Some((at, key)) = self.timers.pop_due(now) {
            let Some(conn) = self.sessions.conn_mut(key) else {
                continue;
            };
            match shielded(|| conn.fire(at, now)) {
                Ok(Fired::Stale) => {}
                Ok(Fired::SetupTimeout) => self.teardown(key, EndReason::SetupTimeout),
                Ok(Fired::Handled) => self.drive(key, now),
                Err(panic) => self.note_panic(key, &panic),
            }
        }
    }

    /// Drains a session's events and received media, sends what it has to send, and acts on
    /// what happened: a restart completed, a stats change, its end, keyframes wanted, media to
    /// fan out.
    fn drive(&mut self, key: SessionKey, now: Instant) {
        let mut polled = std::mem::take(&mut self.scratch.polled);
        self.drive_with(key, now, &mut polled);
        polled.events.clear();
        polled.media.clear();
        self.scratch.polled = polled;
    }

    /// [`Self::drive`] with the buffer that takes what the session's drain produced.
    fn drive_with(&mut self, key: SessionKey, now: Instant, polled: &mut Polled) {
        let publishes = self.sessions.publishes(key);
        let Some(conn) = self.sessions.conn_mut(key) else {
            return;
        };
        let metrics = &self.config.metrics;
        if let Err(panic) = shielded(|| conn.poll(publishes, now, metrics, polled)) {
            self.note_panic(key, &panic);
            return;
        }
        let plays_video = conn.video_leg().is_some();
        let link_changed =
            (polled.events.iter()).any(|e| matches!(e, Event::Connected | Event::Disconnected));
        let connected = link_changed && conn.link() == Link::Connected;
        if connected {
            self.sessions.restart_done(key);
        }
        self.flush(key);
        if link_changed {
            self.publish_stats();
        }
        // The last state rtc reported is the end reason.
        let ended = polled.events.iter().rev().find_map(|e| match e {
            Event::Ended(reason) => Some(*reason),
            _ => None,
        });
        if let Some(reason) = ended {
            self.teardown(key, reason);
            return;
        }
        // Keyframes (`forward/keyframes.rs`): a viewer's PLI/FIR, or its video leg coming up,
        // asks the publisher; a publisher that connects (a new one taking a stream over too) is
        // asked at once, so that its viewers start with a decodable picture.
        if polled.events.contains(&Event::KeyframeWanted) || (connected && plays_video) {
            if let Some((publisher, ssrc)) = listing::upstream_layer(&self.sessions, key, now) {
                self.request_keyframe(publisher, ssrc, now);
            }
        }
        if publishes && connected {
            self.request_keyframe(key, None, now);
        } else if publishes {
            self.send_due_keyframe_request(key, now);
        }
        if !polled.media.is_empty() {
            self.forward(key, &polled.media, now);
        }
    }

    /// Fans publisher `key`'s `media` out to its stream's legs and flushes those written to.
    fn forward(&mut self, key: SessionKey, media: &[(RtpCodecKind, Packet)], now: Instant) {
        let mut written = std::mem::take(&mut self.scratch.targets);
        let metrics = &self.config.metrics;
        let buffers = self.net.spare();
        let out = (&mut written, buffers);
        let forwarded = fan_out(&mut self.sessions, key, media, now, metrics, out);
        for (target, panic) in forwarded.panicked {
            self.note_panic(target, &panic);
        }
        for target in written.drain(..) {
            self.flush(target);
        }
        self.scratch.targets = written;
        if forwarded.keyframe_asked {
            self.send_due_keyframe_request(key, now);
        }
    }

    /// Asks publisher `key` for a keyframe of source `ssrc` (none: of each video source), now or
    /// when its interval ends.
    fn request_keyframe(&mut self, key: SessionKey, ssrc: Option<u32>, now: Instant) {
        if let Some(conn) = self.sessions.conn_mut(key) {
            conn.want_keyframe(ssrc);
        }
        self.send_due_keyframe_request(key, now);
    }

    /// Sends publisher `key`'s pending keyframe request if its interval has ended.
    fn send_due_keyframe_request(&mut self, key: SessionKey, now: Instant) {
        let Some(conn) = self.sessions.conn_mut(key) else {
            return;
        };
        match shielded(|| conn.send_due_keyframe_request(now)) {
            Ok(true) => self.flush(key),
            Ok(false) => {}
            Err(panic) => self.note_panic(key, &panic),
        }
    }

    /// Sends a session's pending datagrams, learning their destinations as its routes, and
    /// re-arms its timer.
    fn flush(&mut self, key: SessionKey) {
        let Some(mut sending) = self.sessions.sending(key) else {
            return;
        };
        // One shielded call for the whole drain (it is on every packet's path).
        let (net, config) = (&mut self.net, &self.config);
        match shielded(|| net.flush(key, &mut sending, config)) {
            Ok(Some(at)) => self.timers.arm(key, at, sending.conn.armed()),
            Ok(None) => {}
            Err(panic) => self.note_panic(key, &panic),
        }
    }

    /// Notes that `key`'s peer connection panicked: logged, and torn down at the end of the
    /// wake-up (or by [`Self::end_panicked`]) without another call into it.
    fn note_panic(&mut self, key: SessionKey, panic: &Panicked) {
        if let Some(conn) = self.sessions.take(key) {
            log_panic(&conn, panic);
            self.panicked.push((key, conn));
        }
    }

    /// Tears down the sessions whose peer connection panicked.
    fn end_panicked(&mut self) {
        for (key, conn) in std::mem::take(&mut self.panicked) {
            let paths = self
                .sessions
                .end(key, &conn, EndReason::Panicked, Instant::now());
            self.finish(conn, &paths, EndReason::Panicked);
        }
    }

    /// The one teardown path: DELETE, ICE/DTLS failure, peer close, setup timeout, a publisher
    /// replaced, and shutdown.
    fn teardown(&mut self, key: SessionKey, reason: EndReason) {
        let Some(mut removed) = self.sessions.teardown(key, reason, Instant::now()) else {
            return;
        };
        // A DTLS close_notify, so the peer learns at once (RFC 7675 §5.2). Not after a panic:
        // the peer connection is not called again (`shield.rs`).
        let (net, config) = (&mut self.net, &self.config);
        let conn = &mut removed.conn;
        if let Err(panic) = shielded(|| {
            conn.close();
            net.send_all(conn, config);
        }) {
            log_panic(conn, &panic);
        }
        self.finish(removed.conn, &removed.paths, reason);
    }

    /// The end of a session out of `sessions`: its ICE-TCP connections closed (RFC 6544: they
    /// belong to it), counted, logged, dropped.
    fn finish(&mut self, conn: Conn, paths: &[super::net::transport::PathId], reason: EndReason) {
        self.net.close_paths(paths);
        self.config.metrics.ended(reason);
        conn.span().in_scope(|| info!(%reason, "session ended"));
        // Dropping `conn` gives its place under the session cap back; its peer connection's drop
        // is shielded too.
        if let Err(panic) = shielded(move || drop(conn)) {
            error!(%panic, "the WebRTC stack panicked while a session was dropped");
        }
        self.publish_stats();
    }

    fn publish_stats(&self) {
        self.stats.publish(self.sessions.stats());
    }
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at.into()).await,
        None => std::future::pending().await,
    }
}

/// Logs that `conn`'s peer connection panicked (once per session: it is not called again).
fn log_panic(conn: &Conn, panic: &Panicked) {
    conn.span()
        .in_scope(|| error!(%panic, "the WebRTC stack panicked: session ended"));
}
