//! The offer extractor: the protocol preconditions of every POST, in one place, for WHIP, WHEP and
//! echo alike (the mediamtx habit: media type without parameters, size-capped body, UTF-8).

use axum::body::Body;
use axum::extract::{FromRequest, Request};
use axum::http::{header, HeaderMap};

use crate::error::ApiError;

/// Largest accepted offer (mediamtx uses the same cap). Real offers are a few KiB.
pub const MAX_OFFER_BYTES: usize = 128 * 1024;

/// The SDP media type (RFC 9725 §4.2, RFC 8866 §8.1).
pub const APPLICATION_SDP: &str = "application/sdp";

/// A request body that is an SDP offer of an acceptable size and encoding.
#[derive(Debug)]
pub struct SdpOffer(pub String);

impl<S: Send + Sync> FromRequest<S> for SdpOffer {
    type Rejection = ApiError;

    async fn from_request(req: Request, _state: &S) -> Result<Self, ApiError> {
        if !is_sdp(req.headers()) {
            return Err(ApiError::UnsupportedMediaType);
        }
        if content_length(req.headers()).is_some_and(|n| n > MAX_OFFER_BYTES as u64) {
            return Err(ApiError::PayloadTooLarge(MAX_OFFER_BYTES));
        }
        let bytes = axum::body::to_bytes(Body::new(req.into_body()), MAX_OFFER_BYTES)
            .await
            .map_err(|_| ApiError::PayloadTooLarge(MAX_OFFER_BYTES))?;
        let text = String::from_utf8(bytes.to_vec())
            .map_err(|_| ApiError::BadSdp("body is not UTF-8".into()))?;
        Ok(SdpOffer(text))
    }
}

/// Whether the Content-Type is `application/sdp`, ignoring parameters and case
/// (`application/SDP; charset=utf-8` is fine).
pub fn is_sdp(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|media_type| media_type.trim().eq_ignore_ascii_case(APPLICATION_SDP))
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
    }
}
