//! The session resource (`/resource/{id}`) that a 201 `Location` names.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;

use super::{cors, AppState};
use crate::error::ApiError;
use crate::session::ResourceId;

/// Methods of a session resource. PATCH (trickle ICE, ICE restart) is not offered yet.
pub const RESOURCE_METHODS: &str = "OPTIONS, GET, HEAD, DELETE";

/// `DELETE /resource/{id}`: RFC 9725 §4.4: 200 and the session is torn down.
pub async fn delete(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let resource = parse(&id)?;
    state.media.delete(resource).await?;
    Ok(StatusCode::OK)
}

/// `GET /resource/{id}`: 2xx without content while the resource exists.
pub async fn get(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let resource = parse(&id)?;
    if state.media.exists(resource).await? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::NotFound("no such resource"))
    }
}

/// `OPTIONS` on a resource.
pub async fn options() -> Response {
    cors::options(RESOURCE_METHODS)
}

/// Any other method, PATCH included until trickle ICE is implemented (RFC 9725 §4.3.1 lets a
/// server without trickle support answer 405).
pub async fn not_allowed() -> ApiError {
    ApiError::MethodNotAllowed {
        allow: RESOURCE_METHODS,
    }
}

fn parse(id: &str) -> Result<ResourceId, ApiError> {
    ResourceId::parse(id).ok_or(ApiError::NotFound("no such resource"))
}
