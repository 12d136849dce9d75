//! The session lifecycle over HTTP, for WHIP (RFC 9725 §4.1, §4.2, §4.4.3) and, through
//! [`lifecycle`], for WHEP too.

use reqwest::Method;

use super::{answer, is_4xx, whep_ref, whip_ref, Ctx, Proto};
use crate::http::Exchange;
use crate::peer::{self, Mode};
use crate::report::Level;

/// Check ids and references of the lifecycle, per protocol.
struct Ids {
    created: (&'static str, &'static str),
    content_type: (&'static str, &'static str),
    location: (&'static str, &'static str),
    etag: (&'static str, &'static str),
    get_endpoint: (&'static str, &'static str),
    get_session: (&'static str, &'static str),
    delete: (&'static str, &'static str),
    delete_again: (&'static str, &'static str),
    options_cors: (&'static str, &'static str),
    accept_post: (&'static str, &'static str),
    wrong_type: (&'static str, &'static str),
    malformed: (&'static str, &'static str),
}

const WHIP: Ids = Ids {
    created: (
        "rfc9725-4.2-post-returns-201-with-location",
        whip_ref!("4.2"),
    ),
    content_type: ("rfc9725-4.2-answer-content-type-is-sdp", whip_ref!("4.2")),
    location: ("rfc9725-4.2-relative-location-resolves", whip_ref!("4.2")),
    etag: ("rfc9725-4.3.1-201-carries-etag", whip_ref!("4.3.1")),
    get_endpoint: ("rfc9725-4.1-get-endpoint-2xx-no-content", whip_ref!("4.1")),
    get_session: ("rfc9725-4.1-get-session-2xx-no-content", whip_ref!("4.1")),
    delete: ("rfc9725-4.2-delete-returns-200", whip_ref!("4.2")),
    delete_again: ("rfc9725-4.2-deleted-session-is-404", whip_ref!("4.2")),
    options_cors: ("rfc9725-4.2-options-cors-preflight", whip_ref!("4.2")),
    accept_post: ("rfc9725-4.2-options-accept-post", whip_ref!("4.2")),
    wrong_type: ("rfc9725-4.2-wrong-content-type-is-4xx", whip_ref!("4.2")),
    malformed: ("rfc9725-4.2-malformed-sdp-is-4xx", whip_ref!("4.2")),
};

const WHEP: Ids = Ids {
    created: (
        "whep-4.3.1-post-returns-201-with-location",
        whep_ref!("4.3.1"),
    ),
    content_type: ("whep-4.3.1-answer-content-type-is-sdp", whep_ref!("4.3.1")),
    location: ("whep-4.3.1-relative-location-resolves", whep_ref!("4.3.1")),
    etag: ("whep-4.5.1-201-carries-etag", whep_ref!("4.5.1")),
    get_endpoint: ("whep-4.1-get-endpoint-2xx-no-content", whep_ref!("4.1")),
    get_session: ("whep-4.1-get-session-2xx-no-content", whep_ref!("4.1")),
    delete: ("whep-4.4-delete-returns-200", whep_ref!("4.4")),
    delete_again: ("whep-4.4-deleted-session-is-404", whep_ref!("4.4")),
    options_cors: ("whep-4.4-options-cors-preflight", whep_ref!("4.4")),
    accept_post: ("whep-4.4-options-accept-post", whep_ref!("4.4")),
    wrong_type: ("whep-4.3.4-wrong-content-type-is-4xx", whep_ref!("4.3.4")),
    malformed: ("whep-4.3.4-malformed-sdp-is-4xx", whep_ref!("4.3.4")),
};

pub async fn run(ctx: &mut Ctx<'_>) {
    let Some(created) = lifecycle(ctx, Proto::Whip, Mode::Send).await else {
        return;
    };
    ctx.cleanup(&created).await;
    sendrecv_offer_gets_recvonly(ctx).await;
    no_partial_answers(ctx).await;
}

/// POST → 201 → answer checks → GET → DELETE → DELETE again, plus OPTIONS and the 4xx cases.
/// Returns the 201 exchange of a session that is already deleted (its headers are evidence).
pub async fn lifecycle(ctx: &mut Ctx<'_>, proto: Proto, mode: Mode) -> Option<Exchange> {
    let ids = match proto {
        Proto::Whip => &WHIP,
        Proto::Whep => &WHEP,
    };
    let url = match ctx.endpoint(proto, "lifecycle") {
        Ok(url) => url,
        Err(e) => {
            ctx.report
                .check(ids.created.0, ids.created.1, Level::Must, false, e);
            return None;
        }
    };
    let created = match ctx.post_offer(&url, mode).await {
        Ok(e) => e,
        Err(e) => {
            ctx.report
                .check(ids.created.0, ids.created.1, Level::Must, false, e);
            return None;
        }
    };
    let r = &mut ctx.report;
    let location = created.location();
    // A WHEP server may answer with a 406 counter-offer instead (WHEP §4.3.2): judged in whep.rs.
    let accepted = created.status == 201 || (proto == Proto::Whep && created.status == 406);
    r.check(
        ids.created.0,
        ids.created.1,
        Level::Must,
        accepted && location.is_some(),
        created.evidence("location"),
    );
    if !accepted {
        return None;
    }
    let sdp_type = created.media_type().as_deref() == Some("application/sdp");
    r.check(
        ids.content_type.0,
        ids.content_type.1,
        Level::Must,
        sdp_type,
        created.evidence("content-type"),
    );
    let etag = created.header("etag");
    r.check(
        ids.etag.0,
        ids.etag.1,
        Level::Should,
        etag.is_some(),
        created.evidence("etag"),
    );
    if created.status == 201 {
        let direction = if proto == Proto::Whip {
            "recvonly"
        } else {
            "sendonly"
        };
        answer::check(ctx, proto, &created, direction);
    }
    endpoint_checks(ctx, ids, proto, &url).await;
    let Some(resource) = location else {
        return Some(created);
    };

    let got = ctx.call(Method::GET, &resource).await;
    let (ok, ev) = no_content_2xx(&got);
    ctx.report
        .check(ids.get_session.0, ids.get_session.1, Level::Must, ok, ev);
    let deleted = ctx.call(Method::DELETE, &resource).await;
    let ok = deleted.as_ref().is_ok_and(|e| e.status == 200);
    ctx.report.check(
        ids.delete.0,
        ids.delete.1,
        Level::Must,
        ok,
        status_of(&deleted),
    );
    ctx.report.check(
        ids.location.0,
        ids.location.1,
        Level::Must,
        ok,
        format!(
            "{resource} (from {})",
            created.header("location").unwrap_or("")
        ),
    );
    let again = ctx.call(Method::DELETE, &resource).await;
    let gone = again.as_ref().is_ok_and(|e| e.status == 404);
    ctx.report.check(
        ids.delete_again.0,
        ids.delete_again.1,
        Level::Should,
        gone,
        status_of(&again),
    );
    Some(created)
}

async fn endpoint_checks(ctx: &mut Ctx<'_>, ids: &Ids, proto: Proto, url: &reqwest::Url) {
    let got = ctx.call(Method::GET, url).await;
    let (ok, ev) = no_content_2xx(&got);
    ctx.report
        .check(ids.get_endpoint.0, ids.get_endpoint.1, Level::Must, ok, ev);

    let headers = [
        ("origin", "https://conformance.example"),
        ("access-control-request-method", "POST"),
        ("access-control-request-headers", "content-type"),
    ];
    let preflight = ctx
        .http
        .send(
            Method::OPTIONS,
            url,
            &headers,
            bytes::Bytes::new(),
            crate::http::Auth::Without,
        )
        .await;
    match preflight {
        Ok(e) => {
            let cors =
                (200..300).contains(&e.status) && e.header("access-control-allow-origin").is_some();
            ctx.report.check(
                ids.options_cors.0,
                ids.options_cors.1,
                Level::Must,
                cors,
                e.evidence("access-control-allow-origin"),
            );
            let accept = e
                .header("accept-post")
                .is_some_and(|v| v.to_ascii_lowercase().contains("application/sdp"));
            ctx.report.check(
                ids.accept_post.0,
                ids.accept_post.1,
                Level::Should,
                accept,
                e.evidence("accept-post"),
            );
        }
        Err(e) => ctx.report.check(
            ids.options_cors.0,
            ids.options_cors.1,
            Level::Must,
            false,
            e,
        ),
    }

    let mode = if proto == Proto::Whip {
        Mode::Send
    } else {
        Mode::Recv
    };
    let wrong = ctx.post(url, Some("text/plain"), peer::offer(mode)).await;
    let ok = wrong.as_ref().is_ok_and(|e| is_4xx(e.status));
    ctx.report.check(
        ids.wrong_type.0,
        ids.wrong_type.1,
        Level::Must,
        ok,
        status_of(&wrong),
    );
    if let Ok(e) = &wrong {
        ctx.cleanup(e).await;
    }
    let malformed = ctx
        .post(url, Some("application/sdp"), "v=0\r\nthis is not SDP\r\n")
        .await;
    let ok = malformed.as_ref().is_ok_and(|e| is_4xx(e.status));
    ctx.report.check(
        ids.malformed.0,
        ids.malformed.1,
        Level::Must,
        ok,
        status_of(&malformed),
    );
}

/// RFC 9725 §4.2: "The WHIP endpoint MUST use recvonly in the SDP answer", also for sendrecv.
async fn sendrecv_offer_gets_recvonly(ctx: &mut Ctx<'_>) {
    sendrecv_offer_direction(
        ctx,
        Proto::Whip,
        (
            "rfc9725-4.2-recvonly-answer-to-sendrecv-offer",
            whip_ref!("4.2"),
        ),
        "recvonly",
    )
    .await;
}

/// A `sendrecv` offer to `proto`'s endpoint must be answered with `expected` (WHIP: `recvonly`,
/// WHEP: `sendonly`): each protocol's resource only moves media one way.
pub async fn sendrecv_offer_direction(
    ctx: &mut Ctx<'_>,
    proto: Proto,
    (id, reference): (&'static str, &'static str),
    expected: &str,
) {
    let Ok(url) = ctx.endpoint(proto, "sendrecv") else {
        return;
    };
    match ctx.post_offer(&url, Mode::SendRecv).await {
        Ok(e) if e.status == 201 => {
            let direction = crate::sdp::Sdp::parse(&e.text())
                .ok()
                .and_then(|s| s.audio().map(|a| a.direction()));
            let ok = direction == Some(expected);
            ctx.report.check(
                id,
                reference,
                Level::Must,
                ok,
                format!("audio a={direction:?}"),
            );
            ctx.cleanup(&e).await;
        }
        other => ctx
            .report
            .check(id, reference, Level::Must, false, status_of(&other)),
    }
}

/// RFC 9725 §4.4.3: the endpoint SHOULD NOT reject individual m-sections but the whole POST.
async fn no_partial_answers(ctx: &mut Ctx<'_>) {
    const ID: &str = "rfc9725-4.4.3-no-partially-successful-answer";
    let Ok(url) = ctx.endpoint(Proto::Whip, "partial") else {
        return;
    };
    let offer = with_video_section(&peer::offer(Mode::Send));
    match ctx.post(&url, Some("application/sdp"), offer).await {
        Ok(e) if e.status == 201 => {
            let rejected = crate::sdp::Sdp::parse(&e.text())
                .map(|s| s.sections.iter().filter(|m| m.port == 0).count())
                .unwrap_or(0);
            let ev = format!(
                "201 with {rejected} m-section(s) rejected (port 0) for an audio+VP8 offer"
            );
            ctx.report
                .check(ID, whip_ref!("4.4.3"), Level::Should, rejected == 0, ev);
            ctx.cleanup(&e).await;
        }
        Ok(e) => {
            let ok = matches!(e.status, 400 | 422);
            ctx.report.check(
                ID,
                whip_ref!("4.4.3"),
                Level::Should,
                ok,
                format!("{} for an audio+VP8 offer", e.status),
            );
        }
        Err(e) => ctx
            .report
            .check(ID, whip_ref!("4.4.3"), Level::Should, false, e),
    }
}

/// Adds a bundled VP8 video section to an audio-only offer.
fn with_video_section(offer: &str) -> String {
    let sdp = crate::sdp::Sdp::parse(offer).unwrap_or_default();
    let audio = sdp.audio().cloned().unwrap_or_default();
    let copy = |key: &str| {
        sdp.effective(&audio, key)
            .map(|v| format!("a={key}:{v}\r\n"))
            .unwrap_or_default()
    };
    let video = format!(
        "m=video 9 UDP/TLS/RTP/SAVPF 96\r\nc=IN IP4 0.0.0.0\r\n{}{}{}{}a=mid:1\r\na=sendonly\r\na=rtcp-mux\r\n\
         a=rtpmap:96 VP8/90000\r\na=ssrc:424242 cname:conformance\r\n",
        copy("ice-ufrag"),
        copy("ice-pwd"),
        copy("fingerprint"),
        copy("setup"),
    );
    let mid = audio.attr("mid").flatten().unwrap_or("0").to_owned();
    let mut out = offer.replace(
        &format!("a=group:BUNDLE {mid}\r\n"),
        &format!("a=group:BUNDLE {mid} 1\r\n"),
    );
    if !out.ends_with("\r\n") {
        out.push_str("\r\n");
    }
    out + &video
}

fn no_content_2xx(result: &Result<Exchange, String>) -> (bool, String) {
    match result {
        Ok(e) => (
            (200..300).contains(&e.status) && e.body.is_empty(),
            format!("{}, {} body bytes", e.status, e.body.len()),
        ),
        Err(e) => (false, e.clone()),
    }
}

/// A status or the request error, as evidence.
pub fn status_of(result: &Result<Exchange, String>) -> String {
    match result {
        Ok(e) => e.status.to_string(),
        Err(e) => e.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn video_section_is_added_and_bundled() {
        let offer = peer::offer(Mode::Send);
        let both = with_video_section(&offer);
        let sdp = crate::sdp::Sdp::parse(&both).unwrap();
        assert_eq!(sdp.sections.len(), 2);
        assert!(sdp.session_attr("group").flatten().unwrap().ends_with(" 1"));
    }
}
