//! The HTTP connection loop: what `axum::serve` does, plus the limits a server exposed to the
//! internet needs and `axum::serve` does not have. A client must send a request's headers within
//! the header timeout (which also closes an idle keep-alive connection), so a slow or silent
//! client (slowloris) holds a connection for no longer; open connections are capped, one beyond
//! the cap (or beyond the per-IP cap, so that one client cannot take every place) is answered
//! 503 and closed at once; the request timeout (body included) is a layer of
//! the router. Each connection's task is owned here: at shutdown the requests under way finish
//! (for at most [`DRAIN`]) and the rest are dropped.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::Request;
use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::io::AsyncWriteExt;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;
use tracing::{debug, warn};

/// The limits of the connection loop.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Time to send a request's headers, and the most a keep-alive connection stays idle.
    pub header_timeout: Duration,
    /// Open connections at most.
    pub max_connections: usize,
    /// Open connections from one client IP at most (0: no limit), below `max_connections` so
    /// that one client cannot take every place (the container's health check included).
    pub max_connections_per_ip: usize,
}

/// The TCP peer of the connection a request came on (a request extension).
#[derive(Debug, Clone, Copy)]
pub struct PeerAddr(pub SocketAddr);

/// Largest request head (request line and headers) hyper reads; beyond it: 431. Small on purpose:
/// whip-echo's requests carry a few short headers (a browser's, cookies included, fit).
const MAX_HEAD_BYTES: usize = 32 * 1024;

/// How long shutdown waits for the requests under way (whip-echo's take milliseconds; a client
/// that is still sending a body is not waited for: the process must exit promptly on SIGTERM).
const DRAIN: Duration = Duration::from_secs(1);

/// Serves `app` on `listener` until `stop`, then lets the requests under way finish.
pub async fn serve<L>(mut listener: L, app: Router, limits: Limits, stop: CancellationToken)
where
    L: axum::serve::Listener<Addr = SocketAddr>,
{
    let graceful = GracefulShutdown::new();
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    // Each connection's task returns its client's key when it ends; this loop alone counts.
    let mut connections: JoinSet<Option<IpAddr>> = JoinSet::new();
    let mut per_ip = crate::media::PerClient::default();
    let mut last_warning: Option<Instant> = None;
    loop {
        let (io, peer) = tokio::select! {
            _ = stop.cancelled() => break,
            Some(ended) = connections.join_next() => {
                if let Ok(Some(ip)) = ended {
                    per_ip.release(ip);
                }
                continue;
            }
            accepted = listener.accept() => accepted,
        };
        let ip = crate::rate::client_key(peer.ip());
        let over_ip = !per_ip.try_take(ip, limits.max_connections_per_ip);
        let slot = (!over_ip)
            .then(|| slots.clone().try_acquire_owned().ok())
            .flatten();
        if slot.is_none() && !over_ip {
            per_ip.release(ip);
        }
        let Some(slot) = slot else {
            warn_refused(&mut last_warning, peer, over_ip);
            connections.spawn(async move {
                refuse(io).await;
                None
            });
            continue;
        };
        let connection = graceful.watch(connection(io, peer, app.clone(), limits.header_timeout));
        connections.spawn(async move {
            if let Err(e) = connection.await {
                debug!(%peer, error = %e, "HTTP connection ended");
            }
            drop(slot);
            Some(ip)
        });
    }
    drop(listener);
    // Requests under way finish; idle connections close now. Whatever is left after `DRAIN` is
    // dropped with `connections`.
    let drained = tokio::time::timeout(DRAIN, graceful.shutdown()).await;
    if drained.is_err() {
        warn!(
            left = connections.len(),
            "HTTP connections still open at shutdown: closed"
        );
    }
}

/// One HTTP/1 connection of `peer` serving `app`, its head read within `header_timeout` and
/// `MAX_HEAD_BYTES`; each request carries the peer's address.
fn connection<Io>(
    io: Io,
    peer: SocketAddr,
    app: Router,
    header_timeout: Duration,
) -> impl hyper_util::server::graceful::GracefulConnection<Error = hyper::Error>
where
    Io: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let service = hyper::service::service_fn(move |mut request: Request<_>| {
        request.extensions_mut().insert(PeerAddr(peer));
        app.clone().oneshot(request.map(axum::body::Body::new))
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(header_timeout)
        .max_header_size(MAX_HEAD_BYTES);
    builder.serve_connection(TokioIo::new(io), service)
}

/// Logs a connection refused at the cap, at most one line a second: a flood of connections must
/// not become one of lines.
fn warn_refused(last: &mut Option<Instant>, peer: SocketAddr, per_ip: bool) {
    if last.is_none_or(|at| at.elapsed() >= Duration::from_secs(1)) {
        *last = Some(Instant::now());
        warn!(%peer, per_ip, "HTTP connection refused: at the cap");
    }
}

/// Answers a connection over the cap with 503 and closes it, without reading its request.
async fn refuse<Io>(mut io: Io)
where
    Io: tokio::io::AsyncWrite + Unpin,
{
    const BODY: &str = "too many open HTTP connections, retry shortly\n";
    let response = format!(
        "HTTP/1.1 503 Service Unavailable\r\nRetry-After: 1\r\nContent-Type: text/plain; \
         charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{BODY}",
        BODY.len()
    );
    let write = async {
        io.write_all(response.as_bytes()).await?;
        io.shutdown().await
    };
    let _ = tokio::time::timeout(Duration::from_secs(1), write).await;
}
