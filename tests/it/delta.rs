//! Fossil delta compression (`delta: "fossil"` subscriptions, `allowed_delta_types`,
//! `delta_publish`, the API's `delta` flag): the frames on the wire read by a raw client and
//! decoded with the `fossil-delta` crate, then the SDKs that decode deltas themselves —
//! centrifuge-js (JSON and protobuf, with its `deltaStats`) and centrifuge-python.

use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::util::*;
use crate::ws_client::{json_lines, Ws, CLOSE, TEXT};

/// Namespaces: `dd` allows fossil deltas (history on), `pp` allows them and publishes every
/// publication with delta (no history), `plain` does not allow them.
fn delta_config() -> Value {
    config_with(json!({
        "client": {"insecure": true},
        "channel": {"namespaces": [
            {"name": "dd", "allowed_delta_types": ["fossil"], "history_size": 100, "history_ttl": "300s",
             "force_recovery": true},
            {"name": "pp", "allowed_delta_types": ["fossil"], "delta_publish": true},
            {"name": "plain", "history_size": 10, "history_ttl": "300s"}
        ]},
        "workers": 2
    }))
}

/// A ~4 KB JSON document in which field `field7` holds `n`.
fn doc(n: u64) -> Value {
    let mut m = serde_json::Map::new();
    for i in 0..80 {
        let v = if i == 7 { json!(n) } else { json!(format!("value of field {i} — unchanged text")) };
        m.insert(format!("field{i}"), v);
    }
    Value::Object(m)
}

fn publish(s: &Server, channel: &str, data: &Value, delta: bool) {
    let r = s.api("publish", json!({"channel": channel, "data": data, "delta": delta}));
    assert!(r.get("error").is_none(), "{r}");
}

/// A raw JSON client, connected, with the messages it received but has not looked at.
struct Raw {
    ws: Ws,
    pending: Vec<Value>,
}

impl Raw {
    fn connect(s: &Server) -> Raw {
        let mut ws = Ws::open(s.addr());
        ws.send_json(&json!({"id": 1, "connect": {}}));
        let mut r = Raw { ws, pending: Vec::new() };
        let c = r.next(|m| m["id"] == 1);
        assert!(c["connect"]["client"].is_string(), "{c}");
        r
    }

    /// The next message `keep` accepts (earlier ones dropped).
    fn next(&mut self, keep: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(i) = self.pending.iter().position(&keep) {
                let m = self.pending.remove(i);
                self.pending.drain(..i);
                return m;
            }
            let f = self.ws.frame_until(deadline).expect("a frame in time");
            if f.op == CLOSE {
                panic!("closed: {:?}", f.close());
            }
            if f.op == TEXT {
                self.pending.extend(json_lines(&f.payload));
            }
        }
    }

    fn subscribe(&mut self, id: u64, channel: &str, delta: &str) -> Value {
        let mut sub = json!({"channel": channel});
        if !delta.is_empty() {
            sub["delta"] = json!(delta);
        }
        self.ws.send_json(&json!({"id": id, "subscribe": sub}));
        self.next(|m| m["id"] == id)
    }

    fn publication(&mut self, channel: &str) -> Value {
        self.next(|m| m["push"]["channel"] == channel && m["push"]["pub"].is_object())["push"]["pub"].clone()
    }
}

/// Follows what a delta subscriber receives: each publication's data is a JSON string, the
/// full text or (`delta: true`) a fossil patch against the previous text.
struct Decoder {
    prev: Vec<u8>,
    patches: usize,
}

impl Decoder {
    fn apply(&mut self, p: &Value) -> Value {
        let text = p["data"].as_str().unwrap_or_else(|| panic!("delta subscribers get strings: {p}"));
        let full = if p["delta"] == true {
            self.patches += 1;
            assert!(text.len() < 200, "a one-field change is a small patch: {} bytes", text.len());
            fossil_delta::apply(&self.prev, text.as_bytes()).expect("the patch applies to the previous data")
        } else {
            assert!(p.get("delta").is_none(), "`delta` is omitted when false: {p}");
            text.as_bytes().to_vec()
        };
        self.prev = full.clone();
        serde_json::from_slice(&full).unwrap()
    }
}

#[test]
fn raw_client_gets_patches_against_its_previous_publication() {
    let s = Server::start(delta_config());
    let mut c = Raw::connect(&s);
    let r = c.subscribe(2, "dd:doc", "fossil");
    assert_eq!(r["subscribe"]["delta"], true, "{r}");
    let mut plain = Raw::connect(&s);
    let r = plain.subscribe(2, "dd:doc", "");
    assert!(r["subscribe"].get("delta").is_none(), "{r}");

    let mut dec = Decoder { prev: Vec::new(), patches: 0 };
    // The first publication has no base: full data, as a string.
    publish(&s, "dd:doc", &doc(1), true);
    let p = c.publication("dd:doc");
    assert_eq!(p["offset"], 1);
    assert_eq!(dec.apply(&p), doc(1));
    assert_eq!(dec.patches, 0);
    // Then patches against the previous publication.
    for n in 2..=5 {
        publish(&s, "dd:doc", &doc(n), true);
        assert_eq!(dec.apply(&c.publication("dd:doc")), doc(n));
    }
    assert_eq!(dec.patches, 4);
    // Published without `delta`: full data (a string still); the next delta publish patches
    // against it.
    publish(&s, "dd:doc", &doc(6), false);
    let p = c.publication("dd:doc");
    assert!(p.get("delta").is_none(), "{p}");
    assert_eq!(dec.apply(&p), doc(6));
    publish(&s, "dd:doc", &doc(7), true);
    assert_eq!(dec.apply(&c.publication("dd:doc")), doc(7));
    assert_eq!(dec.patches, 5);
    // The subscriber without delta gets plain JSON objects throughout.
    for n in 1..=7 {
        let p = plain.publication("dd:doc");
        assert_eq!(p["data"], doc(n), "{p}");
        assert!(p.get("delta").is_none(), "{p}");
    }

    // A late delta subscriber starts from full data, then follows patches.
    let mut late = Raw::connect(&s);
    late.subscribe(2, "dd:doc", "fossil");
    let mut dec2 = Decoder { prev: Vec::new(), patches: 0 };
    publish(&s, "dd:doc", &doc(8), true);
    let p = late.publication("dd:doc");
    assert!(p.get("delta").is_none(), "no base yet: full data: {p}");
    assert_eq!(dec2.apply(&p), doc(8));
    assert_eq!(dec.apply(&c.publication("dd:doc")), doc(8), "an old subscriber gets the patch");
    publish(&s, "dd:doc", &doc(9), true);
    assert_eq!(dec2.apply(&late.publication("dd:doc")), doc(9));
    assert_eq!(dec2.patches, 1);
}

#[test]
fn delta_publish_and_what_is_not_negotiated() {
    let s = Server::start(delta_config());
    // `delta_publish`: every publication is a delta publish, history or not.
    let mut c = Raw::connect(&s);
    assert_eq!(c.subscribe(2, "pp:doc", "fossil")["subscribe"]["delta"], true);
    let mut dec = Decoder { prev: Vec::new(), patches: 0 };
    for n in 1..=3 {
        publish(&s, "pp:doc", &doc(n), false);
        assert_eq!(dec.apply(&c.publication("pp:doc")), doc(n));
    }
    assert_eq!(dec.patches, 2);
    // Not allowed in the namespace: no `delta` in the result, plain publications.
    let r = c.subscribe(3, "plain:doc", "fossil");
    assert!(r["subscribe"].is_object() && r["subscribe"].get("delta").is_none(), "{r}");
    publish(&s, "plain:doc", &doc(1), true);
    publish(&s, "plain:doc", &doc(2), true);
    assert_eq!(c.publication("plain:doc")["data"], doc(1));
    let p = c.publication("plain:doc");
    assert_eq!(p["data"], doc(2));
    assert!(p.get("delta").is_none(), "{p}");
    // An unknown delta type is a bad request: the connection is closed with 3501.
    c.ws.send_json(&json!({"id": 9, "subscribe": {"channel": "dd:x", "delta": "xdelta"}}));
    assert_eq!(c.ws.expect_close(Duration::from_secs(5)).0, 3501);
}

#[test]
fn recovered_publications_come_in_full_then_patches_follow() {
    let s = Server::start(delta_config());
    for n in 1..=3 {
        publish(&s, "dd:rec", &doc(n), true);
    }
    let epoch =
        s.api("history", json!({"channel": "dd:rec", "limit": 0}))["result"]["epoch"].as_str().unwrap().to_string();
    let mut c = Raw::connect(&s);
    c.ws.send_json(&json!({"id": 2, "subscribe": {"channel": "dd:rec", "delta": "fossil", "recover": true,
        "offset": 1, "epoch": epoch}}));
    let r = c.next(|m| m["id"] == 2)["subscribe"].clone();
    assert_eq!((r["recovered"].clone(), r["delta"].clone()), (json!(true), json!(true)), "{r}");
    let pubs = r["publications"].as_array().unwrap();
    assert_eq!(pubs.len(), 2, "{r}");
    let mut dec = Decoder { prev: Vec::new(), patches: 0 };
    assert_eq!(dec.apply(&pubs[0]), doc(2));
    assert_eq!(dec.apply(&pubs[1]), doc(3));
    publish(&s, "dd:rec", &doc(4), true);
    publish(&s, "dd:rec", &doc(5), true);
    assert_eq!(dec.apply(&c.publication("dd:rec")), doc(4));
    assert_eq!(dec.apply(&c.publication("dd:rec")), doc(5));
    assert_eq!(dec.patches, 1, "the first live publication after recovery comes in full");
}

/// An SDK subscribes with `delta: "fossil"` and sees every publication's data as published;
/// with agent.js the SDK's own statistics show patches were decoded.
fn sdk_flow(sdk: Sdk, protobuf: bool, test: &str) {
    let s = Server::start(delta_config());
    let Some(mut a) = Agent::start(sdk, test) else { return };
    a.connect("a", &s, json!({"protobuf": protobuf}));
    a.wait("a connected", ev("a", "connected"));
    a.sub("a", "dd:sdk", json!({"delta": "fossil"}));
    a.wait("a subscribed", |e| e["c"] == "a" && e["ev"] == "sub.subscribed");
    for n in 1..=10 {
        publish(&s, "dd:sdk", &doc(n), true);
    }
    let pubs = a.wait_n("10 publications", 10, |e| e["c"] == "a" && e["ev"] == "sub.publication");
    for (n, p) in (1..=10).zip(&pubs) {
        assert_eq!(p["data"], doc(n), "publication {n}");
        assert_eq!(p["offset"], n, "{p}");
    }
    if sdk == Sdk::Js {
        a.send(json!({"op": "deltaStats", "c": "a", "ch": "dd:sdk"}));
        let st = a.wait("delta stats", ev("a", "deltaStats"))["stats"].clone();
        assert_eq!(st["numPublications"], 10, "{st}");
        assert_eq!(st["numDeltaPayloads"], 9, "{st}");
        assert_eq!(st["numFullPayloads"], 1, "{st}");
        assert!(st["bytesReceived"].as_f64().unwrap() * 5.0 < st["bytesDecoded"].as_f64().unwrap(), "{st}");
    }
    assert_eq!(a.count(|e| e["c"] == "a" && (e["ev"] == "error" || e["ev"] == "sub.error")), 0, "errors");
    assert_eq!(a.count(ev("a", "disconnected")), 0);
}

#[test]
fn js_delta_json() {
    sdk_flow(Sdk::Js, false, "js_delta_json");
}

#[test]
fn js_delta_protobuf() {
    sdk_flow(Sdk::Js, true, "js_delta_protobuf");
}

#[test]
fn python_delta_json() {
    sdk_flow(Sdk::Py, false, "python_delta_json");
}

#[test]
fn python_delta_protobuf() {
    sdk_flow(Sdk::Py, true, "python_delta_protobuf");
}
