//! The commands the HTTP plane sends a media loop, each with the channel for its answer, and the
//! negotiated session a `Create` hands over.

use std::time::Instant;

use tokio::sync::oneshot;

use super::{cap, negotiate, IcePatch, LayerState, MediaError, Patched, ResourceState, StreamInfo};
use crate::session::{EndReason, ResourceId, Role, StreamName};

/// A request from the HTTP plane, with the channel for its answer.
pub(crate) enum Command {
    /// Adopt a negotiated session.
    Create {
        session: Box<NewSession>,
        reply: oneshot::Sender<Result<(), MediaError>>,
    },
    Delete {
        resource: ResourceId,
        reason: EndReason,
        reply: oneshot::Sender<Result<(), MediaError>>,
    },
    /// Ends the publisher of a stream, if it has one (cluster fencing).
    EndPublisher {
        stream: StreamName,
        reason: EndReason,
        reply: oneshot::Sender<()>,
    },
    Exists {
        resource: ResourceId,
        reply: oneshot::Sender<ResourceState>,
    },
    /// The codecs of a stream's publisher and viewers, for a new session's negotiation.
    StreamCodecs {
        stream: StreamName,
        reply: oneshot::Sender<negotiate::codecs::StreamCodecs>,
    },
    /// The loop's streams, for `GET /api/streams`.
    ListStreams {
        reply: oneshot::Sender<Vec<StreamInfo>>,
    },
    /// A viewer's video layer: reported, and changed first when `change` is given (to a rid, or
    /// to the top layer with none).
    Layer {
        resource: ResourceId,
        change: Option<Option<String>>,
        reply: oneshot::Sender<Result<LayerState, MediaError>>,
    },
    /// The loop's live sessions (`GET /api/sessions`).
    ListSessions {
        reply: oneshot::Sender<Vec<crate::report::SessionSummary>>,
    },
    /// The session of a public id ([`crate::report::public_id`]): its report (live, or kept
    /// after it ended), or, live, it ends (`kick`, for `EndReason::Kicked`); `None` when it is
    /// not this loop's.
    BySessionId {
        id: String,
        kick: bool,
        reply: oneshot::Sender<Option<crate::report::Report>>,
    },
    /// A session's client report, live or within the grace period after it ended.
    Report {
        resource: ResourceId,
        reply: oneshot::Sender<Result<crate::report::Report, MediaError>>,
    },
    /// Trickled candidates or an ICE restart (RFC 9725 §4.3).
    Patch {
        resource: ResourceId,
        patch: IcePatch,
        reply: oneshot::Sender<Result<Patched, MediaError>>,
    },
    /// Makes the loop panic, to test that a dead loop is seen.
    #[cfg(test)]
    Panic,
}

/// A session negotiated on the request's task, handed to its loop.
pub(crate) struct NewSession {
    pub resource: ResourceId,
    pub role: Role,
    pub stream: StreamName,
    pub negotiated: negotiate::peer::Negotiated,
    pub permit: cap::Permit,
    /// When negotiation started: the setup deadline counts from here.
    pub started: Instant,
    /// Cluster mode: a publisher that is this node's pull of the stream from its holder, or a
    /// viewer that is another node's pull of it.
    pub pull: bool,
    /// Remote candidates its offer brought (at most `negotiate::offer::MAX_REMOTE_CANDIDATES`).
    pub remote_candidates: usize,
    /// A viewer's simulcast layer, by rid (`?layer=`; none: the top one).
    pub layer: Option<String>,
    /// What the HTTP plane saw of its POST, for its client report.
    pub opening: crate::report::Opening,
}
