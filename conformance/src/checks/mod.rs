//! The checks. Each area is one file; all share the context below.

mod answer;
mod auth;
mod hostile;
mod media;
mod patch;
mod whep;
mod whip;

use std::net::IpAddr;

use bytes::Bytes;
use reqwest::{Method, Url};

use crate::http::{Exchange, Http};
use crate::peer::{self, Mode};
use crate::report::{Level, Report};
use crate::Target;

/// RFC 9725 (WHIP), section `s`.
macro_rules! whip_ref {
    ($s:literal) => {
        concat!("RFC 9725 §", $s)
    };
}
/// draft-ietf-wish-whep-03 (WHEP), section `s`.
macro_rules! whep_ref {
    ($s:literal) => {
        concat!("draft-ietf-wish-whep-03 §", $s)
    };
}
pub(crate) use {whep_ref, whip_ref};

/// Which protocol an endpoint speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Proto {
    Whip,
    Whep,
}

/// State shared by the checks of one run.
pub struct Ctx<'a> {
    pub target: &'a Target,
    pub http: Http,
    pub report: Report,
    pub local_ip: IpAddr,
    run: String,
    /// Every redirect status seen on any request (RFC 9725 §4.5).
    pub redirects: Vec<u16>,
}

impl Ctx<'_> {
    /// A stream name unique to this run.
    pub fn stream(&self, name: &str) -> String {
        format!("conformance-{}-{name}", self.run)
    }

    /// The endpoint URL of `proto` for stream `name`.
    pub fn endpoint(&self, proto: Proto, name: &str) -> Result<Url, String> {
        let template = match proto {
            Proto::Whip => &self.target.whip_path,
            Proto::Whep => &self.target.whep_path,
        };
        self.target.endpoint(template, &self.stream(name))
    }

    /// POSTs `body` to `url` with `content_type`, noting redirects.
    pub async fn post(
        &mut self,
        url: &Url,
        content_type: Option<&str>,
        body: impl Into<Bytes>,
    ) -> Result<Exchange, String> {
        let exchange = self.http.post(url, content_type, body).await?;
        self.redirects.extend(&exchange.redirects);
        Ok(exchange)
    }

    /// POSTs a generated offer of `mode`.
    pub async fn post_offer(&mut self, url: &Url, mode: Mode) -> Result<Exchange, String> {
        self.post(url, Some("application/sdp"), peer::offer(mode))
            .await
    }

    /// A request without body.
    pub async fn call(&mut self, method: Method, url: &Url) -> Result<Exchange, String> {
        let exchange = self.http.call(method, url).await?;
        self.redirects.extend(&exchange.redirects);
        Ok(exchange)
    }

    /// DELETEs a session resource, ignoring the outcome (clean-up).
    pub async fn cleanup(&mut self, exchange: &Exchange) {
        if let Some(url) = exchange.location() {
            let _ = self.http.call(Method::DELETE, &url).await;
        }
    }
}

/// Whether a status is a client error.
pub fn is_4xx(status: u16) -> bool {
    (400..500).contains(&status)
}

/// The local address the system would use to reach the server (no packet is sent).
async fn local_ip_towards(url: &Url) -> IpAddr {
    let loopback = IpAddr::from([127, 0, 0, 1]);
    let Some(host) = url.host_str() else {
        return loopback;
    };
    let port = url.port_or_known_default().unwrap_or(80);
    let Ok(mut addrs) = tokio::net::lookup_host((host.trim_matches(['[', ']']), port)).await else {
        return loopback;
    };
    let Some(addr) = addrs.next() else {
        return loopback;
    };
    let bind = if addr.is_ipv4() {
        "0.0.0.0:0"
    } else {
        "[::]:0"
    };
    let Ok(socket) = tokio::net::UdpSocket::bind(bind).await else {
        return loopback;
    };
    if socket.connect(addr).await.is_err() {
        return loopback;
    }
    socket.local_addr().map_or(loopback, |a| a.ip())
}

pub async fn run_all(target: &Target) -> Report {
    let local_ip = match target.local_ip {
        Some(ip) => ip,
        None => local_ip_towards(&target.base_url).await,
    };
    let mut ctx = Ctx {
        target,
        http: crate::http::Http::new(target.token.clone()),
        report: Report::default(),
        local_ip,
        run: format!("{:08x}", rand::random::<u32>()),
        redirects: Vec::new(),
    };
    whip::run(&mut ctx).await;
    whep::run(&mut ctx).await;
    patch::run(&mut ctx).await;
    auth::run(&mut ctx).await;
    if target.skip_media {
        ctx.report
            .skip("media", "RFC 9725 §4.2", Level::Must, "--skip-media");
    } else {
        media::run(&mut ctx).await;
    }
    hostile::run(&mut ctx).await;
    redirect_check(&mut ctx);
    ctx.report
}

/// RFC 9725 §4.5 / WHEP §4.7: redirects for POST use 307 (or 308), never 301/302.
fn redirect_check(ctx: &mut Ctx<'_>) {
    const ID: &str = "rfc9725-4.5-redirects-are-307-or-308";
    let bad: Vec<u16> = ctx
        .redirects
        .iter()
        .copied()
        .filter(|s| matches!(s, 301..=303))
        .collect();
    if !bad.is_empty() {
        ctx.report.check(
            ID,
            whip_ref!("4.5"),
            Level::Must,
            false,
            format!("server redirected POST with {bad:?}"),
        );
    } else if ctx.redirects.is_empty() {
        ctx.report.skip(
            ID,
            whip_ref!("4.5"),
            Level::Must,
            "the server sent no redirect",
        );
    } else {
        let seen = format!("followed {:?}", ctx.redirects);
        ctx.report
            .check(ID, whip_ref!("4.5"), Level::Must, true, seen);
    }
}
