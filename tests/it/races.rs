//! Races between a connection's subscriptions and its end, on the memory and Redis engines.
//!
//! The invariant: whatever the interleaving of subscribes, unsubscribes, closes and API
//! disconnects, once things settle the node's state equals what the live sessions hold —
//! presence (clients and users), subscriber counts (`channels`, `info`), and who receives a
//! publication — and nothing is left once every client is gone.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Shutdown;
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};

use crate::util::*;
use crate::ws_client::*;

const SECRET: &str = "races-secret-0123456789abcdef";

/// Channels with presence, join/leave pushed to every subscriber, and client subscriptions.
fn cfg(redis: Option<&RedisServer>, patch: Value) -> Value {
    let mut c = match redis {
        Some(r) => redis_config(&[r], json!({})),
        None => config_with(json!({"engine": {"type": "memory"}})),
    };
    merge(
        &mut c,
        json!({
            "client": {"token": {"hmac_secret_key": SECRET}},
            "channel": {"without_namespace": {
                "presence": true,
                "join_leave": true,
                "force_push_join_leave": true,
                "allow_subscribe_for_client": true
            }},
            "workers": 2
        }),
    );
    merge(&mut c, patch);
    c
}

fn token(user: &str) -> String {
    let exp = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() + 3600;
    jwt(SECRET, json!({"sub": user, "exp": exp}))
}

fn text(v: &Value) -> Vec<u8> {
    client_frame(true, TEXT, v.to_string().as_bytes(), true)
}

/// A connected client (its connect answered).
fn connected(s: &Server, user: &str) -> (Ws, String) {
    let mut ws = Ws::open(s.addr());
    ws.send_json(&json!({"id": 1, "connect": {"token": token(user)}}));
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let f = ws.frame_until(deadline).expect("connect reply");
        for v in json_lines(&f.payload) {
            if v["id"] == 1 {
                let id = v["connect"]["client"].as_str().unwrap_or_else(|| panic!("connect: {v}")).to_string();
                return (ws, id);
            }
        }
    }
}

/// `presence` of `ch`: client id → user.
fn presence(s: &Server, ch: &str) -> BTreeMap<String, String> {
    let r = s.api("presence", json!({"channel": ch}));
    let p = r["result"]["presence"].as_object().unwrap_or_else(|| panic!("presence {ch}: {r}"));
    p.iter().map(|(k, v)| (k.clone(), v["user"].as_str().unwrap_or_default().to_string())).collect()
}

/// (num_clients, num_subs, num_channels) of the node.
fn info(s: &Server) -> (u64, u64, u64) {
    let r = s.api("info", json!({}));
    let n = &r["result"]["nodes"][0];
    (n["num_clients"].as_u64().unwrap(), n["num_subs"].as_u64().unwrap(), n["num_channels"].as_u64().unwrap())
}

/// `channels`: channel → subscribers.
fn channels(s: &Server) -> BTreeMap<String, u64> {
    let r = s.api("channels", json!({}));
    let c = r["result"]["channels"].as_object().cloned().unwrap_or_default();
    c.into_iter().map(|(k, v)| (k, v["num_clients"].as_u64().unwrap_or(0))).collect()
}

/// Polls until the node holds only what `clients` connections with `each` subscriber(s) on
/// every channel of `chans` hold (nothing else: no presence, no subscribers, no clients).
fn assert_settled(s: &Server, chans: &[String], clients: u64, each: u64) {
    let n = chans.len() as u64;
    let want_info = (clients, each * n, if each > 0 { n } else { 0 });
    let want_channels: BTreeMap<String, u64> =
        if each > 0 { chans.iter().map(|c| (c.clone(), each)).collect() } else { BTreeMap::new() };
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let inf = info(s);
        let wrong: Vec<(String, usize)> =
            chans.iter().map(|c| (c.clone(), presence(s, c).len())).filter(|(_, k)| *k as u64 != each).collect();
        let subs = channels(s);
        if inf == want_info && wrong.is_empty() && subs == want_channels {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "state left behind: info (clients, subs, channels) = {inf:?} (want {want_info:?}), \
             presence counts {wrong:?} (want {each} each), channels {subs:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Connections that end while their subscriptions are in flight: each sends one frame of
/// subscribes to every channel and is disconnected at that moment by the API (the request's
/// last byte goes out right after the frame), or resets its TCP connection. An observer
/// watches joins and leaves. Nothing may be left: presence, counts and index entries; every
/// join the observer saw is followed by a leave; and later clients, which take over the freed
/// session slots, are never charged for publications of channels they did not subscribe to
/// (which closed them with 3008 "slow").
fn subscribe_and_close_at_once(redis: Option<&RedisServer>) {
    let s = Server::start(cfg(redis, json!({"client": {"queue_max_size": 65536}})));
    let chans: Vec<String> = (0..24).map(|i| format!("race{i}")).collect();
    let (mut observer, _) = connected(&s, "observer");
    for (i, ch) in chans.iter().enumerate() {
        observer.send_json(&json!({"id": 10 + i, "subscribe": {"channel": ch}}));
    }
    // The observer's replies, and its own joins (one per channel) seen so far.
    let (mut replies, mut own_joins) = (0, 0);
    let deadline = Instant::now() + Duration::from_secs(10);
    while replies < chans.len() {
        let f = observer.frame_until(deadline).expect("the observer's subscribe replies");
        for v in json_lines(&f.payload) {
            replies += v.get("id").is_some() as usize;
            own_joins += v["push"].get("join").is_some() as i64;
        }
    }
    // Joins minus leaves, counted by the observer until `stop`.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let chans_len = chans.len();
    let watcher = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut joins = own_joins - chans_len as i64;
            loop {
                let quiet = match observer.frame_until(Instant::now() + Duration::from_millis(300)) {
                    Ok(f) => {
                        assert_ne!(f.op, CLOSE, "the observer was closed: {:?}", f.close());
                        for v in json_lines(&f.payload) {
                            if v["push"].get("join").is_some() {
                                joins += 1;
                            } else if v["push"].get("leave").is_some() {
                                joins -= 1;
                            }
                        }
                        false
                    }
                    Err(_) => true,
                };
                if quiet && stop.load(std::sync::atomic::Ordering::Acquire) {
                    return (observer, joins);
                }
            }
        })
    };
    let subscribes: Vec<u8> = {
        let lines: Vec<String> = chans
            .iter()
            .enumerate()
            .map(|(i, ch)| json!({"id": 2 + i, "subscribe": {"channel": ch}}).to_string())
            .collect();
        client_frame(true, TEXT, lines.join("\n").as_bytes(), true)
    };
    for round in 0..60 {
        let user = format!("u{round}");
        let (mut ws, _) = connected(&s, &user);
        if round % 2 == 0 {
            let body = json!({"user": user}).to_string();
            let req = request("POST", "/api/disconnect", body.as_bytes(), &[("X-API-Key", KEY)]);
            let mut api = Conn::new(s.addr());
            api.send(&req[..req.len() - 1]);
            ws.send(&subscribes).unwrap();
            api.send(&req[req.len() - 1..]);
            assert_eq!(api.read_response().unwrap().status, 200);
        } else {
            ws.send(&subscribes).unwrap();
            socket2::SockRef::from(&ws.s).set_linger(Some(Duration::ZERO)).unwrap();
        }
        drop(ws);
    }
    assert_settled(&s, &chans, 1, 1);
    // The observer was told of each join, then of its leave.
    stop.store(true, std::sync::atomic::Ordering::Release);
    let (observer, joins) = watcher.join().expect("the observer");
    assert_eq!(joins, 0, "joins the observer saw minus leaves");
    drop(observer);
    assert_settled(&s, &chans, 0, 0);
    // Fresh clients in the freed slots: 100 KB of publications on each raced channel (beyond
    // the 64 KiB queue bound) must not reach them or be counted against them.
    let mut fresh: Vec<Ws> = (0..40).map(|i| connected(&s, &format!("fresh{i}")).0).collect();
    let mut body = String::new();
    for ch in &chans {
        for i in 0..100 {
            body.push_str(
                &json!({"method": "publish", "params": {"channel": ch, "data": {"pad": "x".repeat(1000)}}, "id": i})
                    .to_string(),
            );
            body.push('\n');
        }
    }
    let r = s.legacy(body.as_bytes());
    assert_eq!(r.status, 200);
    assert!(r.lines().iter().all(|l| l.get("error").is_none()), "the publishes failed");
    for (i, ws) in fresh.iter_mut().enumerate() {
        ws.send_json(&json!({"id": 5, "presence_stats": {"channel": "other"}}));
        let deadline = Instant::now() + Duration::from_secs(10);
        let f = ws.frame_until(deadline).unwrap_or_else(|e| panic!("fresh client {i}: {e}"));
        assert_ne!(f.op, CLOSE, "fresh client {i} was closed: {:?}", f.close());
        // The first frame is the answer (permission denied: it is not a subscriber), not a
        // publication it never subscribed to.
        let reply = json_lines(&f.payload).into_iter().next().unwrap_or_default();
        assert_eq!(reply["id"], 5);
    }
    drop(fresh);
    assert_settled(&s, &chans, 0, 0);
}

#[test]
fn subscribe_and_close_at_once_leaves_nothing_behind() {
    subscribe_and_close_at_once(None);
}

#[test]
fn subscribe_and_close_at_once_leaves_nothing_behind_redis() {
    if !redis_available("races::subscribe_and_close_at_once_leaves_nothing_behind_redis") {
        return;
    }
    let r = RedisServer::start();
    subscribe_and_close_at_once(Some(&r));
}

/// One client of the property test: what it sent, in order.
struct Actor {
    ws: Ws,
    id: String,
    user: String,
    /// (command id, channel, subscribe?) of each (un)subscribe sent.
    sent: Vec<(u32, String, bool)>,
    next: u32,
}

/// Random interleavings of subscribe, unsubscribe, close (close frame, FIN, RST) and API
/// `disconnect` of a user, sent without waiting for answers over two workers. Then every
/// live client's answers are read and its subscriptions replayed from them; the node must
/// agree exactly.
fn interleavings(redis: Option<&RedisServer>, seed: u64) {
    let s = Server::start(cfg(redis, json!({})));
    let mut rng = StdRng::seed_from_u64(seed);
    let chans: Vec<String> = (0..5).map(|i| format!("prop{i}")).collect();
    let users: Vec<String> = (0..6).map(|i| format!("user{i}")).collect();
    let mut live: Vec<Actor> = Vec::new();
    let mut gone = 0;
    let api = s.addr();
    for step in 0..600 {
        let roll = rng.random_range(0..100);
        if live.len() < 4 || roll < 8 {
            let user = users[rng.random_range(0..users.len())].clone();
            let (ws, id) = connected(&s, &user);
            live.push(Actor { ws, id, user, sent: Vec::new(), next: 2 });
        } else if roll < 55 {
            let a = rng.random_range(0..live.len());
            let a = &mut live[a];
            let ch = chans[rng.random_range(0..chans.len())].clone();
            let sub = rng.random_bool(0.6);
            let cmd = if sub {
                json!({"id": a.next, "subscribe": {"channel": ch}})
            } else {
                json!({"id": a.next, "unsubscribe": {"channel": ch}})
            };
            a.ws.send(&text(&cmd)).unwrap();
            a.sent.push((a.next, ch, sub));
            a.next += 1;
        } else if roll < 80 {
            // A subscribe, then the connection ends before (or while) it is answered.
            let mut a = live.swap_remove(rng.random_range(0..live.len()));
            let ch = &chans[rng.random_range(0..chans.len())];
            let mut bytes = text(&json!({"id": a.next, "subscribe": {"channel": ch}}));
            match rng.random_range(0..3) {
                0 => {
                    bytes.extend(client_frame(true, CLOSE, &1000u16.to_be_bytes(), true));
                    let _ = a.ws.send(&bytes);
                }
                1 => {
                    let _ = a.ws.send(&bytes);
                    let _ = a.ws.s.shutdown(Shutdown::Both);
                }
                _ => {
                    let _ = a.ws.send(&bytes);
                    socket2::SockRef::from(&a.ws.s).set_linger(Some(Duration::ZERO)).unwrap();
                }
            }
            gone += 1;
        } else if roll < 88 {
            // API disconnect of one user's connections, racing their in-flight commands.
            let user = &users[rng.random_range(0..users.len())];
            let mut c = Conn::new(api);
            let body = json!({"user": user}).to_string();
            c.send(&request("POST", "/api/disconnect", body.as_bytes(), &[("X-API-Key", KEY)]));
            let r = c.read_response().unwrap();
            assert_eq!(r.status, 200, "step {step}: {}", r.text());
            let (dropped, kept): (Vec<Actor>, Vec<Actor>) = live.drain(..).partition(|a| a.user == *user);
            live = kept;
            for mut a in dropped {
                a.ws.expect_close(Duration::from_secs(10));
                gone += 1;
            }
        } else {
            // An idle moment: let some answers come.
            std::thread::sleep(Duration::from_millis(rng.random_range(0..3)));
        }
    }
    // Read every live client's answers and replay its subscriptions from them.
    let mut expect: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
    for a in live.iter_mut() {
        let mut subs: BTreeSet<String> = BTreeSet::new();
        let mut answers: BTreeMap<u64, Value> = BTreeMap::new();
        let deadline = Instant::now() + Duration::from_secs(10);
        while answers.len() < a.sent.len() {
            let f = a.ws.frame_until(deadline).unwrap_or_else(|e| {
                panic!("seed {seed}: client {} has {} of {} answers: {e}", a.id, answers.len(), a.sent.len())
            });
            assert_ne!(f.op, CLOSE, "seed {seed}: client {} closed: {:?}", a.id, f.close());
            for v in json_lines(&f.payload) {
                if let Some(id) = v.get("id").and_then(Value::as_u64) {
                    answers.insert(id, v);
                }
            }
        }
        for (id, ch, sub) in &a.sent {
            let v = &answers[&(*id as u64)];
            match (sub, v.get("error")) {
                (true, None) => {
                    subs.insert(ch.clone());
                }
                (true, Some(e)) => assert_eq!(e["code"], 105, "seed {seed}: subscribe {ch}: {v}"),
                (false, None) => {
                    subs.remove(ch);
                }
                (false, Some(e)) => panic!("seed {seed}: unsubscribe {ch}: {e}"),
            }
        }
        for ch in subs {
            expect.entry(ch).or_default().insert(a.id.clone(), a.user.clone());
        }
    }
    eprintln!("seed {seed}: {} live clients, {gone} gone, subscriptions {:?}", live.len(), {
        expect.iter().map(|(c, m)| (c.clone(), m.len())).collect::<Vec<_>>()
    });
    // Presence, presence_stats, channels and info agree with the live sessions.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let mut diff = Vec::new();
        for ch in &chans {
            let want = expect.get(ch).cloned().unwrap_or_default();
            let got = presence(&s, ch);
            if got != want {
                diff.push(format!("presence {ch}: got {got:?}, want {want:?}"));
            }
            let st = s.api("presence_stats", json!({"channel": ch}))["result"].clone();
            let users: BTreeSet<&String> = want.values().collect();
            if st["num_clients"].as_u64().unwrap_or(0) != want.len() as u64
                || st["num_users"].as_u64().unwrap_or(0) != users.len() as u64
            {
                diff.push(format!("presence_stats {ch}: {st}, want {} clients {} users", want.len(), users.len()));
            }
        }
        let want_channels: BTreeMap<String, u64> = expect.iter().map(|(c, m)| (c.clone(), m.len() as u64)).collect();
        let got_channels = channels(&s);
        if got_channels != want_channels {
            diff.push(format!("channels: got {got_channels:?}, want {want_channels:?}"));
        }
        let subs: u64 = want_channels.values().sum();
        let want_info = (live.len() as u64, subs, want_channels.len() as u64);
        if info(&s) != want_info {
            diff.push(format!("info (clients, subs, channels): got {:?}, want {want_info:?}", info(&s)));
        }
        if diff.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "seed {seed}: the node disagrees with its live sessions:\n{}",
            diff.join("\n")
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    // A publication reaches exactly the subscribers of its channel.
    for ch in &chans {
        let r = s.api("publish", json!({"channel": ch, "data": {"ch": ch}}));
        assert!(r.get("error").is_none(), "{r}");
    }
    for a in live.iter_mut() {
        let want: BTreeSet<String> =
            expect.iter().filter(|(_, m)| m.contains_key(&a.id)).map(|(c, _)| c.clone()).collect();
        let mut got = BTreeSet::new();
        let deadline = Instant::now() + Duration::from_millis(if want.is_empty() { 200 } else { 5000 });
        while got.len() < want.len() || want.is_empty() {
            let Ok(f) = a.ws.frame_until(deadline) else { break };
            for v in json_lines(&f.payload) {
                if let Some(ch) = v["push"]["pub"]["data"]["ch"].as_str() {
                    assert!(got.insert(ch.to_string()), "seed {seed}: {} got {ch} twice", a.id);
                }
            }
        }
        assert_eq!(got, want, "seed {seed}: publications client {} received", a.id);
    }
    drop(live);
    assert_settled(&s, &chans, 0, 0);
}

/// Seeds: a few fixed ones plus one from the clock (printed, so a failure can be replayed
/// with `GYRE_RACE_SEED`).
fn seeds() -> Vec<u64> {
    if let Ok(s) = std::env::var("GYRE_RACE_SEED") {
        return vec![s.parse().expect("GYRE_RACE_SEED is a number")];
    }
    let clock = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64;
    vec![1, 2, clock]
}

#[test]
fn interleavings_leave_state_equal_to_the_live_sessions() {
    for seed in seeds() {
        interleavings(None, seed);
    }
}

#[test]
fn interleavings_leave_state_equal_to_the_live_sessions_redis() {
    if !redis_available("races::interleavings_leave_state_equal_to_the_live_sessions_redis") {
        return;
    }
    let r = RedisServer::start();
    for seed in seeds() {
        interleavings(Some(&r), seed);
    }
}

/// Subscribe, unsubscribe and subscribe again to one channel in a single frame, on a node
/// whose one worker owns every channel: the owner sees them in that order, so the client ends
/// subscribed with its presence entry, counted once.
#[test]
fn resubscribe_in_one_frame_keeps_presence() {
    let s = Server::start(cfg(None, json!({"workers": 1})));
    let (mut ws, id) = connected(&s, "again");
    for round in 0..20 {
        let ch = format!("again{round}");
        let mut frame = Vec::new();
        for (i, cmd) in ["subscribe", "unsubscribe", "subscribe"].iter().enumerate() {
            frame.extend(json!({"id": 10 + i, *cmd: {"channel": ch}}).to_string().into_bytes());
            frame.push(b'\n');
        }
        frame.pop();
        ws.send(&client_frame(true, TEXT, &frame, true)).unwrap();
        let (mut answers, deadline) = (0, Instant::now() + Duration::from_secs(10));
        while answers < 3 {
            let f = ws.frame_until(deadline).expect("three answers");
            for v in json_lines(&f.payload) {
                if v.get("id").is_some() {
                    assert!(v.get("error").is_none(), "{v}");
                    answers += 1;
                }
            }
        }
        let want = BTreeMap::from([(id.clone(), "again".to_string())]);
        assert_eq!(presence(&s, &ch), want, "round {round}: presence after subscribe, unsubscribe, subscribe");
        assert_eq!(channels(&s).get(&ch), Some(&1), "round {round}: subscriber count");
    }
}

/// `client.user_connection_limit` holds for the node, whichever workers the connections land
/// on, also when they connect at once; a slot is free again once its connection is gone.
#[test]
fn user_connection_limit_holds_across_workers() {
    let s = Server::start(cfg(None, json!({"client": {"user_connection_limit": 2}, "workers": 4})));
    let attempt = |addr| {
        let mut ws = Ws::open(addr);
        ws.send_json(&json!({"id": 1, "connect": {"token": token("same")}}));
        let f = ws.frame().expect("an answer to connect");
        if f.op == CLOSE {
            return (None, Some(f.close().0));
        }
        let v = &json_lines(&f.payload)[0];
        assert!(v["connect"].is_object(), "{v}");
        (Some(ws), None)
    };
    let addr = s.addr();
    let results: Vec<(Option<Ws>, Option<u16>)> = std::thread::scope(|scope| {
        let hs: Vec<_> = (0..16).map(|_| scope.spawn(move || attempt(addr))).collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let mut kept: Vec<Ws> = Vec::new();
    let mut refused = Vec::new();
    for (ws, code) in results {
        match ws {
            Some(ws) => kept.push(ws),
            None => refused.push(code),
        }
    }
    assert_eq!(kept.len(), 2, "16 simultaneous connects of one user, limit 2, 4 workers: refused {refused:?}");
    assert!(refused.iter().all(|c| *c == Some(3504)), "refused with 3504 connection limit: {refused:?}");
    let (one, _) = attempt(addr);
    assert!(one.is_none(), "a third connection while two are open");
    drop(kept.pop());
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let (Some(_ws), _) = attempt(addr) {
            break;
        }
        assert!(Instant::now() < deadline, "the slot of a closed connection was never given back");
        std::thread::sleep(Duration::from_millis(50));
    }
}
