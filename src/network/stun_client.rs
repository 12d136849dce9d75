//! The two places where whip-echo is itself a STUN client, the start-up self-test's connectivity
//! checks and `--stun-discover`, share this: a request sent over UDP and retransmitted until an
//! answer comes, and the test of whether a packet is the success answer to a request.

use std::net::SocketAddr;
use std::time::Duration;

use rtc::stun::message::{Message, BINDING_SUCCESS};
use tokio::net::UdpSocket;

/// `packet` decoded, when it is the Binding success for `request` (same transaction id, RFC 8489
/// §6.3.1); what else it must carry is the caller's to check.
pub fn success_answer(packet: &[u8], request: &Message) -> Option<Message> {
    let mut m = Message::new();
    m.unmarshal_binary(packet).ok()?;
    (m.typ == BINDING_SUCCESS && m.transaction_id == request.transaction_id).then_some(m)
}

/// Sends `request` to `to` from `socket` every `every` (RFC 8489 §6.2.1 retransmissions over
/// UDP) until `accept` takes a datagram (given its sender and bytes). It never gives up by
/// itself: the caller bounds it with a timeout.
pub async fn udp_exchange<T>(
    socket: &UdpSocket,
    to: SocketAddr,
    request: &Message,
    every: Duration,
    mut accept: impl FnMut(SocketAddr, &[u8]) -> Option<T>,
) -> Result<T, String> {
    let mut buf = vec![0u8; 1500];
    loop {
        socket
            .send_to(&request.raw, to)
            .await
            .map_err(|e| e.to_string())?;
        let deadline = tokio::time::Instant::now() + every;
        while let Ok(received) = tokio::time::timeout_at(deadline, socket.recv_from(&mut buf)).await
        {
            let Ok((n, from)) = received else { continue };
            if let Some(answer) = accept(from, &buf[..n]) {
                return Ok(answer);
            }
        }
    }
}
