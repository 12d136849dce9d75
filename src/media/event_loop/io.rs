//! A media loop's network side: its transports (the UDP socket and the ICE-TCP connections
//! handed to it), what comes in on them as [`Inbound`] packets, and what its sessions send, each
//! datagram learnt as a route of its session (`Sessions::sending`) and held to the ICE-TCP caps
//! and the budget of checks to addresses that never answered one.

use std::time::Instant;

use tokio::sync::mpsc;
use tracing::debug;

use crate::media::conn::Conn;
use crate::media::net::mesh::Mesh;
use crate::media::net::routes::PathClaim;
use crate::media::net::socket::UdpIo;
use crate::media::net::stun::is_binding_request;
use crate::media::net::tcp::{Claim, TcpConns, TcpEvent};
use crate::media::net::transport::{Inbound, PathId, TcpConnId, Transports};
use crate::media::sessions::Sending;
use crate::media::{MediaConfig, SessionKey};
use crate::ops::metrics::Dropped;
use crate::rate::TokenBucket;

/// Receive batches handled before the loop looks at commands and timers again.
const MAX_BATCHES_PER_WAKE: usize = 8;
/// ICE-TCP events (frames, mostly) handled per wake-up, like a few receive batches.
const MAX_TCP_EVENTS_PER_WAKE: usize = 64;

/// The transports of one media loop, its links to the other loops on the UDP port, and the
/// budgets of what it sends.
pub struct Net {
    transports: Transports,
    /// The other loops on the UDP port.
    mesh: Mesh,
    /// Checks to addresses that never answered one (`--unanswered-checks-per-second`, shared
    /// evenly by the loops: this loop's share a second).
    unanswered_checks: TokenBucket,
    check_rate: u32,
    /// Packets that named no session.
    unroutable: u64,
}

impl Net {
    pub fn new((udp, tcp, mesh): (UdpIo, TcpConns, Mesh), config: &MediaConfig) -> Self {
        let loops = u32::try_from(mesh.len().max(1)).unwrap_or(u32::MAX);
        let check_rate = config.unanswered_checks_per_second.div_ceil(loops);
        let burst = check_rate.saturating_mul(2);
        Net {
            check_rate,
            transports: Transports { udp, tcp },
            mesh,
            unanswered_checks: TokenBucket::full(burst, Instant::now()),
            unroutable: 0,
        }
    }

    /// The other loops on the UDP port.
    pub fn mesh(&mut self) -> &mut Mesh {
        &mut self.mesh
    }

    /// Tells the other loops on the port `claims` and hands them what this wake-up has for them.
    pub fn tell_others(&mut self, claims: &[PathClaim], config: &MediaConfig) {
        if self.mesh.shared() {
            self.mesh.tell(claims);
            self.mesh.send(&config.metrics);
        }
    }

    /// Emptied buffers of sent datagrams, for the fast path to build new ones in.
    pub fn spare(&mut self) -> &mut Vec<bytes::BytesMut> {
        self.transports.udp.spare()
    }

    /// Waits until the UDP socket is readable.
    pub async fn readable(&self) -> std::io::Result<()> {
        self.transports.udp.readable().await
    }

    /// Up to `MAX_BATCHES_PER_WAKE` receive batches of the UDP socket, into `inbound`.
    pub fn read_datagrams(&mut self, inbound: &mut Vec<Inbound>) {
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
    }

    /// Takes `first` and whatever else the ICE-TCP connections have queued (bounded): new
    /// connections are opened, frames come back as packets, and the connections that closed
    /// (to forget once this batch's frames, which may still name them, are handled).
    pub fn tcp_events(
        &mut self,
        events: &mut mpsc::Receiver<TcpEvent>,
        first: Option<TcpEvent>,
    ) -> (Vec<Inbound>, Vec<TcpConnId>) {
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
                TcpEvent::Closed { id } => closed.push(id),
            }
            handled += 1;
            if handled < MAX_TCP_EVENTS_PER_WAKE {
                next = events.try_recv().ok();
            }
        }
        (inbound, closed)
    }

    /// A packet on `path` named no session: counted, and a TCP connection that names none is
    /// closed rather than kept open for nothing (it exists for one session, RFC 6544).
    pub fn unroutable(&mut self, path: PathId, config: &MediaConfig) {
        self.unroutable += 1;
        config.metrics.dropped(Dropped::Unroutable, 1);
        if let PathId::Tcp(id) = path {
            self.transports.tcp.close(id);
        }
    }

    /// Packets that named no session so far.
    pub fn unroutable_count(&self) -> u64 {
        self.unroutable
    }

    /// Closes the ICE-TCP connections among `paths` (a session's, at its end: RFC 6544).
    pub fn close_paths(&mut self, paths: &[PathId]) {
        for path in paths {
            if let PathId::Tcp(id) = path {
                self.transports.tcp.close(*id);
            }
        }
    }

    /// Closes ICE-TCP connection `id` (its routes are forgotten by `Sessions::forget_path`).
    pub fn close_tcp(&mut self, id: TcpConnId) {
        self.transports.tcp.close(id);
    }

    /// Sends what `conn` has queued, ignoring errors (its close_notify at teardown).
    pub fn send_all(&mut self, conn: &mut Conn, config: &MediaConfig) {
        while let Some(out) = conn.poll_write() {
            // Its paths are claimed already: a full batch may leave at once.
            if let Ok(true) = self.transports.send(&out.transport, out.message) {
                self.send_queued(config);
            }
        }
    }

    /// Sends the UDP datagrams this wake-up queued (`batch.rs`); those the kernel refused or
    /// found no room for are counted.
    pub fn send_queued(&mut self, config: &MediaConfig) {
        let sent = self.transports.udp.send_queued();
        if sent.dropped > 0 {
            config
                .metrics
                .dropped(Dropped::SendFailed, sent.dropped as u64);
        }
    }

    /// Sends session `key`'s pending datagrams, learning their destinations as its routes; its
    /// next deadline.
    pub fn flush(
        &mut self,
        key: SessionKey,
        sending: &mut Sending<'_>,
        config: &MediaConfig,
    ) -> Option<Instant> {
        while let Some(out) = sending.conn.poll_write() {
            if let Some(path) = self.transports.path_of(&out.transport) {
                if !self.may_send(key, path, &out.message, sending, config) {
                    continue;
                }
                sending.learn_sent(path, &out.message);
                sending.conn.note_sent(path, &out.message);
            }
            match self.transports.send(&out.transport, out.message) {
                // A full batch leaves now, after the claims its datagrams make (`mesh.rs`).
                Ok(true) => {
                    let claims = sending.take_claims();
                    self.tell_others(&claims, config);
                    self.send_queued(config);
                }
                Ok(false) => {}
                Err(e) => (sending.conn.span()).in_scope(|| debug!(error = %e, "send failed")),
            }
        }
        sending.conn.next_deadline()
    }

    /// Whether session `key` may send `datagram` on `path`: the ICE-TCP caps (a connection
    /// beyond one is closed instead of answered), and RFC 8445 §19.5.1: checks to addresses that
    /// never answered one are what a client's offer can aim anywhere; each loop sends only so
    /// many a second.
    fn may_send(
        &mut self,
        key: SessionKey,
        path: PathId,
        datagram: &[u8],
        sending: &mut Sending<'_>,
        config: &MediaConfig,
    ) -> bool {
        if let PathId::Tcp(id) = path {
            match self.transports.tcp.claim(id, key) {
                Claim::Send => {}
                Claim::NotYours => return false,
                Claim::Refused(cap) => {
                    self.transports.tcp.close(id);
                    sending.forget(path);
                    config.metrics.tcp_closed(cap);
                    return false;
                }
            }
        }
        let rate = self.check_rate;
        if rate > 0 && is_binding_request(datagram) && !sending.has_answered(path) {
            let burst = rate.saturating_mul(2);
            let now = Instant::now();
            if self
                .unanswered_checks
                .take(now, f64::from(rate), burst)
                .is_err()
            {
                config.metrics.dropped(Dropped::CheckBudget, 1);
                return false;
            }
        }
        true
    }
}
