//! Judging an SDP answer: validity, accepted audio, ICE and DTLS parameters, candidates, BUNDLE and
//! RTP/RTCP multiplexing, direction. The same checks serve WHIP and WHEP, under each one's ids.

use super::{whep_ref, whip_ref, Ctx, Proto};
use crate::http::Exchange;
use crate::report::Level;
use crate::sdp::Sdp;

struct Ids {
    valid: (&'static str, &'static str),
    audio: (&'static str, &'static str),
    ice: (&'static str, &'static str),
    fingerprint: (&'static str, &'static str),
    setup: (&'static str, &'static str),
    candidates: (&'static str, &'static str),
    bundle: (&'static str, &'static str),
    mux_only: (&'static str, &'static str),
    direction: (&'static str, &'static str),
}

const WHIP: Ids = Ids {
    valid: ("rfc9725-4.2-answer-is-valid-sdp", whip_ref!("4.2")),
    audio: ("rfc9725-4.2-answer-accepts-audio", whip_ref!("4.2")),
    ice: ("rfc9725-4.2-answer-has-ice-credentials", whip_ref!("4.2")),
    fingerprint: ("rfc9725-4.2-answer-has-dtls-fingerprint", whip_ref!("4.2")),
    setup: ("rfc9725-4.4.4-answer-setup-role", whip_ref!("4.4.4")),
    candidates: (
        "rfc9725-4.3.2-answer-has-all-candidates",
        whip_ref!("4.3.2"),
    ),
    bundle: (
        "rfc9725-4.4.1-answer-bundle-and-rtcp-mux",
        whip_ref!("4.4.1"),
    ),
    mux_only: ("rfc9725-4.4.1-answer-rtcp-mux-only", whip_ref!("4.4.1")),
    direction: ("rfc9725-4.2-answer-is-recvonly", whip_ref!("4.2")),
};

const WHEP: Ids = Ids {
    valid: ("whep-4.3.1-answer-is-valid-sdp", whep_ref!("4.3.1")),
    audio: ("whep-4.3.1-answer-accepts-audio", whep_ref!("4.3.1")),
    ice: ("whep-4.3.1-answer-has-ice-credentials", whep_ref!("4.3.1")),
    fingerprint: ("whep-4.3.1-answer-has-dtls-fingerprint", whep_ref!("4.3.1")),
    setup: ("whep-4.3.1-answer-setup-role", whep_ref!("4.3.1")),
    candidates: ("whep-4.5.2-answer-has-all-candidates", whep_ref!("4.5.2")),
    bundle: ("whep-4.6.1-answer-bundle-and-rtcp-mux", whep_ref!("4.6.1")),
    mux_only: ("whep-4.6.1-answer-rtcp-mux-only", whep_ref!("4.6.1")),
    direction: ("whep-4.3.5-answer-is-sendonly", whep_ref!("4.3.5")),
};

/// Runs the answer checks on a 201 response. `direction` is what the answer must say.
pub fn check(ctx: &mut Ctx<'_>, proto: Proto, exchange: &Exchange, direction: &str) {
    let ids = match proto {
        Proto::Whip => &WHIP,
        Proto::Whep => &WHEP,
    };
    let r = &mut ctx.report;
    let text = exchange.text();
    let sdp = match Sdp::parse(&text) {
        Ok(sdp) => sdp,
        Err(e) => {
            r.check(
                ids.valid.0,
                ids.valid.1,
                Level::Must,
                false,
                format!("unparseable: {e}"),
            );
            return;
        }
    };
    r.check(
        ids.valid.0,
        ids.valid.1,
        Level::Must,
        true,
        format!("{} m-sections", sdp.sections.len()),
    );
    let Some(audio) = sdp.audio() else {
        r.check(
            ids.audio.0,
            ids.audio.1,
            Level::Must,
            false,
            "no audio m-section",
        );
        return;
    };
    r.check(
        ids.audio.0,
        ids.audio.1,
        Level::Must,
        audio.port != 0,
        format!("m=audio port {}", audio.port),
    );

    let ufrag = sdp.effective(audio, "ice-ufrag");
    let pwd = sdp.effective(audio, "ice-pwd");
    r.check(
        ids.ice.0,
        ids.ice.1,
        Level::Must,
        ufrag.is_some_and(|u| u.len() >= 4) && pwd.is_some_and(|p| p.len() >= 22),
        format!(
            "ice-ufrag {ufrag:?}, ice-pwd {} chars (RFC 8839 §5.4: >= 4 and >= 22)",
            pwd.map_or(0, str::len)
        ),
    );
    let fingerprint = sdp.effective(audio, "fingerprint");
    r.check(
        ids.fingerprint.0,
        ids.fingerprint.1,
        Level::Must,
        fingerprint.is_some_and(|f| {
            f.split_once(' ')
                .is_some_and(|(h, v)| !h.is_empty() && v.contains(':'))
        }),
        format!("fingerprint {fingerprint:?}"),
    );
    // RFC 8842 §5.3: the answerer picks `active` or `passive`, never `actpass`.
    let setup = sdp.effective(audio, "setup");
    r.check(
        ids.setup.0,
        ids.setup.1,
        Level::Must,
        matches!(setup, Some("active" | "passive")),
        format!("setup {setup:?}"),
    );
    let candidates = audio.attrs("candidate").len();
    let lite = sdp.session_attr("ice-lite").is_some();
    r.check(
        ids.candidates.0,
        ids.candidates.1,
        Level::Must,
        candidates > 0,
        format!(
            "{candidates} candidates{}",
            if lite { ", ice-lite" } else { "" }
        ),
    );
    let bundle = sdp
        .session_attr("group")
        .flatten()
        .is_some_and(|g| g.starts_with("BUNDLE"));
    let mux = audio.attr("rtcp-mux").is_some();
    r.check(
        ids.bundle.0,
        ids.bundle.1,
        Level::Must,
        bundle && mux,
        format!("group:BUNDLE {bundle}, rtcp-mux {mux}"),
    );
    let mux_only = audio.attr("rtcp-mux-only").is_some();
    r.check(
        ids.mux_only.0,
        ids.mux_only.1,
        Level::Must,
        mux_only,
        format!("rtcp-mux-only {mux_only}"),
    );
    r.check(
        ids.direction.0,
        ids.direction.1,
        Level::Must,
        audio.direction() == direction,
        format!("audio a={}", audio.direction()),
    );
}
