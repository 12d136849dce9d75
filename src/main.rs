//! The `whip-echo` binary: parse the config, start tracing, bind, run until Ctrl-C or SIGTERM.
#![forbid(unsafe_code)]

use clap::Parser;
use whip_echo::config::{Config, Subcommand};
use whip_echo::{ops::telemetry, server};

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let config = Config::parse();
    if config.command == Some(Subcommand::Healthcheck) {
        return whip_echo::ops::healthcheck::run(config.listen).await;
    }
    // Flushes the queued log lines when main returns.
    let _logs = telemetry::init(&config);
    // A panic (the media loops catch the WebRTC stack's, one session at a time) is logged
    // through the log's queue like everything else, not written to stderr by the thread that
    // panicked: a stalled stderr pipe must not stall a media loop either.
    std::panic::set_hook(Box::new(|panic| tracing::error!(%panic, "panic")));
    tracing::info!(config = ?config.redacted(), "configuration");
    let listener = match tokio::net::TcpListener::bind(config.listen).await {
        Ok(listener) => listener,
        Err(e) => {
            tracing::error!("binding HTTP {}: {e}", config.listen);
            return std::process::ExitCode::FAILURE;
        }
    };
    // The first SIGTERM or Ctrl-C stops the server (every session closed, then exit 0); a
    // second one exits at once, for an operator who will not wait.
    let (first_tx, first_rx) = tokio::sync::oneshot::channel();
    // Registered before anything is served, so no SIGTERM finds the default action (death).
    let mut signals = Signals::new();
    tokio::spawn(async move {
        signals.next().await;
        tracing::info!("shutdown signal received (a second one exits at once)");
        let _ = first_tx.send(());
        signals.next().await;
        tracing::warn!("second shutdown signal: exiting now");
        std::process::exit(130);
    });
    let shutdown = async {
        let _ = first_rx.await;
    };
    match server::run(listener, config, shutdown).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "server failed");
            std::process::ExitCode::FAILURE
        }
    }
}

/// Ctrl-C and SIGTERM, as one stream of shutdown requests.
struct Signals {
    #[cfg(unix)]
    term: Option<tokio::signal::unix::Signal>,
}

impl Signals {
    fn new() -> Self {
        Signals {
            #[cfg(unix)]
            term: tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok(),
        }
    }

    /// The next Ctrl-C or SIGTERM.
    async fn next(&mut self) {
        let ctrl_c = async {
            let _ = tokio::signal::ctrl_c().await;
        };
        #[cfg(unix)]
        let term = async {
            match &mut self.term {
                Some(term) => {
                    term.recv().await;
                }
                None => std::future::pending().await,
            }
        };
        #[cfg(not(unix))]
        let term = std::future::pending::<()>();
        tokio::select! {
            () = ctrl_c => {},
            () = term => {},
        }
    }
}
