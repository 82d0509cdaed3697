//! The verifier against tokens signed here (`jsonwebtoken`) with the keys of `tests/data/tokens`.

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
    let err = |f: fn(&mut crate::config::Token)| Verifier::from_config(&options(f), false, "client.token").unwrap_err();
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
    assert!(err(|t| t.jwks_public_endpoint = "ftp://x/jwks".into()).starts_with("client.token.jwks_public_endpoint: "));
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
