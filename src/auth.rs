//! Who may publish and play (RFC 9725 §4.7.1: bearer tokens, RFC 6750). Off unless configured, so
//! the zero-config echo keeps working. Two kinds of token, usable together:
//!
//! - **Static tokens**, one list for publishing (`--publish-token`) and one for playing
//!   (`--play-token`), each `TOKEN` (every stream), `TOKEN@stream` (that stream) or
//!   `TOKEN@prefix*` (streams starting with `prefix`); the last `@` separates the scope. Compared
//!   in constant time.
//! - **JWTs** (RFC 7519) signed with `--jwt-secret` (HS256) or the key of `--jwt-public-key` (an
//!   RSA key: RS256; an EC P-256 key: ES256), with claims `exp` (required), `stream` (a name,
//!   `prefix*`, or `*`) and `actions` (`["publish"]`, `["play"]` or both), so an operator mints
//!   per-user tokens without touching the server (as mediamtx and LiveKit do).
//!
//! Echo sessions publish, so they need a publishing token. The resource URL (128 random bits)
//! authorises PATCH and DELETE of its own session. Tokens are never logged.

use std::path::Path;

use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;
use subtle::ConstantTimeEq;

use crate::session::StreamName;

/// What a request wants to do with a stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// WHIP, and the echo extension.
    Publish,
    /// WHEP.
    Play,
}

impl Action {
    fn verb(self) -> &'static str {
        match self {
            Action::Publish => "publishing",
            Action::Play => "playing",
        }
    }
}

/// Why a request may not go on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Denied {
    /// No bearer token (`given: false`), or one this server did not issue or that expired:
    /// 401 (RFC 6750 §3: `error="invalid_token"` when one was given).
    Unauthenticated {
        /// Whether a token came with the request.
        given: bool,
        /// A short reason.
        why: &'static str,
    },
    /// A valid token that does not cover this action on this stream: 403.
    Forbidden(String),
}

/// The streams a token covers.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Scope {
    Any,
    Exact(String),
    Prefix(String),
}

impl Scope {
    fn parse(s: &str) -> Scope {
        match s {
            "" | "*" => Scope::Any,
            _ => match s.strip_suffix('*') {
                Some(prefix) => Scope::Prefix(prefix.to_owned()),
                None => Scope::Exact(s.to_owned()),
            },
        }
    }

    fn covers(&self, stream: &StreamName) -> bool {
        match self {
            Scope::Any => true,
            Scope::Exact(name) => name == stream.as_str(),
            Scope::Prefix(prefix) => stream.as_str().starts_with(prefix.as_str()),
        }
    }
}

struct StaticToken {
    secret: Vec<u8>,
    action: Action,
    scope: Scope,
}

/// A JWT verifier: one key and the algorithm it implies.
struct JwtKey {
    key: DecodingKey,
    validation: Validation,
}

#[derive(Deserialize)]
struct Claims {
    #[serde(default)]
    stream: Option<String>,
    #[serde(default)]
    actions: Vec<String>,
}

/// The configured policy; `None` from [`Auth::from_config`] when auth is off.
pub struct Auth {
    tokens: Vec<StaticToken>,
    jwt: Vec<JwtKey>,
}

impl std::fmt::Debug for Auth {
    /// Never prints a secret.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Auth")
            .field("static_tokens", &self.tokens.len())
            .field("jwt_keys", &self.jwt.len())
            .finish()
    }
}

impl Auth {
    /// The policy of the flags; `Ok(None)` when none is set (auth off).
    pub fn from_config(
        publish: &[String],
        play: &[String],
        jwt_secret: Option<&str>,
        jwt_public_key: Option<&Path>,
    ) -> Result<Option<Auth>, String> {
        let mut tokens = Vec::new();
        for (list, action) in [(publish, Action::Publish), (play, Action::Play)] {
            for spec in list {
                let (secret, scope) = match spec.rsplit_once('@') {
                    Some((secret, scope)) => (secret, Scope::parse(scope)),
                    None => (spec.as_str(), Scope::Any),
                };
                if secret.is_empty() {
                    return Err(format!("an empty {} token", action.verb()));
                }
                tokens.push(StaticToken {
                    secret: secret.as_bytes().to_vec(),
                    action,
                    scope,
                });
            }
        }
        let mut jwt = Vec::new();
        if let Some(secret) = jwt_secret {
            if secret.len() < 32 {
                return Err("--jwt-secret must be at least 32 bytes (HS256, RFC 7518 §3.2)".into());
            }
            jwt.push(JwtKey {
                key: DecodingKey::from_secret(secret.as_bytes()),
                validation: validation(Algorithm::HS256),
            });
        }
        if let Some(path) = jwt_public_key {
            let pem = std::fs::read(path)
                .map_err(|e| format!("--jwt-public-key {}: {e}", path.display()))?;
            let (key, algorithm) = DecodingKey::from_rsa_pem(&pem)
                .map(|k| (k, Algorithm::RS256))
                .or_else(|_| DecodingKey::from_ec_pem(&pem).map(|k| (k, Algorithm::ES256)))
                .map_err(|_| {
                    format!(
                        "--jwt-public-key {}: not an RSA or EC public key in PEM",
                        path.display()
                    )
                })?;
            jwt.push(JwtKey {
                key,
                validation: validation(algorithm),
            });
        }
        Ok((!tokens.is_empty() || !jwt.is_empty()).then_some(Auth { tokens, jwt }))
    }

    /// JWTs must also carry `aud` = `audience` and `iss` = `issuer`, each when given
    /// (`--jwt-audience`, `--jwt-issuer`).
    pub fn expecting(mut self, audience: Option<&str>, issuer: Option<&str>) -> Self {
        let mut required = vec!["exp"];
        required.extend(audience.map(|_| "aud"));
        required.extend(issuer.map(|_| "iss"));
        for key in &mut self.jwt {
            if let Some(audience) = audience {
                key.validation.set_audience(&[audience]);
            }
            if let Some(issuer) = issuer {
                key.validation.set_issuer(&[issuer]);
            }
            key.validation.set_required_spec_claims(&required);
        }
        self
    }

    /// Whether `bearer` (the token of the `Authorization` header) allows `action` on `stream`.
    pub fn check(
        &self,
        bearer: Option<&str>,
        action: Action,
        stream: &StreamName,
    ) -> Result<(), Denied> {
        let Some(token) = bearer else {
            return Err(Denied::Unauthenticated {
                given: false,
                why: "a bearer token is required",
            });
        };
        let forbidden = || {
            Denied::Forbidden(format!(
                "this token does not allow {} stream {stream:?}",
                action.verb()
            ))
        };
        // Every static token is compared (constant time each), so timing does not tell which
        // one matched.
        let matched: Vec<&StaticToken> = self
            .tokens
            .iter()
            .filter(|t| bool::from(t.secret.as_slice().ct_eq(token.as_bytes())))
            .collect();
        if !matched.is_empty() {
            let allowed = matched
                .iter()
                .any(|t| t.action == action && t.scope.covers(stream));
            return if allowed { Ok(()) } else { Err(forbidden()) };
        }
        for key in &self.jwt {
            if let Ok(data) = jsonwebtoken::decode::<Claims>(token, &key.key, &key.validation) {
                let claims = data.claims;
                let acts = claims.actions.iter().any(|a| match action {
                    Action::Publish => a == "publish",
                    Action::Play => a == "play",
                });
                let scope = Scope::parse(claims.stream.as_deref().unwrap_or(""));
                let named = claims.stream.is_some();
                return if acts && named && scope.covers(stream) {
                    Ok(())
                } else {
                    Err(forbidden())
                };
            }
        }
        Err(Denied::Unauthenticated {
            given: true,
            why: "the bearer token is not valid here (unknown, expired or badly signed)",
        })
    }
}

/// `exp` required and checked, `nbf` checked when present (no leeway beyond a minute of clock
/// skew). A token with an `aud` claim is refused unless [`Auth::expecting`] names it (RFC 7519
/// §4.1.3: a recipient not in `aud` must reject the token).
fn validation(algorithm: Algorithm) -> Validation {
    let mut v = Validation::new(algorithm);
    v.leeway = 60;
    v.set_required_spec_claims(&["exp"]);
    v.validate_exp = true;
    v.validate_nbf = true;
    v
}

/// The token of an `Authorization: Bearer <token>` header value (RFC 6750 §2.1; the scheme is
/// case-insensitive).
pub fn bearer(header: &str) -> Option<&str> {
    let (scheme, token) = header.trim().split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::{encode, EncodingKey, Header};

    const SECRET: &str = "an-hs256-secret-of-at-least-32-bytes!";

    fn name(s: &str) -> StreamName {
        StreamName::parse(s).unwrap()
    }

    fn policy() -> Auth {
        let publish = vec![
            "pub-all".into(),
            "pub-room@room1".into(),
            "pub-team@team-*".into(),
        ];
        let play = vec!["play-all".into()];
        Auth::from_config(&publish, &play, Some(SECRET), None)
            .unwrap()
            .unwrap()
    }

    fn jwt(stream: &str, actions: &[&str], exp_in: i64) -> String {
        let exp = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64
            + exp_in;
        let claims = serde_json::json!({ "exp": exp, "stream": stream, "actions": actions });
        encode(
            &Header::new(Algorithm::HS256),
            &claims,
            &EncodingKey::from_secret(SECRET.as_bytes()),
        )
        .unwrap()
    }

    fn signed(claims: serde_json::Value) -> String {
        encode(
            &Header::new(Algorithm::HS256),
            &claims,
            &EncodingKey::from_secret(SECRET.as_bytes()),
        )
        .unwrap()
    }

    #[test]
    fn audience_issuer_and_not_before_are_checked() {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let claims = |extra: serde_json::Value| {
            let mut c = serde_json::json!({
                "exp": now + 600, "stream": "*", "actions": ["publish"]
            });
            c.as_object_mut()
                .unwrap()
                .extend(extra.as_object().unwrap().clone());
            signed(c)
        };
        let stream = name("s");
        let ok = |auth: &Auth, token: &str| auth.check(Some(token), Action::Publish, &stream);
        let plain = policy();
        assert_eq!(ok(&plain, &claims(serde_json::json!({}))), Ok(()));
        let later = claims(serde_json::json!({ "nbf": now + 3600 }));
        assert!(ok(&plain, &later).is_err(), "not valid before nbf");
        let with_aud = claims(serde_json::json!({ "aud": "whip", "iss": "me" }));
        assert!(
            ok(&plain, &with_aud).is_err(),
            "an aud the server was not given"
        );
        let strict = policy().expecting(Some("whip"), Some("me"));
        assert_eq!(ok(&strict, &with_aud), Ok(()));
        assert!(
            ok(&strict, &claims(serde_json::json!({}))).is_err(),
            "aud and iss required"
        );
        for wrong in [
            serde_json::json!({ "aud": "other", "iss": "me" }),
            serde_json::json!({ "aud": "whip", "iss": "someone" }),
        ] {
            assert!(ok(&strict, &claims(wrong.clone())).is_err(), "{wrong}");
        }
    }

    #[test]
    fn off_unless_configured() {
        assert!(Auth::from_config(&[], &[], None, None).unwrap().is_none());
        assert!(Auth::from_config(&["@x".into()], &[], None, None).is_err());
        assert!(Auth::from_config(&[], &[], Some("short"), None).is_err());
    }

    #[test]
    fn static_tokens_are_scoped_by_action_and_stream() {
        let auth = policy();
        let (pub_, play) = (Action::Publish, Action::Play);
        assert_eq!(auth.check(Some("pub-all"), pub_, &name("any")), Ok(()));
        assert_eq!(auth.check(Some("pub-room"), pub_, &name("room1")), Ok(()));
        assert!(matches!(
            auth.check(Some("pub-room"), pub_, &name("room2")),
            Err(Denied::Forbidden(_))
        ));
        assert_eq!(auth.check(Some("pub-team"), pub_, &name("team-a")), Ok(()));
        assert!(matches!(
            auth.check(Some("pub-team"), pub_, &name("teams")),
            Err(Denied::Forbidden(_))
        ));
        // A publishing token never plays, nor the other way round.
        assert!(matches!(
            auth.check(Some("pub-all"), play, &name("x")),
            Err(Denied::Forbidden(_))
        ));
        assert!(matches!(
            auth.check(Some("play-all"), pub_, &name("x")),
            Err(Denied::Forbidden(_))
        ));
        assert_eq!(auth.check(Some("play-all"), play, &name("x")), Ok(()));
        assert_eq!(
            auth.check(None, pub_, &name("x")),
            Err(Denied::Unauthenticated {
                given: false,
                why: "a bearer token is required"
            })
        );
        assert!(matches!(
            auth.check(Some("nobody"), pub_, &name("x")),
            Err(Denied::Unauthenticated { given: true, .. })
        ));
    }

    #[test]
    fn jwts_name_their_stream_and_actions_and_expire() {
        let auth = policy();
        let token = jwt("room*", &["publish"], 600);
        assert_eq!(
            auth.check(Some(&token), Action::Publish, &name("room7")),
            Ok(())
        );
        assert!(matches!(
            auth.check(Some(&token), Action::Publish, &name("other")),
            Err(Denied::Forbidden(_))
        ));
        assert!(matches!(
            auth.check(Some(&token), Action::Play, &name("room7")),
            Err(Denied::Forbidden(_))
        ));
        let both = jwt("*", &["publish", "play"], 600);
        assert_eq!(auth.check(Some(&both), Action::Play, &name("x")), Ok(()));
        // Expired (past the minute of leeway), or signed with another secret: not valid at all.
        let expired = jwt("*", &["publish"], -120);
        assert!(matches!(
            auth.check(Some(&expired), Action::Publish, &name("x")),
            Err(Denied::Unauthenticated { given: true, .. })
        ));
        let claims =
            serde_json::json!({ "exp": 4_000_000_000u64, "stream": "*", "actions": ["publish"] });
        let forged = encode(
            &Header::new(Algorithm::HS256),
            &claims,
            &EncodingKey::from_secret(b"another-secret-of-at-least-32-bytes!!"),
        )
        .unwrap();
        assert!(matches!(
            auth.check(Some(&forged), Action::Publish, &name("x")),
            Err(Denied::Unauthenticated { given: true, .. })
        ));
    }

    #[test]
    fn bearer_header_values() {
        assert_eq!(bearer("Bearer abc"), Some("abc"));
        assert_eq!(bearer("bearer  abc "), Some("abc"));
        assert_eq!(bearer("Basic abc"), None);
        assert_eq!(bearer("Bearer"), None);
        assert_eq!(bearer("Bearer "), None);
    }
}
