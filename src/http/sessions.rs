//! The live sessions for operators (`/api/sessions`, issue 31): the list (by stream: public id,
//! role, state, uptime, user agent, path, bitrate, loss; the client's address only where the
//! admin token was needed to list), each one's client report by public id, and the kick. The
//! list and the reports follow `/api/streams`' rules (open on a server without tokens, else the
//! admin token); the kick always needs `--admin-token`, since with auth off anyone could
//! otherwise end anyone's session. A public id is not the resource id (that one is the
//! session's capability): `report::public_id`. In cluster mode each node lists its own.

use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};

use axum::Extension;

use super::{AppState, PeerAddr};
use crate::http::error::ApiError;

/// `GET /api/sessions`.
pub async fn list(
    State(state): State<AppState>,
    headers: HeaderMap,
    peer: Option<Extension<PeerAddr>>,
) -> Response {
    if let Err(e) = super::ops::admin(&state, &headers) {
        return e.into_response();
    }
    // Every live session's report is built on the media loops: rate-limited as a POST is.
    if let Err(e) = state.rate_limit(&headers, peer) {
        return state.refused_as(e).into_response();
    }
    match state.media.sessions().await {
        Ok(mut all) => {
            if state.admin_token.is_none() {
                all.iter_mut().for_each(|s| s.client = None);
            }
            let (ended, sessions) = all.into_iter().partition(|s| s.state == "ended");
            axum::Json(SessionList { sessions, ended }).into_response()
        }
        Err(e) => ApiError::from(e).into_response(),
    }
}

#[derive(serde::Serialize)]
struct SessionList {
    /// The live sessions.
    sessions: Vec<crate::report::SessionSummary>,
    /// Those that ended within the grace period (their reports are still there).
    ended: Vec<crate::report::SessionSummary>,
}

/// `GET /api/sessions/{id}/report`: the live session's client report (JSON, or text for
/// `Accept: text/plain`), without the client's address unless the admin token was needed.
pub async fn report(
    State(state): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
    peer: Option<Extension<PeerAddr>>,
) -> Result<Response, ApiError> {
    super::ops::admin(&state, &headers)?;
    state
        .rate_limit(&headers, peer)
        .map_err(|e| state.refused_as(e))?;
    let id = checked(&id)?;
    let mut report = state.media.by_session_id(id, false).await?;
    if state.admin_token.is_none() {
        report.connectivity.remote = None;
    }
    super::report::respond(&report, &headers)
}

/// `DELETE /api/sessions/{id}`: ends the live session (`EndReason::Kicked`; its client sees it
/// end, and its resource answers 410 with the reason).
pub async fn kick(
    State(state): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    if state.admin_token.is_none() {
        return Err(ApiError::Forbidden(
            "ending a session needs --admin-token (refused on a server without one)".into(),
        ));
    }
    super::ops::admin(&state, &headers)?;
    let id = checked(&id)?;
    state.media.by_session_id(id, true).await?;
    let text = [(header::CONTENT_TYPE, "text/plain; charset=utf-8")];
    Ok((StatusCode::OK, text, "session ended\n").into_response())
}

/// A public id as `report::public_id` makes them: 16 lowercase hex digits.
fn checked(id: &str) -> Result<&str, ApiError> {
    let hex = id.len() == 16
        && id
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
    hex.then_some(id)
        .ok_or(ApiError::NotFound("no such session"))
}

/// Any other method on a session.
pub async fn not_allowed() -> ApiError {
    ApiError::MethodNotAllowed { allow: "DELETE" }
}
