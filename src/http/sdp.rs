//! The body extractors: the protocol preconditions of every POST (an SDP offer) and PATCH (an SDP
//! fragment), in one place, for WHIP, WHEP and echo alike (the mediamtx habit: media type without
//! parameters, size-capped body, UTF-8).

use axum::body::Body;
use axum::extract::{FromRequest, Request};
use axum::http::{header, HeaderMap};

use crate::http::error::ApiError;

/// Largest accepted offer (mediamtx uses the same cap). Real offers are a few KiB.
pub const MAX_OFFER_BYTES: usize = 128 * 1024;

/// The SDP media type (RFC 9725 §4.2, RFC 8866 §8.1).
pub use crate::session::APPLICATION_SDP;

/// The SDP fragment media type of trickle ICE and ICE restarts (RFC 8840 §9, RFC 9725 §4.3.1).
pub use crate::session::TRICKLE_ICE_SDPFRAG;

/// Largest accepted SDP fragment: a burst of trickled candidates is well under 4 KiB.
pub const MAX_FRAG_BYTES: usize = 16 * 1024;

/// A request body that is an SDP offer of an acceptable size and encoding.
#[derive(Debug)]
pub struct SdpOffer(pub String);

impl<S: Send + Sync> FromRequest<S> for SdpOffer {
    type Rejection = ApiError;

    async fn from_request(req: Request, _state: &S) -> Result<Self, ApiError> {
        let text = text_body(req, APPLICATION_SDP, MAX_OFFER_BYTES)
            .await?
            .map_err(|_| ApiError::BadSdp("body is not UTF-8".into()))?;
        Ok(SdpOffer(text))
    }
}

/// A PATCH body that is an SDP fragment of an acceptable size and encoding (not yet parsed).
#[derive(Debug)]
pub struct SdpFragment(pub String);

impl<S: Send + Sync> FromRequest<S> for SdpFragment {
    type Rejection = ApiError;

    async fn from_request(req: Request, _state: &S) -> Result<Self, ApiError> {
        let text = text_body(req, TRICKLE_ICE_SDPFRAG, MAX_FRAG_BYTES)
            .await?
            .map_err(|_| ApiError::BadFragment("body is not UTF-8".into()))?;
        Ok(SdpFragment(text))
    }
}

/// The body of a request whose Content-Type is `media_type`, at most `cap` bytes: the outer
/// error is the refusal (415, 413), the inner one says the body is not UTF-8.
pub(super) async fn text_body(
    req: Request,
    media_type: &'static str,
    cap: usize,
) -> Result<Result<String, std::string::FromUtf8Error>, ApiError> {
    if !has_media_type(req.headers(), media_type) {
        return Err(ApiError::UnsupportedMediaType(media_type));
    }
    if content_length(req.headers()).is_some_and(|n| n > cap as u64) {
        return Err(ApiError::PayloadTooLarge(cap));
    }
    let bytes = axum::body::to_bytes(Body::new(req.into_body()), cap)
        .await
        .map_err(|_| ApiError::PayloadTooLarge(cap))?;
    Ok(String::from_utf8(bytes.to_vec()))
}

/// Whether the Content-Type is `application/sdp`, ignoring parameters and case
/// (`application/SDP; charset=utf-8` is fine).
pub fn is_sdp(headers: &HeaderMap) -> bool {
    has_media_type(headers, APPLICATION_SDP)
}

/// Whether the Content-Type's media type is `media_type`, ignoring parameters and case.
fn has_media_type(headers: &HeaderMap, media_type: &str) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|given| given.trim().eq_ignore_ascii_case(media_type))
}

fn content_length(headers: &HeaderMap) -> Option<u64> {
    headers
        .get(header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn with_type(v: &'static str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::CONTENT_TYPE, HeaderValue::from_static(v));
        h
    }

    #[test]
    fn media_type_ignores_parameters_and_case() {
        assert!(is_sdp(&with_type("application/sdp")));
        assert!(is_sdp(&with_type("Application/SDP ; charset=utf-8")));
        assert!(!is_sdp(&with_type("application/sdpx")));
        assert!(!is_sdp(&with_type("text/plain")));
        assert!(!is_sdp(&HeaderMap::new()));
        let frag = with_type("application/trickle-ice-sdpfrag");
        assert!(has_media_type(&frag, TRICKLE_ICE_SDPFRAG));
        assert!(!is_sdp(&frag));
    }
}
