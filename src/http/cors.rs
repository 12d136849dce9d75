//! CORS for browser clients on other origins (RFC 9725 §4.1: WHIP endpoints must support OPTIONS
//! for CORS; the WHEP draft says the same). Written out rather than with tower-http's CorsLayer
//! because preflight answers must also carry `Accept-Post`/`Accept-Patch` and per-route methods
//! (clients such as Eyevinn's decide to trickle from the endpoint's list of methods).

use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::sdp::{APPLICATION_SDP, TRICKLE_ICE_SDPFRAG};
use super::AppState;

/// Response headers a script on another origin may read.
const EXPOSE: &str =
    "Location, ETag, Link, Accept-Post, Accept-Patch, Retry-After, WWW-Authenticate";
/// Request headers a script on another origin may send.
const ALLOW_HEADERS: &str = "Authorization, If-Match, Content-Type";

/// Which origins may call the API.
#[derive(Debug, Clone)]
pub struct CorsPolicy {
    any: bool,
    origins: Vec<String>,
}

impl CorsPolicy {
    /// From the configured list; `*` anywhere allows every origin.
    pub fn new(origins: &[String]) -> Self {
        CorsPolicy {
            any: origins.iter().any(|o| o.trim() == "*"),
            origins: origins.iter().map(|o| o.trim().to_owned()).collect(),
        }
    }

    /// The `Access-Control-Allow-Origin` value for a request with `origin`, if allowed.
    pub fn allow_origin(&self, origin: Option<&HeaderValue>) -> Option<HeaderValue> {
        if self.any {
            return Some(HeaderValue::from_static("*"));
        }
        let origin = origin?;
        let text = origin.to_str().ok()?;
        self.origins
            .iter()
            .any(|o| o == text)
            .then(|| origin.clone())
    }
}

/// Middleware: adds the CORS response headers to every response.
pub async fn layer(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let origin = request.headers().get(header::ORIGIN).cloned();
    let mut response = next.run(request).await;
    if let Some(allow) = state.cors.allow_origin(origin.as_ref()) {
        let headers = response.headers_mut();
        headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, allow);
        headers.insert(
            header::ACCESS_CONTROL_EXPOSE_HEADERS,
            HeaderValue::from_static(EXPOSE),
        );
        headers.append(header::VARY, HeaderValue::from_static("Origin"));
    }
    response
}

/// A 204 answer to OPTIONS: `allow` as `Allow`, `cors_methods` for CORS preflight, with
/// `Accept-Post: application/sdp` where POST is allowed (RFC 9725 §4.1), and `Accept-Patch` (RFC
/// 5789 §3.1) for the SDP fragments of trickle ICE and ICE restarts (RFC 9725 §4.3.1), which
/// every session of every endpoint takes.
pub fn options(allow: &'static str, cors_methods: &'static str) -> Response {
    let mut headers = HeaderMap::new();
    headers.insert(header::ALLOW, HeaderValue::from_static(allow));
    headers.insert(
        header::ACCESS_CONTROL_ALLOW_METHODS,
        HeaderValue::from_static(cors_methods),
    );
    headers.insert(
        header::ACCESS_CONTROL_ALLOW_HEADERS,
        HeaderValue::from_static(ALLOW_HEADERS),
    );
    headers.insert(
        header::ACCESS_CONTROL_MAX_AGE,
        HeaderValue::from_static("86400"),
    );
    if allow.contains("POST") {
        headers.insert("accept-post", HeaderValue::from_static(APPLICATION_SDP));
    }
    headers.insert(
        "accept-patch",
        HeaderValue::from_static(TRICKLE_ICE_SDPFRAG),
    );
    (StatusCode::NO_CONTENT, headers).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn any_origin() {
        let p = CorsPolicy::new(&["*".into()]);
        assert_eq!(p.allow_origin(None).unwrap(), "*");
    }

    #[test]
    fn listed_origins_only() {
        let p = CorsPolicy::new(&["https://a.example".into(), " https://b.example".into()]);
        let b = HeaderValue::from_static("https://b.example");
        assert_eq!(p.allow_origin(Some(&b)).unwrap(), b);
        let c = HeaderValue::from_static("https://c.example");
        assert!(p.allow_origin(Some(&c)).is_none());
        assert!(p.allow_origin(None).is_none());
    }
}
