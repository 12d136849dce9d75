//! The start-up self-test: a loopback client connects to the server over each media path (the
//! UDP port its loops share, the shared ICE-TCP port, the HTTP port when it carries media) and reports
//! which work, in the log, in `/healthz` and on the page.
//!
//! For each path it creates a real echo session through the media plane (as a POST would), then
//! sends that session an authenticated ICE connectivity check (RFC 8445 §7.2.2: USERNAME,
//! ICE-CONTROLLING, PRIORITY, MESSAGE-INTEGRITY, FINGERPRINT; RFC 4571 framing on TCP) and waits
//! for its Binding success, whose MESSAGE-INTEGRITY it verifies. That proves the socket or
//! listener, the demultiplexing, the routing to the session's loop and the reply path; DTLS and
//! SRTP then ride the same path. The session is deleted at once. The check stops at ICE on
//! purpose: what fails in the field is the path, and the loopback client has no way to tell a
//! firewall in front of the host from its own test, so the report says "listening and answering",
//! not "reachable from the internet".

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::{Duration, Instant};

use rtc::ice::attributes::control::AttrControlling;
use rtc::ice::attributes::priority::PriorityAttr;
use rtc::stun::attributes::ATTR_USERNAME;
use rtc::stun::fingerprint::FINGERPRINT;
use rtc::stun::integrity::MessageIntegrity;
use rtc::stun::message::{Message, Setter, TransactionId, BINDING_REQUEST};
use rtc::stun::textattrs::Username;
use serde::Serialize;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpStream, UdpSocket};

use crate::media::negotiate::offer::CheckedOffer;
use crate::media::{read_rfc4571_frame, rfc4571_frame, MediaError, MediaHandle};
use crate::network::stun_client;
use crate::session::{Role, StreamName};

/// How long one path may take to answer.
const PROBE_WAIT: Duration = Duration::from_secs(3);
/// UDP check retransmission interval (loopback rarely loses, but it may).
const RETRANSMIT: Duration = Duration::from_millis(100);
/// The client's ICE ufrag and password (it never receives a check, so they need no secrecy).
const CLIENT_UFRAG: &str = "selftest";

/// One media path the server listens on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum PathKind {
    /// A media loop's UDP socket.
    Udp,
    /// The shared ICE-TCP port.
    Tcp,
    /// ICE-TCP on the HTTP port.
    TcpHttpPort,
}

impl std::fmt::Display for PathKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            PathKind::Udp => "udp",
            PathKind::Tcp => "tcp",
            PathKind::TcpHttpPort => "tcp-http-port",
        })
    }
}

/// The outcome of one path.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PathReport {
    /// Which path.
    pub path: PathKind,
    /// Where the loopback client connected.
    pub addr: SocketAddr,
    /// Milliseconds from the check to its answer, when answered.
    pub ms: Option<f64>,
    /// Why not, when not.
    pub error: Option<String>,
}

impl PathReport {
    /// Whether the path answered.
    pub fn ok(&self) -> bool {
        self.error.is_none()
    }
}

/// What the self-test has found so far.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "state", content = "paths", rename_all = "kebab-case")]
pub enum SelfTest {
    /// Turned off (`--self-test false`).
    Disabled,
    /// Still running.
    Running,
    /// Done: one report per path.
    Done(Vec<PathReport>),
}

/// The paths of a server whose HTTP listener is `http` (when it carries media).
pub fn paths(media: &MediaHandle, http: Option<SocketAddr>) -> Vec<(PathKind, SocketAddr)> {
    let udp = media.udp_addrs().into_iter().map(|a| (PathKind::Udp, a));
    let tcp = std::iter::once((PathKind::Tcp, media.tcp_addr()));
    let http = http.map(|a| (PathKind::TcpHttpPort, a));
    udp.chain(tcp)
        .chain(http)
        .map(|(kind, bound)| (kind, loopback(bound)))
        .collect()
}

/// Checks every path, one after the other (each takes about a millisecond, and one session at a
/// time leaves the session cap to real clients); the reports come in the order of `paths`.
pub async fn run(media: &MediaHandle, paths: &[(PathKind, SocketAddr)]) -> Vec<PathReport> {
    let mut reports = Vec::with_capacity(paths.len());
    for &(path, addr) in paths {
        let started = Instant::now();
        let outcome = probe(media, path, addr).await;
        reports.push(PathReport {
            path,
            addr,
            ms: outcome
                .as_ref()
                .ok()
                .map(|_| started.elapsed().as_secs_f64() * 1e3),
            error: outcome.err(),
        });
    }
    reports
}

/// A bound address as a client on this host reaches it: the loopback address of its family
/// when it is bound to every interface.
fn loopback(bound: SocketAddr) -> SocketAddr {
    let ip = match bound.ip() {
        IpAddr::V4(v4) if v4.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(v6) if v6.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    SocketAddr::new(ip, bound.port())
}

/// Creates a session, checks `addr` against it, deletes it.
async fn probe(media: &MediaHandle, path: PathKind, addr: SocketAddr) -> Result<(), String> {
    // Any loop: the one UDP port's sockets hand a check to the loop of the session it names, and
    // ICE-TCP routes to it by the ufrag.
    let name = format!("whip-echo.self-test.{path}.{:08x}", rand::random::<u32>());
    let stream = StreamName::parse(&name).map_err(|e| format!("the self-test's stream: {e}"))?;
    let offer = CheckedOffer::check(OFFER.to_owned(), Role::Echo)
        .map_err(|e| format!("the self-test's offer: {e}"))?;
    let created = media
        .create(stream, offer, None, false, (None, self_test_opening()))
        .await
        .map_err(|e| match e {
            MediaError::OverCapacity => "not checked: the session cap is full".to_owned(),
            e => format!("creating a session: {e}"),
        })?;
    let (ufrag, pwd) = credentials(&created.answer).ok_or("no ICE credentials in the answer")?;
    let checked = tokio::time::timeout(PROBE_WAIT, async {
        match path {
            PathKind::Udp => check_udp(addr, &ufrag, &pwd).await,
            PathKind::Tcp | PathKind::TcpHttpPort => check_tcp(addr, &ufrag, &pwd).await,
        }
    })
    .await
    .unwrap_or_else(|_| Err(format!("no answer within {} s", PROBE_WAIT.as_secs())));
    let _ = media.delete(created.resource).await;
    checked
}

/// The server's ufrag and password from its answer.
fn credentials(answer: &str) -> Option<(String, String)> {
    let attr = |name: &str| {
        answer
            .lines()
            .find_map(|l| l.trim().strip_prefix(name))
            .map(str::to_owned)
    };
    Some((attr("a=ice-ufrag:")?, attr("a=ice-pwd:")?))
}

/// A controlling connectivity check for the server's `ufrag`, signed with its `pwd`.
fn check_request(ufrag: &str, pwd: &str) -> Result<Message, String> {
    let provider = rtc::crypto::default_provider().map_err(|e| e.to_string())?;
    let mut m = Message::new();
    let setters: Vec<Box<dyn Setter + '_>> = vec![
        Box::new(BINDING_REQUEST),
        Box::new(TransactionId::new()),
        Box::new(Username::new(
            ATTR_USERNAME,
            format!("{ufrag}:{CLIENT_UFRAG}"),
        )),
        Box::new(AttrControlling(rand::random())),
        Box::new(PriorityAttr(1_845_501_695)),
        Box::new(MessageIntegrity::new_short_term_integrity_with_provider(
            pwd.to_owned(),
            provider.crypto(),
        )),
        Box::new(FINGERPRINT),
    ];
    m.build(&setters).map_err(|e| e.to_string())?;
    Ok(m)
}

/// Whether `packet` is the Binding success for `request`, signed with `pwd`.
fn is_answer(packet: &[u8], request: &Message, pwd: &str) -> bool {
    let Ok(provider) = rtc::crypto::default_provider() else {
        return false;
    };
    stun_client::success_answer(packet, request).is_some_and(|mut m| {
        MessageIntegrity::check(&mut m, pwd.as_bytes(), provider.crypto()).is_ok()
    })
}

async fn check_udp(addr: SocketAddr, ufrag: &str, pwd: &str) -> Result<(), String> {
    let any = if addr.is_ipv4() {
        IpAddr::V4(Ipv4Addr::UNSPECIFIED)
    } else {
        IpAddr::V6(Ipv6Addr::UNSPECIFIED)
    };
    let socket = UdpSocket::bind((any, 0)).await.map_err(|e| e.to_string())?;
    let request = check_request(ufrag, pwd)?;
    // Not a connected socket, and any sender: on a socket bound to every interface the server
    // answers from its announced address, not from loopback. The transaction id and
    // MESSAGE-INTEGRITY say whether a datagram is the answer.
    stun_client::udp_exchange(&socket, addr, &request, RETRANSMIT, |_, packet| {
        is_answer(packet, &request, pwd).then_some(())
    })
    .await
}

async fn check_tcp(addr: SocketAddr, ufrag: &str, pwd: &str) -> Result<(), String> {
    let mut stream = TcpStream::connect(addr)
        .await
        .map_err(|e| format!("connecting: {e}"))?;
    let request = check_request(ufrag, pwd)?;
    stream
        .write_all(&rfc4571_frame(&request.raw))
        .await
        .map_err(|e| e.to_string())?;
    loop {
        let packet = read_rfc4571_frame(&mut stream, usize::from(u16::MAX))
            .await
            .map_err(|_| "closed by the server".to_owned())?;
        if is_answer(&packet, &request, pwd) {
            return Ok(());
        }
    }
}

/// One line per path, for the log and `/healthz`.
pub fn summary(reports: &[PathReport]) -> Vec<String> {
    reports
        .iter()
        .map(|r| match (&r.ms, &r.error) {
            (Some(ms), _) => format!("{} {} ok {ms:.1}ms", r.path, r.addr),
            (_, Some(error)) => format!("{} {} failed: {error}", r.path, r.addr),
            _ => format!("{} {} unknown", r.path, r.addr),
        })
        .collect()
}

/// The offer of the loopback client: audio, Opus, no candidates (it sends its checks and the
/// server learns it as peer-reflexive, RFC 8445 §7.3.1.3). Its fingerprint is never checked:
/// the session is deleted before any DTLS.
const OFFER: &str = "v=0\r
o=- 1 1 IN IP4 127.0.0.1\r
s=-\r
t=0 0\r
a=group:BUNDLE 0\r
m=audio 9 UDP/TLS/RTP/SAVPF 111\r
c=IN IP4 0.0.0.0\r
a=ice-ufrag:selftest\r
a=ice-pwd:whipechoselftestpassword0\r
a=fingerprint:sha-256 3A:1F:9C:44:B2:07:E5:6D:81:0C:F3:2A:97:5B:E8:14:6F:C0:D9:33:A7:58:1E:BB:02:4D:C6:79:E0:12:8F:A5\r
a=setup:actpass\r
a=mid:0\r
a=sendrecv\r
a=rtcp-mux\r
a=rtpmap:111 opus/48000/2\r
a=ssrc:1 cname:whip-echo-self-test\r
";

/// The self-test session's opening, for its report: the server's own.
fn self_test_opening() -> crate::report::Opening {
    crate::report::Opening::internal("whip-echo self-test", OFFER)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bound_addresses_are_reached_on_loopback() {
        let any: SocketAddr = "0.0.0.0:8189".parse().unwrap();
        assert_eq!(
            loopback(any),
            "127.0.0.1:8189".parse::<SocketAddr>().unwrap()
        );
        let any6: SocketAddr = "[::]:8189".parse().unwrap();
        assert_eq!(loopback(any6), "[::1]:8189".parse::<SocketAddr>().unwrap());
        let specific: SocketAddr = "10.0.0.5:8189".parse().unwrap();
        assert_eq!(loopback(specific), specific);
    }

    #[test]
    fn a_check_is_only_answered_by_its_own_signed_success() {
        let request = check_request("server", "serverpassword").unwrap();
        assert!(!is_answer(&request.raw, &request, "serverpassword"));
        assert!(!is_answer(b"junk", &request, "serverpassword"));
    }
}
