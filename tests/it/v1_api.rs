//! The signed v1 server API (`POST /api/`, Centrifugo 1.x): the `cent` 2.1.0 client of that
//! era (installed by `.ci/run` into `target/pyenv-cent1`) driving every method against a real
//! server, and the wire format over raw HTTP.

use std::process::Command;

use hmac::{Hmac, Mac};
use serde_json::{json, Value};
use sha2::Sha256;

use crate::util::*;
use crate::ws_client::{JsonClient, CLOSE};

const SECRET: &str = "v1-secret";

fn sign(secret: &str, data: &[u8]) -> String {
    let mut m = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    m.update(data);
    m.finalize().into_bytes().iter().map(|b| format!("{b:02x}")).collect()
}

/// The test config with the 1.x name of the secret.
fn v1_config() -> Value {
    config_with(json!({"secret": SECRET, "channel": {"without_namespace": {"allow_subscribe_for_client": true}}}))
}

/// `POST /api/` with a JSON body signed with `secret`.
fn signed(s: &Server, body: &[u8], secret: &str) -> Response {
    let sig = sign(secret, body);
    s.post("/api/", body, &[("Content-Type", "application/json"), ("X-API-Sign", &sig)])
}

#[test]
fn cent1_client_every_method() {
    let python = repo_root().join("target/pyenv-cent1/bin/python");
    if !python.exists() {
        if std::env::var_os("CI").is_some() {
            panic!("{} is missing and CI is set: run `bash .ci/run` (it installs cent 2.1.0)", python.display());
        }
        eprintln!(
            "SKIPPED cent1_client_every_method: {} not found; create it with `bash .ci/run` (or \
             `python3 -m venv target/pyenv-cent1 && target/pyenv-cent1/bin/pip install cent==2.1.0`)",
            python.display()
        );
        return;
    }
    let s = Server::start(v1_config());
    // `secret` is also the HS256 key of connection tokens, as in Centrifugo 2.x.
    let mut c = JsonClient::open(&s);
    let token = jwt(SECRET, json!({"sub": "u1"}));
    let r = c.call(json!({"connect": {"token": token}})).expect("connect");
    assert!(r["connect"]["client"].is_string(), "{r}");
    let r = c.call(json!({"subscribe": {"channel": "news"}})).expect("subscribe");
    assert!(r.get("error").is_none(), "{r}");

    let out = Command::new(&python)
        .arg(repo_root().join("tests/python/test_cent1.py"))
        .args([s.url(""), SECRET.to_owned(), "u1".to_owned(), "news".to_owned()])
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .output()
        .expect("run the cent 2.1.0 script");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "test_cent1.py failed ({}):\n{stdout}\n{stderr}", out.status);
    assert!(stdout.contains("checks passed"), "{stdout}\n{stderr}");

    // The client got the publications, was unsubscribed, then disconnected (3503).
    let mut pushes = Vec::new();
    let code = loop {
        let f = c.ws.frame().expect("a frame before the close");
        if f.op == CLOSE {
            break f.close().0;
        }
        pushes.extend(crate::ws_client::json_lines(&f.payload));
    };
    assert_eq!(code, 3503, "pushes: {pushes:?}");
    let data: Vec<&Value> = pushes.iter().filter_map(|p| p["push"]["pub"].get("data")).collect();
    assert_eq!(data, [&json!({"n": 1}), &json!({"n": 2}), &json!({"n": 3})], "{pushes:?}");
    assert!(pushes.iter().any(|p| p["push"].get("unsubscribe").is_some()), "{pushes:?}");

    let log = s.stderr();
    assert!(log.contains(r#"option \"secret\" is deprecated"#), "{log}");
}

#[test]
fn v1_wire_format() {
    let s = Server::start(config_with(json!({"http_api": {"v1_secret": SECRET, "max_body_size": 4096}})));

    // One command object, or an array; replies in order, `uid` echoed.
    let r = signed(&s, br#"{"method":"publish","params":{"channel":"a","data":{"x":1}},"uid":"7"}"#, SECRET);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("content-type"), Some("application/json"));
    assert_eq!(r.json(), json!([{"uid": "7", "method": "publish", "error": null, "body": null}]));
    let body = br#"[{"method":"history","params":{"channel":"a"}},{"method":"channels","params":{}},
        {"method":"broadcast","params":{"channels":[],"data":1}},{"method":"presence","params":{"channel":"nohist:x"}}]"#;
    let r = signed(&s, body, SECRET);
    assert_eq!(r.status, 200, "{}", r.text());
    let replies = r.json();
    assert_eq!(replies[0]["body"], json!({"channel": "a", "data": [{"uid": "1", "channel": "a", "data": {"x": 1}}]}));
    assert_eq!(replies[1]["body"], json!({"data": []}));
    assert_eq!(replies[2]["error"], "invalid message");
    assert_eq!(replies[2]["advice"], "fix");
    assert_eq!(replies[3]["error"], "not available");
    assert_eq!(replies[3]["body"], json!({"channel": "nohist:x", "data": null}));

    // `node` and `stats` from `info`.
    let r = signed(&s, br#"[{"method":"node","params":{}},{"method":"stats","params":{}}]"#, SECRET).json();
    assert!(r[0]["body"]["data"]["uid"].is_string(), "{r}");
    assert_eq!(r[1]["body"]["data"]["nodes"][0]["uid"], r[0]["body"]["data"]["uid"], "{r}");

    // A form body: `data` and `sign` fields.
    let data = r#"[{"method":"publish","params":{"channel":"a","data":"f"}}]"#;
    let form = format!("data={}&sign={}", pct(data), sign(SECRET, data.as_bytes()));
    let r = s.post("/api/", form.as_bytes(), &[("Content-Type", "application/x-www-form-urlencoded")]);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()[0]["error"], Value::Null);

    // What Centrifugo 1.x answered to bad requests.
    let body = br#"[{"method":"channels","params":{}}]"#;
    assert_eq!(s.post("/api/", body, &[("Content-Type", "application/json")]).status, 400, "no sign");
    assert_eq!(signed(&s, body, "wrong").status, 401, "wrong secret");
    let r = s.post("/api/", body, &[("Content-Type", "application/json"), ("X-API-Sign", "abc")]);
    assert_eq!(r.status, 401, "malformed sign");
    assert_eq!(signed(&s, b"", SECRET).status, 400, "no data");
    assert_eq!(signed(&s, b"[{\"method\":", SECRET).status, 400, "bad JSON");
    assert_eq!(signed(&s, b"\"x\"", SECRET).status, 400, "not a command");
    // An unknown method or undecodable params refuse the whole request, and nothing runs.
    let r = signed(&s, br#"[{"method":"publish","params":{"channel":"b","data":1}},{"method":"nope"}]"#, SECRET);
    assert_eq!(r.status, 400, "unknown method");
    let r = signed(&s, br#"[{"method":"history","params":{"channel":5}}]"#, SECRET);
    assert_eq!(r.status, 400, "bad params");
    let h = signed(&s, br#"[{"method":"history","params":{"channel":"b"}}]"#, SECRET).json();
    assert_eq!(h[0]["body"]["data"], json!([]), "{h}");
    // Oversized: `http_api.max_body_size`.
    let big = format!(r#"[{{"method":"publish","params":{{"channel":"a","data":"{}"}}}}]"#, "x".repeat(5000));
    assert_eq!(signed(&s, big.as_bytes(), SECRET).status, 413, "oversized");
    // GET is not the API.
    assert_eq!(s.request("GET", "/api/", &[]).status, 405);

    // The server stays up and today's API keeps its key.
    assert_eq!(s.api("info", json!({}))["result"]["nodes"].as_array().map(Vec::len), Some(1));
    assert_eq!(s.post("/api/info", b"{}", &[]).status, 401, "the v6 API still needs its key");
}

#[test]
fn v1_insecure_and_off() {
    let s = Server::start(config_with(json!({"insecure_api": true})));
    let r = s.post("/api/", br#"[{"method":"channels","params":{}}]"#, &[("Content-Type", "application/json")]);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json(), json!([{"method": "channels", "error": null, "body": {"data": []}}]));
    assert!(s.stderr().contains(r#"option \"insecure_api\" is deprecated: use \"http_api.v1_insecure\""#));
    drop(s);

    // Without a v1 secret, `/api/` is what it was: today's API, behind its key.
    let s = Server::start(config());
    let body = br#"[{"method":"channels","params":{}}]"#;
    let sig = sign(SECRET, body);
    let r = s.post("/api/", body, &[("Content-Type", "application/json"), ("X-API-Sign", &sig)]);
    assert_eq!(r.status, 401);
}

fn pct(s: &str) -> String {
    s.bytes().map(|b| if b.is_ascii_alphanumeric() { (b as char).to_string() } else { format!("%{b:02X}") }).collect()
}
