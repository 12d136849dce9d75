//! A report as plain text, for curl users: findings first, then the facts they rest on.

use std::fmt::Write;

use super::{Level, Report};

/// `report`, readable.
pub fn render(report: &Report) -> String {
    let mut out = String::new();
    let _ = render_into(report, &mut out);
    out
}

fn render_into(r: &Report, out: &mut String) -> std::fmt::Result {
    writeln!(
        out,
        "whip-echo client report: {} session of stream {:?}, {} ({:.1} s since the POST){}",
        r.role,
        r.stream,
        r.state,
        r.age_ms as f64 / 1000.0,
        r.ended.map(|e| format!(", ended: {e}")).unwrap_or_default()
    )?;
    writeln!(out, "\nFindings")?;
    for f in &r.findings {
        let level = match f.level {
            Level::Ok => "ok  ",
            Level::Warn => "WARN",
            Level::Fail => "FAIL",
        };
        writeln!(out, "  {level} {} [{}]", f.text, f.basis)?;
    }
    let h = &r.http;
    writeln!(out, "\nHTTP")?;
    writeln!(
        out,
        "  user agent: {}",
        h.user_agent.as_deref().unwrap_or("(none)")
    )?;
    writeln!(out, "  auth: {}", h.auth)?;
    writeln!(
        out,
        "  PATCH: {} ({} without If-Match); trickled candidates: {}{}; ICE restarts: {}",
        h.patches,
        h.patches_without_if_match,
        h.trickled_candidates,
        if h.end_of_candidates {
            ", end-of-candidates"
        } else {
            ""
        },
        h.ice_restarts
    )?;
    writeln!(
        out,
        "  ended by DELETE: {}",
        if h.deleted { "yes" } else { "no" }
    )?;
    let o = &r.offer;
    writeln!(out, "\nOffer")?;
    writeln!(
        out,
        "  bundled: {}; candidates: {} (host {}, srflx {}, relay {}, tcp {}, mDNS {})",
        if o.bundled { "yes" } else { "no" },
        o.candidates.total,
        o.candidates.host,
        o.candidates.srflx,
        o.candidates.relay,
        o.candidates.tcp,
        o.candidates.mdns
    )?;
    for s in &o.sections {
        writeln!(
            out,
            "  m={} {}{}: {}{}",
            s.kind,
            s.direction,
            if s.rejected { " (rejected)" } else { "" },
            s.codecs.join(", "),
            if s.rids.is_empty() {
                String::new()
            } else {
                format!("; simulcast {}", s.rids.join(" "))
            }
        )?;
    }
    writeln!(out, "  chosen: {}", r.chosen.join(", "))?;
    let c = &r.connectivity;
    writeln!(out, "\nConnectivity")?;
    let ms = |v: Option<u64>| v.map_or("-".to_owned(), |v| format!("{v} ms"));
    writeln!(
        out,
        "  connected: {}; first media: {}; path: {} from {}; whip-echo's DTLS role: {}",
        ms(c.connected_ms),
        ms(c.first_media_ms),
        c.transport.unwrap_or("-"),
        c.remote.as_deref().unwrap_or("-"),
        c.dtls_role
    )?;
    writeln!(out, "\nTracks")?;
    for t in &r.tracks {
        writeln!(
            out,
            "  {} {} {:08x}: {} packets, {} bytes, lost {} ({:.1} %), jitter {:.1} ms, idle {} ms",
            t.direction,
            t.kind,
            t.ssrc,
            t.packets,
            t.bytes,
            t.lost,
            t.loss_percent,
            t.jitter_ms,
            t.idle_ms
        )?;
    }
    let x = &r.rtcp;
    writeln!(out, "\nThe client's RTCP")?;
    writeln!(
        out,
        "  sender reports {}, receiver reports {}, NACKs {}, keyframe requests {}",
        x.sender_reports, x.receiver_reports, x.nacks, x.keyframe_requests
    )?;
    if let Some(loss) = x.reported_loss_percent {
        writeln!(
            out,
            "  it reported {loss:.1} % lost, jitter {:.1} ms, round trip {}",
            x.reported_jitter_ms.unwrap_or_default(),
            x.rtt_ms.map_or("-".to_owned(), |v| format!("{v:.1} ms"))
        )?;
    }
    Ok(())
}
