//! Shared poll subscriptions with centrifuge-js 5.8 in Node (`tests/js/shared_poll.js`) over
//! JSON and protobuf, against the real HTTP backend of `shared_poll`: `track(keys)` with a
//! getSignature callback signing as a backend does, new versions and removals as `update`
//! events, a second client, `untrack`, a cut and the SDK's replay of its tracked keys, an
//! explicit signature, and a wrong and an expired signature as `track` errors (103, 109).

use serde_json::{json, Value};

use crate::map_subs::{node_ready, run_node};
use crate::shared_poll::{config, Backend, SECRET};
use crate::util::*;

const CH: &str = "prices:eu";

/// Runs `tests/js/shared_poll.js` against a server polling `b` and returns what it printed.
fn run_script(s: &Server, b: &Backend, protobuf: bool, delta: bool) -> Value {
    let url = if protobuf {
        format!("ws://{}/connection/websocket?format=protobuf", s.addr())
    } else {
        format!("ws://{}/connection/websocket", s.addr())
    };
    let arg = json!({
        "url": url, "backend": format!("http://127.0.0.1:{}", b.port), "secret": SECRET,
        "channel": CH, "protobuf": protobuf, "delta": delta,
    });
    run_node("shared_poll.js", &arg)
}

/// An `update` event of `key` at `version` (the backend's data is `{"k": key, "v": version}`).
fn upd(key: &str, version: u64) -> Value {
    json!({"key": key, "data": {"k": key, "v": version}, "version": version})
}

/// A removal event. Over protobuf the SDK reads the absent version as 0 (a proto3 default);
/// over JSON it has none.
fn removed(key: &str, protobuf: bool) -> Value {
    if protobuf {
        json!({"key": key, "data": null, "version": 0, "removed": true})
    } else {
        json!({"key": key, "data": null, "removed": true})
    }
}

/// The SDK's own removal event for a key it untracks: no version whatever the format.
fn dropped(key: &str) -> Value {
    json!({"key": key, "data": null, "removed": true})
}

fn sorted(v: &Value) -> Value {
    let mut items = v.as_array().cloned().unwrap_or_default();
    items.sort_by_key(|x| x.to_string());
    Value::Array(items)
}

/// The scenario; with `delta` the subscriptions negotiate fossil deltas (the namespace allows
/// them) and see the same updates, some of them carried as patches.
fn scenario(protobuf: bool, delta: bool) {
    let b = Backend::start(false);
    for (key, version) in [("a", 1), ("b", 3), ("c", 1), ("d", 1), ("f", 1)] {
        b.set(key, json!({"k": key, "v": version}), version);
    }
    let mut cfg = config(&b, "300ms", 5000);
    if delta {
        cfg["channel"]["namespaces"][0]["allowed_delta_types"] = json!(["fossil"]);
    }
    let s = Server::start(cfg);
    let v = run_script(&s, &b, protobuf, delta);
    if delta {
        // B holds `a` at v2 (sent in full), then gets v3 and v4 as patches; A gets v3 as one
        // (v2 grew from the seeded data, and it tracks `a` again later from nothing).
        let (a, b) = (&v["a"]["delta"], &v["b"]["delta"]);
        assert_eq!(b["numDeltaPayloads"], 2, "{b}");
        assert_eq!(a["numDeltaPayloads"], 1, "{a}");
        assert!(!v.to_string().contains("badPad"), "patched data decodes to the data set: {v}");
    }
    let st = &v["steps"];
    let none = json!([]);

    // 1. track(['a', 'b']): one getSignature call, the backend's data and versions.
    let t = &st["track"];
    assert_eq!(sorted(&t["updates"]), json!([upd("a", 1), upd("b", 3)]), "{v}");
    assert_eq!(t["signatures"], json!([["a", "b"]]), "{v}");
    assert_eq!(t["tracked"], json!(["a", "b"]), "{v}");
    // 2. A new version; a removal, which ends the tracking.
    let t = &st["change"];
    assert_eq!(t["updates"], json!([upd("a", 2), removed("b", protobuf)]), "{v}");
    assert_eq!(t["tracked"], json!(["a"]), "{v}");
    // 3. B tracks `a`: its current data; the next version reaches both.
    assert_eq!(st["second"]["updates"], json!([upd("a", 2)]), "{v}");
    assert_eq!(st["second"]["signatures"], json!([["a"]]), "{v}");
    assert_eq!(st["both"]["a"]["updates"], json!([upd("a", 3)]), "{v}");
    assert_eq!(st["both"]["b"]["updates"], json!([upd("a", 3)]), "{v}");
    // 4. A untracked `a`: only B hears of v4.
    assert_eq!(st["untrack"]["a"]["updates"], none, "{v}");
    assert_eq!(st["untrack"]["a"]["tracked"], none, "{v}");
    assert_eq!(st["untrack"]["b"]["updates"], json!([upd("a", 4)]), "{v}");
    // 5. A cut: the SDK subscribes again and tracks `d` again with the signature it has (no
    // getSignature call), from the version it has: the version made meanwhile arrives once.
    let cut = &st["cut"];
    assert_eq!(cut["before"]["updates"], json!([upd("d", 1)]), "{v}");
    assert_eq!(cut["before"]["signatures"], json!([["d"]]), "{v}");
    assert_eq!((cut["openBefore"].clone(), cut["sockets"].clone()), (json!(1), json!(2)), "{v}");
    assert_eq!(cut["subscribed"], 1, "{v}");
    assert_eq!(cut["after"]["updates"], json!([upd("d", 2)]), "{v}");
    assert_eq!(cut["after"]["signatures"], none, "the cached signature is replayed: {v}");
    assert_eq!(cut["after"]["errors"], none, "{v}");
    assert_eq!(cut["state"], "connected", "{v}");
    // A key tracked again after the cut: its current data.
    assert_eq!(cut["retrack"]["updates"], json!([upd("a", 4)]), "{v}");
    assert_eq!(cut["retrack"]["signatures"], json!([["a"]]), "{v}");
    assert_eq!(cut["retrack"]["tracked"], json!(["a", "d"]), "{v}");
    // 6. An explicit signature: no getSignature call.
    let t = &st["explicit"];
    assert_eq!(t["updates"], json!([upd("c", 1)]), "{v}");
    assert_eq!(t["signatures"], none, "{v}");
    // 7. A wrong signature: 103, and the SDK untracks the key (a removal event).
    let t = &st["invalid"];
    assert_eq!(t["errors"], json!([{"type": "track", "code": 103}]), "{v}");
    assert_eq!(t["updates"], json!([dropped("e")]), "{v}");
    assert_eq!(t["tracked"], json!(["a", "c", "d"]), "{v}");
    // An expired one (past the grace): 109, then one getSignature call for every key tracked,
    // and the key's data.
    let t = &st["expired"];
    assert_eq!(t["errors"], json!([{"type": "track", "code": 109}]), "{v}");
    assert_eq!(t["signatures"].as_array().map(Vec::len), Some(1), "{v}");
    assert_eq!(sorted(&t["signatures"][0]), json!(["a", "c", "d", "f"]), "{v}");
    assert_eq!(t["updates"], json!([upd("f", 1)]), "{v}");
    assert_eq!(t["tracked"], json!(["a", "c", "d", "f"]), "{v}");

    // Each change once, in order, nothing else; no other errors.
    let a = &v["a"];
    let mut want = sorted(&st["track"]["updates"]).as_array().cloned().unwrap();
    want.extend([
        upd("a", 2),
        removed("b", protobuf),
        upd("a", 3),
        upd("d", 1),
        upd("d", 2),
        upd("a", 4),
        upd("c", 1),
        dropped("e"),
        upd("f", 1),
    ]);
    let mut got = a["updates"].as_array().cloned().unwrap();
    got[..2].sort_by_key(|x| x.to_string());
    assert_eq!(Value::Array(got), Value::Array(want), "{v}");
    assert_eq!(a["errors"], json!([{"type": "track", "code": 103}, {"type": "track", "code": 109}]), "{v}");
    assert_eq!(a["state"], "subscribed", "{v}");
    assert_eq!(v["b"]["updates"], json!([upd("a", 2), upd("a", 3), upd("a", 4)]), "{v}");
    assert_eq!(v["b"]["errors"], none, "{v}");
    assert_eq!(v["b"]["tracked"], json!(["a"]), "{v}");

    // The backend: one channel, versions sent for what the poller has.
    let calls = b.calls();
    assert!(calls.iter().all(|c| c["channel"] == CH), "{calls:?}");
    assert!(calls.iter().any(|c| c["items"].as_array().unwrap().iter().any(|i| i["version"] == 4)), "{calls:?}");

    if !protobuf {
        check_wire(&v);
    }
}

/// What went over the wire (JSON only): one `pub` per connection and version, the requests the
/// SDK sent and Gyre's replies.
fn check_wire(v: &Value) {
    let st = &v["steps"];
    for who in ["a", "b"] {
        let pubs = v[who]["wire"]["pubs"].as_array().unwrap();
        let mut seen = std::collections::BTreeSet::new();
        for p in pubs {
            assert!(seen.insert(p.to_string()), "{who} got {p} twice: {v}");
        }
    }
    assert_eq!(
        v["b"]["wire"]["pubs"],
        json!([{"key": "a", "version": 2}, {"key": "a", "version": 3}, {"key": "a", "version": 4}]),
        "{v}"
    );
    // Once untracked, `a` is pushed to A no more.
    assert_eq!(st["untrack"]["a"]["pubs"], json!([]), "{v}");
    let r = &st["untrack"]["a"]["refreshes"];
    assert_eq!(r.as_array().map(Vec::len), Some(1), "{v}");
    assert_eq!((r[0]["type"].clone(), r[0]["untrack"].clone()), (json!(2), json!(["a"])), "{v}");
    assert!(r[0]["reply"].is_object() && r[0]["reply"].get("error").is_none(), "{v}");
    // The first track: signed, no versions, a ttl of about an hour.
    let r = &st["track"]["refreshes"][0];
    assert_eq!((r["type"].clone(), r["track"].clone()), (json!(1), json!([["a", "b"]])), "{v}");
    assert_eq!(r["reply"]["expires"], true, "{v}");
    assert!(r["reply"]["ttl"].as_u64().is_some_and(|t| t > 3500), "{v}");
    // The replay after the cut: the cached batch with the version A has.
    let r = &st["cut"]["after"]["refreshes"];
    assert_eq!(r.as_array().map(Vec::len), Some(1), "{v}");
    assert_eq!(r[0]["track"], json!([["d@1"]]), "{v}");
    assert!(r[0]["reply"].is_object() && r[0]["reply"].get("error").is_none(), "{v}");
    // The wrong signature: 103, then the SDK's untrack of the key, which succeeds.
    let r = &st["invalid"]["refreshes"];
    assert_eq!(r[0]["track"], json!([["e"]]), "{v}");
    assert_eq!(r[0]["reply"], json!({"error": 103}), "{v}");
    assert_eq!((r[1]["type"].clone(), r[1]["untrack"].clone()), (json!(2), json!(["e"])), "{v}");
    assert!(r[1]["reply"].is_object() && r[1]["reply"].get("error").is_none(), "{v}");
    // The expired one: 109, then every key tracked again under the new signature, at the
    // versions A has: nothing pushed again.
    let r = &st["expired"]["refreshes"];
    assert_eq!(r[0]["reply"], json!({"error": 109}), "{v}");
    assert_eq!(r.as_array().map(Vec::len), Some(2), "{v}");
    assert_eq!(sorted(&r[1]["track"][0]), json!(["a@4", "c@1", "d@2", "f"]), "{v}");
    assert!(r[1]["reply"].is_object() && r[1]["reply"].get("error").is_none(), "{v}");
    assert_eq!(st["expired"]["pubs"], json!([{"key": "f", "version": 1}]), "{v}");
}

#[test]
fn shared_poll_sdk_json() {
    if !node_ready("shared_poll_sdk_json") {
        return;
    }
    scenario(false, false);
}

#[test]
fn shared_poll_sdk_protobuf() {
    if !node_ready("shared_poll_sdk_protobuf") {
        return;
    }
    scenario(true, false);
}

#[test]
fn shared_poll_sdk_json_fossil_deltas() {
    if !node_ready("shared_poll_sdk_json_fossil_deltas") {
        return;
    }
    scenario(false, true);
}

#[test]
fn shared_poll_sdk_protobuf_fossil_deltas() {
    if !node_ready("shared_poll_sdk_protobuf_fossil_deltas") {
        return;
    }
    scenario(true, true);
}
