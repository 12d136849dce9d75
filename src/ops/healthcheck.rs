//! `whip-echo healthcheck`: one `GET /readyz` to the server on `--listen`, for a container's
//! `HEALTHCHECK` (the runtime image has no curl). Plain HTTP is served on the HTTP port even
//! with `--tls-cert` (the first byte tells them apart), so this needs no TLS client.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::process::ExitCode;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The most the check waits for the server's answer.
const WAIT: Duration = Duration::from_secs(3);

/// Asks the server listening on `listen` whether it is ready: exit 0 on 200, 1 otherwise,
/// with the reason on stderr.
pub async fn run(listen: SocketAddr) -> ExitCode {
    match tokio::time::timeout(WAIT, ready(reachable(listen))).await {
        Ok(Ok(())) => ExitCode::SUCCESS,
        Ok(Err(why)) => {
            eprintln!("not ready: {why}");
            ExitCode::FAILURE
        }
        Err(_) => {
            eprintln!("not ready: no answer within {WAIT:?}");
            ExitCode::FAILURE
        }
    }
}

/// Where to connect for a listen address: a wildcard address is reached on loopback.
fn reachable(listen: SocketAddr) -> SocketAddr {
    let ip = match listen.ip() {
        IpAddr::V4(v4) if v4.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(v6) if v6.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    SocketAddr::new(ip, listen.port())
}

async fn ready(addr: SocketAddr) -> Result<(), String> {
    let mut stream = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| format!("{addr}: {e}"))?;
    stream
        .write_all(b"GET /readyz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .await
        .map_err(|e| e.to_string())?;
    let mut response = Vec::new();
    stream
        .take(4096)
        .read_to_end(&mut response)
        .await
        .map_err(|e| e.to_string())?;
    let text = String::from_utf8_lossy(&response);
    let status = text.lines().next().unwrap_or_default();
    if status.starts_with("HTTP/1.1 200") {
        return Ok(());
    }
    let body = text.split("\r\n\r\n").nth(1).unwrap_or_default().trim();
    Err(format!("{status} {body}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_wildcard_listen_address_is_checked_on_loopback() {
        let any: SocketAddr = "0.0.0.0:8080".parse().unwrap();
        assert_eq!(
            reachable(any),
            "127.0.0.1:8080".parse::<SocketAddr>().unwrap()
        );
        let v6: SocketAddr = "[::]:9".parse().unwrap();
        assert_eq!(reachable(v6), "[::1]:9".parse::<SocketAddr>().unwrap());
        let given: SocketAddr = "192.0.2.1:80".parse().unwrap();
        assert_eq!(reachable(given), given);
    }
}
