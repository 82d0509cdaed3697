//! Recovery on subscribe beyond the plain stream case: the subscribe flag "reject
//! unrecovered" (error 112 instead of `recovered: false`, nothing left subscribed) and cache
//! recovery (`force_recovery_mode: "cache"`: the latest publication only; `auto_cache_recover`:
//! without the client asking), on the memory and Redis engines; and the JS SDK's `getState`,
//! which sets the flag and asks for the state again on 112.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::util::*;
use crate::ws_client::*;

/// * `rec`   — stream recovery (history 3), presence and join/leave pushed to everyone.
/// * `cache` — cache recovery.
/// * `auto`  — cache recovery with `auto_cache_recover`.
/// * `plain` — no recovery.
fn recovery_config() -> Value {
    json!({
        "http_api": {"key": KEY},
        "client": {"insecure": true},
        "channel": {
            "namespaces": [
                {"name": "rec", "history_size": 3, "history_ttl": "300s", "force_recovery": true,
                 "presence": true, "join_leave": true, "force_push_join_leave": true},
                {"name": "cache", "history_size": 10, "history_ttl": "300s", "force_recovery": true,
                 "force_recovery_mode": "cache"},
                {"name": "auto", "history_size": 10, "history_ttl": "300s", "force_recovery": true,
                 "force_recovery_mode": "cache", "auto_cache_recover": true},
                {"name": "plain"},
                {"name": "sync", "history_size": 1000, "history_ttl": "300s", "force_recovery": true}
            ]
        },
        "workers": 2
    })
}

/// The same config on a Redis engine of the test's own.
fn on_redis(redis: &RedisServer, prefix: &str) -> Value {
    let mut cfg = recovery_config();
    merge(&mut cfg, json!({"engine": {"type": "redis", "redis": {"address": [redis.url()], "prefix": prefix}}}));
    cfg
}

/// A raw JSON client of the Centrifuge protocol.
struct Client {
    ws: Ws,
    next: u32,
    /// Pushes read while waiting for replies.
    pushes: Vec<Value>,
    /// The client id the server gave it.
    id: String,
}

impl Client {
    fn connect(s: &Server) -> Client {
        let ws = Ws::open(s.addr());
        ws.s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut c = Client { ws, next: 0, pushes: Vec::new(), id: String::new() };
        let r = c.call(json!({"connect": {}}));
        c.id = r["connect"]["client"].as_str().unwrap_or_else(|| panic!("a client id: {r}")).to_string();
        c
    }

    /// Sends one command and returns its reply (pushes read on the way are kept).
    fn call(&mut self, mut cmd: Value) -> Value {
        self.next += 1;
        let id = self.next;
        cmd["id"] = json!(id);
        self.ws.send_json(&cmd);
        loop {
            if let Some(v) = self.read_one(&format!("reply to {cmd}"), |v| v["id"] == id) {
                return v;
            }
        }
    }

    /// Reads one frame: returns the message `want` accepts (others go to `pushes`).
    fn read_one(&mut self, what: &str, want: impl Fn(&Value) -> bool) -> Option<Value> {
        let f = self.ws.frame().unwrap_or_else(|e| panic!("waiting for {what}: {e}"));
        assert_ne!(f.op, CLOSE, "closed while waiting for {what}: {f:?}");
        let mut found = None;
        for v in json_lines(&f.payload) {
            if found.is_none() && want(&v) {
                found = Some(v);
            } else {
                self.pushes.push(v);
            }
        }
        found
    }

    fn subscribe(&mut self, sub: Value) -> Value {
        self.call(json!({ "subscribe": sub }))
    }

    /// Waits for the publication push on `ch` with data `{"n": n}`.
    fn wait_pub(&mut self, ch: &str, n: i64) {
        let is = |v: &Value| v["push"]["channel"] == ch && v["push"]["pub"]["data"]["n"] == n;
        if let Some(i) = self.pushes.iter().position(is) {
            self.pushes.remove(i);
            return;
        }
        while self.read_one(&format!("publication {n} on {ch}"), is).is_none() {}
    }
}

/// Publishes `{"n": n}` for each `n`; returns the epoch.
fn publish(s: &Server, ch: &str, ns: std::ops::RangeInclusive<i64>) -> String {
    let mut epoch = String::new();
    for n in ns {
        let r = s.api("publish", json!({"channel": ch, "data": {"n": n}}));
        assert_eq!(r["result"]["offset"], n, "{r}");
        epoch = r["result"]["epoch"].as_str().unwrap().to_string();
    }
    epoch
}

fn ns_of(pubs: &Value) -> Vec<i64> {
    pubs.as_array().map(|a| a.iter().map(|p| p["data"]["n"].as_i64().unwrap_or(-1)).collect()).unwrap_or_default()
}

fn channels(s: &Server) -> Value {
    s.api("channels", json!({}))["result"]["channels"].clone()
}

/// Flag 2 turns an unrecoverable position into error 112, and the failed subscribe leaves
/// nothing behind: no subscriber count, no presence, no join. Without the flag, or when the
/// position is recoverable, the subscribe succeeds as before.
fn reject_unrecovered(s: &Server) {
    const CH: &str = "rec:a";
    let mut watcher = Client::connect(s);
    let r = watcher.subscribe(json!({"channel": CH}));
    assert!(r.get("error").is_none(), "{r}");
    let epoch = publish(s, CH, 1..=5);
    watcher.wait_pub(CH, 5);
    watcher.pushes.clear();

    let mut c = Client::connect(s);
    let unrecoverable = [
        json!({"channel": CH, "recover": true, "offset": 4, "epoch": "other", "flag": 2}),
        // History keeps 3: publication 2 is gone.
        json!({"channel": CH, "recover": true, "offset": 1, "epoch": epoch, "flag": 3}),
    ];
    for sub in unrecoverable {
        let r = c.subscribe(sub.clone());
        assert_eq!(r["error"], json!({"code": 112, "message": "unrecoverable position"}), "{sub}: {r}");
        let stats = s.api("presence_stats", json!({"channel": CH}));
        assert_eq!(stats["result"], json!({"num_clients": 1, "num_users": 1}), "{sub}: presence");
        assert_eq!(channels(s)[CH]["num_clients"], 1, "{sub}: only the watcher is subscribed");
    }
    // The watcher saw no join (nor leave) of the refused client: the next push is publication 6.
    publish(s, CH, 6..=6);
    watcher.wait_pub(CH, 6);
    assert_eq!(watcher.pushes, Vec::<Value>::new(), "no join or leave for a refused subscribe");

    // Without the flag: subscribed, not recovered, at the top.
    let r = c.subscribe(json!({"channel": CH, "recover": true, "offset": 4, "epoch": "other"}));
    let res = &r["subscribe"];
    assert_eq!(res["was_recovering"], true, "{r}");
    assert!(res.get("recovered").is_none() && res.get("publications").is_none(), "{r}");
    assert_eq!((res["offset"].clone(), res["epoch"].clone()), (json!(6), json!(epoch)), "{r}");
    assert!(c.call(json!({"unsubscribe": {"channel": CH}})).get("error").is_none());

    // A recoverable position with the flag: recovered as usual.
    let r = c.subscribe(json!({"channel": CH, "recover": true, "offset": 4, "epoch": epoch, "flag": 2}));
    assert_eq!(r["subscribe"]["recovered"], true, "{r}");
    assert_eq!(ns_of(&r["subscribe"]["publications"]), [5, 6], "{r}");
    assert_eq!(channels(s)[CH]["num_clients"], 2);
}

#[test]
fn reject_unrecovered_memory() {
    reject_unrecovered(&Server::start(recovery_config()));
}

#[test]
fn reject_unrecovered_redis() {
    if !redis_available("recovery::reject_unrecovered_redis") {
        return;
    }
    let redis = RedisServer::start();
    reject_unrecovered(&Server::start(on_redis(&redis, "reject")));
}

/// Cache mode: whatever the client's position, a recovering subscribe gets the latest
/// publication only (none when it holds the top already), and is recovered when the stream
/// still has it. The flag does not apply. `auto_cache_recover` recovers without being asked.
fn cache_recovery(s: &Server) {
    const CH: &str = "cache:a";
    let epoch = publish(s, CH, 1..=5);
    let mut c = Client::connect(s);
    let positions = [
        json!({"offset": 1, "epoch": epoch}),
        json!({}),
        json!({"offset": 2, "epoch": "other", "flag": 2}),
        json!({"offset": 4}),
    ];
    for pos in positions {
        let mut sub = json!({"channel": CH, "recover": true});
        merge(&mut sub, pos.clone());
        let r = c.subscribe(sub);
        let res = &r["subscribe"];
        assert_eq!(res["recovered"], true, "{pos}: {r}");
        assert_eq!(res["was_recovering"], true, "{pos}: {r}");
        assert_eq!(ns_of(&res["publications"]), [5], "{pos}: the latest publication only: {r}");
        assert_eq!(res["publications"][0]["offset"], 5, "{pos}: {r}");
        assert_eq!(res["epoch"], epoch.as_str(), "{pos}: {r}");
        assert_eq!(res.get("offset"), pos.get("offset"), "{pos}: the position asked from: {r}");
        assert!(c.call(json!({"unsubscribe": {"channel": CH}})).get("error").is_none());
    }
    // At the top already: recovered, nothing to send.
    let r = c.subscribe(json!({"channel": CH, "recover": true, "offset": 5, "epoch": epoch}));
    assert_eq!(r["subscribe"]["recovered"], true, "{r}");
    assert!(r["subscribe"].get("publications").is_none(), "{r}");
    assert!(c.call(json!({"unsubscribe": {"channel": CH}})).get("error").is_none());
    // Not asked to recover: the position only.
    let r = c.subscribe(json!({"channel": CH}));
    let res = &r["subscribe"];
    assert_eq!(
        (res["recoverable"].clone(), res["positioned"].clone(), res["offset"].clone()),
        (json!(true), json!(true), json!(5))
    );
    assert!(res.get("publications").is_none() && res.get("was_recovering").is_none(), "{r}");
    // Live publications follow as usual.
    publish(s, CH, 6..=6);
    c.wait_pub(CH, 6);

    // An empty stream: nothing to recover from.
    let r = c.subscribe(json!({"channel": "cache:empty", "recover": true}));
    assert!(r["subscribe"].get("recovered").is_none() && r["subscribe"].get("publications").is_none(), "{r}");

    // auto_cache_recover: the latest publication on a plain subscribe.
    publish(s, "auto:a", 1..=3);
    let r = c.subscribe(json!({"channel": "auto:a"}));
    let res = &r["subscribe"];
    assert_eq!((res["recovered"].clone(), res["was_recovering"].clone()), (json!(true), json!(true)), "{r}");
    assert_eq!(ns_of(&res["publications"]), [3], "{r}");
}

#[test]
fn cache_recovery_memory() {
    cache_recovery(&Server::start(recovery_config()));
}

#[test]
fn cache_recovery_redis() {
    if !redis_available("recovery::cache_recovery_redis") {
        return;
    }
    let redis = RedisServer::start();
    cache_recovery(&Server::start(on_redis(&redis, "cache")));
}

/// A client that asks to recover where recovery is off is told it was recovering and was not
/// recovered, as Centrifugo tells it.
#[test]
fn was_recovering_follows_the_request() {
    let s = Server::start(recovery_config());
    let mut c = Client::connect(&s);
    let r = c.subscribe(json!({"channel": "plain:a", "recover": true, "offset": 3, "epoch": "e"}));
    assert_eq!(r["subscribe"], json!({"was_recovering": true}), "{r}");
}

/// centrifuge-js with `getState`: its position cannot be recovered, so the server answers
/// 112 and the SDK asks the application for the state again, then recovers from there.
#[test]
fn js_get_state_reloads_on_unrecoverable_position() {
    const TEST: &str = "recovery::js_get_state_reloads_on_unrecoverable_position";
    const CH: &str = "rec:js";
    let s = Server::start(recovery_config());
    let epoch = publish(&s, CH, 1..=5);
    let Some(mut a) = Agent::start(Sdk::Js, TEST) else { return };
    a.connect("a", &s, json!({}));
    a.wait("a connected", ev("a", "connected"));
    let states = [json!({"offset": 3, "epoch": "stale"}), json!({"offset": 3, "epoch": epoch})];
    a.send(json!({"op": "sub", "c": "a", "ch": CH, "states": states}));
    let sd = a.wait("a subscribed", sev("a", CH, "sub.subscribed"));
    assert_eq!(a.count(sev("a", CH, "getState")), 2, "getState again after 112");
    assert_eq!((sd["wasRecovering"].clone(), sd["recovered"].clone()), (json!(true), json!(true)), "{sd}");
    let pubs = a.wait_n("the recovered publications", 2, sev("a", CH, "sub.publication"));
    assert_eq!(ns(&pubs), [4, 5]);
    assert_eq!(a.count(sev("a", CH, "sub.error")), 0, "112 is handled by the SDK, not an error");
}

/// The offsets of the publications on `ch` among `pushes`.
fn pushed_offsets(pushes: &[Value], ch: &str) -> Vec<u64> {
    pushes.iter().filter(|v| v["push"]["channel"] == ch).filter_map(|v| v["push"]["pub"]["offset"].as_u64()).collect()
}

/// With the Redis engine a publication made just after the node subscribed the channel's
/// topic reaches the node on the PUB/SUB connection, possibly after the subscribe's read of
/// the stream, which already holds it, has returned. The subscriber got it in its reply (or
/// its position is past it) and must not get it again as a push. Here everything Redis sends
/// on PUB/SUB connections is held back 300 ms while a publisher writes every 5 ms, so each
/// subscribe's read returns publications still on their way: one client recovers from an
/// older offset, one subscribes at the top; each must see every offset once, in order.
#[test]
fn publications_in_flight_during_a_subscribe_arrive_once_redis() {
    const TEST: &str = "recovery::publications_in_flight_during_a_subscribe_arrive_once_redis";
    const CH: &str = "sync:a";
    if !redis_available(TEST) {
        return;
    }
    let redis = RedisServer::start();
    let proxy = SlowPubSub::start(redis.port, Duration::from_millis(300));
    let mut cfg = recovery_config();
    let engine = json!({"type": "redis", "redis": {"address": [proxy.url()], "prefix": "sync", "io_timeout": "2s"}});
    merge(&mut cfg, json!({ "engine": engine }));
    let s = Server::start(cfg);
    let stop = AtomicBool::new(false);
    let acked = Mutex::new(Vec::<(i64, u64, String)>::new());
    std::thread::scope(|scope| {
        let _stop = SetOnDrop(&stop);
        scope.spawn(|| {
            let mut n = 0;
            while !stop.load(Ordering::Relaxed) {
                n += 1;
                let r = s.api("publish", json!({"channel": CH, "data": {"n": n}}));
                let (offset, epoch) = (r["result"]["offset"].as_u64(), r["result"]["epoch"].as_str());
                acked.lock().unwrap().push((n, offset.expect("an offset"), epoch.unwrap().to_string()));
                std::thread::sleep(Duration::from_millis(5));
            }
        });
        let deadline = Instant::now() + Duration::from_secs(10);
        while acked.lock().unwrap().len() < 20 {
            assert!(Instant::now() < deadline, "20 publications within 10 s");
            std::thread::sleep(Duration::from_millis(10));
        }
        let epoch = acked.lock().unwrap()[0].2.clone();

        let mut recovering = Client::connect(&s);
        let r = recovering.subscribe(json!({"channel": CH, "recover": true, "offset": 5, "epoch": epoch}));
        assert_eq!(r["subscribe"]["recovered"], true, "{r}");
        let recovered: Vec<u64> =
            r["subscribe"]["publications"].as_array().unwrap().iter().map(|p| p["offset"].as_u64().unwrap()).collect();
        let mut at_top = Client::connect(&s);
        let r = at_top.subscribe(json!({"channel": CH}));
        let top = r["subscribe"]["offset"].as_u64().unwrap_or_else(|| panic!("a position: {r}"));

        // Well past the delay, then the last publication reaches both.
        std::thread::sleep(Duration::from_millis(900));
        stop.store(true, Ordering::Relaxed);
        std::thread::sleep(Duration::from_millis(50));
        let last = acked.lock().unwrap().last().unwrap().0;
        recovering.wait_pub(CH, last);
        at_top.wait_pub(CH, last);
        let last_offset = acked.lock().unwrap().last().unwrap().1;

        let mut got = recovered.clone();
        got.extend(pushed_offsets(&recovering.pushes, CH));
        got.push(last_offset);
        assert_eq!(got, (6..=last_offset).collect::<Vec<_>>(), "recovered {recovered:?}, then pushes");
        let mut got = pushed_offsets(&at_top.pushes, CH);
        got.push(last_offset);
        assert_eq!(got, (top + 1..=last_offset).collect::<Vec<_>>(), "subscribed at {top}, then pushes");
    });
}

/// A channel's stream dropped under its subscribers (`history_meta_ttl` passed) starts a new
/// epoch with the next publication: a positioned subscriber is then unsubscribed with
/// "insufficient state" (2500) to resubscribe, as Centrifugo does, rather than given offsets
/// of another stream; a server-side subscriber, which the client cannot resubscribe, is
/// disconnected with 3010 to reconnect.
#[test]
fn a_new_epoch_unsubscribes_a_positioned_subscriber() {
    const CH: &str = "short:a";
    let mut cfg = recovery_config();
    let short = json!({"name": "short", "history_size": 10, "history_ttl": "1s", "history_meta_ttl": "2s",
                       "force_recovery": true});
    cfg["channel"]["namespaces"].as_array_mut().unwrap().push(short);
    let s = Server::start(cfg);
    let mut c = Client::connect(&s);
    let r = c.subscribe(json!({"channel": CH}));
    assert_eq!(r["subscribe"]["recoverable"], true, "{r}");
    let mut server_side = Client::connect(&s);
    let r = s.api("subscribe", json!({"user": "", "client": server_side.id, "channel": CH}));
    assert!(r.get("error").is_none(), "{r}");
    let first = publish(&s, CH, 1..=1);
    c.wait_pub(CH, 1);
    server_side.wait_pub(CH, 1);
    let sub = server_side.pushes.iter().find(|v| v["push"]["subscribe"].is_object()).cloned();
    assert_eq!(sub.as_ref().map(|v| &v["push"]["subscribe"]["recoverable"]), Some(&json!(true)), "{sub:?}");
    // The stream's metadata expires 2 s after its last use; the sweep runs every second.
    std::thread::sleep(Duration::from_millis(3500));
    let r = s.api("publish", json!({"channel": CH, "data": {"n": 2}}));
    assert_ne!(r["result"]["epoch"], first.as_str(), "a new epoch: {r}");
    assert_eq!(r["result"]["offset"], 1, "{r}");
    let is_unsub = |v: &Value| v["push"]["channel"] == CH && v["push"]["unsubscribe"].is_object();
    let u = loop {
        if let Some(v) = c.read_one("the unsubscribe push", is_unsub) {
            break v;
        }
    };
    assert_eq!(u["push"]["unsubscribe"]["code"], 2500, "{u}");
    assert!(pushed_offsets(&c.pushes, CH).is_empty(), "no publication of the new epoch: {:?}", c.pushes);
    let (code, reason) = loop {
        let f = server_side.ws.frame().expect("a frame before the close");
        if f.op == CLOSE {
            break f.close();
        }
        server_side.pushes.extend(json_lines(&f.payload));
    };
    assert_eq!((code, reason.as_str()), (3010, "insufficient state"));
    assert!(
        pushed_offsets(&server_side.pushes, CH).is_empty(),
        "no publication of the new epoch: {:?}",
        server_side.pushes
    );
}
