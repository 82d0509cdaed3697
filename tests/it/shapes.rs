//! Client protocol reply shapes on the wire: the JSON of replies whose results are empty or
//! zero, byte for byte as Centrifugo writes them (`presence_stats` always carries both counts,
//! `history` always carries `publications`, `epoch` and `offset`), on the memory and Redis
//! engines, and what the JS SDK makes of them.

use std::time::Duration;

use serde_json::{json, Value};

use crate::util::*;
use crate::ws_client::*;

/// `sh`: presence and history on, everything allowed (`client.insecure`).
fn shapes_config() -> Value {
    json!({
        "http_api": {"key": KEY},
        "client": {"insecure": true},
        "channel": {
            "namespaces": [{"name": "sh", "presence": true, "history_size": 10, "history_ttl": "300s"}]
        },
        "workers": 2
    })
}

/// A raw JSON client: each reply is read as the exact text the server wrote.
struct Raw {
    ws: Ws,
    /// Lines read while looking for another reply.
    seen: Vec<String>,
    client: String,
}

impl Raw {
    fn connect(s: &Server) -> Raw {
        let ws = Ws::open(s.addr());
        ws.s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut r = Raw { ws, seen: Vec::new(), client: String::new() };
        let c = r.call(1, json!({"connect": {}}));
        let v: Value = serde_json::from_str(&c).unwrap();
        r.client = v["connect"]["client"].as_str().unwrap_or_else(|| panic!("no client id: {c}")).to_string();
        r
    }

    /// Sends `{"id":id,..cmd}` and returns the text of the reply with that id.
    fn call(&mut self, id: u32, mut cmd: Value) -> String {
        cmd["id"] = json!(id);
        self.ws.send_json(&cmd);
        loop {
            let f = self.ws.frame().unwrap_or_else(|e| panic!("no reply {id} to {cmd}: {e}"));
            assert_ne!(f.op, CLOSE, "closed while waiting for reply {id} to {cmd}: {f:?}");
            let text = String::from_utf8(f.payload).unwrap();
            let mut found = None;
            for line in text.split('\n').filter(|l| !l.trim().is_empty()) {
                let v: Value = serde_json::from_str(line).unwrap();
                if v["id"] == id {
                    found = Some(line.to_string());
                } else {
                    self.seen.push(line.to_string());
                }
            }
            if let Some(line) = found {
                return line;
            }
        }
    }

    /// Reads frames until a push has been seen: with Redis a publication reaches subscribers
    /// through the engine's PUB/SUB, after the publish is acknowledged.
    fn wait_push(&mut self) {
        while self.seen.is_empty() {
            let f = self.ws.frame().unwrap_or_else(|e| panic!("no push: {e}"));
            assert_ne!(f.op, CLOSE, "closed while waiting for a push: {f:?}");
            let text = String::from_utf8(f.payload).unwrap();
            self.seen.extend(text.split('\n').filter(|l| !l.trim().is_empty()).map(str::to_string));
        }
    }
}

/// The commands whose results can be empty, each reply compared as text.
fn empty_results_have_centrifugo_shapes(s: &Server) {
    let mut c = Raw::connect(s);
    let ch = json!({"channel": "sh:empty"});
    assert_eq!(
        c.call(2, json!({"presence_stats": ch})),
        r#"{"id":2,"presence_stats":{"num_clients":0,"num_users":0}}"#
    );
    assert_eq!(c.call(3, json!({"presence": ch})), r#"{"id":3,"presence":{"presence":{}}}"#);
    let h = c.call(4, json!({"history": ch}));
    let v: Value = serde_json::from_str(&h).unwrap();
    let epoch = v["history"]["epoch"].as_str().unwrap_or_else(|| panic!("history without epoch: {h}"));
    assert_eq!(h, format!(r#"{{"id":4,"history":{{"publications":[],"epoch":"{epoch}","offset":0}}}}"#));
    // Since the top of an empty stream: still all three fields.
    let since = json!({"channel": "sh:empty", "since": {"offset": 0, "epoch": epoch}});
    assert_eq!(c.call(5, json!({"history": since})), h.replace(r#""id":4"#, r#""id":5"#));
    assert_eq!(c.call(6, json!({"subscribe": ch})), r#"{"id":6,"subscribe":{}}"#);
    assert_eq!(c.call(7, json!({"publish": {"channel": "sh:empty", "data": {}}})), r#"{"id":7,"publish":{}}"#);
    c.wait_push();
    assert_eq!(c.call(8, json!({"unsubscribe": ch})), r#"{"id":8,"unsubscribe":{}}"#);
    let id = &c.client;
    assert_eq!(
        c.seen,
        [format!(
            r#"{{"push":{{"channel":"sh:empty","pub":{{"data":{{}},"info":{{"user":"","client":"{id}"}},"offset":1}}}}}}"#
        )],
        "the publication pushed while subscribed"
    );
    // A channel with history but nothing in it after a publish: offset stays, list is `[]`.
    let h = c.call(9, json!({"history": {"channel": "sh:empty", "limit": 0}}));
    assert_eq!(h, format!(r#"{{"id":9,"history":{{"publications":[],"epoch":"{epoch}","offset":1}}}}"#));
}

#[test]
fn empty_results_memory() {
    let s = Server::start(shapes_config());
    empty_results_have_centrifugo_shapes(&s);
}

#[test]
fn empty_results_redis() {
    if !redis_available("shapes::empty_results_redis") {
        return;
    }
    let redis = RedisServer::start();
    let mut cfg = shapes_config();
    merge(&mut cfg, json!({"engine": {"type": "redis", "redis": {"address": [redis.url()], "prefix": "shapes"}}}));
    let s = Server::start(cfg);
    empty_results_have_centrifugo_shapes(&s);
}

/// The JS SDK reads `numClients`/`numUsers` and `publications`/`offset` from these replies:
/// with the fields left out it reported `undefined` and failed on the missing list.
#[test]
fn js_sdk_reads_empty_presence_stats_and_history() {
    const TEST: &str = "shapes::js_sdk_reads_empty_presence_stats_and_history";
    let s = Server::start(shapes_config());
    let Some(mut a) = Agent::start(Sdk::Js, TEST) else { return };
    for (c, protobuf) in [("j", false), ("p", true)] {
        a.connect(c, &s, json!({"protobuf": protobuf}));
        a.wait(&format!("{c} connected"), ev(c, "connected"));
        let stats = a.call(c, "presenceStats", "sh:nobody", json!({}));
        assert_eq!(stats, Ok(json!({"numClients": 0, "numUsers": 0})), "{c}");
        let h = a.call(c, "history", "sh:nobody", json!({})).unwrap_or_else(|e| panic!("{c}: history failed: {e}"));
        assert_eq!(h["publications"], json!([]), "{c}: {h}");
        assert_eq!(h["offset"], 0, "{c}: {h}");
    }
}
