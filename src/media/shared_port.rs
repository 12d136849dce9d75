//! Media on the HTTP port itself: the HTTP listener also takes ICE-TCP connections, so a host
//! that exposes a single TCP port (a PaaS such as Railway or Fly.io) carries signalling and media,
//! and, with a certificate, HTTPS on that same port (browsers allow the microphone only on HTTPS
//! origins), ICE-TCP staying plain beside it.
//!
//! Each accepted connection is classified by peeking at its first byte, never consuming it: an
//! RFC 4571 frame starts with a 16-bit length, so a STUN request's first byte is 0x00..=0x03 (a
//! frame under 1 KiB); a TLS record starts with 0x16 (handshake, RFC 8446 §5.1); an HTTP/1.1
//! request starts with the first letter of its method. ICE-TCP goes to the media plane's intake
//! (the same path as the shared ICE-TCP port), TLS through the handshake and then, like HTTP, to
//! axum through [`axum::serve::Listener`]. Anything else, or silence for `CLASSIFY_WAIT`, is
//! closed. Classifying runs in tracked tasks, so one slow client never holds up the others.

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, OwnedSemaphorePermit};
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::debug;

use super::socket::Candidates;
use super::tcp::{accept_failed, announced_local, Intake};

/// How long a new connection has to send its first byte, and a TLS client to finish its handshake.
const CLASSIFY_WAIT: Duration = Duration::from_secs(10);
/// Classified HTTP connections waiting for axum to take them.
const HTTP_QUEUE: usize = 128;

/// What a connection's first byte says it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// RFC 4571-framed STUN (ICE-TCP).
    IceTcp,
    /// A TLS ClientHello (HTTPS).
    Tls,
    /// An HTTP/1.x request.
    Http,
    /// Neither.
    Other,
}

/// Classifies a connection by its first byte.
pub fn classify(first: u8) -> Kind {
    match first {
        0x00..=0x03 => Kind::IceTcp,
        0x16 => Kind::Tls,
        b'A'..=b'Z' => Kind::Http,
        _ => Kind::Other,
    }
}

/// A connection axum serves: plain TCP or TLS over it.
pub trait HttpIo: AsyncRead + AsyncWrite + Unpin + Send + 'static {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send + 'static> HttpIo for T {}

/// What shares the HTTP port with HTTP.
pub struct Sharing {
    /// Where ICE-TCP connections go, and whose cap on unclassified connections applies here.
    pub intake: Intake,
    /// ICE-TCP on this port: its announced addresses (`None`: ICE-TCP is not taken here).
    pub ice: Option<Candidates>,
    /// HTTPS: the acceptor of the configured certificate.
    pub tls: Option<TlsAcceptor>,
}

/// The HTTP listener, sharing its port with ICE-TCP and TLS: what axum serves.
pub struct SharedPort {
    http: mpsc::Receiver<(Box<dyn HttpIo>, SocketAddr)>,
    local: SocketAddr,
}

impl SharedPort {
    /// Starts classifying `listener`'s connections in tasks of `tracker`, until `stop`.
    pub fn new(
        listener: TcpListener,
        sharing: Sharing,
        tracker: TaskTracker,
        stop: CancellationToken,
    ) -> io::Result<Self> {
        let local = listener.local_addr()?;
        let (tx, http) = mpsc::channel(HTTP_QUEUE);
        let pending = sharing.intake.clone();
        let sharing = std::sync::Arc::new(sharing);
        tracker.clone().spawn(async move {
            loop {
                let accepted = tokio::select! {
                    _ = stop.cancelled() => break,
                    accepted = listener.accept() => accepted,
                };
                let (stream, peer) = match accepted {
                    Ok(accepted) => accepted,
                    Err(e) => {
                        accept_failed(e, &stop).await;
                        continue;
                    }
                };
                let Some(pending) = pending.admit() else {
                    continue; // dropped: too many connections say nothing yet
                };
                let (tx, sharing, stop) = (tx.clone(), sharing.clone(), stop.clone());
                tracker.spawn(async move {
                    tokio::select! {
                        _ = stop.cancelled() => {}
                        _ = route(stream, peer, local.port(), &sharing, tx, pending) => {}
                    }
                });
            }
        });
        Ok(SharedPort { http, local })
    }
}

/// Classifies one connection and hands it on.
async fn route(
    stream: TcpStream,
    peer: SocketAddr,
    port: u16,
    sharing: &Sharing,
    http: mpsc::Sender<(Box<dyn HttpIo>, SocketAddr)>,
    pending: OwnedSemaphorePermit,
) {
    let mut first = [0u8; 1];
    let kind = match tokio::time::timeout(CLASSIFY_WAIT, stream.peek(&mut first)).await {
        Ok(Ok(1)) => classify(first[0]),
        // EOF before a byte is normal: browsers open speculative connections.
        _ => Kind::Other,
    };
    match (kind, &sharing.ice, &sharing.tls) {
        (Kind::Http, _, _) => {
            drop(pending);
            let _ = http.send((Box::new(stream), peer)).await;
        }
        (Kind::IceTcp, Some(candidates), _) => {
            let local = announced_local(candidates, port, &stream, peer);
            sharing.intake.take(stream, peer, local, pending);
        }
        (Kind::Tls, _, Some(tls)) => {
            match tokio::time::timeout(CLASSIFY_WAIT, tls.accept(stream)).await {
                Ok(Ok(secured)) => {
                    drop(pending);
                    let _ = http.send((Box::new(secured), peer)).await;
                }
                _ => debug!(%peer, "TLS handshake failed"),
            }
        }
        _ => debug!(%peer, ?kind, "not served on this port: closed"),
    }
}

impl axum::serve::Listener for SharedPort {
    type Io = Box<dyn HttpIo>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Box<dyn HttpIo>, SocketAddr) {
        match self.http.recv().await {
            Some(conn) => conn,
            // The classifier stopped (shutdown): no more connections.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        Ok(self.local)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_bytes_tell_http_from_ice_tcp() {
        // A framed STUN Binding request of 108 bytes: length 0x006c, then type 0x0001.
        assert_eq!(classify(0x00), Kind::IceTcp);
        for method in ["GET", "POST", "DELETE", "OPTIONS", "PATCH", "HEAD"] {
            assert_eq!(classify(method.as_bytes()[0]), Kind::Http, "{method}");
        }
        assert_eq!(classify(0x16), Kind::Tls);
        assert_eq!(classify(b'g'), Kind::Other);
        assert_eq!(classify(0xff), Kind::Other);
    }
}
