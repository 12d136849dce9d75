//! Public-address discovery at start-up (`--stun-discover HOST:PORT`, off by default): a STUN
//! Binding request (RFC 8489 §6) sent from the media socket itself, so the answer's
//! XOR-MAPPED-ADDRESS (§14.2) is the address and port the NAT in front of this host gives that
//! socket. whip-echo announces it like a `--public-ip` (a cloud VM's 1:1 NAT keeps the port).

use std::net::SocketAddr;
use std::time::Duration;

use rtc::stun::message::{Getter, Message, Setter, TransactionId, BINDING_REQUEST};
use rtc::stun::xoraddr::XorMappedAddress;
use tokio::net::UdpSocket;

use crate::network::stun_client;

/// How long the STUN server may take, in all.
const DISCOVER_WAIT: Duration = Duration::from_secs(3);
/// Retransmission interval (RFC 8489 §6.2.1 starts at 500 ms).
const RETRANSMIT: Duration = Duration::from_millis(500);

/// Asks the STUN server at `server` which address `socket` has from outside. `socket` is the
/// media socket (a non-blocking std socket, not yet handed to its loop); it is used through a
/// duplicate of its descriptor, closed again before this returns.
pub async fn mapped_address(
    socket: &std::net::UdpSocket,
    server: SocketAddr,
) -> Result<SocketAddr, String> {
    let probe = socket
        .try_clone()
        .and_then(UdpSocket::from_std)
        .map_err(|e| e.to_string())?;
    let mut request = Message::new();
    let setters: Vec<Box<dyn Setter>> =
        vec![Box::new(BINDING_REQUEST), Box::new(TransactionId::new())];
    request.build(&setters).map_err(|e| e.to_string())?;
    let exchange =
        stun_client::udp_exchange(&probe, server, &request, RETRANSMIT, |from, packet| {
            if from == server {
                parse_answer(packet, &request)
            } else {
                None
            }
        });
    tokio::time::timeout(DISCOVER_WAIT, exchange)
        .await
        .unwrap_or_else(|_| Err(format!("no answer within {} s", DISCOVER_WAIT.as_secs())))
}

/// The XOR-MAPPED-ADDRESS of `packet`, when it is the success answer to `request`.
fn parse_answer(packet: &[u8], request: &Message) -> Option<SocketAddr> {
    let m = stun_client::success_answer(packet, request)?;
    let mut mapped = XorMappedAddress::default();
    mapped.get_from(&m).ok()?;
    Some(SocketAddr::new(mapped.ip, mapped.port))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rtc::stun::message::BINDING_SUCCESS;

    #[test]
    fn only_the_answer_to_our_request_counts() {
        let mut request = Message::new();
        let setters: Vec<Box<dyn Setter>> =
            vec![Box::new(BINDING_REQUEST), Box::new(TransactionId::new())];
        request.build(&setters).unwrap();
        let mapped = || XorMappedAddress {
            ip: "203.0.113.7".parse().unwrap(),
            port: 40000,
        };
        let answer = |id: TransactionId| {
            let mut m = Message::new();
            let setters: Vec<Box<dyn Setter>> =
                vec![Box::new(BINDING_SUCCESS), Box::new(id), Box::new(mapped())];
            m.build(&setters).unwrap();
            m.raw
        };
        assert_eq!(
            parse_answer(&answer(request.transaction_id), &request),
            Some("203.0.113.7:40000".parse().unwrap())
        );
        assert_eq!(parse_answer(&answer(TransactionId::new()), &request), None);
        assert_eq!(parse_answer(&request.raw, &request), None);
        assert_eq!(parse_answer(b"junk", &request), None);
    }
}
