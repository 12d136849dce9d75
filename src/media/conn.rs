//! One peer connection inside the media loop and what the loop knows about it.

use std::time::Instant;

use rtc::peer_connection::event::RTCPeerConnectionEvent;
use rtc::peer_connection::message::RTCMessage;
use rtc::peer_connection::state::RTCPeerConnectionState;
use rtc::peer_connection::transport::RTCDtlsTransportState;
use rtc::peer_connection::RTCPeerConnection;
use rtc::rtp::packet::Packet;
use rtc::rtp_transceiver::RTCRtpSenderId;
use rtc::sansio::Protocol;
use tracing::{info, Span};

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
}

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
    /// Drains the peer connection's events and received messages.
    pub fn poll(&mut self) -> Polled {
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
        let sender = self.pc.get_senders().next();
        let receiver = self.pc.get_receivers().next();
        let state = match (sender, receiver) {
            (Some(id), _) => self
                .pc
                .rtp_sender(id)
                .and_then(|s| s.transport().map(|t| t.state())),
            (None, Some(id)) => self
                .pc
                .rtp_receiver(id)
                .and_then(|r| r.transport().map(|t| t.state())),
            (None, None) => None,
        };
        state == Some(RTCDtlsTransportState::Closed)
    }
}
