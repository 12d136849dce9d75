//! Start-up decides everything once, before serving: [`Plan::resolve`] turns the configuration
//! into what the planes are built from (auth, ICE servers and TURN credentials, the cluster, bind
//! hosts, public and forwarded addresses, limits), configuration errors first, before any socket
//! or thread exists; [`Plan::bind`] binds the media sockets (and asks STUN for the public address
//! of the first); `addresses.rs` computes every announced candidate from the result. The media
//! plane only takes sockets and candidates and starts its loops; `server.rs` serves.

pub mod addresses;
mod dns;

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use tracing::{info, warn};

use crate::auth::Auth;
use crate::cluster::{ClusterConfig, Joining};
use crate::config::Config;
use crate::ice_servers::{IceServers, TurnCredentials};
use crate::media::{self, MediaConfig};
use addresses::AddressPlan;

/// Why the server could not start, or stopped on its own.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// A socket could not be bound or used.
    #[error("{what}: {source}")]
    Io {
        /// What was being done (with the address, for binds).
        what: String,
        /// The cause.
        source: std::io::Error,
    },
    /// The media plane could not start.
    #[error("starting the media plane: {0}")]
    Media(#[from] media::MediaError),
    /// A configured address cannot be used.
    #[error("{0}")]
    Config(String),
    /// The TLS certificate or key is unusable.
    #[error("HTTPS: {0}")]
    Tls(String),
    /// A media loop died (a panic); the process should be restarted.
    #[error("media loop {0} died")]
    MediaLoopDied(usize),
}

pub(crate) fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> ServerError {
    let what = what.into();
    move |source| ServerError::Io { what, source }
}

/// What the planes are built from, resolved once from the configuration.
pub struct Plan {
    /// Who may publish and play; `None`: anyone.
    pub auth: Option<Arc<Auth>>,
    /// The STUN/TURN servers clients are told of.
    pub ice_servers: Option<Arc<IceServers>>,
    /// Cluster mode's membership (its node tag), made the cluster once the media plane runs.
    pub cluster: Option<Joining>,
    /// The UDP sockets' bind address.
    pub udp_host: IpAddr,
    /// The ICE-TCP listener's bind address.
    pub tcp_host: IpAddr,
    /// Addresses to announce, before the sockets' ports are known.
    pub addresses: AddressPlan,
    /// `--client-ip-header`.
    pub client_ip_header: Option<axum::http::HeaderName>,
    /// The TCP connection limits.
    pub tcp_limits: media::TcpLimits,
}

/// The media plane's sockets, bound and non-blocking.
pub struct Sockets {
    /// One UDP socket per media loop.
    pub udp: Vec<std::net::UdpSocket>,
    /// The ICE-TCP listener.
    pub tcp: std::net::TcpListener,
}

impl Plan {
    /// Resolves `config`: `bound` is the HTTP listener's address (cluster mode's default node
    /// URL, and whether the server is reachable from other machines), `http` the same when the
    /// HTTP port carries ICE-TCP.
    pub async fn resolve(
        config: &Config,
        bound: Option<SocketAddr>,
        http: Option<SocketAddr>,
    ) -> Result<Plan, ServerError> {
        let auth = auth(config, bound)?;
        let ice_servers =
            IceServers::new(&config.turn.ice_servers, turn(config)).map_err(ServerError::Config)?;
        let cluster = ClusterConfig::from_config(config, bound)
            .and_then(|c| c.map(Joining::new).transpose())
            .map_err(ServerError::Config)?;
        let udp_host = dns::resolve_host("--udp-host", &config.udp_host).await?;
        let tcp_host = match &config.tcp_host {
            Some(host) => dns::resolve_host("--tcp-host", host).await?,
            None => udp_host,
        };
        let addresses = address_plan(config, udp_host, tcp_host, http).await?;
        Ok(Plan {
            auth: auth.map(Arc::new),
            ice_servers: ice_servers.map(Arc::new),
            cluster,
            udp_host,
            tcp_host,
            addresses,
            client_ip_header: client_ip_header(config)?,
            tcp_limits: tcp_limits(config, http.is_some()),
        })
    }

    /// Binds one UDP socket per media loop, all on the one UDP port, and the ICE-TCP listener;
    /// with `--stun-discover`, the UDP port's public address is asked for and announced.
    pub async fn bind(&mut self, config: &Config) -> Result<Sockets, ServerError> {
        let at = SocketAddr::new(self.udp_host, config.udp_port);
        let probe = std::net::UdpSocket::bind(at)
            .and_then(|socket| socket.set_nonblocking(true).map(|()| socket))
            .map_err(io(format!("binding UDP {at}")))?;
        if let Some(server) = &config.stun_discover {
            // A dual-stack name (stun.l.google.com) often lists IPv6 first: ask over the
            // socket's own family.
            let v4 = self.udp_host.is_ipv4();
            let server = tokio::net::lookup_host(server.as_str())
                .await
                .ok()
                .and_then(|mut all| all.find(|a| a.is_ipv4() == v4))
                .ok_or_else(|| {
                    ServerError::Config(format!(
                        "--stun-discover {server}: no address of the UDP socket's family"
                    ))
                })?;
            // Before the group binds: the answer comes back to the socket that asked.
            dns::discover_public_ip(&probe, server, &mut self.addresses.public_ips).await;
        }
        let udp =
            udp_group(probe, config.media_loops()).map_err(io(format!("binding UDP {at}")))?;
        let at = SocketAddr::new(self.tcp_host, config.tcp_port);
        let what = format!("binding TCP {at} (ICE-TCP)");
        let tcp = std::net::TcpListener::bind(at).map_err(io(what.clone()))?;
        tcp.set_nonblocking(true).map_err(io(what))?;
        Ok(Sockets { udp, tcp })
    }

    /// The media plane's settings.
    pub fn media_config(
        &self,
        config: &Config,
        metrics: crate::ops::metrics::LoopMetrics,
    ) -> MediaConfig {
        MediaConfig {
            session_limits: media::SessionLimits {
                max: config.max_sessions,
                max_per_ip: config.max_sessions_per_ip,
                max_per_prefix: config.max_sessions_per_prefix,
                max_connecting_per_ip: config.max_connecting_sessions_per_ip,
                evictable_after: config.evict_connecting_after,
            },
            ice_timeout: config.ice_timeout,
            publisher_conflict: config.publisher_conflict(),
            max_bitrate: config.max_bitrate,
            metrics,
            node_tag: self.cluster.as_ref().map(Joining::tag),
            tcp_limits: self.tcp_limits,
            ice_restarts_per_minute: config.ice_restarts_per_minute,
            unanswered_checks_per_second: config.unanswered_checks_per_second,
        }
    }
}

/// `loops` non-blocking UDP sockets on the port `probe` is bound to: `probe` alone as it is, or a
/// SO_REUSEPORT group in its place, whose members the kernel picks between by each datagram's
/// 4-tuple. The port was bound without the option first, which fails if it is taken: a group would
/// share it with another group (of the same user, the only one Linux lets join) without a word.
fn udp_group(
    probe: std::net::UdpSocket,
    loops: usize,
) -> std::io::Result<Vec<std::net::UdpSocket>> {
    use socket2::{Domain, Protocol, Socket, Type};
    let at = probe.local_addr()?;
    if loops <= 1 {
        return Ok(vec![probe]);
    }
    drop(probe);
    (0..loops)
        .map(|_| {
            let socket = Socket::new(Domain::for_address(at), Type::DGRAM, Some(Protocol::UDP))?;
            #[cfg(unix)]
            socket.set_reuse_port(true)?;
            socket.bind(&at.into())?;
            socket.set_nonblocking(true)?;
            Ok(socket.into())
        })
        .collect()
}

/// `--publish-token`, `--play-token` and the JWT settings; a warning when anyone reachable may
/// publish and play.
fn auth(config: &Config, bound: Option<SocketAddr>) -> Result<Option<Auth>, ServerError> {
    let auth = Auth::from_config(
        &config.access.publish_tokens,
        &config.access.play_tokens,
        config.access.jwt_secret.as_deref(),
        config.access.jwt_public_key.as_deref(),
    )
    .map_err(ServerError::Config)?
    .map(|auth| {
        auth.expecting(
            config.access.jwt_audience.as_deref(),
            config.access.jwt_issuer.as_deref(),
        )
    });
    match (&auth, bound) {
        (Some(auth), _) => info!(?auth, "bearer tokens required to publish and play"),
        (None, Some(addr)) if !addr.ip().is_loopback() => warn!(
            listen = %addr,
            publisher_conflict = ?config.publisher_conflict(),
            "no bearer tokens: whoever reaches this address may publish and play any stream \
             (README: Security; --publish-token, --play-token, --jwt-secret)"
        ),
        _ => {}
    }
    Ok(auth)
}

/// The TURN credentials clients are given: minted per response with `--turn-secret` (the TURN
/// REST scheme), or the static ones.
fn turn(config: &Config) -> TurnCredentials {
    match (
        &config.turn.turn_secret,
        &config.turn.turn_username,
        &config.turn.turn_password,
    ) {
        (Some(secret), _, _) => TurnCredentials::Rest {
            secret: secret.clone(),
            ttl: config.turn.turn_ttl,
        },
        (None, Some(username), Some(password)) => TurnCredentials::Static {
            username: username.clone(),
            password: password.clone(),
        },
        _ => TurnCredentials::None,
    }
}

/// The addresses to announce: the interfaces of each bind host (none with `--public-ip-only`),
/// `--public-ip` (names resolved), `--public-tcp` and `--public-udp`.
async fn address_plan(
    config: &Config,
    udp_host: IpAddr,
    tcp_host: IpAddr,
    http: Option<SocketAddr>,
) -> Result<AddressPlan, ServerError> {
    let local_ips = |bind| {
        if config.public_ip_only {
            Vec::new()
        } else {
            media::local_ips(bind)
        }
    };
    let mut public_ips = Vec::new();
    for host in &config.public_ips {
        for ip in dns::resolve_ips("--public-ip", host).await? {
            if !public_ips.contains(&ip) {
                public_ips.push(ip);
            }
        }
    }
    Ok(AddressPlan {
        local_udp: local_ips(udp_host),
        local_tcp: local_ips(tcp_host),
        local_http: http.map_or_else(Vec::new, |addr| local_ips(addr.ip())),
        public_ips,
        public_tcp: dns::resolve_all("--public-tcp", &config.public_tcp).await?,
        public_udp: dns::resolve_all("--public-udp", &config.public_udp).await?,
    })
}

/// The TCP connection limits, the ICE-TCP cap derived from the open-file limit (raised to its
/// hard limit first) unless configured; `shared`: the HTTP port takes ICE-TCP too (a second
/// pending pool).
fn tcp_limits(config: &Config, shared: bool) -> media::TcpLimits {
    let needs = crate::network::fd_limit::Needs {
        http: config.max_http_connections,
        pending_per_listener: config.max_pending_connections,
        listeners: if shared { 2 } else { 1 },
        sessions: config.max_sessions,
    };
    let nofile = crate::network::fd_limit::raise();
    let max_ice_tcp =
        crate::network::fd_limit::ice_tcp_cap(config.max_ice_tcp_connections, needs, nofile);
    info!(
        open_files = nofile,
        max_ice_tcp, "ICE-TCP connections capped"
    );
    media::TcpLimits {
        max_pending: config.max_pending_connections.max(1),
        max_pending_per_ip: config.max_pending_connections_per_ip,
        setup_wait: config.tcp_setup_timeout,
        max_ice_tcp,
        max_ice_tcp_per_ip: config.max_ice_tcp_connections_per_ip,
        max_ice_tcp_per_session: usize::from(config.max_ice_tcp_connections_per_session),
    }
}

/// `--client-ip-header` as a header name.
fn client_ip_header(config: &Config) -> Result<Option<axum::http::HeaderName>, ServerError> {
    config
        .client_ip_header
        .as_deref()
        .map(|name| {
            axum::http::HeaderName::try_from(name.trim()).map_err(|_| {
                ServerError::Config(format!("--client-ip-header {name}: not a header name"))
            })
        })
        .transpose()
}

/// The HTTPS acceptor, when a certificate is configured.
pub fn tls_acceptor(config: &Config) -> Result<Option<tokio_rustls::TlsAcceptor>, ServerError> {
    match (&config.tls_cert, &config.tls_key) {
        (Some(cert), Some(key)) => crate::http::tls::acceptor(cert, key)
            .map(Some)
            .map_err(ServerError::Tls),
        _ => Ok(None),
    }
}
