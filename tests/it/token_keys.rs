//! Token keys other than the HMAC secret, against the real binary: RSA and ECDSA public keys
//! (`rsa_public_key`, `ecdsa_public_key`), a JWKS endpoint served over https by a real HTTP
//! server (`tests/python/jwks_server.py`) with keys rotated by `kid` and an outage, the
//! previous HMAC secret, `audience_regex`/`issuer_regex`, subscription tokens with their own
//! keys, skipped signature checks, and bad key options stopping the start-up.
//!
//! Tokens are signed by PyJWT with the `cryptography` backend (`tests/python/sign_jwt.py`, in
//! `target/pyenv`) and by the `jsonwebtoken` npm package (`tests/js/sign_jwt.js`); keys are
//! the test keys of `tests/data/tokens`. The official SDKs connect with each kind of key.

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::{json, Value};

use crate::util::*;
use crate::ws_client::*;

const SECRET: &str = "token-keys-secret-0123456789";

fn now() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs() as i64
}

/// The path of a test key file.
fn file(name: &str) -> String {
    repo_root().join("tests/data/tokens").join(name).to_string_lossy().into_owned()
}

/// The text of a test key file.
fn pem(name: &str) -> String {
    std::fs::read_to_string(file(name)).unwrap()
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Signer {
    /// PyJWT (`cryptography` backend).
    Py,
    /// `jsonwebtoken` (npm).
    Node,
}

/// One token to sign: algorithm, key file (or HMAC secret), claims, `kid`.
fn req(alg: &str, key: &str, claims: Value, kid: Option<&str>) -> Value {
    let key = if alg.starts_with("HS") { key.to_string() } else { file(key) };
    json!({"alg": alg, "key": key, "claims": claims, "kid": kid})
}

/// Signs with `signer`; `None` (the test is skipped) when it is not installed and `CI` unset.
fn sign(signer: Signer, test: &str, reqs: &[Value]) -> Option<Vec<String>> {
    let root = repo_root();
    let mut cmd = match signer {
        Signer::Py => {
            let python = root.join("target/pyenv/bin/python");
            let ok = Command::new(&python)
                .args(["-c", "import jwt, cryptography"])
                .output()
                .is_ok_and(|o| o.status.success());
            if !ok {
                unavailable(
                    test,
                    "PyJWT with cryptography is not installed in target/pyenv",
                    "target/pyenv/bin/pip install 'pyjwt[crypto]==2.15.1'",
                );
                return None;
            }
            let mut c = Command::new(python);
            c.arg(root.join("tests/python/sign_jwt.py"));
            c
        }
        Signer::Node => {
            if !root.join("tests/js/node_modules/jsonwebtoken/package.json").exists() {
                unavailable(test, "tests/js/node_modules/jsonwebtoken is missing", "npm ci --prefix tests/js");
                return None;
            }
            let mut c = Command::new("node");
            c.arg(root.join("tests/js/sign_jwt.js"));
            c
        }
    };
    let mut child = cmd
        .current_dir(root)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{signer:?} signer: {e}"));
    child.stdin.take().unwrap().write_all(Value::from(reqs.to_vec()).to_string().as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{signer:?} signer failed: {}", String::from_utf8_lossy(&out.stderr));
    let tokens: Vec<String> = serde_json::from_slice(&out.stdout).expect("the signer's tokens");
    assert_eq!(tokens.len(), reqs.len());
    Some(tokens)
}

/// How a connect ended.
#[derive(Debug, Clone, PartialEq)]
enum Outcome {
    Connected,
    /// An error reply (109: token expired).
    Error(i64),
    /// The connection was closed with this code (3500: invalid token).
    Closed(u16),
}

use crate::ws_client::JsonClient as C;

impl C {
    /// A connect command with `token`, and how it ended.
    fn connect(&mut self, token: &str) -> Outcome {
        match self.call(json!({"connect": {"token": token}})) {
            Err(code) => Outcome::Closed(code),
            Ok(r) if r["error"]["code"].is_i64() => Outcome::Error(r["error"]["code"].as_i64().unwrap()),
            Ok(r) => {
                assert!(r["connect"]["client"].is_string(), "connect reply: {r}");
                Outcome::Connected
            }
        }
    }
}

/// Connects once with `token` on a new connection.
fn connect(s: &Server, token: &str) -> Outcome {
    C::open(s).connect(token)
}

const OK: Outcome = Outcome::Connected;
const INVALID: Outcome = Outcome::Closed(3500);
const EXPIRED: Outcome = Outcome::Error(109);

fn base(patch: Value) -> Value {
    let mut cfg = json!({
        "http_api": {"key": KEY},
        "client": {"token": {"hmac_secret_key": SECRET}},
        "channel": {"namespaces": [
            {"name": "chat", "allow_subscribe_for_client": true, "presence": true, "join_leave": true,
             "force_push_join_leave": true, "allow_publish_for_subscriber": true, "allow_presence_for_subscriber": true},
            {"name": "news"}
        ]},
        "workers": 2
    });
    merge(&mut cfg, patch);
    cfg
}

fn claims(extra: Value) -> Value {
    let mut c = json!({"sub": "alice", "aud": "gyre", "iss": "auth", "exp": now() + 3600});
    merge(&mut c, extra);
    c
}

/// RS256/384/512 and ES256 tokens of both signers verify with the configured public keys;
/// another key, an expired token, a wrong audience or issuer, and algorithms without a key
/// (ES384 with a P-256 key, PS256) are refused with Centrifugo's codes, and logged.
#[test]
fn rsa_and_ecdsa_keys() {
    let s = Server::start(base(json!({"client": {"token": {
        "rsa_public_key": pem("rsa.pub"), "ecdsa_public_key": pem("ec256.pub"),
        "audience": "gyre", "issuer": "auth"
    }}})));
    for signer in [Signer::Py, Signer::Node] {
        let mut cases = Vec::new();
        for alg in ["RS256", "RS384", "RS512"] {
            cases.push((format!("{alg} valid"), req(alg, "rsa.key", claims(json!({})), None), OK));
            cases.push((format!("{alg} other key"), req(alg, "rsa_other.key", claims(json!({})), None), INVALID));
        }
        cases.push(("ES256 valid".into(), req("ES256", "ec256.key", claims(json!({})), None), OK));
        cases.push(("ES256 other key".into(), req("ES256", "ec256_other.key", claims(json!({})), None), INVALID));
        cases.push(("ES384, P-256 configured".into(), req("ES384", "ec384.key", claims(json!({})), None), INVALID));
        cases.push(("PS256".into(), req("PS256", "rsa.key", claims(json!({})), None), INVALID));
        cases.push(("HS256 with the secret".into(), req("HS256", SECRET, claims(json!({})), None), OK));
        for (alg, key) in [("RS256", "rsa.key"), ("ES256", "ec256.key")] {
            cases.push((format!("{alg} expired"), req(alg, key, claims(json!({"exp": now() - 10})), None), EXPIRED));
            cases.push((
                format!("{alg} not yet valid"),
                req(alg, key, claims(json!({"nbf": now() + 600})), None),
                EXPIRED,
            ));
            cases.push((
                format!("{alg} wrong audience"),
                req(alg, key, claims(json!({"aud": "other"})), None),
                INVALID,
            ));
            cases.push((format!("{alg} wrong issuer"), req(alg, key, claims(json!({"iss": "other"})), None), INVALID));
            cases.push((
                format!("{alg} no audience"),
                req(alg, key, json!({"sub": "alice", "iss": "auth"}), None),
                INVALID,
            ));
        }
        let reqs: Vec<Value> = cases.iter().map(|c| c.1.clone()).collect();
        let Some(tokens) = sign(signer, "rsa_and_ecdsa_keys", &reqs) else { continue };
        for ((what, _, want), token) in cases.iter().zip(&tokens) {
            assert_eq!(&connect(&s, token), want, "{signer:?}: {what}");
        }
    }
    let log = s.stderr();
    assert!(log.contains("invalid connection token"), "refused tokens are logged:\n{log}");
    assert!(log.contains("signature mismatch") && log.contains(r#""client":""#), "with the reason and client:\n{log}");
}

/// A P-384 key verifies ES384; `audience_regex`/`issuer_regex` are matched.
#[test]
fn p384_key_and_claim_regexes() {
    let s = Server::start(base(json!({"client": {"token": {
        "ecdsa_public_key": pem("ec384.pub"),
        "audience_regex": "^app-(web|ios)$", "issuer_regex": "^https://auth\\.example\\.com/"
    }}})));
    let c = |aud: &str, iss: &str| json!({"sub": "bob", "aud": aud, "iss": iss, "exp": now() + 60});
    let cases = [
        (req("ES384", "ec384.key", c("app-web", "https://auth.example.com/t1"), None), OK),
        (
            req(
                "ES384",
                "ec384.key",
                json!({"sub": "bob", "aud": ["x", "app-ios"], "iss": "https://auth.example.com/"}),
                None,
            ),
            OK,
        ),
        (req("ES384", "ec384.key", c("app-tv", "https://auth.example.com/"), None), INVALID),
        (req("ES384", "ec384.key", c("app-web", "https://auth.evil.com/"), None), INVALID),
        (req("ES256", "ec256.key", c("app-web", "https://auth.example.com/"), None), INVALID),
        (req("HS256", SECRET, c("app-web", "https://auth.example.com/"), None), OK),
    ];
    let reqs: Vec<Value> = cases.iter().map(|c| c.0.clone()).collect();
    let Some(tokens) = sign(Signer::Py, "p384_key_and_claim_regexes", &reqs) else { return };
    for (i, ((r, want), token)) in cases.iter().zip(&tokens).enumerate() {
        assert_eq!(&connect(&s, token), want, "case {i}: {r}");
    }
}

/// `hmac_previous_secret_key` keeps tokens of the old secret valid until
/// `hmac_previous_secret_key_valid_until`.
#[test]
fn hmac_secret_rotation() {
    let old = jwt("old-secret-0123456789", json!({"sub": "u"}));
    let new = jwt(SECRET, json!({"sub": "u"}));
    let other = jwt("some-other-secret", json!({"sub": "u"}));
    let rotating = |until: i64| {
        Server::start(base(json!({"client": {"token": {
            "hmac_previous_secret_key": "old-secret-0123456789",
            "hmac_previous_secret_key_valid_until": until
        }}})))
    };
    let s = rotating(now() + 3600);
    assert_eq!(connect(&s, &old), OK);
    assert_eq!(connect(&s, &new), OK);
    assert_eq!(connect(&s, &other), INVALID);
    let s = rotating(now() - 1);
    assert_eq!(connect(&s, &old), INVALID, "the previous secret is past its time");
    assert_eq!(connect(&s, &new), OK);
}

/// With `client.subscription_token.enabled`, subscription tokens are verified with their own
/// key, audience and user claim; the connection key does not verify them. Subscribe: expired
/// 109, invalid 103; sub_refresh: invalid closes with 3500.
#[test]
fn subscription_tokens_with_their_own_keys() {
    let s = Server::start(base(json!({"client": {
        "token": {"rsa_public_key": pem("rsa.pub")},
        "subscription_token": {"enabled": true, "ecdsa_public_key": pem("ec256.pub"), "audience": "subs",
                               "user_id_claim": "uid"}
    }})));
    let sub = |extra: Value| {
        let mut c = json!({"uid": "carol", "channel": "news:1", "aud": "subs", "exp": now() + 600});
        merge(&mut c, extra);
        c
    };
    let reqs = [
        req("RS256", "rsa.key", json!({"sub": "carol"}), None),
        req("ES256", "ec256.key", sub(json!({})), None),
        req("RS256", "rsa.key", sub(json!({})), None),
        req("ES256", "ec256.key", sub(json!({"exp": now() - 5})), None),
        req("ES256", "ec256.key", sub(json!({"aud": "other"})), None),
        req("ES256", "ec256_other.key", sub(json!({})), None),
        req("HS256", SECRET, sub(json!({})), None),
        req("ES256", "ec256.key", sub(json!({"exp": now() + 1200})), None),
        req("ES256", "ec256_other.key", sub(json!({"exp": now() + 1200})), None),
    ];
    let Some(t) = sign(Signer::Node, "subscription_tokens_with_their_own_keys", &reqs) else { return };
    let mut c = C::open(&s);
    assert_eq!(c.connect(&t[0]), OK);
    let r = c.call(json!({"subscribe": {"channel": "news:1", "token": t[1]}})).unwrap();
    assert!(r["subscribe"].is_object(), "subscribed with the subscription key: {r}");
    let code = |r: Result<Value, u16>| r.unwrap()["error"]["code"].as_i64();
    let mut d = C::open(&s);
    assert_eq!(d.connect(&t[0]), OK);
    for (i, want) in [(2, 103), (3, 109), (4, 103), (5, 103), (6, 103)] {
        assert_eq!(code(d.call(json!({"subscribe": {"channel": "news:1", "token": t[i]}}))), Some(want), "token {i}");
    }
    let r = c.call(json!({"sub_refresh": {"channel": "news:1", "token": t[7]}})).unwrap();
    assert_eq!(r["sub_refresh"]["expires"], true, "{r}");
    assert_eq!(c.call(json!({"sub_refresh": {"channel": "news:1", "token": t[8]}})), Err(3500));
    let log = s.stderr();
    assert!(log.contains("invalid subscription token") && log.contains("invalid subscription refresh token"), "{log}");
}

/// The JWKS server of a test.
fn jwks_server(test: &str, tls: bool) -> Option<LineProc> {
    let python = match pyenv_python() {
        Ok(p) => p,
        Err((what, how)) => {
            unavailable(test, &what, how);
            return None;
        }
    };
    let ok = Command::new(&python).args(["-c", "import jwt, cryptography"]).output().is_ok_and(|o| o.status.success());
    if !ok {
        unavailable(
            test,
            "PyJWT with cryptography is not installed in target/pyenv",
            "target/pyenv/bin/pip install 'pyjwt[crypto]==2.15.1'",
        );
        return None;
    }
    let mut cmd = Command::new(python);
    cmd.arg(repo_root().join("tests/python/jwks_server.py"));
    if tls {
        cmd.args(["--tls", &file("server.crt"), &file("server.key")]);
    }
    Some(LineProc::spawn("the JWKS server", cmd))
}

fn set_keys(p: &mut LineProc, keys: Value) {
    let keys: Vec<Value> = keys
        .as_array()
        .unwrap()
        .iter()
        .map(|k| {
            let mut k = k.clone();
            k["file"] = file(k["file"].as_str().unwrap()).into();
            k
        })
        .collect();
    p.send(json!({"op": "keys", "keys": keys}));
    p.take("keys set", |e| e["ev"] == "ok");
}

fn fetches(p: &mut LineProc) -> Value {
    p.send(json!({"op": "count"}));
    p.take("the fetch count", |e| e["ev"] == "count")
}

/// A JWKS endpoint over https (the test CA trusted through `SSL_CERT_FILE`): RSA, EC and
/// Ed25519 keys by `kid`; a rotation (a new `kid` fetches the set again, keys fetched before
/// stay cached); keys not for signatures ignored; an outage (cached keys keep verifying, an
/// unknown `kid` is refused within a few seconds).
#[test]
fn jwks_over_https_rotation_and_outage() {
    let test = "jwks_over_https_rotation_and_outage";
    let Some(mut jwks) = jwks_server(test, true) else { return };
    let base_url = jwks.log[0]["url"].as_str().unwrap().to_string();
    set_keys(&mut jwks, json!([{"kid": "r1", "file": "rsa.pub"}]));
    let endpoint = format!("{base_url}/.well-known/jwks.json");
    let s = Server::start_with_env(
        base(json!({"client": {"token": {"jwks_public_endpoint": endpoint, "audience": "gyre"}}})),
        &[("SSL_CERT_FILE", &file("ca.crt"))],
    );
    let c = |extra: Value| {
        let mut c = json!({"sub": "dave", "aud": "gyre", "exp": now() + 3600});
        merge(&mut c, extra);
        Some(c)
    };
    let reqs = [
        req("RS256", "rsa.key", c(json!({})).unwrap(), Some("r1")),
        req("ES256", "ec256.key", c(json!({})).unwrap(), Some("e2")),
        req("EdDSA", "ed25519.key", c(json!({})).unwrap(), Some("d3")),
        req("RS256", "rsa.key", c(json!({})).unwrap(), Some("x4")),
        req("RS256", "rsa_other.key", c(json!({})).unwrap(), Some("r1")),
        req("RS256", "rsa.key", c(json!({"exp": now() - 5})).unwrap(), Some("r1")),
        req("RS256", "rsa.key", c(json!({"aud": "no"})).unwrap(), Some("r1")),
        req("RS256", "rsa.key", c(json!({})).unwrap(), None),
        req("ES256", "ec256.key", c(json!({})).unwrap(), Some("unknown")),
        req("HS256", SECRET, c(json!({})).unwrap(), Some("r1")),
    ];
    let Some(t) = sign(Signer::Py, test, &reqs) else { return };
    assert_eq!(connect(&s, &t[0]), OK, "r1 fetched on first use");
    assert_eq!(connect(&s, &t[4]), INVALID, "another key under r1");
    assert_eq!(connect(&s, &t[5]), EXPIRED);
    assert_eq!(connect(&s, &t[6]), INVALID, "wrong audience");
    assert_eq!(connect(&s, &t[7]), INVALID, "no kid");
    assert_eq!(connect(&s, &t[9]), INVALID, "HMAC is not used with a JWKS");
    assert_eq!(fetches(&mut jwks)["fetches"], 1, "r1 cached after the first fetch");
    // Rotation: r1 leaves the set, e2 and d3 join; x4 is an encryption key.
    set_keys(
        &mut jwks,
        json!([{"kid": "e2", "file": "ec256.pub", "alg": "ES256"}, {"kid": "d3", "file": "ed25519.pub"},
               {"kid": "x4", "file": "rsa.pub", "use": "enc"}]),
    );
    assert_eq!(connect(&s, &t[1]), OK, "a new kid fetches the set again");
    assert_eq!(connect(&s, &t[2]), OK, "Ed25519 (EdDSA)");
    assert_eq!(connect(&s, &t[0]), OK, "r1 is still cached");
    assert_eq!(connect(&s, &t[3]), INVALID, "a key not for signatures");
    // Outage.
    jwks.send(json!({"op": "stop"}));
    let before = jwks.take("stopped", |e| e["ev"] == "stopped")["fetches"].as_i64().unwrap();
    assert!((2..=3).contains(&before), "fetches: {before}");
    for i in [0, 1, 2] {
        assert_eq!(connect(&s, &t[i]), OK, "cached key {i} during the outage");
    }
    let started = Instant::now();
    assert_eq!(connect(&s, &t[8]), INVALID, "an unknown kid during the outage");
    assert!(started.elapsed() < Duration::from_secs(6), "refused in {:?}", started.elapsed());
    let log = s.stderr();
    assert!(log.contains("JWKS fetch failed"), "{log}");
}

/// A templated endpoint over plain http: the `{{tenant}}` placeholder comes from a named
/// group of `issuer_regex`; an issuer outside its list is refused without a fetch.
#[test]
fn jwks_endpoint_template() {
    let test = "jwks_endpoint_template";
    let Some(mut jwks) = jwks_server(test, false) else { return };
    let base_url = jwks.log[0]["url"].as_str().unwrap().to_string();
    set_keys(&mut jwks, json!([{"kid": "k", "file": "ec384.pub"}]));
    let s = Server::start(base(json!({"client": {"token": {
        "jwks_public_endpoint": format!("{base_url}/{{{{tenant}}}}/jwks"),
        "issuer_regex": "^https://(?P<tenant>acme|globex)\\.example$"
    }}})));
    let c = |iss: &str| json!({"sub": "t", "iss": iss});
    let reqs = [
        req("ES384", "ec384.key", c("https://acme.example"), Some("k")),
        req("ES384", "ec384.key", c("https://globex.example"), Some("k")),
        req("ES384", "ec384.key", c("https://initech.example"), Some("k")),
    ];
    let Some(t) = sign(Signer::Node, test, &reqs) else { return };
    assert_eq!(connect(&s, &t[0]), OK);
    assert_eq!(connect(&s, &t[1]), OK);
    assert_eq!(connect(&s, &t[2]), INVALID);
    let count = fetches(&mut jwks);
    assert_eq!(count["paths"], json!(["/acme/jwks", "/globex/jwks"]), "{count}");
}

/// `client.insecure_skip_token_signature_verify`: any signature passes (claims are still
/// read), with a warning at start-up.
#[test]
fn skipped_signature_verification() {
    let s = Server::start(base(json!({"client": {
        "insecure_skip_token_signature_verify": true, "token": {"rsa_public_key": pem("rsa.pub")}
    }})));
    let Some(t) = sign(
        Signer::Py,
        "skipped_signature_verification",
        &[
            req("RS256", "rsa_other.key", json!({"sub": "u"}), None),
            req("ES384", "ec384.key", json!({"sub": "u", "exp": now() - 5}), None),
        ],
    ) else {
        return;
    };
    assert_eq!(connect(&s, &t[0]), OK);
    assert_eq!(connect(&s, &t[1]), EXPIRED);
    assert!(s.stderr().contains("INSECURE skip token signature verify"), "{}", s.stderr());
}

/// Invalid key options stop `gyre checkconfig` and the server with a message naming them.
#[test]
fn bad_key_options_stop_the_start() {
    let dir = std::env::temp_dir().join(format!("gyre-token-keys-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let cases = [
        (json!({"client": {"token": {"rsa_public_key": "not a PEM"}}}), "client.token.rsa_public_key"),
        (json!({"client": {"token": {"ecdsa_public_key": pem("rsa.pub")}}}), "client.token.ecdsa_public_key"),
        (json!({"client": {"token": {"ecdsa_public_key": pem("ec521.pub")}}}), "client.token.ecdsa_public_key"),
        (json!({"client": {"token": {"audience_regex": "(unclosed"}}}), "client.token.audience_regex"),
        (json!({"client": {"token": {"issuer": "a", "issuer_regex": "a"}}}), "client.token.issuer_regex"),
        (
            json!({"client": {"token": {"jwks_public_endpoint": "ftp://keys.example/jwks"}}}),
            "client.token.jwks_public_endpoint",
        ),
        (
            json!({"client": {"subscription_token": {"enabled": true, "rsa_public_key": pem("ec256.pub")}}}),
            "client.subscription_token.rsa_public_key",
        ),
        (
            json!({"client": {"token": {"jwks_public_endpoint": "https://auth.example/{{tenant}}/jwks", "issuer_regex": "^(?P<tenant>[a-z]+)$"}}}),
            "client.token.jwks_public_endpoint",
        ),
    ];
    for (i, (cfg, option)) in cases.iter().enumerate() {
        let path = dir.join(format!("c{i}.json"));
        std::fs::write(&path, cfg.to_string()).unwrap();
        let out = Command::new(server_binary()).args(["checkconfig", "-c"]).arg(&path).output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "checkconfig accepted {cfg}");
        assert!(err.contains(option), "checkconfig names {option}: {err}");
        let out = Command::new(server_binary()).arg("--config").arg(&path).output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success() && err.contains(option), "the server stops naming {option}: {err}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// The SDKs connect with each kind of key: centrifuge-js with RSA, ECDSA, the previous HMAC
/// secret and a JWKS (Ed25519) token, centrifuge-python with RSA and JWKS tokens.
#[test]
fn sdks_connect_with_each_key_type() {
    let test = "sdks_connect_with_each_key_type";
    let Some(mut jwks) = jwks_server(test, false) else { return };
    let base_url = jwks.log[0]["url"].as_str().unwrap().to_string();
    set_keys(&mut jwks, json!([{"kid": "d1", "file": "ed25519.pub"}, {"kid": "r1", "file": "rsa.pub"}]));
    let keys = Server::start(base(json!({"client": {"token": {
        "rsa_public_key": pem("rsa.pub"), "ecdsa_public_key": pem("ec256.pub"),
        "hmac_previous_secret_key": "previous-secret-0123"
    }}})));
    let by_jwks =
        Server::start(base(json!({"client": {"token": {"jwks_public_endpoint": format!("{base_url}/jwks")}}})));
    let c = |u: &str| json!({"sub": u, "exp": now() + 600});
    let Some(t) = sign(
        Signer::Py,
        test,
        &[
            req("RS256", "rsa.key", c("rsa-user"), None),
            req("ES256", "ec256.key", c("ec-user"), None),
            req("HS512", "previous-secret-0123", c("prev-user"), None),
            req("EdDSA", "ed25519.key", c("ed-user"), Some("d1")),
            req("RS512", "rsa.key", c("py-user"), Some("r1")),
        ],
    ) else {
        return;
    };
    if let Some(mut a) = Agent::start(Sdk::Js, test) {
        for (name, token, node) in
            [("rsa", &t[0], &keys), ("ec", &t[1], &keys), ("prev", &t[2], &keys), ("ed", &t[3], &by_jwks)]
        {
            a.connect(name, node, json!({"token": token}));
            a.wait(&format!("{name} connected"), ev(name, "connected"));
        }
    }
    if let Some(mut p) = Agent::start(Sdk::Py, test) {
        for (name, token, node) in [("rsa", &t[0], &keys), ("jwks", &t[4], &by_jwks)] {
            p.connect(name, node, json!({"token": token}));
            p.wait(&format!("{name} connected"), ev(name, "connected"));
        }
    }
}

/// A connection token's `info` is the client's info in presence, join pushes and the
/// publications the client sends; its `meta` never reaches clients.
#[test]
fn token_info_reaches_presence_join_and_publications() {
    let s = Server::start(base(json!({"client": {"token": {"rsa_public_key": pem("rsa.pub")}}})));
    let Some(t) = sign(
        Signer::Node,
        "token_info_reaches_presence_join_and_publications",
        &[
            req("RS256", "rsa.key", json!({"sub": "ann", "info": {"name": "Ann"}, "meta": {"secret": 1}}), None),
            req("RS256", "rsa.key", json!({"sub": "bob", "b64info": "eyJuYW1lIjoiQm9iIn0="}), None),
        ],
    ) else {
        return;
    };
    let mut a = C::open(&s);
    let r = a.call(json!({"connect": {"token": t[0]}})).unwrap();
    assert!(!r.to_string().contains("secret"), "meta is not sent to clients: {r}");
    a.call(json!({"subscribe": {"channel": "chat:1"}})).unwrap();
    let mut b = C::open(&s);
    assert_eq!(b.connect(&t[1]), OK);
    b.call(json!({"subscribe": {"channel": "chat:1"}})).unwrap();
    // Ann sees Bob's join with Bob's info.
    let deadline = Instant::now() + Duration::from_secs(5);
    let join = loop {
        let f = a.ws.frame_until(deadline).expect("a join push");
        if let Some(p) = json_lines(&f.payload).into_iter().find(|v| v["push"]["join"]["info"]["user"] == "bob") {
            break p;
        }
    };
    assert_eq!(join["push"]["join"]["info"]["conn_info"], json!({"name": "Bob"}), "{join}");
    let r = a.call(json!({"presence": {"channel": "chat:1"}})).unwrap();
    let infos: Vec<Value> =
        r["presence"]["presence"].as_object().unwrap().values().map(|e| e["conn_info"].clone()).collect();
    assert!(infos.contains(&json!({"name": "Ann"})) && infos.contains(&json!({"name": "Bob"})), "{r}");
    a.call(json!({"publish": {"channel": "chat:1", "data": {"x": 1}}})).unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    let publication = loop {
        let f = b.ws.frame_until(deadline).expect("the publication");
        if let Some(p) = json_lines(&f.payload).into_iter().find(|v| v["push"]["pub"].is_object()) {
            break p;
        }
    };
    assert_eq!(publication["push"]["pub"]["info"]["conn_info"], json!({"name": "Ann"}), "{publication}");
    assert_eq!(publication["push"]["pub"]["info"]["user"], "ann");
}
