//! The embedded browser page and the health check.

use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};

// The page, embedded at build time so the binary needs no files next to it.
const INDEX_HTML: &str = include_str!("../../static/index.html");
const APP_JS: &str = include_str!("../../static/app.js");
const WHIP_CLIENT_JS: &str = include_str!("../../static/whip-client.js");
const STYLE_CSS: &str = include_str!("../../static/style.css");

/// `GET /`.
pub async fn index() -> Response {
    asset("text/html; charset=utf-8", INDEX_HTML)
}

/// `GET /app.js`: the page's script.
pub async fn app_js() -> Response {
    asset("text/javascript; charset=utf-8", APP_JS)
}

/// `GET /whip-client.js`: the WHIP/WHEP client module.
pub async fn whip_client_js() -> Response {
    asset("text/javascript; charset=utf-8", WHIP_CLIENT_JS)
}

/// `GET /style.css`.
pub async fn style_css() -> Response {
    asset("text/css; charset=utf-8", STYLE_CSS)
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
        .into_response()
}

/// `GET /healthz`: 200 while the media plane runs.
pub async fn healthz(
    axum::extract::State(state): axum::extract::State<super::AppState>,
) -> Response {
    let stats = state.media.stats().borrow();
    if stats.running {
        (StatusCode::OK, format!("ok sessions={}\n", stats.sessions)).into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "media plane stopped\n").into_response()
    }
}
