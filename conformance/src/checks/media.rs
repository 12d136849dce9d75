//! Media with real WebRTC peers: WHIP publish → WHEP play of the same payloads, the echo extension,
//! and consent revocation on DELETE (RFC 9725 §4.2 → RFC 7675 §5.2). Reports POST round trip and
//! POST → first media.

use std::time::{Duration, Instant};

use super::{whip_ref, Ctx, Proto};
use crate::peer::{Client, Mode, SendHandle};
use crate::report::Level;

/// Payloads sent per media check.
const PACKETS: u32 = 20;
/// Upper bound for connecting and for each packet.
const WAIT: Duration = Duration::from_secs(10);

const FANOUT: &str = "rfc9725-4.2-whip-media-reaches-whep-viewer";
const ECHO: &str = "extension-echo-returns-same-payloads";
const REVOKE: &str = "rfc9725-4.2-delete-revokes-consent";

pub async fn run(ctx: &mut Ctx<'_>) {
    whip_to_whep(ctx).await;
    echo(ctx).await;
}

async fn connect(
    ctx: &Ctx<'_>,
    proto_path: Result<reqwest::Url, String>,
    mode: Mode,
) -> Result<Client, String> {
    let url = proto_path?;
    let mut client = Client::connect_with(&ctx.http, &url, mode, ctx.local_ip)
        .await
        .map_err(|r| format!("POST {url}: {} {}", r.status, r.body.trim()))?;
    if !client.until(WAIT, |s| s.connected).await {
        return Err(format!("{url}: ICE/DTLS not connected within {WAIT:?}"));
    }
    Ok(client)
}

async fn whip_to_whep(ctx: &mut Ctx<'_>) {
    let viewer = connect(ctx, ctx.endpoint(Proto::Whep, "media"), Mode::Recv).await;
    let publisher = connect(ctx, ctx.endpoint(Proto::Whip, "media"), Mode::Send).await;
    let (mut viewer, mut publisher) = match (viewer, publisher) {
        (Ok(v), Ok(p)) => (v, p),
        (v, p) => {
            let why = [v.err(), p.err()]
                .into_iter()
                .flatten()
                .collect::<Vec<_>>()
                .join("; ");
            ctx.report
                .check(FANOUT, whip_ref!("4.2"), Level::Must, false, why.clone());
            ctx.report.skip(
                REVOKE,
                whip_ref!("4.2"),
                Level::Must,
                format!("no connected session: {why}"),
            );
            return;
        }
    };
    let (got, first) = exchange(&publisher.clone_sender(), &mut viewer).await;
    let ok = got * 4 >= PACKETS * 3;
    let first = first.map_or("none".into(), |t| {
        format!("{:.1} ms", (t - publisher.posted_at).as_secs_f64() * 1e3)
    });
    let ev = format!(
        "{got}/{PACKETS} payloads in order; POST round trip {:.1} ms; POST -> first media {first}{}",
        publisher.post_rtt.as_secs_f64() * 1e3,
        if viewer.counter_offer { "; viewer used a 406 counter-offer" } else { "" }
    );
    ctx.report
        .check(FANOUT, whip_ref!("4.2"), Level::Must, ok, ev);

    // Consent revocation: after DELETE the server tells the peer at once (DTLS close_notify).
    let status = publisher.delete().await;
    let started = Instant::now();
    let ended = publisher.until(Duration::from_secs(5), |s| s.ended).await;
    let ev = format!(
        "DELETE {status}; peer told within {:.0} ms: {ended}",
        started.elapsed().as_secs_f64() * 1e3
    );
    ctx.report.check(
        REVOKE,
        whip_ref!("4.2"),
        Level::Must,
        status == 200 && ended,
        ev,
    );
    publisher.close().await;
    viewer.delete().await;
    viewer.close().await;
}

async fn echo(ctx: &mut Ctx<'_>) {
    let reference = "extension (not in RFC 9725)";
    let Some(path) = ctx.target.echo_path.clone() else {
        ctx.report
            .skip(ECHO, reference, Level::Extension, "no --echo-path given");
        return;
    };
    let url = ctx.target.endpoint(&path, &ctx.stream("echo"));
    let mut client = match connect(ctx, url, Mode::SendRecv).await {
        Ok(c) => c,
        Err(e) => {
            ctx.report
                .check(ECHO, reference, Level::Extension, false, e);
            return;
        }
    };
    let sender = client.clone_sender();
    let (got, first) = exchange(&sender, &mut client).await;
    let first = first.map_or("none".into(), |t| {
        format!("{:.1} ms", (t - client.posted_at).as_secs_f64() * 1e3)
    });
    let ev = format!("{got}/{PACKETS} payloads echoed in order; POST -> first echo {first}");
    ctx.report
        .check(ECHO, reference, Level::Extension, got == PACKETS, ev);
    client.delete().await;
    client.close().await;
}

/// Sends numbered payloads from `from` and counts how many `to` receives unchanged and in order.
/// Returns the count and when the first arrived.
async fn exchange(from: &SendHandle, to: &mut Client) -> (u32, Option<Instant>) {
    let mut got = 0;
    let mut first = None;
    for i in 0..PACKETS {
        let payload = format!("whip-conformance-{i:04}");
        from.send(payload.as_bytes());
        while let Some(packet) = to.try_next_packet(Duration::from_secs(2)).await {
            first.get_or_insert_with(Instant::now);
            if packet.payload == payload.as_bytes() {
                got += 1;
                break;
            }
        }
    }
    (got, first)
}
