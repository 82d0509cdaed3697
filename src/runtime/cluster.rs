//! Node-level glue for the Redis engine: the owner side of subscriptions, control messages
//! between nodes (announcements, API actions, channel surveys), the node registry and the
//! periodic tasks (presence refresh, announcements).

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::Arc;
use std::task::Waker;
use std::time::{Duration, Instant};

use ahash::AHashMap;
use bytes::Bytes;
use serde_json::{json, Map, Value};

use super::worker::{Msg, Op, Survey, Tag, Worker};
use crate::api::{Command, Method, Reply, Res};
use crate::engine::redis::codec;
use crate::error::ApiError;
use crate::model::{NodeInfo, StreamPosition};
use crate::shard::{SubOp, SubOutcome, UnsubOp};

/// How often a node announces itself; a node silent for `NODE_TTL` is dropped.
pub const ANNOUNCE_EVERY: Duration = Duration::from_secs(3);
const NODE_TTL: Duration = Duration::from_secs(10);
/// How long `channels` waits for other nodes' answers.
const SURVEY_TIMEOUT: Duration = Duration::from_secs(2);

/// Cluster state of one worker.
#[derive(Default)]
pub struct Cluster {
    /// Worker 0: other nodes by uid, with when they were last heard.
    nodes: RefCell<AHashMap<String, (NodeInfo, Instant)>>,
    /// Surveys this worker started, by id: expected answers, answers, waiter. Ids are never
    /// reused, so a late answer to a finished survey cannot count for a newer one.
    surveys: RefCell<AHashMap<u64, SurveyWait>>,
    next_survey: std::cell::Cell<u64>,
}

struct SurveyWait {
    expected: usize,
    parts: Vec<Value>,
    waker: Option<Waker>,
}

// ---------------------------------------------------------------------------------------
// Owner side of subscriptions.
// ---------------------------------------------------------------------------------------

/// A connection on worker `op.worker` subscribes: subscribe the topic (confirmed), read the
/// position/recovery, then count the subscriber and answer in one step.
pub async fn owner_subscribe(w: Rc<Worker>, from: u16, tag: Tag, op: Box<SubOp>) {
    let r = subscribe_inner(&w, &op).await;
    w.finish(from, tag, r.map(Res::Subscribed));
}

async fn subscribe_inner(w: &Rc<Worker>, op: &SubOp) -> Result<SubOutcome, ApiError> {
    let engine = w.redis.clone().expect("redis engine");
    let opts = w.cfg.resolve_channel(&op.channel)?.options;
    engine.begin_sync(&op.channel).await?;
    let mut outcome = SubOutcome {
        channel: op.channel.clone(),
        position: None,
        publications: Vec::new(),
        recovered: false,
        extra: Vec::new(),
    };
    let mut top = None;
    if op.position || op.recover.is_some() {
        if opts.history_enabled() {
            let since = op.recover.as_ref().map(|s| s.offset);
            let (pos, pubs) = match engine.position(&op.channel, since, op.recover_limit as i64 + 1).await {
                Ok(r) => r,
                Err(e) => {
                    engine.end_sync(&op.channel, None);
                    if w.shard.borrow().workers_of(&op.channel).is_empty() {
                        engine.release(&op.channel);
                    }
                    return Err(e);
                }
            };
            if let Some(since) = &op.recover {
                if (since.epoch.is_empty() || since.epoch == pos.epoch)
                    && crate::shard::recovers(since.offset, pos.offset, &pubs, op.recover_limit)
                {
                    outcome.publications = pubs;
                    outcome.recovered = true;
                }
            }
            top = Some(pos.clone());
            outcome.position = Some(pos);
        } else {
            outcome.position = Some(StreamPosition::default());
        }
    }
    outcome.extra = engine.end_sync(&op.channel, top.as_ref());
    if !engine.is_subscribed(&op.channel) {
        // The PUB/SUB connection broke while the position was read: publications may have
        // been missed. The client retries (100 is temporary).
        if w.shard.borrow().workers_of(&op.channel).is_empty() {
            engine.release(&op.channel);
        }
        return Err(ApiError::INTERNAL);
    }
    // Counted and answered with no await in between: every later publication reaches it.
    w.shard.borrow_mut().count_subscriber(&op.channel, op.worker);
    if let Some(info) = &op.presence {
        w.shard.borrow_mut().presence_update(&op.channel, Ok(info.clone()));
        engine.presence_add(&op.channel, std::slice::from_ref(info));
    }
    if let Some(info) = &op.join {
        engine.publish_raw(&op.channel, codec::join_payload(info));
    }
    Ok(outcome)
}

/// The reverse of a successful subscribe.
pub fn owner_unsubscribe(w: &Worker, op: UnsubOp) {
    let engine = w.redis.as_ref().expect("redis engine");
    let left = w.shard.borrow_mut().uncount_subscriber(&op.channel, op.worker);
    if let Some(client) = &op.client {
        w.shard.borrow_mut().presence_update(&op.channel, Err(client.clone()));
        engine.presence_remove(&op.channel, client);
    }
    if let Some(info) = &op.leave {
        engine.publish_raw(&op.channel, codec::leave_payload(info));
    }
    if left == 0 {
        engine.release(&op.channel);
    }
}

/// A PUB/SUB connection of this worker was lost: subscribers of the channels it carried may
/// have missed publications, so they are told to resubscribe (and recover).
pub fn pubsub_lost(w: &Worker, shard: usize) {
    let engine = w.redis.as_ref().expect("redis engine");
    for ch in engine.on_down(shard) {
        let workers = w.shard.borrow().workers_of(&ch);
        for wid in workers {
            w.send(wid as usize, Msg::Resubscribe(ch.clone()));
        }
    }
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
        _ => return None,
    };
    Some((method, Value::Object(m)))
}

/// Sends an API action to the other nodes; resolves when Redis accepted it.
pub async fn broadcast_act(w: &Rc<Worker>, cmd: &Command) -> Result<(), ApiError> {
    let (Some(engine), Some((method, params))) = (w.redis.as_ref(), act_params(cmd)) else { return Ok(()) };
    let msg = json!({"type": "act", "uid": w.node.uid, "method": method.name(), "params": params});
    let (tx, rx) = crate::notify::oneshot();
    engine.publish_control(Bytes::from(msg.to_string()), Box::new(move |r| tx(r.is_ok())));
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
            let new = w.cluster.nodes.borrow_mut().insert(uid.to_string(), (info, Instant::now())).is_none();
            if new {
                // A node we did not know: announce ourselves now so it knows us without
                // waiting for the next round.
                monoio::spawn(announce(w.clone()));
            }
        }
        "shutdown" => {
            w.cluster.nodes.borrow_mut().remove(uid);
        }
        "act" => {
            let method = msg.get("method").and_then(Value::as_str).and_then(Method::from_name);
            let params = msg.get("params").map(|p| p.to_string()).unwrap_or_default();
            let Some(method) = method else { return };
            match crate::api::parse::decode_params(method, params.as_bytes()) {
                Ok(cmd) => {
                    let cmd = Arc::new(cmd);
                    for i in 0..w.workers {
                        w.send(
                            i,
                            Msg::Exec {
                                from: w.id as u16,
                                tag: Tag::Discard,
                                op: Op::Survey(Survey::Act(cmd.clone())),
                            },
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
                let part = match msg.get("kind").and_then(Value::as_str) {
                    Some("channels") => {
                        let pattern = msg.get("pattern").and_then(Value::as_str).unwrap_or("");
                        json!(local_channels(&w, pattern).await.unwrap_or_default())
                    }
                    Some("mesh") => match msg.get("op").and_then(crate::gateway::mesh::MeshOp::from_json) {
                        Some(op) => mesh_local(&w, Arc::new(op)).await,
                        None => Value::Null,
                    },
                    _ => Value::Null,
                };
                let reply =
                    json!({"type": "survey_reply", "uid": w.node.uid, "id": id, "worker": worker, "part": part});
                if let Some(e) = &w.redis {
                    e.publish_node(&from, Bytes::from(reply.to_string()));
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
            w.send(worker as usize, Msg::SurveyPart { id, part });
        }
        _ => {}
    }
}

/// Other live nodes (worker 0's registry), dropping those silent too long.
pub fn other_nodes(w: &Worker) -> Vec<NodeInfo> {
    let mut nodes = w.cluster.nodes.borrow_mut();
    nodes.retain(|_, (_, seen)| seen.elapsed() < NODE_TTL);
    let mut list: Vec<NodeInfo> = nodes.values().map(|(n, _)| n.clone()).collect();
    list.sort_by(|a, b| a.uid.cmp(&b.uid));
    list
}

/// A survey answer from another node arrived for a survey of this worker.
pub fn survey_part(w: &Worker, id: u64, part: Value) {
    let mut surveys = w.cluster.surveys.borrow_mut();
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
    let calls: Vec<_> = (0..w.workers).map(|i| w.call(i, Op::Survey(Survey::Channels(matcher.clone())))).collect();
    let mut merged: AHashMap<Box<str>, u64> = AHashMap::new();
    for c in calls {
        if let Res::Channels(list) = c.await? {
            for (name, n) in list {
                *merged.entry(name).or_default() += n;
            }
        }
    }
    Ok(merged.into_iter().collect())
}

/// Asks every other node (through the control topic) and collects their answers until all
/// answered, `enough` says the answers suffice, or `SURVEY_TIMEOUT` passes.
async fn survey(w: &Rc<Worker>, mut question: Value, enough: impl Fn(&[Value]) -> bool) -> Vec<Value> {
    let Some(engine) = w.redis.clone() else { return Vec::new() };
    let others = match w.call(0, Op::Nodes).await {
        Ok(Res::Info(list)) => list.len(),
        _ => 0,
    };
    if others == 0 {
        return Vec::new();
    }
    let id = w.cluster.next_survey.get() + 1;
    w.cluster.next_survey.set(id);
    w.cluster.surveys.borrow_mut().insert(id, SurveyWait { expected: others, parts: Vec::new(), waker: None });
    question["type"] = json!("survey");
    question["uid"] = json!(w.node.uid);
    question["id"] = json!(id);
    question["worker"] = json!(w.id);
    engine.publish_control(Bytes::from(question.to_string()), Box::new(|_| {}));
    let wait = std::future::poll_fn(|cx| {
        let mut surveys = w.cluster.surveys.borrow_mut();
        let Some(s) = surveys.get_mut(&id) else { return std::task::Poll::Ready(()) };
        if s.parts.len() >= s.expected || enough(&s.parts) {
            std::task::Poll::Ready(())
        } else {
            s.waker = Some(cx.waker().clone());
            std::task::Poll::Pending
        }
    });
    let _ = monoio::time::timeout(SURVEY_TIMEOUT, wait).await;
    w.cluster.surveys.borrow_mut().remove(&id).map(|s| s.parts).unwrap_or_default()
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

/// Runs a gateway action on this node's workers: `{"found": bool, "err": [code, msg] | null}`.
async fn mesh_local(w: &Rc<Worker>, op: Arc<crate::gateway::mesh::MeshOp>) -> Value {
    let calls: Vec<_> = (0..w.workers).map(|i| w.call(i, Op::Mesh(op.clone()))).collect();
    let mut out = json!({"found": false, "err": null});
    for c in calls {
        if let Ok(Res::Mesh(Some(r))) = c.await {
            out = json!({"found": true, "err": r.err()});
        }
    }
    out
}

/// A gateway action for a client on another node: `None` when no node has the client.
pub async fn mesh_remote(
    w: &Rc<Worker>,
    op: &crate::gateway::mesh::MeshOp,
) -> Option<Result<(), crate::gateway::mesh::MeshError>> {
    let found = |p: &Value| p.get("found").and_then(Value::as_bool).unwrap_or(false);
    let parts = survey(w, json!({"kind": "mesh", "op": op.to_json()}), |parts| parts.iter().any(found)).await;
    let hit = parts.iter().find(|p| found(p))?;
    Some(match hit.get("err").and_then(Value::as_array) {
        Some(e) => Err(crate::gateway::mesh::MeshError::new(
            e.first().and_then(Value::as_u64).unwrap_or(301) as u32,
            e.get(1).and_then(Value::as_str).unwrap_or("execution failed"),
        )),
        None => Ok(()),
    })
}

/// This node's `info` entry (all workers' counts).
pub async fn local_node(w: &Rc<Worker>) -> Result<NodeInfo, ApiError> {
    let calls: Vec<_> = (0..w.workers).map(|i| w.call(i, Op::Survey(Survey::Stats))).collect();
    let mut node = NodeInfo {
        uid: w.node.uid.clone(),
        name: w.node.name.clone(),
        version: w.node.version.clone(),
        uptime: w.node.started.elapsed().as_secs(),
        ..Default::default()
    };
    let mut users: ahash::AHashSet<Arc<str>> = ahash::AHashSet::new();
    for c in calls {
        if let Res::Info(nodes) = c.await? {
            for n in nodes {
                users.extend(n.users);
                node.num_clients += n.num_clients;
                node.num_channels += n.num_channels;
                node.num_subs += n.num_subs;
            }
        }
    }
    node.num_users = users.len() as u64;
    Ok(node)
}

/// `info`: this node plus every other live node.
pub async fn info(w: &Rc<Worker>) -> Reply {
    let mut list = vec![local_node(w).await?];
    if w.redis.is_some() {
        if let Res::Info(others) = w.call(0, Op::Nodes).await? {
            list.extend(others);
        }
    }
    Ok(Res::Info(list))
}

// ---------------------------------------------------------------------------------------
// Periodic tasks.
// ---------------------------------------------------------------------------------------

/// Publishes this node's announcement once.
pub async fn announce(w: Rc<Worker>) {
    if let (Ok(n), Some(engine)) = (local_node(&w).await, w.redis.as_ref()) {
        let msg = json!({"type": "node", "uid": n.uid, "node": {
            "name": n.name, "version": n.version, "num_clients": n.num_clients, "num_users": n.num_users,
            "num_channels": n.num_channels, "num_subs": n.num_subs, "uptime": n.uptime,
            "api_server": crate::gateway::api_server(&w.cfg),
        }});
        engine.publish_control(Bytes::from(msg.to_string()), Box::new(|_| {}));
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
    if let Some(engine) = &w.redis {
        let msg = json!({"type": "shutdown", "uid": w.node.uid});
        engine.publish_control(Bytes::from(msg.to_string()), Box::new(|_| {}));
    }
}

/// Every worker: refreshes the Redis presence entries of its channels' local clients before
/// they expire (presence_ttl), as long as they stay.
pub async fn presence_refresher(w: Rc<Worker>) {
    let ttl = w.cfg.engine.redis.presence_ttl.max(Duration::from_secs(3));
    let every = ttl.mul_f64(0.45);
    loop {
        monoio::time::sleep(every).await;
        let Some(engine) = w.redis.as_ref() else { return };
        for (ch, infos) in w.shard.borrow().presence_snapshot() {
            engine.presence_add(&ch, &infos);
        }
    }
}
