//! The one error type of the HTTP API and its one mapping to statuses.
//!
//! Client mistakes become 4xx with a short plain-text reason and are logged at debug level; a full
//! or stopping server (503) is logged at warn; internal failures are logged once at error with
//! their cause and answered 500 with no internals in the body.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

use crate::media::MediaError;
use crate::session::BadStreamName;

/// Everything a request can fail with.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// RFC 9725 §4.2: the offer MUST be `application/sdp`; §4.3.1: a PATCH body
    /// `application/trickle-ice-sdpfrag`. The media type this route takes.
    #[error("Content-Type must be {0}")]
    UnsupportedMediaType(&'static str),
    /// The body is larger than the size cap.
    #[error("body larger than {0} bytes")]
    PayloadTooLarge(usize),
    /// A PATCH body that is not an RFC 8840 SDP fragment.
    #[error("bad SDP fragment: {0}")]
    BadFragment(String),
    /// RFC 9725 §4.3.1: `If-Match` names an ICE session that is not the current one.
    #[error("If-Match does not match the current ICE session's ETag")]
    PreconditionFailed,
    /// RFC 9725 §4.3.1: a PATCH without `If-Match` (RFC 6585 §3); what it was.
    #[error("{0}")]
    PreconditionRequired(&'static str),
    /// A valid fragment that the session cannot apply.
    #[error("cannot apply the SDP fragment: {0}")]
    Unprocessable(String),
    /// The offer is not usable SDP, or has no audio that whip-echo can serve.
    #[error("bad SDP offer: {0}")]
    BadSdp(String),
    /// A layer selection (WHEP's video layer extension, or `?layer=`) that cannot be served.
    #[error("{0}")]
    BadLayer(String),
    /// The stream name is not acceptable.
    #[error("bad stream name: {0}")]
    BadStreamName(&'static str),
    /// No such resource or route.
    #[error("{0}")]
    NotFound(&'static str),
    /// No bearer token, or one that is not valid here (RFC 6750 §3).
    #[error("{why}")]
    Unauthorized {
        /// Whether a token was given (then `error="invalid_token"`).
        invalid_token: bool,
        /// A short reason.
        why: &'static str,
    },
    /// A valid token that does not cover this action or stream.
    #[error("{0}")]
    Forbidden(String),
    /// The session of this resource has ended (and why); it is gone for good.
    #[error("session ended: {0}")]
    Ended(&'static str),
    /// The method is not supported on this path; `allow` lists the ones that are.
    #[error("method not allowed")]
    MethodNotAllowed {
        /// Value of the `Allow` header.
        allow: &'static str,
    },
    /// The stream already has a live publisher.
    #[error("stream {0:?} already has a live publisher")]
    PublisherExists(String),
    /// The session cap is reached.
    #[error("server is at its session limit, retry later")]
    OverCapacity,
    /// This client IP holds as many sessions as `--max-sessions-per-ip` allows.
    #[error("too many sessions from your address ({0} at most), end one first")]
    TooManyFromClient(usize),
    /// This client's IPv6 /48 holds as many sessions as `--max-sessions-per-prefix` allows.
    #[error("too many sessions from your network ({0} at most per IPv6 /48), end one first")]
    TooManyFromNetwork(usize),
    /// This client holds as many sessions still connecting as
    /// `--max-connecting-sessions-per-ip` allows.
    #[error("too many of your sessions are still connecting ({0} at most), retry shortly")]
    TooManyConnecting(usize),
    /// This client sent POST and PATCH requests faster than `--request-rate-per-ip` allows;
    /// the next one is allowed in this many seconds.
    #[error("too many requests from your address, retry in {0} s")]
    RateLimited(u64),
    /// The session restarted ICE as often as `--ice-restarts-per-minute` allows; the next
    /// restart is allowed in this many seconds.
    #[error("too many ICE restarts of this session, retry in {0} s")]
    RestartTooSoon(u64),
    /// The request (its body included) took longer than `--http-request-timeout`.
    #[error("request took too long")]
    RequestTimeout,
    /// The media plane is gone (shutting down).
    #[error("server is shutting down")]
    ShuttingDown,
    /// Cluster mode: the placement store (Redis) cannot be reached, so this node cannot tell who
    /// holds the stream.
    #[error("cluster placement is unavailable (its Redis cannot be reached), retry shortly")]
    ClusterUnavailable,
    /// Cluster mode: a resource of a node this node does not know yet, while the lookups of
    /// unknown nodes are spent (a flood of made-up resource ids).
    #[error("cluster: too many requests for resources of unknown nodes, retry shortly")]
    ClusterBusy,
    /// Cluster mode: a pull of a stream from a node that does not hold it at the pull's epoch
    /// (another node took it over, or this one lost its lease).
    #[error("this node does not hold stream {0:?} at that epoch")]
    StalePull(String),
    /// Cluster mode: a request for another node that could not be forwarded to it.
    #[error("the node holding this resource did not answer")]
    BadGateway,
    /// A bug or resource failure inside the server.
    #[error("internal error")]
    Internal(String),
}

impl ApiError {
    /// The status each variant maps to: the one place where that decision is made.
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::BadSdp(_)
            | ApiError::BadStreamName(_)
            | ApiError::BadFragment(_)
            | ApiError::BadLayer(_) => StatusCode::BAD_REQUEST,
            ApiError::PreconditionFailed => StatusCode::PRECONDITION_FAILED,
            ApiError::PreconditionRequired(_) => StatusCode::PRECONDITION_REQUIRED,
            ApiError::Unprocessable(_) => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::Unauthorized { .. } => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::Ended(_) => StatusCode::GONE,
            ApiError::MethodNotAllowed { .. } => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::PublisherExists(_) => StatusCode::CONFLICT,
            ApiError::TooManyFromClient(_)
            | ApiError::TooManyFromNetwork(_)
            | ApiError::TooManyConnecting(_)
            | ApiError::RateLimited(_)
            | ApiError::RestartTooSoon(_) => StatusCode::TOO_MANY_REQUESTS,
            ApiError::RequestTimeout => StatusCode::REQUEST_TIMEOUT,
            ApiError::OverCapacity
            | ApiError::ShuttingDown
            | ApiError::ClusterUnavailable
            | ApiError::ClusterBusy => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::StalePull(_) => StatusCode::CONFLICT,
            ApiError::BadGateway => StatusCode::BAD_GATEWAY,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

impl ApiError {
    /// The refusal by a session cap or a rate it is, if any (`whip_echo_sessions_rejected_total`).
    pub fn rejection(&self) -> Option<crate::ops::metrics::Rejection> {
        use crate::ops::metrics::Rejection;
        Some(match self {
            ApiError::OverCapacity => Rejection::Capacity,
            ApiError::TooManyFromClient(_) => Rejection::PerIp,
            ApiError::TooManyFromNetwork(_) => Rejection::PerPrefix,
            ApiError::TooManyConnecting(_) => Rejection::ConnectingPerIp,
            ApiError::RateLimited(_) => Rejection::Rate,
            ApiError::RestartTooSoon(_) => Rejection::RestartRate,
            _ => return None,
        })
    }
}

impl From<MediaError> for ApiError {
    /// The media plane's refusals as the API reports them.
    fn from(e: MediaError) -> Self {
        match e {
            MediaError::BadOffer(why) => ApiError::BadSdp(why),
            MediaError::PublisherExists(stream) => ApiError::PublisherExists(stream),
            MediaError::UnknownResource => ApiError::NotFound("no such resource"),
            MediaError::OverCapacity => ApiError::OverCapacity,
            MediaError::TooManyFromClient(max) => ApiError::TooManyFromClient(max),
            MediaError::TooManyFromNetwork(max) => ApiError::TooManyFromNetwork(max),
            MediaError::TooManyConnecting(max) => ApiError::TooManyConnecting(max),
            MediaError::RestartTooSoon(secs) => ApiError::RestartTooSoon(secs),
            MediaError::NotRunning => ApiError::ShuttingDown,
            MediaError::Internal(cause) => ApiError::Internal(cause),
            MediaError::StaleIceSession => ApiError::PreconditionFailed,
            MediaError::RestartNeedsIfMatch => ApiError::PreconditionRequired(
                "an ICE restart needs If-Match (\"*\" or the current ETag)",
            ),
            MediaError::TrickleNeedsIfMatch => ApiError::PreconditionRequired(
                "a trickle PATCH needs If-Match with the ETag of the POST's answer",
            ),
            MediaError::CannotApply(why) => ApiError::Unprocessable(why),
            MediaError::BadLayer(why) => ApiError::BadLayer(why),
        }
    }
}

impl From<crate::streams::Refused> for ApiError {
    /// The domain's refusals as the API reports them.
    fn from(e: crate::streams::Refused) -> Self {
        use crate::streams::Refused;
        match e {
            Refused::Denied(denied) => denied.into(),
            Refused::PullOnlyPlays => ApiError::Forbidden("a pull token only plays".into()),
            Refused::BadPullToken => ApiError::Unauthorized {
                invalid_token: true,
                why: "pull token not signed with this cluster's secret",
            },
            Refused::StalePull(stream) => ApiError::StalePull(stream),
            Refused::ClusterUnavailable => ApiError::ClusterUnavailable,
            Refused::ClusterBusy => ApiError::ClusterBusy,
            Refused::Media(e) => e.into(),
        }
    }
}

impl From<crate::auth::Denied> for ApiError {
    fn from(d: crate::auth::Denied) -> Self {
        match d {
            crate::auth::Denied::Unauthenticated { given, why } => ApiError::Unauthorized {
                invalid_token: given,
                why,
            },
            crate::auth::Denied::Forbidden(why) => ApiError::Forbidden(why),
        }
    }
}

impl From<BadStreamName> for ApiError {
    fn from(e: BadStreamName) -> Self {
        ApiError::BadStreamName(e.0)
    }
}

/// Whether a refusal of a full or stopping server may be logged at warn now: at most once a
/// second, since a client retrying in a loop sets the pace (the others go to debug).
fn warn_now() -> bool {
    static LAST: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    crate::ops::telemetry::once_every(&LAST, 1)
}

/// Seconds a client is asked to wait after a 503.
const RETRY_AFTER_SECS: &str = "5";

impl ApiError {
    /// One policy: a client's mistake is its own business (debug), a full or stopping server is
    /// the operator's (warn), a bug is everyone's (error, with its cause).
    fn log(&self, status: StatusCode) {
        match self {
            ApiError::Internal(cause) => tracing::error!(error = %cause, "internal error"),
            ApiError::OverCapacity
            | ApiError::ShuttingDown
            | ApiError::TooManyFromClient(_)
            | ApiError::TooManyFromNetwork(_)
            | ApiError::ClusterUnavailable
            | ApiError::ClusterBusy
            | ApiError::BadGateway
                if warn_now() =>
            {
                tracing::warn!(%status, reason = %self, "request refused")
            }
            _ => tracing::debug!(%status, reason = %self, "request rejected"),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        self.log(status);
        let mut response = (status, format!("{self}\n")).into_response();
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        );
        match self {
            ApiError::MethodNotAllowed { allow } => {
                headers.insert(header::ALLOW, HeaderValue::from_static(allow));
            }
            // RFC 6750 §3: the scheme and realm, and the error code when a token was refused.
            ApiError::Unauthorized { invalid_token, .. } => {
                let challenge = if invalid_token {
                    r#"Bearer realm="whip-echo", error="invalid_token""#
                } else {
                    r#"Bearer realm="whip-echo""#
                };
                headers.insert(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static(challenge),
                );
            }
            // RFC 6585 §4 (429) and RFC 9110 §10.2.3: when to try again.
            ApiError::OverCapacity
            | ApiError::ShuttingDown
            | ApiError::TooManyFromClient(_)
            | ApiError::TooManyFromNetwork(_) => {
                headers.insert(
                    header::RETRY_AFTER,
                    HeaderValue::from_static(RETRY_AFTER_SECS),
                );
            }
            // Connecting takes milliseconds to a few seconds.
            ApiError::TooManyConnecting(_) => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            }
            ApiError::RateLimited(secs) | ApiError::RestartTooSoon(secs) => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from(secs.max(1)));
            }
            // A store outage is usually short (a Redis restart or failover).
            ApiError::ClusterUnavailable | ApiError::ClusterBusy => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            }
            // RFC 5789 §2.2: a 415 to a PATCH says which patch documents are taken.
            ApiError::UnsupportedMediaType(expected)
                if expected == crate::session::TRICKLE_ICE_SDPFRAG =>
            {
                headers.insert("accept-patch", HeaderValue::from_static(expected));
            }
            _ => {}
        }
        response
    }
}
