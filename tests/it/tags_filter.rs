//! Tags filters (`tf` in a subscribe request, allowed per namespace by `allow_tags_filter`) and
//! `client.connect_include_server_time`, over raw WebSocket clients (JSON and protobuf) and both
//! SDKs (centrifuge-js's `tagsFilter`, centrifuge-python's `tags_filter`). The engine is the
//! suite's (memory, or Redis when `GYRE_TEST_REDIS` is set).
//!
//! What is checked: a subscriber gets exactly the publications whose tags its filter accepts,
//! live and when recovering; subscribers without a filter get everything; join/leave are not
//! filtered; a filter on a channel that does not allow one, or a malformed one, is refused with
//! 107 and leaves the connection usable.

use std::net::TcpStream;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use prost::Message as _;
use serde_json::{json, Value};

use crate::util::*;
use crate::ws_client::*;

/// * `tf`    — tags filters allowed; history 100 with recovery; presence, join/leave pushed.
/// * `plain` — no tags filters.
fn tf_config(patch: Value) -> Value {
    let mut cfg = json!({
        "http_api": {"key": KEY},
        "client": {"insecure": true},
        "channel": {
            "namespaces": [
                {"name": "tf", "allow_tags_filter": true, "history_size": 100, "history_ttl": "300s",
                 "force_recovery": true, "presence": true, "join_leave": true, "force_push_join_leave": true},
                {"name": "plain"}
            ]
        },
        "workers": 2
    });
    merge(&mut cfg, patch);
    cfg
}

fn publish(s: &Server, channel: &str, n: i64, tags: Value) {
    let r = s.api("publish", json!({"channel": channel, "data": {"n": n}, "tags": tags}));
    assert!(r.get("error").is_none(), "API publish to {channel}: {r}");
}

/// The publications of this test: `n` 1 to 5 with their tags.
fn publish_all(s: &Server, channel: &str) {
    publish(s, channel, 1, json!({"team": "eng"}));
    publish(s, channel, 2, json!({"team": "ops", "prio": "7"}));
    publish(s, channel, 3, json!({"team": "ops", "prio": "3"}));
    publish(s, channel, 4, json!({}));
    publish(s, channel, 5, json!({"team": "eng-web", "prio": "10.5"}));
}

/// `team == eng` or `prio >= 5`: publications 1, 2 and 5.
fn eng_or_urgent() -> Value {
    json!({"op": "or", "nodes": [
        {"key": "team", "cmp": "eq", "val": "eng"},
        {"key": "prio", "cmp": "gte", "val": "5"}
    ]})
}

/// A raw JSON client of the Centrifuge protocol.
struct Client {
    ws: Ws,
    next: u32,
    pushes: Vec<Value>,
}

impl Client {
    fn connect(s: &Server) -> (Client, Value) {
        let ws = Ws::open(s.addr());
        ws.s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut c = Client { ws, next: 0, pushes: Vec::new() };
        let r = c.call(json!({"connect": {}}));
        assert!(r["connect"]["client"].is_string(), "{r}");
        (c, r)
    }

    fn call(&mut self, mut cmd: Value) -> Value {
        self.next += 1;
        let id = self.next;
        cmd["id"] = json!(id);
        self.ws.send_json(&cmd);
        loop {
            let f = self.ws.frame().unwrap_or_else(|e| panic!("waiting for the reply to {cmd}: {e}"));
            assert_ne!(f.op, CLOSE, "closed while waiting for the reply to {cmd}: {f:?}");
            let mut reply = None;
            for v in json_lines(&f.payload) {
                if v["id"] == id {
                    reply = Some(v);
                } else if v.get("push").is_some() {
                    self.pushes.push(v["push"].clone());
                }
            }
            if let Some(r) = reply {
                return r;
            }
        }
    }

    /// Reads pushes until one matches `until`; returns the publication `n`s seen on `channel`
    /// (that one included when it is a publication).
    fn pubs_until(&mut self, channel: &str, until: impl Fn(&Value) -> bool) -> Vec<i64> {
        let mut seen: Vec<Value> = std::mem::take(&mut self.pushes);
        while !seen.iter().any(&until) {
            let f = self.ws.frame().unwrap_or_else(|e| panic!("waiting for pushes on {channel}: {e}"));
            assert_ne!(f.op, CLOSE, "closed: {f:?}");
            seen.extend(json_lines(&f.payload).into_iter().filter_map(|v| v.get("push").cloned()));
        }
        seen.iter()
            .filter(|p| p["channel"] == channel && p.get("pub").is_some())
            .map(|p| p["pub"]["data"]["n"].as_i64().unwrap())
            .collect()
    }
}

fn is_pub(n: i64) -> impl Fn(&Value) -> bool {
    move |p| p["pub"]["data"]["n"] == n
}

#[test]
fn raw_json_filters_live_and_recovered_publications() {
    let s = Server::start(tf_config(json!({})));
    let ch = "tf:room";
    let (mut a, _) = Client::connect(&s);
    let (mut b, _) = Client::connect(&s);
    let (mut c, _) = Client::connect(&s);
    let r = a.call(json!({"subscribe": {"channel": ch, "tf": eng_or_urgent()}}));
    assert!(r.get("error").is_none(), "{r}");
    let r = b.call(json!({"subscribe": {"channel": ch}}));
    assert!(r.get("error").is_none(), "{r}");
    // `team` absent: only publication 4; its own `nex` leaf takes no key's value.
    let r = c.call(json!({"subscribe": {"channel": ch, "tf": {"key": "team", "cmp": "nex"}}}));
    assert!(r.get("error").is_none(), "{r}");
    publish_all(&s, ch);

    // Every subscriber sees publication 5 last: what it got before that is all it gets.
    let all = b.pubs_until(ch, is_pub(5));
    assert_eq!(all, [1, 2, 3, 4, 5]);
    assert_eq!(a.pubs_until(ch, is_pub(5)), [1, 2, 5]);
    publish(&s, ch, 6, json!({"team": "eng"}));
    publish(&s, ch, 7, json!({}));
    assert_eq!(c.pubs_until(ch, is_pub(7)), [4, 7]);
    assert_eq!(a.pubs_until(ch, is_pub(6)), [6]);
    // The publication pushes carry their tags.
    let (mut d, _) = Client::connect(&s);
    d.call(json!({"subscribe": {"channel": ch, "tf": {"key": "team", "cmp": "sw", "val": "eng-"}}}));
    publish(&s, ch, 8, json!({"team": "eng-web"}));
    publish(&s, ch, 9, json!({"team": "eng"}));
    publish(&s, ch, 10, json!({"team": "eng-db"}));
    let mut got = Vec::new();
    while got.len() < 2 {
        let f = d.ws.frame().unwrap();
        got.extend(
            json_lines(&f.payload)
                .into_iter()
                .filter_map(|v| v.get("push").cloned())
                .filter(|p| p.get("pub").is_some()),
        );
    }
    assert_eq!(got[0]["pub"]["tags"], json!({"team": "eng-web"}), "{got:?}");
    assert_eq!(got[1]["pub"]["data"]["n"], 10, "{got:?}");

    // Join/leave are not filtered: `a` sees `d` leave.
    d.call(json!({"unsubscribe": {"channel": ch}}));
    let left = |p: &Value| p["channel"] == ch && p.get("leave").is_some();
    a.pubs_until(ch, left);

    // Recovery from the start: only the publications the filter passes (1, 2, 5, 6, 9).
    let (mut e, _) = Client::connect(&s);
    let r =
        e.call(json!({"subscribe": {"channel": ch, "recover": true, "offset": 0, "epoch": "", "tf": eng_or_urgent()}}));
    let res = &r["subscribe"];
    assert_eq!(res["recovered"], true, "{r}");
    let recovered: Vec<i64> =
        res["publications"].as_array().unwrap().iter().map(|p| p["data"]["n"].as_i64().unwrap()).collect();
    assert_eq!(recovered, [1, 2, 5, 6, 9], "{r}");
    let offsets: Vec<i64> =
        res["publications"].as_array().unwrap().iter().map(|p| p["offset"].as_i64().unwrap()).collect();
    assert_eq!(offsets, [1, 2, 5, 6, 9]);
    // A live publication after recovery still goes through the filter.
    publish(&s, ch, 11, json!({"team": "ops"}));
    publish(&s, ch, 12, json!({"prio": "99"}));
    assert_eq!(e.pubs_until(ch, is_pub(12)), [12]);
}

#[test]
fn raw_json_refused_filters() {
    let s = Server::start(tf_config(json!({})));
    let (mut a, _) = Client::connect(&s);
    let bad_request = json!({"code": 107, "message": "bad request"});
    // The channel does not allow tags filters.
    let r = a.call(json!({"subscribe": {"channel": "plain:x", "tf": {"key": "a", "cmp": "eq", "val": "1"}}}));
    assert_eq!(r["error"], bad_request, "{r}");
    let malformed = [
        json!({}),
        json!({"key": "a", "cmp": "eq"}),
        json!({"key": "a", "cmp": "like", "val": "x"}),
        json!({"cmp": "eq", "val": "x"}),
        json!({"key": "a", "cmp": "in", "vals": []}),
        json!({"key": "a", "cmp": "in", "val": "x", "vals": ["x"]}),
        json!({"key": "a", "cmp": "ex", "val": "x"}),
        json!({"op": "and", "nodes": []}),
        json!({"op": "not", "nodes": [{"key": "a", "cmp": "ex"}, {"key": "b", "cmp": "ex"}]}),
        json!({"op": "xor", "nodes": [{"key": "a", "cmp": "ex"}]}),
        json!({"op": "or", "nodes": [{"key": "a", "cmp": "ex"}, null]}),
    ];
    for tf in malformed {
        let r = a.call(json!({"subscribe": {"channel": "tf:x", "tf": tf}}));
        assert_eq!(r["error"], bad_request, "tf {tf}: {r}");
    }
    // Nothing was left subscribed: the same channel subscribes now, and the connection works.
    let r = a.call(json!({"subscribe": {"channel": "tf:x", "tf": {"key": "a", "cmp": "ex"}}}));
    assert!(r.get("error").is_none(), "{r}");
    let r = a.call(json!({"subscribe": {"channel": "plain:x"}}));
    assert!(r.get("error").is_none(), "{r}");
    s.api("publish", json!({"channel": "tf:x", "data": {"n": 1}, "tags": {"a": ""}}));
    assert_eq!(a.pubs_until("tf:x", is_pub(1)), [1]);
    // JSON nested past the decoder's depth limit is a bad frame, like any such command: 3501.
    let (mut b, _) = Client::connect(&s);
    let mut deep = json!({"key": "a", "cmp": "ex"});
    for _ in 0..70 {
        deep = json!({"op": "not", "nodes": [deep]});
    }
    b.ws.send_json(&json!({"id": 9, "subscribe": {"channel": "tf:x", "tf": deep}}));
    assert_eq!(b.ws.expect_close(Duration::from_secs(10)).0, 3501);
}

fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as i64
}

#[test]
fn connect_result_carries_server_time_when_configured() {
    let s = Server::start(tf_config(json!({})));
    let (_, r) = Client::connect(&s);
    assert!(r["connect"].get("time").is_none(), "off by default: {r}");
    let s = Server::start(tf_config(json!({"client": {"connect_include_server_time": true}})));
    let before = now_ms();
    let (_, r) = Client::connect(&s);
    let after = now_ms();
    let t = r["connect"]["time"].as_i64().unwrap_or_else(|| panic!("no time: {r}"));
    assert!(before - 5 <= t && t <= after + 5, "{before} <= {t} <= {after}");
}

/// The few messages of `client.proto` this test writes and reads (field numbers as upstream).
mod pb {
    use std::collections::BTreeMap;

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Command {
        #[prost(uint32, tag = "1")]
        pub id: u32,
        #[prost(message, optional, tag = "4")]
        pub connect: Option<Empty>,
        #[prost(message, optional, tag = "5")]
        pub subscribe: Option<SubscribeRequest>,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Empty {}
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct SubscribeRequest {
        #[prost(string, tag = "1")]
        pub channel: String,
        #[prost(message, optional, tag = "13")]
        pub tf: Option<FilterNode>,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct FilterNode {
        #[prost(string, tag = "1")]
        pub op: String,
        #[prost(string, tag = "2")]
        pub key: String,
        #[prost(string, tag = "3")]
        pub cmp: String,
        #[prost(string, tag = "4")]
        pub val: String,
        #[prost(string, repeated, tag = "5")]
        pub vals: Vec<String>,
        #[prost(message, repeated, tag = "6")]
        pub nodes: Vec<FilterNode>,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Reply {
        #[prost(uint32, tag = "1")]
        pub id: u32,
        #[prost(message, optional, tag = "2")]
        pub error: Option<Error>,
        #[prost(message, optional, tag = "4")]
        pub push: Option<Push>,
        #[prost(message, optional, tag = "5")]
        pub connect: Option<ConnectResult>,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Error {
        #[prost(uint32, tag = "1")]
        pub code: u32,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ConnectResult {
        #[prost(string, tag = "1")]
        pub client: String,
        #[prost(int64, tag = "11")]
        pub time: i64,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Push {
        #[prost(string, tag = "2")]
        pub channel: String,
        #[prost(message, optional, tag = "4")]
        pub publication: Option<Publication>,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Publication {
        #[prost(bytes = "vec", tag = "4")]
        pub data: Vec<u8>,
        #[prost(uint64, tag = "6")]
        pub offset: u64,
        #[prost(btree_map = "string, string", tag = "7")]
        pub tags: BTreeMap<String, String>,
    }
}

/// A raw protobuf client.
struct PbClient {
    ws: Ws,
    replies: Vec<pb::Reply>,
}

impl PbClient {
    fn open(s: &Server) -> PbClient {
        let sock = TcpStream::connect(s.addr()).unwrap();
        let ws = Ws::upgrade(sock, &format!("{WS_PATH}?format=protobuf"), SAMPLE_KEY, &[]).expect("upgrade");
        ws.s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        PbClient { ws, replies: Vec::new() }
    }

    fn send(&mut self, cmd: pb::Command) {
        let frame = client_frame(true, BINARY, &cmd.encode_length_delimited_to_vec(), true);
        self.ws.send(&frame).unwrap();
    }

    fn next(&mut self) -> pb::Reply {
        while self.replies.is_empty() {
            let f = self.ws.frame().expect("a frame");
            assert_eq!(f.op, BINARY, "{f:?}");
            let mut buf = &f.payload[..];
            while !buf.is_empty() {
                self.replies.push(pb::Reply::decode_length_delimited(&mut buf).unwrap());
            }
        }
        self.replies.remove(0)
    }

    fn reply(&mut self, id: u32) -> pb::Reply {
        loop {
            let r = self.next();
            if r.id == id {
                return r;
            }
        }
    }
}

#[test]
fn raw_protobuf_filter_and_server_time() {
    let s = Server::start(tf_config(json!({"client": {"connect_include_server_time": true}})));
    let ch = "tf:pb";
    let mut c = PbClient::open(&s);
    let before = now_ms();
    c.send(pb::Command { id: 1, connect: Some(pb::Empty {}), ..Default::default() });
    let r = c.reply(1);
    let after = now_ms();
    let t = r.connect.expect("connect result").time;
    assert!(before - 5 <= t && t <= after + 5, "{before} <= {t} <= {after}");
    let leaf = |key: &str, cmp: &str, val: &str| pb::FilterNode {
        key: key.into(),
        cmp: cmp.into(),
        val: val.into(),
        ..Default::default()
    };
    let tf = pb::FilterNode {
        op: "or".into(),
        nodes: vec![leaf("team", "eq", "eng"), leaf("prio", "gte", "5")],
        ..Default::default()
    };
    let sub = |id, channel: &str, tf| pb::Command {
        id,
        subscribe: Some(pb::SubscribeRequest { channel: channel.into(), tf }),
        ..Default::default()
    };
    c.send(sub(2, "plain:pb", Some(tf.clone())));
    assert_eq!(c.reply(2).error.map(|e| e.code), Some(107));
    c.send(sub(3, ch, Some(pb::FilterNode { op: "not".into(), ..Default::default() })));
    assert_eq!(c.reply(3).error.map(|e| e.code), Some(107));
    // Deeper than Gyre's bound (65 levels of `not`): refused the same way.
    let mut deep = leaf("a", "ex", "");
    for _ in 0..64 {
        deep = pb::FilterNode { op: "not".into(), nodes: vec![deep], ..Default::default() };
    }
    c.send(sub(5, ch, Some(deep)));
    assert_eq!(c.reply(5).error.map(|e| e.code), Some(107));
    c.send(sub(4, ch, Some(tf)));
    assert_eq!(c.reply(4).error, None);
    publish_all(&s, ch);
    let mut got = Vec::new();
    while got.last() != Some(&5) {
        let r = c.next();
        let Some(p) = r.push.and_then(|p| p.publication) else { continue };
        let data: Value = serde_json::from_slice(&p.data).unwrap();
        got.push(data["n"].as_i64().unwrap());
        if got.len() == 1 {
            assert_eq!(p.tags.get("team").map(String::as_str), Some("eng"));
        }
    }
    assert_eq!(got, [1, 2, 5]);
}

// ---------------------------------------------------------------------------------------------
// The SDKs: centrifuge-js (`tagsFilter`) and centrifuge-python (`tags_filter`).
// ---------------------------------------------------------------------------------------------

fn sdk_flow(sdk: Sdk, protobuf: bool, test: &str) {
    let s = Server::start(tf_config(json!({})));
    let Some(mut a) = Agent::start(sdk, test) else { return };
    let ch = "tf:sdk";
    a.connect("a", &s, json!({"protobuf": protobuf}));
    a.connect("b", &s, json!({"protobuf": protobuf}));
    a.wait("a connected", ev("a", "connected"));
    a.wait("b connected", ev("b", "connected"));
    a.sub("a", ch, json!({"tagsFilter": eng_or_urgent()}));
    a.sub("b", ch, json!({}));
    a.wait("a subscribed", sev("a", ch, "sub.subscribed"));
    a.wait("b subscribed", sev("b", ch, "sub.subscribed"));
    publish_all(&s, ch);
    a.wait("b got 5", |e| sev("b", ch, "sub.publication")(e) && e["data"]["n"] == 5);
    a.wait("a got 5", |e| sev("a", ch, "sub.publication")(e) && e["data"]["n"] == 5);
    let pubs = |c: &str, log: &[Value]| -> Vec<Value> {
        log.iter().filter(|e| sev(c, ch, "sub.publication")(e)).cloned().collect()
    };
    let got_a = pubs("a", &a.log);
    assert_eq!(ns(&got_a), [1, 2, 5], "{got_a:?}");
    assert_eq!(got_a[1]["tags"], json!({"team": "ops", "prio": "7"}), "{got_a:?}");
    assert_eq!(ns(&pubs("b", &a.log)), [1, 2, 3, 4, 5]);
    // A filter the channel does not allow: the subscription fails with 107.
    if sdk == Sdk::Js {
        a.sub("a", "plain:sdk", json!({"tagsFilter": {"key": "x", "cmp": "ex"}}));
        let e = a.wait("a refused", sev("a", "plain:sdk", "sub.unsubscribed"));
        assert_eq!(e["code"], 107, "{e}");
    }
    a.send(json!({"op": "exit"}));
}

#[test]
fn js_tags_filter_json() {
    sdk_flow(Sdk::Js, false, "js_tags_filter_json");
}

#[test]
fn js_tags_filter_protobuf() {
    sdk_flow(Sdk::Js, true, "js_tags_filter_protobuf");
}

#[test]
fn python_tags_filter_json() {
    sdk_flow(Sdk::Py, false, "python_tags_filter_json");
}

#[test]
fn python_tags_filter_protobuf() {
    sdk_flow(Sdk::Py, true, "python_tags_filter_protobuf");
}
