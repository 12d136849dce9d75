//! Prometheus metrics (`GET /metrics`, text format 0.0.4) through `prometheus-client`. Counters
//! are atomics shared with the media loops, which hold their own handles ([`LoopMetrics`]) so the
//! packet path never looks a label up; session and stream gauges are read off the loops'
//! published statistics at each scrape. Names follow Prometheus conventions: the `whip_echo_`
//! prefix, base units (`_seconds`, `_bytes`) and `_total` on counters.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

use crate::session::EndReason;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CauseLabel {
    cause: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ListenerLabel {
    listener: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabel {
    reason: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SessionLabels {
    role: &'static str,
    state: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct HttpLabels {
    route: String,
    status: u16,
}

/// Why a packet was not forwarded.
#[derive(Debug, Clone, Copy)]
pub enum Dropped {
    /// It named no session (unknown ufrag, unknown source address).
    Unroutable,
    /// Its publisher was over `--max-bitrate`.
    RateCap,
    /// The viewer's leg has another codec than the publisher sends.
    CodecMismatch,
    /// The viewer's leg waits for a keyframe of a new source.
    AwaitingKeyframe,
    /// The viewer's sender or socket refused it (a slow viewer).
    SendFailed,
    /// A connectivity check to an address that never answered one, over its loop's
    /// `--unanswered-checks-per-second`.
    CheckBudget,
    /// Refused by the WebRTC stack: SRTP or SRTCP that did not authenticate or was a replay, a
    /// new SSRC beyond a session's 64 (patched rtc-srtp), or a malformed packet.
    Rejected,
    /// Of a source no viewer takes: a second audio source while the first is live, a second
    /// video track, a simulcast layer no viewer chose (a viewer's leg carries one stream per
    /// kind).
    OtherSource,
    /// RTP that no track of its session took (its SSRC neither signalled nor bound by mid or
    /// rid: simulcast without the rid extension, a stream nobody negotiated; patched rtc).
    Unbound,
}

impl Dropped {
    const ALL: [Dropped; 9] = [
        Dropped::Unroutable,
        Dropped::RateCap,
        Dropped::CodecMismatch,
        Dropped::AwaitingKeyframe,
        Dropped::SendFailed,
        Dropped::CheckBudget,
        Dropped::Rejected,
        Dropped::OtherSource,
        Dropped::Unbound,
    ];

    fn label(self) -> &'static str {
        match self {
            Dropped::Unroutable => "unroutable",
            Dropped::RateCap => "rate_cap",
            Dropped::CodecMismatch => "codec_mismatch",
            Dropped::AwaitingKeyframe => "awaiting_keyframe",
            Dropped::SendFailed => "send_failed",
            Dropped::CheckBudget => "check_budget",
            Dropped::Rejected => "rejected",
            Dropped::OtherSource => "other_source",
            Dropped::Unbound => "unbound",
        }
    }
}

/// Why a TCP connection was closed by a limit (or refused at accept).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnClosed {
    /// Its client already held `--max-pending-connections-per-ip` unidentified connections.
    PendingPerIp,
    /// Its listener's pool of unidentified connections was full, and it was the oldest.
    PendingEvicted,
    /// No first byte, TLS handshake or first ICE-TCP frame within `--tcp-setup-timeout`.
    SetupTimeout,
    /// Its first ICE-TCP frame was too long, or not a STUN request for a session.
    BadFirstFrame,
    /// No session answered its ICE-TCP requests within `--tcp-setup-timeout`.
    Unanswered,
    /// Its session held `--max-ice-tcp-connections-per-session` already.
    IceTcpPerSession,
    /// Its client held `--max-ice-tcp-connections-per-ip` already.
    IceTcpPerIp,
    /// `--max-ice-tcp-connections` were open.
    IceTcpTotal,
}

impl ConnClosed {
    const ALL: [ConnClosed; 8] = [
        ConnClosed::PendingPerIp,
        ConnClosed::PendingEvicted,
        ConnClosed::SetupTimeout,
        ConnClosed::BadFirstFrame,
        ConnClosed::Unanswered,
        ConnClosed::IceTcpPerSession,
        ConnClosed::IceTcpPerIp,
        ConnClosed::IceTcpTotal,
    ];

    fn label(self) -> &'static str {
        match self {
            ConnClosed::PendingPerIp => "pending_per_ip",
            ConnClosed::PendingEvicted => "pending_evicted",
            ConnClosed::SetupTimeout => "setup_timeout",
            ConnClosed::BadFirstFrame => "bad_first_frame",
            ConnClosed::Unanswered => "unanswered",
            ConnClosed::IceTcpPerSession => "ice_tcp_per_session",
            ConnClosed::IceTcpPerIp => "ice_tcp_per_ip",
            ConnClosed::IceTcpTotal => "ice_tcp_total",
        }
    }
}

/// Why a request was refused before it did anything (a POST before its session was created).
#[derive(Debug, Clone, Copy)]
pub enum Rejection {
    /// `--max-sessions` reached, and no connecting session to evict (503).
    Capacity,
    /// `--max-sessions-per-ip` reached (429).
    PerIp,
    /// `--max-sessions-per-prefix` reached (429).
    PerPrefix,
    /// `--max-connecting-sessions-per-ip` reached (429).
    ConnectingPerIp,
    /// A POST or PATCH over `--request-rate-per-ip` (429).
    Rate,
    /// An ICE restart over `--ice-restarts-per-minute` (429).
    RestartRate,
}

impl Rejection {
    const ALL: [Rejection; 6] = [
        Rejection::Capacity,
        Rejection::PerIp,
        Rejection::PerPrefix,
        Rejection::ConnectingPerIp,
        Rejection::Rate,
        Rejection::RestartRate,
    ];

    fn label(self) -> &'static str {
        match self {
            Rejection::Capacity => "capacity",
            Rejection::PerIp => "per_ip",
            Rejection::PerPrefix => "per_prefix",
            Rejection::ConnectingPerIp => "connecting_per_ip",
            Rejection::Rate => "rate",
            Rejection::RestartRate => "restart_rate",
        }
    }
}

/// Why a requested packet was not resent (in the order of [`Refused::ALL`], which indexes the
/// counters).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// Named again in the same compound packet.
    Duplicate,
    /// Resent less than max(RTT, 100 ms) ago.
    TooSoon,
    /// Already resent `MAX_RESENDS` (media::nack) times.
    Exhausted,
    /// Not in the history (never sent on this leg, or too old).
    Unknown,
    /// Named by an FCI beyond `MAX_FCIS` (media::nack) in one compound packet.
    TooMany,
    /// The leg's resend budget was spent.
    Budget,
}

impl Refused {
    const ALL: [Refused; 6] = [
        Refused::Duplicate,
        Refused::TooSoon,
        Refused::Exhausted,
        Refused::Unknown,
        Refused::TooMany,
        Refused::Budget,
    ];

    fn label(self) -> &'static str {
        match self {
            Refused::Duplicate => "duplicate",
            Refused::TooSoon => "too_soon",
            Refused::Exhausted => "exhausted",
            Refused::Unknown => "unknown",
            Refused::TooMany => "too_many",
            Refused::Budget => "budget",
        }
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

/// The gauges a scrape sets: what the media loops and the cluster hold at that moment.
#[derive(Debug, Clone, Default)]
pub struct Gauges {
    /// Live sessions by role (publisher, viewer, echo) and link (connecting, connected,
    /// disconnected).
    pub sessions: [[usize; 3]; 3],
    /// Streams with a publisher or a viewer.
    pub streams: usize,
    /// Cluster mode's.
    pub cluster: Option<ClusterGauges>,
}

/// Cluster mode's gauges.
#[derive(Debug, Clone, Default)]
pub struct ClusterGauges {
    /// Streams this node holds the lease of.
    pub leases: usize,
    /// Streams this node pulls from their holders.
    pub pulls: usize,
    /// Whether Redis answered lately.
    pub redis_up: bool,
    /// Redis errors so far.
    pub redis_errors: u64,
}

/// Every metric of the server; cheap to clone.
#[derive(Clone)]
pub struct Metrics(Arc<Inner>);

struct Inner {
    registry: Registry,
    loops: LoopMetrics,
    rejected: [Counter; 6],
    sessions: Family<SessionLabels, Gauge>,
    streams: Gauge,
    http: Family<HttpLabels, Counter>,
    /// Cluster mode: streams held, streams pulled, Redis up, Redis errors.
    cluster: [Gauge; 3],
    redis_errors: Counter,
    /// Log lines the writer dropped because the log pipe was slow (`telemetry::dropped_lines`).
    log_lines_dropped: Counter,
    /// The WebRTC stack's warnings over their budget (`telemetry::suppressed_lines`).
    log_lines_suppressed: Counter,
    /// One scrape at a time sets the gauges and encodes.
    scrape: Mutex<()>,
}

/// The counters a media loop moves, resolved once.
#[derive(Clone)]
pub struct LoopMetrics {
    rtp_received: Counter,
    rtp_received_bytes: Counter,
    rtp_sent: Counter,
    rtp_sent_bytes: Counter,
    dropped: [Counter; 9],
    ended: Family<ReasonLabel, Counter>,
    connect_seconds: Histogram,
    tcp_closed: [Counter; 8],
    tcp_pending: Family<ListenerLabel, Gauge>,
    ice_tcp_open: Gauge,
    candidates_ignored: Counter,
    nack: NackMetrics,
}

/// Raises `counter` to `total`, a count kept elsewhere (read at each scrape).
fn catch_up(counter: &Counter, total: u64) {
    counter.inc_by(total.saturating_sub(counter.get()));
}

/// A counter family `name` with a `cause` label, registered in `registry`, and its counter of each
/// of `causes` (all exposed at 0 from the start).
pub(crate) fn cause_counters<const N: usize>(
    registry: &mut Registry,
    name: &str,
    help: &str,
    causes: [&'static str; N],
) -> [Counter; N] {
    let family = Family::<CauseLabel, Counter>::default();
    registry.register(name, help, family.clone());
    causes.map(|cause| family.get_or_create(&CauseLabel { cause }).clone())
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

impl std::fmt::Debug for LoopMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("LoopMetrics")
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// A fresh registry with every metric at zero.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("whip_echo");
        let counter = |registry: &mut Registry, name: &str, help: &str| {
            let c = Counter::default();
            registry.register(name, help, c.clone());
            c
        };
        let rtp_received = counter(
            &mut registry,
            "rtp_packets_received",
            "RTP packets received from publishers",
        );
        let rtp_received_bytes = counter(
            &mut registry,
            "rtp_received_bytes",
            "RTP bytes (header and payload) received from publishers",
        );
        let rtp_sent = counter(
            &mut registry,
            "rtp_packets_sent",
            "RTP packets forwarded to viewers and echo sessions",
        );
        let rtp_sent_bytes = counter(
            &mut registry,
            "rtp_sent_bytes",
            "RTP bytes (header and payload) forwarded",
        );
        let dropped = cause_counters(
            &mut registry,
            "dropped_packets",
            "Packets not forwarded, by cause",
            Dropped::ALL.map(Dropped::label),
        );
        let ended = Family::<ReasonLabel, Counter>::default();
        registry.register("sessions_ended", "Sessions ended, by reason", ended.clone());
        // 1 ms to about 16 s.
        let connect_seconds = Histogram::new(exponential_buckets(0.001, 2.0, 15));
        registry.register(
            "connect_seconds",
            "Time from POST to ICE and DTLS connected",
            connect_seconds.clone(),
        );
        let tcp_closed = cause_counters(
            &mut registry,
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
        let candidates_ignored = counter(
            &mut registry,
            "remote_candidates_ignored",
            "Remote candidates of offers and trickles not taken: over a session's cap, at an \
             unspecified, multicast, broadcast or the server's own address, or an mDNS name",
        );
        let nack = NackMetrics::register(&mut registry);
        let ice_tcp_open = Gauge::default();
        registry.register(
            "ice_tcp_connections",
            "ICE-TCP connections bound to a session",
            ice_tcp_open.clone(),
        );
        let rejected = cause_counters(
            &mut registry,
            "sessions_rejected",
            "Requests refused by a session cap or a rate limit (POSTs before their session \
             was created, PATCHes), by cause",
            Rejection::ALL.map(Rejection::label),
        );
        let sessions = Family::<SessionLabels, Gauge>::default();
        registry.register(
            "sessions",
            "Live sessions by role and state",
            sessions.clone(),
        );
        let streams = Gauge::default();
        registry.register(
            "streams",
            "Streams with a publisher or a viewer",
            streams.clone(),
        );
        let http = Family::<HttpLabels, Counter>::default();
        registry.register(
            "http_responses",
            "HTTP responses by route and status",
            http.clone(),
        );
        let cluster = [
            (
                "cluster_leases",
                "Cluster mode: streams whose lease this node holds",
            ),
            (
                "cluster_pulls",
                "Cluster mode: streams this node pulls from their holders",
            ),
            (
                "cluster_redis_up",
                "Cluster mode: 1 when Redis answered the last call",
            ),
        ]
        .map(|(name, help)| {
            let g = Gauge::default();
            registry.register(name, help, g.clone());
            g
        });
        let redis_errors = counter(
            &mut registry,
            "cluster_redis_errors",
            "Cluster mode: Redis calls that failed",
        );
        let log_lines_dropped = counter(
            &mut registry,
            "log_lines_dropped",
            "Log lines dropped because the log output fell behind (never a media loop waiting)",
        );
        let log_lines_suppressed = counter(
            &mut registry,
            "log_lines_suppressed",
            "Warnings and errors of the WebRTC stack (mostly about one client's packet) over \
             their budget of 20 at once and one a second, not logged",
        );
        Metrics(Arc::new(Inner {
            registry,
            cluster,
            redis_errors,
            log_lines_dropped,
            log_lines_suppressed,
            loops: LoopMetrics {
                rtp_received,
                rtp_received_bytes,
                rtp_sent,
                rtp_sent_bytes,
                dropped,
                ended,
                connect_seconds,
                tcp_closed,
                tcp_pending,
                ice_tcp_open,
                candidates_ignored,
                nack,
            },
            rejected,
            sessions,
            streams,
            http,
            scrape: Mutex::new(()),
        }))
    }

    /// The media loops' handles.
    pub fn for_loops(&self) -> LoopMetrics {
        self.0.loops.clone()
    }

    /// A POST refused before its session existed.
    pub fn rejected(&self, why: Rejection) {
        self.0.rejected[why as usize].inc();
    }

    /// One HTTP response on `route` (the matched path pattern, e.g. `/whip/{stream}`, so that
    /// the label set stays small).
    pub fn http_response(&self, route: &str, status: u16) {
        self.0
            .http
            .get_or_create(&HttpLabels {
                route: route.to_owned(),
                status,
            })
            .inc();
    }

    /// The text exposition, with the gauges set to `gauges` (the loops' and the cluster's state
    /// at this scrape).
    pub fn encode(&self, gauges: &Gauges) -> String {
        let _one = self.0.scrape.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(view) = &gauges.cluster {
            let [leases, pulls, up] = &self.0.cluster;
            leases.set(view.leases as i64);
            pulls.set(view.pulls as i64);
            up.set(i64::from(view.redis_up));
            catch_up(&self.0.redis_errors, view.redis_errors);
        }
        catch_up(
            &self.0.log_lines_dropped,
            crate::ops::telemetry::dropped_lines(),
        );
        catch_up(
            &self.0.log_lines_suppressed,
            crate::ops::telemetry::suppressed_lines(),
        );
        let roles = [("publisher", 0), ("viewer", 1), ("echo", 2)];
        let states = [("connecting", 0), ("connected", 1), ("disconnected", 2)];
        for (role, r) in roles {
            for (state, s) in states {
                let n = gauges.sessions[r][s];
                self.0
                    .sessions
                    .get_or_create(&SessionLabels { role, state })
                    .set(n as i64);
            }
        }
        self.0.streams.set(gauges.streams as i64);
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.0.registry);
        out
    }
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
