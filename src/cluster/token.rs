//! The bearer token a node pulls another's stream with:
//! `whip-echo-pull.{epoch}.{puller}.{nonce}.{expires}.{mac}`, the MAC an HMAC-SHA256 under the
//! cluster secret of the stream, the holder's tag, the puller's tag, a random nonce, the epoch the
//! puller read from the lease and the token's expiry (Unix seconds, 10 s after minting). The
//! holder checks the MAC, the expiry, that the epoch is its own current one and that it has not
//! seen the nonce, so a pull meant for another or an older holder, sent to a node that lost the
//! stream, or replayed, is refused. Node records and forwarded requests are signed here too.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ring::hmac;

const PREFIX: &str = "whip-echo-pull.";
/// How long a forward mark is good for.
const VALID_FOR: Duration = Duration::from_secs(60);
/// How long a pull token is good for: a pull is POSTed right after it is minted.
pub const PULL_VALID_FOR: Duration = Duration::from_secs(10);
/// How far apart two nodes' clocks may be (pull tokens and node records carry times; run NTP).
pub const CLOCK_SKEW: Duration = Duration::from_secs(30);

/// What a valid pull token says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PullToken {
    /// The holder's epoch the puller read.
    pub epoch: u64,
    /// The pulling node's tag.
    pub puller: u16,
    /// Its nonce: a holder takes each token once.
    pub nonce: u64,
    /// When it expires (Unix seconds).
    pub expires: u64,
}

fn key(secret: &str) -> hmac::Key {
    hmac::Key::new(hmac::HMAC_SHA256, secret.as_bytes())
}

fn message(stream: &str, holder: u16, t: &PullToken) -> String {
    format!(
        "pull\n{stream}\n{holder:04x}\n{:04x}\n{:016x}\n{}\n{}",
        t.puller, t.nonce, t.epoch, t.expires
    )
}

/// Unix seconds of `t`.
pub fn unix(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// The token for node `puller` to pull `stream` from node `holder` at `epoch`, valid for
/// [`PULL_VALID_FOR`] from `now`, with a fresh nonce.
pub fn mint(
    secret: &str,
    stream: &str,
    holder: u16,
    puller: u16,
    epoch: u64,
    now: SystemTime,
) -> String {
    let token = PullToken {
        epoch,
        puller,
        nonce: rand::random(),
        expires: unix(now + PULL_VALID_FOR),
    };
    let mac = hmac::sign(&key(secret), message(stream, holder, &token).as_bytes());
    format!(
        "{PREFIX}{epoch}.{puller:04x}.{:016x}.{}.{}",
        token.nonce,
        token.expires,
        hex(mac.as_ref())
    )
}

/// Whether `token` is a pull token at all (then it is checked as one, never as a play token).
pub fn is_pull(token: &str) -> bool {
    token.starts_with(PREFIX)
}

/// A pull token whose MAC is right for `stream` and this node (`holder`) and that has not
/// expired at `now`; `None` otherwise. (Whether its nonce was seen is the holder's to know.)
pub fn verify(
    secret: &str,
    stream: &str,
    holder: u16,
    token: &str,
    now: SystemTime,
) -> Option<PullToken> {
    let mut parts = token.strip_prefix(PREFIX)?.splitn(5, '.');
    let epoch: u64 = parts.next()?.parse().ok()?;
    let puller = u16::from_str_radix(parts.next()?, 16).ok()?;
    let nonce = u64::from_str_radix(parts.next()?, 16).ok()?;
    let expires: u64 = parts.next()?.parse().ok()?;
    let bytes = unhex(parts.next()?)?;
    let now = unix(now);
    let skew = CLOCK_SKEW.as_secs();
    // Expired, or minted for longer than a pull token lives, by either clock.
    if expires + skew < now || expires > now + PULL_VALID_FOR.as_secs() + skew {
        return None;
    }
    let token = PullToken {
        epoch,
        puller,
        nonce,
        expires,
    };
    // Constant-time comparison inside ring.
    let signed = message(stream, holder, &token);
    hmac::verify(&key(secret), signed.as_bytes(), &bytes).ok()?;
    Some(token)
}

/// The mark of a request one node forwards to another for `resource` (a resource id's text):
/// `{expires}.{mac}`, valid for a minute from `now`. The receiving node knows by it that the
/// request comes from a node of its cluster, not from a client that wrote the header itself.
pub fn mint_forward(secret: &str, resource: &str, now: SystemTime) -> String {
    let expires = unix(now + VALID_FOR);
    let tag = hmac::sign(&key(secret), forward_message(resource, expires).as_bytes());
    format!("{expires}.{}", hex(tag.as_ref()))
}

/// Whether `mark` is a valid, unexpired forward mark for `resource` at `now`.
pub fn verify_forward(secret: &str, resource: &str, mark: &str, now: SystemTime) -> bool {
    let Some((expires, mac)) = mark.split_once('.') else {
        return false;
    };
    let (Ok(expires), Some(bytes)) = (expires.parse::<u64>(), unhex(mac)) else {
        return false;
    };
    expires >= unix(now)
        && hmac::verify(
            &key(secret),
            forward_message(resource, expires).as_bytes(),
            &bytes,
        )
        .is_ok()
}

/// What a node's record in Redis (its heartbeat) vouches for: its tag, URL and time.
#[derive(Debug, Clone, Copy)]
pub struct NodeClaim<'a> {
    /// The node's tag.
    pub tag: u16,
    /// Its URL.
    pub url: &'a str,
    /// When it wrote the record (Unix seconds).
    pub at: u64,
}

/// The MAC of a node's `claim`.
pub fn sign_node(secret: &str, claim: NodeClaim) -> String {
    let message = node_message(claim);
    hex(hmac::sign(&key(secret), message.as_bytes()).as_ref())
}

/// Whether `mac` is [`sign_node`]'s for `claim`.
pub fn verify_node(secret: &str, claim: NodeClaim, mac: &str) -> bool {
    unhex(mac).is_some_and(|bytes| {
        hmac::verify(&key(secret), node_message(claim).as_bytes(), &bytes).is_ok()
    })
}

fn node_message(claim: NodeClaim) -> String {
    format!("node\n{:04x}\n{}\n{}", claim.tag, claim.at, claim.url)
}

fn forward_message(resource: &str, expires: u64) -> String {
    format!("forward\n{resource}\n{expires}")
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// 32 bytes from 64 hex digits.
fn unhex(mac: &str) -> Option<Vec<u8>> {
    if mac.len() != 64 {
        return None;
    }
    (0..32)
        .map(|i| u8::from_str_radix(mac.get(2 * i..2 * i + 2)?, 16).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forward_marks_verify_only_for_their_resource_secret_and_time() {
        let now = SystemTime::now();
        let mark = mint_forward("s3cret", "00ab", now);
        assert!(verify_forward("s3cret", "00ab", &mark, now));
        assert!(!verify_forward("other", "00ab", &mark, now));
        assert!(!verify_forward("s3cret", "00ac", &mark, now));
        assert!(!verify_forward(
            "s3cret",
            "00ab",
            &mark,
            now + Duration::from_secs(120)
        ));
        for bad in ["1", "", "1.zz", "x.00"] {
            assert!(!verify_forward("s3cret", "00ab", bad, now), "{bad}");
        }
    }

    #[test]
    fn node_records_verify_only_for_their_tag_url_time_and_secret() {
        let claim = NodeClaim {
            tag: 0xbeef,
            url: "http://10.0.0.2:8080",
            at: 1_800_000_000,
        };
        let mac = sign_node("s3cret", claim);
        assert!(verify_node("s3cret", claim, &mac));
        assert!(!verify_node("other", claim, &mac));
        assert!(!verify_node(
            "s3cret",
            NodeClaim {
                tag: 0xbeee,
                ..claim
            },
            &mac
        ));
        let elsewhere = NodeClaim {
            url: "http://evil.example",
            ..claim
        };
        assert!(!verify_node("s3cret", elsewhere, &mac));
        let older = NodeClaim {
            at: 1_700_000_000,
            ..claim
        };
        assert!(!verify_node("s3cret", older, &mac));
        assert!(!verify_node("s3cret", claim, ""));
    }

    #[test]
    fn tokens_verify_only_for_their_stream_holder_secret_and_time() {
        let now = SystemTime::now();
        let t = mint("s3cret", "live", 0xbeef, 0x0a0b, 7, now);
        assert!(is_pull(&t));
        let seen = verify("s3cret", "live", 0xbeef, &t, now).unwrap();
        assert_eq!((seen.epoch, seen.puller), (7, 0x0a0b));
        let again = mint("s3cret", "live", 0xbeef, 0x0a0b, 7, now);
        let other = verify("s3cret", "live", 0xbeef, &again, now).unwrap();
        assert_ne!(seen.nonce, other.nonce, "a fresh nonce each");
        assert_eq!(verify("other", "live", 0xbeef, &t, now), None);
        assert_eq!(verify("s3cret", "live2", 0xbeef, &t, now), None);
        assert_eq!(verify("s3cret", "live", 0xbeee, &t, now), None);
        let later = now + PULL_VALID_FOR + CLOCK_SKEW + Duration::from_secs(2);
        assert_eq!(verify("s3cret", "live", 0xbeef, &t, later), None, "expired");
        for (from, to) in [("pull.7.", "pull.8."), (".0a0b.", ".0a0c.")] {
            let forged = t.replacen(from, to, 1);
            assert_eq!(
                verify("s3cret", "live", 0xbeef, &forged, now),
                None,
                "{from}"
            );
        }
        for bad in [
            "whip-echo-pull.7.zz",
            "whip-echo-pull.é.00",
            "whip-echo-pull.7.0a0b.1.1.zz",
        ] {
            assert_eq!(verify("s3cret", "live", 0xbeef, bad, now), None, "{bad}");
        }
    }
}
