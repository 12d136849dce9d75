//! The STUN and TURN servers clients are told about (RFC 9725 §4.6): one `Link` header field per
//! server on the 201 of a POST, and on an OPTIONS that is not a CORS preflight and is made by
//! someone who may POST there (its token checked like the POST's), with TURN credentials minted per
//! request. A preflight gets none (RFC 9725 §4.6: ICE servers SHOULD NOT be returned on one; any
//! origin can send it, and without a token).
//!
//! TURN credentials are static (`--turn-username`/`--turn-password`: only on a 201, never on
//! OPTIONS, which asks no offer of the client) or, with `--turn-secret`, the TURN REST scheme that
//! coturn implements as `use-auth-secret` (draft-uberti-behave-turn-rest): username
//! `<expiry unix time>:<stream>:<random>` (one per response, so the TURN server's quotas and logs
//! tell users apart), password the base64 HMAC-SHA1 of the username under the shared secret,
//! valid for `--turn-ttl`.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use ring::hmac;

/// How TURN servers authenticate clients.
#[derive(Clone)]
pub enum TurnCredentials {
    /// No TURN server needs any (STUN only).
    None,
    /// The same username and password for everyone.
    Static {
        /// TURN username.
        username: String,
        /// TURN password.
        password: String,
    },
    /// Minted per request from a secret shared with the TURN server.
    Rest {
        /// The shared secret (coturn `static-auth-secret`).
        secret: String,
        /// How long minted credentials are valid.
        ttl: Duration,
    },
}

/// The configured servers.
#[derive(Clone)]
pub struct IceServers {
    urls: Vec<String>,
    credentials: TurnCredentials,
}

impl std::fmt::Debug for IceServers {
    /// Never prints a credential.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IceServers")
            .field("urls", &self.urls)
            .finish_non_exhaustive()
    }
}

impl IceServers {
    /// Checks the URLs (RFC 7064 `stun:`/`stuns:`, RFC 7065 `turn:`/`turns:`); `Ok(None)` when
    /// there are none.
    pub fn new(urls: &[String], credentials: TurnCredentials) -> Result<Option<Self>, String> {
        for url in urls {
            let scheme = url.split_once(':').map(|(s, _)| s);
            if !matches!(scheme, Some("stun" | "stuns" | "turn" | "turns")) {
                return Err(format!(
                    "--ice-server {url}: not a stun:, stuns:, turn: or turns: URL"
                ));
            }
            // A Link target is a URI-Reference between < and > (RFC 8288 §3).
            if url.contains(['<', '>', '"', ' ', ',']) {
                return Err(format!("--ice-server {url}: characters a URL cannot have"));
            }
            let turn = url.starts_with("turn");
            if turn && matches!(credentials, TurnCredentials::None) {
                return Err(format!(
                    "--ice-server {url}: a TURN server needs --turn-secret or --turn-username and --turn-password"
                ));
            }
        }
        Ok((!urls.is_empty()).then(|| IceServers {
            urls: urls.to_vec(),
            credentials,
        }))
    }

    /// The `Link` header field values for a response about `stream` made at `now`, one per
    /// server; on an OPTIONS response (`on_options`) without the TURN servers of static
    /// credentials.
    pub fn links(&self, stream: &str, now: SystemTime, on_options: bool) -> Vec<String> {
        let turn_credentials = match &self.credentials {
            TurnCredentials::None => None,
            TurnCredentials::Static { .. } if on_options => None,
            TurnCredentials::Static { username, password } => {
                Some((username.clone(), password.clone()))
            }
            TurnCredentials::Rest { secret, ttl } => {
                Some(rest_credentials(secret, *ttl, stream, now))
            }
        };
        self.urls
            .iter()
            .filter_map(|url| {
                let mut link = format!("<{url}>; rel=\"ice-server\"");
                if url.starts_with("turn") {
                    let (username, password) = turn_credentials.as_ref()?;
                    link.push_str(&format!(
                        "; username={}; credential={}; credential-type=\"password\"",
                        quoted(username),
                        quoted(password)
                    ));
                }
                Some(link)
            })
            .collect()
    }
}

/// TURN REST credentials for `stream` valid until `now + ttl`: (`expiry:stream:random`, base64
/// HMAC-SHA1). coturn reads the expiry before the first colon; a stream name has none.
pub fn rest_credentials(
    secret: &str,
    ttl: Duration,
    stream: &str,
    now: SystemTime,
) -> (String, String) {
    let expiry = (now + ttl)
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let username = format!("{expiry}:{stream}:{:08x}", rand::random::<u32>());
    let password = rest_password(secret, &username);
    (username, password)
}

/// The TURN REST password of `username`: the base64 HMAC-SHA1 of it under `secret`.
fn rest_password(secret: &str, username: &str) -> String {
    let key = hmac::Key::new(hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY, secret.as_bytes());
    let tag = hmac::sign(&key, username.as_bytes());
    base64::engine::general_purpose::STANDARD.encode(tag.as_ref())
}

/// An RFC 8288 / RFC 9110 §5.6.4 quoted-string.
fn quoted(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        if c == '"' || c == '\\' {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_link_per_server_with_turn_credentials_quoted() {
        let servers = IceServers::new(
            &[
                "stun:stun.example.net".into(),
                "turn:turn.example.net:3478?transport=udp".into(),
            ],
            TurnCredentials::Static {
                username: "user".into(),
                password: "pa\"ss".into(),
            },
        )
        .unwrap()
        .unwrap();
        assert_eq!(
            servers.links("room", SystemTime::now(), false),
            vec![
                r#"<stun:stun.example.net>; rel="ice-server""#.to_owned(),
                r#"<turn:turn.example.net:3478?transport=udp>; rel="ice-server"; username="user"; credential="pa\"ss"; credential-type="password""#.to_owned(),
            ]
        );
        // Static credentials never on OPTIONS: the TURN server is left out there.
        assert_eq!(
            servers.links("room", SystemTime::now(), true),
            vec![r#"<stun:stun.example.net>; rel="ice-server""#.to_owned()]
        );
    }

    #[test]
    fn rest_credentials_follow_coturns_scheme() {
        // HMAC-SHA1("1700003600:whip-echo", "s3cret"), base64: computed independently with
        // `printf %s 1700003600:whip-echo | openssl dgst -sha1 -hmac s3cret -binary | base64`.
        assert_eq!(
            rest_password("s3cret", "1700003600:whip-echo"),
            "SW/7hmsKsOhC4GYyp5G+qg1fTYI="
        );
        // One username per response: the expiry, the stream, 8 random hex digits.
        let now = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let ttl = Duration::from_secs(3600);
        let (username, password) = rest_credentials("s3cret", ttl, "room", now);
        let random = username.strip_prefix("1700003600:room:").unwrap();
        assert!(random.len() == 8 && random.bytes().all(|b| b.is_ascii_hexdigit()));
        assert_eq!(password, rest_password("s3cret", &username));
        assert_ne!(rest_credentials("s3cret", ttl, "room", now).0, username);
    }

    #[test]
    fn bad_urls_and_turn_without_credentials_are_refused() {
        assert!(IceServers::new(&["http://x".into()], TurnCredentials::None).is_err());
        assert!(IceServers::new(&["turn:x".into()], TurnCredentials::None).is_err());
        assert!(IceServers::new(&["stun:x, stun:y".into()], TurnCredentials::None).is_err());
        assert!(IceServers::new(&[], TurnCredentials::None)
            .unwrap()
            .is_none());
    }
}
