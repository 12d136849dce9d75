//! Every candidate whip-echo announces, computed once at start-up from the bound addresses and the
//! configured ones: pure, so each rule is a unit test. The media plane only takes the result.
//!
//! Per socket: the local interface addresses and the NAT 1:1 public ones on its bound port
//! (`--public-ip`, `--stun-discover`), then the forwarded addresses that reach it from another
//! port (`--public-udp` for the UDP port, which every loop's socket shares; `--public-tcp` for
//! the ICE-TCP port). ICE-TCP is announced on the shared ICE-TCP port first,
//! then on the HTTP port when it carries media (same priority: RFC 6544 passive), then the forwards.

use std::net::{IpAddr, SocketAddr};

use crate::media::{Announced, Announcements, Candidates};

/// What start-up resolved about addresses (DNS, interfaces, STUN discovery), before any is
/// announced.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AddressPlan {
    /// Interface addresses announced for the UDP sockets (none with `--public-ip-only`).
    pub local_udp: Vec<IpAddr>,
    /// Interface addresses announced for the ICE-TCP port.
    pub local_tcp: Vec<IpAddr>,
    /// Interface addresses announced for the HTTP port, when it carries ICE-TCP.
    pub local_http: Vec<IpAddr>,
    /// NAT 1:1 public addresses, announced on each socket's own port.
    pub public_ips: Vec<IpAddr>,
    /// `--public-tcp`: addresses forwarded to the ICE-TCP port.
    pub public_tcp: Vec<SocketAddr>,
    /// `--public-udp`: addresses forwarded to the UDP port.
    pub public_udp: Vec<SocketAddr>,
}

/// The announcements for UDP sockets bound to `udp` (one per loop), the ICE-TCP listener bound
/// to `tcp` and, when it carries ICE-TCP, the HTTP listener bound to `http`.
pub fn announce(
    plan: &AddressPlan,
    udp: &[SocketAddr],
    tcp: SocketAddr,
    http: Option<SocketAddr>,
) -> Announcements {
    let tcp_direct = candidates(tcp, &plan.local_tcp, &plan.public_ips, &[]);
    let tcp_forwarded = candidates(tcp, &[], &[], &plan.public_tcp);
    let http = http.map(|addr| candidates(addr, &plan.local_http, &plan.public_ips, &[]));
    let mut tcp_addrs = addrs(&tcp_direct);
    tcp_addrs.extend(http.iter().flat_map(|c| addrs(c)));
    tcp_addrs.extend(addrs(&tcp_forwarded));
    let udp = (udp.iter())
        .map(|bound| candidates(*bound, &plan.local_udp, &plan.public_ips, &plan.public_udp))
        .collect();
    Announcements {
        udp,
        tcp: [tcp_direct, tcp_forwarded].concat(),
        http,
        tcp_addrs,
    }
}

/// The announced candidates of a socket bound to `bound`: the local interface addresses and the
/// NAT 1:1 public addresses on the bound port, then `forwarded` addresses (a port-forwarding NAT
/// or a PaaS proxy that reaches the bound port from another one).
pub fn candidates(
    bound: SocketAddr,
    local_ips: &[IpAddr],
    public_ips: &[IpAddr],
    forwarded: &[SocketAddr],
) -> Candidates {
    let pick_source = !bound.ip().is_unspecified();
    let at = |ip: IpAddr| SocketAddr::new(ip, bound.port());
    // An IPv4 socket cannot be reached over IPv6 (a [::] socket takes both, as Linux binds it
    // dual-stack): announcing the other family would send clients nowhere.
    let dual_stack = bound.is_ipv6() && bound.ip().is_unspecified();
    let reachable = |ip: &&IpAddr| ip.is_ipv4() == bound.is_ipv4() || dual_stack;
    local_ips
        .iter()
        .map(|ip| Announced {
            addr: at(*ip),
            source: (!pick_source).then_some(*ip),
        })
        .chain(public_ips.iter().filter(reachable).map(|ip| Announced {
            addr: at(*ip),
            source: None,
        }))
        .chain(forwarded.iter().map(|addr| Announced {
            addr: *addr,
            source: None,
        }))
        .collect()
}

/// The announced candidate addresses, in order.
pub fn addrs(candidates: &[Announced]) -> Vec<SocketAddr> {
    candidates.iter().map(|c| c.addr).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn every_loop_announces_the_one_port_and_its_forwards() {
        let plan = AddressPlan {
            local_udp: vec![ip("10.0.0.5")],
            public_udp: vec![addr("203.0.113.9:40000")],
            ..AddressPlan::default()
        };
        let udp = [addr("0.0.0.0:8189"), addr("0.0.0.0:8189")];
        let all = announce(&plan, &udp, addr("0.0.0.0:8189"), None);
        let expected = [addr("10.0.0.5:8189"), addr("203.0.113.9:40000")];
        assert_eq!(addrs(&all.udp[0]), expected);
        assert_eq!(all.udp[0], all.udp[1]);
        assert_eq!(all.udp[0][0].source, Some(ip("10.0.0.5")));
    }

    #[test]
    fn ice_tcp_is_announced_on_its_port_then_the_http_port_then_the_forwards() {
        let plan = AddressPlan {
            local_tcp: vec![ip("10.0.0.5")],
            local_http: vec![ip("10.0.0.6")],
            public_ips: vec![ip("203.0.113.9"), ip("2001:db8::1")],
            public_tcp: vec![addr("198.51.100.7:443")],
            ..AddressPlan::default()
        };
        let tcp = addr("0.0.0.0:8443");
        let http = Some(addr("0.0.0.0:8080"));
        let all = announce(&plan, &[], tcp, http);
        assert_eq!(
            all.tcp_addrs,
            [
                addr("10.0.0.5:8443"),
                addr("203.0.113.9:8443"),
                addr("10.0.0.6:8080"),
                addr("203.0.113.9:8080"),
                addr("198.51.100.7:443"),
            ]
        );
        // The acceptor's own: the ICE-TCP port's and its forward, not the HTTP port's.
        assert_eq!(all.tcp.len(), 3);
        assert_eq!(all.http.as_ref().map(Vec::len), Some(2));
        assert_eq!(announce(&plan, &[], tcp, None).http, None);
    }

    #[test]
    fn a_public_address_of_the_other_family_only_on_a_dual_stack_socket() {
        let (v4, v6) = (ip("203.0.113.9"), ip("2001:db8::1"));
        assert_eq!(candidates(addr("0.0.0.0:1"), &[], &[v4, v6], &[]).len(), 1);
        assert_eq!(candidates(addr("[::]:1"), &[], &[v4, v6], &[]).len(), 2);
        // A specific bind address needs no source: the kernel picks it.
        let bound = candidates(addr("10.0.0.5:1"), &[ip("10.0.0.5")], &[], &[]);
        assert_eq!(bound[0].source, None);
    }
}
