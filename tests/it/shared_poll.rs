//! Shared poll subscriptions (`type` 4 in subscribe). Gyre has no `subscription_type:
//! shared_poll` namespaces yet: the option is refused at start-up by name, and a shared poll
//! subscribe gets Centrifugo's answer for a namespace of another subscription type (103; 102
//! for an unknown namespace, 105 when already subscribed), as raw JSON frames and as
//! `centrifuge` (JS, 5.8.0) in Node (`tests/js/shared_poll.js`) over JSON and protobuf sees it:
//! the subscription ends unsubscribed with the code, nothing is tracked at the server, and the
//! connection's other subscriptions go on.

use std::process::Command;

use serde_json::{json, Value};

use crate::util::*;
use crate::ws_client::*;

fn poll_config() -> Value {
    json!({
        "http_api": {"key": KEY},
        "client": {"allowed_origins": ["*"], "allow_anonymous_connect_without_token": true},
        "channel": {"namespaces": [
            {"name": "plain", "allow_subscribe_for_client": true, "allow_subscribe_for_anonymous": true}
        ]},
        "workers": 2
    })
}

fn node_ready(test: &str) -> bool {
    if !Command::new("node").arg("--version").output().is_ok_and(|o| o.status.success()) {
        return unavailable(test, "`node` is not on PATH", "apt-get install nodejs");
    }
    if !repo_root().join("tests/js/node_modules/centrifuge/package.json").exists() {
        return unavailable(test, "tests/js/node_modules lacks centrifuge", "npm ci --prefix tests/js");
    }
    true
}

/// Runs `tests/js/shared_poll.js` against `s` and returns what it printed.
fn run_script(s: &Server, protobuf: bool) -> Value {
    let url = if protobuf {
        format!("ws://{}/connection/websocket?format=protobuf", s.addr())
    } else {
        format!("ws://{}/connection/websocket", s.addr())
    };
    let arg = json!({"url": url, "api": format!("http://{}", s.addr()), "key": KEY, "protobuf": protobuf});
    let out = Command::new("node")
        .arg(repo_root().join("tests/js/shared_poll.js"))
        .arg(arg.to_string())
        .current_dir(repo_root().join("tests/js"))
        .output()
        .expect("running node");
    let text = String::from_utf8_lossy(&out.stdout);
    let v: Value = serde_json::from_str(text.trim())
        .unwrap_or_else(|e| panic!("{e}: {text} {}", String::from_utf8_lossy(&out.stderr)));
    assert!(out.status.success() && v.get("fatal").is_none(), "{v}");
    v
}

fn sdk_sees_the_refusal(protobuf: bool) {
    let s = Server::start(poll_config());
    let v = run_script(&s, protobuf);
    let refused = |code: u32, reason: &str| json!({"unsubscribed": [{"code": code, "reason": reason}], "errors": [], "state": "unsubscribed", "updates": 0});
    assert_eq!(v["shared"], refused(103, "permission denied"), "{v}");
    assert_eq!(v["unknown"], refused(102, "unknown channel"), "{v}");
    // The keys tracked before subscribing never reached the server (and the SDK drops them
    // with the subscription); no signature was asked for.
    assert_eq!((v["tracked"].clone(), v["signatures"].clone()), (json!([]), json!(0)), "{v}");
    if !protobuf {
        assert_eq!(v["subRefreshes"], 0, "{v}");
    }
    assert_eq!((v["pubs"].clone(), v["client"].clone()), (json!([{"after": 1}]), json!("connected")), "{v}");
}

#[test]
fn centrifuge_js_shared_poll_refused_json() {
    if node_ready("centrifuge_js_shared_poll_refused_json") {
        sdk_sees_the_refusal(false);
    }
}

#[test]
fn centrifuge_js_shared_poll_refused_protobuf() {
    if node_ready("centrifuge_js_shared_poll_refused_protobuf") {
        sdk_sees_the_refusal(true);
    }
}

#[test]
fn raw_shared_poll_subscribe_answers() {
    let s = Server::start(poll_config());
    let mut c = JsonClient::open(&s);
    c.call(json!({"connect": {}})).unwrap();
    let code = |c: &mut JsonClient, sub: Value| {
        let r = c.call(json!({ "subscribe": sub })).unwrap();
        r["error"]["code"].clone()
    };
    assert_eq!(code(&mut c, json!({"channel": "plain:x", "type": 4})), 103);
    assert_eq!(code(&mut c, json!({"channel": "nope:x", "type": 4})), 102);
    // Already subscribed to the channel (as a stream): 105, as Centrifugo checks it first.
    let r = c.call(json!({"subscribe": {"channel": "plain:y"}})).unwrap();
    assert!(r.get("error").is_none(), "{r}");
    assert_eq!(code(&mut c, json!({"channel": "plain:y", "type": 4})), 105);
    // The refusals leave the connection and its subscription as they were.
    s.api("publish", json!({"channel": "plain:y", "data": {"n": 1}}));
    let f = c.ws.frame().unwrap();
    assert_eq!(json_lines(&f.payload)[0]["push"]["pub"]["data"], json!({"n": 1}));
    // An empty channel is a bad request: the connection closes.
    c.ws.send_json(&json!({"id": 99, "subscribe": {"channel": "", "type": 4}}));
    assert_eq!(c.ws.expect_close(std::time::Duration::from_secs(5)).0, 3501);
}

#[test]
fn shared_poll_namespace_refused_at_start_by_name() {
    let dir = std::env::temp_dir().join(format!("gyre-shared-poll-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("config.json");
    let cfg = json!({"channel": {"namespaces": [{"name": "poll", "subscription_type": "shared_poll",
        "shared_poll": {"proxy_name": "default", "refresh_interval": "5s"}}]}});
    std::fs::write(&path, cfg.to_string()).unwrap();
    let o = Command::new(server_binary()).args(["checkconfig", "-c", path.to_str().unwrap()]).output().unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
    assert!(!o.status.success(), "{text}");
    assert!(text.contains("subscription_type") && text.contains("shared_poll"), "{text}");
    let _ = std::fs::remove_dir_all(&dir);
}
