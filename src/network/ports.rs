//! Whether browsers will use an announced candidate at all. Chromium drops remote candidates it
//! considers unsafe without a word in the page: a server that announces one sees no connection and
//! no error. So whip-echo checks what it announces at start-up and warns.
//!
//! The rules, as Chromium applies them to remote ICE candidates (measured with Chromium 156):
//! - the Fetch standard's "bad ports" (§2.9, <https://fetch.spec.whatwg.org/#bad-port>) are refused;
//! - ports below 1024 are ignored, except 80 and 443;
//! - 80 and 443 are used only on a public address (not loopback, private or link-local).

use std::net::{IpAddr, SocketAddr};

use crate::media::Transport;

/// The Fetch standard's bad ports (port blocking, §2.9).
const FETCH_BAD_PORTS: &[u16] = &[
    0, 1, 7, 9, 11, 13, 15, 17, 19, 20, 21, 22, 23, 25, 37, 42, 43, 53, 69, 77, 79, 87, 95, 101,
    102, 103, 104, 109, 110, 111, 113, 115, 117, 119, 123, 135, 137, 139, 143, 161, 179, 389, 427,
    465, 512, 513, 514, 515, 526, 530, 531, 532, 540, 548, 554, 556, 563, 587, 601, 636, 989, 990,
    993, 995, 1719, 1720, 1723, 2049, 3659, 4045, 4190, 5060, 5061, 6000, 6566, 6665, 6666, 6667,
    6668, 6669, 6679, 6697, 10080,
];

/// Why browsers will not use a candidate at `addr`, or `None` when they will.
pub fn browser_problem(addr: SocketAddr) -> Option<&'static str> {
    let port = addr.port();
    if FETCH_BAD_PORTS.binary_search(&port).is_ok() {
        Some("browsers refuse this port (a Fetch \"bad port\")")
    } else if port < 1024 && port != 80 && port != 443 {
        Some("Chromium ignores candidates on ports below 1024 other than 80 and 443")
    } else if port < 1024 && !is_public(addr.ip()) {
        Some("Chromium uses ports 80 and 443 only on a public address")
    } else {
        None
    }
}

/// Warnings for every announced candidate browsers will not use, one line each.
pub fn warnings(announced: &[(Transport, SocketAddr)]) -> Vec<String> {
    announced
        .iter()
        .filter_map(|(transport, addr)| {
            browser_problem(*addr).map(|why| format!("{transport} candidate {addr}: {why}"))
        })
        .collect()
}

/// Whether `ip` is an address of the public internet (not loopback, private, shared, link-local
/// or unique-local).
fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, ..] = v4.octets();
            let shared = a == 100 && (64..128).contains(&b); // RFC 6598 carrier-grade NAT
            !(v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_unspecified()
                || shared)
        }
        IpAddr::V6(v6) => {
            let first = v6.segments()[0];
            let unique_local = (first & 0xfe00) == 0xfc00;
            let link_local = (first & 0xffc0) == 0xfe80;
            !(v6.is_loopback() || v6.is_unspecified() || unique_local || link_local)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn the_bad_port_list_is_sorted_for_binary_search() {
        assert!(FETCH_BAD_PORTS.windows(2).all(|w| w[0] < w[1]));
    }

    #[test]
    fn browser_rules() {
        assert_eq!(browser_problem(at("203.0.113.5:8189")), None);
        assert_eq!(browser_problem(at("10.0.0.5:8080")), None);
        assert_eq!(browser_problem(at("203.0.113.5:443")), None);
        assert_eq!(browser_problem(at("[2001:db8::1]:80")), None);
        assert!(browser_problem(at("203.0.113.5:6000"))
            .unwrap()
            .contains("bad port"));
        assert!(browser_problem(at("203.0.113.5:22"))
            .unwrap()
            .contains("bad port"));
        assert!(browser_problem(at("203.0.113.5:3478")).is_none());
        assert!(browser_problem(at("203.0.113.5:999"))
            .unwrap()
            .contains("below 1024"));
        for private in [
            "10.0.0.5:443",
            "127.0.0.1:80",
            "100.64.1.1:443",
            "[fd00::1]:443",
        ] {
            assert!(
                browser_problem(at(private)).unwrap().contains("public"),
                "{private}"
            );
        }
    }

    #[test]
    fn warnings_name_the_candidate() {
        let announced = [
            (Transport::Udp, at("10.0.0.5:8189")),
            (Transport::Tcp, at("10.0.0.5:443")),
        ];
        assert_eq!(
            warnings(&announced),
            vec!["tcp candidate 10.0.0.5:443: Chromium uses ports 80 and 443 only on a public address"]
        );
    }
}
