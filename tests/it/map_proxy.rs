//! Map publish and map remove proxies (`map.publish_proxy_enabled`, `map.remove_proxy_enabled`):
//! a client's map publish or remove goes to the application backend, which decides instead of
//! the namespace's permissions. The HTTP backend runs in the test and answers from the key the
//! client names (below); raw JSON clients check the wire (the change subscribers get, error
//! codes, close codes), centrifuge-js 5.8 (`tests/js/map_proxy.js`) what applications see. The
//! gRPC proxy runs against `tests/python/proxy_backend.py`. And the config checks.
//!
//! The backend's answers, by the client's key: `rewrite` → key `rewritten`, data
//! `{"by": "proxy", "orig": <data>}`, tags `{"via": "proxy"}`; `rm-rewrite` → key `rewritten`
//! (remove); `empty` → `{}`; no key → key `assigned` (but data `{"nokey": true}` →
//! `{"result": {}}`); `deny` → error 1000; `kick` → disconnect 4501; `garbage` → a body that is
//! not JSON; `fail` → HTTP 500; `missing` → HTTP 404 (a status transform makes it error 404);
//! on path `/bin` (the binary-encoded proxy) the data back as `{"b64": <what came>}`.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use serde_json::{json, Value};

use crate::util::*;
use crate::ws_client::*;

const SECRET: &str = "map-proxy-secret";

/// One call the backend got.
#[derive(Clone, Debug)]
struct Call {
    path: String,
    headers: Vec<(String, String)>,
    body: Value,
}

/// The application backend (see the module doc); records every call.
struct Backend {
    port: u16,
    calls: Arc<Mutex<Vec<Call>>>,
}

impl Backend {
    fn start() -> Backend {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let calls = Arc::new(Mutex::new(Vec::new()));
        let c = calls.clone();
        std::thread::spawn(move || {
            for s in l.incoming().flatten() {
                let c = c.clone();
                std::thread::spawn(move || serve(s, c));
            }
        });
        Backend { port, calls }
    }

    fn endpoint(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}/{path}", self.port)
    }

    /// The last call whose body names `key` (the client's key).
    fn call_for(&self, key: &str) -> Call {
        let calls = self.calls.lock().unwrap();
        let found = calls.iter().rev().find(|c| c.body.get("key").and_then(Value::as_str).unwrap_or("") == key);
        found.cloned().unwrap_or_else(|| panic!("no call for key {key:?}: {calls:?}"))
    }
}

/// The answer (HTTP status, body) to a call on `path` with `body`.
fn answer(path: &str, body: &Value) -> (u16, String) {
    let key = body["key"].as_str().unwrap_or("");
    let data = body.get("data").cloned().unwrap_or(Value::Null);
    let a = match (path, key) {
        _ if data["nokey"] == true => json!({"result": {}}),
        (_, "deny") => json!({"error": {"code": 1000, "message": "custom", "temporary": true}}),
        (_, "kick") => json!({"disconnect": {"code": 4501, "reason": "kicked"}}),
        (_, "garbage") => return (200, "this is not json".into()),
        (_, "fail") => return (500, "{}".into()),
        (_, "missing") => return (404, "{}".into()),
        (_, "empty") => json!({}),
        (_, "nokey") => json!({"result": {}}),
        (_, "claim") => json!({"result": {"key_mode": "if_new"}}),
        (_, "badmode") => json!({"result": {"key_mode": "sometimes"}}),
        (_, "") => json!({"result": {"key": "assigned"}}),
        ("/map_publish", "rewrite") => json!({"result": {"key": "rewritten", "data": {"by": "proxy", "orig": data},
            "tags": {"via": "proxy"}, "idempotency_key": "once"}}),
        ("/map_remove", "rm-rewrite") => json!({"result": {"key": "rewritten", "tags": {"via": "proxy-rm"}}}),
        // The binary-encoded proxy: the data back as `{"b64": <what came>}`, base64-encoded.
        ("/bin", _) => {
            let got = String::from_utf8(B64.decode(body["b64data"].as_str().unwrap_or("")).unwrap()).unwrap();
            json!({"result": {"b64data": B64.encode(json!({"b64": got}).to_string())}})
        }
        _ => json!({"result": {}}),
    };
    (200, a.to_string())
}

fn serve(s: TcpStream, calls: Arc<Mutex<Vec<Call>>>) {
    let mut w = s.try_clone().unwrap();
    let mut r = BufReader::new(s);
    loop {
        let mut line = String::new();
        if r.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        let path = line.split_whitespace().nth(1).unwrap_or_default().to_string();
        let (mut len, mut headers) = (0, Vec::new());
        loop {
            let mut h = String::new();
            if r.read_line(&mut h).unwrap_or(0) == 0 {
                return;
            }
            if h == "\r\n" {
                break;
            }
            if let Some((k, v)) = h.trim_end().split_once(':') {
                let (k, v) = (k.trim().to_ascii_lowercase(), v.trim().to_string());
                if k == "content-length" {
                    len = v.parse().unwrap_or(0);
                }
                headers.push((k, v));
            }
        }
        let mut body = vec![0; len];
        if r.read_exact(&mut body).is_err() {
            return;
        }
        let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
        let (status, text) = answer(&path, &body);
        calls.lock().unwrap().push(Call { path, headers, body });
        let head =
            format!("HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n", text.len());
        if w.write_all(head.as_bytes()).and_then(|_| w.write_all(text.as_bytes())).is_err() {
            return;
        }
    }
}

/// A map namespace `name` that lets clients subscribe (anonymous ones too) but not publish or
/// remove: only its proxies (`map`) let them.
fn map_ns(name: &str, map: Value) -> Value {
    let mut m = json!({"mode": "recoverable", "key_ttl": "300s"});
    merge(&mut m, map);
    json!({"name": name, "subscription_type": "map", "allow_subscribe_for_client": true,
           "allow_subscribe_for_anonymous": true, "map": m})
}

/// A server whose map proxies call `b`: `px` (both proxies, `default`), `bin` (the publish
/// proxy named `bin64`, binary-encoded), `down` (a proxy nobody listens for), `plain` (no proxy
/// and no permission).
fn config(b: &Backend) -> Value {
    let proxy = |path: &str| {
        json!({"endpoint": b.endpoint(path), "timeout": "1s", "http_headers": ["Cookie"],
               "include_connection_meta": true,
               "http": {"status_to_code_transforms": [
                   {"status_code": 404, "to_error": {"code": 404, "message": "not found"}}]}})
    };
    let mut bin = proxy("bin");
    bin["name"] = json!("bin64");
    bin["binary_encoding"] = json!(true);
    let down = json!({"name": "down", "endpoint": format!("http://127.0.0.1:{}/x", free_port()), "timeout": "1s"});
    json!({
        "client": {"token": {"hmac_secret_key": SECRET}, "allow_anonymous_connect_without_token": true,
                   "allowed_origins": ["*"]},
        "http_api": {"key": KEY},
        "channel": {
            "proxy": {"map_publish": proxy("map_publish"), "map_remove": proxy("map_remove")},
            "namespaces": [
                map_ns("px", json!({"publish_proxy_enabled": true, "remove_proxy_enabled": true})),
                map_ns("bin", json!({"publish_proxy_enabled": true, "publish_proxy_name": "bin64"})),
                map_ns("down", json!({"publish_proxy_enabled": true, "publish_proxy_name": "down",
                                      "remove_proxy_enabled": true, "remove_proxy_name": "down"})),
                map_ns("plain", json!({})),
            ]
        },
        "proxies": [bin, down],
        "workers": 2
    })
}

/// A JSON client whose upgrade request carries a cookie, connected (with a token for `user`
/// carrying meta, or anonymous); returns it with its client id.
fn connect(s: &Server, user: Option<&str>) -> (JsonClient, String) {
    let tcp = TcpStream::connect(s.addr()).unwrap();
    let ws = Ws::upgrade(tcp, WS_PATH, SAMPLE_KEY, &[("Cookie", "session=c1")]).expect("upgrade");
    ws.s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut c = JsonClient { ws, id: 0 };
    let token = user.map(|u| jwt(SECRET, json!({"sub": u, "meta": {"plan": "gold"}})));
    let r = c.call(json!({"connect": {"token": token.unwrap_or_default()}})).unwrap();
    let id = r["connect"]["client"].as_str().unwrap_or_else(|| panic!("connect: {r}")).to_string();
    (c, id)
}

/// Subscribes `c` to map channel `ch` (empty: live at once).
fn subscribe(c: &mut JsonClient, ch: &str) {
    let r = c.call(json!({"subscribe": {"channel": ch, "type": 1, "phase": 2}})).unwrap();
    assert!(r.get("error").is_none(), "subscribe {ch}: {r}");
}

/// A client's map publish (`data: Some`) or remove of `key` in `ch`: the reply, or the close.
fn write(c: &mut JsonClient, ch: &str, key: &str, data: Option<Value>) -> Result<Value, u16> {
    let mut p = json!({"channel": ch, "type": 1});
    if !key.is_empty() {
        p["key"] = json!(key);
    }
    match data {
        Some(d) => p["data"] = d,
        None => p["removed"] = json!(true),
    }
    c.call(json!({ "publish": p }))
}

/// The next publication pushed to `c`.
fn next_pub(c: &mut JsonClient) -> Value {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let f = c.ws.frame_until(deadline).expect("a push");
        if let Some(p) = json_lines(&f.payload).into_iter().find(|v| v["push"]["pub"].is_object()) {
            return p["push"].clone();
        }
    }
}

/// The channel's keys → data, from the server API.
fn state(s: &Server, ch: &str) -> Value {
    let r = s.api("map_read_state", json!({"channel": ch, "limit": 100}));
    let entries = r["result"]["entries"].as_array().cloned().unwrap_or_default();
    Value::Object(entries.into_iter().map(|e| (e["key"].as_str().unwrap().to_string(), e["data"].clone())).collect())
}

/// The proxy's answer decides: the key, data and tags it names reach the other subscriber
/// (with the publisher's info); a remove through the proxy removes the key it names. The
/// requests carry what Centrifugo sends.
#[test]
fn map_proxy_rewrites_publish_and_remove() {
    let b = Backend::start();
    let s = Server::start(config(&b));
    let (mut a, id_a) = connect(&s, Some("alice"));
    let (mut sub, _) = connect(&s, None);
    subscribe(&mut sub, "px:doc");

    // The namespace allows no client publish: the proxy lets it through, rewritten.
    let r = write(&mut a, "px:doc", "rewrite", Some(json!({"x": 1}))).unwrap();
    assert_eq!(r["publish"], json!({}), "{r}");
    let push = next_pub(&mut sub);
    assert_eq!(push["channel"], "px:doc", "{push}");
    let p = &push["pub"];
    assert_eq!(p["key"], "rewritten", "{push}");
    assert_eq!(p["data"], json!({"by": "proxy", "orig": {"x": 1}}), "{push}");
    assert_eq!(p["tags"], json!({"via": "proxy"}), "{push}");
    assert_eq!((p["info"]["client"].clone(), p["info"]["user"].clone()), (json!(id_a), json!("alice")), "{push}");
    assert_eq!(state(&s, "px:doc"), json!({"rewritten": {"by": "proxy", "orig": {"x": 1}}}));

    let call = b.call_for("rewrite");
    assert_eq!(call.path, "/map_publish");
    assert_eq!(
        call.body,
        json!({"client": id_a, "transport": "websocket", "protocol": "json", "encoding": "json", "user": "alice",
               "channel": "px:doc", "key": "rewrite", "data": {"x": 1}, "meta": {"plan": "gold"}})
    );
    assert!(call.headers.contains(&("cookie".into(), "session=c1".into())), "{:?}", call.headers);

    // Remove: the proxy names the key removed.
    let r = write(&mut a, "px:doc", "rm-rewrite", None).unwrap();
    assert!(r.get("error").is_none(), "{r}");
    let push = next_pub(&mut sub);
    assert_eq!(push["pub"]["key"], "rewritten", "{push}");
    assert_eq!(push["pub"]["removed"], true, "{push}");
    assert_eq!(push["pub"]["tags"], json!({"via": "proxy-rm"}), "{push}");
    assert!(push["pub"].get("info").is_none(), "a proxied removal has no publisher info: {push}");
    assert_eq!(state(&s, "px:doc"), json!({}));
    let call = b.call_for("rm-rewrite");
    assert_eq!(call.path, "/map_remove");
    assert_eq!(
        call.body,
        json!({"client": id_a, "transport": "websocket", "protocol": "json", "encoding": "json", "user": "alice",
               "channel": "px:doc", "key": "rm-rewrite", "meta": {"plan": "gold"}})
    );

    // An anonymous client (no `user` in the request); an answer without result keeps the
    // client's key and data; a key the client leaves out may come from the proxy.
    let (mut anon, id_anon) = connect(&s, None);
    assert!(write(&mut anon, "px:doc", "empty", Some(json!({"y": 2}))).unwrap().get("error").is_none());
    assert_eq!(next_pub(&mut sub)["pub"]["data"], json!({"y": 2}));
    let call = b.call_for("empty");
    assert_eq!(call.body["client"], json!(id_anon));
    assert!(call.body.get("user").is_none(), "{:?}", call.body);
    assert!(write(&mut anon, "px:doc", "", Some(json!({"z": 3}))).unwrap().get("error").is_none());
    assert_eq!(next_pub(&mut sub)["pub"]["key"], "assigned");
    assert_eq!(state(&s, "px:doc"), json!({"empty": {"y": 2}, "assigned": {"z": 3}}));
    // The proxy's key mode: `if_new` writes a key once; an unknown mode is the backend's error.
    assert!(write(&mut anon, "px:doc", "claim", Some(json!(1))).unwrap().get("error").is_none());
    assert_eq!(next_pub(&mut sub)["pub"]["data"], json!(1));
    assert!(write(&mut anon, "px:doc", "claim", Some(json!(2))).unwrap().get("error").is_none());
    assert_eq!(state(&s, "px:doc")["claim"], json!(1), "if_new leaves a present key");
    assert_eq!(write(&mut anon, "px:doc", "badmode", Some(json!(1))).unwrap()["error"]["code"], 100);
    s.api("map_remove", json!({"channel": "px:doc", "key": "claim"}));
    assert_eq!(next_pub(&mut sub)["pub"]["removed"], true);
    // No key from the client nor the proxy: 107, nothing written.
    let r = write(&mut anon, "px:doc", "", Some(json!({"nokey": true}))).unwrap();
    assert_eq!(r["error"]["code"], 107, "{r}");
    assert_eq!(state(&s, "px:doc").as_object().unwrap().len(), 2);

    // Without a proxy the namespace's permissions still refuse.
    let r = write(&mut anon, "plain:doc", "k", Some(json!(1))).unwrap();
    assert_eq!(r["error"]["code"], 103, "{r}");
}

/// The backend's refusals and failures as the client gets them: its error as is, HTTP 404
/// through the status transform, 100 for a failed call (not JSON, HTTP 500, nobody
/// listening), its disconnect as the close of the connection. Nothing is written.
#[test]
fn map_proxy_errors_and_disconnects() {
    let b = Backend::start();
    let s = Server::start(config(&b));
    let (mut a, _) = connect(&s, Some("alice"));
    let internal = json!({"code": 100, "message": "internal server error", "temporary": true});
    for (ch, key, removed, want) in [
        ("px:e", "deny", false, json!({"code": 1000, "message": "custom", "temporary": true})),
        ("px:e", "deny", true, json!({"code": 1000, "message": "custom", "temporary": true})),
        ("px:e", "missing", false, json!({"code": 404, "message": "not found"})),
        ("px:e", "garbage", false, internal.clone()),
        ("px:e", "fail", true, internal.clone()),
        ("down:e", "k", false, internal.clone()),
        ("down:e", "k", true, internal.clone()),
    ] {
        let data = (!removed).then(|| json!({"v": 1}));
        let r = write(&mut a, ch, key, data).unwrap();
        assert_eq!(r["error"], want, "{ch} {key} removed={removed}: {r}");
    }
    assert_eq!(state(&s, "px:e"), json!({}));
    // A disconnect closes the connection, no reply.
    let r = write(&mut a, "px:e", "kick", Some(json!(1)));
    assert_eq!(r, Err(4501));
    let (mut a, _) = connect(&s, Some("alice"));
    assert_eq!(write(&mut a, "px:e", "kick", None), Err(4501));
    assert_eq!(state(&s, "px:e"), json!({}));
}

/// `binary_encoding`: the client's data goes as `b64data` (`encoding: binary`), and the
/// result's `b64data` is what is written.
#[test]
fn map_proxy_binary_encoding() {
    let b = Backend::start();
    let s = Server::start(config(&b));
    let (mut a, _) = connect(&s, None);
    let r = write(&mut a, "bin:x", "k", Some(json!({"v": 2}))).unwrap();
    assert!(r.get("error").is_none(), "{r}");
    let call = b.call_for("k");
    assert_eq!(call.path, "/bin");
    assert_eq!(call.body["encoding"], "binary");
    assert_eq!(call.body["b64data"], B64.encode(br#"{"v":2}"#));
    assert!(call.body.get("data").is_none(), "{:?}", call.body);
    assert_eq!(state(&s, "bin:x"), json!({"k": {"b64": "{\"v\":2}"}}));
}

/// The map proxies over gRPC (`tests/python/proxy_backend.py`): the request message's fields,
/// a rewritten publish and remove, an error, a failure and a disconnect.
#[test]
fn map_proxy_over_grpc() {
    use crate::proxy::{Backend as PyBackend, Proto};
    let Some(py) = PyBackend::start("map_proxy_over_grpc", true) else { return };
    let proxy = json!({"endpoint": py.endpoint(Proto::Grpc, ""), "timeout": "1s", "include_connection_meta": true});
    let mut cfg = config(&Backend::start());
    cfg["channel"]["proxy"] = json!({"map_publish": proxy, "map_remove": proxy});
    let s = Server::start(cfg);
    let (mut a, id_a) = connect(&s, Some("alice"));
    let (mut sub, _) = connect(&s, None);
    subscribe(&mut sub, "px:g");

    assert!(write(&mut a, "px:g", "rewrite", Some(json!({"x": 1}))).unwrap().get("error").is_none());
    let p = next_pub(&mut sub)["pub"].clone();
    assert_eq!((p["key"].clone(), p["data"].clone()), (json!("rewritten"), json!({"rewritten": {"x": 1}})), "{p}");
    assert_eq!(p["tags"], json!({"via": "proxy"}), "{p}");
    let call = py.wait("the map publish call", "map_publish", |r| r["body"]["key"] == "rewrite");
    assert_eq!((call["protocol"].clone(), call["path"].clone()), (json!("grpc"), json!("MapPublish")), "{call}");
    assert_eq!(
        call["body"],
        json!({"client": id_a, "transport": "websocket", "protocol": "json", "encoding": "json", "user": "alice",
               "channel": "px:g", "key": "rewrite", "data": {"x": 1}, "meta": {"plan": "gold"}})
    );
    assert!(write(&mut a, "px:g", "rewrite", None).unwrap().get("error").is_none());
    let p = next_pub(&mut sub)["pub"].clone();
    assert_eq!((p["key"].clone(), p["removed"].clone()), (json!("rewritten"), json!(true)), "{p}");
    let call = py.wait("the map remove call", "map_remove", |r| r["body"]["key"] == "rewrite");
    assert_eq!(call["path"], "MapRemove", "{call}");
    assert!(call["body"].get("data").is_none(), "{call}");
    assert_eq!(state(&s, "px:g"), json!({}));

    let r = write(&mut a, "px:g", "deny", Some(json!(1))).unwrap();
    assert_eq!(r["error"], json!({"code": 403, "message": "denied"}), "{r}");
    let r = write(&mut a, "px:g", "fail", None).unwrap();
    assert_eq!(r["error"]["code"], 100, "{r}");
    assert_eq!(write(&mut a, "px:g", "kick", Some(json!(1))), Err(4403));
    assert_eq!(state(&s, "px:g"), json!({}));
}

/// `gyre checkconfig` of `cfg` fails and says `want`; the server refuses to start with it too.
#[track_caller]
fn refused(cfg: &Value, want: &str) {
    for args in [&["checkconfig", "--config"][..], &["--config"][..]] {
        let (ok, text) = gyre_with_config(args, cfg);
        assert!(!ok, "{args:?} accepted {cfg}: {text}");
        assert!(text.contains(want), "{args:?}: want {want:?} in:\n{text}");
    }
}

/// The start-up checks: `map.client_key` beside a proxy, a proxy name that does not exist, the
/// `default` proxy without an endpoint.
#[test]
fn map_proxy_config_checks() {
    let b = Backend::start();
    let with = |map: Value| {
        let mut cfg = config(&b);
        cfg["http_server"] = json!({"port": free_port()});
        cfg["channel"]["namespaces"].as_array_mut().unwrap().push(map_ns("bad", map));
        cfg
    };
    refused(
        &with(json!({"publish_proxy_enabled": true, "client_key": "client_id"})),
        "channel.namespaces[\"bad\"].map.client_key is not compatible with map.publish_proxy_enabled",
    );
    refused(
        &with(json!({"remove_proxy_enabled": true, "client_key": "user_id"})),
        "channel.namespaces[\"bad\"].map.client_key is not compatible with map.remove_proxy_enabled",
    );
    refused(
        &with(json!({"publish_proxy_name": "nope"})),
        "channel.namespaces[\"bad\"].map.publish_proxy_name: no proxy named \"nope\"",
    );
    let mut cfg = with(json!({"remove_proxy_enabled": true}));
    cfg["channel"]["proxy"]["map_remove"]["endpoint"] = json!("");
    refused(&cfg, "channel.proxy.map_remove.endpoint: required");
}

/// centrifuge-js 5.8 (`tests/js/map_proxy.js`) over JSON and protobuf: a publish the proxy
/// rewrites reaches the other subscriber rewritten, a remove removes the key the proxy names,
/// the backend's error and a failed call reject the publish with their codes.
#[test]
fn map_proxy_sdk() {
    if !crate::map_subs::node_ready("map_proxy_sdk") {
        return;
    }
    let b = Backend::start();
    let s = Server::start(config(&b));
    for (protobuf, ch) in [(false, "px:sdk-json"), (true, "px:sdk-pb")] {
        let format = if protobuf { "?format=protobuf" } else { "" };
        let arg =
            json!({"url": format!("ws://{}/connection/websocket{format}", s.addr()), "protobuf": protobuf, "ch": ch});
        let v = crate::map_subs::run_node("map_proxy.js", &arg);
        let rewritten = json!({"by": "proxy", "orig": {"x": 1}});
        assert_eq!(
            v["bUpdates"],
            json!([
                {"key": "rewritten", "removed": false, "data": rewritten},
                {"key": "rewritten", "removed": true, "data": null},
                {"key": "empty", "removed": false, "data": {"x": 4}},
            ]),
            "protobuf={protobuf}: {v}"
        );
        assert_eq!(v["denied"], json!({"code": 1000, "message": "custom"}), "{v}");
        assert_eq!(v["failed"], json!({"code": 100, "message": "internal server error"}), "{v}");
        assert_eq!(v["bState"], json!({"empty": {"x": 4}}), "{v}");
        let call = b.call_for("rewrite");
        assert_eq!((call.body["channel"].clone(), call.body["data"].clone()), (json!(ch), json!({"x": 1})));
        assert_eq!(call.body["protocol"], if protobuf { "protobuf" } else { "json" });
    }
}
