//! The media plane's own errors. They say what went wrong in media terms; the HTTP plane maps
//! them to statuses in one place (`impl From<MediaError> for ApiError`), so nothing here knows HTTP.

/// Everything the media plane can refuse or fail with.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MediaError {
    /// The offer is not usable SDP, or has no audio whip-echo can serve (the client's mistake).
    #[error("bad SDP offer: {0}")]
    BadOffer(String),
    /// The stream already has a live publisher and the policy is `reject`.
    #[error("stream {0:?} already has a live publisher")]
    PublisherExists(String),
    /// No live or recently ended session has this resource id.
    #[error("no such resource")]
    UnknownResource,
    /// The session cap is reached.
    #[error("server is at its session limit, retry later")]
    OverCapacity,
    /// The client's IP holds as many sessions as its limit (the number).
    #[error("too many sessions from this client IP ({0} at most)")]
    TooManyFromClient(usize),
    /// The client's IPv6 /48 holds as many sessions as its limit (the number).
    #[error("too many sessions from this client's /48 ({0} at most)")]
    TooManyFromNetwork(usize),
    /// The client holds as many sessions not yet connected as its limit (the number).
    #[error("too many sessions of this client still connecting ({0} at most)")]
    TooManyConnecting(usize),
    /// The session restarted ICE as often as its limit allows; the next restart is allowed in
    /// this many seconds.
    #[error("too many ICE restarts of this session, retry in {0} s")]
    RestartTooSoon(u64),
    /// The media loop is gone (shutting down, or it died).
    #[error("media plane is not running")]
    NotRunning,
    /// RFC 9725 §4.3.1: a PATCH's `If-Match` names another ICE session than the current one.
    #[error("If-Match does not match the current ICE session")]
    StaleIceSession,
    /// RFC 9725 §4.3.1: an ICE restart came without `If-Match`.
    #[error("an ICE restart needs If-Match")]
    RestartNeedsIfMatch,
    /// RFC 9725 §4.3.1: trickled candidates came without `If-Match`.
    #[error("a trickle PATCH needs If-Match")]
    TrickleNeedsIfMatch,
    /// A well-formed PATCH fragment the session cannot apply (rtc refused the restart).
    #[error("cannot apply: {0}")]
    CannotApply(String),
    /// A layer selection that cannot be served (a rid the publisher does not send, a session
    /// that is no viewer of video): why.
    #[error("{0}")]
    BadLayer(String),
    /// A failure inside rtc that the client did not cause.
    #[error("internal media error: {0}")]
    Internal(String),
}

impl MediaError {
    /// An rtc error while building or driving a peer connection.
    pub(crate) fn internal(e: impl std::fmt::Display) -> Self {
        MediaError::Internal(e.to_string())
    }

    /// An rtc error caused by the client's offer.
    pub(crate) fn bad_offer(e: impl std::fmt::Display) -> Self {
        MediaError::BadOffer(e.to_string())
    }
}
