//! Building one server-side peer connection from an offer, on the request's task (never on the
//! media loop): a media engine with the one codec per kind chosen for it (`codecs.rs`), the loop's
//! one DTLS certificate, DTLS server role, mDNS
//! off, ICE credentials that name the loop, the shared socket's host candidates, and the answer,
//! all without any network round trip (the POST returns as soon as this does).

use crate::media::forward::legs::SendTrack;
use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};

use rtc::crypto::SignatureScheme;
use rtc::media_stream::MediaStreamTrack;
use rtc::peer_connection::certificate::{CertificateParams, RTCCertificate};
use rtc::peer_connection::sdp::RTCSessionDescription;
use rtc::peer_connection::transport::{RTCDtlsRole, RTCIceCandidateInit};
use rtc::peer_connection::RTCPeerConnection;
use rtc::rtp_transceiver::rtp_sender::{
    RTCRtpCodingParameters, RTCRtpEncodingParameters, RtpCodecKind,
};
use rtc::rtp_transceiver::{RTCRtpSenderId, RTCRtpTransceiverDirection};

use super::answer::edit_answer;
use super::codecs::{self, Codec, StreamCodecs};
pub(in crate::media) use super::engine::{build_peer, FastSetup, Nominates, PeerShape};
use super::offer::OfferInfo;
use crate::media::MediaError;
use crate::session::Role;

/// A certificate is replaced when less than this is left of its validity. rtc gives its
/// self-signed certificates a far-off end, except on 32-bit ARM, where it caps them at 48 hours
/// (and then refuses to build peer connections with them).
const CERTIFICATE_MARGIN: Duration = Duration::from_secs(24 * 3600);

/// Settings shared by every peer connection of one media loop, computed once at start-up.
pub struct PeerSettings {
    /// Host candidates of the shared socket, as `add_local_candidate` takes them.
    pub candidates: Vec<RTCIceCandidateInit>,
    /// The announced UDP candidate addresses, in order.
    pub udp: Vec<SocketAddr>,
    /// The announced passive TCP candidate addresses, in order.
    pub tcp: Vec<SocketAddr>,
    /// Time without connectivity after which ICE reports `failed`.
    pub ice_timeout: Duration,
    /// The counters of the loop's NACK responders.
    pub nack: crate::media::NackMetrics,
    /// The loop's DTLS certificate. Generating an ECDSA key and a self-signed certificate per
    /// session cost more than the rest of the negotiation; browsers also reuse one certificate
    /// across their connections. The fingerprint is public (it is in every answer), the key
    /// never leaves the process. A `std` mutex: held only to clone or replace it, never across
    /// an await.
    current: Mutex<RTCCertificate>,
}

impl std::fmt::Debug for PeerSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PeerSettings")
            .field("candidates", &self.candidates)
            .field("ice_timeout", &self.ice_timeout)
            .finish_non_exhaustive()
    }
}

impl PeerSettings {
    /// Settings announcing `udp` (IPs and the loop's UDP port) as host candidates, then `tcp`
    /// (the shared ICE-TCP port) as passive TCP ones.
    pub fn new(
        udp: &[SocketAddr],
        tcp: &[SocketAddr],
        ice_timeout: Duration,
        nack: crate::media::NackMetrics,
    ) -> Result<Self, MediaError> {
        let candidates = udp
            .iter()
            .map(|addr| rtc_util::host_candidate(*addr))
            .chain(
                (0..)
                    .zip(tcp)
                    .map(|(rank, addr)| rtc_util::tcp_passive_candidate(*addr, rank)),
            )
            .collect::<Result<Vec<_>, _>>()
            .map_err(MediaError::Internal)?;
        Ok(PeerSettings {
            candidates,
            udp: udp.to_vec(),
            tcp: tcp.to_vec(),
            ice_timeout,
            nack,
            current: Mutex::new(new_certificate()?),
        })
    }

    /// The loop's certificate, replaced first if it is close to its end.
    pub fn certificate(&self) -> Result<RTCCertificate, MediaError> {
        let mut current = self.current.lock().unwrap_or_else(|e| e.into_inner());
        if current.expires < SystemTime::now() + CERTIFICATE_MARGIN {
            *current = new_certificate()?;
        }
        Ok(current.clone())
    }
}

/// A fresh ECDSA P-256 self-signed certificate.
fn new_certificate() -> Result<RTCCertificate, MediaError> {
    let provider = rtc::crypto::default_provider().map_err(MediaError::internal)?;
    let params =
        CertificateParams::new(vec!["whip-echo".to_owned()]).map_err(MediaError::internal)?;
    RTCCertificate::generate(provider.crypto(), SignatureScheme::EcdsaP256Sha256, params)
        .map_err(MediaError::internal)
}

/// A session's local ICE credentials (RFC 8445 §5.3: at least 24 random bits in the ufrag and
/// 128 in the password), chosen by whip-echo rather than rtc so that the ufrag names the media
/// loop: its first two hex digits are the loop index. A transport shared by every loop (ICE-TCP
/// on one port) finds the owner of a STUN request from its USERNAME alone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IceCredentials {
    /// 16 hex digits: the loop index (2), then 56 random bits.
    pub ufrag: String,
    /// 32 hex digits: 128 random bits.
    pub pwd: String,
}

impl IceCredentials {
    /// Fresh credentials for a session of loop `index` (at most 255).
    pub fn random_for(index: usize) -> Self {
        let random: u64 = rand::random();
        IceCredentials {
            ufrag: format!("{:02x}{:014x}", index.min(0xff), random >> 8),
            pwd: format!("{:032x}", rand::random::<u128>()),
        }
    }

    /// The loop a local ufrag minted by [`IceCredentials::random_for`] belongs to.
    pub fn loop_of(ufrag: &str) -> Option<usize> {
        usize::from_str_radix(ufrag.get(..2)?, 16).ok()
    }
}

/// A negotiated peer connection, ready to be handed to its media loop.
pub struct Negotiated {
    /// The peer connection, with local and remote descriptions applied.
    pub pc: RTCPeerConnection,
    /// The SDP answer for the 201 body.
    pub answer: String,
    /// The local ICE ufrag: the routing key of STUN requests for this session, and its ETag.
    pub ufrag: String,
    /// The send tracks of a `Viewer`/`Echo` session (none for a publisher).
    pub tracks: Vec<SendTrack>,
    /// The codec negotiated per kind ([`Codec::key`]): for a publisher, what it sends.
    pub codecs: Vec<(RtpCodecKind, String)>,
    /// The payload type negotiated per kind: a received packet's kind is its payload type's
    /// (GStreamer gives every track one msid, so rtc's track ids do not tell kinds apart).
    pub payload_types: Vec<(u8, RtpCodecKind)>,
    /// What its fast path needs, if its media skips rtc's pipeline once DTLS is up (every
    /// answered session; a pull keeps rtc's pipeline).
    pub fast: Option<FastSetup>,
}

/// Answers `offer` for `role` with `credentials`, one codec per kind as `stream`'s other sessions
/// allow. Errors from applying the offer are the client's ([`MediaError::BadOffer`]); the others
/// are internal.
pub fn negotiate(
    settings: &PeerSettings,
    role: Role,
    info: &OfferInfo,
    offer: String,
    credentials: IceCredentials,
    stream: &StreamCodecs,
    now: Instant,
) -> Result<Negotiated, MediaError> {
    let chosen = choose_codecs(role, info, stream)?;
    // RFC 8842 §5.3: the answer to a passive offer is active (whip-echo the DTLS client), to
    // actpass or active passive.
    let dtls = if info.passive {
        RTCDtlsRole::Client
    } else {
        RTCDtlsRole::Server
    };
    let peer = PeerShape {
        role,
        dtls,
        nominates: Nominates::No,
        fast: true,
    };
    let mut pc = build_peer(settings, peer, &chosen, &credentials, now)?;
    let mut senders = Vec::new();
    if role.receives() {
        for codec in &chosen {
            senders.push((add_send_track(&mut pc, codec)?, codec));
        }
    }
    apply_offer(&mut pc, role, offer, settings, now)?;
    let answer = answer(&mut pc, now)?;
    let fast = FastSetup::new(settings, role, &chosen, &answer);
    let tracks = senders
        .into_iter()
        .map(|((sender, ssrc), codec)| negotiated_track(&mut pc, sender, ssrc, codec))
        .collect::<Result<_, _>>()?;
    Ok(Negotiated {
        pc,
        answer,
        ufrag: credentials.ufrag,
        tracks,
        codecs: chosen.iter().map(|c| (c.kind, c.key())).collect(),
        payload_types: chosen.iter().map(|c| (c.payload_type, c.kind)).collect(),
        fast: Some(fast),
    })
}

/// One codec per offered kind: a viewer takes the live publisher's, a publisher prefers its
/// waiting viewers' (`codecs::choose`). A kind without a common codec is left out (rtc rejects
/// its section); an offer left with nothing is refused, saying what the stream carries.
fn choose_codecs(
    role: Role,
    info: &OfferInfo,
    stream: &StreamCodecs,
) -> Result<Vec<Codec>, MediaError> {
    let mut chosen = Vec::new();
    for kind in [RtpCodecKind::Audio, RtpCodecKind::Video] {
        let Some(offered) = info.section(kind) else {
            continue;
        };
        let required = (role == Role::Viewer)
            .then(|| stream.publisher_of(kind))
            .flatten();
        let preferred = role.publishes().then(|| stream.viewers_of(kind)).flatten();
        if let Some(codec) = codecs::choose(kind, offered, required, preferred) {
            chosen.push(codec);
        }
    }
    if chosen.is_empty() {
        let published: Vec<&str> = stream.publisher.iter().map(|(_, k)| k.as_str()).collect();
        return Err(MediaError::BadOffer(format!(
            "the stream is published as {} (whip-echo does not transcode), and the offer has none \
             of these",
            published.join(" + ")
        )));
    }
    Ok(chosen)
}

/// The track of `codec`'s kind that a viewer or echo session sends, with a random SSRC.
fn add_send_track(
    pc: &mut RTCPeerConnection,
    codec: &Codec,
) -> Result<(RTCRtpSenderId, u32), MediaError> {
    let ssrc: u32 = rand::random();
    let kind = if codec.kind == RtpCodecKind::Video {
        "video"
    } else {
        "audio"
    };
    let track = MediaStreamTrack::new(
        "whip-echo".to_owned(),
        format!("whip-echo-{kind}-{ssrc:08x}"),
        format!("whip-echo {kind}"),
        codec.kind,
        vec![RTCRtpEncodingParameters {
            rtp_coding_parameters: RTCRtpCodingParameters {
                ssrc: Some(ssrc),
                ..Default::default()
            },
            codec: codec.rtc_codec(),
            ..Default::default()
        }],
    );
    let sender = pc.add_track(track).map_err(MediaError::internal)?;
    Ok((sender, ssrc))
}

/// Applies the client's offer, narrows a viewer's direction, adds the shared socket's candidates.
fn apply_offer(
    pc: &mut RTCPeerConnection,
    role: Role,
    offer: String,
    settings: &PeerSettings,
    now: Instant,
) -> Result<(), MediaError> {
    let offer = RTCSessionDescription::offer(offer).map_err(MediaError::bad_offer)?;
    pc.set_remote_description(now, offer)
        .map_err(MediaError::bad_offer)?;
    if role == Role::Viewer {
        send_only(pc);
    }
    add_candidates(pc, settings)
}

/// Adds the loop's host candidates (UDP, then passive TCP) to `pc`.
pub(in crate::media) fn add_candidates(
    pc: &mut RTCPeerConnection,
    settings: &PeerSettings,
) -> Result<(), MediaError> {
    for candidate in &settings.candidates {
        pc.add_local_candidate(candidate.clone())
            .map_err(MediaError::internal)?;
    }
    Ok(())
}

/// Creates and applies the answer; returns its text as the client gets it.
fn answer(pc: &mut RTCPeerConnection, now: Instant) -> Result<String, MediaError> {
    let answer = pc.create_answer(None).map_err(MediaError::bad_offer)?;
    pc.set_local_description(now, answer)
        .map_err(MediaError::internal)?;
    let sdp = pc
        .local_description()
        .ok_or_else(|| MediaError::Internal("no local description after answer".into()))?
        .sdp;
    Ok(edit_answer(&sdp))
}

/// The negotiated parameters of a send track of `codec`.
fn negotiated_track(
    pc: &mut RTCPeerConnection,
    sender: RTCRtpSenderId,
    ssrc: u32,
    codec: &Codec,
) -> Result<SendTrack, MediaError> {
    let negotiated = pc.rtp_sender(sender).and_then(|mut s| {
        let c = s.get_parameters().rtp_parameters.codecs.first()?;
        Some((c.payload_type, c.rtp_codec.clock_rate))
    });
    let (payload_type, clock_rate) = negotiated.ok_or_else(|| {
        MediaError::BadOffer(format!("no {} negotiated for sending", codec.name()))
    })?;
    Ok(SendTrack {
        sender,
        kind: codec.kind,
        ssrc,
        payload_type,
        clock_rate: if clock_rate == 0 {
            codec.clock_rate
        } else {
            clock_rate
        },
        codec: codec.key(),
    })
}

/// WHEP draft §4.3.5 (media direction): the resource only sends, so a viewer's `sendrecv` offer is answered
/// `sendonly` (the twin of RFC 9725 §4.2's `recvonly` rule for WHIP) and nothing such a viewer
/// sends is read. rtc pairs the offer's section with the send track's `sendrecv` transceiver, whose
/// direction is narrowed here, before the answer is created.
pub(in crate::media) fn send_only(pc: &mut RTCPeerConnection) {
    let ids: Vec<_> = pc.get_transceivers().collect();
    for id in ids {
        if let Some(mut transceiver) = pc.rtp_transceiver(id) {
            if transceiver.sender().is_some() {
                transceiver.set_direction(RTCRtpTransceiverDirection::Sendonly);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_name_their_loop_and_are_fresh() {
        for index in [0, 1, 63, 255] {
            let c = IceCredentials::random_for(index);
            assert_eq!(c.ufrag.len(), 16);
            assert_eq!(c.pwd.len(), 32);
            // RFC 8839 §5.4: ice-char is ALPHA / DIGIT / "+" / "/".
            assert!(c
                .ufrag
                .bytes()
                .chain(c.pwd.bytes())
                .all(|b| b.is_ascii_alphanumeric()));
            assert_eq!(IceCredentials::loop_of(&c.ufrag), Some(index));
        }
        assert_ne!(IceCredentials::random_for(0), IceCredentials::random_for(0));
        assert_eq!(IceCredentials::loop_of("x"), None);
    }

    #[test]
    fn the_loop_certificate_is_rotated_before_it_expires() {
        let addrs = ["127.0.0.1:8189".parse().unwrap()];
        let settings =
            PeerSettings::new(&addrs, &[], Duration::from_secs(30), Default::default()).unwrap();
        let first = settings.certificate().unwrap();
        assert!(first.expires > SystemTime::now() + CERTIFICATE_MARGIN);
        assert!(
            settings.certificate().unwrap() == first,
            "reused while valid"
        );
        // A certificate close to its end (rtc gives 48 h on 32-bit ARM) is replaced.
        let mut near_end = first.clone();
        near_end.expires = SystemTime::now() + Duration::from_secs(60);
        *settings.current.lock().unwrap() = near_end.clone();
        let rotated = settings.certificate().unwrap();
        assert!(rotated != near_end);
        assert!(rotated.expires > SystemTime::now() + CERTIFICATE_MARGIN);
    }
}
