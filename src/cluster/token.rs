//! The bearer token a node pulls another's stream with: `whip-echo-pull.{epoch}.{mac}`, the MAC
//! an HMAC-SHA256 under the cluster secret of the stream and the epoch the puller read from the
//! lease. The holder checks the MAC and that the epoch is its own current one, so a pull meant for
//! an older holder, or sent to a node that lost the stream, is refused.

use ring::hmac;

const PREFIX: &str = "whip-echo-pull.";

fn key(secret: &str) -> hmac::Key {
    hmac::Key::new(hmac::HMAC_SHA256, secret.as_bytes())
}

fn message(stream: &str, epoch: u64) -> String {
    format!("pull\n{stream}\n{epoch}")
}

/// The token for pulling `stream` at `epoch`.
pub fn mint(secret: &str, stream: &str, epoch: u64) -> String {
    let tag = hmac::sign(&key(secret), message(stream, epoch).as_bytes());
    let hex: String = tag.as_ref().iter().map(|b| format!("{b:02x}")).collect();
    format!("{PREFIX}{epoch}.{hex}")
}

/// Whether `token` is a pull token at all (then it is checked as one, never as a play token).
pub fn is_pull(token: &str) -> bool {
    token.starts_with(PREFIX)
}

/// The epoch of a pull token whose MAC is right for `stream`; `None` otherwise.
pub fn verify(secret: &str, stream: &str, token: &str) -> Option<u64> {
    let (epoch, mac) = token.strip_prefix(PREFIX)?.split_once('.')?;
    let epoch: u64 = epoch.parse().ok()?;
    if mac.len() != 64 {
        return None;
    }
    let bytes: Vec<u8> = (0..32)
        .map(|i| u8::from_str_radix(mac.get(2 * i..2 * i + 2)?, 16).ok())
        .collect::<Option<_>>()?;
    // Constant-time comparison inside ring.
    hmac::verify(&key(secret), message(stream, epoch).as_bytes(), &bytes).ok()?;
    Some(epoch)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_verify_only_for_their_stream_and_secret() {
        let t = mint("s3cret", "live", 7);
        assert!(is_pull(&t));
        assert_eq!(verify("s3cret", "live", &t), Some(7));
        assert_eq!(verify("other", "live", &t), None);
        assert_eq!(verify("s3cret", "live2", &t), None);
        let forged = t.replace("pull.7.", "pull.8.");
        assert_eq!(verify("s3cret", "live", &forged), None);
        assert_eq!(verify("s3cret", "live", "whip-echo-pull.7.zz"), None);
        assert_eq!(verify("s3cret", "live", "whip-echo-pull.é.00"), None);
    }
}
