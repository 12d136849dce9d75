//! A real WebRTC client peer for tests: webrtc-rs's sans-IO `rtc` on its own loopback UDP socket,
//! driven by one task. It POSTs its offer, sends synthetic Opus RTP whose payload is a counter, and
//! reports every RTP packet it receives on a channel.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use rtc::interceptor::Registry;
use rtc::media_stream::MediaStreamTrack;
use rtc::peer_connection::configuration::media_engine::{MediaEngine, MIME_TYPE_OPUS};
use rtc::peer_connection::configuration::setting_engine::SettingEngineBuilder;
use rtc::peer_connection::event::RTCPeerConnectionEvent;
use rtc::peer_connection::message::RTCMessage;
use rtc::peer_connection::sdp::RTCSessionDescription;
use rtc::peer_connection::state::RTCPeerConnectionState;
use rtc::peer_connection::{RTCPeerConnection, RTCPeerConnectionBuilder};
use rtc::rtp::header::Header;
use rtc::rtp::packet::Packet;
use rtc::rtp_transceiver::rtp_sender::{
    RTCRtpCodec, RTCRtpCodecParameters, RTCRtpCodingParameters, RTCRtpEncodingParameters,
    RtpCodecKind,
};
use rtc::rtp_transceiver::{RTCRtpTransceiverDirection, RTCRtpTransceiverInit};
use rtc::sansio::Protocol;
use rtc::shared::{TaggedBytesMut, TransportContext, TransportProtocol};
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

/// What the client does with audio.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// WHIP: sendonly offer.
    Send,
    /// WHEP: recvonly offer.
    Recv,
    /// Echo: sendrecv offer.
    SendRecv,
}

/// A received RTP packet.
#[derive(Debug, Clone)]
pub struct Received {
    pub ssrc: u32,
    pub seq: u16,
    pub timestamp: u32,
    pub payload: Bytes,
}

enum Control {
    Send(Bytes),
    /// Close the peer connection politely (DTLS close_notify) and stop.
    Close,
    /// Stop without a word, as a crashed or vanished client would.
    Vanish,
}

/// A connected (or connecting) client.
pub struct Client {
    /// Absolute URL of the session resource.
    pub resource_url: String,
    /// The server's SDP answer.
    pub answer: String,
    /// Instant the POST was sent.
    pub posted_at: Instant,
    /// Received RTP packets.
    pub received: mpsc::UnboundedReceiver<Received>,
    connected: watch::Receiver<bool>,
    control: mpsc::UnboundedSender<Control>,
    task: JoinHandle<()>,
}

/// The HTTP part of a failed POST.
#[derive(Debug)]
pub struct Rejected {
    pub status: u16,
    pub body: String,
}

impl Client {
    /// Creates the peer, POSTs its offer to `url`, applies the answer and starts driving it.
    pub async fn connect(url: &str, mode: Mode) -> Result<Client, Rejected> {
        let socket = UdpSocket::bind("127.0.0.1:0")
            .await
            .expect("bind client socket");
        let local = socket.local_addr().unwrap();
        let mut pc = build_peer(mode);
        let offer = pc.create_offer(None).expect("create offer");
        pc.set_local_description(Instant::now(), offer)
            .expect("set local");
        let candidate = whip_echo::media::host_candidate(local).expect("host candidate");
        pc.add_local_candidate(candidate).expect("add candidate");
        let offer_sdp = pc.local_description().expect("local description").sdp;
        assert!(
            offer_sdp.contains("a=candidate"),
            "offer must carry the host candidate"
        );

        let posted_at = Instant::now();
        let response = reqwest::Client::new()
            .post(url)
            .header("Content-Type", "application/sdp")
            .body(offer_sdp)
            .send()
            .await
            .expect("POST offer");
        let status = response.status().as_u16();
        let location = response
            .headers()
            .get("location")
            .map(|v| v.to_str().unwrap().to_owned());
        let body = response.text().await.unwrap();
        if status != 201 {
            return Err(Rejected { status, body });
        }
        let resource_url = reqwest::Url::parse(url)
            .unwrap()
            .join(&location.expect("201 has a Location"))
            .unwrap()
            .to_string();
        let answer = RTCSessionDescription::answer(body.clone()).expect("answer parses");
        pc.set_remote_description(Instant::now(), answer)
            .expect("apply answer");

        let (received_tx, received) = mpsc::unbounded_channel();
        let (connected_tx, connected) = watch::channel(false);
        let (control, control_rx) = mpsc::unbounded_channel();
        let task = tokio::spawn(drive(
            pc,
            socket,
            local,
            control_rx,
            received_tx,
            connected_tx,
        ));
        Ok(Client {
            resource_url,
            answer: body,
            posted_at,
            received,
            connected,
            control,
            task,
        })
    }

    /// Connects and waits until the peer connection is up.
    pub async fn connected(url: &str, mode: Mode) -> Client {
        let mut client = Client::connect(url, mode).await.expect("201 Created");
        client.wait_connected(super::WAIT).await;
        client
    }

    /// Sends DELETE to the session resource and returns the status.
    pub async fn delete(&self) -> u16 {
        reqwest::Client::new()
            .delete(&self.resource_url)
            .send()
            .await
            .expect("DELETE")
            .status()
            .as_u16()
    }

    /// Waits until the peer connection is connected.
    pub async fn wait_connected(&mut self, within: Duration) {
        tokio::time::timeout(within, self.connected.wait_for(|c| *c))
            .await
            .expect("connected in time")
            .expect("client task alive");
    }

    /// Sends one RTP packet with `payload`.
    pub fn send(&self, payload: &[u8]) {
        let _ = self
            .control
            .send(Control::Send(Bytes::copy_from_slice(payload)));
    }

    /// The next received packet, within `within`.
    pub async fn next_packet(&mut self, within: Duration) -> Received {
        tokio::time::timeout(within, self.received.recv())
            .await
            .expect("packet in time")
            .expect("client task alive")
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

fn opus() -> RTCRtpCodec {
    RTCRtpCodec {
        mime_type: MIME_TYPE_OPUS.to_owned(),
        clock_rate: 48_000,
        channels: 2,
        sdp_fmtp_line: "minptime=10;useinbandfec=1".to_owned(),
        rtcp_feedback: vec![],
    }
}

fn build_peer(mode: Mode) -> RTCPeerConnection {
    let mut media_engine = MediaEngine::default();
    media_engine
        .register_codec(
            RTCRtpCodecParameters {
                rtp_codec: opus(),
                payload_type: 111,
            },
            RtpCodecKind::Audio,
        )
        .unwrap();
    let settings = SettingEngineBuilder::new()
        .with_multicast_dns_mode(rtc::ice::mdns::MulticastDnsMode::Disabled)
        .build();
    let mut pc = RTCPeerConnectionBuilder::new()
        .with_media_engine(media_engine)
        .with_setting_engine(settings)
        .with_interceptor_registry(Registry::new())
        .build(Instant::now())
        .unwrap();
    let encodings = vec![RTCRtpEncodingParameters {
        rtp_coding_parameters: RTCRtpCodingParameters {
            ssrc: Some(rand::random()),
            ..Default::default()
        },
        codec: opus(),
        ..Default::default()
    }];
    let track = MediaStreamTrack::new(
        "client".into(),
        "client-audio".into(),
        "client audio".into(),
        RtpCodecKind::Audio,
        encodings.clone(),
    );
    let init = |direction| RTCRtpTransceiverInit {
        direction,
        streams: vec![],
        send_encodings: vec![],
    };
    match mode {
        Mode::Send => {
            pc.add_transceiver_from_track(track, Some(init(RTCRtpTransceiverDirection::Sendonly)))
                .unwrap();
        }
        Mode::SendRecv => {
            pc.add_track(track).unwrap();
        }
        Mode::Recv => {
            pc.add_transceiver_from_kind(
                RtpCodecKind::Audio,
                Some(init(RTCRtpTransceiverDirection::Recvonly)),
            )
            .unwrap();
        }
    }
    pc
}

async fn drive(
    mut pc: RTCPeerConnection,
    socket: UdpSocket,
    local: SocketAddr,
    mut control: mpsc::UnboundedReceiver<Control>,
    received: mpsc::UnboundedSender<Received>,
    connected: watch::Sender<bool>,
) {
    let mut buf = vec![0u8; 2048];
    let (mut seq, mut ts) = (rand::random::<u16>(), rand::random::<u32>());
    loop {
        while let Some(event) = pc.poll_event() {
            if let RTCPeerConnectionEvent::OnConnectionStateChangeEvent(state) = event {
                if state == RTCPeerConnectionState::Connected {
                    connected.send_replace(true);
                }
            }
        }
        // rtc starts the DTLS client (queues its ClientHello) while events are polled after ICE
        // succeeds, but only emits it from handle_timeout; without this nudge the handshake
        // waits for the next ICE tick (~200 ms).
        let _ = pc.handle_timeout(Instant::now());
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
                    let Some(sender_id) = pc.get_senders().next() else { continue };
                    let mut sender = pc.rtp_sender(sender_id).unwrap();
                    let params = sender.get_parameters();
                    let pt = params.rtp_parameters.codecs.first().map(|c| c.payload_type).unwrap_or(111);
                    let ssrc = params.encodings[0].rtp_coding_parameters.ssrc.unwrap();
                    let packet = Packet {
                        header: Header {
                            version: 2,
                            payload_type: pt,
                            sequence_number: seq,
                            timestamp: ts,
                            ssrc,
                            ..Default::default()
                        },
                        payload,
                    };
                    seq = seq.wrapping_add(1);
                    ts = ts.wrapping_add(960);
                    let _ = sender.write_rtp(Instant::now(), packet);
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
            }
            _ = tokio::time::sleep_until(deadline.into()) => {
                let _ = pc.handle_timeout(Instant::now());
            }
        }
    }
}
