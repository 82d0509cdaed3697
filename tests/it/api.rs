//! New-style server API: `POST /api/<method>`, success and error shapes of every method
//! (Centrifugo §1.1–1.5).

use serde_json::{json, Value};

use crate::util::*;

fn epoch_of(v: &Value) -> String {
    v["result"]["epoch"].as_str().unwrap_or_else(|| panic!("no epoch in {v}")).to_string()
}

#[test]
fn publish_with_history_returns_offset_and_epoch() {
    let s = Server::start(config());
    let r = s.api("publish", json!({"channel": "hist:a", "data": {"text": "hello"}}));
    let epoch = epoch_of(&r);
    assert!(!epoch.is_empty());
    assert_eq!(r, json!({"result": {"offset": 1, "epoch": epoch}}));
    let r = s.api("publish", json!({"channel": "hist:a", "data": [1, 2]}));
    assert_eq!(r, json!({"result": {"offset": 2, "epoch": epoch}}));
    // Channel without namespace uses channel.without_namespace (history_size 10).
    let r = s.api("publish", json!({"channel": "plain", "data": 1}));
    assert_eq!(r["result"]["offset"], 1, "{r}");
}

#[test]
fn publish_without_history_returns_empty_result() {
    let s = Server::start(config());
    let r = s.post("/api/publish", br#"{"channel":"nohist:a","data":{"x":1}}"#, &[("X-API-Key", KEY)]);
    assert_eq!(r.status, 200);
    assert_eq!(r.text(), r#"{"result":{}}"#);
}

#[test]
fn publish_errors() {
    let s = Server::start(config());
    assert_eq!(s.api("publish", json!({"data": 1})), api_error(107), "missing channel");
    assert_eq!(s.api("publish", json!({"channel": "", "data": 1})), api_error(107), "empty channel");
    assert_eq!(s.api("publish", json!({"channel": "nope:a", "data": 1})), api_error(102), "unknown namespace");
    assert_eq!(
        s.api("publish", json!({"channel": "hist:a", "b64data": "!!not base64!!"})),
        api_error(107),
        "invalid base64"
    );
    // Exact error body bytes.
    let r = s.post("/api/publish", br#"{"channel":"nope:a","data":1}"#, &[("X-API-Key", KEY)]);
    assert_eq!(r.text(), r#"{"error":{"code":102,"message":"unknown channel"}}"#);
    // Undecodable body: HTTP 400 with a plain-text body.
    for body in [&br#"{"channel":5,"data":1}"#[..], b"{not json", b"[1,2]", b"\"str\""] {
        let r = s.post("/api/publish", body, &[("X-API-Key", KEY)]);
        assert_eq!(r.status, 400, "body {:?}", String::from_utf8_lossy(body));
        assert_eq!(r.text().trim_end(), "Bad Request");
    }
    // No command ran.
    let h = s.api("history", json!({"channel": "hist:a", "limit": -1}));
    assert_eq!(h["result"]["publications"], json!([]), "{h}");
}

/// A JSON array is not a request object: Go's `json.Unmarshal` refuses it (HTTP 400), and it
/// must not be read positionally as the request's fields.
#[test]
fn array_body_is_400() {
    let s = Server::start(config());
    for (method, body) in [
        ("publish", &b"[]"[..]),
        ("publish", br#"["hist:arr",null,{"a":1}]"#),
        ("history", br#"["hist:arr",-1]"#),
        ("info", b"[]"),
    ] {
        let r = s.post(&format!("/api/{method}"), body, &[("X-API-Key", KEY)]);
        assert_eq!(r.status, 400, "{method} {:?}: {}", String::from_utf8_lossy(body), r.text());
        assert_eq!(r.text().trim_end(), "Bad Request");
    }
    let h = s.api("history", json!({"channel": "hist:arr", "limit": -1}));
    assert_eq!(h["result"]["offset"], 0, "an array body ran a command: {h}");
}

/// Go's `json.Unmarshal` of `null` into a struct is a no-op, so Centrifugo treats a `null`
/// body as an empty request: in-band 107 for publish, a normal result for info.
#[test]
fn null_body_is_an_empty_request() {
    let s = Server::start(config());
    let r = s.post("/api/publish", b"null", &[("X-API-Key", KEY)]);
    assert_eq!((r.status, r.text().as_str()), (200, r#"{"error":{"code":107,"message":"bad request"}}"#));
    let r = s.post("/api/info", b"null", &[("X-API-Key", KEY)]);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["result"]["nodes"].as_array().map(Vec::len), Some(1));
}

#[test]
fn publish_b64data() {
    let s = Server::start(config());
    // base64 of {"a":1}
    let r = s.api("publish", json!({"channel": "hist:b", "b64data": "eyJhIjoxfQ=="}));
    let epoch = epoch_of(&r);
    assert_eq!(r, json!({"result": {"offset": 1, "epoch": epoch}}));
    // b64data wins over data when both are set.
    let r = s.api("publish", json!({"channel": "hist:b", "data": {"ignored": true}, "b64data": "WzEsMl0="}));
    assert_eq!(r["result"]["offset"], 2);
    // Centrifugo keeps the decoded bytes as the publication data and returns them raw
    // (`apiproto.Publication.data` is a Raw JSON field): history shows the JSON that was
    // base64-encoded.
    let h = s.api("history", json!({"channel": "hist:b", "limit": -1}));
    assert_eq!(
        h,
        json!({"result": {"publications": [{"data": {"a": 1}, "offset": 1}, {"data": [1, 2], "offset": 2}], "epoch": epoch, "offset": 2}})
    );
}

#[test]
fn empty_body_is_400() {
    let s = Server::start(config());
    for m in ["info", "publish", "history", "batch", "channels"] {
        let r = s.post(&format!("/api/{m}"), b"", &[("X-API-Key", KEY)]);
        assert_eq!(r.status, 400, "{m}");
        assert_eq!(r.text().trim_end(), "Bad Request", "{m}");
    }
    // `{}` is fine for info.
    assert_eq!(s.api("info", json!({}))["result"]["nodes"].as_array().map(Vec::len), Some(1));
}

#[test]
fn broadcast_responses_in_order() {
    let s = Server::start(config());
    let r = s.api("broadcast", json!({"channels": ["hist:x", "nohist:y", "nope:z", "hist:x", ""], "data": {"b": 1}}));
    let responses = r["result"]["responses"].as_array().unwrap_or_else(|| panic!("{r}"));
    assert_eq!(responses.len(), 5, "{r}");
    let epoch = responses[0]["result"]["epoch"].as_str().unwrap().to_string();
    // The two publishes into hist:x run concurrently: each gets one of offsets 1 and 2.
    let (a, b) = (responses[0]["result"]["offset"].clone(), responses[3]["result"]["offset"].clone());
    assert!((a == 1 && b == 2) || (a == 2 && b == 1), "{r}");
    assert_eq!(
        r,
        json!({"result": {"responses": [
            {"result": {"offset": a, "epoch": epoch}},
            {"result": {}},
            api_error(102),
            {"result": {"offset": b, "epoch": epoch}},
            api_error(107),
        ]}})
    );
    assert_eq!(s.api("broadcast", json!({"channels": [], "data": 1})), api_error(107));
    assert_eq!(s.api("broadcast", json!({"data": 1})), api_error(107));
    let h = s.api("history", json!({"channel": "hist:x", "limit": -1}));
    assert_eq!(h["result"]["publications"], json!([{"data": {"b": 1}, "offset": 1}, {"data": {"b": 1}, "offset": 2}]));
}

/// Publishes `n` publications `{"n":i}` to `channel`; returns the epoch.
fn fill(s: &Server, channel: &str, n: u64) -> String {
    let mut epoch = String::new();
    for i in 1..=n {
        let r = s.api("publish", json!({"channel": channel, "data": {"n": i}}));
        assert_eq!(r["result"]["offset"], i, "{r}");
        epoch = epoch_of(&r);
    }
    epoch
}

fn pubs(offsets: &[u64]) -> Value {
    Value::Array(offsets.iter().map(|&o| json!({"data": {"n": o}, "offset": o})).collect())
}

#[test]
fn history_limits_since_reverse() {
    let s = Server::start(config());
    let epoch = fill(&s, "hist:h", 5);
    let hist = |req: Value| s.api("history", req);
    let res = |offsets: &[u64]| json!({"result": {"publications": pubs(offsets), "epoch": epoch, "offset": 5}});

    assert_eq!(hist(json!({"channel": "hist:h"})), res(&[]), "no limit: only the position");
    assert_eq!(hist(json!({"channel": "hist:h", "limit": 0})), res(&[]), "limit 0");
    assert_eq!(hist(json!({"channel": "hist:h", "limit": -1})), res(&[1, 2, 3, 4, 5]), "limit -1");
    assert_eq!(hist(json!({"channel": "hist:h", "limit": 2})), res(&[1, 2]), "limit 2");
    assert_eq!(hist(json!({"channel": "hist:h", "limit": 2, "reverse": true})), res(&[5, 4]), "reverse limit 2");
    assert_eq!(
        hist(json!({"channel": "hist:h", "limit": -1, "since": {"offset": 2, "epoch": epoch}})),
        res(&[3, 4, 5]),
        "since 2"
    );
    assert_eq!(
        hist(json!({"channel": "hist:h", "limit": 1, "since": {"offset": 2, "epoch": epoch}})),
        res(&[3]),
        "since 2 limit 1"
    );
    assert_eq!(
        hist(json!({"channel": "hist:h", "limit": -1, "since": {"offset": 4, "epoch": epoch}, "reverse": true})),
        res(&[3, 2, 1]),
        "since 4 reverse"
    );
    assert_eq!(
        hist(json!({"channel": "hist:h", "limit": -1, "since": {"offset": 5}})),
        res(&[]),
        "since top, no epoch"
    );
    assert_eq!(
        hist(json!({"channel": "hist:h", "limit": -1, "since": {"offset": 1, "epoch": "other"}})),
        api_error(112),
        "epoch mismatch"
    );
    assert_eq!(
        hist(json!({"channel": "hist:h", "limit": -1, "since": {"offset": 0, "epoch": epoch}, "reverse": true})),
        api_error(107),
        "reverse since 0"
    );
    assert_eq!(hist(json!({"channel": "nohist:h", "limit": -1})), api_error(108), "history disabled");
    assert_eq!(hist(json!({"channel": "nope:h"})), api_error(102), "unknown namespace");
    assert_eq!(hist(json!({"limit": 1})), api_error(107), "missing channel");
    // Reading history of a channel never published to creates its position.
    let r = hist(json!({"channel": "hist:fresh", "limit": -1}));
    assert_eq!(r["result"]["publications"], json!([]));
    assert_eq!(r["result"]["offset"], 0);
    assert!(r["result"]["epoch"].is_string(), "{r}");
}

#[test]
fn history_size_is_bounded() {
    let s = Server::start(config());
    // Default namespace keeps 10.
    let epoch = fill(&s, "bounded", 13);
    assert_eq!(
        s.api("history", json!({"channel": "bounded", "limit": -1})),
        json!({"result": {"publications": pubs(&[4, 5, 6, 7, 8, 9, 10, 11, 12, 13]), "epoch": epoch, "offset": 13}})
    );
}

#[test]
fn history_remove_keeps_position() {
    let s = Server::start(config());
    let epoch = fill(&s, "hist:r", 3);
    assert_eq!(s.api("history_remove", json!({"channel": "hist:r"})), json!({"result": {}}));
    assert_eq!(
        s.api("history", json!({"channel": "hist:r", "limit": -1})),
        json!({"result": {"publications": [], "epoch": epoch, "offset": 3}})
    );
    let r = s.api("publish", json!({"channel": "hist:r", "data": 1}));
    assert_eq!(r, json!({"result": {"offset": 4, "epoch": epoch}}));
    assert_eq!(s.api("history_remove", json!({"channel": "nohist:r"})), api_error(108));
    assert_eq!(s.api("history_remove", json!({"channel": "nope:r"})), api_error(102));
    assert_eq!(s.api("history_remove", json!({})), api_error(107));
}

#[test]
fn presence_and_presence_stats() {
    let s = Server::start(config());
    let r = s.post("/api/presence", br#"{"channel":"hist:p"}"#, &[("X-API-Key", KEY)]);
    assert_eq!(r.text(), r#"{"result":{"presence":{}}}"#);
    let r = s.post("/api/presence_stats", br#"{"channel":"hist:p"}"#, &[("X-API-Key", KEY)]);
    assert_eq!(r.text(), r#"{"result":{"num_clients":0,"num_users":0}}"#);
    assert_eq!(s.api("presence", json!({"channel": "plain"})), json!({"result": {"presence": {}}}));
    assert_eq!(s.api("presence", json!({"channel": "nohist:p"})), api_error(108));
    assert_eq!(s.api("presence_stats", json!({"channel": "nohist:p"})), api_error(108));
    assert_eq!(s.api("presence", json!({"channel": "nope:p"})), api_error(102));
    assert_eq!(s.api("presence_stats", json!({"channel": "nope:p"})), api_error(102));
    assert_eq!(s.api("presence", json!({})), api_error(107));
    assert_eq!(s.api("presence_stats", json!({})), api_error(107));
}

#[test]
fn channels_list() {
    let s = Server::start(config());
    s.api("publish", json!({"channel": "chat:x", "data": 1}));
    let r = s.post("/api/channels", b"{}", &[("X-API-Key", KEY)]);
    assert_eq!(r.text(), r#"{"result":{"channels":{}}}"#);
    assert_eq!(s.api("channels", json!({"pattern": "chat:*"})), json!({"result": {"channels": {}}}));
    assert_eq!(s.api("channels", json!({"pattern": "["})), api_error(100), "invalid glob");
}

#[test]
fn info_describes_one_node() {
    let s = Server::start(config());
    let r = s.api("info", json!({}));
    let nodes = r["result"]["nodes"].as_array().unwrap_or_else(|| panic!("{r}"));
    assert_eq!(nodes.len(), 1, "{r}");
    let n = nodes[0].as_object().unwrap();
    let uid = n["uid"].as_str().unwrap();
    assert_eq!(uid.len(), 36, "uid is a UUID: {uid}");
    assert_eq!(uid.matches('-').count(), 4, "uid is a UUID: {uid}");
    let name = n["name"].as_str().unwrap();
    assert!(name.ends_with(&format!("_{}", s.port)), "name is <host>_<port>: {name}");
    assert!(n["version"].as_str().unwrap().ends_with(" OSS"), "{r}");
    for k in ["num_clients", "num_users", "num_channels", "num_subs"] {
        assert_eq!(n[k], 0, "{k} in {r}");
    }
    for k in n.keys() {
        assert!(
            ["uid", "name", "version", "num_clients", "num_users", "num_channels", "num_subs", "uptime", "metrics"]
                .contains(&k.as_str()),
            "unexpected node field {k} in {r}"
        );
    }
    if let Some(u) = n.get("uptime") {
        assert!(u.as_u64().is_some_and(|u| u > 0), "uptime is omitted when 0: {r}");
    }
    // Same node on every call.
    assert_eq!(s.api("info", json!({}))["result"]["nodes"][0]["uid"], uid);
}

#[test]
fn connection_commands_without_connections() {
    let s = Server::start(config());
    let empty = json!({"result": {}});
    assert_eq!(s.api("subscribe", json!({"channel": "hist:s", "user": "42"})), empty);
    assert_eq!(
        s.api(
            "subscribe",
            json!({"channel": "plain", "user": "42", "client": "c", "session": "s", "info": {"a": 1}, "data": [1],
                   "recover_since": {"offset": 1, "epoch": "e"}, "override": {"presence": {"value": true}}})
        ),
        empty
    );
    assert_eq!(s.api("subscribe", json!({"channel": "nope:s", "user": "42"})), api_error(102));
    assert_eq!(s.api("subscribe", json!({"user": "42"})), api_error(107));
    assert_eq!(s.api("unsubscribe", json!({"channel": "hist:s", "user": "42"})), empty);
    assert_eq!(s.api("unsubscribe", json!({"user": "42"})), empty);
    assert_eq!(s.api("unsubscribe", json!({"channel": "nope:s", "user": "42"})), api_error(102));
    assert_eq!(s.api("disconnect", json!({"user": "42"})), empty);
    assert_eq!(
        s.api("disconnect", json!({"user": "42", "disconnect": {"code": 4000, "reason": "bye"}, "whitelist": ["x"]})),
        empty
    );
    assert_eq!(s.api("refresh", json!({"user": "42", "expire_at": 2000000000})), empty);
    assert_eq!(s.api("refresh", json!({"user": "42", "expired": true})), empty);
}

#[test]
fn rpc_is_not_found() {
    let s = Server::start(config());
    assert_eq!(s.api("rpc", json!({"method": "anything", "params": {"x": 1}})), api_error(104));
    assert_eq!(s.api("rpc", json!({"params": {}})), api_error(107), "rpc without method");
}

#[test]
fn batch_sequential_and_parallel() {
    let s = Server::start(config());
    for parallel in [false, true] {
        let ch = if parallel { "hist:bp" } else { "hist:bs" };
        let body = json!({"commands": [
            {"publish": {"channel": ch, "data": 1}},
            {"publish": {"channel": "nope:x", "data": 1}},
            {"publish": {"channel": ch, "data": 2}},
            {"history": {"channel": "nohist:x"}},
            {"bogus": {}},
            null,
            {"presence_stats": {"channel": ch}},
            {"publish": {"channel": "nohist:x", "data": 3}},
            {"info": {}},
        ], "parallel": parallel});
        let r = s.post("/api/batch", body.to_string().as_bytes(), &[("X-API-Key", KEY)]);
        assert_eq!(r.status, 200);
        let v = r.json();
        let replies = v["replies"].as_array().unwrap_or_else(|| panic!("batch response is {{\"replies\":[..]}}: {v}"));
        assert_eq!(replies.len(), 9, "{v}");
        let epoch = replies[0]["publish"]["epoch"].as_str().unwrap_or_else(|| panic!("{v}")).to_string();
        let mut expected = json!({"replies": [
            {"publish": {"offset": 1, "epoch": epoch}},
            api_error(102),
            {"publish": {"offset": 2, "epoch": epoch}},
            api_error(108),
            api_error(104),
            api_error(107),
            {"presence_stats": {"num_clients": 0, "num_users": 0}},
            {"publish": {}},
            {"info": replies[8]["info"].clone()},
        ]});
        if parallel {
            // Publishes into one channel may run in any order; each gets one of the offsets.
            let (a, b) = (&replies[0]["publish"]["offset"], &replies[2]["publish"]["offset"]);
            assert!((a == 1 && b == 2) || (a == 2 && b == 1), "{v}");
            expected["replies"][0]["publish"]["offset"] = a.clone();
            expected["replies"][2]["publish"]["offset"] = b.clone();
        }
        assert_eq!(v, expected, "parallel={parallel}");
        assert_eq!(replies[8]["info"]["nodes"].as_array().map(Vec::len), Some(1), "{v}");
    }
    // Exact bytes of a small batch.
    let r = s.post(
        "/api/batch",
        br#"{"commands":[{"publish":{"channel":"nohist:e","data":1}},{"publish":{"channel":"nope:e","data":1}}]}"#,
        &[("X-API-Key", KEY)],
    );
    assert_eq!(r.text(), r#"{"replies":[{"publish":{}},{"error":{"code":102,"message":"unknown channel"}}]}"#);
    assert_eq!(s.api("batch", json!({"commands": []})), json!({"replies": []}));
}

/// A sequential batch over channels of every worker: the commands of each channel run in the
/// batch's order (offsets count up, a history read sees exactly the publications before it),
/// and a command of another kind (broadcast) sees everything before it and is seen by what
/// follows. Run twice: publishes only (the hand-written reader), then mixed commands.
#[test]
fn batch_keeps_each_channels_order_across_workers() {
    let s = Server::start(config_with(json!({"workers": 4})));
    let run = |commands: Vec<Value>| -> Vec<Value> {
        let body = json!({"commands": commands}).to_string();
        let v = s.post("/api/batch", body.as_bytes(), &[("X-API-Key", KEY)]).json();
        v["replies"].as_array().unwrap_or_else(|| panic!("{v}")).clone()
    };
    let chans: Vec<String> = (0..24).map(|i| format!("hist:order{i}")).collect();
    let publish = |ch: &str, v: Value| json!({"publish": {"channel": ch, "data": v}});
    let offset = |r: &Value| r["publish"]["offset"].as_i64().unwrap_or_else(|| panic!("{r}"));

    let mut cmds = Vec::new();
    for round in 0..5 {
        cmds.extend(chans.iter().map(|ch| publish(ch, json!({"r": round}))));
    }
    let replies = run(cmds);
    assert_eq!(replies.len(), 5 * chans.len());
    for (i, r) in replies.iter().enumerate() {
        assert_eq!(offset(r), (i / chans.len()) as i64 + 1, "command {i}: {r}");
    }

    let mut cmds = Vec::new();
    for round in 5..7 {
        cmds.extend(chans.iter().map(|ch| publish(ch, json!({"r": round}))));
    }
    cmds.extend(chans.iter().map(|ch| json!({"history": {"channel": ch, "limit": -1}})));
    cmds.push(json!({"broadcast": {"channels": chans, "data": {"b": 1}}}));
    cmds.extend(chans.iter().map(|ch| json!({"history": {"channel": ch, "limit": -1}})));
    cmds.extend(chans.iter().map(|ch| publish(ch, json!({"r": 7}))));
    let replies = run(cmds);
    let n = chans.len();
    assert_eq!(replies.len(), 5 * n + 1);
    let data = |h: &Value| -> Vec<Value> {
        h["history"]["publications"]
            .as_array()
            .unwrap_or_else(|| panic!("{h}"))
            .iter()
            .map(|p| p["data"].clone())
            .collect()
    };
    let rounds = |k: i64| -> Vec<Value> { (0..k).map(|r| json!({"r": r})).collect() };
    for c in 0..n {
        assert_eq!(offset(&replies[c]), 6);
        assert_eq!(offset(&replies[n + c]), 7);
        assert_eq!(data(&replies[2 * n + c]), rounds(7), "history before the broadcast, channel {c}");
        let mut with_broadcast = rounds(7);
        with_broadcast.push(json!({"b": 1}));
        assert_eq!(data(&replies[3 * n + 1 + c]), with_broadcast, "history after the broadcast, channel {c}");
        assert_eq!(offset(&replies[4 * n + 1 + c]), 9);
    }
    let b = replies[3 * n]["broadcast"]["responses"].as_array().unwrap_or_else(|| panic!("{}", replies[3 * n]));
    assert!(b.iter().all(|r| r["result"]["offset"] == 8), "{b:?}");
}

#[test]
fn idempotency_key_deduplicates() {
    let s = Server::start(config());
    let req = json!({"channel": "hist:i", "data": {"v": 1}, "idempotency_key": "k1"});
    let first = s.api("publish", req.clone());
    let second = s.api("publish", req);
    assert_eq!(first["result"]["offset"], 1);
    assert_eq!(first, second);
    let h = s.api("history", json!({"channel": "hist:i", "limit": -1}));
    assert_eq!(h["result"]["publications"], json!([{"data": {"v": 1}, "offset": 1}]), "{h}");
    // Another key publishes again.
    let third = s.api("publish", json!({"channel": "hist:i", "data": {"v": 2}, "idempotency_key": "k2"}));
    assert_eq!(third["result"]["offset"], 2);
    // Same key in another channel is independent.
    let other = s.api("publish", json!({"channel": "hist:j", "data": {"v": 1}, "idempotency_key": "k1"}));
    assert_eq!(other["result"]["offset"], 1);
}

#[test]
fn tags_appear_in_history() {
    let s = Server::start(config());
    s.api("publish", json!({"channel": "hist:t", "data": {"x": 1}, "tags": {"a": "1", "b": "two"}}));
    s.api("publish", json!({"channel": "hist:t", "data": {"x": 2}}));
    let h = s.api("history", json!({"channel": "hist:t", "limit": -1}));
    assert_eq!(
        h["result"]["publications"],
        json!([{"data": {"x": 1}, "offset": 1, "tags": {"a": "1", "b": "two"}}, {"data": {"x": 2}, "offset": 2}]),
        "{h}"
    );
}

#[test]
fn data_is_kept_byte_for_byte() {
    let s = Server::start(config());
    let data = r#"{ "b" : [1, 2.50, "\u00e9"],"a":null }"#;
    let body = format!(r#"{{"channel":"hist:raw","data":{data}}}"#);
    assert_eq!(s.post("/api/publish", body.as_bytes(), &[("X-API-Key", KEY)]).status, 200);
    let r = s.post("/api/history", br#"{"channel":"hist:raw","limit":-1}"#, &[("X-API-Key", KEY)]);
    assert!(r.text().contains(&format!(r#""data":{data}"#)), "payload not byte-for-byte: {}", r.text());
}

#[test]
fn routing_errors() {
    let s = Server::start(config());
    let r = s.post("/api/nope", b"{}", &[("X-API-Key", KEY)]);
    assert_eq!(r.status, 404);
    let r = s.post("/api/Publish", br#"{"channel":"a","data":1}"#, &[("X-API-Key", KEY)]);
    assert_eq!(r.status, 404, "method routes are case-sensitive");
    let r = s.request("GET", "/api/publish", &[("X-API-Key", KEY)]);
    assert_eq!(r.status, 405);
    assert!(r.body.is_empty(), "405 has an empty body: {:?}", r.text());
    let r = s.request("GET", "/api", &[("X-API-Key", KEY)]);
    assert_eq!(r.status, 405);
    let r = s.request("PUT", "/api/info", &[("X-API-Key", KEY)]);
    assert_eq!(r.status, 405);
}

#[test]
fn transport_error_mode_header() {
    let s = Server::start(config());
    let h = [("X-API-Key", KEY), ("X-Centrifugo-Error-Mode", "transport")];
    let cases: [(&str, &str, u16, u32); 6] = [
        ("publish", r#"{"channel":"nope:a","data":1}"#, 404, 102),
        ("publish", r#"{"data":1}"#, 400, 107),
        ("history", r#"{"channel":"nohist:a"}"#, 400, 108),
        ("rpc", r#"{"method":"m"}"#, 404, 104),
        ("presence", r#"{"channel":"nohist:a"}"#, 400, 108),
        ("history", r#"{"channel":"hist:a","since":{"offset":1,"epoch":"x"},"limit":-1}"#, 416, 112),
    ];
    for (method, body, status, code) in cases {
        let r = s.post(&format!("/api/{method}"), body.as_bytes(), &h);
        assert_eq!(r.status, status, "{method} {body}: {}", r.text());
        assert_eq!(r.header("content-type"), Some("application/json"));
        assert_eq!(r.json(), error_obj(code), "{method} {body}");
    }
    let r = s.post("/api/publish", br#"{"channel":"nope:a","data":1}"#, &h);
    assert_eq!(r.text(), r#"{"code":102,"message":"unknown channel"}"#);
    // Success is unchanged.
    let r = s.post("/api/publish", br#"{"channel":"nohist:a","data":1}"#, &h);
    assert_eq!((r.status, r.text().as_str()), (200, r#"{"result":{}}"#));
    // Broadcast: the per-channel errors stay in the 200 body.
    let r = s.post("/api/broadcast", br#"{"channels":["nope:a"],"data":1}"#, &h);
    assert_eq!(r.status, 200);
    assert_eq!(r.json(), json!({"result": {"responses": [api_error(102)]}}));
    // Batch never maps errors.
    let r = s.post("/api/batch", br#"{"commands":[{"publish":{"channel":"nope:a","data":1}}]}"#, &h);
    assert_eq!(r.status, 200);
    assert_eq!(r.json(), json!({"replies": [api_error(102)]}));
}

#[test]
fn transport_error_mode_config() {
    let s = Server::start(config_with(json!({"http_api": {"error_mode": "transport"}})));
    let r = s.post("/api/publish", br#"{"channel":"nope:a","data":1}"#, &[("X-API-Key", KEY)]);
    assert_eq!(r.status, 404);
    assert_eq!(r.json(), error_obj(102));
    let r = s.post("/api/publish", br#"{"channel":"hist:a","data":1}"#, &[("X-API-Key", KEY)]);
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["result"]["offset"], 1);
}
