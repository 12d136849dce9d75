//! A WHEP viewer's simulcast layer (`/resource/{id}/layer`), in the shape of the WHEP video layer
//! extension (draft-ietf-wish-whep-01 §4.6.2, -02 §4.9.2; now the "WHEP Core Extensions" draft,
//! relation `urn:ietf:params:whep:ext:core:layer`) as Broadcast Box and live777 serve it and
//! medooze's whip-whep-js calls it: `POST` a JSON object naming the layer by rid in `encodingId`
//! (`rid` in -02), `{}` or an empty `encodingId` for the default (the top layer), `200 OK`.
//! `DELETE` returns to the default too (whip-whep-js's `unselectLayer`), and `GET` reports the
//! layers, the one asked for and the one played (whip-echo's own; no draft defines a GET).
//! Spatial and temporal layer ids (SVC) are refused: whip-echo forwards whole simulcast layers.

use axum::extract::{Path, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Extension;

use super::forward;
use super::sdp::text_body;
use super::{cors, AppState, PeerAddr};
use crate::http::error::ApiError;
use crate::media::forward::sources::parse_rid;
use crate::media::LayerState;
use crate::session::ResourceId;

/// The link relation of a viewer's layer URL in its 201.
pub const LAYER_REL: &str = "urn:ietf:params:whep:ext:core:layer";
/// Methods of a layer URL.
const LAYER_METHODS: &str = "OPTIONS, GET, HEAD, POST, DELETE";
/// Largest layer request body: the request is a handful of short fields.
pub const MAX_LAYER_BODY: usize = 1024;
const APPLICATION_JSON: &str = "application/json";

/// The `Link` field value naming the layer URL of the session at `location`.
pub fn link(location: &str) -> String {
    format!("<{location}/layer>; rel=\"{LAYER_REL}\"")
}

/// A layer request's body (draft-ietf-wish-whep-01 §4.6.2 and -02 §4.9.2).
#[derive(Debug, Default, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct Selection {
    /// The m-line (whip-echo plays one video track: not read).
    #[allow(dead_code)]
    media_id: Option<serde_json::Value>,
    /// The rid (-01).
    encoding_id: Option<String>,
    /// The rid (-02).
    rid: Option<String>,
    spatial_layer_id: Option<serde_json::Value>,
    temporal_layer_id: Option<serde_json::Value>,
    max_spatial_layer_id: Option<serde_json::Value>,
    max_temporal_layer_id: Option<serde_json::Value>,
}

impl Selection {
    /// The layer asked for: a rid, or none for the default.
    fn layer(&self) -> Result<Option<String>, ApiError> {
        let svc = [
            &self.spatial_layer_id,
            &self.temporal_layer_id,
            &self.max_spatial_layer_id,
            &self.max_temporal_layer_id,
        ];
        if svc.iter().any(|v| v.as_ref().is_some_and(|v| !v.is_null())) {
            return Err(ApiError::BadLayer(
                "spatial and temporal layers are not selectable: whip-echo forwards simulcast \
                 layers, named by rid in encodingId"
                    .into(),
            ));
        }
        let (encoding_id, rid) = (self.encoding_id.as_deref(), self.rid.as_deref());
        if let (Some(a), Some(b)) = (encoding_id, rid) {
            if a != b {
                return Err(ApiError::BadLayer(
                    "encodingId and rid name two layers: give one".into(),
                ));
            }
        }
        match encoding_id.or(rid) {
            None | Some("") => Ok(None),
            Some(rid) => parse_rid(rid).map(Some).map_err(ApiError::BadLayer),
        }
    }
}

/// `POST`: chooses the layer named in the JSON body.
pub async fn post(
    State(state): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
    peer: Option<Extension<PeerAddr>>,
    body: Request,
) -> Result<Response, ApiError> {
    let resource = super::admit(&state, &id, &headers, peer)?;
    let parsed = async {
        let text = text_body(body, APPLICATION_JSON, MAX_LAYER_BODY)
            .await?
            .map_err(|_| ApiError::BadLayer("body is not UTF-8".into()))?;
        let selection: Selection = if text.trim().is_empty() {
            Selection::default()
        } else {
            serde_json::from_str(&text).map_err(|_| {
                ApiError::BadLayer(
                    "body is not a layer request: a JSON object such as {\"encodingId\": \"h\"}"
                        .into(),
                )
            })?
        };
        Ok::<_, ApiError>((selection.layer()?, text))
    };
    let (layer, text) = parsed.await.map_err(|e| state.refused_as(e))?;
    answer(
        &state,
        Method::POST,
        resource,
        &headers,
        Some(text),
        Some(layer),
    )
    .await
}

/// `DELETE`: back to the default layer (the top one).
pub async fn delete(
    State(state): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
    peer: Option<Extension<PeerAddr>>,
) -> Result<Response, ApiError> {
    let resource = super::admit(&state, &id, &headers, peer)?;
    answer(&state, Method::DELETE, resource, &headers, None, Some(None)).await
}

/// `GET` (and HEAD): the layers, the one asked for and the one played.
pub async fn get(
    State(state): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
    peer: Option<Extension<PeerAddr>>,
) -> Result<Response, ApiError> {
    let resource = super::admit(&state, &id, &headers, peer)?;
    answer(&state, Method::GET, resource, &headers, None, None).await
}

/// The session's node's answer: relayed from there in cluster mode, else the media plane's, as
/// JSON.
async fn answer(
    state: &AppState,
    method: Method,
    resource: ResourceId,
    headers: &HeaderMap,
    body: Option<String>,
    change: Option<Option<String>>,
) -> Result<Response, ApiError> {
    let forwarded = forward::elsewhere(state, method, &resource, "/layer", headers, body);
    if let Some(response) = forwarded.await {
        return Ok(response);
    }
    let layer: LayerState = state
        .media
        .layer(resource, change)
        .await
        .map_err(ApiError::from)
        .map_err(|e| state.refused_as(e))?;
    let json = serde_json::to_string(&layer)
        .map_err(|e| ApiError::Internal(format!("layer state: {e}")))?;
    Ok((
        StatusCode::OK,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static(APPLICATION_JSON),
        )],
        json,
    )
        .into_response())
}

/// `OPTIONS`: the methods, and that POST takes JSON.
pub async fn options() -> Response {
    let mut response = cors::options(LAYER_METHODS, LAYER_METHODS);
    let headers = response.headers_mut();
    headers.insert("accept-post", HeaderValue::from_static(APPLICATION_JSON));
    headers.remove("accept-patch");
    response
}

/// Any other method.
pub async fn not_allowed() -> ApiError {
    ApiError::MethodNotAllowed {
        allow: LAYER_METHODS,
    }
}

/// A viewer's `?layer=` at its POST: the rid, if given.
pub fn from_query(query: Option<&str>) -> Result<Option<String>, ApiError> {
    let Some(value) = query
        .unwrap_or_default()
        .split('&')
        .find_map(|pair| pair.strip_prefix("layer="))
    else {
        return Ok(None);
    };
    parse_rid(value).map(Some).map_err(ApiError::BadLayer)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn selection(json: &str) -> Result<Option<String>, ApiError> {
        serde_json::from_str::<Selection>(json).unwrap().layer()
    }

    #[test]
    fn layer_requests_as_clients_send_them() {
        // Broadcast Box's page, medooze's whip-whep-js (live777), draft -02.
        assert_eq!(
            selection(r#"{"mediaId":"1","encodingId":"h"}"#).unwrap(),
            Some("h".into())
        );
        assert_eq!(
            selection(r#"{"encodingId":"0"}"#).unwrap(),
            Some("0".into())
        );
        assert_eq!(
            selection(r#"{"mediaId":"0","rid":"q"}"#).unwrap(),
            Some("q".into())
        );
        // The default: an empty object, an empty encodingId, a null one.
        assert_eq!(selection("{}").unwrap(), None);
        assert_eq!(selection(r#"{"encodingId":""}"#).unwrap(), None);
        assert_eq!(selection(r#"{"encodingId":null}"#).unwrap(), None);
        assert!(matches!(
            selection(r#"{"spatialLayerId":1}"#),
            Err(ApiError::BadLayer(_))
        ));
        assert!(matches!(
            selection(r#"{"encodingId":"a b"}"#),
            Err(ApiError::BadLayer(_))
        ));
        assert!(matches!(
            selection(r#"{"encodingId":"h","rid":"l"}"#),
            Err(ApiError::BadLayer(_))
        ));
        assert_eq!(
            selection(r#"{"encodingId":"h","rid":"h"}"#).unwrap(),
            Some("h".into())
        );
        let long = format!(r#"{{"encodingId":"{}"}}"#, "x".repeat(33));
        assert!(matches!(selection(&long), Err(ApiError::BadLayer(_))));
    }

    #[test]
    fn the_layer_query_parameter() {
        assert_eq!(from_query(None).unwrap(), None);
        assert_eq!(from_query(Some("x=1")).unwrap(), None);
        assert_eq!(from_query(Some("x=1&layer=l")).unwrap(), Some("l".into()));
        assert!(from_query(Some("layer=")).is_err());
        assert!(from_query(Some("layer=%2e")).is_err());
    }
}
