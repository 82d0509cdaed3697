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

pub mod jwks;
pub mod keys;

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use jsonwebtoken::errors::ErrorKind as JwtErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header};
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

/// How a claim (`aud`, `iss`) is checked.
#[derive(Clone, Debug, Default)]
enum Expect {
    #[default]
    Any,
    Exact(String),
    /// Go regexp syntax; its named groups fill the JWKS endpoint template.
    Regex(regex::Regex),
}

/// A reusable verifier, built once from `client.token` (or `client.subscription_token`): the
/// keys, and the `aud`/`iss` rules. Verification follows Centrifugo's order: the token is
/// parsed, `issuer_regex`/`audience_regex` are matched (their named groups resolve the JWKS
/// endpoint), the signature is checked with the key of the header's algorithm (HMAC, then the
/// previous HMAC secret while it is valid; RSA; ECDSA; or the JWKS key named by `kid`), then
/// `aud`/`iss`, then the dates. An algorithm without a configured key makes the token invalid;
/// `alg: none` never verifies.
#[derive(Clone, Default)]
pub struct Verifier {
    hmac: Option<DecodingKey>,
    /// The previous HMAC secret and until when it is accepted (Unix seconds; 0 = always).
    previous: Option<(DecodingKey, i64)>,
    rsa: Option<DecodingKey>,
    ec: Option<keys::EcKey>,
    /// The JWKS endpoint (template) and this verifier's view of the key cache.
    jwks: Option<(String, Arc<jwks::Snapshot>)>,
    audience: Expect,
    issuer: Expect,
    /// `client.insecure_skip_token_signature_verify`.
    skip_signature: bool,
}

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Verifier")
            .field("hmac", &self.hmac.is_some())
            .field("previous_hmac", &self.previous.is_some())
            .field("rsa", &self.rsa.is_some())
            .field("ecdsa", &self.ec.as_ref().map(|e| e.alg))
            .field("jwks", &self.jwks.as_ref().map(|j| &j.0))
            .finish_non_exhaustive()
    }
}

/// The outcome of [`Verifier::check`]: a result, or the JWKS keys to fetch first.
#[derive(Debug)]
pub enum Check {
    Done(Result<Map<String, Value>, TokenError>),
    Fetch(jwks::Fetch),
}

fn invalid<T>(why: impl Into<String>) -> Result<T, TokenError> {
    Err(TokenError::Invalid(why.into()))
}

impl Verifier {
    /// An HMAC-only verifier. `audience`/`issuer` are checked (and then required) only when
    /// non-empty. An empty `secret` makes every token invalid: an empty HMAC key would let
    /// anyone mint tokens.
    pub fn new(secret: &str, audience: &str, issuer: &str) -> Verifier {
        let exact = |v: &str| if v.is_empty() { Expect::Any } else { Expect::Exact(v.to_string()) };
        Verifier {
            hmac: (!secret.is_empty()).then(|| DecodingKey::from_secret(secret.as_bytes())),
            audience: exact(audience),
            issuer: exact(issuer),
            ..Default::default()
        }
    }

    /// The verifier of a token section of the configuration (`at` is its path, for errors:
    /// `client.token` or `client.subscription_token`): PEM keys parsed, regexes compiled,
    /// the JWKS endpoint checked. Errors name the option.
    pub fn from_config(t: &crate::config::Token, skip_signature: bool, at: &str) -> Result<Verifier, String> {
        if !t.audience.is_empty() && !t.audience_regex.is_empty() {
            return Err(format!(
                "{at}.audience_regex: can not use both audience and audience_regex, configure only one of them"
            ));
        }
        if !t.issuer.is_empty() && !t.issuer_regex.is_empty() {
            return Err(format!(
                "{at}.issuer_regex: can not use both issuer and issuer_regex, configure only one of them"
            ));
        }
        let regex = |name: &str, pattern: &str, exact: &str| -> Result<Expect, String> {
            if !pattern.is_empty() {
                let re = crate::config::ChannelRegex::new(pattern).map_err(|e| format!("{at}.{name}: {e}"))?;
                return Ok(Expect::Regex(re.regex().cloned().unwrap_or_else(|| unreachable!())));
            }
            Ok(if exact.is_empty() { Expect::Any } else { Expect::Exact(exact.to_string()) })
        };
        let audience = regex("audience_regex", &t.audience_regex, &t.audience)?;
        let issuer = regex("issuer_regex", &t.issuer_regex, &t.issuer)?;
        let mut v = Verifier { audience, issuer, skip_signature, ..Default::default() };
        if !t.jwks_public_endpoint.is_empty() {
            let ep = &t.jwks_public_endpoint;
            let at_ep = format!("{at}.jwks_public_endpoint");
            let sample: Vec<_> = jwks::placeholders(ep).into_iter().map(|p| (p, "x".to_string())).collect();
            let probe = jwks::resolve(ep, &sample).map_err(|e| format!("{at_ep}: {e}"))?;
            match probe.split_once("://") {
                Some(("http" | "https", rest)) if !rest.is_empty() => {}
                _ => return Err(format!("{at_ep}: endpoint must have http:// or https:// scheme, got: {ep}")),
            }
            let regexes = [("issuer_regex", t.issuer_regex.as_str()), ("audience_regex", t.audience_regex.as_str())];
            if let Err(e) = jwks::check_template_safety(ep, &regexes) {
                if t.insecure_skip_jwks_endpoint_safety_check {
                    tracing::warn!(error = %e, "JWKS endpoint template safety check skipped — this is INSECURE");
                } else {
                    return Err(format!("{at_ep}: {e}"));
                }
            }
            v.jwks = Some((ep.clone(), Arc::default()));
            return Ok(v);
        }
        if !t.hmac_secret_key.is_empty() {
            v.hmac = Some(DecodingKey::from_secret(t.hmac_secret_key.as_bytes()));
        }
        if !t.hmac_previous_secret_key.is_empty() {
            let key = DecodingKey::from_secret(t.hmac_previous_secret_key.as_bytes());
            v.previous = Some((key, t.hmac_previous_secret_key_valid_until));
        }
        if !t.rsa_public_key.is_empty() {
            v.rsa = Some(keys::rsa_from_pem(&t.rsa_public_key).map_err(|e| format!("{at}.rsa_public_key: {e}"))?);
        }
        if !t.ecdsa_public_key.is_empty() {
            v.ec = Some(keys::ec_from_pem(&t.ecdsa_public_key).map_err(|e| format!("{at}.ecdsa_public_key: {e}"))?);
        }
        Ok(v)
    }

    /// Verifies a token whose keys are at hand; a JWKS key not in the cache makes it invalid
    /// (use [`Verifier::check`] to fetch it).
    pub fn verify(&self, token: &str) -> Result<Map<String, Value>, TokenError> {
        match self.check(token) {
            Check::Done(r) => r,
            Check::Fetch(_) => invalid("jwks: public key not found"),
        }
    }

    /// Verifies, fetching a missing JWKS key first (blocking: the CLI, never a worker).
    pub fn verify_blocking(&self, token: &str) -> Result<Map<String, Value>, TokenError> {
        match self.check(token) {
            Check::Done(r) => r,
            Check::Fetch(f) => {
                f.run_blocking();
                self.verify(token)
            }
        }
    }

    /// Verifies signature and registered claims, or names the JWKS keys missing for it.
    pub fn check(&self, token: &str) -> Check {
        match self.check_inner(token) {
            Ok(fetch) => Check::Fetch(fetch),
            Err(done) => Check::Done(done),
        }
    }

    /// `Ok(fetch)` when JWKS keys are missing, else `Err(outcome)` (so that `?` ends the
    /// check with its outcome).
    #[allow(clippy::type_complexity)]
    fn check_inner(&self, token: &str) -> Result<jwks::Fetch, Result<Map<String, Value>, TokenError>> {
        let mut parts = token.split('.');
        let (Some(h64), Some(c64), Some(sig), None) = (parts.next(), parts.next(), parts.next(), parts.next()) else {
            return Err(invalid("malformed token"));
        };
        let header = jsonwebtoken::decode_header(token).map_err(|e| match e.kind() {
            JwtErrorKind::Json(_) => TokenError::Invalid("malformed token header or unsupported algorithm".into()),
            _ => TokenError::Invalid("malformed token".into()),
        });
        let header = header.map_err(Err)?;
        let claims = URL_SAFE_NO_PAD
            .decode(c64)
            .ok()
            .and_then(|b| serde_json::from_slice::<Map<String, Value>>(&b).ok())
            .ok_or(Err(TokenError::Invalid("malformed token claims".into())))?;
        let registered = registered(&claims).map_err(Err)?;
        // Regexes first: their groups resolve the JWKS endpoint.
        let mut vars = Vec::new();
        if let Expect::Regex(re) = &self.issuer {
            let Some(caps) = re.captures(registered.iss) else { return Err(invalid("issuer not matched")) };
            push_groups(re, &caps, &mut vars);
        }
        if let Expect::Regex(re) = &self.audience {
            let Some(caps) = registered.aud.iter().find_map(|a| re.captures(a)) else {
                return Err(invalid("audience not matched"));
            };
            push_groups(re, &caps, &mut vars);
        }
        if !self.skip_signature {
            let message = &token[..h64.len() + 1 + c64.len()];
            let verified = match &self.jwks {
                Some((template, snapshot)) => {
                    let kid = header.kid.as_deref().unwrap_or("");
                    if kid.is_empty() {
                        return Err(invalid("jwks: kid is not provided"));
                    }
                    let url = jwks::resolve(template, &vars).map_err(|e| Err(TokenError::Invalid(e)))?;
                    let Some(key) = snapshot.get(&url, kid) else { return Ok(jwks::Fetch { url }) };
                    let alg = key.algorithm(header.alg).map_err(|e| Err(TokenError::Invalid(e.into())))?;
                    signature_ok(sig, message, key.key(), alg)
                }
                None => self.signature(header.alg, sig, message),
            };
            verified.map_err(Err)?;
        }
        if let Expect::Exact(a) = &self.audience {
            if !registered.aud.iter().any(|x| x == a) {
                return Err(invalid("invalid audience"));
            }
        }
        if let Expect::Exact(i) = &self.issuer {
            if registered.iss != i {
                return Err(invalid("invalid issuer"));
            }
        }
        check_dates(&claims, now_nanos()).map_err(Err)?;
        Err(Ok(claims))
    }

    /// The signature with the configured key of `alg`.
    fn signature(&self, alg: Algorithm, sig: &str, message: &str) -> Result<(), TokenError> {
        use Algorithm::*;
        let key = match alg {
            HS256 | HS384 | HS512 => self.hmac.as_ref(),
            RS256 | RS384 | RS512 => self.rsa.as_ref(),
            ES256 | ES384 => self.ec.as_ref().filter(|e| e.alg == alg).map(|e| &e.key),
            _ => return invalid(format!("unsupported JWT algorithm: {alg:?}")),
        };
        let r = match key {
            Some(key) => signature_ok(sig, message, key, alg),
            None => invalid(format!("disabled JWT algorithm: {alg:?}")),
        };
        if r.is_err() && matches!(alg, HS256 | HS384 | HS512) {
            if let Some((prev, until)) = &self.previous {
                if (*until <= 0 || now_secs() as i64 <= *until) && signature_ok(sig, message, prev, alg).is_ok() {
                    return Ok(());
                }
            }
        }
        r
    }
}

fn signature_ok(sig: &str, message: &str, key: &DecodingKey, alg: Algorithm) -> Result<(), TokenError> {
    match jsonwebtoken::crypto::verify(sig, message.as_bytes(), key, alg) {
        Ok(true) => Ok(()),
        Ok(false) => invalid("signature mismatch"),
        Err(e) => match e.kind() {
            JwtErrorKind::Base64(_) => invalid("malformed token"),
            _ => invalid(format!("signature not verified: {e}")),
        },
    }
}

fn push_groups(re: &regex::Regex, caps: &regex::Captures, vars: &mut Vec<(String, String)>) {
    for (i, name) in re.capture_names().enumerate() {
        if let Some(name) = name {
            let value = caps.get(i).map(|m| m.as_str()).unwrap_or("");
            vars.push((name.to_string(), value.to_string()));
        }
    }
}

/// The registered claims `aud` and `iss` (`sub` and `jti` must be strings too), typed as
/// Centrifugo decodes them: a wrong type makes the token invalid.
struct Registered<'a> {
    iss: &'a str,
    aud: Vec<&'a str>,
}

fn registered(claims: &Map<String, Value>) -> Result<Registered<'_>, TokenError> {
    for name in ["sub", "jti"] {
        if !matches!(claims.get(name), None | Some(Value::Null | Value::String(_))) {
            return invalid(format!("invalid {name} claim"));
        }
    }
    let iss = match claims.get("iss") {
        None | Some(Value::Null) => "",
        Some(Value::String(s)) => s,
        Some(_) => return invalid("invalid iss claim"),
    };
    let aud = match claims.get("aud") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::String(s)) => vec![s.as_str()],
        Some(Value::Array(list)) => list
            .iter()
            .map(|a| a.as_str().ok_or_else(|| TokenError::Invalid("invalid aud claim".into())))
            .collect::<Result<_, _>>()?,
        Some(_) => return invalid("invalid aud claim"),
    };
    Ok(Registered { iss, aud })
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

/// One-shot HMAC verification; see [`Verifier`] for the rules.
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

    fn data(name: &str) -> String {
        std::fs::read_to_string(format!("{}/tests/data/tokens/{name}", env!("CARGO_MANIFEST_DIR"))).unwrap()
    }

    /// The private key of a PKCS#8 PEM file as `jsonwebtoken` takes it (DER: PKCS#1 for RSA).
    fn private(alg: Algorithm, key_file: &str) -> EncodingKey {
        let (_, der) = keys::pem_block(&data(key_file)).unwrap();
        match alg {
            Algorithm::ES256 | Algorithm::ES384 => EncodingKey::from_ec_der(&der),
            Algorithm::EdDSA => EncodingKey::from_ed_der(&der),
            _ => {
                // PrivateKeyInfo: SEQUENCE { version, algorithm, OCTET STRING RSAPrivateKey }.
                let (_, body, _) = keys::der_next(&der).unwrap();
                let (_, _, rest) = keys::der_next(body).unwrap();
                let (_, _, rest) = keys::der_next(rest).unwrap();
                let (_, pkcs1, _) = keys::der_next(rest).unwrap();
                EncodingKey::from_rsa_der(pkcs1)
            }
        }
    }

    fn signed(alg: Algorithm, key_file: &str, kid: Option<&str>, claims: Value) -> String {
        let key = private(alg, key_file);
        let mut h = Header::new(alg);
        h.kid = kid.map(str::to_string);
        jsonwebtoken::encode(&h, &claims, &key).unwrap()
    }

    fn options(f: impl FnOnce(&mut crate::config::Token)) -> crate::config::Token {
        let mut t = crate::config::Token::default();
        f(&mut t);
        t
    }

    fn verifier(f: impl FnOnce(&mut crate::config::Token)) -> Verifier {
        Verifier::from_config(&options(f), false, "client.token").unwrap()
    }

    fn is_invalid(r: Result<Map<String, Value>, TokenError>) -> bool {
        matches!(r, Err(TokenError::Invalid(_)))
    }

    #[test]
    fn rsa_keys() {
        let v = verifier(|t| t.rsa_public_key = data("rsa.pub"));
        let cert = verifier(|t| t.rsa_public_key = data("rsa.crt"));
        for alg in [Algorithm::RS256, Algorithm::RS384, Algorithm::RS512] {
            let t = signed(alg, "rsa.key", None, serde_json::json!({"sub": "u"}));
            assert_eq!(v.verify(&t).unwrap()["sub"], "u", "{alg:?}");
            assert!(cert.verify(&t).is_ok(), "{alg:?} with the certificate's key");
        }
        let other = signed(Algorithm::RS256, "rsa_other.key", None, serde_json::json!({"sub": "u"}));
        assert!(is_invalid(v.verify(&other)));
        let expired = signed(Algorithm::RS256, "rsa.key", None, serde_json::json!({"sub": "u", "exp": now_secs() - 1}));
        assert_eq!(v.verify(&expired), Err(TokenError::Expired));
        // PS256 is not one of Centrifugo's algorithms; HMAC has no key here.
        let pss = signed(Algorithm::PS256, "rsa.key", None, serde_json::json!({"sub": "u"}));
        assert!(is_invalid(v.verify(&pss)));
        let hs = sign_with(Algorithm::HS256, serde_json::json!({"sub": "u"}));
        assert!(is_invalid(v.verify(&hs)));
        // The public key's PEM as the HMAC secret of an HS256 token (algorithm confusion).
        let confused = jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &serde_json::json!({"sub": "u"}),
            &EncodingKey::from_secret(data("rsa.pub").as_bytes()),
        )
        .unwrap();
        assert!(is_invalid(v.verify(&confused)));
    }

    #[test]
    fn ecdsa_keys() {
        let v256 = verifier(|t| t.ecdsa_public_key = data("ec256.pub"));
        let v384 = verifier(|t| t.ecdsa_public_key = data("ec384.pub"));
        let t256 = signed(Algorithm::ES256, "ec256.key", None, serde_json::json!({"sub": "u"}));
        let t384 = signed(Algorithm::ES384, "ec384.key", None, serde_json::json!({"sub": "u"}));
        assert!(v256.verify(&t256).is_ok());
        assert!(v384.verify(&t384).is_ok());
        assert!(is_invalid(v256.verify(&t384)));
        assert!(is_invalid(v384.verify(&t256)));
        let other = signed(Algorithm::ES256, "ec256_other.key", None, serde_json::json!({"sub": "u"}));
        assert!(is_invalid(v256.verify(&other)));
        let expired = signed(Algorithm::ES256, "ec256.key", None, serde_json::json!({"sub": "u", "exp": 1}));
        assert_eq!(v256.verify(&expired), Err(TokenError::Expired));
        let rs = signed(Algorithm::RS256, "rsa.key", None, serde_json::json!({"sub": "u"}));
        assert!(is_invalid(v256.verify(&rs)));
    }

    #[test]
    fn bad_keys_name_the_option() {
        let err =
            |f: fn(&mut crate::config::Token)| Verifier::from_config(&options(f), false, "client.token").unwrap_err();
        assert!(err(|t| t.rsa_public_key = "not a key".into()).starts_with("client.token.rsa_public_key: "));
        assert!(err(|t| t.rsa_public_key = data("ec256.pub")).starts_with("client.token.rsa_public_key: "));
        assert!(err(|t| t.ecdsa_public_key = data("rsa.pub")).starts_with("client.token.ecdsa_public_key: "));
        assert!(err(|t| t.ecdsa_public_key = data("ec521.pub")).contains("P-521"));
        assert!(err(|t| t.ecdsa_public_key = "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n".into())
            .starts_with("client.token.ecdsa_public_key: "));
        assert!(err(|t| t.audience_regex = "(".into()).starts_with("client.token.audience_regex: "));
        assert!(err(|t| t.issuer_regex = "a(b".into()).starts_with("client.token.issuer_regex: "));
        assert!(err(|t| {
            t.audience = "a".into();
            t.audience_regex = "a".into();
        })
        .contains("only one"));
        assert!(
            err(|t| t.jwks_public_endpoint = "ftp://x/jwks".into()).starts_with("client.token.jwks_public_endpoint: ")
        );
        assert!(err(|t| t.jwks_public_endpoint = "not a url".into()).starts_with("client.token.jwks_public_endpoint: "));
        assert!(err(|t| {
            t.jwks_public_endpoint = "https://h/{{tenant}}/jwks".into();
            t.issuer_regex = "^(?P<tenant>.+)$".into();
        })
        .contains("explicit list"));
        let skipped = options(|t| {
            t.jwks_public_endpoint = "https://h/{{tenant}}/jwks".into();
            t.issuer_regex = "^(?P<tenant>.+)$".into();
            t.insecure_skip_jwks_endpoint_safety_check = true;
        });
        assert!(Verifier::from_config(&skipped, false, "client.token").is_ok());
    }

    #[test]
    fn hmac_rotation() {
        let prev = |until: i64| {
            verifier(|t| {
                t.hmac_secret_key = "new".into();
                t.hmac_previous_secret_key = KEY.into();
                t.hmac_previous_secret_key_valid_until = until;
            })
        };
        let old = sign_with(Algorithm::HS384, serde_json::json!({"sub": "u"}));
        assert!(prev(0).verify(&old).is_ok());
        assert!(prev(now_secs() as i64 + 60).verify(&old).is_ok());
        assert!(is_invalid(prev(now_secs() as i64 - 1).verify(&old)));
        let new = jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &serde_json::json!({"sub": "u"}),
            &EncodingKey::from_secret(b"new"),
        )
        .unwrap();
        assert!(prev(now_secs() as i64 - 1).verify(&new).is_ok());
        let stranger = jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &serde_json::json!({"sub": "u"}),
            &EncodingKey::from_secret(b"other"),
        )
        .unwrap();
        assert!(is_invalid(prev(0).verify(&stranger)));
    }

    #[test]
    fn audience_and_issuer_regexes() {
        let v = verifier(|t| {
            t.hmac_secret_key = KEY.into();
            t.audience_regex = "^app-(dev|prod)$".into();
            t.issuer_regex = r"^https://auth\.example\.com/".into();
        });
        let t = |claims: Value| sign_with(Algorithm::HS256, claims);
        let ok = t(serde_json::json!({"aud": ["x", "app-prod"], "iss": "https://auth.example.com/t1"}));
        assert!(v.verify(&ok).is_ok());
        assert!(is_invalid(v.verify(&t(serde_json::json!({"aud": "app-test", "iss": "https://auth.example.com/"})))));
        assert!(is_invalid(v.verify(&t(serde_json::json!({"aud": "app-dev", "iss": "https://evil.com/"})))));
        assert!(is_invalid(v.verify(&t(serde_json::json!({"iss": "https://auth.example.com/"})))));
        assert!(is_invalid(v.verify(&t(serde_json::json!({"aud": 5, "iss": "https://auth.example.com/"})))));
        // A wrong audience is invalid even when the token is also expired.
        let expired = t(serde_json::json!({"aud": "app-x", "iss": "https://auth.example.com/", "exp": 1}));
        assert!(is_invalid(v.verify(&expired)));
    }

    #[test]
    fn skip_signature_verify() {
        let mut o = options(|t| t.rsa_public_key = data("rsa.pub"));
        o.audience = "a".into();
        let v = Verifier::from_config(&o, true, "client.token").unwrap();
        let other = signed(Algorithm::RS256, "rsa_other.key", None, serde_json::json!({"sub": "u", "aud": "a"}));
        assert!(v.verify(&other).is_ok());
        let hs = sign_with(Algorithm::HS256, serde_json::json!({"sub": "u", "aud": "a"}));
        assert!(v.verify(&hs).is_ok());
        // Claims are still checked; `alg: none` is still refused.
        let wrong_aud = signed(Algorithm::RS256, "rsa_other.key", None, serde_json::json!({"sub": "u", "aud": "b"}));
        assert!(is_invalid(v.verify(&wrong_aud)));
        let none = raw_token(r#"{"alg":"none"}"#, r#"{"sub":"u","aud":"a"}"#, "");
        assert!(is_invalid(v.verify(&none)));
    }

    fn jwk_of(alg: Algorithm, key_file: &str, kid: &str, with_alg: bool) -> keys::Jwk {
        let enc = private(alg, key_file);
        let mut v = serde_json::to_value(jsonwebtoken::jwk::Jwk::from_encoding_key(&enc, alg).unwrap()).unwrap();
        let o = v.as_object_mut().unwrap();
        o.insert("kid".into(), kid.into());
        o.insert("use".into(), "sig".into());
        if !with_alg {
            o.remove("alg");
        }
        keys::jwk(&v).unwrap().1
    }

    #[test]
    fn jwks_keys_from_the_cache() {
        let url = "http://127.0.0.1:9/unit/jwks";
        let v = verifier(|t| t.jwks_public_endpoint = url.into());
        let claims = serde_json::json!({"sub": "u"});
        let t = signed(Algorithm::RS256, "rsa.key", Some("r1"), claims.clone());
        match v.check(&t) {
            Check::Fetch(f) => assert_eq!(f.url, url),
            other => panic!("{other:?}"),
        }
        jwks::insert(url, "r1", jwk_of(Algorithm::RS256, "rsa.key", "r1", false));
        jwks::insert(url, "e1", jwk_of(Algorithm::ES256, "ec256.key", "e1", true));
        jwks::insert(url, "d1", jwk_of(Algorithm::EdDSA, "ed25519.key", "d1", true));
        assert!(v.verify(&t).is_ok());
        // Without `alg` in the set, the RSA family's algorithms are taken from the header.
        assert!(v.verify(&signed(Algorithm::RS512, "rsa.key", Some("r1"), claims.clone())).is_ok());
        assert!(is_invalid(v.verify(&signed(Algorithm::PS256, "rsa.key", Some("r1"), claims.clone()))));
        assert!(is_invalid(v.verify(&signed(Algorithm::RS256, "rsa_other.key", Some("r1"), claims.clone()))));
        assert!(v.verify(&signed(Algorithm::ES256, "ec256.key", Some("e1"), claims.clone())).is_ok());
        assert!(is_invalid(v.verify(&signed(Algorithm::ES256, "ec256.key", Some("r1"), claims.clone()))));
        assert!(v.verify(&signed(Algorithm::EdDSA, "ed25519.key", Some("d1"), claims.clone())).is_ok());
        let expired = signed(Algorithm::EdDSA, "ed25519.key", Some("d1"), serde_json::json!({"exp": 1}));
        assert_eq!(v.verify(&expired), Err(TokenError::Expired));
        // No `kid`: invalid without a fetch. HMAC is not used with a JWKS.
        assert!(is_invalid(v.verify(&signed(Algorithm::RS256, "rsa.key", None, claims.clone()))));
        let mut h = Header::new(Algorithm::HS256);
        h.kid = Some("r1".into());
        let hs = jsonwebtoken::encode(&h, &claims, &EncodingKey::from_secret(KEY.as_bytes())).unwrap();
        assert!(is_invalid(v.verify(&hs)));
        assert!(matches!(v.check(&signed(Algorithm::RS256, "rsa.key", Some("r2"), claims)), Check::Fetch(_)));
    }

    #[test]
    fn jwks_template_from_issuer_groups() {
        let v = verifier(|t| {
            t.jwks_public_endpoint = "http://127.0.0.1:9/{{tenant}}/jwks".into();
            t.issuer_regex = "^https://(?P<tenant>acme|globex)\\.example$".into();
        });
        jwks::insert("http://127.0.0.1:9/acme/jwks", "k", jwk_of(Algorithm::ES384, "ec384.key", "k", true));
        let t = |iss: &str| signed(Algorithm::ES384, "ec384.key", Some("k"), serde_json::json!({"iss": iss}));
        assert!(v.verify(&t("https://acme.example")).is_ok());
        match v.check(&t("https://globex.example")) {
            Check::Fetch(f) => assert_eq!(f.url, "http://127.0.0.1:9/globex/jwks"),
            other => panic!("{other:?}"),
        }
        assert!(is_invalid(v.verify(&t("https://initech.example"))));
    }
}
