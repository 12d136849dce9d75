//! `run(listener, config, shutdown)` is the server: it binds the shared UDP socket, starts the
//! media loop, serves HTTP until `shutdown` resolves, then closes every session and returns.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use crate::cluster::{Cluster, ClusterConfig};
use crate::config::Config;
use crate::discover;
use crate::http::{self, cors::CorsPolicy, router, AppState};
use crate::ice_servers::{IceServers, TurnCredentials};
use crate::media::{self, MediaConfig, MediaHandle, MediaLoops};
use crate::ports;
use crate::selftest::{self, SelfTest};

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
    /// --udp-port plus --media-threads runs past port 65535.
    #[error("the UDP port range (--udp-port + --media-threads) runs past 65535")]
    PortRange,
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

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> ServerError {
    let what = what.into();
    move |source| ServerError::Io { what, source }
}

/// A server started in the background: its addresses, a handle on its media plane, and the way to
/// stop it. Tests and the conformance suite use it; `main` uses [`run`].
pub struct Running {
    /// The HTTP address.
    pub http_addr: SocketAddr,
    /// The media plane (statistics, UDP address).
    pub media: MediaHandle,
    /// What the start-up self-test found (it changes once, when done).
    pub self_test: watch::Receiver<SelfTest>,
    stop: CancellationToken,
    task: JoinHandle<Result<(), ServerError>>,
}

impl Running {
    /// The base URL of the HTTP API.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.http_addr)
    }

    /// Stops accepting, closes every session and waits for the server to finish.
    pub async fn shutdown(self) -> Result<(), ServerError> {
        self.stop.cancel();
        self.wait().await
    }

    /// Waits for the server to end by itself (a media loop died), without stopping it.
    pub async fn wait(self) -> Result<(), ServerError> {
        self.task.await.unwrap_or(Ok(()))
    }
}

/// Starts the server on `listener` in a background task.
pub async fn spawn(listener: TcpListener, mut config: Config) -> Result<Running, ServerError> {
    config.read_secret_files().map_err(ServerError::Config)?;
    let http_addr = listener.local_addr().map_err(io("HTTP listener address"))?;
    let tls = tls_acceptor(&config)?;
    let stop = CancellationToken::new();
    let http = config.media_on_http_port.then_some(http_addr);
    let planes = start_planes(&config, Some(http_addr), http, stop.child_token()).await?;
    let media = planes.media.clone();
    let self_test = planes.self_test.subscribe();
    let shutdown = stop.clone();
    let task = tokio::spawn(serve(listener, planes, tls, shutdown));
    Ok(Running {
        http_addr,
        media,
        self_test,
        stop,
        task,
    })
}

/// Runs the server on `listener` until `shutdown` resolves.
pub async fn run(
    listener: TcpListener,
    mut config: Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServerError> {
    config.read_secret_files().map_err(ServerError::Config)?;
    let tls = tls_acceptor(&config)?;
    let stop = CancellationToken::new();
    let http_addr = listener.local_addr().map_err(io("HTTP listener address"))?;
    let http = config.media_on_http_port.then_some(http_addr);
    let planes = start_planes(&config, Some(http_addr), http, stop.child_token()).await?;
    let trigger = stop.clone();
    tokio::spawn(async move {
        shutdown.await;
        trigger.cancel();
    });
    serve(listener, planes, tls, stop).await
}

/// Builds both planes without serving: the router, the media handle and the media loops (which
/// end when `stop` is cancelled). `router().oneshot` tests use this directly; it announces no
/// ICE-TCP candidate on an HTTP port (there is none).
pub async fn start_media(
    config: &Config,
    stop: CancellationToken,
) -> Result<(MediaHandle, MediaLoops, axum::Router), ServerError> {
    let planes = start_planes(config, None, None, stop).await?;
    // Nothing serves these planes' self-test: say so rather than "running" for ever.
    planes.self_test.send_replace(SelfTest::Disabled);
    Ok((planes.media, planes.loops, planes.app))
}

/// Both planes, built and not yet served.
struct Planes {
    media: MediaHandle,
    loops: MediaLoops,
    app: axum::Router,
    /// The HTTP connection loop's limits.
    limits: http::Limits,
    /// Where the self-test reports; it starts `Running` when the self-test is on.
    self_test: watch::Sender<SelfTest>,
    /// Cluster mode's handle (its keeper starts with serving).
    cluster: Option<Cluster>,
}

/// [`start_media`], announcing `http` (the HTTP listener's address) as an ICE-TCP candidate too;
/// `bound` is the HTTP listener's address (cluster mode's default node URL).
async fn start_planes(
    config: &Config,
    bound: Option<SocketAddr>,
    http: Option<SocketAddr>,
    stop: CancellationToken,
) -> Result<Planes, ServerError> {
    let metrics = crate::metrics::Metrics::new();
    let stop_http = stop.clone();
    // Configuration errors first, before any socket or thread exists.
    let auth = crate::auth::Auth::from_config(
        &config.publish_tokens,
        &config.play_tokens,
        config.jwt_secret.as_deref(),
        config.jwt_public_key.as_deref(),
    )
    .map_err(ServerError::Config)?
    .map(|auth| auth.expecting(config.jwt_audience.as_deref(), config.jwt_issuer.as_deref()));
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
    let turn = match (
        &config.turn_secret,
        &config.turn_username,
        &config.turn_password,
    ) {
        (Some(secret), _, _) => TurnCredentials::Rest {
            secret: secret.clone(),
            ttl: config.turn_ttl,
        },
        (None, Some(username), Some(password)) => TurnCredentials::Static {
            username: username.clone(),
            password: password.clone(),
        },
        _ => TurnCredentials::None,
    };
    let ice_servers = IceServers::new(&config.ice_servers, turn).map_err(ServerError::Config)?;
    let cluster = ClusterConfig::from_config(config, bound)
        .and_then(|c| c.map(Cluster::new).transpose())
        .map_err(ServerError::Config)?;
    // One port per loop: udp-port, udp-port + 1, ... (all ephemeral when udp-port is 0).
    let last = config
        .udp_port
        .checked_add(config.media_threads.saturating_sub(1));
    if config.udp_port != 0 && last.is_none() {
        return Err(ServerError::PortRange);
    }
    let udp_host = resolve_host("--udp-host", &config.udp_host).await?;
    let tcp_host = match &config.tcp_host {
        Some(host) => resolve_host("--tcp-host", host).await?,
        None => udp_host,
    };
    let mut sockets = Vec::new();
    for i in 0..config.media_threads {
        let port = if config.udp_port == 0 {
            0
        } else {
            config.udp_port + i
        };
        let at = SocketAddr::new(udp_host, port);
        let udp = std::net::UdpSocket::bind(at).map_err(io(format!("binding UDP {at}")))?;
        udp.set_nonblocking(true)
            .map_err(io(format!("binding UDP {at}")))?;
        sockets.push(udp);
    }
    let local_ips = |bind| {
        if config.public_ip_only {
            Vec::new()
        } else {
            media::local_ips(bind)
        }
    };
    let mut public_ips = Vec::new();
    for host in &config.public_ips {
        for ip in resolve_ips("--public-ip", host).await? {
            if !public_ips.contains(&ip) {
                public_ips.push(ip);
            }
        }
    }
    if let Some(server) = &config.stun_discover {
        // A dual-stack name (stun.l.google.com) often lists IPv6 first: ask over the socket's
        // own family.
        let v4 = udp_host.is_ipv4();
        let server = tokio::net::lookup_host(server.as_str())
            .await
            .ok()
            .and_then(|mut all| all.find(|a| a.is_ipv4() == v4))
            .ok_or_else(|| {
                ServerError::Config(format!(
                    "--stun-discover {server}: no address of the UDP socket's family"
                ))
            })?;
        discover_public_ip(&sockets[0], server, &mut public_ips).await;
    }
    let media_config = MediaConfig {
        local_ips: local_ips(udp_host),
        tcp_local_ips: local_ips(tcp_host),
        http_local_ips: http.map_or_else(Vec::new, |addr| local_ips(addr.ip())),
        public_tcp: resolve_all("--public-tcp", &config.public_tcp).await?,
        public_udp: resolve_all("--public-udp", &config.public_udp).await?,
        public_ips,
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
        metrics: metrics.for_loops(),
        node_tag: cluster.as_ref().map(Cluster::tag),
        tcp_limits: tcp_limits(config, http.is_some()),
        ice_restarts_per_minute: config.ice_restarts_per_minute,
        unanswered_checks_per_second: config.unanswered_checks_per_second,
    };
    let at = SocketAddr::new(tcp_host, config.tcp_port);
    let tcp = std::net::TcpListener::bind(at).map_err(io(format!("binding TCP {at} (ICE-TCP)")))?;
    tcp.set_nonblocking(true)
        .map_err(io(format!("binding TCP {at} (ICE-TCP)")))?;
    let tcp_addr = tcp.local_addr().map_err(io("ICE-TCP listener address"))?;
    let (media, loops) = media::spawn(sockets, tcp, http, media_config, stop)?;
    info!(tcp = %tcp_addr, "ICE-TCP listening");
    for udp in media.udp_addrs() {
        info!(%udp, "media plane listening");
    }
    let announced = media.announced();
    for warning in ports::warnings(&announced) {
        warn!("{warning}; announce another port or address (README: Deploying)");
    }
    if announced.is_empty() {
        warn!(
            "no candidate to announce (--public-ip-only without a --public-ip, --public-udp, \
             --public-tcp or --stun-discover answer of the bound address family): no client can \
             connect (README: Deploying)"
        );
    }
    let initial = if config.self_test {
        SelfTest::Running
    } else {
        SelfTest::Disabled
    };
    let (self_test, self_test_rx) = watch::channel(initial);
    let auth = auth.map(Arc::new);
    let state = AppState {
        streams: crate::streams::Streams::new(media.clone(), auth.clone(), cluster.clone()),
        auth,
        ice_servers: ice_servers.map(Arc::new),
        media: media.clone(),
        cors: Arc::new(CorsPolicy::new(&config.cors_origins)),
        self_test: self_test_rx,
        client_ip_header: client_ip_header(config)?,
        metrics,
        stopping: stop_http.clone(),
        admin_token: config.admin_token.as_deref().map(Arc::from),
        request_timeout: config.http_request_timeout,
        cluster: cluster.clone(),
        request_rate: crate::rate::PerClientRate::new(
            config.request_rate_per_ip,
            config.request_burst_per_ip,
        )
        .map(Arc::new),
    };
    let limits = http::Limits {
        header_timeout: config.http_header_timeout,
        max_connections: config.max_http_connections.max(1),
        max_connections_per_ip: config.max_http_connections_per_ip,
    };
    Ok(Planes {
        app: router(state),
        limits,
        media,
        loops,
        self_test,
        cluster,
    })
}

/// The TCP connection limits, the ICE-TCP cap derived from the open-file limit (raised to its
/// hard limit first) unless configured; `shared`: the HTTP port takes ICE-TCP too (a second
/// pending pool).
fn tcp_limits(config: &Config, shared: bool) -> media::TcpLimits {
    let needs = crate::fd_limit::Needs {
        http: config.max_http_connections,
        pending_per_listener: config.max_pending_connections,
        listeners: if shared { 2 } else { 1 },
        sessions: config.max_sessions,
    };
    let nofile = crate::fd_limit::raise();
    let max_ice_tcp = crate::fd_limit::ice_tcp_cap(config.max_ice_tcp_connections, needs, nofile);
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

/// Asks the STUN server `server` for the public address of `socket` and adds its IP to
/// `public_ips`. A failure is logged, not fatal: the local addresses are still announced.
async fn discover_public_ip(
    socket: &std::net::UdpSocket,
    server: SocketAddr,
    public_ips: &mut Vec<std::net::IpAddr>,
) {
    let bound = socket.local_addr().map_or(0, |a| a.port());
    match discover::mapped_address(socket, server).await {
        Ok(mapped) => {
            info!(%server, %mapped, "discovered the public address of the media socket");
            if mapped.port() != bound {
                warn!(%mapped, bound, "the NAT changes the media port: forward it and announce \
                       the outside port with --public-udp, or media may not connect");
            }
            if !public_ips.contains(&mapped.ip()) {
                public_ips.push(mapped.ip());
            }
        }
        Err(error) => warn!(%server, %error, "STUN discovery failed; announcing local addresses"),
    }
}

/// The address of a bind host given as an address or a host name (looked up once, here).
/// A name with several addresses binds its first IPv4 one (like the default 0.0.0.0), else its
/// first.
async fn resolve_host(flag: &str, host: &str) -> Result<std::net::IpAddr, ServerError> {
    let ips = resolve_ips(flag, host).await?;
    let ip = ips
        .iter()
        .copied()
        .find(|ip| ip.is_ipv4())
        .unwrap_or(ips[0]);
    if ips.len() > 1 {
        info!(%host, bound = %ip, "{flag}: binding one of the name's addresses");
    }
    Ok(ip)
}

/// The addresses of `host`, an address or a host name (looked up once, here); never empty.
async fn resolve_ips(flag: &str, host: &str) -> Result<Vec<std::net::IpAddr>, ServerError> {
    if let Ok(ip) = host.parse() {
        return Ok(vec![ip]);
    }
    let mut ips: Vec<std::net::IpAddr> = tokio::net::lookup_host((host, 0))
        .await
        .map_err(|_| ServerError::Config(format!("{flag} {host}: does not resolve")))?
        .map(|addr| addr.ip())
        .collect();
    ips.dedup();
    if ips.is_empty() {
        return Err(ServerError::Config(format!(
            "{flag} {host}: does not resolve"
        )));
    }
    info!(%host, addrs = ?ips, "{flag} resolved");
    Ok(ips)
}

/// Resolves each HOST:PORT (a host name is looked up once, here, at start-up).
async fn resolve_all(flag: &str, targets: &[String]) -> Result<Vec<SocketAddr>, ServerError> {
    let mut out = Vec::with_capacity(targets.len());
    for target in targets {
        let found = tokio::net::lookup_host(target.as_str())
            .await
            .ok()
            .and_then(|mut addrs| addrs.next())
            .ok_or_else(|| {
                ServerError::Config(format!("{flag} {target}: not HOST:PORT that resolves"))
            })?;
        info!(%target, addr = %found, "announcing {flag}");
        out.push(found);
    }
    Ok(out)
}

/// The HTTPS acceptor, when a certificate is configured.
fn tls_acceptor(config: &Config) -> Result<Option<tokio_rustls::TlsAcceptor>, ServerError> {
    match (&config.tls_cert, &config.tls_key) {
        (Some(cert), Some(key)) => crate::tls::acceptor(cert, key)
            .map(Some)
            .map_err(ServerError::Tls),
        _ => Ok(None),
    }
}

/// The HTTP listener as served: alone on its port, or sharing it with ICE-TCP.
enum HttpListener {
    Plain(TcpListener),
    Shared(media::SharedPort),
}

/// The HTTP listener as served, and its address. With media on the HTTP port, RFC 4571-framed
/// STUN there goes to the media plane, TLS through its handshake to axum, and plain HTTP to axum.
fn http_listener(
    listener: TcpListener,
    loops: &MediaLoops,
    tls: Option<tokio_rustls::TlsAcceptor>,
) -> Result<(HttpListener, SocketAddr), ServerError> {
    let addr = listener.local_addr().map_err(io("HTTP listener address"))?;
    let listener = if loops.media_on_http_port() || tls.is_some() {
        let shared = loops.shared_port(listener, tls);
        HttpListener::Shared(shared.map_err(io("sharing the HTTP port"))?)
    } else {
        HttpListener::Plain(listener)
    };
    Ok((listener, addr))
}

/// Serves HTTP until `stop`, then waits for the media loops, which tear every session down. A
/// media loop that dies ends the server with an error (so the process exits non-zero and a
/// supervisor restarts it) rather than leaving it half alive.
async fn serve(
    listener: TcpListener,
    planes: Planes,
    tls: Option<tokio_rustls::TlsAcceptor>,
    stop: CancellationToken,
) -> Result<(), ServerError> {
    let Planes {
        media,
        mut loops,
        app,
        limits,
        self_test,
        cluster,
    } = planes;
    let (listener, addr) = match http_listener(listener, &loops, tls) {
        Ok(prepared) => prepared,
        Err(e) => {
            // The loops are already running: they stop with everything else.
            stop.cancel();
            let _ = loops.join().await;
            return Err(e);
        }
    };
    info!(%addr, "HTTP listening");
    let http_media = loops.media_on_http_port().then_some(addr);
    let keeper = cluster.map(|c| crate::cluster::spawn_keeper(c, media.clone(), stop.clone()));
    let wanted = *self_test.borrow() == SelfTest::Running;
    let self_test = wanted.then(|| {
        let paths = selftest::paths(&media, http_media);
        tokio::spawn(run_self_test(media, paths, self_test, stop.clone()))
    });
    // HTTP connections already open are served until the media loops have closed every
    // session: meanwhile a POST on them gets 503 (`ShuttingDown`) and `/readyz` 503. New
    // connections are refused once stopping begins when the HTTP port is shared with ICE-TCP
    // (its acceptor belongs to the media plane and stops with it), and accepted until then
    // otherwise.
    let close = CancellationToken::new();
    let http_close = close.clone();
    let http = tokio::spawn(async move {
        match listener {
            HttpListener::Plain(plain) => http::serve(plain, app, limits, http_close).await,
            HttpListener::Shared(shared) => http::serve(shared, app, limits, http_close).await,
        }
    });
    let outcome = tokio::select! {
        () = stop.cancelled() => Ok(()),
        (index, media::LoopEnd::Died) = loops.next_end() => Err(ServerError::MediaLoopDied(index)),
    };
    info!("stopping: closing every session");
    stop.cancel();
    if let Some(task) = self_test {
        let _ = task.await;
    }
    let joined = loops.join().await;
    if let Some(keeper) = keeper {
        if keeper.await.is_err() {
            error!("the cluster keeper panicked");
        }
    }
    if let Err(index) = joined {
        error!(media_loop = index, "media loop died");
    }
    close.cancel();
    if http.await.is_err() {
        error!("the HTTP server task panicked");
    }
    info!("server stopped");
    outcome.and(joined.map_err(ServerError::MediaLoopDied))
}

/// Runs the self-test once (it ends early with `stop`), logs and publishes what it found.
async fn run_self_test(
    media: MediaHandle,
    paths: Vec<(selftest::PathKind, SocketAddr)>,
    report: watch::Sender<SelfTest>,
    stop: CancellationToken,
) {
    let reports = tokio::select! {
        _ = stop.cancelled() => return,
        reports = selftest::run(&media, &paths) => reports,
    };
    for (line, r) in selftest::summary(&reports).iter().zip(&reports) {
        if r.ok() {
            info!("self-test: {line}");
        } else {
            warn!("self-test: {line}");
        }
    }
    report.send_replace(SelfTest::Done(reports));
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    const WAIT: Duration = Duration::from_secs(15);

    /// `/readyz` says 503, with the reason, once a media loop died and once the server stops.
    #[tokio::test]
    async fn readyz_follows_the_media_loops_and_shutdown() {
        use tower::ServiceExt;
        let stop = CancellationToken::new();
        let (media, _loops, router) = start_media(&Config::for_tests(), stop.clone())
            .await
            .unwrap();
        let readyz = |router: axum::Router| async move {
            let request = axum::http::Request::get("/readyz")
                .body(axum::body::Body::empty())
                .unwrap();
            let response = router.oneshot(request).await.unwrap();
            let status = response.status().as_u16();
            let body = axum::body::to_bytes(response.into_body(), 1024)
                .await
                .unwrap();
            (status, String::from_utf8_lossy(&body).into_owned())
        };
        assert_eq!(readyz(router.clone()).await, (200, "ready\n".into()));
        let mut stats = media.stats();
        media.panic_loop(0).await;
        tokio::time::timeout(WAIT, stats.wait_for(|s| !s.running))
            .await
            .expect("the dead loop is reported")
            .unwrap();
        assert_eq!(
            readyz(router.clone()).await,
            (503, "a media loop stopped\n".into())
        );
        stop.cancel();
        assert_eq!(readyz(router).await, (503, "shutting down\n".into()));
    }

    /// A port already taken is named in the error, with its protocol and address.
    #[tokio::test]
    async fn a_bind_failure_names_the_address() {
        let taken = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let port = taken.local_addr().unwrap().port();
        let mut config = Config::for_tests();
        config.udp_port = port;
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let error = spawn(listener, config)
            .await
            .err()
            .expect("the port is taken");
        assert!(
            error
                .to_string()
                .starts_with(&format!("binding UDP 127.0.0.1:{port}: ")),
            "{error}"
        );
    }

    /// A loop that panics (as one could in rtc's parsing of a hostile datagram) is not hidden: its
    /// statistics say it is not running (so `/healthz` answers 503), and the server ends with an
    /// error that names it, which `main` turns into a non-zero exit.
    #[tokio::test]
    async fn a_media_loop_that_dies_is_seen_and_ends_the_server() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let server = spawn(listener, Config::for_tests()).await.unwrap();
        let http = reqwest::Client::new();
        let health = format!("{}/healthz", server.base_url());
        assert_eq!(http.get(&health).send().await.unwrap().status(), 200);

        let mut stats = server.media.stats();
        server.media.panic_loop(0).await;
        tokio::time::timeout(WAIT, stats.wait_for(|s| !s.running))
            .await
            .expect("the dead loop is reported")
            .unwrap();
        // Nobody asks it to stop: the server ends by itself, with the loop's death as its error.
        let result = tokio::time::timeout(WAIT, server.wait())
            .await
            .expect("the server ends by itself");
        assert!(
            matches!(result, Err(ServerError::MediaLoopDied(0))),
            "{result:?}"
        );
        // Nothing is served any more: the HTTP listener is gone with the server.
        assert!(http.get(&health).send().await.is_err());
    }
}
