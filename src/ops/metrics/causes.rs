//! The label sets and the causes metrics count by.

use prometheus_client::encoding::EncodeLabelSet;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct CauseLabel {
    pub(super) cause: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct ListenerLabel {
    pub(super) listener: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct ReasonLabel {
    pub(super) reason: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct SessionLabels {
    pub(super) role: &'static str,
    pub(super) state: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct HttpLabels {
    pub(super) route: String,
    pub(super) status: u16,
}

/// Why a packet was not forwarded.
#[derive(Debug, Clone, Copy)]
pub enum Dropped {
    /// It named no session (unknown ufrag, unknown source address).
    Unroutable,
    /// Its publisher was over `--max-bitrate`.
    RateCap,
    /// The viewer's leg has another codec than the publisher sends.
    CodecMismatch,
    /// The viewer's leg waits for a keyframe of a new source.
    AwaitingKeyframe,
    /// The viewer's sender or socket refused it (a slow viewer).
    SendFailed,
    /// A connectivity check to an address that never answered one, over its loop's
    /// `--unanswered-checks-per-second`.
    CheckBudget,
    /// Refused by the WebRTC stack: SRTP or SRTCP that did not authenticate or was a replay, a
    /// new SSRC beyond a session's 64 (patched rtc-srtp), or a malformed packet.
    Rejected,
    /// Of a source no viewer takes: a second audio source while the first is live, a second
    /// video track, a simulcast layer no viewer chose (a viewer's leg carries one stream per
    /// kind).
    OtherSource,
    /// RTP that no track of its session took (its SSRC neither signalled nor bound by mid or
    /// rid: simulcast without the rid extension, a stream nobody negotiated; patched rtc).
    Unbound,
    /// For a session of another loop on the same UDP port, whose queue was full (`mesh.rs`).
    HandoverFull,
}

impl Dropped {
    pub(super) const ALL: [Dropped; 10] = [
        Dropped::Unroutable,
        Dropped::RateCap,
        Dropped::CodecMismatch,
        Dropped::AwaitingKeyframe,
        Dropped::SendFailed,
        Dropped::CheckBudget,
        Dropped::Rejected,
        Dropped::OtherSource,
        Dropped::Unbound,
        Dropped::HandoverFull,
    ];

    pub(super) fn label(self) -> &'static str {
        match self {
            Dropped::Unroutable => "unroutable",
            Dropped::RateCap => "rate_cap",
            Dropped::CodecMismatch => "codec_mismatch",
            Dropped::AwaitingKeyframe => "awaiting_keyframe",
            Dropped::SendFailed => "send_failed",
            Dropped::CheckBudget => "check_budget",
            Dropped::Rejected => "rejected",
            Dropped::OtherSource => "other_source",
            Dropped::Unbound => "unbound",
            Dropped::HandoverFull => "handover_full",
        }
    }
}

/// Why a TCP connection was closed by a limit (or refused at accept).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnClosed {
    /// Its client already held `--max-pending-connections-per-ip` unidentified connections.
    PendingPerIp,
    /// Its listener's pool of unidentified connections was full, and it was the oldest.
    PendingEvicted,
    /// No first byte, TLS handshake or first ICE-TCP frame within `--tcp-setup-timeout`.
    SetupTimeout,
    /// Its first ICE-TCP frame was too long, or not a STUN request for a session.
    BadFirstFrame,
    /// No session answered its ICE-TCP requests within `--tcp-setup-timeout`.
    Unanswered,
    /// Its session held `--max-ice-tcp-connections-per-session` already.
    IceTcpPerSession,
    /// Its client held `--max-ice-tcp-connections-per-ip` already.
    IceTcpPerIp,
    /// `--max-ice-tcp-connections` were open.
    IceTcpTotal,
}

impl ConnClosed {
    pub(super) const ALL: [ConnClosed; 8] = [
        ConnClosed::PendingPerIp,
        ConnClosed::PendingEvicted,
        ConnClosed::SetupTimeout,
        ConnClosed::BadFirstFrame,
        ConnClosed::Unanswered,
        ConnClosed::IceTcpPerSession,
        ConnClosed::IceTcpPerIp,
        ConnClosed::IceTcpTotal,
    ];

    pub(super) fn label(self) -> &'static str {
        match self {
            ConnClosed::PendingPerIp => "pending_per_ip",
            ConnClosed::PendingEvicted => "pending_evicted",
            ConnClosed::SetupTimeout => "setup_timeout",
            ConnClosed::BadFirstFrame => "bad_first_frame",
            ConnClosed::Unanswered => "unanswered",
            ConnClosed::IceTcpPerSession => "ice_tcp_per_session",
            ConnClosed::IceTcpPerIp => "ice_tcp_per_ip",
            ConnClosed::IceTcpTotal => "ice_tcp_total",
        }
    }
}

/// Why a request was refused before it did anything (a POST before its session was created).
#[derive(Debug, Clone, Copy)]
pub enum Rejection {
    /// `--max-sessions` reached, and no connecting session to evict (503).
    Capacity,
    /// `--max-sessions-per-ip` reached (429).
    PerIp,
    /// `--max-sessions-per-prefix` reached (429).
    PerPrefix,
    /// `--max-connecting-sessions-per-ip` reached (429).
    ConnectingPerIp,
    /// A POST or PATCH over `--request-rate-per-ip` (429).
    Rate,
    /// An ICE restart over `--ice-restarts-per-minute` (429).
    RestartRate,
}

impl Rejection {
    pub(super) const ALL: [Rejection; 6] = [
        Rejection::Capacity,
        Rejection::PerIp,
        Rejection::PerPrefix,
        Rejection::ConnectingPerIp,
        Rejection::Rate,
        Rejection::RestartRate,
    ];

    pub(super) fn label(self) -> &'static str {
        match self {
            Rejection::Capacity => "capacity",
            Rejection::PerIp => "per_ip",
            Rejection::PerPrefix => "per_prefix",
            Rejection::ConnectingPerIp => "connecting_per_ip",
            Rejection::Rate => "rate",
            Rejection::RestartRate => "restart_rate",
        }
    }
}

/// Why a requested packet was not resent (in the order of [`Refused::ALL`], which indexes the
/// counters).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// Named again in the same compound packet.
    Duplicate,
    /// Resent less than max(RTT, 100 ms) ago.
    TooSoon,
    /// Already resent `MAX_RESENDS` (media::nack) times.
    Exhausted,
    /// Not in the history (never sent on this leg, or too old).
    Unknown,
    /// Named by an FCI beyond `MAX_FCIS` (media::nack) in one compound packet.
    TooMany,
    /// The leg's resend budget was spent.
    Budget,
}

impl Refused {
    pub(super) const ALL: [Refused; 6] = [
        Refused::Duplicate,
        Refused::TooSoon,
        Refused::Exhausted,
        Refused::Unknown,
        Refused::TooMany,
        Refused::Budget,
    ];

    pub(super) fn label(self) -> &'static str {
        match self {
            Refused::Duplicate => "duplicate",
            Refused::TooSoon => "too_soon",
            Refused::Exhausted => "exhausted",
            Refused::Unknown => "unknown",
            Refused::TooMany => "too_many",
            Refused::Budget => "budget",
        }
    }
}
