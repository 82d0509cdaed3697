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

/// Checks the token options of a loaded configuration as the workers will build them (PEM keys
/// parsed, regexes compiled, the JWKS endpoint and its template checked): the error names the
/// option. The server's start-up and `gyre checkconfig` run it after [`crate::config::load`].
pub fn check_config(c: &crate::config::Config) -> Result<(), String> {
    let skip = c.client.insecure_skip_token_signature_verify;
    Verifier::from_config(&c.client.token, skip, "client.token")?;
    if c.client.subscription_token.enabled {
        Verifier::from_config(&c.client.subscription_token.token, skip, "client.subscription_token")?;
    }
    Ok(())
}

/// One-shot HMAC verification; see [`Verifier`] for the rules.
pub fn verify(token: &str, secret: &str, audience: &str, issuer: &str) -> Result<Map<String, Value>, TokenError> {
    Verifier::new(secret, audience, issuer).verify(token)
}

#[cfg(test)]
mod tests;
