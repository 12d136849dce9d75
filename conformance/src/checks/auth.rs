//! Bearer token authentication (RFC 9725 §4.7.1, RFC 6750 §3.1): only with `--token`, since a server
//! that requires no token is conformant too.

use bytes::Bytes;
use reqwest::Method;

use super::whip::status_of;
use super::{whip_ref, Ctx, Proto};
use crate::http::Auth;
use crate::peer::{self, Mode};
use crate::report::Level;

const MISSING: &str = "rfc9725-4.7.1-missing-token-is-401";
const WRONG: &str = "rfc9725-4.7.1-wrong-token-is-401";
const RIGHT: &str = "rfc9725-4.7.1-valid-token-is-accepted";

pub async fn run(ctx: &mut Ctx<'_>) {
    if ctx.target.token.is_none() {
        for id in [MISSING, WRONG, RIGHT] {
            ctx.report
                .skip(id, whip_ref!("4.7.1"), Level::Must, "no --token given");
        }
        return;
    }
    let Ok(url) = ctx.endpoint(Proto::Whip, "auth") else {
        return;
    };
    let headers = [("content-type", "application/sdp")];
    for (id, auth) in [
        (MISSING, Auth::Without),
        (WRONG, Auth::Token("whip-conformance-wrong-token")),
    ] {
        let body = Bytes::from(peer::offer(Mode::Send));
        let result = ctx
            .http
            .send(Method::POST, &url, &headers, body, auth)
            .await;
        let ok = result.as_ref().is_ok_and(|e| e.status == 401);
        ctx.report
            .check(id, whip_ref!("4.7.1"), Level::Must, ok, status_of(&result));
        if let Ok(e) = &result {
            ctx.cleanup(e).await;
        }
    }
    let result = ctx.post_offer(&url, Mode::Send).await;
    let ok = result.as_ref().is_ok_and(|e| e.status == 201);
    ctx.report.check(
        RIGHT,
        whip_ref!("4.7.1"),
        Level::Must,
        ok,
        status_of(&result),
    );
    if let Ok(e) = &result {
        ctx.cleanup(e).await;
    }
}
