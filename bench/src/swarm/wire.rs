//! One lean client session: just enough ICE (RFC 8445: one controlling check with USE-CANDIDATE
//! to the server's host candidate, answers to the server's checks), a DTLS handshake (rtc's
//! sans-IO `dtls` endpoint), and SRTP (rtc's `srtp` contexts keyed from the DTLS exporter, RFC
//! 5764 §4.2). No peer-connection pipeline, no interceptors, no task per session: sending a probe
//! is one SRTP seal and one `sendto`, receiving one is one `recvfrom` and one SRTP open. This is
//! what lets one load-generator thread drive thousands of echo sessions while the server under
//! test keeps a core to itself.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use rtc::dtls::endpoint::Endpoint;
use rtc::shared::TransportProtocol;
use rtc::srtp::context::Context;

use super::handshake::Shared;

/// Opus payload type of the offer.
const PT: u8 = 111;
/// How often an unanswered connectivity check is repeated.
const CHECK_EVERY: Duration = Duration::from_millis(50);

/// Where a session is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Waiting for the answer, or checking connectivity.
    Ice,
    /// DTLS handshake under way.
    Dtls,
    /// SRTP keys in place: probes flow.
    Media,
    Failed,
}

/// How a session nominates its pair (RFC 8445 §8.1.1) and when it starts DTLS.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Style {
    /// One check with USE-CANDIDATE; DTLS once that check succeeded and one of the server's was
    /// answered; DTLS flights are retransmitted.
    Aggressive,
    /// As libjuice (OBS's WHIP output, through libdatachannel) does it: checks without
    /// USE-CANDIDATE, the DTLS ClientHello right after the first successful check, and only then
    /// the nominating check, so the ClientHello reaches the server before the pair is selected.
    /// Flights are never retransmitted here: a server that drops that ClientHello never connects
    /// this session (libdatachannel would resend it after its 1 s timer).
    NominateAfterDtls,
}

/// The server's side, from its answer.
pub(super) struct Remote {
    pub(super) ufrag: String,
    pub(super) pwd: String,
    pub(super) addr: SocketAddr,
    /// `a=setup:active`: the server is the DTLS client and we serve.
    pub(super) dtls_server: bool,
}

pub struct Wire {
    pub socket: mio::net::UdpSocket,
    pub local: SocketAddr,
    pub(super) ufrag: String,
    pub(super) pwd: String,
    pub(super) ssrc: u32,
    pub(super) tie_breaker: u64,
    pub(super) remote: Option<Remote>,
    pub(super) dtls: Endpoint,
    pub(super) local_srtp: Option<Context>,
    pub(super) remote_srtp: Option<Context>,
    pub phase: Phase,
    /// Our check was answered / we answered one of the server's (the server selects the pair
    /// only after its own check succeeds, so DTLS starts once both happened).
    pub(super) checked: bool,
    pub(super) answered: bool,
    pub(super) next_check: Instant,
    pub(super) seq: u16,
    pub style: Style,
}

impl Wire {
    /// A session with its own socket on `ip`.
    pub fn bind(ip: IpAddr, id: u32) -> io::Result<Wire> {
        let socket = mio::net::UdpSocket::bind(SocketAddr::new(ip, 0))?;
        let local = socket.local_addr()?;
        let token = |n: usize| {
            let mut s = String::with_capacity(n);
            while s.len() < n {
                s.push_str(&format!("{:016x}", rand::random::<u64>()));
            }
            s.truncate(n);
            s
        };
        Ok(Wire {
            socket,
            local,
            ufrag: token(8),
            pwd: token(24),
            ssrc: 0x5000_0000 | id,
            tie_breaker: rand::random(),
            remote: None,
            dtls: Endpoint::new(local, TransportProtocol::UDP, None),
            local_srtp: None,
            remote_srtp: None,
            phase: Phase::Ice,
            checked: false,
            answered: false,
            next_check: Instant::now(),
            seq: 0,
            style: Style::Aggressive,
        })
    }

    /// A sendrecv Opus offer with this session's credentials, fingerprint and host candidate.
    pub fn offer(&self, shared: &Shared) -> String {
        let (ip, port) = (self.local.ip(), self.local.port());
        format!(
            "v=0\r\no=- {ssrc} 2 IN IP4 {ip}\r\ns=-\r\nt=0 0\r\na=group:BUNDLE 0\r\n\
             m=audio 9 UDP/TLS/RTP/SAVPF {PT}\r\nc=IN IP4 0.0.0.0\r\n\
             a=ice-ufrag:{ufrag}\r\na=ice-pwd:{pwd}\r\na=fingerprint:sha-256 {fp}\r\n\
             a=setup:actpass\r\na=mid:0\r\na=sendrecv\r\na=rtcp-mux\r\n\
             a=rtpmap:{PT} opus/48000/2\r\na=fmtp:{PT} minptime=10;useinbandfec=1\r\n\
             a=ssrc:{ssrc} cname:swarm\r\na=msid:swarm audio\r\n\
             a=candidate:1 1 udp 2130706431 {ip} {port} typ host\r\na=end-of-candidates\r\n",
            ssrc = self.ssrc,
            ufrag = self.ufrag,
            pwd = self.pwd,
            fp = shared.fingerprint,
        )
    }

    /// Takes the answer's credentials, first UDP host candidate and DTLS role.
    pub fn set_answer(&mut self, shared: &Shared, sdp: &str) -> Result<(), String> {
        let attr = |name: &str| {
            sdp.lines()
                .find_map(|l| l.trim().strip_prefix(name).map(str::to_owned))
        };
        let ufrag = attr("a=ice-ufrag:").ok_or("answer without ice-ufrag")?;
        let pwd = attr("a=ice-pwd:").ok_or("answer without ice-pwd")?;
        let addr = sdp
            .lines()
            .filter_map(|l| l.trim().strip_prefix("a=candidate:"))
            .find_map(|c| {
                let f: Vec<&str> = c.split_whitespace().collect();
                let udp = f.get(2)?.eq_ignore_ascii_case("udp");
                let ip: IpAddr = f.get(4)?.parse().ok()?;
                let port: u16 = f.get(5)?.parse().ok()?;
                (udp && ip.is_ipv4() == self.local.is_ipv4()).then(|| SocketAddr::new(ip, port))
            })
            .ok_or("answer without a usable candidate")?;
        let dtls_server = attr("a=setup:").is_some_and(|s| s.trim() == "active");
        if dtls_server {
            self.dtls = Endpoint::new(
                self.local,
                TransportProtocol::UDP,
                Some(shared.server.clone()),
            );
        }
        self.remote = Some(Remote {
            ufrag,
            pwd,
            addr,
            dtls_server,
        });
        Ok(())
    }

    /// Timers: repeats the connectivity check until answered, drives DTLS retransmissions.
    pub fn on_tick(&mut self, shared: &Shared, now: Instant) {
        let Some(addr) = self.remote.as_ref().map(|r| r.addr) else {
            return;
        };
        match self.phase {
            Phase::Ice if now >= self.next_check => {
                self.next_check = now + CHECK_EVERY;
                self.send_check(shared);
            }
            Phase::Dtls if self.style == Style::Aggressive => {
                if self.dtls.poll_timeout(&addr).is_some_and(|t| t <= now)
                    && self.dtls.handle_timeout(addr, now).is_err()
                {
                    self.phase = Phase::Failed;
                }
                self.flush_dtls();
            }
            _ => {}
        }
    }

    /// One datagram from the socket (RFC 7983 demultiplexing). Returns a decrypted probe payload.
    pub fn on_datagram(
        &mut self,
        shared: &Shared,
        now: Instant,
        from: SocketAddr,
        data: &[u8],
    ) -> Option<BytesMut> {
        match data.first()? {
            0..=3 => {
                self.on_stun(shared, now, from, data);
                None
            }
            20..=63 => {
                self.on_dtls(shared, now, from, data);
                None
            }
            // RTP, not RTCP (RFC 5761 §4: RTCP packet types 192..=223).
            128..=191 if !(192..=223).contains(data.get(1)?) => {
                let plain = self.remote_srtp.as_mut()?.decrypt_rtp(data).ok()?;
                rtp_payload(plain)
            }
            _ => None,
        }
    }

    /// Seals and sends one RTP packet carrying `payload`.
    pub fn send_rtp(&mut self, payload: &[u8], timestamp: u32) -> bool {
        let (Some(srtp), Some(remote)) = (self.local_srtp.as_mut(), self.remote.as_ref()) else {
            return false;
        };
        let mut packet = Vec::with_capacity(12 + payload.len());
        packet.extend_from_slice(&[0x80, PT]);
        packet.extend_from_slice(&self.seq.to_be_bytes());
        packet.extend_from_slice(&timestamp.to_be_bytes());
        packet.extend_from_slice(&self.ssrc.to_be_bytes());
        packet.extend_from_slice(payload);
        self.seq = self.seq.wrapping_add(1);
        match srtp.encrypt_rtp(&packet) {
            Ok(sealed) => self.socket.send_to(&sealed, remote.addr).is_ok(),
            Err(_) => false,
        }
    }
}

/// The payload of a decrypted RTP packet (RFC 3550 §5.1: fixed header, CSRCs, extension).
fn rtp_payload(mut plain: BytesMut) -> Option<BytesMut> {
    let b0 = *plain.first()?;
    let mut offset = 12 + 4 * usize::from(b0 & 0x0f);
    if b0 & 0x10 != 0 {
        let words = u16::from_be_bytes([*plain.get(offset + 2)?, *plain.get(offset + 3)?]);
        offset += 4 + 4 * usize::from(words);
    }
    if offset > plain.len() {
        return None;
    }
    Some(plain.split_off(offset))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payload_skips_csrcs_and_extension() {
        // V=2, X=1, CC=1; one CSRC; extension header with one 32-bit word; payload "hi".
        let mut p = vec![0x91, PT, 0, 1, 0, 0, 0, 0, 0, 0, 0, 7];
        p.extend_from_slice(&[0, 0, 0, 9]);
        p.extend_from_slice(&[0xBE, 0xDE, 0, 1, 1, 2, 3, 4]);
        p.extend_from_slice(b"hi");
        assert_eq!(&rtp_payload(BytesMut::from(&p[..])).unwrap()[..], b"hi");
        assert!(rtp_payload(BytesMut::from(&p[..14])).is_none());
    }
}
