//! Names and addresses start-up looks up once: bind hosts, `--public-ip` names, `HOST:PORT`
//! forwards, and the media socket's public address by STUN (`--stun-discover`).

use std::net::{IpAddr, SocketAddr};

use tracing::{info, warn};

use super::ServerError;
use crate::network::discover;

/// Asks the STUN server `server` for the public address of `socket` and adds its IP to
/// `public_ips`. A failure is logged, not fatal: the local addresses are still announced.
pub(super) async fn discover_public_ip(
    socket: &std::net::UdpSocket,
    server: SocketAddr,
    public_ips: &mut Vec<IpAddr>,
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
pub(super) async fn resolve_host(flag: &str, host: &str) -> Result<IpAddr, ServerError> {
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
pub(super) async fn resolve_ips(flag: &str, host: &str) -> Result<Vec<IpAddr>, ServerError> {
    if let Ok(ip) = host.parse() {
        return Ok(vec![ip]);
    }
    let mut ips: Vec<IpAddr> = tokio::net::lookup_host((host, 0))
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
pub(super) async fn resolve_all(
    flag: &str,
    targets: &[String],
) -> Result<Vec<SocketAddr>, ServerError> {
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
