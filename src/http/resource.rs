//! The session resource (`/resource/{id}`) that a 201 `Location` names.

use axum::extract::{FromRequest, Path, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Extension;

use super::endpoints::header_value;
use super::forward;
use super::sdp::{SdpFragment, TRICKLE_ICE_SDPFRAG};
use super::{cors, AppState, PeerAddr};
use crate::http::error::ApiError;
use crate::media::{IcePatch, IfMatch, Patched, ResourceState};
use crate::sdpfrag;
use crate::session::ResourceId;

/// Methods of a session resource.
pub const RESOURCE_METHODS: &str = "OPTIONS, GET, HEAD, PATCH, DELETE";

/// `PATCH /resource/{id}`: RFC 9725 §4.3. Trickled candidates: 204 without an ETag (§4.3.2); new
/// ICE credentials: an ICE restart, 200 with the server's fragment and the new ETag (§4.3.3).
/// `If-Match` is checked against the current ICE session by the media plane (§4.3.1). DELETE,
/// unlike PATCH, ignores `If-Match`: ending a session never depends on its ICE generation.
pub async fn patch(
    State(state): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
    peer: Option<Extension<PeerAddr>>,
    body: Request,
) -> Result<Response, ApiError> {
    let refused = |e: ApiError| {
        state.refused(&e);
        e
    };
    let resource = super::admit(&state, &id, &headers, peer)?;
    let SdpFragment(text) = SdpFragment::from_request(body, &()).await?;
    let forwarded = forward::elsewhere(
        &state,
        Method::PATCH,
        &resource,
        "",
        &headers,
        Some(text.clone()),
    );
    if let Some(response) = forwarded.await {
        return Ok(response);
    }
    let frag = sdpfrag::parse(&text).map_err(|e| ApiError::BadFragment(e.to_string()))?;
    let patch = IcePatch {
        frag,
        if_match: if_match(&headers),
    };
    Ok(
        match state
            .media
            .patch(resource, patch)
            .await
            .map_err(ApiError::from)
            .map_err(refused)?
        {
            Patched::Trickled => StatusCode::NO_CONTENT.into_response(),
            Patched::Restarted { frag, etag } => {
                let mut headers = HeaderMap::new();
                headers.insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static(TRICKLE_ICE_SDPFRAG),
                );
                headers.insert(header::ETAG, header_value(etag)?);
                (StatusCode::OK, headers, frag).into_response()
            }
        },
    )
}

/// The `If-Match` fields of a request (RFC 9110 §13.1.1): `*`, or the listed entity tags as
/// sent. A value that is not text (or empty) is a precondition nothing satisfies. Without
/// `If-Match`, an `ETag` request field stands in for it: Eyevinn's `@eyevinn/whip-web-client`
/// (1.1.7) sends the 201's tag there on every trickle PATCH.
pub(crate) fn if_match(headers: &HeaderMap) -> IfMatch {
    let mut values: Vec<&str> = headers
        .get_all(header::IF_MATCH)
        .iter()
        .map(|v| v.to_str().unwrap_or(""))
        .collect();
    if values.is_empty() {
        values = headers
            .get_all(header::ETAG)
            .iter()
            .map(|v| v.to_str().unwrap_or(""))
            .collect();
    }
    if values.is_empty() {
        return IfMatch::Absent;
    }
    let tags: Vec<String> = values
        .iter()
        .flat_map(|v| v.split(','))
        .map(|t| t.trim().to_owned())
        .filter(|t| !t.is_empty())
        .collect();
    if tags.iter().any(|t| t == "*") {
        IfMatch::Any
    } else {
        IfMatch::Tags(tags)
    }
}

/// `DELETE /resource/{id}`: RFC 9725 §4.4: 200 and the session is torn down.
pub async fn delete(
    State(state): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let resource = parse(&id)?;
    let forwarded = forward::elsewhere(&state, Method::DELETE, &resource, "", &headers, None);
    if let Some(response) = forwarded.await {
        return Ok(response);
    }
    state.media.delete(resource).await?;
    Ok(StatusCode::OK.into_response())
}

/// `GET /resource/{id}`: 204 while the session lives; 410 with the reason once it has ended by
/// itself (for the grace period in which DELETE still answers 200), so a client that sees its
/// connection close can learn why; 404 otherwise.
pub async fn get(
    State(state): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let resource = parse(&id)?;
    let forwarded = forward::elsewhere(&state, Method::GET, &resource, "", &headers, None);
    if let Some(response) = forwarded.await {
        return Ok(response);
    }
    match state.media.exists(resource).await? {
        ResourceState::Live => Ok(StatusCode::NO_CONTENT.into_response()),
        ResourceState::Ended(reason) => Err(ApiError::Ended(reason.describe())),
        ResourceState::Unknown => Err(ApiError::NotFound("no such resource")),
    }
}

/// `OPTIONS` on a resource.
pub async fn options() -> Response {
    cors::options(RESOURCE_METHODS, RESOURCE_METHODS)
}

/// Any other method.
pub async fn not_allowed() -> ApiError {
    ApiError::MethodNotAllowed {
        allow: RESOURCE_METHODS,
    }
}

fn parse(id: &str) -> Result<ResourceId, ApiError> {
    ResourceId::parse(id).ok_or(ApiError::NotFound("no such resource"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with(values: &[&'static str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in values {
            h.append(header::IF_MATCH, HeaderValue::from_static(v));
        }
        h
    }

    #[test]
    fn if_match_fields() {
        assert_eq!(if_match(&HeaderMap::new()), IfMatch::Absent);
        assert_eq!(if_match(&with(&["*"])), IfMatch::Any);
        assert_eq!(
            if_match(&with(&["\"a\", W/\"b\"", "\"c\""])),
            IfMatch::Tags(vec!["\"a\"".into(), "W/\"b\"".into(), "\"c\"".into()])
        );
        // Present but empty: a precondition that nothing satisfies.
        assert_eq!(if_match(&with(&[""])), IfMatch::Tags(vec![]));
        // Eyevinn's client names the tag in an `ETag` request field.
        let mut eyevinn = HeaderMap::new();
        eyevinn.insert(header::ETAG, HeaderValue::from_static("\"abc\""));
        assert_eq!(if_match(&eyevinn), IfMatch::Tags(vec!["\"abc\"".into()]));
        eyevinn.insert(header::IF_MATCH, HeaderValue::from_static("*"));
        assert_eq!(if_match(&eyevinn), IfMatch::Any, "If-Match wins");
    }
}
