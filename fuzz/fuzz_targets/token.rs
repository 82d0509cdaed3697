//! JWT parsing and verification (`gyre::token`).
//!
//! 1. Any string verifies without a panic, under a secret, audience and issuer taken from the
//!    input; a token that verifies must be a well-formed three-part JWT.
//! 2. When the input's tail is a JSON object, it is signed as a token's claims (HS256 through
//!    `generate_connection_token`, or HS384/HS512) and then:
//!    - the token verifies under its own secret unless its claims make it expired/not yet
//!      valid or fail the audience/issuer checks — never with "signature mismatch";
//!    - every claim comes back (floats to within 1e-12 relative: serde_json's default float
//!      parsing is not exact in the last bit for some long decimals);
//!    - the same token with one byte changed never verifies;
//!    - it never verifies under another secret.
//!
//! Input: 1 flag byte, 1 byte secret length, the secret, then the token text / claims.

#![no_main]

use gyre::token::{self, TokenError, Verifier};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use libfuzzer_sys::fuzz_target;
use serde_json::Value;

fuzz_target!(|data: &[u8]| {
    if data.len() < 2 {
        return;
    }
    let flags = data[0];
    let n = (data[1] as usize).min(data.len() - 2);
    let secret = String::from_utf8_lossy(&data[2..2 + n]).into_owned();
    let rest = &data[2 + n..];
    let Ok(text) = std::str::from_utf8(rest) else { return };
    let (aud, iss) = match flags & 3 {
        0 => ("", ""),
        1 => ("aud-1", ""),
        2 => ("", "iss-1"),
        _ => ("aud-1", "iss-1"),
    };
    let v = Verifier::new(&secret, aud, iss);

    // 1. Arbitrary text.
    if let Ok(claims) = v.verify(text) {
        assert!(!secret.is_empty(), "a token verified without a key: {text:?} -> {claims:?}");
        assert_eq!(text.split('.').count(), 3, "verified a token that is not three parts: {text:?}");
    }

    // 2. Signed claims.
    let Ok(Value::Object(claims)) = serde_json::from_str::<Value>(text) else { return };
    if secret.is_empty() {
        assert!(token::generate_connection_token(&secret, "u", None, claims).is_err());
        return;
    }
    let signed = match (flags >> 2) % 3 {
        0 => match token::generate_connection_token(&secret, "u", None, claims.clone()) {
            Ok(t) => t,
            Err(e) => panic!("signing {claims:?} failed: {e}"),
        },
        k => {
            let alg = if k == 1 { Algorithm::HS384 } else { Algorithm::HS512 };
            jsonwebtoken::encode(&Header::new(alg), &claims, &EncodingKey::from_secret(secret.as_bytes()))
                .expect("sign with jsonwebtoken")
        }
    };
    let own = v.verify(&signed);
    if let Err(TokenError::Invalid(why)) = &own {
        assert!(!why.contains("signature"), "a freshly signed token failed its signature check: {why} ({claims:?})");
    }
    if let Ok(got) = &own {
        // Every claim given comes back (`generate_connection_token` sets `sub` and `iat`).
        for (k, val) in &claims {
            if !matches!(k.as_str(), "sub" | "iat" | "exp") {
                assert!(got.get(k).is_some_and(|g| same(g, val)), "claim {k}: {:?} came back as {:?}", val, got.get(k));
            }
        }
    }

    // One byte changed: never valid.
    let mut bytes = signed.clone().into_bytes();
    let at = (flags as usize * 7 + rest.len()) % bytes.len();
    let delta = 1 + (rest.first().copied().unwrap_or(0) % 255);
    bytes[at] = bytes[at].wrapping_add(delta);
    if let Ok(tampered) = String::from_utf8(bytes) {
        if tampered != signed {
            assert!(v.verify(&tampered).is_err(), "a token with byte {at} changed verified: {tampered:?}");
        }
    }
    // Another secret: never valid.
    let other = Verifier::new(&format!("{secret}x"), aud, iss);
    assert!(other.verify(&signed).is_err(), "verified under another secret");
});

/// Equal, with floats compared to a relative 1e-12.
fn same(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) if x.is_f64() || y.is_f64() => {
            let (x, y) = (x.as_f64().unwrap_or(f64::NAN), y.as_f64().unwrap_or(f64::NAN));
            x == y || (x - y).abs() <= 1e-12 * x.abs().max(y.abs())
        }
        (Value::Array(x), Value::Array(y)) => x.len() == y.len() && x.iter().zip(y).all(|(x, y)| same(x, y)),
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len() && x.iter().all(|(k, v)| y.get(k).is_some_and(|w| same(v, w)))
        }
        _ => a == b,
    }
}
