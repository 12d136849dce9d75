//! Tracing initialisation. Only `main` calls this; tests install their own subscriber or none.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::Instant;

use tracing::level_filters::LevelFilter;
use tracing::subscriber::Interest;
use tracing::{Event, Level, Metadata};
use tracing_appender::non_blocking::{ErrorCounter, NonBlockingBuilder, WorkerGuard};
use tracing_log::NormalizeEvent;
use tracing_subscriber::filter::FilterExt;
use tracing_subscriber::layer::{Context, Filter, SubscriberExt};
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

use crate::rate::TokenBucket;

use crate::config::{Config, LogFormat};

/// The WebRTC stack's per-connection and per-packet chatter, kept at these levels under any
/// filter that does not name the target itself (a user's `--log info` replaced them before, and
/// every OBS, GStreamer or aiortc handshake then logged 2 to 6 `Unsupported Extension Type`
/// warnings).
pub const QUIET: [&str; 5] = [
    "rtc=warn",
    "rtc_ice=warn",
    "rtc_dtls=warn",
    "rtc_srtp=warn",
    "rtc_dtls::handshake::handshake_message_client_hello=error",
];

/// `filter` with each of [`QUIET`] whose target it does not name itself (the same target or a
/// parent of it: a more specific one of the user's wins anyway).
pub fn with_quiet(filter: &str) -> String {
    let named: Vec<&str> = filter
        .split(',')
        .filter_map(|d| d.split_once('=').map(|(target, _)| target.trim()))
        .collect();
    let mut out = filter.to_owned();
    for quiet in QUIET {
        let target = quiet.split_once('=').map_or(quiet, |(t, _)| t);
        let covered = named
            .iter()
            .any(|n| target == *n || target.strip_prefix(*n).is_some_and(|r| r.starts_with("::")));
        if !covered {
            out.push(',');
            out.push_str(quiet);
        }
    }
    out
}

/// Whether a line rate-limited through `last` (Unix seconds of the last one let through) may be
/// logged now: at most one every `secs` seconds, whichever thread asks.
pub fn once_every(last: &AtomicU64, secs: u64) -> bool {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let seen = last.load(Ordering::Relaxed);
    now >= seen + secs
        && last
            .compare_exchange(seen, now, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
}

/// Log lines queued for the writer thread at most; beyond them a line is dropped (and counted)
/// rather than making the thread that logs it wait. About 5 MB of typical lines.
pub const MAX_QUEUED_LINES: usize = 16_384;

/// The writer's count of dropped lines, once [`init`] has run.
static DROPPED: OnceLock<ErrorCounter> = OnceLock::new();

/// Log lines dropped so far because the writer fell behind (a slow or stalled log pipe):
/// `whip_echo_log_lines_dropped_total`.
pub fn dropped_lines() -> u64 {
    DROPPED.get().map_or(0, |c| c.dropped_lines() as u64)
}

/// Warnings and errors of the WebRTC stack's crates (`rtc`, `rtc_*`) logged at once at most; then
/// [`STACK_LINES_PER_SECOND`]. Most of them are about one client's packet (a STUN message that
/// does not authenticate, a record that does not parse), and a client sends as many as it likes.
pub const STACK_LINES_BURST: u32 = 20;
/// The rate of the stack's warnings and errors after [`STACK_LINES_BURST`].
pub const STACK_LINES_PER_SECOND: f64 = 1.0;

/// Stack warnings and errors left out by the budget: `whip_echo_log_lines_suppressed_total`.
static SUPPRESSED: AtomicU64 = AtomicU64::new(0);

/// Log lines of the WebRTC stack left out so far by [`STACK_LINES_BURST`] and
/// [`STACK_LINES_PER_SECOND`].
pub fn suppressed_lines() -> u64 {
    SUPPRESSED.load(Ordering::Relaxed)
}

/// Whether `target` is one of the WebRTC stack's crates (or a module of one).
fn is_stack(target: &str) -> bool {
    let krate = target.split("::").next().unwrap_or(target);
    krate == "rtc" || krate.starts_with("rtc_")
}

/// The per-layer filter that holds the stack's warnings and errors to one budget, whatever
/// the level filter lets through; everything else passes.
#[derive(Debug)]
struct StackBudget(Mutex<TokenBucket>);

impl StackBudget {
    fn new() -> Self {
        StackBudget(Mutex::new(TokenBucket::full(
            STACK_LINES_BURST,
            Instant::now(),
        )))
    }

    fn allows(&self, target: &str, level: Level) -> bool {
        if level > Level::WARN || !is_stack(target) {
            return true;
        }
        let mut bucket = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let taken = bucket
            .take(Instant::now(), STACK_LINES_PER_SECOND, STACK_LINES_BURST)
            .is_ok();
        if !taken {
            SUPPRESSED.fetch_add(1, Ordering::Relaxed);
        }
        taken
    }
}

// The stack's crates log through `log`. tracing-log asks `enabled` twice per record (once as the
// logger, once before dispatching) but `event_enabled` once, on an event of its generic "log"
// callsite whose normalized metadata has the record's target and level: the budget is taken
// there. No callsite's interest and no level hint changes (with no hint of its own, `and` would
// lift the global maximum level to TRACE and every rtc `trace!` would be formatted and filtered).
impl<S> Filter<S> for StackBudget {
    fn enabled(&self, _: &Metadata<'_>, _: &Context<'_, S>) -> bool {
        true
    }

    fn callsite_enabled(&self, _: &'static Metadata<'static>) -> Interest {
        Interest::always()
    }

    fn max_level_hint(&self) -> Option<LevelFilter> {
        Some(LevelFilter::TRACE)
    }

    fn event_enabled(&self, event: &Event<'_>, _: &Context<'_, S>) -> bool {
        match event.normalized_metadata() {
            Some(meta) => self.allows(meta.target(), *meta.level()),
            None => self.allows(event.metadata().target(), *event.metadata().level()),
        }
    }
}

/// The level filter of `given` (with [`QUIET`]) and the stack's budget, as one per-layer filter.
fn filter(given: &str) -> impl Filter<tracing_subscriber::Registry> {
    let levels = EnvFilter::try_new(with_quiet(given))
        .unwrap_or_else(|_| EnvFilter::new(with_quiet("info")));
    levels.and(StackBudget::new())
}

/// Installs the global tracing subscriber. `RUST_LOG`, when set, overrides `--log`; either way
/// with [`QUIET`] where it does not say otherwise, and the stack's warnings held to
/// [`STACK_LINES_BURST`]. Lines go to stdout through a bounded queue and a writer thread, so a
/// media loop never waits on the log pipe; keep the guard until exit (it flushes what is
/// queued).
pub fn init(config: &Config) -> WorkerGuard {
    let given = std::env::var("RUST_LOG").unwrap_or_else(|_| config.log.clone());
    let filter = filter(&given);
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stdout());
    let (writer, guard) = NonBlockingBuilder::default()
        .lossy(true)
        .buffered_lines_limit(MAX_QUEUED_LINES)
        .thread_name("log-writer")
        .finish(std::io::stdout());
    let _ = DROPPED.set(writer.error_counter());
    let layer = tracing_subscriber::fmt::layer()
        .with_ansi(ansi)
        .with_writer(writer);
    match config.log_format {
        LogFormat::Text => tracing_subscriber::registry()
            .with(layer.with_filter(filter))
            .init(),
        LogFormat::Json => tracing_subscriber::registry()
            .with(layer.json().with_filter(filter))
            .init(),
    }
    guard
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_quiet_directives_stay_unless_the_filter_names_their_targets() {
        assert_eq!(with_quiet("info"), format!("info,{}", QUIET.join(",")));
        // `rtc=debug` names rtc (kept as given), not another crate's modules.
        let f = with_quiet("info,rtc=debug");
        assert!(!f.contains("rtc=warn"), "{f}");
        assert!(
            f.contains("rtc_dtls=warn") && f.contains("rtc_ice=warn"),
            "{f}"
        );
        assert!(
            f.contains("rtc_dtls::handshake::handshake_message_client_hello=error"),
            "{f}"
        );
        // A parent of the ClientHello module names it too.
        let f = with_quiet("rtc_dtls::handshake=trace");
        assert!(!f.contains("handshake_message_client_hello=error"), "{f}");
        assert!(EnvFilter::try_new(with_quiet("info")).is_ok());
    }

    /// Lines written to a shared buffer.
    #[derive(Clone, Default)]
    struct Lines(std::sync::Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Lines {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn the_stacks_log_records_share_one_budget_and_nothing_else_does() {
        // As in `init`: `log` records bridged, the filter per layer.
        let _ = tracing_log::LogTracer::init();
        let lines = Lines::default();
        let writer = lines.clone();
        let filter = filter("info");
        assert_eq!(
            Filter::<tracing_subscriber::Registry>::max_level_hint(&filter),
            Some(LevelFilter::INFO),
            "the level filter's hint stands"
        );
        let subscriber = tracing_subscriber::registry().with(
            tracing_subscriber::fmt::layer()
                .with_writer(move || writer.clone())
                .with_filter(filter),
        );
        let before = suppressed_lines();
        tracing::subscriber::with_default(subscriber, || {
            for n in 0..100 {
                log::warn!(target: "rtc_ice::agent", "a client's packet {n}");
                log::debug!(target: "rtc_dtls", "not asked for");
                tracing::warn!(target: "whip_echo::media", "ours {n}");
            }
        });
        let text = String::from_utf8(lines.0.lock().unwrap().clone()).unwrap();
        let stack = text.matches("a client's packet").count();
        assert!(
            (STACK_LINES_BURST as usize..=STACK_LINES_BURST as usize + 2).contains(&stack),
            "{stack} of the stack's 100 warnings logged"
        );
        assert_eq!(text.matches("ours").count(), 100, "others are not budgeted");
        assert!(!text.contains("not asked for"));
        assert_eq!(suppressed_lines() - before, 100 - stack as u64);
    }
}
