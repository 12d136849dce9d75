//! The open-file limit: every TCP connection (HTTP, pending, ICE-TCP) is a descriptor, and at the
//! limit every `accept` fails, HTTP included. At start the soft limit is raised to the hard one
//! (what systemd and container runtimes leave low, often 1,024, while allowing far more), and
//! the ICE-TCP connection cap is derived from what the other caps leave of it.

use tracing::{info, warn};

/// Descriptors kept for everything that is not a capped connection: UDP sockets, listeners,
/// Redis, the runtime, files.
const RESERVED: u64 = 256;

/// ICE-TCP connections per allowed session when the cap is derived.
const ICE_TCP_PER_SESSION_SHARE: usize = 8;

/// Raises the soft open-file limit to the hard one; returns the soft limit now in force (`None`
/// when it cannot be read: no limit is derived from it then).
pub fn raise() -> Option<u64> {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).ok()?;
    let target = target(hard);
    if soft >= target {
        return Some(soft);
    }
    match setrlimit(Resource::RLIMIT_NOFILE, target, hard) {
        Ok(()) => {
            info!(from = soft, to = target, "open-file limit raised");
            Some(target)
        }
        Err(e) => {
            warn!(soft, hard, error = %e, "open-file limit not raised");
            Some(soft)
        }
    }
}

/// What the soft limit can be raised to: the hard limit, unless that is unlimited, which the
/// kernel refuses beyond `fs.nr_open` (Linux; 1,048,576 when it cannot be read).
fn target(hard: u64) -> u64 {
    if hard != nix::sys::resource::RLIM_INFINITY {
        return hard;
    }
    std::fs::read_to_string("/proc/sys/fs/nr_open")
        .ok()
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or(1 << 20)
}

/// The capped connections' needs, for [`ice_tcp_cap`].
#[derive(Debug, Clone, Copy)]
pub struct Needs {
    /// `--max-http-connections`.
    pub http: usize,
    /// `--max-pending-connections` (per listener).
    pub pending_per_listener: usize,
    /// Listeners with a pending pool (the ICE-TCP port, and the HTTP port).
    pub listeners: usize,
    /// `--max-sessions`.
    pub sessions: usize,
}

/// The ICE-TCP connection cap: `configured` when set (non-zero), else 8 per allowed session,
/// within what the open-file limit `nofile` leaves after the HTTP and pending connections and a
/// reserve (at least 64, so that a tiny limit still carries some ICE-TCP).
pub fn ice_tcp_cap(configured: usize, needs: Needs, nofile: Option<u64>) -> usize {
    if configured > 0 {
        return configured;
    }
    let wanted = needs
        .sessions
        .saturating_mul(ICE_TCP_PER_SESSION_SHARE)
        .max(1);
    let Some(nofile) = nofile else {
        return wanted;
    };
    let others = needs.http as u64
        + (needs.pending_per_listener as u64).saturating_mul(needs.listeners as u64)
        + RESERVED;
    let left = usize::try_from(nofile.saturating_sub(others)).unwrap_or(usize::MAX);
    if left < wanted.min(64) {
        warn!(
            nofile,
            needed = others,
            "the open-file limit barely covers the HTTP and pending connections; raise it \
             (README: Limits)"
        );
    }
    wanted.min(left.max(64))
}

#[cfg(test)]
mod tests {
    use super::*;

    const NEEDS: Needs = Needs {
        http: 1024,
        pending_per_listener: 1024,
        listeners: 2,
        sessions: 2000,
    };

    #[test]
    fn the_ice_tcp_cap_fits_in_what_the_limit_leaves() {
        assert_eq!(ice_tcp_cap(100, NEEDS, Some(1024)), 100, "configured wins");
        assert_eq!(
            ice_tcp_cap(0, NEEDS, Some(1 << 20)),
            16_000,
            "8 per session"
        );
        assert_eq!(ice_tcp_cap(0, NEEDS, Some(20_000)), 16_000);
        assert_eq!(ice_tcp_cap(0, NEEDS, Some(10_000)), 10_000 - 3_072 - 256);
        assert_eq!(ice_tcp_cap(0, NEEDS, Some(1024)), 64, "a floor");
        assert_eq!(ice_tcp_cap(0, NEEDS, None), 16_000);
    }

    #[test]
    fn the_soft_limit_is_raised_to_the_hard_one() {
        use nix::sys::resource::{getrlimit, Resource};
        let now = raise().expect("readable");
        let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).unwrap();
        assert_eq!((now, soft), (target(hard), target(hard)));
        assert_eq!(target(1024), 1024);
        assert!(target(nix::sys::resource::RLIM_INFINITY) >= 1024);
    }
}
