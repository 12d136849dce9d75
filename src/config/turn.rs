//! The STUN and TURN servers clients are told of (RFC 9725 §4.6), and their TURN credentials.

use std::path::PathBuf;
use std::time::Duration;

use clap::Args;

use super::parse_seconds;

/// The STUN and TURN servers clients are told of (RFC 9725 §4.6), and their TURN credentials.
#[derive(Debug, Clone, Args)]
pub struct TurnFlags {
    /// A STUN or TURN server told to clients in a `Link` header (RFC 9725 §4.6) on every 201 and
    /// OPTIONS, e.g. `stun:stun.example.org:3478` or `turn:turn.example.org:3478?transport=udp`.
    /// Repeatable; as an env var, comma-separated.
    #[arg(
        long = "ice-server",
        env = "WHIP_ECHO_ICE_SERVERS",
        value_delimiter = ','
    )]
    pub ice_servers: Vec<String>,

    /// Shared secret of the TURN servers (coturn `use-auth-secret`): credentials are minted per
    /// response as `<expiry>:<stream>:<random>` and base64 HMAC-SHA1.
    #[arg(long, env = "WHIP_ECHO_TURN_SECRET", conflicts_with = "turn_username")]
    pub turn_secret: Option<String>,

    /// A file holding --turn-secret.
    #[arg(
        long,
        env = "WHIP_ECHO_TURN_SECRET_FILE",
        conflicts_with_all = ["turn_secret", "turn_username"]
    )]
    pub turn_secret_file: Option<PathBuf>,

    /// Lifetime of minted TURN credentials, in seconds.
    #[arg(long, env = "WHIP_ECHO_TURN_TTL", default_value = "86400", value_parser = parse_seconds)]
    pub turn_ttl: Duration,

    /// Static TURN username (with --turn-password), for TURN servers without a shared secret.
    #[arg(
        long,
        env = "WHIP_ECHO_TURN_USERNAME",
        requires = "turn_password_given"
    )]
    pub turn_username: Option<String>,

    /// Static TURN password.
    #[arg(
        long,
        env = "WHIP_ECHO_TURN_PASSWORD",
        requires = "turn_username",
        group = "turn_password_given"
    )]
    pub turn_password: Option<String>,

    /// A file holding --turn-password.
    #[arg(
        long,
        env = "WHIP_ECHO_TURN_PASSWORD_FILE",
        requires = "turn_username",
        group = "turn_password_given"
    )]
    pub turn_password_file: Option<PathBuf>,
}
