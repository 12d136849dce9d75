//! A session's client report (`/resource/{id}/report`, `report/`): what its client did, right and
//! wrong, named in the 201 by a `Link` with whip-echo's own relation type (an extension relation,
//! RFC 8288 §2.1.2: RFC 9725 §4.9's `urn:ietf:params:whip:ext` names need a registered
//! specification). JSON by default, plain text for `Accept: text/plain`; as unguessable as the
//! resource URL it hangs off, forwarded to the session's node in cluster mode, readable from
//! another origin (CORS). `GET /resource/{id}` itself stays as RFC 9725 and the WHEP draft have it.

use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};

use axum::Extension;

use super::{cors, forward, AppState, PeerAddr};
use crate::http::error::ApiError;
use crate::report::Report;
use crate::session::ResourceId;

/// The link relation of a session's report URL in its 201.
pub const REPORT_REL: &str = "urn:whip-echo:client-report";
/// Methods of a report URL.
const REPORT_METHODS: &str = "OPTIONS, GET, HEAD";

/// The `Link` field value naming the report URL of the session at `location`.
pub fn link(location: &str) -> String {
    format!("<{location}/report>; rel=\"{REPORT_REL}\"")
}

/// `GET` (and HEAD): the report, live or within the grace period after the session ended.
pub async fn get(
    State(state): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
    peer: Option<Extension<PeerAddr>>,
) -> Result<Response, ApiError> {
    // Each read is built on the session's media loop: rate-limited as a PATCH is.
    state
        .rate_limit(&headers, peer)
        .map_err(|e| state.refused_as(e))?;
    let resource = ResourceId::parse(&id).ok_or(ApiError::NotFound("no such resource"))?;
    let forwarded = forward::elsewhere(&state, Method::GET, &resource, "/report", &headers, None);
    if let Some(response) = forwarded.await {
        return Ok(response);
    }
    let report = state.media.report(resource).await.map_err(ApiError::from)?;
    respond(&report, &headers)
}

/// `report` as the request's `Accept` asks: JSON, or text for `text/plain`.
pub fn respond(report: &Report, headers: &HeaderMap) -> Result<Response, ApiError> {
    let text = (headers.get_all(header::ACCEPT).iter())
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.contains("text/plain") && !v.contains("application/json"));
    let (body, kind) = if text {
        (report.text(), "text/plain; charset=utf-8")
    } else {
        let json = serde_json::to_string_pretty(&report)
            .map_err(|e| ApiError::Internal(format!("report: {e}")))?;
        (json, "application/json")
    };
    let headers = [
        (header::CONTENT_TYPE, HeaderValue::from_static(kind)),
        (header::CACHE_CONTROL, HeaderValue::from_static("no-store")),
        (header::VARY, HeaderValue::from_static("accept")),
    ];
    Ok((StatusCode::OK, headers, body).into_response())
}

/// `OPTIONS`: the methods.
pub async fn options() -> Response {
    let mut response = cors::options(REPORT_METHODS, REPORT_METHODS);
    let headers = response.headers_mut();
    headers.remove("accept-post");
    headers.remove("accept-patch");
    response
}

/// Any other method.
pub async fn not_allowed() -> ApiError {
    ApiError::MethodNotAllowed {
        allow: REPORT_METHODS,
    }
}
