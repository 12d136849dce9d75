//! The client report (issue 31): what a session's client did, right and wrong, with the evidence
//! and the RFC section or measured threshold each finding rests on. The HTTP plane records what
//! it saw at the POST ([`Opening`]), the session's media loop keeps the rest (PATCHes, DELETE,
//! the connection's timeline, each track's statistics, the client's RTCP) and builds a
//! [`Report`] when asked, live or within the grace period after the session ended. Pure data
//! here: no sockets, no peer connections; every list is bounded.

pub mod findings;
pub mod kept;
pub mod offer;
mod text;

use serde::Serialize;

pub use offer::OfferFacts;

/// Characters kept of the client's `User-Agent`.
pub const MAX_USER_AGENT: usize = 256;
/// Tracks a report lists at most (received and sent together).
pub const MAX_TRACKS: usize = 16;

/// What the HTTP plane saw of a session's POST.
#[derive(Debug, Clone, Default)]
pub struct Opening {
    /// Its `User-Agent` (cut at [`MAX_USER_AGENT`] characters).
    pub user_agent: Option<String>,
    /// `bearer` when it sent a bearer token, else `none`.
    pub auth: &'static str,
    /// What its offer said.
    pub offer: OfferFacts,
    /// The server's own session (the start-up self-test): no report line in the log.
    pub internal: bool,
}

impl Opening {
    /// The POST of a client that sent `user_agent`, a bearer token or not, and `offer`.
    pub fn new(user_agent: Option<&str>, bearer: bool, offer: &str) -> Self {
        Opening {
            user_agent: user_agent.map(|ua| ua.chars().take(MAX_USER_AGENT).collect()),
            auth: if bearer { "bearer" } else { "none" },
            offer: OfferFacts::read(offer),
            internal: false,
        }
    }

    /// The opening of the server's own session (the start-up self-test, a cluster pull).
    pub fn internal(user_agent: &str, offer: &str) -> Self {
        Opening {
            internal: true,
            ..Opening::new(Some(user_agent), false, offer)
        }
    }
}

/// A whole report (JSON by default; [`Report::text`] for people).
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// `whip`, `whep` or `echo`.
    pub role: &'static str,
    /// The stream it publishes or plays.
    pub stream: String,
    /// `connecting`, `connected`, `disconnected` or `ended`.
    pub state: &'static str,
    /// Why it ended, once it has.
    pub ended: Option<&'static str>,
    /// Milliseconds since the POST.
    pub age_ms: u64,
    /// What each finding below found, first: `ok`, `warn` or `fail`, a sentence, what it rests on.
    pub findings: Vec<Finding>,
    /// What the client did over HTTP.
    pub http: Http,
    /// What its offer said.
    pub offer: OfferFacts,
    /// The codecs whip-echo chose from the offer (`name/clock[/channels]`).
    pub chosen: Vec<String>,
    /// How the connection came up.
    pub connectivity: Connectivity,
    /// What the client sent (`from_client`) and what it was sent (`to_client`), per SSRC.
    pub tracks: Vec<Track>,
    /// The RTCP the client sent.
    pub rtcp: ClientRtcp,
    /// Keyframes asked of it and sent, when it publishes video.
    pub keyframes: Option<Keyframes>,
}

/// What the client did over HTTP.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Http {
    /// The client's `User-Agent`.
    pub user_agent: Option<String>,
    /// `bearer` or `none`.
    pub auth: &'static str,
    /// PATCH requests that reached the session.
    pub patches: u32,
    /// Of those, refused for want of `If-Match` (RFC 9725 §4.3.1).
    pub patches_without_if_match: u32,
    /// Candidates it trickled (RFC 8840), and when the first and the last came after the POST.
    pub trickled_candidates: u32,
    /// When its first trickled candidate came, after the POST (ms).
    pub first_trickle_ms: Option<u64>,
    /// When its last trickled candidate came, after the POST (ms).
    pub last_trickle_ms: Option<u64>,
    /// Whether it sent `a=end-of-candidates`.
    pub end_of_candidates: bool,
    /// ICE restarts it asked for (RFC 9725 §4.3.3).
    pub ice_restarts: u32,
    /// Whether it ended the session by DELETE (RFC 9725 §4.2).
    pub deleted: bool,
}

/// How the connection came up.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Connectivity {
    /// POST → ICE and DTLS connected, the first time (ms).
    pub connected_ms: Option<u64>,
    /// POST → its first RTP packet (ms).
    pub first_media_ms: Option<u64>,
    /// The selected path: `udp` or `tcp` (ICE-TCP, RFC 6544).
    pub transport: Option<&'static str>,
    /// The client's address on it, as whip-echo sees it.
    pub remote: Option<String>,
    /// whip-echo's DTLS role: `server` (the client's offer was `actpass` or `active`) or
    /// `client` (it was `passive`, RFC 8842 §5.3).
    pub dtls_role: &'static str,
}

/// One SSRC's statistics.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Track {
    /// `from_client` or `to_client`.
    pub direction: &'static str,
    /// `audio` or `video`.
    pub kind: &'static str,
    /// The SSRC.
    pub ssrc: u32,
    /// Packets received or sent.
    pub packets: u64,
    /// Payload bytes (sent tracks) or RTP bytes (received).
    pub bytes: u64,
    /// From sequence gaps (RFC 3550 A.3), received tracks only; duplicates can make it negative.
    pub lost: i64,
    /// Of the packets expected.
    pub loss_percent: f64,
    /// Interarrival jitter (RFC 3550 §6.4.1, A.8), received tracks only.
    pub jitter_ms: f64,
    /// Milliseconds since its last packet.
    pub idle_ms: u64,
}

/// The RTCP the client sent (after SRTCP).
#[derive(Debug, Clone, Default, Serialize)]
pub struct ClientRtcp {
    /// Sender reports (RFC 3550 §6.4.1).
    pub sender_reports: u32,
    /// Receiver reports (RFC 3550 §6.4.2).
    pub receiver_reports: u32,
    /// Generic NACKs (RFC 4585 §6.2.1).
    pub nacks: u32,
    /// PLI and FIR (RFC 4585 §6.3.1, RFC 5104 §4.3.1).
    pub keyframe_requests: u32,
    /// TWCC feedback packets whip-echo sent it: there are some only when its packets carry
    /// transport-wide sequence numbers (draft-holmer-rmcat-transport-wide-cc-extensions-01), from
    /// which a browser's encoder estimates its bandwidth.
    pub twcc_feedback_sent: u32,
    /// Reception report blocks about a track whip-echo sends it (in its RRs, or in its SRs when
    /// it sends too, RFC 3550 §6.4).
    pub reception_reports: u32,
    /// What its last reception report about a track whip-echo sends it said.
    pub reported_loss_percent: Option<f64>,
    /// The jitter it reported (ms).
    pub reported_jitter_ms: Option<f64>,
    /// Round trip from its reception reports (RFC 3550 §6.4.1: LSR and DLSR).
    pub rtt_ms: Option<f64>,
}

/// Keyframes asked of a publisher of video, and what it did (RFC 4585 §6.3.1 PLI, RFC 5104
/// §3.5.1 FIR).
#[derive(Debug, Clone, Default, Serialize)]
pub struct Keyframes {
    /// Requests whip-echo sent it (for new viewers, a viewer's PLI, its own connecting).
    pub requests_sent: u32,
    /// Of those, answered by a keyframe within a second.
    pub answered: u32,
    /// Keyframes it sent.
    pub keyframes_received: u32,
}

/// One finding.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Finding {
    /// How it weighs.
    pub level: Level,
    /// What was found.
    pub text: String,
    /// The RFC section or the measured threshold it rests on.
    pub basis: &'static str,
}

/// How a finding weighs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    /// Nothing wrong: what went right.
    Ok,
    /// Works, but not as it should.
    Warn,
    /// Against a MUST, or it did not work.
    Fail,
}

impl Report {
    /// The report for people (`Accept: text/plain`): findings first, then the numbers.
    pub fn text(&self) -> String {
        text::render(self)
    }

    /// Whether a finding failed (`whip-conformance client` exits non-zero then).
    pub fn failed(&self) -> bool {
        self.findings.iter().any(|f| f.level == Level::Fail)
    }
}

/// Whole milliseconds of `d`, as reports give times.
pub fn millis(d: std::time::Duration) -> u64 {
    d.as_millis().min(u128::from(u64::MAX)) as u64
}

/// The public id of the session whose resource is `resource` (`GET /api/sessions`): 16 hex digits
/// of a SHA-256 of it. Not the resource id, which is the capability to PATCH and DELETE the
/// session: knowing this one gives nothing but its report (without the client's address).
pub fn public_id(resource: &crate::session::ResourceId) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, resource.to_string().as_bytes());
    digest.as_ref()[..8]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// One live session as `GET /api/sessions` lists it.
#[derive(Debug, Clone, Serialize)]
pub struct SessionSummary {
    /// Its public id ([`public_id`]).
    pub id: String,
    /// The stream it publishes or plays.
    pub stream: String,
    /// `whip`, `whep` or `echo`.
    pub role: &'static str,
    /// `connecting`, `connected` or `disconnected`.
    pub state: &'static str,
    /// Seconds since its POST.
    pub uptime_seconds: u64,
    /// Its client's `User-Agent`.
    pub user_agent: Option<String>,
    /// `udp` or `tcp`, once connected.
    pub transport: Option<&'static str>,
    /// Bits a second received from and sent to the client, averaged over the session.
    pub bits_per_second: u64,
    /// The largest loss of a track the client sends (%).
    pub loss_percent: f64,
    /// The client's address: only for the admin token.
    pub client: Option<String>,
}

impl SessionSummary {
    /// The summary of `report`, the session's with public id `id`.
    pub fn of(id: String, report: &Report) -> Self {
        let bytes: u64 = report.tracks.iter().map(|t| t.bytes).sum();
        let seconds = (report.age_ms / 1000).max(1);
        let loss = (report.tracks.iter())
            .filter(|t| t.direction == "from_client")
            .map(|t| t.loss_percent)
            .fold(0.0, f64::max);
        SessionSummary {
            id,
            stream: report.stream.clone(),
            role: report.role,
            state: report.state,
            uptime_seconds: report.age_ms / 1000,
            user_agent: report.http.user_agent.clone(),
            transport: report.connectivity.transport,
            bits_per_second: bytes * 8 / seconds,
            loss_percent: loss,
            client: report.connectivity.remote.clone(),
        }
    }
}
