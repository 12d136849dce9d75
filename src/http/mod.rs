//! The HTTP plane: translates requests into media-plane calls and results into responses. It never
//! touches peer connections, maps or locks.

mod assets;
pub mod cors;
mod endpoints;
pub mod error;
mod forward;
mod layer;
mod ops;
pub mod port;
mod report;
mod resource;
pub mod sdp;
mod serve;
mod sessions;
pub mod tls;

pub(crate) use resource::if_match;
pub use serve::{serve, Limits, PeerAddr};

use std::sync::Arc;

use axum::routing::{get, MethodRouter};
use axum::Router;
use tower_http::trace::TraceLayer;

use crate::http::error::ApiError;
use crate::media::MediaHandle;

/// Shared, read-only state of every handler.
#[derive(Debug, Clone)]
pub struct AppState {
    /// The media plane.
    pub media: MediaHandle,
    /// The domain service every POST and resource request goes through (`streams.rs`).
    pub streams: crate::streams::Streams,
    /// Allowed origins.
    pub cors: Arc<cors::CorsPolicy>,
    /// What the start-up self-test found.
    pub self_test: tokio::sync::watch::Receiver<crate::selftest::SelfTest>,
    /// Who may publish and play; `None`: anyone.
    pub auth: Option<Arc<crate::auth::Auth>>,
    /// STUN/TURN servers for the `Link` headers; `None`: none announced.
    pub ice_servers: Option<Arc<crate::ice_servers::IceServers>>,
    /// The header a reverse proxy names the client's IP in (`--client-ip-header`); `None`: the
    /// TCP peer's address is the client's.
    pub client_ip_header: Option<axum::http::HeaderName>,
    /// The longest a request may take, body included (then 408).
    pub request_timeout: std::time::Duration,
    /// What `/metrics` reports.
    pub metrics: crate::ops::metrics::Metrics,
    /// The bearer token of `GET /api/streams` (`--admin-token`).
    pub admin_token: Option<Arc<str>>,
    /// Cluster mode's handle; `None` on a single node.
    pub cluster: Option<crate::cluster::Cluster>,
    /// Cancelled when the server begins to stop (`/readyz` then answers 503).
    pub stopping: tokio_util::sync::CancellationToken,
    /// POSTs and PATCHes per client (`--request-rate-per-ip`); `None`: no limit.
    pub request_rate: Option<Arc<crate::rate::PerClientRate>>,
}

impl AppState {
    /// Counts a refusal by a session cap or a rate (`whip_echo_sessions_rejected_total`).
    fn refused(&self, error: &error::ApiError) {
        if let Some(why) = error.rejection() {
            self.metrics.rejected(why);
        }
    }

    /// [`AppState::refused`], handing the error back.
    fn refused_as(&self, error: error::ApiError) -> error::ApiError {
        self.refused(&error);
        error
    }

    /// `--request-rate-per-ip`: one more POST or PATCH of this request's client, or 429 with
    /// the wait. A request with no known client (the router's own tests) is not limited.
    fn rate_limit(
        &self,
        headers: &axum::http::HeaderMap,
        peer: Option<axum::Extension<PeerAddr>>,
    ) -> Result<(), ApiError> {
        let (Some(rate), Some(client)) = (&self.request_rate, client_ip(self, headers, peer))
        else {
            return Ok(());
        };
        rate.check(client, std::time::Instant::now())
            .map_err(|wait| ApiError::RateLimited(wait.as_secs_f64().ceil() as u64))
    }
}

/// The bearer token of a request's `Authorization` header, if it has one (RFC 6750 §2.1).
fn bearer(headers: &axum::http::HeaderMap) -> Option<&str> {
    headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(crate::auth::bearer)
}

/// The client's IP: from `--client-ip-header` when configured (its last entry, the one the
/// nearest proxy wrote), else the TCP peer's. `None` when neither is known (a request that did
/// not come over a connection, as in the router's own tests): not counted per IP.
fn client_ip(
    state: &AppState,
    headers: &axum::http::HeaderMap,
    peer: Option<axum::Extension<PeerAddr>>,
) -> Option<std::net::IpAddr> {
    let peer = peer.map(|axum::Extension(PeerAddr(addr))| addr);
    client_ip_from(state.client_ip_header.as_ref(), headers, peer)
}

/// [`client_ip`] from its parts: the configured header's name, the request's headers and the
/// TCP peer.
pub(crate) fn client_ip_from(
    header: Option<&axum::http::HeaderName>,
    headers: &axum::http::HeaderMap,
    peer: Option<std::net::SocketAddr>,
) -> Option<std::net::IpAddr> {
    if let Some(name) = header {
        let from_proxy = headers
            .get_all(name)
            .iter()
            .next_back()
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.rsplit(',').next())
            .and_then(|entry| parse_client_ip(entry.trim()));
        if from_proxy.is_some() {
            return from_proxy;
        }
    }
    peer.map(|addr| addr.ip())
}

/// A proxy's client entry: an IP, an `IP:port`, or a bracketed IPv6 address with or without a
/// port (`[2001:db8::1]`, `[2001:db8::1]:443`), as proxies write them.
fn parse_client_ip(entry: &str) -> Option<std::net::IpAddr> {
    entry
        .parse()
        .ok()
        .or_else(|| entry.parse::<std::net::SocketAddr>().ok().map(|a| a.ip()))
        .or_else(|| entry.strip_prefix('[')?.strip_suffix(']')?.parse().ok())
}

/// A request, its body included, that takes longer than the request timeout is answered 408
/// (RFC 9110 §15.5.9) and dropped.
async fn request_timeout(
    axum::extract::State(state): axum::extract::State<AppState>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    match tokio::time::timeout(state.request_timeout, next.run(request)).await {
        Ok(response) => response,
        Err(_) => ApiError::RequestTimeout.into_response(),
    }
}

/// Every response's content is what its type says (`X-Content-Type-Options: nosniff`).
async fn no_sniff(
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    let mut response = next.run(request).await;
    response.headers_mut().insert(
        axum::http::header::X_CONTENT_TYPE_OPTIONS,
        axum::http::HeaderValue::from_static("nosniff"),
    );
    response
}

/// The one list of routes and layers.
pub fn router(state: AppState) -> Router {
    // GET (and HEAD) only; any other method gets a 405 with its reason like every error.
    let page = |get: MethodRouter<AppState>| get.fallback(assets::not_allowed);
    let api = api_routes(&state);
    Router::new()
        .route("/", page(get(assets::index)))
        .route("/app.js", page(get(assets::app_js)))
        .route("/whip-client.js", page(get(assets::whip_client_js)))
        .route("/latency.js", page(get(assets::latency_js)))
        .route("/live.js", page(get(assets::live_js)))
        .route("/diagnose.js", page(get(assets::diagnose_js)))
        .route("/report.js", page(get(assets::report_js)))
        .route("/style.css", page(get(assets::style_css)))
        .route("/favicon.ico", page(get(assets::favicon)))
        .route("/healthz", page(get(assets::healthz)))
        .route("/readyz", page(get(ops::readyz)))
        .route("/metrics", page(get(ops::metrics)))
        .route("/api/streams", page(get(ops::streams)))
        .route("/api/sessions", page(get(sessions::list)))
        .route(
            "/api/sessions/{id}",
            axum::routing::delete(sessions::kick).fallback(sessions::not_allowed),
        )
        .route("/api/sessions/{id}/report", page(get(sessions::report)))
        .merge(api)
        .fallback(ops::no_route)
        .layer(axum::middleware::from_fn(no_sniff))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            request_timeout,
        ))
        // Outside the timeout: a 408 is counted too. A route layer, so that the matched route
        // is known; the fallback counts its own 404s.
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            ops::count_responses,
        ))
        // The trace layer would log every 5xx at ERROR; ApiError logs each refusal once, at
        // the level its status deserves.
        .layer(TraceLayer::new_for_http().on_failure(()))
        .with_state(state)
}

/// The WHIP, WHEP and echo endpoints and the session resources, with CORS.
fn api_routes(state: &AppState) -> Router<AppState> {
    let endpoint = |post: MethodRouter<AppState>| {
        post.options(endpoints::options)
            .get(endpoints::get)
            .fallback(endpoints::not_allowed)
    };
    // CORS on the WHIP, WHEP and echo endpoints and their resources only: the page, the health
    // checks, /metrics and /api/streams are for this origin and for operators' tools.
    Router::new()
        .route(
            "/whip/{stream}",
            endpoint(axum::routing::post(endpoints::post_whip)),
        )
        .route(
            "/whep/{stream}",
            endpoint(axum::routing::post(endpoints::post_whep)).head(endpoints::head_whep),
        )
        .route(
            "/echo/{stream}",
            endpoint(axum::routing::post(endpoints::post_echo)),
        )
        .route(
            "/resource/{id}",
            axum::routing::delete(resource::delete)
                .patch(resource::patch)
                .get(resource::get)
                .options(resource::options)
                .fallback(resource::not_allowed),
        )
        .route(
            "/resource/{id}/layer",
            axum::routing::post(layer::post)
                .get(layer::get)
                .delete(layer::delete)
                .options(layer::options)
                .fallback(layer::not_allowed),
        )
        .route(
            "/resource/{id}/report",
            get(report::get)
                .options(report::options)
                .fallback(report::not_allowed),
        )
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            cors::layer,
        ))
}

/// The session resource a request names (`/resource/{id}` and below it), once its client is
/// within the request rate, before its body is read. A request another node forwarded was
/// counted there, against its client.
fn admit(
    state: &AppState,
    id: &str,
    headers: &axum::http::HeaderMap,
    peer: Option<axum::Extension<PeerAddr>>,
) -> Result<crate::session::ResourceId, error::ApiError> {
    let resource = crate::session::ResourceId::parse(id)
        .ok_or(error::ApiError::NotFound("no such resource"))?;
    if !forward::from_a_node(state, &resource, headers) {
        state
            .rate_limit(headers, peer)
            .map_err(|e| state.refused_as(e))?;
    }
    Ok(resource)
}
