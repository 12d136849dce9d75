//! What an operator's tools read: `/metrics` (Prometheus text format), `/readyz` (readiness, for
//! load balancers and orchestrators; `/healthz` is liveness), and the response counter every
//! request passes through.

use axum::extract::{MatchedPath, Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::AppState;
use crate::http::error::ApiError;

/// The Prometheus text exposition format's media type (version 0.0.4).
const PROMETHEUS_TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";

/// `GET /metrics`.
pub async fn metrics(State(state): State<AppState>) -> Response {
    let stats = state.media.stats().borrow();
    let cluster = state.cluster.as_ref().map(crate::cluster::Cluster::view);
    let gauges = crate::ops::metrics::Gauges {
        sessions: stats.by_role,
        streams: stats.streams,
        cluster: cluster.map(|view| crate::ops::metrics::ClusterGauges {
            leases: view.holds.len(),
            pulls: view.pulls.len(),
            redis_up: view.redis_ok,
            redis_errors: view.redis_errors,
        }),
    };
    let body = state.metrics.encode(&gauges);
    ([(header::CONTENT_TYPE, PROMETHEUS_TEXT)], body).into_response()
}

/// `GET /readyz`: 200 while the server takes sessions: its sockets are bound (it is serving
/// this), every media loop runs and it is not stopping; 503 with the reason otherwise, so a
/// load balancer stops sending it clients before it goes.
pub async fn readyz(State(state): State<AppState>) -> Response {
    let text = |status, body: &'static str| {
        (
            status,
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            body,
        )
            .into_response()
    };
    if state.stopping.is_cancelled() {
        return text(StatusCode::SERVICE_UNAVAILABLE, "shutting down\n");
    }
    if !state.media.stats().borrow().running {
        return text(StatusCode::SERVICE_UNAVAILABLE, "a media loop stopped\n");
    }
    text(StatusCode::OK, "ready\n")
}

/// Counts each response by route pattern (`/whip/{stream}`, not the stream's name, so that
/// clients cannot grow the label set) and status.
pub async fn count_responses(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or("unmatched", MatchedPath::as_str)
        .to_owned();
    let response = next.run(request).await;
    state
        .metrics
        .http_response(&route, response.status().as_u16());
    response
}

/// Any path that is not a route: 404, counted as route `unmatched`.
pub async fn no_route(State(state): State<AppState>) -> Response {
    state.metrics.http_response("unmatched", 404);
    crate::http::error::ApiError::NotFound("no such endpoint").into_response()
}

/// `GET /api/streams`: every stream with its publisher (state, codecs, uptime) and viewer
/// count, as JSON, for the page's list of live streams and for operators. Open when the server
/// has no tokens at all; otherwise it needs `Authorization: Bearer <--admin-token>` (stream
/// names may be private where publishing or playing is).
pub async fn streams(State(state): State<AppState>, headers: axum::http::HeaderMap) -> Response {
    if let Err(e) = admin(&state, &headers) {
        return e.into_response();
    }
    match state.media.streams().await {
        Ok(streams) => axum::Json(StreamList {
            streams,
            cluster: state.cluster.as_ref().map(crate::cluster::Cluster::view),
        })
        .into_response(),
        Err(e) => ApiError::from(e).into_response(),
    }
}

#[derive(serde::Serialize)]
struct StreamList {
    streams: Vec<crate::media::StreamInfo>,
    /// Cluster mode: this node's part (the streams it holds and pulls, Redis's state).
    #[serde(skip_serializing_if = "Option::is_none")]
    cluster: Option<crate::cluster::ClusterView>,
}

/// Whether the request may list streams.
pub(super) fn admin(state: &AppState, headers: &axum::http::HeaderMap) -> Result<(), ApiError> {
    let bearer = super::bearer(headers);
    match (&state.admin_token, &state.auth) {
        (None, None) => Ok(()),
        (None, Some(_)) => Err(ApiError::Forbidden(
            "listing streams needs --admin-token on a server with tokens".into(),
        )),
        (Some(admin), _) => {
            use subtle::ConstantTimeEq;
            match bearer {
                Some(token) if bool::from(token.as_bytes().ct_eq(admin.as_bytes())) => Ok(()),
                given => Err(ApiError::Unauthorized {
                    invalid_token: given.is_some(),
                    why: "listing streams needs the admin token",
                }),
            }
        }
    }
}
