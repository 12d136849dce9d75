//! Prometheus metrics (`GET /metrics`, text format 0.0.4) through `prometheus-client`. Counters
//! are atomics shared with the media loops, which hold their own handles ([`LoopMetrics`]) so the
//! packet path never looks a label up; session and stream gauges are read off the loops'
//! published statistics at each scrape. Names follow Prometheus conventions: the `whip_echo_`
//! prefix, base units (`_seconds`, `_bytes`) and `_total` on counters.

use std::sync::{Arc, Mutex};

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

mod causes;
mod loops;

use causes::{CauseLabel, HttpLabels, SessionLabels};
pub use causes::{ConnClosed, Dropped, Refused, Rejection};
pub use loops::{LoopMetrics, NackMetrics};

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

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// A fresh registry with every metric at zero.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("whip_echo");
        let loops = LoopMetrics::register(&mut registry);
        let (rejected, sessions, streams, http) = register_sessions(&mut registry);
        let (cluster, redis_errors) = register_cluster(&mut registry);
        let (log_lines_dropped, log_lines_suppressed) = register_logs(&mut registry);
        Metrics(Arc::new(Inner {
            registry,
            cluster,
            redis_errors,
            log_lines_dropped,
            log_lines_suppressed,
            loops,
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

/// A counter `name` registered in `registry`.
fn counter(registry: &mut Registry, name: &str, help: &str) -> Counter {
    let c = Counter::default();
    registry.register(name, help, c.clone());
    c
}

/// The HTTP plane's and the sessions' metrics: refusals by cause, sessions by role and state,
/// streams, responses by route and status.
#[allow(clippy::type_complexity)]
fn register_sessions(
    registry: &mut Registry,
) -> (
    [Counter; 6],
    Family<SessionLabels, Gauge>,
    Gauge,
    Family<HttpLabels, Counter>,
) {
    let rejected = cause_counters(
        registry,
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
    (rejected, sessions, streams, http)
}

/// Cluster mode's gauges (leases, pulls, Redis up) and its Redis error counter.
fn register_cluster(registry: &mut Registry) -> ([Gauge; 3], Counter) {
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
        registry,
        "cluster_redis_errors",
        "Cluster mode: Redis calls that failed",
    );
    (cluster, redis_errors)
}

/// The log pipeline's counters: lines dropped by a slow writer, the WebRTC stack's warnings over
/// their budget.
fn register_logs(registry: &mut Registry) -> (Counter, Counter) {
    let log_lines_dropped = counter(
        registry,
        "log_lines_dropped",
        "Log lines dropped because the log output fell behind (never a media loop waiting)",
    );
    let log_lines_suppressed = counter(
        registry,
        "log_lines_suppressed",
        "Warnings and errors of the WebRTC stack (mostly about one client's packet) over \
             their budget of 20 at once and one a second, not logged",
    );
    (log_lines_dropped, log_lines_suppressed)
}
