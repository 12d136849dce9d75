//! One peer connection inside the media loop and what the loop knows about it.

use std::time::Instant;

use rtc::peer_connection::event::RTCPeerConnectionEvent;
use rtc::peer_connection::message::RTCMessage;
use rtc::peer_connection::state::RTCPeerConnectionState;
use rtc::peer_connection::transport::{RTCDtlsTransport, RTCDtlsTransportState};
use rtc::peer_connection::RTCPeerConnection;
use rtc::rtp::packet::Packet;
use rtc::rtp_transceiver::RTCRtpSenderId;
use rtc::sansio::Protocol;
use rtc::shared::TaggedBytesMut;
use tracing::{debug, info, Span};

use super::forward::Forwarder;
use crate::session::{EndReason, ResourceId, Role, StreamName};

/// Connectivity of a session as the media loop sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Link {
    /// ICE and DTLS not yet up; the setup deadline applies.
    Connecting,
    /// Media flows.
    Connected,
    /// Consent checks are failing (RFC 7675); `failed` follows unless the peer comes back.
    Disconnected,
}

/// The send leg of a viewer or echo session.
pub struct Leg {
    /// The rtc sender that writes this leg's RTP.
    pub sender: RTCRtpSenderId,
    /// Rewriting state for this leg.
    pub forwarder: Forwarder,
}

/// A session of the media loop.
pub struct Conn {
    pub resource: ResourceId,
    pub role: Role,
    pub stream: StreamName,
    pub pc: RTCPeerConnection,
    /// The local ICE ufrag (routing key and ETag).
    pub ufrag: String,
    pub link: Link,
    pub setup_deadline: Instant,
    /// The earliest deadline this session has armed in the loop's timers.
    pub armed: Option<Instant>,
    pub leg: Option<Leg>,
    pub span: Span,
    /// DTLS datagrams that arrived before ICE selected a pair, oldest first (see
    /// [`Conn::hold_early_dtls`]).
    pub early_dtls: Vec<TaggedBytesMut>,
}

/// Early DTLS datagrams kept per session: a ClientHello flight is one or two datagrams, and a
/// client that retransmits meanwhile adds a copy per flight.
const EARLY_DTLS_MAX: usize = 8;

/// What draining a session's events and reads produced.
#[derive(Default)]
pub struct Polled {
    /// The connection ended (failed or closed).
    pub ended: Option<EndReason>,
    /// `link` changed.
    pub link_changed: bool,
    /// RTP received from a publishing client.
    pub media: Vec<Packet>,
}

impl Conn {
    /// Keeps a DTLS datagram that rtc would drop, if it arrived before ICE selected a pair.
    ///
    /// rtc passes non-STUN datagrams on only once a pair is selected, but RFC 8445 §12.1 lets an
    /// agent send media as soon as a check succeeds, and libjuice (OBS's WHIP output, through
    /// libdatachannel) does: its ClientHello arrives about 0.2 ms before its nominating check.
    /// Dropped, it costs a 1 s DTLS retransmission timeout on every connect. The datagram came
    /// from an address the routes learnt from this session's connectivity checks, so it is kept
    /// (bounded) and handed to rtc in order by [`Conn::poll`] once the pair is selected. Returns
    /// the datagram back when it need not be held.
    pub fn hold_early_dtls(&mut self, input: TaggedBytesMut) -> Option<TaggedBytesMut> {
        if self.link != Link::Connecting || self.pair_selected() {
            return Some(input);
        }
        if self.early_dtls.len() < EARLY_DTLS_MAX {
            self.span
                .in_scope(|| debug!("DTLS before ICE nomination: held"));
            self.early_dtls.push(input);
        }
        None
    }

    /// Whether ICE has selected a candidate pair, so rtc reads DTLS.
    fn pair_selected(&mut self) -> bool {
        self.dtls_transport(|t| t.ice_transport().get_selected_candidate_pair().is_some())
            .unwrap_or(false)
    }

    /// Hands held early DTLS datagrams to rtc once a pair is selected.
    fn release_early_dtls(&mut self) {
        if self.early_dtls.is_empty() || !self.pair_selected() {
            return;
        }
        for input in std::mem::take(&mut self.early_dtls) {
            if let Err(e) = self.pc.handle_read(input) {
                self.span
                    .in_scope(|| debug!(error = %e, "early DTLS rejected"));
            }
        }
    }

    /// Drains the peer connection's events and received messages.
    pub fn poll(&mut self) -> Polled {
        self.release_early_dtls();
        let mut polled = Polled::default();
        while let Some(event) = self.pc.poll_event() {
            let RTCPeerConnectionEvent::OnConnectionStateChangeEvent(state) = event else {
                continue;
            };
            self.span.in_scope(|| info!(%state, "connection state"));
            match state {
                RTCPeerConnectionState::Connected => self.set_link(Link::Connected, &mut polled),
                RTCPeerConnectionState::Disconnected => {
                    self.set_link(Link::Disconnected, &mut polled)
                }
                RTCPeerConnectionState::Failed => polled.ended = Some(EndReason::Failed),
                RTCPeerConnectionState::Closed => polled.ended = Some(EndReason::Closed),
                _ => {}
            }
        }
        while let Some(message) = self.pc.poll_read() {
            if let RTCMessage::RtpPacket(_, packet) = message.message {
                if self.role.publishes() {
                    polled.media.push(packet);
                }
            }
        }
        polled
    }

    fn set_link(&mut self, link: Link, polled: &mut Polled) {
        self.link = link;
        polled.link_changed = true;
    }

    /// The next instant the loop must wake this session: rtc's own deadline, and the setup
    /// deadline while connecting.
    pub fn next_deadline(&mut self) -> Option<Instant> {
        let rtc = self.pc.poll_timeout();
        if self.link != Link::Connecting {
            return rtc;
        }
        Some(rtc.map_or(self.setup_deadline, |w| w.min(self.setup_deadline)))
    }

    /// Whether the peer closed the DTLS transport (close_notify). rtc keeps the connection state
    /// at `connected` then (ICE is still up), so the transport itself is asked.
    pub fn dtls_closed(&mut self) -> bool {
        self.dtls_transport(|t| t.state()) == Some(RTCDtlsTransportState::Closed)
    }

    /// Asks the session's one (bundled) DTLS transport, reached through its sender or receiver.
    fn dtls_transport<T>(&mut self, f: impl FnOnce(&RTCDtlsTransport<'_>) -> T) -> Option<T> {
        let sender = self.pc.get_senders().next();
        let receiver = self.pc.get_receivers().next();
        match (sender, receiver) {
            (Some(id), _) => self.pc.rtp_sender(id)?.transport().map(|t| f(&t)),
            (None, Some(id)) => self.pc.rtp_receiver(id)?.transport().map(|t| f(&t)),
            (None, None) => None,
        }
    }
}
