//! Media on the HTTP port itself: the HTTP listener also takes ICE-TCP connections, so a host
//! that exposes a single TCP port (a PaaS such as Railway or Fly.io) carries signalling and media.
//!
//! Each accepted connection is classified by peeking at its first byte, never consuming it: an
//! RFC 4571 frame starts with a 16-bit length, so a STUN request's first byte is 0x00..=0x03 (a
//! frame under 1 KiB); an HTTP/1.1 request starts with the first letter of its method. ICE-TCP
//! goes to the media plane's intake (the same path as the shared ICE-TCP port), HTTP to axum
//! through [`axum::serve::Listener`]. Anything else, or silence for `CLASSIFY_WAIT`, is closed.
//! Classifying runs in tracked tasks, so one slow client never holds up the others' accepts.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tracing::debug;

use super::tcp::{announced_local, Intake};

/// How long a new connection has to send its first byte.
const CLASSIFY_WAIT: Duration = Duration::from_secs(10);
/// Classified HTTP connections waiting for axum to take them.
const HTTP_QUEUE: usize = 128;

/// What a connection's first byte says it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// RFC 4571-framed STUN (ICE-TCP).
    IceTcp,
    /// An HTTP/1.x request.
    Http,
    /// Neither.
    Other,
}

/// Classifies a connection by its first byte.
pub fn classify(first: u8) -> Kind {
    match first {
        0x00..=0x03 => Kind::IceTcp,
        b'A'..=b'Z' => Kind::Http,
        _ => Kind::Other,
    }
}

/// The HTTP listener, sharing its port with ICE-TCP: what axum serves.
pub struct SharedPort {
    http: mpsc::Receiver<(TcpStream, SocketAddr)>,
    local: SocketAddr,
}

impl SharedPort {
    /// Starts classifying `listener`'s connections; ICE-TCP ones go to `intake`, announced with
    /// `candidates` (the HTTP port's addresses).
    pub fn new(
        listener: TcpListener,
        intake: Intake,
        candidates: Vec<(IpAddr, Option<IpAddr>)>,
    ) -> io::Result<Self> {
        let local = listener.local_addr()?;
        let (tx, http) = mpsc::channel(HTTP_QUEUE);
        let (tracker, stop) = intake.tasks();
        let (tracker, stop) = (tracker.clone(), stop.clone());
        tracker.clone().spawn(async move {
            loop {
                let accepted = tokio::select! {
                    _ = stop.cancelled() => break,
                    accepted = listener.accept() => accepted,
                };
                let Ok((stream, peer)) = accepted else {
                    continue;
                };
                let (tx, intake, candidates) = (tx.clone(), intake.clone(), candidates.clone());
                let stop = stop.clone();
                tracker.spawn(async move {
                    let mut first = [0u8; 1];
                    let peek = tokio::time::timeout(CLASSIFY_WAIT, stream.peek(&mut first));
                    let kind = tokio::select! {
                        _ = stop.cancelled() => Kind::Other,
                        peeked = peek => match peeked {
                            Ok(Ok(1)) => classify(first[0]),
                            _ => Kind::Other,
                        },
                    };
                    match kind {
                        Kind::Http => {
                            let _ = tx.send((stream, peer)).await;
                        }
                        Kind::IceTcp => {
                            let local = announced_local(&candidates, local.port(), &stream, peer);
                            intake.take(stream, peer, local);
                        }
                        Kind::Other => debug!(%peer, "neither HTTP nor ICE-TCP: closed"),
                    }
                });
            }
        });
        Ok(SharedPort { http, local })
    }
}

impl axum::serve::Listener for SharedPort {
    type Io = TcpStream;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (TcpStream, SocketAddr) {
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
        // TLS (0x16) is not served on this port yet; neither is anything else.
        assert_eq!(classify(0x16), Kind::Other);
        assert_eq!(classify(b'g'), Kind::Other);
        assert_eq!(classify(0xff), Kind::Other);
    }
}
