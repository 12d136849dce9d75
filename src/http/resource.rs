//! The session resource (`/resource/{id}`) that a 201 `Location` names.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;

use super::{cors, AppState};
use crate::error::ApiError;
use crate::media::ResourceState;
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

/// `GET /resource/{id}`: 204 while the session lives; 410 with the reason once it has ended by
/// itself (for the grace period in which DELETE still answers 200), so a client that sees its
/// connection close can learn why; 404 otherwise.
pub async fn get(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let resource = parse(&id)?;
    match state.media.exists(resource).await? {
        ResourceState::Live => Ok(StatusCode::NO_CONTENT),
        ResourceState::Ended(reason) => Err(ApiError::Ended(reason.describe())),
        ResourceState::Unknown => Err(ApiError::NotFound("no such resource")),
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
