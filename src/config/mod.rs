//! Command-line and environment configuration: one clap struct, parsed once in `main` and passed down.
//! Library code never reads environment variables.

mod access;
mod cluster;
mod secrets;
mod turn;

pub use access::AccessFlags;
pub use cluster::ClusterFlags;
pub use turn::TurnFlags;

pub(crate) use secrets::redact_url;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, ValueEnum};

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line (for log collectors).
    Json,
}

/// What a second publisher of a live stream gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum PublisherConflict {
    /// The new publisher replaces the old one, whose session ends (a reconnecting encoder or a
    /// reloaded page is never locked out; mediamtx's `overridePublisher: yes`). Viewers keep
    /// playing on the same SSRC.
    Takeover,
    /// 409 while the old publisher is live; one whose consent checks already fail is replaced.
    Reject,
}

/// What the binary does instead of serving.
#[derive(Debug, Clone, PartialEq, Eq, clap::Subcommand)]
pub enum Subcommand {
    /// Asks the server on --listen (same flags and environment as the server's) for
    /// `/readyz`; exits 0 when it answers 200. For container health checks, with no curl in
    /// the image.
    Healthcheck,
}

/// whip-echo: a WHIP (RFC 9725) / WHEP audio echo server.
#[derive(Debug, Clone, Parser)]
#[command(name = "whip-echo", version, about)]
pub struct Config {
    /// Instead of serving, run a subcommand.
    #[command(subcommand)]
    pub command: Option<Subcommand>,

    /// HTTP listen address (WHIP/WHEP endpoints, resources and the echo page).
    #[arg(long, env = "WHIP_ECHO_LISTEN", default_value = "0.0.0.0:8080")]
    pub listen: SocketAddr,

    /// UDP port shared by every session's ICE/DTLS/RTP traffic (0 = ephemeral, for tests).
    #[arg(long, env = "WHIP_ECHO_UDP_PORT", default_value_t = 8189)]
    pub udp_port: u16,

    /// TCP port shared by every session's ICE-TCP connections (RFC 6544 passive candidates,
    /// RFC 4571 framing), for clients whose network drops UDP (0 = ephemeral, for tests).
    #[arg(long, env = "WHIP_ECHO_TCP_PORT", default_value_t = 8189)]
    pub tcp_port: u16,

    /// PEM certificate chain for HTTPS on the HTTP port (with --tls-key). Plain HTTP and ICE-TCP
    /// stay available on the same port; a first byte of 0x16 is TLS.
    #[arg(long, env = "WHIP_ECHO_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,

    /// PEM private key of --tls-cert.
    #[arg(long, env = "WHIP_ECHO_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,

    /// Also take ICE-TCP connections on the HTTP port (told apart from HTTP by their first byte)
    /// and announce it as a candidate, so a host that exposes one TCP port carries media too.
    #[arg(long, env = "WHIP_ECHO_MEDIA_ON_HTTP_PORT", default_value_t = true,
          action = clap::ArgAction::Set)]
    pub media_on_http_port: bool,

    /// Media loops, each on an OS thread of its own, all on the one --udp-port (a socket each,
    /// SO_REUSEPORT: the kernel spreads clients over them, and a loop hands a datagram for
    /// another loop's session over to it). 0: one per core. A stream's sessions share one loop
    /// (chosen by stream name), so fan-out never crosses loops.
    #[arg(long, env = "WHIP_ECHO_MEDIA_THREADS", default_value_t = 0,
          value_parser = clap::value_parser!(u16).range(0..=64))]
    pub media_threads: u16,

    /// Address (or host name, resolved at start-up) the UDP sockets bind to. With 0.0.0.0 the
    /// host candidates are the machine's interface addresses; with a specific address, only that
    /// one. On Fly.io: `fly-global-services`.
    #[arg(long, env = "WHIP_ECHO_UDP_HOST", default_value = "0.0.0.0")]
    pub udp_host: String,

    /// Address (or host name) the ICE-TCP listener binds to; by default the --udp-host address.
    /// On Fly.io, where UDP binds `fly-global-services`, TCP must bind 0.0.0.0.
    #[arg(long, env = "WHIP_ECHO_TCP_HOST")]
    pub tcp_host: Option<String>,

    /// Public address announced as an extra host candidate (NAT 1:1, e.g. a cloud VM's elastic IP),
    /// or a host name whose addresses are (resolved at start-up). Repeatable; as an env var,
    /// comma-separated.
    #[arg(long = "public-ip", env = "WHIP_ECHO_PUBLIC_IP", value_delimiter = ',')]
    pub public_ips: Vec<String>,

    /// A public HOST:PORT (host name or address) that forwards to --tcp-port from outside, such
    /// as a PaaS TCP proxy (Railway's generated `host:port`) or a port-forwarding NAT: announced
    /// as one more passive ICE-TCP candidate. Host names are resolved at start-up. Repeatable;
    /// as an env var, comma-separated.
    #[arg(
        long = "public-tcp",
        env = "WHIP_ECHO_PUBLIC_TCP",
        value_delimiter = ','
    )]
    pub public_tcp: Vec<String>,

    /// A public HOST:PORT that forwards UDP to --udp-port from outside (a port-forwarding NAT
    /// whose outside port differs from the bound one), announced as one more UDP host
    /// candidate. Host names are resolved at start-up. Repeatable; as an env var,
    /// comma-separated.
    #[arg(
        long = "public-udp",
        env = "WHIP_ECHO_PUBLIC_UDP",
        value_delimiter = ','
    )]
    pub public_udp: Vec<String>,

    /// A STUN server (HOST:PORT) asked at start-up which public address the UDP media socket
    /// has; the answer is announced like a --public-ip. Off by default.
    #[arg(long, env = "WHIP_ECHO_STUN_DISCOVER")]
    pub stun_discover: Option<String>,

    /// Announce only the --public-ip, --public-tcp and --public-udp addresses, not the local
    /// interface addresses.
    #[arg(long, env = "WHIP_ECHO_PUBLIC_IP_ONLY", default_value_t = false)]
    pub public_ip_only: bool,

    /// Allowed CORS origins, comma-separated; `*` allows any origin.
    #[arg(
        long,
        env = "WHIP_ECHO_CORS_ORIGINS",
        value_delimiter = ',',
        default_value = "*"
    )]
    pub cors_origins: Vec<String>,

    /// Who may publish and play: bearer tokens, JWTs, the admin token.
    #[command(flatten)]
    pub access: AccessFlags,

    /// The STUN and TURN servers clients are told of.
    #[command(flatten)]
    pub turn: TurnFlags,

    /// Maximum number of live sessions (publishers, viewers and echoes together); beyond it POST gets 503.
    #[arg(long, env = "WHIP_ECHO_MAX_SESSIONS", default_value_t = 2000)]
    pub max_sessions: usize,

    /// Most live sessions one client IP may hold; beyond it POST gets 429. 0: no limit. Behind a
    /// reverse proxy every client has the proxy's IP: set --client-ip-header.
    #[arg(long, env = "WHIP_ECHO_MAX_SESSIONS_PER_IP", default_value_t = 100)]
    pub max_sessions_per_ip: usize,

    /// Most live sessions the /64s of one IPv6 /48 may hold together; beyond it POST gets 429.
    /// 0: no limit. (An IPv4 client is its address, capped by --max-sessions-per-ip.)
    #[arg(long, env = "WHIP_ECHO_MAX_SESSIONS_PER_PREFIX", default_value_t = 200)]
    pub max_sessions_per_prefix: usize,

    /// Most sessions one client IP (an IPv6 /64) may hold that have not connected yet (ICE and
    /// DTLS); beyond it POST gets 429. 0: no limit. When the server is at --max-sessions, the
    /// oldest session still connecting after --evict-connecting-after is ended to make room for a
    /// new one (from a client with no session of its own still connecting).
    #[arg(
        long,
        env = "WHIP_ECHO_MAX_CONNECTING_SESSIONS_PER_IP",
        default_value_t = 20
    )]
    pub max_connecting_sessions_per_ip: usize,

    /// Seconds a session may stay connecting before, with the server at --max-sessions, it can
    /// be ended to make room for a new one.
    #[arg(long, env = "WHIP_ECHO_EVICT_CONNECTING_AFTER", default_value = "5",
          value_parser = parse_seconds)]
    pub evict_connecting_after: Duration,

    /// POST and PATCH requests one client IP (an IPv6 /64) may send per second, on average;
    /// beyond it 429 with Retry-After. 0: no limit.
    #[arg(long, env = "WHIP_ECHO_REQUEST_RATE_PER_IP", default_value_t = 20)]
    pub request_rate_per_ip: u32,

    /// How many POST and PATCH requests one client IP may send at once before
    /// --request-rate-per-ip applies (a page with many players sends their POSTs and trickle
    /// PATCHes together).
    #[arg(long, env = "WHIP_ECHO_REQUEST_BURST_PER_IP", default_value_t = 100)]
    pub request_burst_per_ip: u32,

    /// ICE restarts (RFC 9725 §4.3.3) one session may make per minute, three at once at most;
    /// one more gets 429 with Retry-After. A restart of a session that never connected does not
    /// extend its setup deadline. 0: no limit.
    #[arg(long, env = "WHIP_ECHO_ICE_RESTARTS_PER_MINUTE", default_value_t = 6)]
    pub ice_restarts_per_minute: u32,

    /// Connectivity checks the media loops may send per second in all (twice that at once; each
    /// loop an even share) to addresses that never answered one; more are dropped (a client's offer names the addresses its
    /// session checks: unbounded, the server sends checks wherever clients tell it). Checks to
    /// addresses that answered are not counted. 0: no limit.
    #[arg(
        long,
        env = "WHIP_ECHO_UNANSWERED_CHECKS_PER_SECOND",
        default_value_t = 2000
    )]
    pub unanswered_checks_per_second: u32,

    /// A request header naming the client's IP, set by a reverse proxy in front (e.g.
    /// `X-Forwarded-For`, `Fly-Client-IP`); its last comma-separated entry is taken (the one the
    /// nearest proxy added). Unset: the TCP peer's address. Only set it behind a proxy that
    /// writes the header, or clients choose their own IP.
    #[arg(long, env = "WHIP_ECHO_CLIENT_IP_HEADER")]
    pub client_ip_header: Option<String>,

    /// Open HTTP connections at most; a connection beyond it is answered 503 and closed.
    #[arg(long, env = "WHIP_ECHO_MAX_HTTP_CONNECTIONS", default_value_t = 1024)]
    pub max_http_connections: usize,

    /// Open HTTP connections from one client IP (an IPv6 /64) at most; one more is answered 503
    /// and closed. 0: no limit. Behind a reverse proxy every connection is the proxy's.
    #[arg(
        long,
        env = "WHIP_ECHO_MAX_HTTP_CONNECTIONS_PER_IP",
        default_value_t = 256
    )]
    pub max_http_connections_per_ip: usize,

    /// TCP connections each listener (the HTTP port, the ICE-TCP port) holds before they say what
    /// they are (a first byte, a TLS handshake, an ICE-TCP request its session answered); when
    /// full, the oldest is closed to make room for the newest.
    #[arg(
        long,
        env = "WHIP_ECHO_MAX_PENDING_CONNECTIONS",
        default_value_t = 1024
    )]
    pub max_pending_connections: usize,

    /// Of those, at most this many from one client IP (an IPv6 /64) per listener; one more is
    /// closed at once. 0: no limit.
    #[arg(
        long,
        env = "WHIP_ECHO_MAX_PENDING_CONNECTIONS_PER_IP",
        default_value_t = 32
    )]
    pub max_pending_connections_per_ip: usize,

    /// Seconds a new TCP connection has to send its first byte, to finish its TLS handshake, to
    /// send its first ICE-TCP request, and for that request to be answered by its session
    /// (each step in turn); then it is closed.
    #[arg(long, env = "WHIP_ECHO_TCP_SETUP_TIMEOUT", default_value = "3",
          value_parser = parse_seconds)]
    pub tcp_setup_timeout: Duration,

    /// ICE-TCP connections bound to sessions, at most (both ports together). 0: derived at
    /// start-up, the smaller of 8 per --max-sessions and what the open-file limit leaves after
    /// the HTTP and pending connections.
    #[arg(long, env = "WHIP_ECHO_MAX_ICE_TCP_CONNECTIONS", default_value_t = 0)]
    pub max_ice_tcp_connections: usize,

    /// ICE-TCP connections one client IP (an IPv6 /64) may hold. 0: no limit.
    #[arg(
        long,
        env = "WHIP_ECHO_MAX_ICE_TCP_CONNECTIONS_PER_IP",
        default_value_t = 64
    )]
    pub max_ice_tcp_connections_per_ip: usize,

    /// ICE-TCP connections one session may hold (RFC 6544: one per pair of candidates; a
    /// client opens one to each passive candidate it pairs with).
    #[arg(
        long,
        env = "WHIP_ECHO_MAX_ICE_TCP_CONNECTIONS_PER_SESSION",
        default_value_t = 8,
        value_parser = clap::value_parser!(u16).range(1..)
    )]
    pub max_ice_tcp_connections_per_session: u16,

    /// Seconds a client has to send a request's headers; also how long an idle keep-alive
    /// connection stays open (a slow or silent client holds a connection no longer).
    #[arg(long, env = "WHIP_ECHO_HTTP_HEADER_TIMEOUT", default_value = "10",
          value_parser = parse_seconds)]
    pub http_header_timeout: Duration,

    /// Seconds a request may take once its headers are in, body included; then 408.
    #[arg(long, env = "WHIP_ECHO_HTTP_REQUEST_TIMEOUT", default_value = "15",
          value_parser = parse_seconds)]
    pub http_request_timeout: Duration,

    /// What a POST to a stream that already has a publisher (WHIP or echo) gets: `takeover`
    /// (the new publisher replaces the old one) or `reject` (409). Default: `takeover` when
    /// bearer tokens are required, `reject` when anyone may publish (anyone could otherwise
    /// replace any stream's publisher for every viewer).
    #[arg(long, env = "WHIP_ECHO_PUBLISHER_CONFLICT", value_enum)]
    pub publisher_conflict: Option<PublisherConflict>,

    /// Most a publishing session may send, in bits per second (RTP payloads and headers, audio and
    /// video together); packets beyond it are dropped, not forwarded. 0: no cap.
    #[arg(long, env = "WHIP_ECHO_MAX_BITRATE", default_value_t = 8_000_000)]
    pub max_bitrate: u64,

    /// Seconds without ICE connectivity (setup or consent, RFC 7675) before a session is torn down.
    #[arg(long, env = "WHIP_ECHO_ICE_TIMEOUT", default_value = "30", value_parser = parse_seconds)]
    pub ice_timeout: Duration,

    /// At start-up, connect a loopback client to every media path (each UDP port, the ICE-TCP
    /// port, the HTTP port) and report which answer, in the log and in `/healthz`.
    #[arg(long, env = "WHIP_ECHO_SELF_TEST", default_value_t = true,
          action = clap::ArgAction::Set)]
    pub self_test: bool,

    /// Cluster mode.
    #[command(flatten)]
    pub cluster: ClusterFlags,

    /// Log filter (tracing EnvFilter syntax, e.g. `info` or `whip_echo=debug`). Whatever it is,
    /// the WebRTC stack's per-connection chatter stays out unless it names those targets itself
    /// (`telemetry::QUIET`: rtc-dtls warns about every TLS extension it does not know in a
    /// ClientHello, 2 to 18 lines per OBS, GStreamer, aiortc or browser handshake).
    #[arg(long, env = "WHIP_ECHO_LOG", default_value = "info")]
    pub log: String,

    /// Log format.
    #[arg(long, env = "WHIP_ECHO_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
}

impl Config {
    /// How many media loops run: `--media-threads`, or one per core when it is 0.
    pub fn media_loops(&self) -> usize {
        match self.media_threads {
            0 => std::thread::available_parallelism().map_or(1, |n| n.get().min(64)),
            n => usize::from(n),
        }
    }

    /// `--publisher-conflict`, or its default: `takeover` when tokens or a JWT key are
    /// configured, `reject` when auth is off.
    pub fn publisher_conflict(&self) -> PublisherConflict {
        self.publisher_conflict
            .unwrap_or(if self.auth_configured() {
                PublisherConflict::Takeover
            } else {
                PublisherConflict::Reject
            })
    }

    /// Whether any bearer token or JWT key is configured (auth on).
    pub fn auth_configured(&self) -> bool {
        !self.access.publish_tokens.is_empty()
            || !self.access.play_tokens.is_empty()
            || self.access.jwt_secret.is_some()
            || self.access.jwt_public_key.is_some()
    }

    /// A configuration for in-process tests: HTTP and UDP on ephemeral loopback ports.
    pub fn for_tests() -> Self {
        let mut config = Config::parse_from(["whip-echo"]);
        config.listen = "127.0.0.1:0".parse().expect("literal address");
        config.udp_port = 0;
        config.tcp_port = 0;
        config.udp_host = "127.0.0.1".into();
        // Its sessions would count against the caps that tests measure.
        config.self_test = false;
        // Two loops on the one UDP port, whatever the machine (the default on a 2-core one): every
        // test then crosses the handover between loops' sockets about half the time.
        config.media_threads = 2;
        config
    }
}

/// Parses a duration given in (possibly fractional) seconds, e.g. `30` or `1.5`.
fn parse_seconds(s: &str) -> Result<Duration, String> {
    let secs: f64 = s
        .trim()
        .parse()
        .map_err(|_| format!("not a number of seconds: {s}"))?;
    if !(secs.is_finite() && secs > 0.0 && secs <= 86_400.0) {
        return Err(format!("seconds must be in (0, 86400]: {s}"));
    }
    Ok(Duration::from_secs_f64(secs))
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_logged_configuration_has_no_secret() {
        let c = Config::try_parse_from([
            "whip-echo",
            "--publish-token",
            "pub-secret-1@live",
            "--play-token",
            "play-secret-2",
            "--jwt-secret",
            "jwt-secret-3-of-at-least-thirty-two-bytes",
            "--turn-secret",
            "turn-secret-4",
            "--cluster-redis",
            "redis://user:redis-pw-5@r:6379",
            "--cluster-secret",
            "cluster-secret-6",
        ])
        .unwrap();
        let logged = format!("{:?}", c.redacted());
        for secret in [
            "pub-secret-1",
            "play-secret-2",
            "jwt-secret-3",
            "turn-secret-4",
            "redis-pw-5",
            "cluster-secret-6",
        ] {
            assert!(!logged.contains(secret), "{secret} in {logged}");
        }
        assert!(logged.contains("<redacted>@live"), "{logged}");
        assert!(
            logged.contains("redis://user:<redacted>@r:6379"),
            "{logged}"
        );
    }

    use super::*;

    #[test]
    fn defaults_need_no_options() {
        let c = Config::try_parse_from(["whip-echo"]).unwrap();
        assert_eq!(c.listen, "0.0.0.0:8080".parse::<SocketAddr>().unwrap());
        assert_eq!(c.udp_port, 8189);
        assert_eq!(c.tcp_port, 8189);
        assert!(c.media_on_http_port);
        let off = Config::try_parse_from(["whip-echo", "--media-on-http-port", "false"]).unwrap();
        assert!(!off.media_on_http_port);
        assert_eq!(c.cors_origins, vec!["*".to_string()]);
        assert_eq!(c.ice_timeout, Duration::from_secs(30));
        assert_eq!(c.publisher_conflict, None);
        assert_eq!(
            c.publisher_conflict(),
            PublisherConflict::Reject,
            "auth off"
        );
        let parse = |args: &[&str]| {
            Config::try_parse_from(std::iter::once("whip-echo").chain(args.iter().copied()))
                .unwrap()
        };
        let with_tokens = parse(&["--publish-token", "t"]);
        assert_eq!(
            with_tokens.publisher_conflict(),
            PublisherConflict::Takeover
        );
        let chosen = parse(&["--publisher-conflict", "takeover"]);
        assert_eq!(chosen.publisher_conflict(), PublisherConflict::Takeover);
    }

    #[test]
    fn secrets_come_from_files() {
        let dir = std::env::temp_dir().join(format!("whip-echo-secrets-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = |name: &str, text: &str| {
            let path = dir.join(name);
            std::fs::write(&path, text).unwrap();
            path.to_string_lossy().into_owned()
        };
        let tokens = file("tokens", "one\n\ntwo@room\n");
        let jwt = file("jwt", "a-secret-of-thirty-two-bytes-or-more\n");
        let redis = file("redis", "redis://u:pw@r:6379\n");
        let mut c = Config::try_parse_from([
            "whip-echo",
            "--publish-token",
            "zero",
            "--publish-token-file",
            &tokens,
            "--jwt-secret-file",
            &jwt,
            "--cluster-redis-file",
            &redis,
        ])
        .unwrap();
        c.read_secret_files().unwrap();
        assert_eq!(c.access.publish_tokens, ["zero", "one", "two@room"]);
        // Read once: a second call adds nothing.
        c.read_secret_files().unwrap();
        assert_eq!(c.access.publish_tokens, ["zero", "one", "two@room"]);
        assert_eq!(
            c.access.jwt_secret.as_deref(),
            Some("a-secret-of-thirty-two-bytes-or-more")
        );
        assert_eq!(
            c.cluster.cluster_redis.as_deref(),
            Some("redis://u:pw@r:6379")
        );
        let empty = file("empty", "\n");
        let mut c = Config::try_parse_from(["whip-echo", "--admin-token-file", &empty]).unwrap();
        assert!(c.read_secret_files().unwrap_err().contains("empty"));
        let mut c =
            Config::try_parse_from(["whip-echo", "--turn-secret-file", "/nonexistent/x"]).unwrap();
        assert!(c
            .read_secret_files()
            .unwrap_err()
            .contains("/nonexistent/x"));
        // A secret and its file together is a mistake.
        assert!(Config::try_parse_from([
            "whip-echo",
            "--jwt-secret",
            "x",
            "--jwt-secret-file",
            &jwt
        ])
        .is_err());
        // Claim checks need a JWT key.
        assert!(Config::try_parse_from(["whip-echo", "--jwt-audience", "a"]).is_err());
        assert!(Config::try_parse_from([
            "whip-echo",
            "--jwt-audience",
            "a",
            "--jwt-secret-file",
            &jwt
        ])
        .is_ok());
        // A static TURN username needs a password, from a flag or a file.
        let pw = file("pw", "p\n");
        assert!(Config::try_parse_from(["whip-echo", "--turn-username", "u"]).is_err());
        assert!(Config::try_parse_from([
            "whip-echo",
            "--turn-username",
            "u",
            "--turn-password-file",
            &pw
        ])
        .is_ok());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn public_ip_is_repeatable() {
        let c = Config::try_parse_from([
            "whip-echo",
            "--public-ip",
            "203.0.113.7",
            "--public-ip",
            "2001:db8::1",
        ])
        .unwrap();
        assert_eq!(c.public_ips.len(), 2);
    }

    #[test]
    fn seconds_parse() {
        assert_eq!(parse_seconds("1.5").unwrap(), Duration::from_millis(1500));
        assert!(parse_seconds("0").is_err());
        assert!(parse_seconds("abc").is_err());
    }
}
