//! External address mapping for UDP: behind a port forward whose outside port differs from the
//! bound one, `--public-udp` announces the outside address and media flows through it; and
//! `--stun-discover` learns the public address from a STUN server at start-up.

use crate::support;

use std::net::SocketAddr;
use std::sync::Arc;

use support::client::{Client, Mode};
use support::{start, wait_idle, WAIT};
use tokio::net::UdpSocket;
use tokio::sync::watch;
use whip_echo::config::Config;

/// A one-client UDP port forward (it rewrites the source as well, as a full-cone NAT does):
/// datagrams to its outside address go to the inside address (told later through `inside`, once
/// the server is up) from its own socket, and replies go back to the last client seen. Returns
/// the outside address and a count of datagrams relayed inward.
async fn forward(
    inside: watch::Receiver<Option<SocketAddr>>,
) -> (SocketAddr, watch::Receiver<usize>) {
    let outside = Arc::new(UdpSocket::bind("127.0.0.1:0").await.unwrap());
    let toward = Arc::new(UdpSocket::bind("127.0.0.1:0").await.unwrap());
    let addr = outside.local_addr().unwrap();
    let (count_tx, count) = watch::channel(0);
    let (client_tx, mut client_rx) = watch::channel(None::<SocketAddr>);
    let (o, t) = (outside.clone(), toward.clone());
    tokio::spawn(async move {
        let mut buf = vec![0u8; 2048];
        while let Ok((n, from)) = o.recv_from(&mut buf).await {
            client_tx.send_replace(Some(from));
            let target = *inside.borrow();
            if let Some(target) = target {
                let _ = t.send_to(&buf[..n], target).await;
                count_tx.send_modify(|c| *c += 1);
            }
        }
    });
    tokio::spawn(async move {
        let mut buf = vec![0u8; 2048];
        while let Ok((n, _)) = toward.recv_from(&mut buf).await {
            let client = *client_rx.borrow_and_update();
            if let Some(client) = client {
                let _ = outside.send_to(&buf[..n], client).await;
            }
        }
    });
    (addr, count)
}

#[tokio::test]
async fn media_flows_through_the_announced_udp_forward() {
    // The forward's outside address goes into the config; the server's port (ephemeral) goes to
    // the forward once the server is up.
    let (inside_tx, inside) = watch::channel(None);
    let (outside, mut relayed) = forward(inside).await;
    let mut config = Config::for_tests();
    config.public_udp = vec![outside.to_string()];
    // Only the forward is announced: the client has no other way in.
    config.public_ip_only = true;
    let server = start(config).await;
    inside_tx.send_replace(Some(server.media.udp_addrs()[0]));

    let url = format!("{}/echo/forwarded", server.base_url());
    let mut client = Client::connect(&url, Mode::SendRecv).await.expect("201");
    let udp_candidates: Vec<&str> = client
        .answer
        .lines()
        .filter(|l| l.starts_with("a=candidate:") && l.contains(" udp "))
        .collect();
    let announced = format!(" {} {} typ host", outside.ip(), outside.port());
    assert_eq!(udp_candidates.len(), 1, "{}", client.answer);
    assert!(udp_candidates[0].contains(&announced), "{}", client.answer);

    client.wait_connected(WAIT).await;
    client.send(b"through the forward");
    assert_eq!(
        &client.next_packet(WAIT).await.payload[..],
        b"through the forward"
    );
    assert!(
        *relayed.borrow_and_update() > 0,
        "the media came through the forward"
    );
    client.delete().await;
    wait_idle(&server).await;
    client.close().await;
    server.shutdown().await.unwrap();
}

/// A STUN server that answers Binding requests as if a NAT had rewritten the sender's address
/// to `public` (keeping the port), counting the requests it saw.
async fn stun_server(public: std::net::IpAddr) -> (SocketAddr, watch::Receiver<usize>) {
    use rtc::stun::message::{Message, Setter, BINDING_SUCCESS};
    use rtc::stun::xoraddr::XorMappedAddress;
    let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let addr = socket.local_addr().unwrap();
    let (seen_tx, seen) = watch::channel(0);
    tokio::spawn(async move {
        let mut buf = vec![0u8; 1500];
        while let Ok((n, from)) = socket.recv_from(&mut buf).await {
            let mut request = Message::new();
            if request.unmarshal_binary(&buf[..n]).is_err() {
                continue;
            }
            seen_tx.send_modify(|c| *c += 1);
            let answer = {
                let mapped = XorMappedAddress {
                    ip: public,
                    port: from.port(),
                };
                let mut answer = Message::new();
                let setters: Vec<Box<dyn Setter>> = vec![
                    Box::new(BINDING_SUCCESS),
                    Box::new(request.transaction_id),
                    Box::new(mapped),
                ];
                answer.build(&setters).unwrap();
                answer.raw
            };
            let _ = socket.send_to(&answer, from).await;
        }
    });
    (addr, seen)
}

#[tokio::test]
async fn the_address_a_stun_server_sees_is_announced() {
    let public: std::net::IpAddr = "203.0.113.77".parse().unwrap();
    let (stun, seen) = stun_server(public).await;
    let mut config = Config::for_tests();
    config.stun_discover = Some(stun.to_string());
    let server = start(config).await;
    // Asked (a stalled test runtime may make it retransmit once).
    assert!(*seen.borrow() >= 1);
    let client = Client::connect(
        &format!("{}/echo/discovered", server.base_url()),
        Mode::SendRecv,
    )
    .await
    .expect("201");
    let udp_port = server.media.udp_addrs()[0].port();
    let tcp_port = server.media.tcp_addr().port();
    for (transport, port) in [("udp", udp_port), ("tcp", tcp_port)] {
        let wanted = format!(" {transport} ");
        let found = client.answer.lines().any(|l| {
            l.starts_with("a=candidate:")
                && l.contains(&wanted)
                && l.contains(&format!(" {public} {port} typ host"))
        });
        assert!(
            found,
            "{transport} {public}:{port} announced:\n{}",
            client.answer
        );
    }
    client.close().await;
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_stun_server_that_never_answers_does_not_stop_the_server() {
    // A bound socket that never answers.
    let silent = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let mut config = Config::for_tests();
    config.stun_discover = Some(silent.local_addr().unwrap().to_string());
    let server = start(config).await;
    let mut client = Client::connect(
        &format!("{}/echo/undiscovered", server.base_url()),
        Mode::SendRecv,
    )
    .await
    .expect("201");
    client.wait_connected(WAIT).await;
    assert!(!client.answer.contains("203.0.113."), "{}", client.answer);
    client.close().await;
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn bind_hosts_may_be_names_and_a_bad_one_is_refused_at_start() {
    // A name that resolves (Fly.io's is `fly-global-services`); TCP bound apart from UDP.
    let mut config = Config::for_tests();
    config.udp_host = "localhost".into();
    config.tcp_host = Some("127.0.0.1".into());
    let server = start(config).await;
    assert!(server.media.udp_addrs()[0].ip().is_loopback());
    assert_eq!(server.media.tcp_addr().ip().to_string(), "127.0.0.1");
    server.shutdown().await.unwrap();

    for flag in ["--udp-host", "--public-ip"] {
        let mut config = Config::for_tests();
        match flag {
            "--udp-host" => config.udp_host = "no-such-host.invalid".into(),
            _ => config.public_ips = vec!["no-such-host.invalid".into()],
        }
        let listener = tokio::net::TcpListener::bind(config.listen).await.unwrap();
        let result = whip_echo::server::spawn(listener, config).await;
        assert!(
            matches!(result, Err(whip_echo::server::ServerError::Config(ref m)) if m.contains(flag)),
            "{flag}: {:?}",
            result.err()
        );
    }
}

#[tokio::test]
async fn a_public_host_name_announces_its_addresses() {
    let mut config = Config::for_tests();
    config.public_ips = vec!["localhost".into()];
    config.public_ip_only = true;
    let server = start(config).await;
    let client = Client::connect(&format!("{}/echo/named", server.base_url()), Mode::SendRecv)
        .await
        .expect("201");
    let udp_port = server.media.udp_addrs()[0].port();
    let announced: Vec<&str> = client
        .answer
        .lines()
        .filter(|l| l.starts_with("a=candidate:") && l.contains(" udp "))
        .collect();
    // localhost is 127.0.0.1 and perhaps ::1: each is announced on the UDP port.
    assert!(
        announced
            .iter()
            .any(|l| l.contains(&format!(" 127.0.0.1 {udp_port} typ host"))),
        "{announced:?}"
    );
    client.close().await;
    server.shutdown().await.unwrap();
}
