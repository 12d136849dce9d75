//! The counters a media loop moves, resolved once so the packet path never looks a label up, and
//! the NACK responders' own.

use std::time::Duration;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

use super::causes::{ConnClosed, Dropped, ListenerLabel, ReasonLabel, Refused};
use super::{cause_counters, counter};
use crate::session::EndReason;

/// The counters a media loop moves, resolved once.
#[derive(Clone)]
pub struct LoopMetrics {
    rtp_received: Counter,
    rtp_received_bytes: Counter,
    rtp_sent: Counter,
    rtp_sent_bytes: Counter,
    dropped: [Counter; 10],
    handed_over: Counter,
    fast_path: Counter,
    ended: Family<ReasonLabel, Counter>,
    connect_seconds: Histogram,
    tcp_closed: [Counter; 8],
    tcp_pending: Family<ListenerLabel, Gauge>,
    ice_tcp_open: Gauge,
    candidates_ignored: Counter,
    nack: NackMetrics,
}

impl std::fmt::Debug for LoopMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("LoopMetrics")
    }
}

impl LoopMetrics {
    /// The loops' counters, registered in `registry`.
    pub(super) fn register(registry: &mut Registry) -> Self {
        let [rtp_received, rtp_received_bytes, rtp_sent, rtp_sent_bytes, handed_over, fast_path] = [
            (
                "rtp_packets_received",
                "RTP packets received from publishers",
            ),
            (
                "rtp_received_bytes",
                "RTP bytes (header and payload) received from publishers",
            ),
            (
                "rtp_packets_sent",
                "RTP packets forwarded to viewers and echo sessions",
            ),
            ("rtp_sent_bytes", "RTP bytes (header and payload) forwarded"),
            (
                "handed_over_packets",
                "Datagrams a media loop's socket took for a session of another loop on the same \
                 UDP port, handed over to it",
            ),
            (
                "fast_path_packets",
                "SRTP and SRTCP packets the fast path opened or protected, past rtc's pipeline",
            ),
        ]
        .map(|(name, help)| counter(registry, name, help));
        let dropped = cause_counters(
            registry,
            "dropped_packets",
            "Packets not forwarded, by cause",
            Dropped::ALL.map(Dropped::label),
        );
        let (ended, connect_seconds) = session_counters(registry);
        let (tcp_closed, tcp_pending) = tcp_counters(registry);
        let candidates_ignored = counter(
            registry,
            "remote_candidates_ignored",
            "Remote candidates of offers and trickles not taken: over a session's cap, at an \
             unspecified, multicast, broadcast or the server's own address, or an mDNS name",
        );
        let ice_tcp_open = Gauge::default();
        registry.register(
            "ice_tcp_connections",
            "ICE-TCP connections bound to a session",
            ice_tcp_open.clone(),
        );
        LoopMetrics {
            rtp_received,
            rtp_received_bytes,
            rtp_sent,
            rtp_sent_bytes,
            dropped,
            handed_over,
            fast_path,
            ended,
            connect_seconds,
            tcp_closed,
            tcp_pending,
            ice_tcp_open,
            candidates_ignored,
            nack: NackMetrics::register(registry),
        }
    }
}

/// Sessions ended by reason, and the time they took to connect.
fn session_counters(registry: &mut Registry) -> (Family<ReasonLabel, Counter>, Histogram) {
    let ended = Family::<ReasonLabel, Counter>::default();
    registry.register("sessions_ended", "Sessions ended, by reason", ended.clone());
    // 1 ms to about 16 s.
    let connect_seconds = Histogram::new(exponential_buckets(0.001, 2.0, 15));
    registry.register(
        "connect_seconds",
        "Time from POST to ICE and DTLS connected",
        connect_seconds.clone(),
    );
    (ended, connect_seconds)
}

/// The TCP connections closed by a limit, by cause, and the pools of connections not yet
/// identified, by listener.
fn tcp_counters(registry: &mut Registry) -> ([Counter; 8], Family<ListenerLabel, Gauge>) {
    let tcp_closed = cause_counters(
        registry,
        "tcp_connections_closed",
        "TCP connections closed or refused by a limit, by cause",
        ConnClosed::ALL.map(ConnClosed::label),
    );
    let tcp_pending = Family::<ListenerLabel, Gauge>::default();
    registry.register(
        "tcp_connections_pending",
        "TCP connections not yet identified (no first byte, TLS handshake or answered \
         ICE-TCP request yet), by listener",
        tcp_pending.clone(),
    );
    (tcp_closed, tcp_pending)
}

impl LoopMetrics {
    /// A publisher's packet of `bytes` received.
    pub fn received(&self, bytes: usize) {
        self.rtp_received.inc();
        self.rtp_received_bytes.inc_by(bytes as u64);
    }

    /// A packet of `bytes` forwarded.
    pub fn sent(&self, bytes: usize) {
        self.rtp_sent.inc();
        self.rtp_sent_bytes.inc_by(bytes as u64);
    }

    /// `n` packets not forwarded for `why`.
    pub fn dropped(&self, why: Dropped, n: u64) {
        self.dropped[why as usize].inc_by(n);
    }

    /// A packet the fast path opened or protected.
    pub fn fast_path(&self) {
        self.fast_path.inc();
    }

    /// Datagrams handed to another loop on the port.
    pub fn handed_over(&self, n: usize) {
        self.handed_over.inc_by(n as u64);
    }

    /// A session ended.
    pub fn ended(&self, reason: EndReason) {
        self.ended
            .get_or_create(&ReasonLabel {
                reason: reason.to_string(),
            })
            .inc();
    }

    /// A TCP connection closed (or refused) by a limit.
    pub fn tcp_closed(&self, why: ConnClosed) {
        self.tcp_closed[why as usize].inc();
    }

    /// The gauge of `listener`'s pool of unidentified connections, resolved once by its pool.
    pub fn tcp_pending(&self, listener: &'static str) -> Gauge {
        self.tcp_pending
            .get_or_create(&ListenerLabel { listener })
            .clone()
    }

    /// `n` remote candidates not taken.
    pub fn candidates_ignored(&self, n: usize) {
        self.candidates_ignored.inc_by(n as u64);
    }

    /// The NACK responders' counters.
    pub fn nack(&self) -> NackMetrics {
        self.nack.clone()
    }

    /// An ICE-TCP connection was bound to a session.
    pub fn ice_tcp_opened(&self) {
        self.ice_tcp_open.inc();
    }

    /// An ICE-TCP connection bound to a session closed.
    pub fn ice_tcp_closed(&self) {
        self.ice_tcp_open.dec();
    }

    /// A session connected `after` its POST.
    pub fn connected(&self, after: Duration) {
        self.connect_seconds.observe(after.as_secs_f64());
    }
}

/// The responders' counters: packets resent, and requests refused by cause.
#[derive(Clone, Default)]
pub struct NackMetrics {
    pub(crate) resent: Counter,
    pub(crate) refused: [Counter; 6],
}

impl std::fmt::Debug for NackMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("NackMetrics")
    }
}

impl NackMetrics {
    /// Counters registered in `registry` (`nack_resent_packets`, `nack_refused_packets{cause}`).
    pub fn register(registry: &mut prometheus_client::registry::Registry) -> Self {
        let resent = Counter::default();
        registry.register(
            "nack_resent_packets",
            "RTP packets resent to receivers that asked by NACK",
            resent.clone(),
        );
        let refused = cause_counters(
            registry,
            "nack_refused_packets",
            "Packets asked for by NACK and not resent, by cause",
            Refused::ALL.map(Refused::label),
        );
        NackMetrics { resent, refused }
    }

    pub(crate) fn refused(&self, why: Refused, n: u64) {
        if n > 0 {
            self.refused[why as usize].inc_by(n);
        }
    }
}
