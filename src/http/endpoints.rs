//! The WHIP (`/whip/{stream}`), WHEP (`/whep/{stream}`) and echo (`/echo/{stream}`, whip-echo's
//! extension) endpoints. Each POST is the same translation: offer in, session created by the media
//! plane, `201 Created` out.

use axum::extract::{FromRequest, MatchedPath, Path, RawQuery, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Extension;

use super::sdp::{SdpOffer, APPLICATION_SDP};
use super::{cors, AppState, PeerAddr};
use crate::http::error::ApiError;
use crate::media::Created;
use crate::session::{Role, StreamName};
use crate::streams::{Caller, Opened};

/// Methods of every endpoint.
pub const ENDPOINT_METHODS: &str = "OPTIONS, GET, HEAD, POST";
/// The endpoint's CORS methods: its own, and those of the sessions it creates. Clients (the
/// Eyevinn WHIP/WHEP library, whip-echo's page) decide to trickle when PATCH is listed here, as
/// mediamtx lists it.
const ENDPOINT_CORS_METHODS: &str = "OPTIONS, GET, HEAD, POST, PATCH, DELETE";

/// The request whose body is the offer: read only after the token is checked, so a client
/// without one neither learns what the server accepts nor makes it read up to
/// `MAX_OFFER_BYTES`.
type Offer = Request;

/// `POST /whip/{stream}`: RFC 9725 §4.2 ingest; the answer is `recvonly`.
pub async fn post_whip(
    state: State<AppState>,
    stream: Path<String>,
    h: HeaderMap,
    peer: Option<Extension<PeerAddr>>,
    offer: Offer,
) -> Response {
    create(state, Role::Publisher, stream, h, peer, offer, None).await
}

/// `POST /whep/{stream}`: WHEP draft §4.2 egress; the answer is `sendonly`. `?layer=RID` picks
/// a simulcast layer (`layer.rs`).
pub async fn post_whep(
    state: State<AppState>,
    stream: Path<String>,
    RawQuery(query): RawQuery,
    h: HeaderMap,
    peer: Option<Extension<PeerAddr>>,
    offer: Offer,
) -> Response {
    match super::layer::from_query(query.as_deref()) {
        Ok(layer) => create(state, Role::Viewer, stream, h, peer, offer, layer).await,
        Err(e) => {
            state.refused(&e);
            e.into_response()
        }
    }
}

/// `POST /echo/{stream}`: the single-connection echo extension; the answer is `sendrecv`.
pub async fn post_echo(
    state: State<AppState>,
    stream: Path<String>,
    h: HeaderMap,
    peer: Option<Extension<PeerAddr>>,
    offer: Offer,
) -> Response {
    create(state, Role::Echo, stream, h, peer, offer, None).await
}

/// A POST on an endpoint: the token decides first (a client without one neither learns what the
/// server accepts nor makes it read the offer), then the offer is read and the session opened
/// (`streams.rs`); the answer is a 201, or a 307 to the node that holds the stream.
async fn create(
    State(state): State<AppState>,
    role: Role,
    Path(stream): Path<String>,
    request_headers: HeaderMap,
    peer: Option<Extension<PeerAddr>>,
    offer: Offer,
    layer: Option<String>,
) -> Response {
    let result = async {
        if state.stopping.is_cancelled() {
            return Err(ApiError::ShuttingDown);
        }
        let stream = StreamName::parse(&stream)?;
        let bearer = super::bearer(&request_headers);
        let caller = state.streams.caller(bearer);
        if caller == Caller::Client {
            state.rate_limit(&request_headers, peer)?;
        }
        state.streams.admit(caller, role, &stream, bearer).await?;
        let SdpOffer(offer) = SdpOffer::from_request(offer, &()).await?;
        let client = super::client_ip(&state, &request_headers, peer);
        let user_agent = request_headers.get(header::USER_AGENT);
        let user_agent = user_agent.and_then(|v| v.to_str().ok());
        let opening = crate::report::Opening::new(user_agent, bearer.is_some(), &offer);
        let opened = state.streams.open(
            caller,
            role,
            stream.clone(),
            offer,
            client,
            (layer, opening),
        );
        match opened.await? {
            Opened::Here { created, location } => {
                created_response(&state, role, &stream, created, location)
            }
            Opened::Elsewhere { base, url } => redirect(&stream, &base, url),
        }
    }
    .await;
    if let Err(e) = &result {
        state.refused(e);
    }
    result.unwrap_or_else(IntoResponse::into_response)
}

/// The 201 of a session created here: the answer, its `Location` (RFC 9725 §4.2), `ETag`,
/// `Accept-Patch` (§4.3.1: trickle ICE and ICE restarts by PATCH), the layer `Link` of a viewer
/// and the ICE servers' `Link`s.
fn created_response(
    state: &AppState,
    role: Role,
    stream: &StreamName,
    created: Created,
    location: String,
) -> Result<Response, ApiError> {
    let mut headers = HeaderMap::new();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(APPLICATION_SDP),
    );
    if role == Role::Viewer {
        // The WHEP video layer extension (`layer.rs`).
        headers.append(header::LINK, header_value(super::layer::link(&location))?);
    }
    // The session's client report (`report.rs`).
    headers.append(header::LINK, header_value(super::report::link(&location))?);
    headers.insert(header::LOCATION, header_value(location)?);
    headers.insert(header::ETAG, header_value(created.etag)?);
    headers.insert(
        "accept-patch",
        HeaderValue::from_static(super::sdp::TRICKLE_ICE_SDPFRAG),
    );
    append_links(state, &mut headers, stream, false)?;
    Ok((StatusCode::CREATED, headers, created.answer).into_response())
}

/// Cluster mode: a publisher of a stream another live node holds is sent there (RFC 9725 §4.5:
/// 307, never 301/302, which may turn a POST into a GET).
fn redirect(stream: &StreamName, base: &str, url: String) -> Result<Response, ApiError> {
    let body = format!("stream {stream:?} is published on {base}: {url}\n");
    let headers = [
        (header::LOCATION, header_value(url)?),
        (
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        ),
    ];
    Ok((StatusCode::TEMPORARY_REDIRECT, headers, body).into_response())
}

/// Locations and ETags are built from hex digits only, so a value that is not a valid header is
/// a bug: a 500 that says so, not a made-up header.
pub(super) fn header_value(s: String) -> Result<HeaderValue, ApiError> {
    HeaderValue::try_from(s).map_err(|e| ApiError::Internal(format!("header value: {e}")))
}

/// RFC 9725 §4.6: one `Link: <url>; rel="ice-server"` field per configured STUN/TURN server,
/// TURN credentials minted for this response. One per field, not a comma-separated list: OBS
/// splits the value on commas and keeps the space, and then refuses the second server.
fn append_links(
    state: &AppState,
    headers: &mut HeaderMap,
    stream: &StreamName,
    on_options: bool,
) -> Result<(), ApiError> {
    if let Some(servers) = &state.ice_servers {
        let now = std::time::SystemTime::now();
        for link in servers.links(stream.as_str(), now, on_options) {
            headers.append(header::LINK, header_value(link)?);
        }
    }
    Ok(())
}

/// `OPTIONS` on an endpoint: 204 with `Accept-Post` and the CORS preflight headers; and the ICE
/// servers (so a client can configure its peer connection before it makes the offer), unless it
/// is a CORS preflight (RFC 9725 §4.6: any origin sends one, without a token) or its sender may
/// not POST there (the bearer token is checked as a POST's is).
pub async fn options(
    State(state): State<AppState>,
    path: MatchedPath,
    Path(stream): Path<String>,
    request_headers: HeaderMap,
) -> Response {
    let mut response = cors::options(ENDPOINT_METHODS, ENDPOINT_CORS_METHODS);
    // Fetch's CORS preflight: an OPTIONS with Origin and Access-Control-Request-Method.
    let preflight = request_headers.contains_key(header::ORIGIN)
        && request_headers.contains_key(header::ACCESS_CONTROL_REQUEST_METHOD);
    let Ok(stream) = StreamName::parse(&stream) else {
        return response;
    };
    if preflight || state.ice_servers.is_none() {
        return response;
    }
    let role = if path.as_str().starts_with("/whep/") {
        Role::Viewer
    } else {
        Role::Publisher
    };
    let bearer = super::bearer(&request_headers);
    if !state.streams.authorised(role, &stream, bearer) {
        return response;
    }
    if let Err(e) = append_links(&state, response.headers_mut(), &stream, true) {
        return e.into_response();
    }
    response
}

/// `GET` on an endpoint: RFC 9725 §4.1 and the WHEP draft require a 2xx without content.
pub async fn get() -> StatusCode {
    StatusCode::NO_CONTENT
}

/// `HEAD` on a WHEP endpoint: 200 with the media type it accepts (WHEP discovery).
pub async fn head_whep() -> Response {
    (StatusCode::OK, [(header::CONTENT_TYPE, APPLICATION_SDP)]).into_response()
}

/// Any other method on an endpoint.
pub async fn not_allowed() -> ApiError {
    ApiError::MethodNotAllowed {
        allow: ENDPOINT_METHODS,
    }
}
