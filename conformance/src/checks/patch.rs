//! PATCH on a session (RFC 9725 §4.3: trickle ICE and ICE restarts, ETag/If-Match) and the
//! `Link: rel="ice-server"` headers of the 201 (§4.6). Skipped where the server does not offer them.

use reqwest::{Method, Url};

use super::whip::status_of;
use super::{is_4xx, whip_ref, Ctx, Proto};
use crate::http::{Auth, Exchange};
use crate::peer::{self, Mode};
use crate::report::Level;
use crate::sdp::Sdp;

const SDPFRAG: &str = "application/trickle-ice-sdpfrag";
const TRICKLE: &str = "rfc9725-4.3.2-trickle-patch-returns-204";
const WRONG_TYPE: &str = "rfc9725-4.3.1-patch-wrong-content-type-is-4xx";
const STALE: &str = "rfc9725-4.3.1-patch-stale-etag-is-412";
const MISSING: &str = "rfc9725-4.3.1-patch-missing-etag-is-428";
const RESTART: &str = "rfc9725-4.3.3-ice-restart-returns-200-sdpfrag";
const LINK: &str = "rfc9725-4.6-link-ice-server-syntax";
/// The PATCH checks and the sections they test, for reporting skips.
const PATCH_CHECKS: [(&str, &str); 5] = [
    (TRICKLE, whip_ref!("4.3.2")),
    (WRONG_TYPE, whip_ref!("4.3.1")),
    (STALE, whip_ref!("4.3.1")),
    (MISSING, whip_ref!("4.3.1")),
    (RESTART, whip_ref!("4.3.3")),
];

pub async fn run(ctx: &mut Ctx<'_>) {
    let Ok(url) = ctx.endpoint(Proto::Whip, "patch") else {
        return;
    };
    let offer = peer::offer(Mode::Send);
    let created = match ctx.post(&url, Some("application/sdp"), offer.clone()).await {
        Ok(e) if e.status == 201 => e,
        other => {
            let why = format!("no session to PATCH: POST gave {}", status_of(&other));
            for (id, reference) in PATCH_CHECKS {
                ctx.report.skip(id, reference, Level::Must, why.clone());
            }
            ctx.report.skip(LINK, whip_ref!("4.6"), Level::Must, why);
            return;
        }
    };
    link_headers(ctx, &created);
    if let Some(resource) = created.location() {
        patches(ctx, &resource, &created, &offer).await;
    }
    ctx.cleanup(&created).await;
}

async fn patches(ctx: &mut Ctx<'_>, resource: &Url, created: &Exchange, offer: &str) {
    let etag = created.header("etag").unwrap_or("\"none\"").to_owned();
    let (ufrag, pwd) = ice_credentials(offer);
    let frag = sdpfrag(&ufrag, &pwd);
    let trickle = patch(ctx, resource, SDPFRAG, &etag, &frag).await;
    let status = trickle.as_ref().map_or(0, |e| e.status);
    if matches!(status, 405 | 501) {
        let why = format!("the server does not support PATCH ({status})");
        for (id, reference) in PATCH_CHECKS {
            ctx.report.skip(id, reference, Level::Must, why.clone());
        }
        return;
    }
    if status == 422 {
        ctx.report.skip(
            TRICKLE,
            whip_ref!("4.3.2"),
            Level::Must,
            "trickle ICE not supported (422)",
        );
    } else {
        let ok = trickle
            .as_ref()
            .is_ok_and(|e| e.status == 204 && e.header("etag").is_none() && e.body.is_empty());
        ctx.report.check(
            TRICKLE,
            whip_ref!("4.3.2"),
            Level::Must,
            ok,
            status_of(&trickle),
        );
    }
    let wrong = patch(ctx, resource, "text/plain", &etag, &frag).await;
    let ok = wrong.as_ref().is_ok_and(|e| is_4xx(e.status));
    ctx.report.check(
        WRONG_TYPE,
        whip_ref!("4.3.1"),
        Level::Must,
        ok,
        status_of(&wrong),
    );
    let stale = patch(ctx, resource, SDPFRAG, "\"whip-conformance-stale\"", &frag).await;
    let ok = stale.as_ref().is_ok_and(|e| e.status == 412);
    ctx.report.check(
        STALE,
        whip_ref!("4.3.1"),
        Level::Must,
        ok,
        status_of(&stale),
    );
    // "Missing or outdated ETags in the PATCH requests ... will be answered ... with a 428
    // Precondition Required response for a missing entity-tag."
    let headers = [("content-type", SDPFRAG)];
    let missing = ctx
        .http
        .send(
            Method::PATCH,
            resource,
            &headers,
            frag.clone().into(),
            Auth::Configured,
        )
        .await;
    let ok = missing.as_ref().is_ok_and(|e| e.status == 428);
    ctx.report.check(
        MISSING,
        whip_ref!("4.3.1"),
        Level::Must,
        ok,
        status_of(&missing),
    );

    // RFC 9725 §4.3.3: new credentials with If-Match: * restart ICE.
    let restart = patch(
        ctx,
        resource,
        SDPFRAG,
        "*",
        &sdpfrag("cfrs", "whipconformancerestart01"),
    )
    .await;
    match restart {
        Ok(e) if e.status == 422 => ctx.report.skip(
            RESTART,
            whip_ref!("4.3.3"),
            Level::Must,
            "ICE restart not supported (422)",
        ),
        Ok(e) => {
            let new_etag = e.header("etag").is_some_and(|t| t != etag);
            let frag_type = e.media_type().as_deref() == Some(SDPFRAG);
            let new_ufrag = e.text().lines().any(|l| l.starts_with("a=ice-ufrag:"));
            let ok = e.status == 200 && new_etag && frag_type && new_ufrag;
            let ev = format!(
                "{}, new ETag {new_etag}, sdpfrag {frag_type}, ice-ufrag {new_ufrag}",
                e.status
            );
            ctx.report
                .check(RESTART, whip_ref!("4.3.3"), Level::Must, ok, ev);
        }
        Err(e) => ctx
            .report
            .check(RESTART, whip_ref!("4.3.3"), Level::Must, false, e),
    }
}

async fn patch(
    ctx: &mut Ctx<'_>,
    url: &Url,
    content_type: &str,
    if_match: &str,
    body: &str,
) -> Result<Exchange, String> {
    let headers = [("content-type", content_type), ("if-match", if_match)];
    ctx.http
        .send(
            Method::PATCH,
            url,
            &headers,
            body.to_owned().into(),
            Auth::Configured,
        )
        .await
}

fn ice_credentials(offer: &str) -> (String, String) {
    let sdp = Sdp::parse(offer).unwrap_or_default();
    let audio = sdp.audio().cloned().unwrap_or_default();
    let get = |k| sdp.effective(&audio, k).unwrap_or_default().to_owned();
    (get("ice-ufrag"), get("ice-pwd"))
}

/// An RFC 8840 §4.4 SDP fragment with one loopback host candidate.
fn sdpfrag(ufrag: &str, pwd: &str) -> String {
    format!(
        "a=ice-ufrag:{ufrag}\r\na=ice-pwd:{pwd}\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=mid:0\r\n\
         a=candidate:1 1 udp 2130706431 127.0.0.1 9 typ host\r\na=end-of-candidates\r\n"
    )
}

/// RFC 9725 §4.6: each `Link` with `rel="ice-server"` names a STUN/TURN URI (RFC 7064/7065);
/// TURN entries carry `username` and `credential`.
fn link_headers(ctx: &mut Ctx<'_>, created: &Exchange) {
    let links: Vec<Link> = created
        .header_all("link")
        .iter()
        .flat_map(|v| parse_links(v))
        .collect();
    let servers: Vec<&Link> = links
        .iter()
        .filter(|l| {
            l.param("rel").is_some_and(|r| {
                r.split_whitespace()
                    .any(|t| t.eq_ignore_ascii_case("ice-server"))
            })
        })
        .collect();
    if servers.is_empty() {
        ctx.report.skip(
            LINK,
            whip_ref!("4.6"),
            Level::Must,
            "no Link rel=\"ice-server\" in the 201",
        );
        return;
    }
    let bad: Vec<String> = servers
        .iter()
        .filter(|l| !l.valid_ice_server())
        .map(|l| l.uri.clone())
        .collect();
    let ev = format!(
        "{} ice-server link(s){}",
        servers.len(),
        if bad.is_empty() {
            String::new()
        } else {
            format!(", invalid: {bad:?}")
        }
    );
    ctx.report
        .check(LINK, whip_ref!("4.6"), Level::Must, bad.is_empty(), ev);
}

/// One RFC 8288 link-value.
#[derive(Debug, Clone, PartialEq)]
struct Link {
    uri: String,
    params: Vec<(String, String)>,
}

impl Link {
    fn param(&self, name: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn valid_ice_server(&self) -> bool {
        let scheme = self
            .uri
            .split(':')
            .next()
            .unwrap_or_default()
            .to_ascii_lowercase();
        match scheme.as_str() {
            "stun" | "stuns" => self.uri.len() > scheme.len() + 1,
            "turn" | "turns" => {
                self.param("username").is_some() && self.param("credential").is_some()
            }
            _ => false,
        }
    }
}

/// Parses a `Link` header value (RFC 8288 §3): comma-separated `<uri>; k=v; k="v"` entries.
fn parse_links(value: &str) -> Vec<Link> {
    let mut links = Vec::new();
    let mut rest = value.trim();
    while let Some(start) = rest.find('<') {
        let Some(end) = rest[start..].find('>') else {
            break;
        };
        let uri = rest[start + 1..start + end].to_owned();
        rest = &rest[start + end + 1..];
        let mut params = Vec::new();
        loop {
            rest = rest.trim_start();
            let Some(after) = rest.strip_prefix(';') else {
                break;
            };
            let after = after.trim_start();
            let key_end = after.find(['=', ';', ',']).unwrap_or(after.len());
            let key = after[..key_end].trim().to_owned();
            rest = &after[key_end..];
            let mut val = String::new();
            if let Some(v) = rest.strip_prefix('=') {
                let v = v.trim_start();
                if let Some(q) = v.strip_prefix('"') {
                    let close = q.find('"').unwrap_or(q.len());
                    val = q[..close].to_owned();
                    rest = q.get(close + 1..).unwrap_or("");
                } else {
                    let stop = v.find([';', ',']).unwrap_or(v.len());
                    val = v[..stop].trim().to_owned();
                    rest = &v[stop..];
                }
            }
            params.push((key, val));
        }
        links.push(Link { uri, params });
        rest = rest.trim_start().strip_prefix(',').unwrap_or(rest);
    }
    links
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_rfc9725_example_links() {
        let v = "<stun:stun.example.net>; rel=\"ice-server\", \
                 <turn:turn.example.net?transport=udp>; rel=\"ice-server\"; username=\"user\"; \
                 credential=\"myPassword\"; credential-type=\"password\"";
        let links = parse_links(v);
        assert_eq!(links.len(), 2);
        assert_eq!(links[0].uri, "stun:stun.example.net");
        assert!(links[0].valid_ice_server());
        assert_eq!(links[1].param("username"), Some("user"));
        assert!(links[1].valid_ice_server());
    }

    #[test]
    fn turn_without_credentials_is_invalid() {
        let links = parse_links("<turn:t.example.net>; rel=ice-server");
        assert_eq!(links[0].param("rel"), Some("ice-server"));
        assert!(!links[0].valid_ice_server());
        assert!(!parse_links("<https://x.example>; rel=\"ice-server\"")[0].valid_ice_server());
    }
}
