//! whip-conformance: checks a WHIP (RFC 9725) / WHEP (draft-ietf-wish-whep-03) server against the
//! specifications, over the wire only.
//!
//! | module     | its one job |
//! |------------|-------------|
//! | [`report`] | check results, text and JSON output |
//! | [`http`]   | the HTTP client: bearer token, 307/308 redirects, evidence |
//! | [`sdp`]    | reading answers: sections, attributes, directions |
//! | [`peer`]   | a real WebRTC peer (webrtc-rs `rtc`) for the media checks |
//! | `checks`   | the checks, one file per area: WHIP, WHEP, PATCH, auth, media, hostile inputs |
//!
//! It never uses a server's own types: what it knows of a server is what the server sends.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod checks;
pub mod client;
pub mod http;
mod oversized;
pub mod peer;
pub mod report;
pub mod sdp;

use std::net::IpAddr;

use reqwest::Url;

pub use report::{CheckResult, Level, Outcome, Report};

/// The server under test.
#[derive(Debug, Clone)]
pub struct Target {
    /// Base URL, e.g. `http://127.0.0.1:8080`.
    pub base_url: Url,
    /// WHIP endpoint path template with `{stream}`, e.g. `/whip/{stream}` (mediamtx: `/{stream}/whip`).
    pub whip_path: String,
    /// WHEP endpoint path template.
    pub whep_path: String,
    /// Path template of a single-connection echo extension (whip-echo's `/echo/{stream}`), if any.
    pub echo_path: Option<String>,
    /// Bearer token to send; also enables the authentication checks.
    pub token: Option<String>,
    /// Local address for the media peers; by default the address that routes to the server.
    pub local_ip: Option<IpAddr>,
    /// Skip the checks that need WebRTC media.
    pub skip_media: bool,
}

impl Target {
    /// A target with the usual `/whip/{stream}` and `/whep/{stream}` paths.
    pub fn new(base_url: Url) -> Self {
        Target {
            base_url,
            whip_path: "/whip/{stream}".into(),
            whep_path: "/whep/{stream}".into(),
            echo_path: None,
            token: None,
            local_ip: None,
            skip_media: false,
        }
    }

    /// The endpoint URL of `template` for `stream`.
    pub fn endpoint(&self, template: &str, stream: &str) -> Result<Url, String> {
        self.base_url
            .join(&template.replace("{stream}", stream))
            .map_err(|e| format!("bad path template {template:?}: {e}"))
    }
}

/// Runs every check against `target`.
pub async fn run_all(target: &Target) -> Report {
    checks::run_all(target).await
}
