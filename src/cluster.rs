//! The node and its peers: `info` and `channels` across this node's workers and (Redis
//! engine) every other node, control messages between nodes (announcements, API actions,
//! surveys), the node registry, and the periodic tasks (presence refresh, announcements).
//!
//! Features above register what they answer to other nodes' surveys ([`answer_surveys`]),
//! so this module names none of them.

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::Arc;
use std::task::Waker;
use std::time::{Duration, Instant};

use ahash::AHashMap;
use bytes::Bytes;
use serde_json::{json, Map, Value};

use crate::api::{Command, Method, Reply, Res};
use crate::error::ApiError;
use crate::model::NodeInfo;
use crate::runtime::worker::{Msg, Worker};

/// How often a node announces itself; a node silent for `NODE_TTL` is dropped.
pub const ANNOUNCE_EVERY: Duration = Duration::from_secs(3);
const NODE_TTL: Duration = Duration::from_secs(10);
/// How long `channels` waits for other nodes' answers.
const SURVEY_TIMEOUT: Duration = Duration::from_secs(2);

/// Answers this node gives to another node's survey of a kind: the question in, the answer
/// out (`Value::Null` when it has none).
pub type Answerer = fn(Rc<Worker>, Value) -> std::pin::Pin<Box<dyn std::future::Future<Output = Value>>>;

/// Node state of one worker (worker 0 keeps the registry).
#[derive(Default)]
pub struct Cluster {
    /// Survey kinds answered for other nodes, beyond `channels`.
    answerers: RefCell<AHashMap<&'static str, Answerer>>,
    /// Worker 0: other nodes by uid, with when they were last heard.
    nodes: RefCell<AHashMap<String, (NodeInfo, Instant)>>,
    /// Surveys this worker started, by id: expected answers, answers, waiter. Ids are never
    /// reused, so a late answer to a finished survey cannot count for a newer one.
    surveys: RefCell<AHashMap<u64, SurveyWait>>,
    next_survey: std::cell::Cell<u64>,
    /// Worker 0, NATS broker without Redis: the node numbers other nodes announced.
    numbers: RefCell<AHashMap<String, u64>>,
}

struct SurveyWait {
    expected: usize,
    parts: Vec<Value>,
    waker: Option<Waker>,
}

// ---------------------------------------------------------------------------------------
// Control messages.
// ---------------------------------------------------------------------------------------

fn target_json(t: &crate::api::Target, m: &mut Map<String, Value>) {
    m.insert("user".into(), json!(&*t.user));
    m.insert("client".into(), json!(&*t.client));
    m.insert("session".into(), json!(&*t.session));
}

fn payload_json(p: &crate::model::Payload, key: &str, b64key: &str, m: &mut Map<String, Value>) {
    use base64::Engine;
    if p.binary {
        m.insert(b64key.into(), json!(base64::engine::general_purpose::STANDARD.encode(&p.bytes)));
    } else if let Ok(v) = serde_json::from_slice::<Value>(&p.bytes) {
        m.insert(key.into(), v);
    }
}

/// The API params of an action command, for other nodes to decode with the same parser.
pub fn act_params(cmd: &Command) -> Option<(Method, Value)> {
    let mut m = Map::new();
    let method = match cmd {
        Command::Subscribe(s) => {
            target_json(&s.target, &mut m);
            m.insert("channel".into(), json!(&*s.channel));
            m.insert("expire_at".into(), json!(s.expire_at));
            if let Some(i) = &s.info {
                payload_json(i, "info", "b64info", &mut m);
            }
            if let Some(d) = &s.data {
                payload_json(d, "data", "b64data", &mut m);
            }
            if let Some(p) = &s.recover_since {
                m.insert("recover_since".into(), json!({"offset": p.offset, "epoch": &*p.epoch}));
            }
            let o = &s.overrides;
            let mut ov = Map::new();
            for (k, v) in [
                ("presence", o.presence),
                ("join_leave", o.join_leave),
                ("force_recovery", o.force_recovery),
                ("force_positioning", o.force_positioning),
                ("force_push_join_leave", o.force_push_join_leave),
            ] {
                if let Some(v) = v {
                    ov.insert(k.into(), json!({ "value": v }));
                }
            }
            if !ov.is_empty() {
                m.insert("override".into(), Value::Object(ov));
            }
            Method::Subscribe
        }
        Command::Unsubscribe(u) => {
            target_json(&u.target, &mut m);
            m.insert("channel".into(), json!(&*u.channel));
            Method::Unsubscribe
        }
        Command::Disconnect(d) => {
            target_json(&d.target, &mut m);
            m.insert("whitelist".into(), json!(d.whitelist.iter().map(|c| &**c).collect::<Vec<_>>()));
            m.insert("disconnect".into(), json!({"code": d.code, "reason": &*d.reason}));
            Method::Disconnect
        }
        Command::Refresh(r) => {
            target_json(&r.target, &mut m);
            m.insert("expired".into(), json!(r.expired));
            m.insert("expire_at".into(), json!(r.expire_at));
            if let Some(i) = &r.info {
                payload_json(i, "info", "info", &mut m);
            }
            Method::Refresh
        }
        Command::SharedPollPublish(p) => {
            m.insert("channel".into(), json!(&*p.channel));
            m.insert("key".into(), json!(&*p.key));
            m.insert("version".into(), json!(p.version));
            m.insert("epoch".into(), json!(&*p.epoch));
            if let Some(d) = &p.data {
                payload_json(d, "data", "b64data", &mut m);
            }
            Method::SharedPollPublish
        }
        _ => return None,
    };
    Some((method, Value::Object(m)))
}

/// Sends an API action to the other nodes; resolves when Redis accepted it.
pub async fn broadcast_act(w: &Rc<Worker>, cmd: &Command) -> Result<(), ApiError> {
    let (Some(bus), Some((method, params))) = (w.bus(), act_params(cmd)) else { return Ok(()) };
    let msg = json!({"type": "act", "uid": w.node.uid, "method": method.name(), "params": params});
    let (tx, rx) = crate::notify::oneshot();
    bus.publish_control(Bytes::from(msg.to_string()), Box::new(tx));
    if rx.await {
        Ok(())
    } else {
        Err(ApiError::INTERNAL)
    }
}

/// Handles a message from the control or node topic (worker 0).
pub fn on_control(w: &Rc<Worker>, payload: Bytes) {
    let Ok(msg) = serde_json::from_slice::<Value>(&payload) else {
        tracing::warn!("undecodable control message");
        return;
    };
    let uid = msg.get("uid").and_then(Value::as_str).unwrap_or("");
    if uid == w.node.uid {
        return;
    }
    match msg.get("type").and_then(Value::as_str).unwrap_or("") {
        "node" => {
            let Some(n) = msg.get("node") else { return };
            let g = |k: &str| n.get(k).and_then(Value::as_u64).unwrap_or(0);
            let s = |k: &str| n.get(k).and_then(Value::as_str).unwrap_or("").to_string();
            let info = NodeInfo {
                uid: uid.to_string(),
                name: s("name"),
                version: s("version"),
                num_clients: g("num_clients"),
                num_users: g("num_users"),
                num_channels: g("num_channels"),
                num_subs: g("num_subs"),
                uptime: g("uptime"),
                users: Vec::new(),
                api_server: s("api_server"),
            };
            if let Some(number) = msg.get("number").and_then(Value::as_u64) {
                number_seen(w, uid, number);
            }
            let new = cluster(w).nodes.borrow_mut().insert(uid.to_string(), (info, Instant::now())).is_none();
            if new {
                // A node we did not know: announce ourselves now so it knows us without
                // waiting for the next round.
                monoio::spawn(announce(w.clone()));
            }
        }
        "shutdown" => {
            cluster(w).nodes.borrow_mut().remove(uid);
            cluster(w).numbers.borrow_mut().remove(uid);
        }
        "act" => {
            let method = msg.get("method").and_then(Value::as_str).and_then(Method::from_name);
            let params = msg.get("params").map(|p| p.to_string()).unwrap_or_default();
            let Some(method) = method else { return };
            match crate::api::parse::decode_params(method, params.as_bytes()) {
                Ok(crate::api::Command::SharedPollPublish(p)) => drop(shared_poll_here(w, p)),
                Ok(cmd) => {
                    let cmd = Arc::new(cmd);
                    for i in 0..w.workers {
                        let cmd = cmd.clone();
                        w.send(
                            i,
                            Msg::Job(Box::new(move |w| {
                                act_here(w, &cmd);
                            })),
                        );
                    }
                }
                Err(_) => tracing::warn!(method = method.name(), "undecodable action from another node"),
            }
        }
        "survey" => {
            let (Some(id), Some(worker)) =
                (msg.get("id").and_then(Value::as_u64), msg.get("worker").and_then(Value::as_u64))
            else {
                return;
            };
            let from = uid.to_string();
            let w = w.clone();
            monoio::spawn(async move {
                let kind = msg.get("kind").and_then(Value::as_str).unwrap_or("");
                let answerer = cluster(&w).answerers.borrow().get(kind).copied();
                let part = match (kind, answerer) {
                    ("channels", _) => {
                        let pattern = msg.get("pattern").and_then(Value::as_str).unwrap_or("");
                        json!(local_channels(&w, pattern).await.unwrap_or_default())
                    }
                    (_, Some(answer)) => answer(w.clone(), msg.clone()).await,
                    _ => Value::Null,
                };
                let reply =
                    json!({"type": "survey_reply", "uid": w.node.uid, "id": id, "worker": worker, "part": part});
                if let Some(bus) = w.bus() {
                    bus.publish_node(&from, Bytes::from(reply.to_string()));
                }
            });
        }
        "survey_reply" => {
            let (Some(id), Some(worker)) =
                (msg.get("id").and_then(Value::as_u64), msg.get("worker").and_then(Value::as_u64))
            else {
                return;
            };
            let part = msg.get("part").cloned().unwrap_or(Value::Null);
            w.send(worker as usize, Msg::Job(Box::new(move |w| survey_part(w, id, part))));
        }
        _ => {}
    }
}

/// Other live nodes (worker 0's registry), dropping those silent too long.
fn other_nodes(w: &Worker) -> Vec<NodeInfo> {
    let c = cluster(w);
    let mut nodes = c.nodes.borrow_mut();
    nodes.retain(|_, (_, seen)| seen.elapsed() < NODE_TTL);
    let mut list: Vec<NodeInfo> = nodes.values().map(|(n, _)| n.clone()).collect();
    list.sort_by(|a, b| a.uid.cmp(&b.uid));
    list
}

/// A survey answer from another node arrived for a survey of this worker.
fn survey_part(w: &Worker, id: u64, part: Value) {
    let c = cluster(w);
    let mut surveys = c.surveys.borrow_mut();
    if let Some(s) = surveys.get_mut(&id) {
        s.parts.push(part);
        if let Some(k) = s.waker.take() {
            k.wake();
        }
    }
}

/// This node's channels with subscriber counts (all workers).
async fn local_channels(w: &Rc<Worker>, pattern: &str) -> Result<Vec<(Box<str>, u64)>, ApiError> {
    let matcher = if pattern.is_empty() {
        None
    } else {
        let glob = globset::Glob::new(pattern).map_err(|_| ApiError::api_internal())?;
        Some(Arc::new(glob.compile_matcher()))
    };
    let calls = w.ask_all(move |w, a| {
        let list = w.hub.channels(|ch| matcher.as_ref().is_none_or(|m| m.is_match(ch)));
        a.send(w, list)
    });
    let mut merged: AHashMap<Box<str>, u64> = AHashMap::new();
    for c in calls {
        for (name, n) in c.await {
            *merged.entry(name).or_default() += n;
        }
    }
    Ok(merged.into_iter().collect())
}

/// Asks every other node (through the control topic) and collects their answers until all
/// answered, `enough` says the answers suffice, or `SURVEY_TIMEOUT` passes.
pub async fn survey(w: &Rc<Worker>, mut question: Value, enough: impl Fn(&[Value]) -> bool) -> Vec<Value> {
    let Some(bus) = w.bus() else { return Vec::new() };
    let others = nodes(w).await.len();
    if others == 0 {
        return Vec::new();
    }
    let c = cluster(w);
    let id = c.next_survey.get() + 1;
    c.next_survey.set(id);
    c.surveys.borrow_mut().insert(id, SurveyWait { expected: others, parts: Vec::new(), waker: None });
    question["type"] = json!("survey");
    question["uid"] = json!(w.node.uid);
    question["id"] = json!(id);
    question["worker"] = json!(w.id);
    bus.publish_control(Bytes::from(question.to_string()), Box::new(|_| {}));
    let wait = std::future::poll_fn(|cx| {
        let mut surveys = c.surveys.borrow_mut();
        let Some(s) = surveys.get_mut(&id) else { return std::task::Poll::Ready(()) };
        if s.parts.len() >= s.expected || enough(&s.parts) {
            std::task::Poll::Ready(())
        } else {
            s.waker = Some(cx.waker().clone());
            std::task::Poll::Pending
        }
    });
    let _ = monoio::time::timeout(SURVEY_TIMEOUT, wait).await;
    let parts = c.surveys.borrow_mut().remove(&id).map(|s| s.parts).unwrap_or_default();
    parts
}

/// Channels of every node with their subscriber counts.
pub async fn cluster_channels(w: &Rc<Worker>, pattern: &str) -> Result<Vec<(Box<str>, u64)>, ApiError> {
    let mut merged: AHashMap<Box<str>, u64> = AHashMap::new();
    for (name, n) in local_channels(w, pattern).await? {
        *merged.entry(name).or_default() += n;
    }
    for part in survey(w, json!({"kind": "channels", "pattern": pattern}), |_| false).await {
        for e in part.as_array().into_iter().flatten() {
            if let (Some(name), Some(n)) = (e.get(0).and_then(Value::as_str), e.get(1).and_then(Value::as_u64)) {
                *merged.entry(name.into()).or_default() += n;
            }
        }
    }
    let mut list: Vec<_> = merged.into_iter().collect();
    list.sort_unstable();
    Ok(list)
}

/// This node's `info` entry (all workers' counts).
pub async fn local_node(w: &Rc<Worker>) -> Result<NodeInfo, ApiError> {
    let calls = w.ask_all(|w, a| a.send(w, (w.hub.counts(), w.shard.borrow().channels_with_subscribers())));
    let mut node = NodeInfo {
        uid: w.node.uid.clone(),
        name: w.node.name.clone(),
        version: w.node.version.clone(),
        uptime: w.node.started.elapsed().as_secs(),
        ..Default::default()
    };
    let mut users: ahash::AHashSet<Arc<str>> = ahash::AHashSet::new();
    for c in calls {
        let (counts, channels) = c.await;
        users.extend(counts.users);
        node.num_clients += counts.clients;
        node.num_channels += channels;
        node.num_subs += counts.subs;
    }
    node.num_users = users.len() as u64;
    Ok(node)
}

/// `info`: this node plus every other live node.
pub async fn info(w: &Rc<Worker>) -> Reply {
    let mut list = vec![local_node(w).await?];
    list.extend(nodes(w).await);
    Ok(Res::Info(list))
}

// ---------------------------------------------------------------------------------------
// Periodic tasks.
// ---------------------------------------------------------------------------------------

/// Publishes this node's announcement once.
pub async fn announce(w: Rc<Worker>) {
    if let (Ok(n), Some(bus)) = (local_node(&w).await, w.bus()) {
        let number = w.node.node_number.load(std::sync::atomic::Ordering::Relaxed);
        let msg = json!({"type": "node", "uid": n.uid, "number": number, "node": {
            "name": n.name, "version": n.version, "num_clients": n.num_clients, "num_users": n.num_users,
            "num_channels": n.num_channels, "num_subs": n.num_subs, "uptime": n.uptime,
            "api_server": api_server(&w.cfg),
        }});
        bus.publish_control(Bytes::from(msg.to_string()), Box::new(|_| {}));
    }
}

/// Worker 0, NATS broker without Redis (nothing shared to claim a number in): the node
/// starts with a number taken from its id and announces it; of two nodes announcing the same
/// number, the one with the greater id moves to the lowest number no live node announced.
/// Numbers are unique once the announcements have gone round (a few seconds).
pub fn claim_node_number(w: &Worker) {
    use crate::engine::redis::{codec::fnv1a64, node_number::COUNT};
    w.node.node_number.store(fnv1a64(w.node.uid.as_bytes()) % COUNT, std::sync::atomic::Ordering::Relaxed);
}

fn number_seen(w: &Rc<Worker>, uid: &str, number: u64) {
    use std::sync::atomic::Ordering::Relaxed;
    if w.nats().is_none() || w.redis_presence().is_some() {
        return;
    }
    let c = cluster(w);
    c.numbers.borrow_mut().insert(uid.to_string(), number);
    let mine = w.node.node_number.load(Relaxed);
    if number != mine || uid > w.node.uid.as_str() {
        return;
    }
    let live: ahash::AHashSet<String> = other_nodes(w).into_iter().map(|n| n.uid).chain([uid.to_string()]).collect();
    let mut numbers = c.numbers.borrow_mut();
    numbers.retain(|u, _| live.contains(u));
    let taken: ahash::AHashSet<u64> = numbers.values().copied().collect();
    drop(numbers);
    if let Some(free) = (0..crate::engine::redis::node_number::COUNT).find(|n| !taken.contains(n)) {
        tracing::info!(from = mine, to = free, "another node holds this node's number: moving");
        w.node.node_number.store(free, Relaxed);
        monoio::spawn(announce(w.clone()));
    }
}

/// Worker 0: announces this node every few seconds.
pub async fn announcer(w: Rc<Worker>) {
    loop {
        announce(w.clone()).await;
        monoio::time::sleep(ANNOUNCE_EVERY).await;
    }
}

/// Tells the other nodes this one is leaving (on shutdown).
pub fn announce_shutdown(w: &Worker) {
    if let Some(bus) = w.bus() {
        let msg = json!({"type": "shutdown", "uid": w.node.uid});
        bus.publish_control(Bytes::from(msg.to_string()), Box::new(|_| {}));
    }
}

/// Every worker: refreshes the Redis presence entries of its channels' local clients before
/// they expire (presence_ttl), as long as they stay.
pub async fn presence_refresher(w: Rc<Worker>) {
    let ttl = w.cfg.engine.redis.presence_ttl.max(Duration::from_secs(3));
    let every = ttl.mul_f64(0.45);
    loop {
        monoio::time::sleep(every).await;
        let Some(engine) = w.redis_presence() else { return };
        engine.refresh_presence();
    }
}

/// Worker 0 with the Redis engine: removes the expired keys of map channels, about once a
/// second (`map_broker.redis.cleanup_interval`; every node sweeps; each removal happens once).
pub async fn map_expirer(w: Rc<Worker>) {
    // `map_broker.redis.cleanup_interval`; negative: keys stay until a write finds them expired.
    let Some(every) = w.cfg.map_broker.redis.sweep_every() else { return };
    loop {
        monoio::time::sleep(every).await;
        let Some(engine) = w.redis() else { return };
        engine.expire_maps();
    }
}

/// This worker's node state.
fn cluster(w: &Worker) -> Rc<Cluster> {
    w.local(|_| Cluster::default())
}

/// Registers what this node answers to other nodes' surveys of `kind` (on every worker that
/// receives control messages: worker 0).
pub fn answer_surveys(w: &Worker, kind: &'static str, answer: Answerer) {
    cluster(w).answerers.borrow_mut().insert(kind, answer);
}

/// The other live nodes (worker 0's registry; empty on the memory engine).
pub async fn nodes(w: &Rc<Worker>) -> Vec<NodeInfo> {
    if w.bus().is_none() {
        return Vec::new();
    }
    w.ask(0, |w, a| a.send(w, other_nodes(w))).await
}

/// A `shared_poll_publish` for this node's trackers of the key, on the channel's owner;
/// resolves once applied there. `None` (nothing to apply) without data.
pub fn shared_poll_here(w: &Rc<Worker>, p: crate::api::SharedPollPub) -> Option<crate::runtime::worker::Call<()>> {
    let data = p.data?;
    let channel: Arc<str> = (*p.channel).into();
    let owner = crate::shard::owner_of(&channel, w.workers);
    Some(w.ask(owner, move |w, answer| {
        crate::poll::publish(w, &channel, &p.key, p.version, &p.epoch, data);
        answer.send(w, ());
    }))
}

/// An API subscribe/unsubscribe/disconnect/refresh for this worker's connections.
pub fn act_here(w: &Worker, cmd: &Command) -> Vec<crate::client::Pending> {
    w.hub.handlers().into_iter().filter_map(|h| h.on_action(cmd)).collect()
}

/// An API action on connections: applied to this node's workers and, with the Redis engine,
/// sent to every other node first.
pub async fn act(w: &Rc<Worker>, cmd: Command) -> Reply {
    broadcast_act(w, &cmd).await?;
    let cmd = Arc::new(cmd);
    for c in w.ask_all(move |w, a| {
        let pending = act_here(w, &cmd);
        if pending.is_empty() {
            a.send(w, ());
        } else {
            // Answered once this worker's subscribes finished (they run side by side).
            let w = w.clone();
            monoio::spawn(async move {
                for p in pending {
                    p.await;
                }
                a.send(&w, ());
            });
        }
    }) {
        c.await;
    }
    Ok(Res::Empty)
}

/// `host:port` of this node's gateway API as other nodes and backends should reach it.
pub fn api_server(cfg: &crate::config::Config) -> String {
    let g = &cfg.gateway;
    if !g.advertise_address.is_empty() {
        return g.advertise_address.clone();
    }
    let host = match cfg.http_server.address.as_str() {
        "" | "0.0.0.0" | "::" => "127.0.0.1",
        h => h,
    };
    let port = if g.api_port != 0 { g.api_port } else { cfg.http_server.port };
    format!("{host}:{port}")
}
