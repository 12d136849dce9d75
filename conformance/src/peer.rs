//! A real WebRTC client peer: webrtc-rs's sans-IO `rtc` on its own UDP socket, driven by one task.
//! It POSTs its offer (following a WHEP 406 counter-offer when a server answers that way), sends
//! synthetic Opus RTP with the payloads it is given, and reports every RTP packet it receives.
//! whip-echo's own tests use it too, so it depends on nothing of the server's.

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use reqwest::{Method, Url};
use rtc::interceptor::Registry;
use rtc::peer_connection::configuration::interceptor_registry::{
    configure_nack, configure_simulcast_extension_headers, configure_twcc_sender_only,
};
use rtc::peer_connection::configuration::media_engine::MediaEngine;
use rtc::peer_connection::configuration::setting_engine::SettingEngineBuilder;
use rtc::peer_connection::event::RTCPeerConnectionEvent;
use rtc::peer_connection::message::RTCMessage;
use rtc::peer_connection::sdp::RTCSessionDescription;
use rtc::peer_connection::state::RTCPeerConnectionState;
use rtc::peer_connection::{RTCPeerConnection, RTCPeerConnectionBuilder};
use rtc::rtp_transceiver::rtp_sender::RtpCodecKind;
use rtc::sansio::Protocol;
use rtc::shared::{TaggedBytesMut, TransportContext, TransportProtocol};
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use crate::http::{Auth, Http};

mod media;

pub use media::{AudioCodec, VideoCodec};

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
    /// Audio or video.
    pub kind: RtpCodecKind,
    /// Payload type.
    pub payload_type: u8,
    /// SSRC.
    pub ssrc: u32,
    /// Sequence number.
    pub seq: u16,
    /// RTP timestamp.
    pub timestamp: u32,
    /// Payload (of video, without the payload header the client's frames carry: see
    /// [`VideoCodec::payload_header`]).
    pub payload: Bytes,
    /// Whether it is a video key frame (always true for audio).
    pub keyframe: bool,
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
    /// Keyframe requests (RTCP PLI or FIR) received for the video this client sends.
    pub keyframe_requests: u32,
    /// Packets the server's NACKs named (RFC 4585 §6.2.1), each time named.
    pub nacked: u32,
    /// TWCC feedback packets received from the server.
    pub twcc_feedback: u32,
    /// A DTLS datagram came from the server (its handshake is under way).
    pub dtls_from_server: bool,
    /// The time from the server's first DTLS datagram to the first that came after its first
    /// flight ([`FIRST_FLIGHT`]; with [`Options::passive`], the resend of the flight the client
    /// missed).
    pub first_dtls_gap: Option<Duration>,
}

/// Datagrams a [`Client`] received that carried RTP of a sequence number, counted before its
/// peer connection sees them (it drops a repeated packet as an SRTP replay): a test can count
/// the retransmissions a server sends.
#[derive(Clone, Default)]
pub struct RtpArrivals(std::sync::Arc<std::sync::Mutex<std::collections::HashMap<u16, u32>>>);

impl RtpArrivals {
    /// Datagrams of RTP (any SSRC) with sequence number `seq` so far.
    pub fn count(&self, seq: u16) -> u32 {
        let counts = self.0.lock().unwrap_or_else(|e| e.into_inner());
        counts.get(&seq).copied().unwrap_or(0)
    }

    fn record(&self, datagram: &[u8]) {
        // RFC 7983: RTP and RTCP start with 128..=191; RTCP's packet types are 192..=223
        // (RFC 5761 §4), so the second byte without the marker bit is 64..=95 for RTCP.
        let rtp = datagram.len() >= 12
            && (128..=191).contains(&datagram[0])
            && !(64..=95).contains(&(datagram[1] & 0x7f));
        if rtp {
            let seq = u16::from_be_bytes([datagram[2], datagram[3]]);
            let mut counts = self.0.lock().unwrap_or_else(|e| e.into_inner());
            *counts.entry(seq).or_default() += 1;
        }
    }
}

/// DTLS datagrams from the server within this of its first one are its first flight (a flight
/// may take several datagrams).
pub const FIRST_FLIGHT: Duration = Duration::from_millis(20);

/// How a [`Client`] hands its candidates over.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Options {
    /// Offer without candidates, then send the candidate by PATCH (RFC 9725 §4.3.2), as
    /// trickling browsers and the `whip-whep` JS library do.
    pub trickle: bool,
    /// Send no connectivity check of its own until the server's first check arrives (it still
    /// answers checks). The server can then only reach a candidate it was told about: the
    /// trickled one, not one learnt from the client's checks (peer-reflexive, RFC 8445
    /// §7.3.1.3). A test of trickle ICE needs this, or "it connects" proves nothing.
    pub wait_for_server_check: bool,
    /// The one audio codec offered (Opus by default; `None` offers no audio).
    pub audio: AudioCodec,
    /// The one video codec offered, if any.
    pub video: Option<VideoCodec>,
    /// Send only the first DTLS datagram (the ClientHello) and hold every later one until
    /// [`Client::release_dtls`]: the server stays mid-handshake meanwhile (a test of what a
    /// server keeps for a handshake that never ends).
    pub hold_dtls: bool,
    /// Send the first two DTLS datagrams (the ClientHello, again with the server's cookie) and
    /// hold its next flight until [`Client::release_dtls`]: the server waits for it with its own
    /// flight sent (a test of when a DTLS server resends).
    pub hold_second_flight: bool,
    /// Behave as FFmpeg's WHIP muxer does: offer `a=setup:passive`, be the DTLS server whatever
    /// the answer says, and miss the server's first DTLS flight (FFmpeg starts listening for
    /// DTLS only once its own ICE check has an answer): the server's resend is what connects.
    pub passive: bool,
    /// Send video as simulcast layers with these rids (RFC 8853), the way OBS 32 offers it:
    /// `a=rid` and `a=simulcast:send`, the mid and rid header extensions, no video `a=ssrc`.
    /// Frames go out with [`SendHandle::send_layer_frame`]. Empty: no simulcast.
    pub simulcast: &'static [&'static str],
    /// Send the simulcast layers without the mid and rid header extensions (a client whose
    /// packets nothing binds to a layer: no server can forward them).
    pub bare_layers: bool,
    /// The local UDP port to bind (0: any), as a client that reuses its port does.
    pub port: u16,
    /// Count keyframe requests but answer none (as real OBS 30.2's WHIP output does): a frame
    /// is a key frame only when the test says so.
    pub ignore_keyframe_requests: bool,
    /// Offer video feedback as browsers do: NACK (rtc's generator and responder) and
    /// transport-wide congestion control (its sequence numbers on every packet sent); the
    /// server's NACKs and TWCC feedback are counted in [`State`].
    pub feedback: bool,
}

/// The client's side of an ICE restart: its new credentials and candidate as an RFC 8840
/// fragment.
type RestartOffer = Result<String, String>;

enum Control {
    /// A payload of a kind; for video, whether it is a key frame, or `None` for one when the
    /// first frame or a keyframe request calls for it (as an encoder does).
    Send(RtpCodecKind, Bytes, Option<bool>),
    /// Stage and apply an ICE restart; reply with the fragment to PATCH.
    Restart(tokio::sync::oneshot::Sender<RestartOffer>),
    /// Send a PLI for the video received (RFC 4585 §6.3.1).
    RequestKeyframe,
    /// Send a generic NACK (RFC 4585 §6.2.1) for the video received, naming these packet ids
    /// (one FCI each, no bitmask), this many times in a row.
    Nack(Vec<u16>, usize),
    /// Apply the server's restart fragment (its new credentials and candidates).
    RestartAnswer(String, tokio::sync::oneshot::Sender<Result<(), String>>),
    /// An audio packet numbered `n` from the first: sequence number and timestamp (20 ms a
    /// packet) that far from the client's first, whatever was sent before (to send with gaps
    /// and out of order, as a lossy, reordering network would deliver).
    SendNumbered(u16, Bytes),
    /// A video frame on simulcast layer `n` (a key frame when one is due on that layer).
    SendLayer(usize, Bytes),
    /// Send these datagrams as they are from the client's socket to the server's address.
    Raw(Vec<Bytes>),
    /// Skip this many video sequence numbers (and their frames' time).
    SkipVideo(u16),
    /// Send the DTLS held by [`Options::hold_dtls`] and hold no more.
    ReleaseDtls,
    /// Reply with what the server's RTCP reports told the client's statistics.
    RemoteReports(tokio::sync::oneshot::Sender<RemoteReports>),
    /// Close the peer connection politely (DTLS close_notify) and stop.
    Close,
    /// Stop without a word, as a crashed or vanished client would.
    Vanish,
}

/// What a client's statistics (rtc's `getStats`) learnt from the server's RTCP reports.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RemoteReports {
    /// Sender reports heard about the streams it receives (`remote-outbound-rtp`).
    pub sender_reports: u64,
    /// The packets the server's last sender report said it sent, over those streams.
    pub packets_sent: u64,
    /// Receiver reports heard about the streams it sends (`remote-inbound-rtp`).
    pub receiver_reports: u64,
    /// The packets those reports said were lost.
    pub packets_lost: i64,
}

/// Sends RTP on a [`Client`].
#[derive(Clone)]
pub struct SendHandle(mpsc::UnboundedSender<Control>);

impl SendHandle {
    /// Sends one RTP packet with `payload` on the audio track.
    pub fn send(&self, payload: &[u8]) {
        self.send_kind(RtpCodecKind::Audio, payload);
    }

    /// Sends one RTP packet with `payload` on the track of `kind`.
    pub fn send_kind(&self, kind: RtpCodecKind, payload: &[u8]) {
        let _ = self
            .0
            .send(Control::Send(kind, Bytes::copy_from_slice(payload), None));
    }

    /// Sends one video frame, a key frame or not whatever was asked for.
    pub fn send_video_frame(&self, payload: &[u8], key: bool) {
        let _ = self.0.send(Control::Send(
            RtpCodecKind::Video,
            Bytes::copy_from_slice(payload),
            Some(key),
        ));
    }

    /// Leaves out the next `n` video packets, as a network that lost them would: the packets
    /// after them are numbered as if they had been sent.
    pub fn skip_video(&self, n: u16) {
        let _ = self.0.send(Control::SkipVideo(n));
    }

    /// Sends one video frame on simulcast layer `layer` ([`Options::simulcast`]): a key frame
    /// when it is the layer's first, or a keyframe request came since its last one.
    pub fn send_layer_frame(&self, layer: usize, payload: &[u8]) {
        let _ = self
            .0
            .send(Control::SendLayer(layer, Bytes::copy_from_slice(payload)));
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
    /// With [`Options::trickle`]: the status of the PATCH that carried the candidate.
    pub trickle_status: Option<u16>,
    /// The current ETag of the session (the POST's, then a restart's).
    pub etag: Option<String>,
    /// The address of the client's UDP socket.
    pub local: SocketAddr,
    /// Received RTP packets.
    pub received: mpsc::UnboundedReceiver<Received>,
    /// RTP datagrams received, by sequence number, before SRTP's replay check.
    pub arrivals: RtpArrivals,
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
        Client::connect_with_options(http, url, mode, local_ip, Options::default()).await
    }

    /// [`Client::connect_with`], handing candidates over as `options` say.
    pub async fn connect_with_options(
        http: &Http,
        url: &Url,
        mode: Mode,
        local_ip: IpAddr,
        options: Options,
    ) -> Result<Client, Rejected> {
        let failed = |e: String| Rejected { status: 0, body: e };
        let socket = UdpSocket::bind((local_ip, options.port))
            .await
            .map_err(|e| failed(e.to_string()))?;
        let local = socket.local_addr().map_err(|e| failed(e.to_string()))?;
        let (mut pc, offer) = offer_peer(mode, Some(local), &options).map_err(failed)?;
        let offer = if options.passive {
            offer.replace("a=setup:actpass", "a=setup:passive")
        } else {
            offer
        };
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
            // A passive client is the DTLS server, whatever the answer says (`answer` keeps what
            // it said).
            let applied = if options.passive {
                body.replace("a=setup:passive", "a=setup:active")
            } else {
                body.clone()
            };
            let answer =
                RTCSessionDescription::answer(applied).map_err(|e| failed(e.to_string()))?;
            pc.set_remote_description(Instant::now(), answer)
                .map_err(|e| failed(e.to_string()))?;
        }
        let etag = exchange.header("etag").map(str::to_owned);
        let frag = if options.trickle {
            Some(client_frag(&pc, local).map_err(failed)?)
        } else {
            None
        };
        let (received_tx, received) = mpsc::unbounded_channel();
        let (state_tx, state) = watch::channel(State::default());
        let (control, control_rx) = mpsc::unbounded_channel();
        let silent = options.wait_for_server_check;
        let arrivals = RtpArrivals::default();
        let io = Io {
            socket,
            local,
            arrivals: arrivals.clone(),
            hold_dtls: if options.hold_dtls {
                Some(1)
            } else if options.hold_second_flight {
                Some(2)
            } else {
                None
            },
            miss_first_dtls: options.passive,
            layers: options.simulcast.len(),
            bare_layers: options.bare_layers,
            deaf_to_keyframe_requests: options.ignore_keyframe_requests,
        };
        // The peer starts its checks at once; the PATCH goes out meanwhile, as a browser's does.
        let video = options.video;
        let task = tokio::spawn(drive(
            pc,
            io,
            video,
            silent,
            control_rx,
            received_tx,
            state_tx,
        ));
        let trickle_status = match frag {
            Some(frag) => Some(
                patch(http, &resource, etag.as_deref(), &frag)
                    .await
                    .map_err(failed)?
                    .status,
            ),
            None => None,
        };
        Ok(Client {
            resource_url: resource.to_string(),
            answer: body,
            headers: exchange.headers,
            posted_at,
            post_rtt,
            counter_offer,
            trickle_status,
            etag,
            local,
            received,
            arrivals,
            state,
            control,
            task,
            http: http.clone(),
        })
    }

    /// Sends `times` generic NACKs in a row for the video received, each naming the packets
    /// `ids` (one FCI each).
    pub fn nack(&self, ids: Vec<u16>, times: usize) {
        let _ = self.control.send(Control::Nack(ids, times));
    }

    /// Sends `datagrams` as they are from the client's socket to the server (the address its
    /// peer connection last sent to), as an attacker on the client's path could.
    pub fn send_raw(&self, datagrams: Vec<Bytes>) {
        let _ = self.control.send(Control::Raw(datagrams));
    }

    /// Sends audio packet number `n` (from the client's first: see [`Control::SendNumbered`])
    /// with `payload`, so a test can leave gaps and reorder; do not mix with [`Client::send`].
    pub fn send_numbered(&self, n: u16, payload: &[u8]) {
        let payload = Bytes::copy_from_slice(payload);
        let _ = self.control.send(Control::SendNumbered(n, payload));
    }

    /// Sends the DTLS held by [`Options::hold_dtls`], and holds no more.
    pub fn release_dtls(&self) {
        let _ = self.control.send(Control::ReleaseDtls);
    }

    /// What the server's RTCP reports told this client's statistics so far.
    pub async fn remote_reports(&self) -> RemoteReports {
        let (reply, answer) = tokio::sync::oneshot::channel();
        let _ = self.control.send(Control::RemoteReports(reply));
        answer.await.unwrap_or_default()
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

    /// The connection state as last seen.
    pub fn state(&self) -> State {
        *self.state.borrow()
    }

    /// Sends one RTP packet with `payload`.
    pub fn send(&self, payload: &[u8]) {
        self.send_kind(RtpCodecKind::Audio, payload);
    }

    /// Sends one RTP packet with `payload` on the track of `kind`.
    pub fn send_kind(&self, kind: RtpCodecKind, payload: &[u8]) {
        let _ = self
            .control
            .send(Control::Send(kind, Bytes::copy_from_slice(payload), None));
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

    /// Asks the sender of the video this client receives for a keyframe (an RTCP PLI).
    pub fn request_keyframe(&self) {
        let _ = self.control.send(Control::RequestKeyframe);
    }

    /// Restarts ICE as RFC 9725 §4.3.3 says: new local credentials, a PATCH with them and
    /// `If-Match: *`, then the server's fragment applied. Returns the PATCH's exchange; the ETag
    /// is updated from it.
    pub async fn restart(&mut self) -> Result<crate::http::Exchange, String> {
        let (reply, offer) = tokio::sync::oneshot::channel();
        let _ = self.control.send(Control::Restart(reply));
        let frag = offer.await.map_err(|_| "client stopped")??;
        let url = Url::parse(&self.resource_url).map_err(|e| e.to_string())?;
        let patched = patch(&self.http, &url, Some("*"), &frag).await?;
        if patched.status != 200 {
            return Err(format!(
                "restart PATCH: {} {}",
                patched.status,
                patched.text()
            ));
        }
        let (reply, applied) = tokio::sync::oneshot::channel();
        let _ = self
            .control
            .send(Control::RestartAnswer(patched.text(), reply));
        applied.await.map_err(|_| "client stopped")??;
        self.etag = patched.header("etag").map(str::to_owned);
        Ok(patched)
    }

    /// Sends a PATCH with `content_type`, `if_match` (none when `None`) and `body` to the
    /// session resource, without touching the peer connection (for the refusals' tests).
    pub async fn patch_raw(
        &self,
        content_type: &str,
        if_match: Option<&str>,
        body: &str,
    ) -> Result<crate::http::Exchange, String> {
        let url = Url::parse(&self.resource_url).map_err(|e| e.to_string())?;
        let mut headers = vec![("content-type", content_type)];
        if let Some(tag) = if_match {
            headers.push(("if-match", tag));
        }
        self.http
            .send(
                Method::PATCH,
                &url,
                &headers,
                body.to_owned().into(),
                Auth::Configured,
            )
            .await
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

/// What `pc`'s statistics learnt from the other side's RTCP reports.
fn remote_reports(pc: &mut RTCPeerConnection) -> RemoteReports {
    use rtc::statistics::report::RTCStatsReportEntry;
    let stats = pc.get_stats(Instant::now(), rtc::statistics::StatsSelector::None);
    let mut reports = RemoteReports::default();
    for entry in stats.iter() {
        match entry {
            RTCStatsReportEntry::RemoteOutboundRtp(s) => {
                reports.sender_reports += s.reports_sent;
                reports.packets_sent += s.sent_rtp_stream_stats.packets_sent;
            }
            RTCStatsReportEntry::RemoteInboundRtp(s) => {
                reports.receiver_reports += s.round_trip_time_measurements;
                reports.packets_lost += s.received_rtp_stream_stats.packets_lost;
            }
            _ => {}
        }
    }
    reports
}

/// An SDP offer for `mode` without candidates: enough for HTTP-level checks, which never connect.
pub fn offer(mode: Mode) -> String {
    offer_with(mode, &Options::default())
}

/// The offer a client with `options` would make (without candidates).
pub fn offer_with(mode: Mode, options: &Options) -> String {
    offer_peer(mode, None, options)
        .map(|(_, sdp)| sdp)
        .expect("a local offer")
}

/// A peer with `candidate` as its local candidate and the codecs of `options`, and its offer,
/// with the candidate in it unless `options.trickle` (then it is sent by PATCH).
fn offer_peer(
    mode: Mode,
    candidate: Option<SocketAddr>,
    options: &Options,
) -> Result<(RTCPeerConnection, String), String> {
    let e = |e: rtc::shared::error::Error| e.to_string();
    let in_offer = !options.trickle;
    let mut pc = build_peer(options)?;
    media::add_tracks(
        &mut pc,
        mode,
        options.audio,
        options.video,
        options.simulcast,
    )
    .map_err(e)?;
    let offer = pc.create_offer(None).map_err(e)?;
    pc.set_local_description(Instant::now(), offer).map_err(e)?;
    let without = pc.local_description().ok_or("no local description")?.sdp;
    if let Some(addr) = candidate {
        pc.add_local_candidate(rtc_util::host_candidate(addr)?)
            .map_err(e)?;
    }
    let sdp = pc.local_description().ok_or("no local description")?.sdp;
    Ok((pc, if in_offer { sdp } else { without }))
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
    let mut pc = build_peer(&Options::default()).map_err(failed)?;
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

fn build_peer(options: &Options) -> Result<RTCPeerConnection, String> {
    let mut media_engine = MediaEngine::default();
    media::register(&mut media_engine, options.audio, options.video)?;
    if !options.simulcast.is_empty() {
        configure_simulcast_extension_headers(&mut media_engine).map_err(|e| e.to_string())?;
    }
    // Keyframe requests for the video it sends reach the client (tests count them); with
    // `feedback`, every RTCP packet does.
    let mut registry = match options.feedback {
        false => rtc_util::with_keyframe_feedback(Registry::new()),
        true => rtc_util::with_all_rtcp_delivered(Registry::new()),
    };
    if options.feedback {
        registry = configure_nack(registry, &mut media_engine);
        registry =
            configure_twcc_sender_only(registry, &mut media_engine).map_err(|e| e.to_string())?;
    }
    // mDNS off: rtc-ice would send every packet from a peer port 5353 down its mDNS path.
    let settings = SettingEngineBuilder::new()
        .with_multicast_dns_mode(rtc::ice::mdns::MulticastDnsMode::Disabled)
        .build();
    RTCPeerConnectionBuilder::new()
        .with_media_engine(media_engine)
        .with_setting_engine(settings)
        .with_interceptor_registry(registry)
        .build(Instant::now())
        .map_err(|e| e.to_string())
}

/// The client's socket and its address.
struct Io {
    socket: UdpSocket,
    local: SocketAddr,
    arrivals: RtpArrivals,
    /// Hold the DTLS datagrams after this many ([`Options::hold_dtls`],
    /// [`Options::hold_second_flight`]).
    hold_dtls: Option<usize>,
    /// Drop the server's first DTLS flight ([`Options::passive`]).
    miss_first_dtls: bool,
    /// Simulcast layers sent ([`Options::simulcast`]).
    layers: usize,
    /// [`Options::bare_layers`].
    bare_layers: bool,
    /// [`Options::ignore_keyframe_requests`].
    deaf_to_keyframe_requests: bool,
}

async fn drive(
    mut pc: RTCPeerConnection,
    io: Io,
    video: Option<VideoCodec>,
    mut silent: bool,
    mut control: mpsc::UnboundedReceiver<Control>,
    received: mpsc::UnboundedSender<Received>,
    state: watch::Sender<State>,
) {
    let Io {
        socket,
        local,
        arrivals,
        hold_dtls,
        miss_first_dtls,
        layers,
        bare_layers,
        deaf_to_keyframe_requests,
    } = io;
    // Per simulcast layer: its sequence and timestamp, and whether a key frame is due.
    let mut layer_clocks: Vec<(u16, u32, bool)> = (0..layers)
        .map(|_| (rand::random(), rand::random(), true))
        .collect();
    // When the server's first DTLS datagram arrived.
    let mut first_dtls: Option<Instant> = None;
    // With `hold_dtls`: the DTLS datagrams held (after the first), until released.
    let mut held: Option<Vec<(Bytes, SocketAddr)>> = hold_dtls.map(|_| Vec::new());
    let hold_after = hold_dtls.unwrap_or(usize::MAX);
    let mut dtls_sent = 0usize;
    // Where the server was last sent to (raw datagrams go there).
    let mut server = None;
    let mut buf = vec![0u8; 2048];
    // The SSRC of the video received, for keyframe requests.
    let mut video_from = None;
    // The next video frame sent is a key frame: the first, and the first after a request.
    let mut keyframe_due = true;
    // Sequence and timestamp per kind: audio, video.
    let mut clocks = [0; 2].map(|_| (rand::random::<u16>(), rand::random::<u32>()));
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
            if silent && is_binding_request(&out.message) {
                continue;
            }
            server = Some(out.transport.peer_addr);
            if (20..=63).contains(&out.message.first().copied().unwrap_or(0)) {
                dtls_sent += 1;
                if let (Some(held), true) = (held.as_mut(), dtls_sent > hold_after) {
                    held.push((out.message.freeze(), out.transport.peer_addr));
                    continue;
                }
            }
            let _ = socket.send_to(&out.message, out.transport.peer_addr).await;
        }
        while let Some(message) = pc.poll_read() {
            if let RTCMessage::RtcpPacket(_, packets) = &message.message {
                let (nacked, twcc) = media::feedback_in(packets);
                if nacked + twcc > 0 {
                    state.send_modify(|st| {
                        st.nacked += nacked;
                        st.twcc_feedback += twcc;
                    });
                }
            }
            if rtc_util::message_asks_for_keyframe(&message.message) {
                state.send_modify(|st| st.keyframe_requests += 1);
                keyframe_due |= !deaf_to_keyframe_requests;
                // A simulcast layer sends a key frame when a request names its SSRC.
                if let RTCMessage::RtcpPacket(_, packets) = &message.message {
                    let asked = rtc_util::keyframes_asked(packets);
                    let ssrcs = media::layer_ssrcs(&mut pc);
                    for (layer, ssrc) in ssrcs.iter().enumerate() {
                        if let (true, Some(clock)) =
                            (asked.contains(ssrc), layer_clocks.get_mut(layer))
                        {
                            clock.2 = true;
                        }
                    }
                }
            }
            if let RTCMessage::RtpPacket(track, packet) = message.message {
                let kind = media::kind_of(&mut pc, &track);
                let (mut keyframe, mut payload) = (true, packet.payload);
                if kind == RtpCodecKind::Video {
                    video_from = Some(packet.header.ssrc);
                    if let Some((key, rest)) = video.and_then(|v| v.strip_payload_header(&payload))
                    {
                        (keyframe, payload) = (key, rest);
                    }
                }
                let _ = received.send(Received {
                    kind,
                    payload_type: packet.header.payload_type,
                    ssrc: packet.header.ssrc,
                    seq: packet.header.sequence_number,
                    timestamp: packet.header.timestamp,
                    payload,
                    keyframe,
                });
            }
        }
        let deadline = pc
            .poll_timeout()
            .unwrap_or_else(|| Instant::now() + Duration::from_secs(3600));
        tokio::select! {
            command = control.recv() => match command {
                Some(Control::Send(kind, mut payload, key)) => {
                    let is_video = kind == RtpCodecKind::Video;
                    if let (true, Some(codec)) = (is_video, video) {
                        let key = key.unwrap_or(keyframe_due);
                        keyframe_due &= !key;
                        payload = [codec.payload_header(key), &payload].concat().into();
                    }
                    let (seq, ts) = &mut clocks[usize::from(is_video)];
                    media::write_packet(&mut pc, kind, payload, *seq, *ts);
                    *seq = seq.wrapping_add(1);
                    // 20 ms of audio (Opus 960 ticks; whatever the codec, servers pass it
                    // through), or one video frame at 30 fps.
                    *ts = ts.wrapping_add(if is_video { 3000 } else { 960 });
                }
                Some(Control::SendNumbered(n, payload)) => {
                    let (seq, ts) = clocks[0];
                    let (seq, ts) = (seq.wrapping_add(n), ts.wrapping_add(960 * u32::from(n)));
                    media::write_packet(&mut pc, RtpCodecKind::Audio, payload, seq, ts);
                }
                Some(Control::SkipVideo(n)) => {
                    let (seq, ts) = &mut clocks[1];
                    *seq = seq.wrapping_add(n);
                    *ts = ts.wrapping_add(3000 * u32::from(n));
                }
                Some(Control::SendLayer(layer, payload)) => {
                    if let (Some(codec), Some((seq, ts, due))) = (video, layer_clocks.get_mut(layer)) {
                        let payload = [codec.payload_header(*due), &payload].concat().into();
                        *due = false;
                        let packet = media::LayerPacket { layer, payload, seq: *seq, ts: *ts };
                        media::write_layer_packet(&mut pc, packet, !bare_layers);
                        *seq = seq.wrapping_add(1);
                        *ts = ts.wrapping_add(3000);
                    }
                }
                Some(Control::Close) | None => {
                    let _ = pc.close();
                    while let Some(out) = pc.poll_write() {
                        let _ = socket.send_to(&out.message, out.transport.peer_addr).await;
                    }
                    return;
                }
                Some(Control::Vanish) => return,
                Some(Control::Raw(datagrams)) => {
                    if let Some(to) = server {
                        for d in datagrams {
                            let _ = socket.send_to(&d, to).await;
                        }
                    }
                }
                Some(Control::RemoteReports(reply)) => {
                    let _ = reply.send(remote_reports(&mut pc));
                }
                Some(Control::ReleaseDtls) => {
                    for (d, to) in held.take().unwrap_or_default() {
                        let _ = socket.send_to(&d, to).await;
                    }
                }
                Some(Control::RequestKeyframe) => {
                    if let Some(ssrc) = video_from {
                        media::request_keyframe(&mut pc, ssrc);
                    }
                }
                Some(Control::Nack(ids, times)) => {
                    if let Some(ssrc) = video_from {
                        for _ in 0..times {
                            media::nack(&mut pc, ssrc, &ids);
                        }
                    }
                }
                Some(Control::Restart(reply)) => {
                    let _ = reply.send(restart_offer(&mut pc, local));
                }
                Some(Control::RestartAnswer(frag, reply)) => {
                    let _ = reply.send(apply_restart_answer(&mut pc, &frag));
                }
            },
            result = socket.recv_from(&mut buf) => {
                let Ok((n, peer)) = result else { return };
                if is_binding_request(&buf[..n]) {
                    silent = false;
                }
                arrivals.record(&buf[..n]);

                let dtls = n > 0 && (20..=63).contains(&buf[0]);
                if dtls && !state.borrow().dtls_from_server {
                    state.send_modify(|st| st.dtls_from_server = true);
                }
                if dtls {
                    let first = *first_dtls.get_or_insert_with(Instant::now);
                    let since = first.elapsed();
                    // The first flight: what came within FIRST_FLIGHT of the first datagram.
                    if since < FIRST_FLIGHT {
                        if miss_first_dtls {
                            continue;
                        }
                    } else if state.borrow().first_dtls_gap.is_none() {
                        state.send_modify(|st| st.first_dtls_gap = Some(since));
                    }
                }
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

/// Whether `datagram` is a STUN Binding request (RFC 8489 §5: type 0x0001, magic cookie).
fn is_binding_request(datagram: &[u8]) -> bool {
    datagram.len() >= 20 && datagram[..2] == [0, 1] && datagram[4..8] == [0x21, 0x12, 0xa4, 0x42]
}

/// The value of the first `a=<key>:` line of `sdp`.
fn attribute<'a>(sdp: &'a str, key: &str) -> Option<&'a str> {
    sdp.lines().find_map(|l| {
        l.trim_end()
            .strip_prefix("a=")?
            .strip_prefix(key)?
            .strip_prefix(':')
    })
}

/// An RFC 8840 fragment with the client's current credentials, its first mid and its host
/// candidate on `local`, then `a=end-of-candidates`.
fn client_frag(pc: &RTCPeerConnection, local: SocketAddr) -> Result<String, String> {
    let sdp = pc.local_description().ok_or("no local description")?.sdp;
    let get = |k| attribute(&sdp, k).ok_or(format!("no {k} in the offer"));
    let candidate = rtc_util::host_candidate(local)?.candidate;
    let candidate = candidate.strip_prefix("candidate:").unwrap_or(&candidate);
    Ok(format!(
        "a=ice-ufrag:{}\r\na=ice-pwd:{}\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=mid:{}\r\n\
         a=candidate:{candidate}\r\na=end-of-candidates\r\n",
        get("ice-ufrag")?,
        get("ice-pwd")?,
        get("mid")?,
    ))
}

/// PATCHes `frag` to `resource` with `if_match` (none when `None`).
async fn patch(
    http: &Http,
    resource: &Url,
    if_match: Option<&str>,
    frag: &str,
) -> Result<crate::http::Exchange, String> {
    let mut headers = vec![("content-type", "application/trickle-ice-sdpfrag")];
    if let Some(tag) = if_match {
        headers.push(("if-match", tag));
    }
    http.send(
        Method::PATCH,
        resource,
        &headers,
        frag.to_owned().into(),
        Auth::Configured,
    )
    .await
}

/// Stages and applies an ICE restart as the offerer (JSEP: `restartIce`, then a new offer and
/// `setLocalDescription`), and returns the fragment with the new credentials.
fn restart_offer(pc: &mut RTCPeerConnection, local: SocketAddr) -> RestartOffer {
    let e = |e: rtc::shared::error::Error| e.to_string();
    pc.restart_ice();
    let offer = pc.create_offer(None).map_err(e)?;
    pc.set_local_description(Instant::now(), offer).map_err(e)?;
    client_frag(pc, local)
}

/// Applies the server's restart fragment: its answer again with the new credentials, then its
/// candidates.
fn apply_restart_answer(pc: &mut RTCPeerConnection, frag: &str) -> Result<(), String> {
    let e = |e: rtc::shared::error::Error| e.to_string();
    let ufrag = attribute(frag, "ice-ufrag").ok_or("no ice-ufrag in the server's fragment")?;
    let pwd = attribute(frag, "ice-pwd").ok_or("no ice-pwd in the server's fragment")?;
    let previous = pc
        .remote_description()
        .ok_or("no remote description")?
        .sdp
        .clone();
    let mut answer = String::new();
    for line in previous.lines().map(str::trim_end) {
        let line = if line.starts_with("a=ice-ufrag:") {
            format!("a=ice-ufrag:{ufrag}")
        } else if line.starts_with("a=ice-pwd:") {
            format!("a=ice-pwd:{pwd}")
        } else if line.starts_with("a=candidate:") || line == "a=end-of-candidates" {
            continue;
        } else {
            line.to_owned()
        };
        answer.push_str(&line);
        answer.push_str("\r\n");
    }
    let answer = RTCSessionDescription::answer(answer).map_err(e)?;
    pc.set_remote_description(Instant::now(), answer)
        .map_err(e)?;
    for candidate in frag
        .lines()
        .filter_map(|l| l.trim_end().strip_prefix("a=candidate:"))
    {
        pc.add_remote_candidate(rtc::peer_connection::transport::RTCIceCandidateInit {
            candidate: format!("candidate:{candidate}"),
            ..Default::default()
        })
        .map_err(e)?;
    }
    Ok(())
}
