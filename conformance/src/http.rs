//! The checker's HTTP client: every request of every check goes through `Http::send`, which adds
//! the bearer token when configured and follows 307/308 redirects itself (RFC 9725 §4.5: clients
//! SHALL support redirections; 301/302 MUST NOT be used for POST), recording what it saw.

use std::time::{Duration, Instant};

use bytes::Bytes;
use reqwest::header::{HeaderMap, HeaderValue};
use reqwest::{Method, Url};

/// Redirects followed at most.
const MAX_REDIRECTS: usize = 5;

/// Which Authorization header a request carries.
#[derive(Debug, Clone, Copy)]
pub enum Auth<'a> {
    /// The configured token, if any.
    Configured,
    /// None at all.
    Without,
    /// This token instead.
    Token(&'a str),
}

/// One request and its final response.
#[derive(Debug, Clone)]
pub struct Exchange {
    /// Final status.
    pub status: u16,
    /// Final response headers.
    pub headers: HeaderMap,
    /// Final response body.
    pub body: Bytes,
    /// The URL that produced the final response (the base for a relative `Location`).
    pub url: Url,
    /// Statuses of the redirects followed or refused on the way.
    pub redirects: Vec<u16>,
    /// Time from sending to the final response.
    pub elapsed: Duration,
}

impl Exchange {
    /// A header as text.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// All values of a header.
    pub fn header_all(&self, name: &str) -> Vec<String> {
        self.headers
            .get_all(name)
            .iter()
            .filter_map(|v| v.to_str().ok().map(str::to_owned))
            .collect()
    }

    /// The media type of the response, without parameters, lowercased.
    pub fn media_type(&self) -> Option<String> {
        let ct = self.header("content-type")?;
        Some(ct.split(';').next()?.trim().to_ascii_lowercase())
    }

    /// The body as text.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// `Location` resolved against the request URL (RFC 9110 §10.2.2).
    pub fn location(&self) -> Option<Url> {
        self.url.join(self.header("location")?).ok()
    }

    /// Short evidence: status and, when present, a header.
    pub fn evidence(&self, header: &str) -> String {
        match self.header(header) {
            Some(v) => format!("{} {header}: {v}", self.status),
            None => format!("{} (no {header})", self.status),
        }
    }
}

/// Where a 307 or 308 sends a request next, with the same method and body (RFC 9725 §4.5), while
/// fewer than `MAX_REDIRECTS` have been followed; `None` for any other answer.
pub(crate) fn redirect_target(
    status: u16,
    headers: &HeaderMap,
    url: &Url,
    followed: usize,
) -> Option<Url> {
    if !matches!(status, 307 | 308) || followed >= MAX_REDIRECTS {
        return None;
    }
    url.join(headers.get("location")?.to_str().ok()?).ok()
}

/// The client.
#[derive(Debug, Clone)]
pub struct Http {
    client: reqwest::Client,
    token: Option<String>,
}

impl Http {
    /// A client that sends `token` as a bearer token when configured.
    pub fn new(token: Option<String>) -> Self {
        let client = reqwest::Client::builder()
            .user_agent(concat!("whip-conformance/", env!("CARGO_PKG_VERSION")))
            .redirect(reqwest::redirect::Policy::none())
            .timeout(Duration::from_secs(30))
            .build()
            .expect("HTTP client");
        Http { client, token }
    }

    /// Sends a request, following 307/308 with the same method and body.
    pub async fn send(
        &self,
        method: Method,
        url: &Url,
        headers: &[(&str, &str)],
        body: Bytes,
        auth: Auth<'_>,
    ) -> Result<Exchange, String> {
        let started = Instant::now();
        let mut url = url.clone();
        let mut redirects = Vec::new();
        loop {
            let mut request = self.client.request(method.clone(), url.clone());
            for (name, value) in headers {
                request = request.header(
                    *name,
                    HeaderValue::from_str(value).map_err(|e| e.to_string())?,
                );
            }
            let token = match auth {
                Auth::Configured => self.token.as_deref(),
                Auth::Without => None,
                Auth::Token(t) => Some(t),
            };
            if let Some(token) = token {
                request = request.bearer_auth(token);
            }
            if !body.is_empty() {
                request = request.body(body.clone());
            }
            let response = request
                .send()
                .await
                .map_err(|e| format!("{method} {url}: {e}"))?;
            let status = response.status().as_u16();
            if let Some(next) = redirect_target(status, response.headers(), &url, redirects.len()) {
                redirects.push(status);
                url = next;
                continue;
            }
            if matches!(status, 301..=303) {
                redirects.push(status);
            }
            let headers = response.headers().clone();
            let body = response.bytes().await.map_err(|e| e.to_string())?;
            return Ok(Exchange {
                status,
                headers,
                body,
                url,
                redirects,
                elapsed: started.elapsed(),
            });
        }
    }

    /// POSTs `sdp` with `content_type` (none when `None`).
    pub async fn post(
        &self,
        url: &Url,
        content_type: Option<&str>,
        body: impl Into<Bytes>,
    ) -> Result<Exchange, String> {
        let headers: Vec<(&str, &str)> = content_type
            .map(|ct| ("content-type", ct))
            .into_iter()
            .collect();
        self.send(Method::POST, url, &headers, body.into(), Auth::Configured)
            .await
    }

    /// POSTs a body the server may refuse (413) and close on before reading it all: the
    /// response is read while the body is written, so the refusal is seen rather than the broken
    /// pipe that follows it (RFC 9110 §15.5.14).
    pub async fn post_unread(
        &self,
        url: &Url,
        content_type: Option<&str>,
        body: Bytes,
    ) -> Result<Exchange, String> {
        let bearer = self.token.as_ref().map(|t| format!("Bearer {t}"));
        let mut headers: Vec<(&str, &str)> = Vec::new();
        if let Some(ct) = content_type {
            headers.push(("content-type", ct));
        }
        if let Some(bearer) = &bearer {
            headers.push(("authorization", bearer));
        }
        crate::oversized::post(url, &headers, body).await
    }

    /// A request without body.
    pub async fn call(&self, method: Method, url: &Url) -> Result<Exchange, String> {
        self.send(method, url, &[], Bytes::new(), Auth::Configured)
            .await
    }
}
