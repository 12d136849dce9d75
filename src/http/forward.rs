//! Cluster mode: a request on a session resource that another node holds (its id says which,
//! [`ResourceId::node_tag`]) is forwarded there and its answer relayed, so a client that sent
//! its PATCH or DELETE to the load balancer rather than to the absolute `Location` is never lost.
//! Only the headers the resource reads and answers with cross, and a hop header: a forwarded
//! request is answered where it lands, never forwarded again (a node restarted under a new tag,
//! or a `--node-url` that points at the load balancer, would otherwise send it round in a loop).

use axum::http::{header, HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};

use super::AppState;
use crate::http::error::ApiError;
use crate::session::ResourceId;
use crate::streams::Located;

/// Marks a request one node forwarded to another (its value: a MAC under the cluster secret,
/// `token::mint_forward`).
const FORWARDED: &str = "x-whip-echo-forwarded";

/// Whether the request is one that another node of this cluster forwarded for `resource` (its
/// mark verifies): that node counted it against its client's request rate already.
pub(super) fn from_a_node(state: &AppState, resource: &ResourceId, headers: &HeaderMap) -> bool {
    let Some(mark) = headers.get(FORWARDED) else {
        return false;
    };
    (mark.to_str()).is_ok_and(|mark| state.streams.forwarded_by_a_node(resource, mark))
}

/// Request headers a session resource reads.
const REQUEST_HEADERS: [header::HeaderName; 3] =
    [header::IF_MATCH, header::CONTENT_TYPE, header::ACCEPT];
/// Response headers it answers with.
const RESPONSE_HEADERS: [header::HeaderName; 7] = [
    header::CONTENT_TYPE,
    header::CACHE_CONTROL,
    header::VARY,
    header::ETAG,
    header::ALLOW,
    header::RETRY_AFTER,
    header::WWW_AUTHENTICATE,
];

/// The other node's answer to this request when `resource` is another node's (`Streams::resource`
/// decides); `None` when it is this node's. `sub` follows the resource's path (`/layer`).
pub(super) async fn elsewhere(
    state: &AppState,
    method: Method,
    resource: &ResourceId,
    sub: &str,
    headers: &HeaderMap,
    body: Option<String>,
) -> Option<Response> {
    let forwarded = headers.contains_key(FORWARDED);
    let (url, mark, http) = match state.streams.resource(resource, sub, forwarded).await {
        Ok(Located::Here) => return None,
        Ok(Located::There { url, mark, http }) => (url, mark, http),
        Ok(Located::Gone) => return Some(ApiError::NotFound("no such resource").into_response()),
        Err(e) => return Some(ApiError::from(e).into_response()),
    };
    let mut request = http.request(method, &url).header(FORWARDED, mark);
    for name in &REQUEST_HEADERS {
        for value in headers.get_all(name) {
            request = request.header(name, value);
        }
    }
    if let Some(body) = body {
        request = request.body(body);
    }
    let response = match request.send().await {
        Ok(response) => response,
        // BadGateway is logged (once a second at most) as it is answered.
        Err(e) => {
            tracing::debug!(%url, error = %e, "cluster: forwarding to the resource's node failed");
            return Some(ApiError::BadGateway.into_response());
        }
    };
    let status =
        StatusCode::from_u16(response.status().as_u16()).unwrap_or(StatusCode::BAD_GATEWAY);
    let mut relayed = HeaderMap::new();
    for name in &RESPONSE_HEADERS {
        for value in response.headers().get_all(name) {
            relayed.append(name, value.clone());
        }
    }
    let body = response.bytes().await.unwrap_or_default();
    Some((status, relayed, body).into_response())
}
