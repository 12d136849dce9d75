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

use crate::cluster::Cluster;
use crate::config::Config;
use crate::http::{self, cors::CorsPolicy, router, AppState};
use crate::media::{self, MediaHandle, MediaLoops};
use crate::network::ports;
use crate::selftest::{self, SelfTest};
pub use crate::startup::ServerError;
use crate::startup::{addresses, io, tls_acceptor, Plan};

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
    let mut plan = Plan::resolve(config, bound, http).await?;
    let sockets = plan.bind(config).await?;
    let udp = (sockets.udp.iter())
        .map(|s| s.local_addr().map_err(io("UDP socket address")))
        .collect::<Result<Vec<_>, _>>()?;
    let tcp = (sockets.tcp.local_addr()).map_err(io("ICE-TCP listener address"))?;
    let announced = addresses::announce(&plan.addresses, &udp, tcp, http);
    let metrics = crate::ops::metrics::Metrics::new();
    let media_config = plan.media_config(config, metrics.for_loops());
    let (media, loops) = media::spawn(
        sockets.udp,
        sockets.tcp,
        announced,
        media_config,
        stop.clone(),
    )?;
    log_listening(&media, tcp);
    let initial = if config.self_test {
        SelfTest::Running
    } else {
        SelfTest::Disabled
    };
    let (self_test, self_test_rx) = watch::channel(initial);
    // The cluster is built after the media plane (whose resource ids carry its tag) and owns
    // its handle.
    let cluster = plan.cluster.take().map(|c| c.with_media(media.clone()));
    let state = app_state(
        config,
        plan,
        cluster.clone(),
        media.clone(),
        (metrics, self_test_rx),
        stop,
    );
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

/// Logs where the media plane listens and what it announces, warning of what clients cannot use.
fn log_listening(media: &MediaHandle, tcp: SocketAddr) {
    info!(%tcp, "ICE-TCP listening");
    for udp in media.udp_addrs() {
        info!(%udp, loops = media.loops(), "media plane listening");
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
}

/// The HTTP plane's state.
fn app_state(
    config: &Config,
    plan: Plan,
    cluster: Option<Cluster>,
    media: MediaHandle,
    (metrics, self_test): (crate::ops::metrics::Metrics, watch::Receiver<SelfTest>),
    stopping: CancellationToken,
) -> AppState {
    let Plan {
        auth,
        ice_servers,
        client_ip_header,
        ..
    } = plan;
    AppState {
        streams: crate::streams::Streams::new(media.clone(), auth.clone(), cluster.clone()),
        auth,
        ice_servers,
        media,
        cors: Arc::new(CorsPolicy::new(&config.cors_origins)),
        self_test,
        client_ip_header,
        metrics,
        stopping,
        admin_token: config.access.admin_token.as_deref().map(Arc::from),
        request_timeout: config.http_request_timeout,
        cluster,
        request_rate: crate::rate::PerClientRate::new(
            config.request_rate_per_ip,
            config.request_burst_per_ip,
        )
        .map(Arc::new),
    }
}

/// The HTTP listener as served: alone on its port, or sharing it with ICE-TCP.
enum HttpListener {
    Plain(TcpListener),
    Shared(http::port::SharedPort),
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
        let (intake, pending, ice) = loops.http_port_intake();
        let (tracker, stop) = intake.tasks();
        let (tracker, stop) = (tracker.clone(), stop.clone());
        let sharing = http::port::Sharing {
            intake,
            pending,
            ice,
            tls,
        };
        let shared = http::port::SharedPort::new(listener, sharing, tracker, stop);
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
    let keeper = cluster.map(|c| crate::cluster::spawn_keeper(c, stop.clone()));
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
    let http = tokio::spawn(serve_http(listener, app, limits, close.clone()));
    let outcome = tokio::select! {
        () = stop.cancelled() => Ok(()),
        (index, media::LoopEnd::Died) = loops.next_end() => Err(ServerError::MediaLoopDied(index)),
    };
    info!("stopping: closing every session");
    stop.cancel();
    let joined = stop_planes(self_test, loops, keeper).await;
    close.cancel();
    if http.await.is_err() {
        error!("the HTTP server task panicked");
    }
    info!("server stopped");
    outcome.and(joined.map_err(ServerError::MediaLoopDied))
}

/// The HTTP listener served until `close`.
async fn serve_http(
    listener: HttpListener,
    app: axum::Router,
    limits: http::Limits,
    close: CancellationToken,
) {
    match listener {
        HttpListener::Plain(plain) => http::serve(plain, app, limits, close).await,
        HttpListener::Shared(shared) => http::serve(shared, app, limits, close).await,
    }
}

/// Waits, once stopping began, for the self-test, the media loops (which tear every session
/// down) and the cluster keeper; `Err` names a media loop that died.
async fn stop_planes(
    self_test: Option<JoinHandle<()>>,
    loops: MediaLoops,
    keeper: Option<JoinHandle<()>>,
) -> Result<(), usize> {
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
    joined
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
