//! The verdicts of a report: each a level, a sentence and what it rests on (an RFC section, or a
//! threshold measured here). Computed from the report's own facts, so the evidence is always
//! beside the verdict.

use super::{Finding, Level, Report};

/// Media and RTCP are judged only after this long connected (ms): a client sends its first
/// reports within a few seconds (RFC 3550 §6.2: 5 s at most at the start).
pub const SETTLED_MS: u64 = 10_000;
/// Loss above this share of the packets expected from the client is a warning.
pub const LOSS_WARN_PERCENT: f64 = 5.0;
/// Interarrival jitter above this is a warning.
pub const JITTER_WARN_MS: f64 = 30.0;
/// A received track silent this long while the session is connected is a warning.
pub const SILENT_WARN_MS: u64 = 5_000;
/// Packets a track must have been expected to send before its loss is judged.
const LOSS_MIN_PACKETS: u64 = 100;

/// The findings of `report`, worst first.
pub fn judge(report: &Report) -> Vec<Finding> {
    let mut findings = Vec::new();
    let mut add = |level, text: String, basis| findings.push(Finding { level, text, basis });
    http(report, &mut add);
    offer(report, &mut add);
    connectivity(report, &mut add);
    media(report, &mut add);
    findings.sort_by_key(|f| std::cmp::Reverse(f.level));
    findings
}

fn http(report: &Report, add: &mut impl FnMut(Level, String, &'static str)) {
    let h = &report.http;
    if h.patches_without_if_match > 0 {
        add(
            Level::Fail,
            format!(
                "{} PATCH request(s) without If-Match were refused",
                h.patches_without_if_match
            ),
            "RFC 9725 §4.3.1: a PATCH carries If-Match with the session's ETag",
        );
    }
    // Ended by consent loss or a DTLS close_notify, with no DELETE then or within the grace
    // period after.
    let vanished = matches!(report.ended, Some("failed" | "closed"));
    if vanished && !h.deleted {
        add(
            Level::Warn,
            "the client stopped without DELETE: its session ended only when connectivity was lost"
                .into(),
            "RFC 9725 §4.2: the client ends its session with an HTTP DELETE",
        );
    }
    if h.deleted {
        add(
            Level::Ok,
            "the session was ended by DELETE".into(),
            "RFC 9725 §4.2",
        );
    }
    if h.trickled_candidates > 0 && !h.end_of_candidates {
        add(
            Level::Warn,
            "candidates were trickled but end-of-candidates never came".into(),
            "RFC 8840 §4.4: a trickling agent signals the end of its candidates",
        );
    }
}

fn offer(report: &Report, add: &mut impl FnMut(Level, String, &'static str)) {
    let o = &report.offer;
    if !o.bundled {
        add(
            Level::Fail,
            "the offer does not bundle its media sections in one BUNDLE group".into(),
            "RFC 9725 §4.4.1: WHIP clients use SDP BUNDLE (RFC 9143)",
        );
    }
    if !o.rtcp_mux {
        add(
            Level::Fail,
            "a media section of the offer lacks a=rtcp-mux".into(),
            "RFC 9725 §4.4.1 and RFC 8834 §4.5: RTP and RTCP on one port (RFC 5761)",
        );
    }
    if o.candidates.total == 0 && report.http.trickled_candidates == 0 {
        add(
            Level::Ok,
            "no candidates were sent (neither in the offer nor trickled): the server found the \
             client by its connectivity checks (peer-reflexive)"
                .into(),
            "RFC 8445 §7.3.1.3",
        );
    }
}

fn connectivity(report: &Report, add: &mut impl FnMut(Level, String, &'static str)) {
    let c = &report.connectivity;
    match c.connected_ms {
        Some(ms) => add(
            Level::Ok,
            format!(
                "connected in {ms} ms (POST to ICE and DTLS up) over {}",
                c.transport.unwrap_or("?")
            ),
            "measured",
        ),
        None if report.state == "ended" => add(
            Level::Fail,
            "ICE and DTLS never connected".into(),
            "RFC 8445 §7.2.5 (connectivity checks), RFC 5763 (DTLS-SRTP)",
        ),
        None => {}
    }
}

fn media(report: &Report, add: &mut impl FnMut(Level, String, &'static str)) {
    let settled = (report.connectivity.connected_ms)
        .is_some_and(|ms| report.age_ms.saturating_sub(ms) >= SETTLED_MS);
    let sends = report.role != "whep";
    let receives = report.role != "whip";
    let from_client = || {
        report
            .tracks
            .iter()
            .filter(|t| t.direction == "from_client")
    };
    if settled && sends && report.connectivity.first_media_ms.is_none() {
        add(
            Level::Fail,
            "no media arrived from the client".into(),
            "RFC 9725 §4.2: a WHIP client sends media",
        );
    }
    if settled && sends && report.rtcp.sender_reports == 0 && from_client().count() > 0 {
        add(
            Level::Warn,
            "no RTCP sender reports from the client".into(),
            "RFC 3550 §6.4.1: an active RTP sender sends sender reports",
        );
    }
    if settled && receives && report.rtcp.reception_reports == 0 {
        add(
            Level::Warn,
            "no RTCP receiver reports from the client about the media it was sent".into(),
            "RFC 3550 §6.4: a receiver reports reception (in RR, or in SR when it also sends)",
        );
    }
    if let Some(k) = &report.keyframes {
        if k.requests_sent >= 3 && k.answered * 2 < k.requests_sent {
            add(
                Level::Warn,
                format!(
                    "keyframe requests not answered: {} of {} answered within 1 s, so a late \
                     viewer waits for the encoder's own keyframe interval",
                    k.answered, k.requests_sent
                ),
                "RFC 4585 §6.3.1 (PLI) and RFC 5104 §3.5.1 (FIR): a request asks for a keyframe; measured",
            );
        }
    }
    for t in from_client() {
        let expected = t.packets.saturating_add_signed(t.lost.max(0));
        if expected >= LOSS_MIN_PACKETS && t.loss_percent > LOSS_WARN_PERCENT {
            add(
                Level::Warn,
                format!(
                    "{} track {:08x}: {:.1} % of its packets lost on the way",
                    t.kind, t.ssrc, t.loss_percent
                ),
                "measured: more than 5 % lost (RFC 3550 A.3)",
            );
        }
        if t.jitter_ms > JITTER_WARN_MS {
            add(
                Level::Warn,
                format!(
                    "{} track {:08x}: jitter {:.0} ms",
                    t.kind, t.ssrc, t.jitter_ms
                ),
                "measured: interarrival jitter over 30 ms (RFC 3550 A.8)",
            );
        }
        if report.state == "connected" && t.idle_ms >= SILENT_WARN_MS {
            add(
                Level::Warn,
                format!(
                    "{} track {:08x} went silent: nothing for {:.1} s",
                    t.kind,
                    t.ssrc,
                    t.idle_ms as f64 / 1000.0
                ),
                "measured: no packet for 5 s while connected",
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::{ClientRtcp, Connectivity, Http, OfferFacts, Track};

    fn settled_publisher() -> Report {
        Report {
            role: "whip",
            stream: "s".into(),
            state: "connected",
            ended: None,
            age_ms: 60_000,
            findings: Vec::new(),
            http: Http::default(),
            offer: OfferFacts {
                bundled: true,
                rtcp_mux: true,
                ..OfferFacts::default()
            },
            chosen: Vec::new(),
            connectivity: Connectivity {
                connected_ms: Some(20),
                first_media_ms: Some(25),
                ..Connectivity::default()
            },
            tracks: Vec::new(),
            rtcp: ClientRtcp {
                sender_reports: 50,
                ..ClientRtcp::default()
            },
            keyframes: None,
        }
    }

    fn levels(report: &Report) -> Vec<(Level, String)> {
        judge(report)
            .into_iter()
            .map(|f| (f.level, f.text))
            .collect()
    }

    #[test]
    fn a_publisher_that_sent_and_reported_gets_no_warning() {
        let mut report = settled_publisher();
        report.tracks.push(Track {
            direction: "from_client",
            kind: "audio",
            packets: 3_000,
            ..Track::default()
        });
        assert!(
            levels(&report).iter().all(|(l, _)| *l == Level::Ok),
            "{:?}",
            levels(&report)
        );
    }

    #[test]
    fn media_that_stopped_is_a_silent_track_not_media_that_never_came() {
        let mut report = settled_publisher();
        report.tracks.push(Track {
            direction: "from_client",
            kind: "video",
            packets: 3_000,
            idle_ms: 8_000,
            ..Track::default()
        });
        let found = levels(&report);
        assert!(found
            .iter()
            .any(|(l, t)| *l == Level::Warn && t.contains("went silent")));
        assert!(
            !found.iter().any(|(_, t)| t.contains("no media arrived")),
            "{found:?}"
        );
        // Only a publisher that never sent is told that.
        let mut never = settled_publisher();
        never.connectivity.first_media_ms = None;
        assert!(levels(&never)
            .iter()
            .any(|(l, t)| *l == Level::Fail && t.contains("no media")));
    }

    #[test]
    fn an_echo_client_reporting_reception_in_its_sender_reports_is_not_warned() {
        let mut report = settled_publisher();
        report.role = "echo";
        report.rtcp.reception_reports = 40;
        assert!(!levels(&report)
            .iter()
            .any(|(_, t)| t.contains("receiver reports")));
        report.rtcp.reception_reports = 0;
        assert!(levels(&report)
            .iter()
            .any(|(_, t)| t.contains("receiver reports")));
    }
}
