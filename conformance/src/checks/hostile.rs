//! Hostile inputs: a server must answer each with a 4xx (never a 5xx, never a dropped connection)
//! and keep serving. Malformed offers are RFC 9725 §4.2 MUSTs; the rest are robustness checks.

use reqwest::Method;

use super::whip::status_of;
use super::{is_4xx, whip_ref, Ctx, Proto};
use crate::peer::{self, Mode};
use crate::report::Level;

const ROBUSTNESS: &str = "robustness (RFC 9110 §15.5)";
/// Bodies larger than this are sent by `Http::post_unread`.
const MAX_READ_FIRST: usize = 1 << 20;

/// One bad POST: check id, reference, level, Content-Type, body.
struct Case {
    id: &'static str,
    reference: &'static str,
    level: Level,
    content_type: Option<&'static str>,
    body: Vec<u8>,
}

fn case(
    id: &'static str,
    reference: &'static str,
    level: Level,
    content_type: Option<&'static str>,
    body: Vec<u8>,
) -> Case {
    Case {
        id,
        reference,
        level,
        content_type,
        body,
    }
}

pub async fn run(ctx: &mut Ctx<'_>) {
    let Ok(url) = ctx.endpoint(Proto::Whip, "hostile") else {
        return;
    };
    let offer = peer::offer(Mode::Send);
    let video_only = offer
        .replace("m=audio", "m=video")
        .replace("opus/48000/2", "VP8/90000");
    let sdp = Some("application/sdp");
    let cases = [
        case(
            "hostile-empty-body-is-4xx",
            whip_ref!("4.2"),
            Level::Must,
            sdp,
            vec![],
        ),
        case(
            "hostile-10mb-body-is-4xx",
            whip_ref!("4.2"),
            Level::Must,
            sdp,
            vec![b'v'; 10 << 20],
        ),
        case(
            "hostile-binary-garbage-is-4xx",
            whip_ref!("4.2"),
            Level::Must,
            sdp,
            (0..=255u8).cycle().take(4096).collect(),
        ),
        case(
            "hostile-sdp-without-m-lines-is-4xx",
            whip_ref!("4.2"),
            Level::Must,
            sdp,
            b"v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\n".to_vec(),
        ),
        case(
            "hostile-non-utf8-body-is-4xx",
            whip_ref!("4.2"),
            Level::Must,
            sdp,
            [b"v=0\r\ns=\xff\xfe\xfd\r\n".as_slice()].concat(),
        ),
        case(
            "hostile-missing-content-type-is-4xx",
            whip_ref!("4.2"),
            Level::Must,
            None,
            offer.clone().into_bytes(),
        ),
        case(
            "hostile-video-only-offer-is-4xx",
            ROBUSTNESS,
            Level::Extension,
            sdp,
            video_only.into_bytes(),
        ),
    ];
    for Case {
        id,
        reference,
        level,
        content_type,
        body,
    } in cases
    {
        // A server may refuse a huge body before reading it all and close the connection
        // (RFC 9110 §15.5.14): read its answer while writing.
        let result = if body.len() > MAX_READ_FIRST {
            ctx.http.post_unread(&url, content_type, body.into()).await
        } else {
            ctx.post(&url, content_type, body).await
        };
        // A server that serves video may accept the video-only offer: any non-5xx then passes.
        let ok = match &result {
            Ok(e) if id == "hostile-video-only-offer-is-4xx" => e.status < 500,
            Ok(e) => is_4xx(e.status),
            Err(_) => false,
        };
        ctx.report
            .check(id, reference, level, ok, status_of(&result));
        if let Ok(e) = &result {
            ctx.cleanup(e).await;
        }
    }
    long_stream_name(ctx).await;
    guessed_and_deleted_resources(ctx).await;
    still_serving(ctx).await;
}

async fn long_stream_name(ctx: &mut Ctx<'_>) {
    const ID: &str = "hostile-very-long-stream-name-is-not-5xx";
    let Ok(url) = ctx.endpoint(Proto::Whip, &"x".repeat(4000)) else {
        return;
    };
    let result = ctx.post_offer(&url, Mode::Send).await;
    let ok = result.as_ref().is_ok_and(|e| e.status < 500);
    ctx.report
        .check(ID, ROBUSTNESS, Level::Extension, ok, status_of(&result));
    if let Ok(e) = &result {
        ctx.cleanup(e).await;
    }
}

/// A resource URL one character away from a real one is not a session; PATCH and DELETE on a
/// deleted session are 4xx.
async fn guessed_and_deleted_resources(ctx: &mut Ctx<'_>) {
    const GUESS: &str = "hostile-guessed-resource-is-404";
    const PATCH: &str = "hostile-patch-on-deleted-session-is-4xx";
    let Ok(url) = ctx.endpoint(Proto::Whip, "guess") else {
        return;
    };
    let created = match ctx.post_offer(&url, Mode::Send).await {
        Ok(e) if e.status == 201 && e.location().is_some() => e,
        other => {
            let why = format!("no session: {}", status_of(&other));
            ctx.report
                .skip(GUESS, ROBUSTNESS, Level::Extension, why.clone());
            ctx.report.skip(PATCH, ROBUSTNESS, Level::Extension, why);
            return;
        }
    };
    let real = created.location().expect("checked above");
    let mut guessed = real.to_string();
    let last = guessed.pop().unwrap_or('0');
    guessed.push(if last == '0' { '1' } else { '0' });
    let guessed = reqwest::Url::parse(&guessed).unwrap_or_else(|_| real.clone());
    let result = ctx.call(Method::DELETE, &guessed).await;
    let ok = result.as_ref().is_ok_and(|e| e.status == 404);
    ctx.report
        .check(GUESS, ROBUSTNESS, Level::Extension, ok, status_of(&result));

    let _ = ctx.call(Method::DELETE, &real).await;
    let headers = [
        ("content-type", "application/trickle-ice-sdpfrag"),
        ("if-match", "*"),
    ];
    let body =
        bytes::Bytes::from_static(b"a=ice-ufrag:abcd\r\na=ice-pwd:abcdefghijklmnopqrstuv\r\n");
    let result = ctx
        .http
        .send(
            Method::PATCH,
            &real,
            &headers,
            body,
            crate::http::Auth::Configured,
        )
        .await;
    let ok = result.as_ref().is_ok_and(|e| is_4xx(e.status));
    ctx.report
        .check(PATCH, ROBUSTNESS, Level::Extension, ok, status_of(&result));
}

async fn still_serving(ctx: &mut Ctx<'_>) {
    const ID: &str = "hostile-server-still-serves-after-bad-input";
    let Ok(url) = ctx.endpoint(Proto::Whip, "after") else {
        return;
    };
    let result = ctx.post_offer(&url, Mode::Send).await;
    let ok = result.as_ref().is_ok_and(|e| e.status == 201);
    ctx.report
        .check(ID, ROBUSTNESS, Level::Extension, ok, status_of(&result));
    if let Ok(e) = &result {
        ctx.cleanup(e).await;
    }
}
