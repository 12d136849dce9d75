//! WHEP: the lifecycle (shared with WHIP), endpoint discovery by HEAD (§4.2) and counter-offers
//! (§4.3.2).

use reqwest::Method;

use super::whip::{lifecycle, sendrecv_offer_direction, status_of};
use super::{whep_ref, Ctx, Proto};
use crate::peer::Mode;
use crate::report::Level;

pub async fn run(ctx: &mut Ctx<'_>) {
    let created = lifecycle(ctx, Proto::Whep, Mode::Recv).await;
    const COUNTER: &str = "whep-4.3.2-counter-offer-is-sdp-with-location";
    match created {
        Some(e) if e.status == 406 => {
            let ok = e.media_type().as_deref() == Some("application/sdp") && e.location().is_some();
            ctx.report.check(
                COUNTER,
                whep_ref!("4.3.2"),
                Level::Must,
                ok,
                e.evidence("location"),
            );
        }
        Some(_) => ctx.report.skip(
            COUNTER,
            whep_ref!("4.3.2"),
            Level::Must,
            "the server accepted the offer (201)",
        ),
        None => {}
    }
    head_discovery(ctx).await;
    // The WHEP resource only sends: a player's `sendrecv` offer gets a `sendonly` answer (the
    // twin of RFC 9725 §4.2's recvonly rule).
    sendrecv_offer_direction(
        ctx,
        Proto::Whep,
        (
            "whep-4.3.5-sendonly-answer-to-sendrecv-offer",
            whep_ref!("4.3.5"),
        ),
        "sendonly",
    )
    .await;
}

/// WHEP §4.2: HEAD on the endpoint SHOULD give 200 with `Content-Type: application/sdp`.
async fn head_discovery(ctx: &mut Ctx<'_>) {
    const ID: &str = "whep-4.2-head-discovers-endpoint";
    let Ok(url) = ctx.endpoint(Proto::Whep, "discovery") else {
        return;
    };
    match ctx.call(Method::HEAD, &url).await {
        Ok(e) => {
            let ok = e.status == 200
                && e.media_type().as_deref() == Some("application/sdp")
                && e.body.is_empty();
            ctx.report.check(
                ID,
                whep_ref!("4.2"),
                Level::Should,
                ok,
                e.evidence("content-type"),
            );
        }
        Err(e) => ctx.report.check(
            ID,
            whep_ref!("4.2"),
            Level::Should,
            false,
            status_of(&Err(e)),
        ),
    }
}
