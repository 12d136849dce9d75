//! What a session receives, classified by the session alone: DTLS that arrives before ICE
//! selected a pair is held (`early_dtls.rs`) and handed to rtc once it has; everything else goes
//! to rtc, and what rtc refuses or binds to no track is counted.

use rtc::sansio::Protocol;
use rtc::shared::TaggedBytesMut;
use tracing::debug;

use super::{Conn, Link};
use crate::media::net::transport::PathId;
use crate::ops::metrics::{Dropped, LoopMetrics};

impl Conn {
    /// Takes a datagram that came on `path`. DTLS (RFC 7983 §7: a first byte in 20..=63) that
    /// arrives before ICE selected a pair is held, which rtc would drop (OBS's libjuice sends
    /// its ClientHello before it nominates; `early_dtls.rs` says what qualifies), and goes to
    /// rtc in order from [`Conn::poll`] once the pair is selected. Packets rtc refuses are
    /// counted. Whether it was DTLS (after the handshake, an alert: maybe a close_notify).
    pub fn receive(&mut self, path: PathId, input: TaggedBytesMut, metrics: &LoopMetrics) -> bool {
        #[cfg(feature = "fault-injection")]
        if input.message[..] == *crate::media::FAULT_DATAGRAM {
            panic!("fault injected");
        }
        let input = match self.receive_fast(input, metrics) {
            Ok(()) => return false,
            Err(input) => input,
        };
        let dtls = (20..=63).contains(&input.message[0]);
        let (errors, unbound) = (
            self.pc.peek().read_errors(),
            self.pc.peek().unbound_rtp_packets(),
        );
        let held = dtls && self.link == Link::Connecting && !self.pair_selected();
        let mut refused = 0;
        if held {
            if self.early_dtls.hold(path, input) {
                self.span
                    .in_scope(|| debug!("DTLS before ICE nomination: held"));
            }
        } else if let Err(e) = self.pc.get().handle_read(input) {
            refused += 1;
            self.span.in_scope(|| debug!(error = %e, "packet rejected"));
        }
        refused += self.pc.peek().read_errors() - errors;
        if refused > 0 {
            metrics.dropped(Dropped::Rejected, refused);
        }
        let unbound = self.pc.peek().unbound_rtp_packets() - unbound;
        if unbound > 0 {
            metrics.dropped(Dropped::Unbound, unbound);
        }
        dtls
    }

    /// Whether ICE has selected a candidate pair, so rtc reads DTLS.
    fn pair_selected(&mut self) -> bool {
        rtc_util::dtls_transport(self.pc.get(), |t| {
            t.ice_transport().get_selected_candidate_pair().is_some()
        })
        .unwrap_or(false)
    }

    /// Hands held early DTLS datagrams to rtc once a pair is selected.
    pub(super) fn release_early_dtls(&mut self) {
        if self.early_dtls.is_empty() || !self.pair_selected() {
            return;
        }
        for input in self.early_dtls.take() {
            if let Err(e) = self.pc.get().handle_read(input) {
                self.span
                    .in_scope(|| debug!(error = %e, "early DTLS rejected"));
            }
        }
    }

    /// Notes a datagram it sent on `path` (a check's answer there lets early DTLS in).
    pub fn note_sent(&mut self, path: PathId, datagram: &[u8]) {
        if self.link == Link::Connecting {
            self.early_dtls.note_sent(path, datagram);
        }
    }
}
