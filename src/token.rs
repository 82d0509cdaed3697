//! HMAC JWTs as Centrifugo uses them: generating connection and subscription tokens (the CLI's
//! `gentoken`/`gensubtoken`, tests) and verifying them (signature, `exp`, `nbf`, and `aud`/`iss`
//! when configured). Only HS256/HS384/HS512 are accepted; `alg: none` and unsigned tokens never
//! verify. Claim semantics beyond the registered ones (`channel`, `info`, `subs`, ...) belong to
//! the callers.

use std::collections::HashSet;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::errors::ErrorKind as JwtErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde_json::{Map, Value};

use crate::error::{Error, ErrorKind};

/// Why a token did not verify. `Expired` covers `exp` in the past and `nbf` in the future
/// (Centrifugo answers both with error 109 so the client refreshes the token).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenError {
    Expired,
    Invalid(String),
}

impl std::fmt::Display for TokenError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TokenError::Expired => f.write_str("token expired"),
            TokenError::Invalid(why) => write!(f, "invalid token: {why}"),
        }
    }
}

impl std::error::Error for TokenError {}

fn now_secs() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

fn sign(secret: &str, claims: &Map<String, Value>) -> Result<String, Error> {
    if secret.is_empty() {
        return Err(Error::new(ErrorKind::Token, "no HMAC secret key set"));
    }
    jsonwebtoken::encode(&Header::new(Algorithm::HS256), claims, &EncodingKey::from_secret(secret.as_bytes()))
        .map_err(|e| Error::new(ErrorKind::Token, format!("signing token: {e}")))
}

/// Registered claims first so callers' `extra` cannot override `sub`/`iat`/`exp`.
fn base_claims(user: &str, ttl: Option<Duration>, extra: Map<String, Value>) -> Map<String, Value> {
    let mut claims = extra;
    let now = now_secs();
    claims.insert("sub".into(), Value::from(user));
    claims.insert("iat".into(), Value::from(now));
    match ttl {
        Some(ttl) => {
            claims.insert("exp".into(), Value::from(now + ttl.as_secs()));
        }
        None => {
            claims.remove("exp");
        }
    }
    claims
}

/// HS256 connection token with `sub`, `iat` and `exp` (`exp` omitted when `ttl` is `None`),
/// plus any `extra` claims (`info`, `channels`, `subs`, a custom user-ID claim, ...).
pub fn generate_connection_token(
    secret: &str,
    user: &str,
    ttl: Option<Duration>,
    extra: Map<String, Value>,
) -> Result<String, Error> {
    sign(secret, &base_claims(user, ttl, extra))
}

/// HS256 subscription token: `sub`, `channel`, `iat` and `exp` (omitted when `ttl` is `None`).
pub fn generate_subscription_token(
    secret: &str,
    user: &str,
    channel: &str,
    ttl: Option<Duration>,
) -> Result<String, Error> {
    let mut extra = Map::new();
    extra.insert("channel".into(), Value::from(channel));
    sign(secret, &base_claims(user, ttl, extra))
}

/// A reusable verifier: the key and validation rules are built once, so verifying a token on
/// the connect path allocates only the decoded claims.
#[derive(Clone)]
pub struct Verifier {
    key: Option<DecodingKey>,
    validation: Validation,
}

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Verifier").field("configured", &self.key.is_some()).finish_non_exhaustive()
    }
}

impl Verifier {
    /// `audience`/`issuer` are checked (and then required) only when non-empty. An empty
    /// `secret` makes every token invalid: an empty HMAC key would let anyone mint tokens.
    pub fn new(secret: &str, audience: &str, issuer: &str) -> Verifier {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.algorithms = vec![Algorithm::HS256, Algorithm::HS384, Algorithm::HS512];
        // Centrifugo accepts tokens without `exp`; when present it must be in the future.
        validation.required_spec_claims = HashSet::new();
        validation.leeway = 0;
        validation.validate_exp = true;
        validation.validate_nbf = true;
        validation.validate_aud = !audience.is_empty();
        if !audience.is_empty() {
            validation.set_audience(&[audience]);
            validation.required_spec_claims.insert("aud".into());
        }
        if !issuer.is_empty() {
            validation.set_issuer(&[issuer]);
            validation.required_spec_claims.insert("iss".into());
        }
        let key = (!secret.is_empty()).then(|| DecodingKey::from_secret(secret.as_bytes()));
        Verifier { key, validation }
    }

    /// Verifies signature and registered claims; returns all claims.
    pub fn verify(&self, token: &str) -> Result<Map<String, Value>, TokenError> {
        let key = self.key.as_ref().ok_or_else(|| TokenError::Invalid("no HMAC secret key configured".into()))?;
        match jsonwebtoken::decode::<Map<String, Value>>(token, key, &self.validation) {
            Ok(data) => Ok(data.claims),
            Err(e) => Err(match e.kind() {
                JwtErrorKind::ExpiredSignature | JwtErrorKind::ImmatureSignature => TokenError::Expired,
                JwtErrorKind::InvalidAlgorithm => TokenError::Invalid("algorithm not allowed".into()),
                JwtErrorKind::InvalidSignature => TokenError::Invalid("signature mismatch".into()),
                JwtErrorKind::InvalidAudience => TokenError::Invalid("invalid audience".into()),
                JwtErrorKind::InvalidIssuer => TokenError::Invalid("invalid issuer".into()),
                JwtErrorKind::MissingRequiredClaim(c) => TokenError::Invalid(format!("missing {c} claim")),
                JwtErrorKind::InvalidToken
                | JwtErrorKind::Base64(_)
                | JwtErrorKind::Json(_)
                | JwtErrorKind::Utf8(_) => TokenError::Invalid("malformed token".into()),
                _ => TokenError::Invalid(e.to_string()),
            }),
        }
    }
}

/// One-shot verification; see [`Verifier`] for the rules.
pub fn verify(token: &str, secret: &str, audience: &str, issuer: &str) -> Result<Map<String, Value>, TokenError> {
    Verifier::new(secret, audience, issuer).verify(token)
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use base64::Engine;

    const KEY: &str = "secret";

    fn raw_token(header: &str, claims: &str, sig: &str) -> String {
        format!("{}.{}.{}", URL_SAFE_NO_PAD.encode(header), URL_SAFE_NO_PAD.encode(claims), sig)
    }

    fn sign_with(alg: Algorithm, claims: Value) -> String {
        jsonwebtoken::encode(&Header::new(alg), &claims, &EncodingKey::from_secret(KEY.as_bytes())).unwrap()
    }

    #[test]
    fn connection_token_roundtrip() {
        let mut extra = Map::new();
        extra.insert("info".into(), serde_json::json!({"name": "x"}));
        let t = generate_connection_token(KEY, "42", Some(Duration::from_secs(60)), extra).unwrap();
        let c = verify(&t, KEY, "", "").unwrap();
        assert_eq!(c["sub"], "42");
        assert_eq!(c["info"]["name"], "x");
        assert_eq!(c["exp"].as_u64().unwrap(), c["iat"].as_u64().unwrap() + 60);
        let header = jsonwebtoken::decode_header(&t).unwrap();
        assert_eq!(header.alg, Algorithm::HS256);
    }

    #[test]
    fn no_ttl_means_no_exp() {
        let t = generate_connection_token(KEY, "u", None, Map::new()).unwrap();
        let c = verify(&t, KEY, "", "").unwrap();
        assert!(!c.contains_key("exp"));
    }

    #[test]
    fn subscription_token_has_channel() {
        let t = generate_subscription_token(KEY, "u", "$chat:1", Some(Duration::from_secs(5))).unwrap();
        let c = verify(&t, KEY, "", "").unwrap();
        assert_eq!(c["channel"], "$chat:1");
        assert_eq!(c["sub"], "u");
    }

    #[test]
    fn empty_secret_refused() {
        assert!(generate_connection_token("", "u", None, Map::new()).is_err());
        let t = generate_connection_token(KEY, "u", None, Map::new()).unwrap();
        assert!(matches!(verify(&t, "", "", ""), Err(TokenError::Invalid(_))));
    }

    #[test]
    fn wrong_key_refused() {
        let t = generate_connection_token(KEY, "u", None, Map::new()).unwrap();
        assert!(matches!(verify(&t, "other", "", ""), Err(TokenError::Invalid(_))));
    }

    #[test]
    fn tampered_claims_refused() {
        let t = generate_connection_token(KEY, "u", None, Map::new()).unwrap();
        let parts: Vec<&str> = t.split('.').collect();
        let forged = format!("{}.{}.{}", parts[0], URL_SAFE_NO_PAD.encode(r#"{"sub":"admin"}"#), parts[2]);
        assert!(matches!(verify(&forged, KEY, "", ""), Err(TokenError::Invalid(_))));
    }

    #[test]
    fn alg_none_and_unsigned_refused() {
        let none = raw_token(r#"{"alg":"none","typ":"JWT"}"#, r#"{"sub":"u"}"#, "");
        assert!(matches!(verify(&none, KEY, "", ""), Err(TokenError::Invalid(_))));
        let none2 = raw_token(r#"{"alg":"None"}"#, r#"{"sub":"u"}"#, "");
        assert!(matches!(verify(&none2, KEY, "", ""), Err(TokenError::Invalid(_))));
        let unsigned = raw_token(r#"{"alg":"HS256"}"#, r#"{"sub":"u"}"#, "");
        assert!(matches!(verify(&unsigned, KEY, "", ""), Err(TokenError::Invalid(_))));
        assert!(matches!(verify("garbage", KEY, "", ""), Err(TokenError::Invalid(_))));
        assert!(matches!(verify("", KEY, "", ""), Err(TokenError::Invalid(_))));
    }

    #[test]
    fn hs384_hs512_accepted() {
        for alg in [Algorithm::HS384, Algorithm::HS512] {
            let t = sign_with(alg, serde_json::json!({"sub": "u"}));
            assert_eq!(verify(&t, KEY, "", "").unwrap()["sub"], "u");
        }
    }

    #[test]
    fn expired_and_not_yet_valid() {
        let now = now_secs();
        let t = sign_with(Algorithm::HS256, serde_json::json!({"sub": "u", "exp": now - 10}));
        assert_eq!(verify(&t, KEY, "", ""), Err(TokenError::Expired));
        let t = sign_with(Algorithm::HS256, serde_json::json!({"sub": "u", "nbf": now + 100}));
        assert_eq!(verify(&t, KEY, "", ""), Err(TokenError::Expired));
        let t = sign_with(Algorithm::HS256, serde_json::json!({"sub": "u", "exp": now + 100, "nbf": now - 1}));
        assert!(verify(&t, KEY, "", "").is_ok());
    }

    #[test]
    fn audience_and_issuer_checked_only_when_configured() {
        let t = sign_with(Algorithm::HS256, serde_json::json!({"sub": "u", "aud": "a", "iss": "i"}));
        assert!(verify(&t, KEY, "", "").is_ok());
        assert!(verify(&t, KEY, "a", "i").is_ok());
        assert!(verify(&t, KEY, "b", "").is_err());
        assert!(verify(&t, KEY, "", "j").is_err());
        let bare = sign_with(Algorithm::HS256, serde_json::json!({"sub": "u"}));
        assert!(verify(&bare, KEY, "a", "").is_err());
        assert!(verify(&bare, KEY, "", "i").is_err());
        let multi = sign_with(Algorithm::HS256, serde_json::json!({"sub": "u", "aud": ["x", "a"]}));
        assert!(verify(&multi, KEY, "a", "").is_ok());
    }
}
