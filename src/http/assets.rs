//! The embedded browser page and the health check.

use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};

use crate::selftest::{self, SelfTest};

// The page, embedded at build time so the binary needs no files next to it.
const INDEX_HTML: &str = include_str!("../../static/index.html");
const APP_JS: &str = include_str!("../../static/app.js");
const WHIP_CLIENT_JS: &str = include_str!("../../static/whip-client.js");
const LATENCY_JS: &str = include_str!("../../static/latency.js");
const LIVE_JS: &str = include_str!("../../static/live.js");
const DIAGNOSE_JS: &str = include_str!("../../static/diagnose.js");
const REPORT_JS: &str = include_str!("../../static/report.js");
const STYLE_CSS: &str = include_str!("../../static/style.css");
const FAVICON: &[u8] = include_bytes!("../../static/favicon.ico");

/// The page's Content-Security-Policy: its own scripts, styles and images only (none inline,
/// nothing framed or framing it). Its requests may go to any http(s) origin: a front that
/// answers the POST with a 307 to whip-echo, and in cluster mode a session's `Location` naming
/// another node, are other origins.
pub const PAGE_CSP: &str = "default-src 'self'; connect-src 'self' http: https:; \
     object-src 'none'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// `GET /`.
pub async fn index() -> Response {
    let mut page = asset("text/html; charset=utf-8", INDEX_HTML);
    let headers = page.headers_mut();
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        header::HeaderValue::from_static(PAGE_CSP),
    );
    // frame-ancestors' predecessor, for browsers without CSP level 2.
    headers.insert(
        header::X_FRAME_OPTIONS,
        header::HeaderValue::from_static("DENY"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        header::HeaderValue::from_static("no-referrer"),
    );
    page
}

/// `GET /app.js`: the page's script.
pub async fn app_js() -> Response {
    asset("text/javascript; charset=utf-8", APP_JS)
}

/// `GET /whip-client.js`: the WHIP/WHEP client module.
pub async fn whip_client_js() -> Response {
    asset("text/javascript; charset=utf-8", WHIP_CLIENT_JS)
}

/// `GET /latency.js`: the latency measurement and the delayed echo.
pub async fn latency_js() -> Response {
    asset("text/javascript; charset=utf-8", LATENCY_JS)
}

/// `GET /live.js`: the page's list of live streams.
pub async fn live_js() -> Response {
    asset("text/javascript; charset=utf-8", LIVE_JS)
}

/// `GET /diagnose.js`: what the page says when media does not flow.
pub async fn diagnose_js() -> Response {
    asset("text/javascript; charset=utf-8", DIAGNOSE_JS)
}

/// `GET /report.js`: the page's client report panel.
pub async fn report_js() -> Response {
    asset("text/javascript; charset=utf-8", REPORT_JS)
}

/// `GET /style.css`.
pub async fn style_css() -> Response {
    asset("text/css; charset=utf-8", STYLE_CSS)
}

/// `GET /favicon.ico`: a 32×32 icon (browsers ask for it on every first load).
pub async fn favicon() -> Response {
    (
        [
            (header::CONTENT_TYPE, "image/x-icon"),
            (header::CACHE_CONTROL, "max-age=86400"),
        ],
        FAVICON,
    )
        .into_response()
}

/// Any method but GET and HEAD on the page's files and `/healthz`.
pub async fn not_allowed() -> crate::http::error::ApiError {
    crate::http::error::ApiError::MethodNotAllowed { allow: "GET, HEAD" }
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

/// `GET /healthz`: 200 while the media plane runs, with the session count and what the start-up
/// self-test found on each media path; as JSON when the client accepts only that (the page).
pub async fn healthz(
    axum::extract::State(state): axum::extract::State<super::AppState>,
    headers: axum::http::HeaderMap,
) -> Response {
    let stats = state.media.stats().borrow();
    let self_test = state.self_test.borrow().clone();
    let status = if stats.running {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let wants_json = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if wants_json {
        let body = Health {
            status: if stats.running {
                "ok"
            } else {
                "media plane stopped"
            },
            sessions: stats.sessions,
            self_test,
        };
        return (status, axum::Json(body)).into_response();
    }
    if !stats.running {
        return (status, "media plane stopped\n").into_response();
    }
    let mut text = format!("ok sessions={}\n", stats.sessions);
    match &self_test {
        SelfTest::Disabled => {}
        SelfTest::Running => text.push_str("media self-test running\n"),
        SelfTest::Done(reports) => {
            for line in selftest::summary(reports) {
                text.push_str(&format!("media {line}\n"));
            }
        }
    }
    (status, text).into_response()
}

/// `/healthz` as JSON.
#[derive(serde::Serialize)]
struct Health {
    status: &'static str,
    sessions: usize,
    self_test: SelfTest,
}
