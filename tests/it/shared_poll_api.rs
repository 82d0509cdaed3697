//! The server API's `shared_poll_publish` (Centrifugo 6.8+): its checks in Centrifugo's order
//! over `POST /api/shared_poll_publish`, legacy `POST /api` lines (by name and by the legacy
//! number 39) and `batch`, and its delivery to a raw WebSocket client that tracks a key: a
//! newer version is pushed as `pub` with `key`/`version` (and `epoch`), an older one or a key
//! nobody tracks is not, and a publish with another epoch unsubscribes the trackers with 2500
//! (insufficient state), after which they subscribe and track again in the new epoch.
//!
//! Over gRPC (a client generated from `proto/api.proto`, when grpcio-tools is installed):
//! `SharedPollPublish` with JSON bytes reaches the tracker as the same JSON.
//!
//! The refresh endpoint points at a port nobody listens on: keys tracked with a version are
//! polled only every `refresh_interval` (60 s), so no backend is needed.

use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::util::*;
use crate::ws_client::*;

const SECRET: &str = "sp-secret";

fn sp_config() -> Value {
    let shared = |name: &str, publish: bool| {
        json!({
            "name": name, "subscription_type": "shared_poll",
            "allow_subscribe_for_client": true, "allow_subscribe_for_anonymous": true,
            "shared_poll": {"mode": "versioned", "publish_enabled": publish, "refresh_interval": "60s",
                            "channel_shutdown_delay": "60s"}
        })
    };
    json!({
        "http_api": {"key": KEY},
        "shared_poll": {"hmac_secret_key": SECRET},
        "client": {"allow_anonymous_connect_without_token": true},
        "channel": {
            "proxy": {"shared_poll_refresh": {
                "endpoint": format!("http://127.0.0.1:{}/refresh", free_port()), "timeout": "1s"
            }},
            "namespaces": [shared("prices", true), shared("nopub", false), {"name": "plain"}]
        },
        "workers": 2
    })
}

/// A successful reply: `{"result":{}}`.
fn ok() -> Value {
    json!({"result": {}})
}

fn publish(s: &Server, params: Value) -> Value {
    s.api("shared_poll_publish", params)
}

#[test]
fn shared_poll_publish_errors_in_centrifugos_order() {
    let s = Server::start(sp_config());
    let p = |channel: &str, key: &str, version: u64| json!({"channel": channel, "key": key, "version": version});
    let with = |mut v: Value, k: &str, x: Value| {
        v[k] = x;
        v
    };
    let cases = [
        (p("", "a", 1), 107, "no channel"),
        (p("prices:eu", "", 1), 107, "no key"),
        (p("prices:eu", "a", 0), 107, "version 0"),
        (json!({"channel": "prices:eu", "key": "a"}), 107, "no version"),
        (p("nope:x", "a", 0), 107, "version 0 before the namespace"),
        (p("nope:x", "a", 1), 102, "unknown namespace"),
        (with(p("nope:x", "a", 1), "b64data", json!("!!")), 102, "unknown namespace before base64"),
        (p("plain:x", "a", 1), 107, "not a shared poll namespace"),
        (p("x", "a", 1), 107, "no namespace"),
        (p("nopub:x", "a", 1), 108, "publish_enabled off"),
        (with(p("nopub:x", "a", 1), "b64data", json!("!!")), 108, "publish_enabled before base64"),
        (with(p("prices:eu", "a", 1), "b64data", json!("!!")), 107, "bad base64"),
    ];
    for (params, code, what) in &cases {
        assert_eq!(publish(&s, params.clone()), api_error(*code), "{what}: {params}");
    }
    assert!(
        s.stderr().contains("shared_poll publish_enabled is not enabled for channel in Centrifugo configuration"),
        "the 108 is logged as a warning: {}",
        s.stderr()
    );
    // Valid publishes answer {} whether or not anyone tracks the key.
    assert_eq!(publish(&s, json!({"channel": "prices:eu", "key": "a", "version": 3, "data": {"v": 3}})), ok());
    assert_eq!(publish(&s, json!({"channel": "prices:eu", "key": "a", "version": 3, "b64data": "/wA="})), ok());
    assert_eq!(publish(&s, json!({"channel": "prices:eu", "key": "b", "version": 1, "epoch": "e"})), ok());
    // Params of the wrong type: the request is malformed (400), as for any method.
    let r = s.post(
        "/api/shared_poll_publish",
        br#"{"channel":"prices:eu","key":"a","version":"1"}"#,
        &[("X-API-Key", KEY)],
    );
    assert_eq!(r.status, 400, "{}", r.text());

    // The legacy stream, by name and by number; replies are matched by id.
    let mut body = String::new();
    for (i, (params, _, _)) in cases.iter().enumerate() {
        body.push_str(&json!({"id": i + 1, "method": "shared_poll_publish", "params": params}).to_string());
        body.push('\n');
    }
    let ok = json!({"channel": "prices:eu", "key": "a", "version": 4, "data": {"v": 4}});
    body.push_str(&json!({"id": 100, "method": "shared_poll_publish", "params": ok}).to_string());
    body.push('\n');
    body.push_str(&json!({"id": 101, "method": 39, "params": ok}).to_string());
    body.push('\n');
    body.push_str(&json!({"id": 102, "method": 39, "params": p("plain:x", "a", 1)}).to_string());
    let r = s.legacy(body.as_bytes());
    assert_eq!(r.status, 200, "{}", r.text());
    let mut lines = r.lines();
    lines.sort_by_key(|l| l["id"].as_u64());
    let mut want: Vec<Value> =
        cases.iter().enumerate().map(|(i, (_, code, _))| json!({"id": i + 1, "error": error_obj(*code)})).collect();
    want.push(json!({"id": 100, "result": {}}));
    want.push(json!({"id": 101, "result": {}}));
    want.push(json!({"id": 102, "error": error_obj(107)}));
    assert_eq!(lines, want);

    // Inside a batch.
    let batch = json!({"commands": [
        {"shared_poll_publish": ok},
        {"shared_poll_publish": p("nopub:x", "a", 1)},
        {"shared_poll_publish": p("nope:x", "a", 1)},
        {"shared_poll_publish": p("prices:eu", "a", 0)},
    ]});
    assert_eq!(
        s.api("batch", batch),
        json!({"replies": [
            {"shared_poll_publish": {}},
            {"error": error_obj(108)},
            {"error": error_obj(102)},
            {"error": error_obj(107)},
        ]})
    );
}

/// The next message from the server that is not a ping, within 5 s.
fn next(ws: &mut Ws) -> Value {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let f = ws.frame_until(deadline).unwrap_or_else(|e| panic!("no message from the server: {e}"));
        assert_eq!(f.op, TEXT, "{f:?}");
        if let Some(v) = json_lines(&f.payload).into_iter().find(|v| v != &json!({})) {
            return v;
        }
    }
}

/// Subscribes (type 4) with command `id` and tracks `key` at `version`; returns the
/// subscribe result.
fn track(ws: &mut Ws, id: u64, key: &str, version: u64) -> Value {
    ws.send_json(&json!({"id": id, "subscribe": {"channel": "prices:eu", "type": 4}}));
    let r = next(ws);
    assert_eq!(r["id"], id, "{r}");
    assert!(r.get("error").is_none(), "{r}");
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64;
    let sig = gyre::poll::signature::sign(SECRET, "prices:eu", &[key], "", now, now + 3600);
    let items = json!([{"key": key, "version": version}]);
    ws.send_json(&json!({"id": id + 1, "sub_refresh": {
        "channel": "prices:eu", "type": 1, "track": [{"signature": sig, "items": items}]
    }}));
    let t = next(ws);
    assert_eq!(t["id"], id + 1, "{t}");
    assert!(t.get("error").is_none(), "{t}");
    r["subscribe"].clone()
}

fn pushed(data: Value, key: &str, epoch: &str, version: u64) -> Value {
    let mut p = json!({"data": data, "key": key, "version": version});
    if !epoch.is_empty() {
        p["epoch"] = json!(epoch);
    }
    json!({"push": {"channel": "prices:eu", "pub": p}})
}

#[test]
fn shared_poll_publish_reaches_the_trackers_of_the_key() {
    let s = Server::start(sp_config());
    let mut ws = Ws::open(s.addr());
    ws.send_json(&json!({"id": 1, "connect": {}}));
    let c = next(&mut ws);
    assert!(c["connect"]["client"].is_string(), "{c}");
    let sub = track(&mut ws, 2, "a", 1);
    assert_eq!(sub.get("epoch"), None, "a versioned channel has no epoch before its first version: {sub}");

    let pp = |key: &str, version: u64, epoch: &str, data: Value| json!({"channel": "prices:eu", "key": key, "version": version, "epoch": epoch, "data": data});
    assert_eq!(publish(&s, pp("a", 5, "", json!({"v": 5}))), ok());
    assert_eq!(next(&mut ws), pushed(json!({"v": 5}), "a", "", 5));
    // An older version and a key nobody tracks answer {} and push nothing: the next message
    // is the newer version published after them.
    assert_eq!(publish(&s, pp("a", 4, "", json!({"v": 4}))), ok());
    assert_eq!(publish(&s, pp("zz", 9, "", json!({"v": 9}))), ok());
    assert_eq!(publish(&s, pp("a", 6, "", json!({"v": 6}))), ok());
    assert_eq!(next(&mut ws), pushed(json!({"v": 6}), "a", "", 6));

    // Another epoch: the trackers are unsubscribed with "insufficient state", as Centrifugo
    // does, to subscribe and track again in the new epoch.
    assert_eq!(publish(&s, pp("a", 7, "e1", json!({"v": 7}))), ok());
    assert_eq!(
        next(&mut ws),
        json!({"push": {"channel": "prices:eu", "unsubscribe": {"code": 2500, "reason": "insufficient state"}}})
    );
    let sub = track(&mut ws, 4, "a", 7);
    assert_eq!(sub["epoch"], "e1", "{sub}");
    assert_eq!(publish(&s, pp("a", 7, "e1", json!({"v": 7}))), ok());
    assert_eq!(publish(&s, pp("a", 8, "e1", json!({"v": 8}))), ok());
    assert_eq!(next(&mut ws), pushed(json!({"v": 8}), "a", "e1", 8));
}

/// Generates the client from `proto/api.proto` and sends one `SharedPollPublish`; prints the
/// response as `<error code> <has result>`.
const GRPC_PUBLISH: &str = r#"
import importlib, sys, tempfile
from grpc_tools import protoc
import grpc
proto_dir, addr, key = sys.argv[1:4]
out = tempfile.mkdtemp(prefix="gyre-grpc-sp-")
assert protoc.main(["protoc", f"-I{proto_dir}", f"--python_out={out}", f"--grpc_python_out={out}",
                    f"{proto_dir}/api.proto"]) == 0
sys.path.insert(0, out)
pb = importlib.import_module("api_pb2")
stub = importlib.import_module("api_pb2_grpc").CentrifugoApiStub(grpc.insecure_channel(addr))
req = pb.SharedPollPublishRequest(channel="prices:eu", key="a", version=5, epoch="", data=b'{"v":5}')
r = stub.SharedPollPublish(req, metadata=[("authorization", "apikey " + key)], timeout=10)
print(r.error.code, r.HasField("result"))
"#;

#[test]
fn shared_poll_publish_over_grpc() {
    let Some(python) = crate::grpc::python_with_grpc("shared_poll_publish_over_grpc") else { return };
    let grpc_port = free_port();
    let mut cfg = sp_config();
    merge(&mut cfg, json!({"grpc_api": {"enabled": true, "port": grpc_port, "key": KEY}}));
    let s = Server::start(cfg);
    let mut ws = Ws::open(s.addr());
    ws.send_json(&json!({"id": 1, "connect": {}}));
    next(&mut ws);
    track(&mut ws, 2, "a", 1);
    let out = Command::new(&python)
        .args(["-c", GRPC_PUBLISH])
        .arg(repo_root().join("proto"))
        .arg(format!("127.0.0.1:{grpc_port}"))
        .arg(KEY)
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .env_remove("http_proxy")
        .env_remove("https_proxy")
        .env_remove("HTTP_PROXY")
        .env_remove("HTTPS_PROXY")
        .env_remove("grpc_proxy")
        .output()
        .expect("run python");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(stdout.trim(), "0 True", "no error, a result");
    assert_eq!(next(&mut ws), pushed(json!({"v": 5}), "a", "", 5));
}
