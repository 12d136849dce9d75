//! The media plane's types as its callers see them: what `GET /api/streams` lists, a viewer's
//! layer, a PATCH and what it did, what a resource id names, a created session, and the media
//! plane's settings.

use std::time::Duration;

use super::{forward, SessionLimits, TcpLimits};
use crate::config::PublisherConflict;
use crate::session::{EndReason, ResourceId};

/// One stream as `GET /api/streams` lists it.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct StreamInfo {
    /// Its name.
    pub stream: String,
    /// Its publisher (WHIP or echo), if one is live.
    pub publisher: Option<PublisherInfo>,
    /// Live WHEP viewers.
    pub viewers: usize,
    /// Cluster mode: of those, other nodes' pulls of the stream (its edges).
    pub edges: usize,
    /// Each viewer (edges too), with the video layer it gets.
    pub players: Vec<PlayerInfo>,
}

/// A viewer as `GET /api/streams` lists it.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct PlayerInfo {
    /// `connecting`, `connected` or `disconnected`.
    pub state: &'static str,
    /// The rid of the simulcast layer it gets now (none: no video yet, or no simulcast).
    pub layer: Option<String>,
    /// The layer it asked for (none: the top one).
    pub requested: Option<String>,
    /// Whether it is another node's pull of the stream (cluster mode).
    pub edge: bool,
}

impl StreamInfo {
    /// Whether a client publishes it on this node (cluster mode: not a pull from its holder).
    pub fn has_local_publisher(&self) -> bool {
        (self.publisher.as_ref()).is_some_and(|p| p.kind != PublisherKind::Pull)
    }
}

/// What publishes a stream, as `GET /api/streams` names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum PublisherKind {
    /// A WHIP client.
    Whip,
    /// An `/echo` session.
    Echo,
    /// Cluster mode: this node's pull of the stream from its holder (`"relay"` in the JSON, as
    /// it always was).
    #[serde(rename = "relay")]
    Pull,
}

/// A stream's publisher as `GET /api/streams` lists it.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct PublisherInfo {
    /// Who publishes.
    pub kind: PublisherKind,
    /// `connecting`, `connected` or `disconnected`.
    pub state: &'static str,
    /// The codec of each kind it sends (`audio/opus`, `video/H264/42e0/1`).
    pub codecs: Vec<String>,
    /// Seconds since its POST.
    pub uptime_seconds: f64,
    /// Each SSRC it sends (a simulcast publisher's layers), with its rate and picture size.
    pub sources: Vec<forward::sources::SourceInfo>,
    /// RTP packets of it that no track took (`dropped_packets_total{cause="unbound"}`): media
    /// that arrives but cannot be forwarded ("connected, but no video").
    pub unbound_packets: u64,
}

/// A viewer's video layer, as its layer URL reports it: the layers it can choose from, the one
/// it asked for and the one it gets.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct LayerState {
    /// The rid it asked for (none: the top layer).
    pub requested: Option<String>,
    /// The rid of the layer it gets now (none: no video yet, or the publisher sends no rids).
    pub current: Option<String>,
    /// The publisher's video sources, the top layer first.
    pub layers: Vec<forward::sources::SourceInfo>,
}

/// A PATCH of a session as the HTTP plane parsed it: the fragment and the request's `If-Match`.
#[derive(Debug, Clone)]
pub struct IcePatch {
    /// The RFC 8840 fragment.
    pub frag: crate::sdpfrag::SdpFrag,
    /// The `If-Match` precondition.
    pub if_match: IfMatch,
}

/// An `If-Match` header (RFC 9110 §13.1.1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IfMatch {
    /// No `If-Match`.
    Absent,
    /// `If-Match: *`.
    Any,
    /// The entity tags listed, as sent (quoted; weak tags never match: RFC 9110 §8.8.3.2).
    Tags(Vec<String>),
}

/// What a PATCH did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Patched {
    /// Candidates added (or ignored), or end-of-candidates noted: 204.
    Trickled,
    /// ICE restarted: 200 with the server's new credentials and candidates, and a new ETag.
    Restarted {
        /// The `application/trickle-ice-sdpfrag` body.
        frag: String,
        /// The new entity tag, quoted.
        etag: String,
    },
}

/// What a resource id names, as `GET /resource/{id}` reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResourceState {
    /// A live session.
    Live,
    /// A session that ended within the grace period.
    Ended(EndReason),
    /// Nothing (never, or ended long ago).
    Unknown,
}

/// The transport protocol of a candidate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// UDP.
    Udp,
    /// TCP (RFC 6544 passive, RFC 4571 framing).
    Tcp,
}

impl std::fmt::Display for Transport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Transport::Udp => "udp",
            Transport::Tcp => "tcp",
        })
    }
}

/// A session the media plane created.
#[derive(Debug, Clone)]
pub struct Created {
    /// The capability naming the session.
    pub resource: ResourceId,
    /// The SDP answer.
    pub answer: String,
    /// Entity tag of the ICE session (RFC 9725 §4.3.1), quoted.
    pub etag: String,
}

/// Settings of the media plane.
#[derive(Debug, Clone)]
pub struct MediaConfig {
    /// The session caps.
    pub session_limits: SessionLimits,
    /// ICE setup and consent timeout.
    pub ice_timeout: Duration,
    /// What a second publisher of a live stream gets.
    pub publisher_conflict: PublisherConflict,
    /// Bits per second a publishing session may send (0: no cap).
    pub max_bitrate: u64,
    /// The counters the loops move.
    pub metrics: crate::ops::metrics::LoopMetrics,
    /// Cluster mode: this node's tag, put in every resource id it mints.
    pub node_tag: Option<u16>,
    /// The limits on TCP connections, pending and ICE-TCP.
    pub tcp_limits: TcpLimits,
    /// ICE restarts a session may make per minute (0: any number).
    pub ice_restarts_per_minute: u32,
    /// Checks per second to addresses that never answered one, in all (0: any number); each loop
    /// takes an even share.
    pub unanswered_checks_per_second: u32,
}
