//! Who may publish and play (RFC 9725 §4.7.1 bearer tokens, JWTs) and who may read `/api/streams`.

use std::path::PathBuf;

use clap::Args;

/// Who may publish and play (RFC 9725 §4.7.1 bearer tokens, JWTs) and who may read `/api/streams`.
#[derive(Debug, Clone, Args)]
// Any of the JWT keys (the JWT claim checks need one).
#[command(group(clap::ArgGroup::new("jwt_key").multiple(true).args(
    ["jwt_secret", "jwt_secret_file", "jwt_public_key"]
)))]
pub struct AccessFlags {
    /// A bearer token that may publish (WHIP and /echo): `TOKEN` (every stream), `TOKEN@stream`
    /// or `TOKEN@prefix*`. Repeatable; as an env var, comma-separated. With no token and no JWT
    /// key configured, anyone may publish and play.
    #[arg(
        long = "publish-token",
        env = "WHIP_ECHO_PUBLISH_TOKEN",
        value_delimiter = ','
    )]
    pub publish_tokens: Vec<String>,

    /// A file of --publish-token values, one per line (argv is readable by every user in
    /// `/proc`; a file, such as a container secret, need not be). Adds to --publish-token.
    #[arg(long, env = "WHIP_ECHO_PUBLISH_TOKEN_FILE")]
    pub publish_token_file: Option<PathBuf>,

    /// A bearer token that may play (WHEP), scoped like --publish-token.
    #[arg(
        long = "play-token",
        env = "WHIP_ECHO_PLAY_TOKEN",
        value_delimiter = ','
    )]
    pub play_tokens: Vec<String>,

    /// A file of --play-token values, one per line. Adds to --play-token.
    #[arg(long, env = "WHIP_ECHO_PLAY_TOKEN_FILE")]
    pub play_token_file: Option<PathBuf>,

    /// Shared secret (at least 32 bytes) of HS256 JWT bearer tokens with claims `exp`, `stream`
    /// (a name, `prefix*` or `*`) and `actions` (`publish`, `play`).
    #[arg(long, env = "WHIP_ECHO_JWT_SECRET")]
    pub jwt_secret: Option<String>,

    /// A file holding --jwt-secret (a trailing newline is ignored).
    #[arg(long, env = "WHIP_ECHO_JWT_SECRET_FILE", conflicts_with = "jwt_secret")]
    pub jwt_secret_file: Option<PathBuf>,

    /// JWTs must carry this `aud` claim (RFC 7519 §4.1.3). Unset: a token with an `aud` claim is
    /// refused (a recipient not named in `aud` must reject it).
    #[arg(long, env = "WHIP_ECHO_JWT_AUDIENCE", requires = "jwt_key")]
    pub jwt_audience: Option<String>,

    /// JWTs must carry this `iss` claim (RFC 7519 §4.1.1). Unset: `iss` is not checked.
    #[arg(long, env = "WHIP_ECHO_JWT_ISSUER", requires = "jwt_key")]
    pub jwt_issuer: Option<String>,

    /// PEM public key of RS256 (RSA) or ES256 (EC P-256) JWT bearer tokens, claims as for
    /// --jwt-secret.
    #[arg(long, env = "WHIP_ECHO_JWT_PUBLIC_KEY")]
    pub jwt_public_key: Option<PathBuf>,

    /// Bearer token for `GET /api/streams`. Without it the list is open, unless publish or play
    /// tokens or a JWT key are configured: then the list needs this token.
    #[arg(long, env = "WHIP_ECHO_ADMIN_TOKEN")]
    pub admin_token: Option<String>,

    /// A file holding --admin-token.
    #[arg(
        long,
        env = "WHIP_ECHO_ADMIN_TOKEN_FILE",
        conflicts_with = "admin_token"
    )]
    pub admin_token_file: Option<PathBuf>,
}
