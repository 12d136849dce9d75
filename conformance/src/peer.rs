//! A real WebRTC client peer: webrtc-rs's sans-IO `rtc` on its own UDP socket, driven by one task.
//! It POSTs its offer (following a WHEP 406 counter-offer when a server answers that way), sends
//! synthetic Opus RTP with the payloads it is given, and reports every RTP packet it receives.
//! whip-echo's own tests use it too, so it depends on nothing of the server's.

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use reqwest::{Method, Url};
use rtc::interceptor::Registry;
use rtc::media_stream::MediaStreamTrack;
use rtc::peer_connection::configuration::media_engine::MediaEngine;
use rtc::peer_connection::configuration::setting_engine::SettingEngineBuilder;
use rtc::peer_connection::event::RTCPeerConnectionEvent;
use rtc::peer_connection::message::RTCMessage;
use rtc::peer_connection::sdp::RTCSessionDescription;
use rtc::peer_connection::state::RTCPeerConnectionState;
use rtc::peer_connection::{RTCPeerConnection, RTCPeerConnectionBuilder};
use rtc::rtp::header::Header;
use rtc::rtp::packet::Packet;
use rtc::rtp_transceiver::rtp_sender::{
    RTCRtpCodecParameters, RTCRtpCodingParameters, RTCRtpEncodingParameters, RtpCodecKind,
};
use rtc::rtp_transceiver::{RTCRtpTransceiverDirection, RTCRtpTransceiverInit};
use rtc::sansio::Protocol;
use rtc::shared::{TaggedBytesMut, TransportContext, TransportProtocol};
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use crate::http::{Auth, Http};

/// What the client does with audio.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// WHIP: sendonly offer.
    Send,
    /// WHEP: recvonly offer.
    Recv,
    /// Echo, or WHIP/WHEP with a sendrecv offer.
    SendRecv,
}

/// A received RTP packet.
#[derive(Debug, Clone)]
pub struct Received {
    /// SSRC.
    pub ssrc: u32,
    /// Sequence number.
    pub seq: u16,
    /// RTP timestamp.
    pub timestamp: u32,
    /// Payload.
    pub payload: Bytes,
}

/// A POST that did not create a session.
#[derive(Debug)]
pub struct Rejected {
    /// HTTP status (0 when the request itself failed).
    pub status: u16,
    /// Response body or error.
    pub body: String,
}

/// Connection progress seen by the client.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct State {
    /// ICE and DTLS are up.
    pub connected: bool,
    /// The server ended the session: DTLS close_notify, ICE failure or close.
    pub ended: bool,
}

enum Control {
    Send(Bytes),
    /// Close the peer connection politely (DTLS close_notify) and stop.
    Close,
    /// Stop without a word, as a crashed or vanished client would.
    Vanish,
}

/// Sends RTP on a [`Client`].
#[derive(Clone)]
pub struct SendHandle(mpsc::UnboundedSender<Control>);

impl SendHandle {
    /// Sends one RTP packet with `payload`.
    pub fn send(&self, payload: &[u8]) {
        let _ = self.0.send(Control::Send(Bytes::copy_from_slice(payload)));
    }
}

/// A client with a session on the server.
pub struct Client {
    /// Absolute URL of the session resource.
    pub resource_url: String,
    /// The server's SDP answer (or its counter-offer, after a 406).
    pub answer: String,
    /// Response headers of the POST.
    pub headers: reqwest::header::HeaderMap,
    /// Instant the POST was sent.
    pub posted_at: Instant,
    /// Time from sending the POST to its response.
    pub post_rtt: Duration,
    /// Whether the server answered with a 406 counter-offer (WHEP draft §4.3.2).
    pub counter_offer: bool,
    /// Received RTP packets.
    pub received: mpsc::UnboundedReceiver<Received>,
    state: watch::Receiver<State>,
    control: mpsc::UnboundedSender<Control>,
    task: JoinHandle<()>,
    http: Http,
}

impl Client {
    /// POSTs an offer to `url` from a loopback socket and starts the peer (for tests).
    pub async fn connect(url: &str, mode: Mode) -> Result<Client, Rejected> {
        let url = Url::parse(url).map_err(|e| Rejected {
            status: 0,
            body: e.to_string(),
        })?;
        Client::connect_with(&Http::new(None), &url, mode, IpAddr::from([127, 0, 0, 1])).await
    }

    /// Connects and waits until the peer connection is up (for tests).
    pub async fn connected(url: &str, mode: Mode) -> Client {
        let mut client = Client::connect(url, mode).await.expect("201 Created");
        client.wait_connected(Duration::from_secs(15)).await;
        client
    }

    /// Creates the peer on `local_ip`, POSTs its offer to `url` and starts driving it.
    pub async fn connect_with(
        http: &Http,
        url: &Url,
        mode: Mode,
        local_ip: IpAddr,
    ) -> Result<Client, Rejected> {
        let failed = |e: String| Rejected { status: 0, body: e };
        let socket = UdpSocket::bind((local_ip, 0))
            .await
            .map_err(|e| failed(e.to_string()))?;
        let local = socket.local_addr().map_err(|e| failed(e.to_string()))?;
        let (mut pc, offer) = offer_peer(mode, Some(local)).map_err(failed)?;
        let posted_at = Instant::now();
        let exchange = http
            .post(url, Some("application/sdp"), offer)
            .await
            .map_err(failed)?;
        let post_rtt = exchange.elapsed;
        let resource = exchange.location();
        let body = exchange.text();
        let counter_offer =
            exchange.status == 406 && exchange.media_type().as_deref() == Some("application/sdp");
        if exchange.status != 201 && !counter_offer {
            return Err(Rejected {
                status: exchange.status,
                body,
            });
        }
        let resource = resource.ok_or_else(|| Rejected {
            status: exchange.status,
            body: "no Location".into(),
        })?;
        if counter_offer {
            // WHEP draft §4.3.2: answer the server's offer with a fresh peer and PATCH the answer.
            pc = answer_counter_offer(http, &resource, &body, local).await?;
        } else {
            let answer =
                RTCSessionDescription::answer(body.clone()).map_err(|e| failed(e.to_string()))?;
            pc.set_remote_description(Instant::now(), answer)
                .map_err(|e| failed(e.to_string()))?;
        }
        let (received_tx, received) = mpsc::unbounded_channel();
        let (state_tx, state) = watch::channel(State::default());
        let (control, control_rx) = mpsc::unbounded_channel();
        let task = tokio::spawn(drive(pc, socket, local, control_rx, received_tx, state_tx));
        Ok(Client {
            resource_url: resource.to_string(),
            answer: body,
            headers: exchange.headers,
            posted_at,
            post_rtt,
            counter_offer,
            received,
            state,
            control,
            task,
            http: http.clone(),
        })
    }

    /// Waits until the peer connection is connected; panics after `within` (for tests).
    pub async fn wait_connected(&mut self, within: Duration) {
        assert!(
            self.until(within, |s| s.connected).await,
            "connected in time"
        );
    }

    /// Waits until `condition` holds for the connection state; false after `within`.
    pub async fn until(&mut self, within: Duration, condition: impl Fn(&State) -> bool) -> bool {
        matches!(
            tokio::time::timeout(within, self.state.wait_for(condition)).await,
            Ok(Ok(_))
        )
    }

    /// Sends one RTP packet with `payload`.
    pub fn send(&self, payload: &[u8]) {
        let _ = self
            .control
            .send(Control::Send(Bytes::copy_from_slice(payload)));
    }

    /// A handle that sends RTP on this client while its receiver is borrowed elsewhere.
    pub fn clone_sender(&self) -> SendHandle {
        SendHandle(self.control.clone())
    }

    /// The next received packet within `within`; panics otherwise (for tests).
    pub async fn next_packet(&mut self, within: Duration) -> Received {
        self.try_next_packet(within).await.expect("packet in time")
    }

    /// The next received packet within `within`.
    pub async fn try_next_packet(&mut self, within: Duration) -> Option<Received> {
        tokio::time::timeout(within, self.received.recv())
            .await
            .ok()
            .flatten()
    }

    /// Sends DELETE to the session resource and returns the status (0 when the request failed).
    pub async fn delete(&self) -> u16 {
        let Ok(url) = Url::parse(&self.resource_url) else {
            return 0;
        };
        self.http
            .call(Method::DELETE, &url)
            .await
            .map_or(0, |e| e.status)
    }

    /// Closes the peer connection (close_notify) and stops the client.
    pub async fn close(self) {
        let _ = self.control.send(Control::Close);
        let _ = self.task.await;
    }

    /// Stops the client without telling the server anything, closing its socket.
    pub async fn vanish(self) {
        let _ = self.control.send(Control::Vanish);
        let _ = self.task.await;
    }
}

/// An SDP offer for `mode` without candidates: enough for HTTP-level checks, which never connect.
pub fn offer(mode: Mode) -> String {
    offer_peer(mode, None)
        .map(|(_, sdp)| sdp)
        .expect("a local offer")
}

fn offer_peer(
    mode: Mode,
    candidate: Option<SocketAddr>,
) -> Result<(RTCPeerConnection, String), String> {
    let e = |e: rtc::shared::error::Error| e.to_string();
    let mut pc = build_peer()?;
    add_transceiver(&mut pc, mode).map_err(e)?;
    let offer = pc.create_offer(None).map_err(e)?;
    pc.set_local_description(Instant::now(), offer).map_err(e)?;
    if let Some(addr) = candidate {
        pc.add_local_candidate(rtc_util::host_candidate(addr)?)
            .map_err(e)?;
    }
    let sdp = pc.local_description().ok_or("no local description")?.sdp;
    Ok((pc, sdp))
}

async fn answer_counter_offer(
    http: &Http,
    resource: &Url,
    offer: &str,
    local: SocketAddr,
) -> Result<RTCPeerConnection, Rejected> {
    let failed = |e: String| Rejected {
        status: 406,
        body: e,
    };
    let e = |e: rtc::shared::error::Error| failed(e.to_string());
    let mut pc = build_peer().map_err(failed)?;
    let offer = RTCSessionDescription::offer(offer.to_owned()).map_err(e)?;
    pc.set_remote_description(Instant::now(), offer)
        .map_err(e)?;
    pc.add_local_candidate(rtc_util::host_candidate(local).map_err(failed)?)
        .map_err(e)?;
    let answer = pc.create_answer(None).map_err(e)?;
    pc.set_local_description(Instant::now(), answer)
        .map_err(e)?;
    let sdp = pc
        .local_description()
        .ok_or_else(|| failed("no answer".into()))?
        .sdp;
    let headers = [("content-type", "application/sdp")];
    let patched = http
        .send(
            Method::PATCH,
            resource,
            &headers,
            sdp.into(),
            Auth::Configured,
        )
        .await
        .map_err(failed)?;
    if patched.status != 204 {
        return Err(Rejected {
            status: patched.status,
            body: format!("PATCH of the answer: {}", patched.text()),
        });
    }
    Ok(pc)
}

fn build_peer() -> Result<RTCPeerConnection, String> {
    let mut media_engine = MediaEngine::default();
    media_engine
        .register_codec(
            RTCRtpCodecParameters {
                rtp_codec: rtc_util::opus_codec(false),
                payload_type: 111,
            },
            RtpCodecKind::Audio,
        )
        .map_err(|e| e.to_string())?;
    // mDNS off: rtc-ice would send every packet from a peer port 5353 down its mDNS path.
    let settings = SettingEngineBuilder::new()
        .with_multicast_dns_mode(rtc::ice::mdns::MulticastDnsMode::Disabled)
        .build();
    RTCPeerConnectionBuilder::new()
        .with_media_engine(media_engine)
        .with_setting_engine(settings)
        .with_interceptor_registry(Registry::new())
        .build(Instant::now())
        .map_err(|e| e.to_string())
}

fn add_transceiver(
    pc: &mut RTCPeerConnection,
    mode: Mode,
) -> Result<(), rtc::shared::error::Error> {
    let track = MediaStreamTrack::new(
        "whip-conformance".into(),
        "whip-conformance-audio".into(),
        "conformance audio".into(),
        RtpCodecKind::Audio,
        vec![RTCRtpEncodingParameters {
            rtp_coding_parameters: RTCRtpCodingParameters {
                ssrc: Some(rand::random()),
                ..Default::default()
            },
            codec: rtc_util::opus_codec(false),
            ..Default::default()
        }],
    );
    let init = |direction| RTCRtpTransceiverInit {
        direction,
        streams: vec![],
        send_encodings: vec![],
    };
    match mode {
        Mode::Send => {
            pc.add_transceiver_from_track(track, Some(init(RTCRtpTransceiverDirection::Sendonly)))?;
        }
        Mode::SendRecv => {
            pc.add_track(track)?;
        }
        Mode::Recv => {
            pc.add_transceiver_from_kind(
                RtpCodecKind::Audio,
                Some(init(RTCRtpTransceiverDirection::Recvonly)),
            )?;
        }
    }
    Ok(())
}

fn write_packet(pc: &mut RTCPeerConnection, payload: Bytes, seq: u16, ts: u32) {
    let Some(sender_id) = pc.get_senders().next() else {
        return;
    };
    let Some(mut sender) = pc.rtp_sender(sender_id) else {
        return;
    };
    let params = sender.get_parameters();
    let pt = params
        .rtp_parameters
        .codecs
        .first()
        .map_or(111, |c| c.payload_type);
    let Some(ssrc) = params
        .encodings
        .first()
        .and_then(|e| e.rtp_coding_parameters.ssrc)
    else {
        return;
    };
    let header = Header {
        version: 2,
        payload_type: pt,
        sequence_number: seq,
        timestamp: ts,
        ssrc,
        ..Default::default()
    };
    let _ = sender.write_rtp(Instant::now(), Packet { header, payload });
}

async fn drive(
    mut pc: RTCPeerConnection,
    socket: UdpSocket,
    local: SocketAddr,
    mut control: mpsc::UnboundedReceiver<Control>,
    received: mpsc::UnboundedSender<Received>,
    state: watch::Sender<State>,
) {
    let mut buf = vec![0u8; 2048];
    let (mut seq, mut ts) = (rand::random::<u16>(), rand::random::<u32>());
    loop {
        let mut events = false;
        while let Some(event) = pc.poll_event() {
            events = true;
            if let RTCPeerConnectionEvent::OnConnectionStateChangeEvent(s) = event {
                match s {
                    RTCPeerConnectionState::Connected => {
                        state.send_modify(|st| st.connected = true)
                    }
                    RTCPeerConnectionState::Failed | RTCPeerConnectionState::Closed => {
                        state.send_modify(|st| st.ended = true)
                    }
                    _ => {}
                }
            }
        }
        // rtc starts the DTLS client (queues its ClientHello) while events are polled after ICE
        // succeeds, but only emits it from handle_timeout; without this nudge the handshake
        // waits for the next ICE tick (~200 ms).
        if events {
            let _ = pc.handle_timeout(Instant::now());
        }
        while let Some(out) = pc.poll_write() {
            let _ = socket.send_to(&out.message, out.transport.peer_addr).await;
        }
        while let Some(message) = pc.poll_read() {
            if let RTCMessage::RtpPacket(_, packet) = message.message {
                let _ = received.send(Received {
                    ssrc: packet.header.ssrc,
                    seq: packet.header.sequence_number,
                    timestamp: packet.header.timestamp,
                    payload: packet.payload,
                });
            }
        }
        let deadline = pc
            .poll_timeout()
            .unwrap_or_else(|| Instant::now() + Duration::from_secs(3600));
        tokio::select! {
            command = control.recv() => match command {
                Some(Control::Send(payload)) => {
                    write_packet(&mut pc, payload, seq, ts);
                    seq = seq.wrapping_add(1);
                    ts = ts.wrapping_add(960);
                }
                Some(Control::Close) | None => {
                    let _ = pc.close();
                    while let Some(out) = pc.poll_write() {
                        let _ = socket.send_to(&out.message, out.transport.peer_addr).await;
                    }
                    return;
                }
                Some(Control::Vanish) => return,
            },
            result = socket.recv_from(&mut buf) => {
                let Ok((n, peer)) = result else { return };
                let dtls = n > 0 && (20..=63).contains(&buf[0]);
                let _ = pc.handle_read(TaggedBytesMut {
                    now: Instant::now(),
                    transport: TransportContext {
                        local_addr: local,
                        peer_addr: peer,
                        ecn: None,
                        transport_protocol: TransportProtocol::UDP,
                    },
                    message: BytesMut::from(&buf[..n]),
                });
                if dtls && rtc_util::dtls_closed(&mut pc) {
                    state.send_modify(|st| st.ended = true);
                }
            }
            _ = tokio::time::sleep_until(deadline.into()) => {
                let _ = pc.handle_timeout(Instant::now());
            }
        }
    }
}
