//! The server's log: JSON lines on stderr (stdout is no terminal here), and a line for each
//! refusal at Centrifugo's level, naming the reason, the client, its user and its remote
//! address: a bad connection token, denied subscribes (permission, unknown namespace, channel
//! limit, private channel), a connect refused by the connect proxy, a WebSocket upgrade from
//! a refused Origin, a server API request without a valid key.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::util::*;
use crate::ws_client::*;

use crate::ws_client::JsonClient as C;

/// A connect proxy backend on a port of its own: a connect named `err` gets error 4000
/// "not today", any other the disconnect 4501 "go away".
fn connect_backend() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for conn in l.incoming() {
            let Ok(conn) = conn else { continue };
            let mut r = BufReader::new(conn.try_clone().unwrap());
            let mut len = 0;
            loop {
                let mut line = String::new();
                if r.read_line(&mut line).unwrap_or(0) == 0 {
                    break;
                }
                let lower = line.to_ascii_lowercase();
                if let Some(v) = lower.strip_prefix("content-length:") {
                    len = v.trim().parse().unwrap_or(0);
                }
                if line == "\r\n" {
                    break;
                }
            }
            let mut body = vec![0; len];
            let _ = r.read_exact(&mut body);
            let req: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
            let answer = if req["name"] == "err" {
                json!({"error": {"code": 4000, "message": "not today"}})
            } else {
                json!({"disconnect": {"code": 4501, "reason": "go away"}})
            };
            let text = answer.to_string();
            let mut w = conn;
            let _ = write!(
                w,
                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{text}",
                text.len()
            );
        }
    });
    port
}

/// Every line of the log, each a JSON object (the test fails on one that is not).
fn log_lines(s: &Server) -> Vec<Value> {
    s.stderr()
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap_or_else(|e| panic!("not a JSON line ({e}): {l}")))
        .collect()
}

/// Waits (≤ 5 s) for a line with `message` whose fields include `fields`.
fn wait_line(s: &Server, message: &str, fields: Value) -> Value {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let lines = log_lines(s);
        let hit = lines
            .into_iter()
            .find(|l| l["message"] == message && fields.as_object().unwrap().iter().all(|(k, v)| &l[k] == v));
        if let Some(l) = hit {
            for key in ["level", "time", "message"] {
                assert!(l[key].is_string(), "{key} in {l}");
            }
            return l;
        }
        assert!(Instant::now() < deadline, "no line {message:?} with {fields} in:\n{}", s.stderr());
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn token(secret: &str, claims: Value) -> String {
    jwt(secret, claims)
}

const SECRET: &str = "refusals-secret";

#[test]
fn refusals_are_logged_with_reason_client_user_and_remote() {
    let backend = connect_backend();
    let s = Server::start(config_with(json!({
        "log": {"level": "info"},
        "client": {
            "token": {"hmac_secret_key": SECRET},
            "channel_limit": 2,
            "allowed_origins": ["http://ok.example"],
            "proxy": {"connect": {"enabled": true, "endpoint": format!("http://127.0.0.1:{backend}/connect"), "timeout": "3s"}}
        },
        "channel": {"namespaces": [{"name": "open", "allow_subscribe_for_client": true}, {"name": "closed"}]}
    })));
    let info = |extra: Value| {
        let mut f = json!({"level": "info", "remote": "127.0.0.1"});
        merge(&mut f, extra);
        f
    };

    // A token signed with another secret: closed with 3500, logged at info.
    let mut c = C::open(&s);
    assert_eq!(c.call(json!({"connect": {"token": token("other", json!({"sub": "mallory"}))}})), Err(3500));
    let l = wait_line(&s, "invalid connection token", info(json!({"user": ""})));
    assert!(l["client"].as_str().is_some_and(|c| c.len() == 36) && l["error"].is_string(), "{l}");
    wait_line(&s, "disconnect after handling command", info(json!({"command": "connect", "code": 3500})));

    // Subscribes refused for a permission, an unknown namespace, the channel limit, a private
    // channel without a token.
    let mut c = C::open(&s);
    let r = c.call(json!({"connect": {"token": token(SECRET, json!({"sub": "alice"}))}})).unwrap();
    let client = r["connect"]["client"].as_str().unwrap().to_string();
    let who = |channel: &str| info(json!({"client": client, "user": "alice", "channel": channel}));
    let code = |r: Result<Value, u16>| r.unwrap()["error"]["code"].clone();
    assert_eq!(code(c.call(json!({"subscribe": {"channel": "closed:1"}}))), 103);
    wait_line(&s, "attempt to subscribe without sufficient permission", who("closed:1"));
    let cmd_error = info(json!({"command": "subscribe", "client": client, "user": "alice", "code": 103}));
    let l = wait_line(&s, "client command error", cmd_error);
    assert_eq!(l["error"], "permission denied", "{l}");
    assert_eq!(code(c.call(json!({"subscribe": {"channel": "nope:1"}}))), 102);
    wait_line(&s, "subscribe unknown channel", who("nope:1"));
    assert_eq!(code(c.call(json!({"subscribe": {"channel": "$open:1"}}))), 103);
    let private = "attempt to subscribe on private channel without token";
    wait_line(&s, private, json!({"level": "warn", "channel": "$open:1", "user": "alice", "remote": "127.0.0.1"}));
    for ch in ["open:1", "open:2"] {
        assert!(c.call(json!({"subscribe": {"channel": ch}})).unwrap()["subscribe"].is_object());
    }
    assert_eq!(code(c.call(json!({"subscribe": {"channel": "open:3"}}))), 106);
    wait_line(&s, "maximum limit of channels per client reached (limit 2)", who("open:3"));
    assert_eq!(code(c.call(json!({"publish": {"channel": "open:1", "data": {}}}))), 103);
    wait_line(&s, "attempt to publish without sufficient permission", who("open:1"));

    // Connects the proxy refuses: with a disconnect, with an error.
    let mut c = C::open(&s);
    assert_eq!(c.call(json!({"connect": {}})), Err(4501));
    let l = wait_line(&s, "disconnect after handling command", info(json!({"command": "connect", "code": 4501})));
    assert_eq!((l["reason"].as_str(), l["user"].as_str()), (Some("go away"), Some("")), "{l}");
    let mut c = C::open(&s);
    let r = c.call(json!({"connect": {"name": "err"}})).unwrap();
    assert_eq!(r["error"]["code"], 4000, "{r}");
    let l = wait_line(&s, "client command error", info(json!({"command": "connect", "code": 4000})));
    assert_eq!(l["error"], "not today", "{l}");

    // A refused Origin; an API request without a valid key.
    let up = Ws::upgrade(
        std::net::TcpStream::connect(s.addr()).unwrap(),
        WS_PATH,
        SAMPLE_KEY,
        &[("Origin", "http://evil.example")],
    );
    assert_eq!(up.err(), Some(403));
    wait_line(&s, "request Origin is not authorized", info(json!({"origin": "http://evil.example"})));
    assert_eq!(s.post("/api/publish", b"{}", &[("X-API-Key", "wrong")]).status, 401);
    wait_line(&s, "server API request refused: no valid API key", info(json!({"path": "/api/publish"})));

    // An expired token is a debug line: not at info.
    let expired = token(SECRET, json!({"sub": "bob", "exp": 1_000_000_000}));
    let r = C::open(&s).call(json!({"connect": {"token": expired}})).unwrap();
    assert_eq!(r["error"]["code"], 109, "{r}");
    wait_line(&s, "client command error", info(json!({"command": "connect", "code": 109})));
    assert!(!s.stderr().contains("expired connection token"), "{}", s.stderr());
    assert!(!s.stderr().contains("\"level\":\"debug\""), "{}", s.stderr());
}

#[test]
fn debug_lines_appear_at_debug_level() {
    let s = Server::start(config_with(json!({
        "log": {"level": "debug"},
        "client": {"token": {"hmac_secret_key": SECRET}, "disallow_anonymous_connection_tokens": true}
    })));
    let r = C::open(&s).call(json!({"connect": {"token": token(SECRET, json!({"sub": "bob", "exp": 1_000_000_000}))}}));
    assert_eq!(r.unwrap()["error"]["code"], 109);
    let l = wait_line(&s, "expired connection token", json!({"level": "debug", "user": ""}));
    assert!(l["client"].is_string(), "{l}");
    assert_eq!(C::open(&s).call(json!({"connect": {"token": token(SECRET, json!({"sub": ""}))}})), Err(3507));
    wait_line(&s, "anonymous connection tokens disallowed", json!({"level": "debug", "remote": "127.0.0.1"}));
}

/// `log.file`: the lines go to the file, nothing to stderr; a file that cannot be opened
/// stops the start-up naming it.
#[test]
fn log_file_gets_the_lines() {
    let dir = std::env::temp_dir().join(format!("gyre-logs-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("gyre.log");
    let s = Server::start(config_with(json!({"log": {"file": file.to_str().unwrap()}})));
    let _ = s.post("/api/publish", b"{}", &[]);
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let text = std::fs::read_to_string(&file).unwrap_or_default();
        if text.contains("no valid API key") {
            let lines: Vec<Value> = text.lines().map(|l| serde_json::from_str(l).expect("a JSON line")).collect();
            assert!(lines.iter().any(|l| l["message"] == "using config file" && l["path"].is_string()), "{text}");
            break;
        }
        assert!(Instant::now() < deadline, "log file:\n{text}");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(s.stderr(), "");
    drop(s);
    let out = std::process::Command::new(server_binary())
        .args(["--port", "0", "--log.file", dir.join("missing/gyre.log").to_str().unwrap()])
        .current_dir(&dir)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("log.file") && err.contains("missing/gyre.log"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}
