//! Tracing initialisation. Only `main` calls this; tests install their own subscriber or none.

use tracing_subscriber::EnvFilter;

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

/// Installs the global tracing subscriber. `RUST_LOG`, when set, overrides `--log`; either way
/// with [`QUIET`] where it does not say otherwise.
pub fn init(config: &Config) {
    let given = std::env::var("RUST_LOG").unwrap_or_else(|_| config.log.clone());
    let filter = EnvFilter::try_new(with_quiet(&given))
        .unwrap_or_else(|_| EnvFilter::new(with_quiet("info")));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stdout());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi);
    match config.log_format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
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
}
