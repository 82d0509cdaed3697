//! HMAC JWTs as Centrifugo uses them: generating connection and subscription tokens (the CLI's
//! `gentoken`/`gensubtoken`, tests) and verifying them (signature, `exp`, `nbf`, and `aud`/`iss`
//! when configured). Only HS256/HS384/HS512 are accepted; `alg: none` and unsigned tokens never
//! verify. Claim semantics beyond the registered ones (`channel`, `info`, `subs`, ...) belong to
//! the callers, except the lifetime: [`expiry`] reads `expire_at`/`exp` as Centrifugo does.
//!
//! Dates (`exp`, `nbf`, `iat`) are JWT NumericDates read as Centrifugo's JWT library reads them:
//! a JSON number, integer or fractional (`time.time() + ttl` from PyJWT), or a string holding
//! one; `null` counts as absent; anything else makes the token invalid. A token is expired
//! once `exp` is not after now and not yet valid while `nbf` is not before now (sub-second
//! precision); `iat` is parsed but not checked. `expire_at` must be a JSON integer.

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
        // Centrifugo accepts tokens without `exp`. Dates are checked by `check_dates`: the
        // library would skip a fractional `exp` as unparsable, leaving the token valid forever.
        validation.required_spec_claims = HashSet::new();
        validation.leeway = 0;
        validation.validate_exp = false;
        validation.validate_nbf = false;
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
            Ok(data) => {
                check_dates(&data.claims, now_nanos())?;
                Ok(data.claims)
            }
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

/// A NumericDate claim as nanoseconds since the epoch: `Ok(None)` when absent or `null`.
/// Seconds beyond the `i64` range saturate.
fn numeric_date(claims: &Map<String, Value>, name: &str) -> Result<Option<i128>, TokenError> {
    let invalid = || TokenError::Invalid(format!("invalid {name} claim"));
    let secs = match claims.get(name) {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::Number(n)) => n.as_f64().ok_or_else(invalid)?,
        Some(Value::String(s)) if is_json_number(s) => s.parse::<f64>().map_err(|_| invalid())?,
        Some(_) => return Err(invalid()),
    };
    if !secs.is_finite() {
        return Err(invalid());
    }
    // Whole seconds and the fraction, both truncated toward zero (so -1.5 is 1.5 s before
    // the epoch): the same instant Go's `time.Unix(sec, nsec)` makes of them.
    let whole = secs.trunc();
    let nanos = ((secs - whole) * 1e9) as i128;
    Ok(Some(i128::from(whole as i64) * 1_000_000_000 + nanos))
}

/// The JSON number grammar (RFC 8259): what a string must hold to be read as a number.
fn is_json_number(s: &str) -> bool {
    let b = s.as_bytes();
    let mut i = usize::from(b.first() == Some(&b'-'));
    let digits = |i: &mut usize| {
        let start = *i;
        while b.get(*i).is_some_and(u8::is_ascii_digit) {
            *i += 1;
        }
        *i - start
    };
    match b.get(i) {
        Some(b'0') => i += 1,
        Some(b'1'..=b'9') => {
            digits(&mut i);
        }
        _ => return false,
    }
    if b.get(i) == Some(&b'.') {
        i += 1;
        if digits(&mut i) == 0 {
            return false;
        }
    }
    if matches!(b.get(i), Some(b'e' | b'E')) {
        i += 1;
        if matches!(b.get(i), Some(b'+' | b'-')) {
            i += 1;
        }
        if digits(&mut i) == 0 {
            return false;
        }
    }
    i == b.len()
}

fn now_nanos() -> i128 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos() as i128).unwrap_or(0)
}

/// Claim types first (a malformed date or `expire_at` makes the token invalid, whatever its
/// dates say), then `exp` and `nbf` against `now` (nanoseconds).
fn check_dates(claims: &Map<String, Value>, now: i128) -> Result<(), TokenError> {
    let exp = numeric_date(claims, "exp")?;
    let nbf = numeric_date(claims, "nbf")?;
    numeric_date(claims, "iat")?;
    match claims.get("expire_at") {
        None | Some(Value::Null) => {}
        Some(v) if v.as_i64().is_some() => {}
        Some(_) => return Err(TokenError::Invalid("invalid expire_at claim".into())),
    }
    if exp.is_some_and(|exp| exp <= now) || nbf.is_some_and(|nbf| nbf >= now) {
        return Err(TokenError::Expired);
    }
    Ok(())
}

/// When the credentials or subscription a verified token grants expire, in Unix seconds (0 =
/// never), as Centrifugo decides it: `expire_at` when present (a value ≤ 0 means never, even
/// with `exp` set), else `exp` (whole seconds, a fraction dropped), else never.
pub fn expiry(claims: &Map<String, Value>) -> i64 {
    match claims.get("expire_at") {
        None | Some(Value::Null) => match numeric_date(claims, "exp") {
            Ok(Some(nanos)) => nanos.div_euclid(1_000_000_000).clamp(0, i64::MAX as i128) as i64,
            _ => 0,
        },
        Some(v) => v.as_i64().unwrap_or(0).max(0),
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

    /// PyJWT writes `exp = time.time() + ttl`: a fractional date must expire like an integer.
    #[test]
    fn fractional_dates_are_dates() {
        let now = now_secs() as f64;
        let t = sign_with(Algorithm::HS256, serde_json::json!({"sub": "u", "exp": now - 10.25}));
        assert_eq!(verify(&t, KEY, "", ""), Err(TokenError::Expired));
        let t = sign_with(Algorithm::HS256, serde_json::json!({"sub": "u", "exp": now + 100.75}));
        let c = verify(&t, KEY, "", "").unwrap();
        assert_eq!(expiry(&c), now as i64 + 100);
        let t = sign_with(Algorithm::HS256, serde_json::json!({"sub": "u", "nbf": now + 100.5}));
        assert_eq!(verify(&t, KEY, "", ""), Err(TokenError::Expired));
        let t = sign_with(Algorithm::HS256, serde_json::json!({"sub": "u", "nbf": now - 1.5, "iat": now - 1.5}));
        assert!(verify(&t, KEY, "", "").is_ok());
        // Exponent notation is a number too.
        let t = sign_with(Algorithm::HS256, serde_json::json!({"sub": "u", "exp": 1.0e3}));
        assert_eq!(verify(&t, KEY, "", ""), Err(TokenError::Expired));
    }

    #[test]
    fn numeric_strings_are_dates_other_types_invalid() {
        let now = now_secs();
        let t = sign_with(Algorithm::HS256, serde_json::json!({"sub": "u", "exp": (now - 5).to_string()}));
        assert_eq!(verify(&t, KEY, "", ""), Err(TokenError::Expired));
        let t = sign_with(Algorithm::HS256, serde_json::json!({"sub": "u", "exp": format!("{}.5", now + 60)}));
        assert_eq!(expiry(&verify(&t, KEY, "", "").unwrap()), now as i64 + 60);
        let t = sign_with(Algorithm::HS256, serde_json::json!({"sub": "u", "exp": null, "nbf": null}));
        assert!(verify(&t, KEY, "", "").is_ok());
        for (name, bad) in [
            ("exp", serde_json::json!("soon")),
            ("exp", serde_json::json!(" 12")),
            ("exp", serde_json::json!("+12")),
            ("exp", serde_json::json!("1.")),
            ("exp", serde_json::json!(true)),
            ("exp", serde_json::json!([1])),
            ("nbf", serde_json::json!({"t": 1})),
            ("iat", serde_json::json!("yesterday")),
            ("expire_at", serde_json::json!(now as f64 + 60.5)),
            ("expire_at", serde_json::json!((now + 60).to_string())),
        ] {
            let t = sign_with(Algorithm::HS256, serde_json::json!({"sub": "u", name: bad}));
            assert!(matches!(verify(&t, KEY, "", ""), Err(TokenError::Invalid(_))), "{name}: {bad}");
        }
        // A wrongly typed claim makes the token invalid even when it is also expired.
        let t = sign_with(Algorithm::HS256, serde_json::json!({"sub": "u", "exp": now - 5, "iat": false}));
        assert!(matches!(verify(&t, KEY, "", ""), Err(TokenError::Invalid(_))));
    }

    #[test]
    fn json_number_grammar() {
        for ok in ["0", "-0", "12", "-12.5", "1e9", "1E+9", "2.5e-3"] {
            assert!(is_json_number(ok), "{ok}");
        }
        for bad in ["", "-", "01", "1.", ".5", "1e", "1e+", "+1", " 1", "1 ", "0x10", "NaN", "Infinity"] {
            assert!(!is_json_number(bad), "{bad}");
        }
    }

    #[test]
    fn expiry_prefers_expire_at() {
        let claims = |v: Value| v.as_object().unwrap().clone();
        assert_eq!(expiry(&claims(serde_json::json!({}))), 0);
        assert_eq!(expiry(&claims(serde_json::json!({"exp": 100}))), 100);
        assert_eq!(expiry(&claims(serde_json::json!({"exp": 100.9}))), 100);
        assert_eq!(expiry(&claims(serde_json::json!({"exp": 100, "expire_at": 200}))), 200);
        assert_eq!(expiry(&claims(serde_json::json!({"exp": 100, "expire_at": 0}))), 0);
        assert_eq!(expiry(&claims(serde_json::json!({"exp": 100, "expire_at": -5}))), 0);
        assert_eq!(expiry(&claims(serde_json::json!({"exp": 100, "expire_at": null}))), 100);
        assert_eq!(expiry(&claims(serde_json::json!({"exp": 1e300}))), i64::MAX);
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
