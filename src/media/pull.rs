//! Cluster mode's pull: a node pulls a stream it does not hold from the node that does, over
//! WHEP, as a client. The peer connection is whip-echo's own offer (recvonly audio and video, every
//! codec it forwards), built here on the caller's task like an answer; the loop then runs it as
//! the stream's publisher, marked `pull`, so the local viewers get its media through the same
//! fan-out, keyframe requests and publisher-change handling as from a WHIP client. It lives on the
//! loop's socket: its checks go out from there, so the holder's answers come back by the paths
//! they teach the router, and the holder's own checks name its ufrag.

use std::time::Instant;

use rtc::peer_connection::sdp::RTCSessionDescription;
use rtc::peer_connection::transport::RTCDtlsRole;
use rtc::peer_connection::RTCPeerConnection;
use rtc::rtp_transceiver::rtp_sender::RtpCodecKind;
use rtc::rtp_transceiver::{RTCRtpTransceiverDirection, RTCRtpTransceiverInit};

use super::cap::Permit;
use super::negotiate::peer::{
    add_candidates, build_peer, IceCredentials, Negotiated, Nominates, PeerShape,
};
use super::negotiate::{codecs, offer};
use super::{MediaError, MediaHandle, NewSession};
use crate::session::{ResourceId, Role, StreamName};

/// A pull offered and not yet answered: [`MediaHandle::pull_offer`] makes it, and
/// [`MediaHandle::pull_adopt`] hands it, with the holder's answer, to its loop.
pub struct PendingPull {
    /// The offer to POST to the holder's WHEP endpoint.
    pub offer: String,
    stream: StreamName,
    pc: RTCPeerConnection,
    ufrag: String,
    index: usize,
    permit: Permit,
    started: Instant,
}

impl std::fmt::Debug for PendingPull {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PendingPull")
            .field("stream", &self.stream)
            .finish_non_exhaustive()
    }
}

impl MediaHandle {
    /// An offer to pull `stream` from another node, counted under the session cap like any
    /// session.
    pub fn pull_offer(&self, stream: &StreamName) -> Result<PendingPull, MediaError> {
        let index = super::stream_loop(stream, self.shards.len());
        let settings = &self.shards[index].settings;
        let started = Instant::now();
        let permit = self.cap.try_admit(None, started)?.permit;
        let credentials = IceCredentials::random_for(index);
        let every = codecs::every();
        let nominates = Nominates::Yes;
        let shape = PeerShape {
            role: Role::Publisher,
            dtls: RTCDtlsRole::Server,
            nominates,
            fast: false,
        };
        let mut pc = build_peer(settings, shape, &every, &credentials, started)?;
        let recvonly = || RTCRtpTransceiverInit {
            direction: RTCRtpTransceiverDirection::Recvonly,
            streams: vec![],
            send_encodings: vec![],
        };
        for kind in [RtpCodecKind::Audio, RtpCodecKind::Video] {
            pc.add_transceiver_from_kind(kind, Some(recvonly()))
                .map_err(MediaError::internal)?;
        }
        let offer = pc.create_offer(None).map_err(MediaError::internal)?;
        pc.set_local_description(started, offer)
            .map_err(MediaError::internal)?;
        add_candidates(&mut pc, settings)?;
        let offer = pc
            .local_description()
            .ok_or_else(|| MediaError::Internal("no local description after offer".into()))?
            .sdp;
        Ok(PendingPull {
            offer,
            stream: stream.clone(),
            pc,
            ufrag: credentials.ufrag,
            index,
            permit,
            started,
        })
    }

    /// Applies the holder's `answer` to `pending` and hands the connection to its loop as the
    /// stream's publisher. Returns the local resource id of the pull.
    pub async fn pull_adopt(
        &self,
        pending: PendingPull,
        answer: String,
    ) -> Result<ResourceId, MediaError> {
        let PendingPull {
            offer: _,
            stream,
            mut pc,
            ufrag,
            index,
            permit,
            started,
        } = pending;
        // What the holder sends, one codec per kind, read as whip-echo reads a publisher's offer
        // (the answer is `sendonly`, as a WHIP client's offer is).
        let info = offer::inspect(&answer, Role::Publisher)?;
        let mut chosen = Vec::new();
        for kind in [RtpCodecKind::Audio, RtpCodecKind::Video] {
            if let Some(codec) = info
                .section(kind)
                .and_then(|offered| codecs::choose(kind, offered, None, None))
            {
                chosen.push(codec);
            }
        }
        // The holder's answer is what this session's report reads as its "offer".
        let opening = crate::report::Opening::internal("whip-echo (cluster pull)", &answer);
        let answer = RTCSessionDescription::answer(answer).map_err(MediaError::bad_offer)?;
        pc.set_remote_description(Instant::now(), answer)
            .map_err(MediaError::bad_offer)?;
        let negotiated = Negotiated {
            pc,
            answer: String::new(),
            ufrag,
            tracks: Vec::new(),
            codecs: chosen.iter().map(|c| (c.kind, c.key())).collect(),
            payload_types: chosen.iter().map(|c| (c.payload_type, c.kind)).collect(),
            // Built with every codec and rtc's interceptors (`PeerShape::fast`): rtc's pipeline.
            fast: None,
        };
        let resource = self.new_resource(index);
        let session = Box::new(NewSession {
            resource,
            role: Role::Publisher,
            stream,
            negotiated,
            permit,
            started,
            pull: true,
            remote_candidates: 0,
            layer: None,
            opening,
        });
        let shard = &self.shards[index];
        self.request(shard, |reply| super::Command::Create { session, reply })
            .await??;
        Ok(resource)
    }
}
