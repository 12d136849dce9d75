//! The embedded browser page and the health check.

use axum::http::{header, StatusCode};
use axum::response::{Html, IntoResponse, Response};

/// The echo page, embedded at build time so the binary needs no files next to it.
const INDEX_HTML: &str = include_str!("../../static/index.html");

/// `GET /`.
pub async fn index() -> Response {
    ([(header::CACHE_CONTROL, "no-cache")], Html(INDEX_HTML)).into_response()
}

/// `GET /healthz`: 200 while the media plane runs.
pub async fn healthz(
    axum::extract::State(state): axum::extract::State<super::AppState>,
) -> Response {
    let stats = *state.media.stats().borrow();
    if stats.running {
        (StatusCode::OK, format!("ok sessions={}\n", stats.sessions)).into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "media plane stopped\n").into_response()
    }
}
