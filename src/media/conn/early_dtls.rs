//! DTLS that arrives before ICE has selected a pair, kept for rtc until it has.
//!
//! rtc passes non-STUN datagrams on only once a pair is selected, but RFC 8445 §12.1 lets an
//! agent send media as soon as a check succeeds, and libjuice (OBS's WHIP output, through
//! libdatachannel) does: its ClientHello arrives between its first successful check and its
//! nomination. Dropped, it costs a 1 s DTLS retransmission timeout on every connect.
//!
//! What is kept is bounded so that it cannot be turned into a memory sink: only DTLS handshake
//! records (content type 22, RFC 6347 §4.1) of at most one MTU, only from a path this session has
//! already answered a connectivity check on (rtc sends a Binding success only after verifying
//! the request's MESSAGE-INTEGRITY with the session's password), and at most `MAX_BYTES` per
//! session, for as long as the session is connecting.

use rtc::shared::TaggedBytesMut;

use crate::media::net::transport::PathId;

/// DTLS content type `handshake` (RFC 6347 §4.1): a ClientHello flight.
const HANDSHAKE: u8 = 22;
/// Largest datagram kept: one Ethernet MTU (a ClientHello is a few hundred bytes).
const MAX_DATAGRAM: usize = 1500;
/// Bytes kept per session: a few flights, retransmissions included.
const MAX_BYTES: usize = 16 * 1024;
/// Paths remembered per session as having passed a check.
const MAX_PATHS: usize = 8;
/// STUN Binding success response (RFC 5389 §6: class success, method Binding).
const BINDING_SUCCESS: [u8; 2] = [0x01, 0x01];

/// The early DTLS of one connecting session.
#[derive(Default)]
pub struct EarlyDtls {
    held: Vec<TaggedBytesMut>,
    bytes: usize,
    checked: Vec<PathId>,
}

impl EarlyDtls {
    /// Notes a packet the session sends on `path`: a Binding success there means the client's
    /// check from that path passed.
    pub fn note_sent(&mut self, path: PathId, packet: &[u8]) {
        if packet.starts_with(&BINDING_SUCCESS)
            && self.checked.len() < MAX_PATHS
            && !self.checked.contains(&path)
        {
            self.checked.push(path);
        }
    }

    /// Keeps `input` (a DTLS datagram that came on `path`) if it qualifies; whether it was kept.
    /// One that does not qualify is dropped, as rtc would have dropped it.
    pub fn hold(&mut self, path: PathId, input: TaggedBytesMut) -> bool {
        let len = input.message.len();
        let qualifies = input.message.first() == Some(&HANDSHAKE)
            && len <= MAX_DATAGRAM
            && self.bytes + len <= MAX_BYTES
            && self.checked.contains(&path);
        if qualifies {
            self.bytes += len;
            self.held.push(input);
        }
        qualifies
    }

    /// Whether anything is held.
    pub fn is_empty(&self) -> bool {
        self.held.is_empty()
    }

    /// Everything held, oldest first, emptying the store.
    pub fn take(&mut self) -> Vec<TaggedBytesMut> {
        self.bytes = 0;
        std::mem::take(&mut self.held)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::BytesMut;
    use rtc::shared::TransportContext;
    use std::net::SocketAddr;

    fn path(port: u16) -> PathId {
        PathId::Udp(SocketAddr::from(([127, 0, 0, 1], port)))
    }

    fn datagram(first: u8, len: usize) -> TaggedBytesMut {
        let mut data = vec![0u8; len];
        data[0] = first;
        TaggedBytesMut {
            now: std::time::Instant::now(),
            transport: TransportContext::default(),
            message: BytesMut::from(&data[..]),
        }
    }

    #[test]
    fn only_handshakes_from_a_checked_path_are_kept() {
        let mut early = EarlyDtls::default();
        // No check has passed on the path yet: nothing is kept.
        assert!(!early.hold(path(1), datagram(HANDSHAKE, 300)));
        // A Binding *request* the session sends proves nothing; a success response does.
        early.note_sent(path(1), &[0x00, 0x01, 0, 0]);
        assert!(!early.hold(path(1), datagram(HANDSHAKE, 300)));
        early.note_sent(path(1), &[0x01, 0x01, 0, 0]);
        assert!(early.hold(path(1), datagram(HANDSHAKE, 300)));
        // Another path, an application-data or alert record, an oversized datagram: dropped.
        assert!(!early.hold(path(2), datagram(HANDSHAKE, 300)));
        assert!(!early.hold(path(1), datagram(23, 300)));
        assert!(!early.hold(path(1), datagram(21, 300)));
        assert!(!early.hold(path(1), datagram(HANDSHAKE, 1501)));
        assert_eq!(early.take().len(), 1);
        assert!(early.is_empty());
    }

    #[test]
    fn the_store_is_bounded_by_bytes_and_paths() {
        let mut early = EarlyDtls::default();
        early.note_sent(path(1), &BINDING_SUCCESS);
        let kept = (0..100)
            .filter(|_| early.hold(path(1), datagram(HANDSHAKE, 1500)))
            .count();
        assert_eq!(kept, MAX_BYTES / 1500);
        // Taking frees the budget.
        assert_eq!(early.take().len(), kept);
        assert!(early.hold(path(1), datagram(HANDSHAKE, 1500)));
        for port in 2..100 {
            early.note_sent(path(port), &BINDING_SUCCESS);
        }
        assert_eq!(early.checked.len(), MAX_PATHS);
    }
}
