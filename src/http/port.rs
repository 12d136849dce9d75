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
//! axum through [`axum::serve::Listener`]. Anything else, or silence for the setup wait
//! (`--tcp-setup-timeout`), is closed. Until a connection is classified (and, for TLS,
//! through its handshake) it holds a place of this port's own pending pool (`pending.rs`): a
//! client's share of it is capped at accept, and a full pool closes its oldest connection to
//! make room. Classifying runs in tracked tasks, so one slow client never holds up the others.

use std::io;
use std::net::SocketAddr;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::debug;

use crate::media::net::pending::{Pending, Place};
use crate::media::net::socket::Candidates;
use crate::media::net::tcp::{accept_failed, announced_local, Intake};
use crate::ops::metrics::ConnClosed;
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
    /// Where ICE-TCP connections go.
    pub intake: Intake,
    /// This port's places for connections not yet classified.
    pub pending: Pending,
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
                let Some(place) = sharing.pending.admit(peer.ip()) else {
                    continue; // closed: this client holds its share of unclassified connections
                };
                let (tx, sharing, stop) = (tx.clone(), sharing.clone(), stop.clone());
                tracker.spawn(async move {
                    tokio::select! {
                        _ = stop.cancelled() => {}
                        _ = route(stream, peer, local.port(), &sharing, tx, place) => {}
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
    place: Place,
) {
    let wait = sharing.intake.setup_wait();
    let mut first = [0u8; 1];
    let peeked = tokio::select! {
        _ = place.evicted() => return, // counted when it was taken
        peeked = tokio::time::timeout(wait, stream.peek(&mut first)) => peeked,
    };
    let kind = match peeked {
        Ok(Ok(1)) => classify(first[0]),
        Err(_) => {
            sharing.intake.closed(ConnClosed::SetupTimeout);
            return;
        }
        // EOF before a byte is normal: browsers open speculative connections.
        _ => Kind::Other,
    };
    match (kind, &sharing.ice, &sharing.tls) {
        (Kind::Http, _, _) => {
            drop(place);
            let _ = http.send((Box::new(stream), peer)).await;
        }
        (Kind::IceTcp, Some(candidates), _) => {
            let local = announced_local(candidates, port, &stream, peer);
            sharing.intake.take(stream, peer, local, place);
        }
        (Kind::Tls, _, Some(tls)) => {
            let handshake = tokio::select! {
                _ = place.evicted() => return,
                handshake = tokio::time::timeout(wait, tls.accept(stream)) => handshake,
            };
            match handshake {
                Ok(Ok(secured)) => {
                    drop(place);
                    let _ = http.send((Box::new(secured), peer)).await;
                }
                Ok(Err(e)) => debug!(%peer, error = %e, "TLS handshake failed"),
                Err(_) => sharing.intake.closed(ConnClosed::SetupTimeout),
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
