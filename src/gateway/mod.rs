//! The gateway ("mesh") API: raw WebSocket clients whose messages land in in-memory queue
//! topics, backends that pop those topics over `/ws/v1`, and `mesh.send` / `mesh.publish` /
//! `conn.call` towards any client or channel (Centrifugo clients included).
//!
//! Topics are owned like channels: `owner_of(topic)` keeps the queue and its consumers;
//! producers and consumers on other workers reach it through the inboxes. A message leaves the
//! queue when it is handed to a consumer's worker; if that consumer is gone by then it comes
//! back to the front of the queue, so nothing queued is lost while consumers come and go.

pub mod backend;
pub mod mesh;

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::rc::{Rc, Weak};
use std::sync::atomic::Ordering;
use std::sync::Arc;

use ahash::AHashMap;
use bytes::Bytes;
use serde_json::{json, Map, Value};
use slab::Slab;

use crate::cluster::api_server;
use crate::runtime::worker::{Msg, Worker};
use crate::shard::owner_of;
use crate::wire::ws::{frame, OpCode};

/// A consumer of a topic: one `/ws/v1` connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Consumer {
    pub worker: u16,
    pub key: u32,
    pub gen: u32,
}

/// Queue traffic between workers.
#[derive(Debug)]
pub enum QueueMsg {
    /// An event for a topic (to its owner). `frame` is the complete `/ws/v1` text frame.
    Push { topic: Arc<str>, frame: Bytes },
    /// A consumer stops popping (to the owner).
    Unpop { topic: Arc<str>, consumer: Consumer },
    /// A message for a consumer (to the consumer's worker).
    Deliver { consumer: Consumer, topic: Arc<str>, frame: Bytes },
    /// A message its consumer could not take (to the owner: back to the queue's front).
    Return { topic: Arc<str>, frame: Bytes },
}

#[derive(Default)]
struct Topic {
    queue: VecDeque<Bytes>,
    consumers: Vec<Consumer>,
    next: usize,
}

/// A worker's gateway state.
#[derive(Default)]
pub struct Local {
    /// Topics this worker owns.
    topics: RefCell<AHashMap<Arc<str>, Topic>>,
    /// `/ws/v1` connections on this worker.
    pub backends: RefCell<Slab<Rc<backend::Backend>>>,
    /// Client id → connection, for every client on this worker (raw and Centrifugo), so
    /// `mesh.send` and `conn.call` find them.
    pub targets: RefCell<AHashMap<Arc<str>, Weak<dyn mesh::MeshTarget>>>,
    /// Messages dropped because a topic was full or the topic limit was reached.
    pub dropped: Cell<u64>,
    /// Snowflake state: last millisecond used and the sequence within it.
    id_state: Cell<(u64, u64)>,
}

/// This worker's gateway state.
pub fn local(w: &Worker) -> Rc<Local> {
    w.local(|_| Local::default())
}

/// Makes client `id` reachable by `mesh.send` and `conn.call` on this worker.
pub fn register_target(w: &Worker, id: &Arc<str>, target: Weak<dyn mesh::MeshTarget>) {
    local(w).targets.borrow_mut().insert(id.clone(), target);
}

/// Client `id` is gone from this worker.
pub fn unregister_target(w: &Worker, id: &str) {
    local(w).targets.borrow_mut().remove(id);
}

/// 10 bits identifying this node inside client ids: the number it holds among the nodes of
/// its Redis (unique among them), else (memory engine: one node) a hash of its id.
fn node_bits(w: &Worker) -> u64 {
    match w.node.node_number.load(std::sync::atomic::Ordering::Relaxed) {
        crate::engine::redis::node_number::NONE => crate::engine::redis::codec::fnv1a64(w.node.uid.as_bytes()) & 0x3ff,
        n => n & 0x3ff,
    }
}

/// A header name in its canonical form (`sec-websocket-key` → `Sec-Websocket-Key`).
pub fn canonical_header(name: &str) -> String {
    let mut up = true;
    name.chars()
        .map(|c| {
            let out = if up { c.to_ascii_uppercase() } else { c.to_ascii_lowercase() };
            up = c == '-';
            out
        })
        .collect()
}

/// `GET /v1/nodes`: this node and (Redis engine) every other live node, with the address of
/// their gateway API.
pub async fn nodes_json(w: &Rc<Worker>) -> Value {
    let mut nodes = vec![json!({"id": w.node.uid, "name": w.node.name, "api_server": api_server(&w.cfg)})];
    for n in crate::cluster::nodes(w).await {
        nodes.push(json!({"id": n.uid, "name": n.name, "api_server": n.api_server}));
    }
    json!({"nodes": nodes})
}

/// `POST /v1/mesh/send` and `/v1/mesh/publish`: the reply object (`{"E":..,"r":..}`).
pub async fn http_mesh(w: &Rc<Worker>, path: &str, body: &[u8]) -> Value {
    let reply = |r: Result<Value, mesh::MeshError>| match r {
        Ok(r) => json!({"E": null, "r": r}),
        Err(e) => json!({"E": {"c": e.code, "m": e.message}}),
    };
    let Ok(Value::Object(p)) = serde_json::from_slice::<Value>(body) else {
        return reply(Err(mesh::MeshError::bad("invalid argument: body must be a JSON object")));
    };
    if path.ends_with("/publish") {
        reply(mesh::publish(w, &p).await.map(|(s, f)| json!({"s": s, "f": f})))
    } else {
        match mesh::parse_send(&p) {
            Ok(op) => reply(mesh::run(w, op).await.map(|_| json!({"s": true}))),
            Err(e) => reply(Err(e)),
        }
    }
}

/// Milliseconds since 2020-01-01 (the client id epoch).
fn epoch_ms() -> u64 {
    const EPOCH: u64 = 1_577_836_800_000;
    let now =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0);
    now.saturating_sub(EPOCH)
}

/// A new client id: a snowflake (41 bits of milliseconds, 10 of node, 6 of worker, 7 of
/// sequence) rendered in decimal. When a millisecond's sequence runs out the clock part
/// moves ahead, so ids stay unique and increasing on a worker.
pub fn next_client_id(w: &Worker) -> Arc<str> {
    let gw = local(w);
    let (mut last, mut seq) = gw.id_state.get();
    let now = epoch_ms();
    if now > last {
        last = now;
        seq = 0;
    } else {
        seq += 1;
        if seq >= 128 {
            last += 1;
            seq = 0;
        }
    }
    gw.id_state.set((last, seq));
    let id = (last << 23) | (node_bits(w) << 13) | (((w.id as u64) & 0x3f) << 7) | seq;
    id.to_string().into()
}

/// The `/ws/v1` event frame of one queued message.
pub fn event_frame(node: &str, client: &str, topic: &str, event: &Value) -> Bytes {
    let msg = json!({"e": "queue.pop", "p": {"n": node, "c": client, "t": topic, "d": event}, "id": null});
    frame(OpCode::Text, msg.to_string().as_bytes())
}

/// An event object with the connection's context attached when it has one.
pub fn event(kind: &str, mut fields: Map<String, Value>, context: Option<&Map<String, Value>>) -> Value {
    fields.insert("event".into(), json!(kind));
    if let Some(c) = context.filter(|c| !c.is_empty()) {
        fields.insert("context".into(), Value::Object(c.clone()));
    }
    Value::Object(fields)
}

/// A WebSocket message as the `frame` of a `message` event (binary data in base64).
pub fn frame_json(text: bool, data: &[u8]) -> Value {
    use base64::Engine;
    if text {
        json!({"type": "text", "data": String::from_utf8_lossy(data), "finish": true})
    } else {
        json!({"type": "binary", "data": base64::engine::general_purpose::STANDARD.encode(data), "finish": true})
    }
}

/// Queues an event for `topic` from a client of this worker.
pub fn push_event(w: &Worker, client: &str, topic: &Arc<str>, event: &Value) {
    let frame = event_frame(&w.node.uid, client, topic, event);
    let owner = owner_of(topic, w.workers);
    send_queue(w, owner, QueueMsg::Push { topic: topic.clone(), frame });
}

/// Queue traffic for worker `to` (handled there by [`on_queue`]).
pub(crate) fn send_queue(w: &Worker, to: usize, msg: QueueMsg) {
    w.send(to, Msg::Job(Box::new(move |w| on_queue(w, msg))));
}

/// Handles queue traffic on this worker.
pub fn on_queue(w: &Worker, msg: QueueMsg) {
    let gw = local(w);
    match msg {
        QueueMsg::Push { topic, frame } => {
            if !ensure_topic(w, &topic) {
                gw.dropped.set(gw.dropped.get() + 1);
                return;
            }
            {
                let mut topics = gw.topics.borrow_mut();
                let t = topics.get_mut(&topic).expect("ensured");
                t.queue.push_back(frame);
                if t.queue.len() > w.cfg.gateway.topic_size {
                    t.queue.pop_front();
                    gw.dropped.set(gw.dropped.get() + 1);
                }
            }
            dispatch(w, &topic);
        }
        QueueMsg::Return { topic, frame } => {
            if ensure_topic(w, &topic) {
                gw.topics.borrow_mut().get_mut(&topic).expect("ensured").queue.push_front(frame);
                dispatch(w, &topic);
            } else {
                gw.dropped.set(gw.dropped.get() + 1);
            }
        }
        QueueMsg::Unpop { topic, consumer } => {
            let mut topics = gw.topics.borrow_mut();
            if let Some(t) = topics.get_mut(&topic) {
                t.consumers.retain(|c| *c != consumer);
                if t.consumers.is_empty() && t.queue.is_empty() {
                    topics.remove(&topic);
                    w.node.topics.fetch_sub(1, Ordering::Relaxed);
                }
            }
        }
        QueueMsg::Deliver { consumer, topic, frame } => {
            let b = gw.backends.borrow().get(consumer.key as usize).filter(|b| b.gen == consumer.gen).cloned();
            let taken = b.is_some_and(|b| b.take(&topic, frame.clone()));
            if !taken {
                let owner = owner_of(&topic, w.workers);
                send_queue(w, owner, QueueMsg::Return { topic, frame });
            }
        }
    }
}

/// Adds a consumer to a topic this worker owns; 201 when the topic cannot be created (the
/// node's topic limit).
pub fn pop(w: &Worker, topic: Arc<str>, consumer: Consumer) -> Result<(), crate::error::ApiError> {
    if !ensure_topic(w, &topic) {
        return Err(crate::error::ApiError::new(201, "consumption failed: too many topics"));
    }
    {
        let gw = local(w);
        let mut topics = gw.topics.borrow_mut();
        let t = topics.get_mut(&topic).expect("ensured");
        if !t.consumers.contains(&consumer) {
            t.consumers.push(consumer);
        }
    }
    dispatch(w, &topic);
    Ok(())
}

/// Creates the topic if the node's topic limit allows; true when it exists.
fn ensure_topic(w: &Worker, topic: &Arc<str>) -> bool {
    let gw = local(w);
    if gw.topics.borrow().contains_key(topic) {
        return true;
    }
    let shared = &w.node.topics;
    if shared.fetch_add(1, Ordering::Relaxed) >= w.cfg.gateway.max_topics {
        shared.fetch_sub(1, Ordering::Relaxed);
        tracing::warn!(topic = %topic, "gateway topic limit reached; message dropped");
        return false;
    }
    gw.topics.borrow_mut().insert(topic.clone(), Topic::default());
    true
}

/// Hands queued messages to the topic's consumers, round-robin.
fn dispatch(w: &Worker, topic: &Arc<str>) {
    loop {
        let next = {
            let gw = local(w);
            let mut topics = gw.topics.borrow_mut();
            let Some(t) = topics.get_mut(topic) else { return };
            if t.consumers.is_empty() || t.queue.is_empty() {
                return;
            }
            let c = t.consumers[t.next % t.consumers.len()];
            t.next = t.next.wrapping_add(1);
            (c, t.queue.pop_front().expect("not empty"))
        };
        let (consumer, frame) = next;
        let msg = QueueMsg::Deliver { consumer, topic: topic.clone(), frame };
        if consumer.worker as usize == w.id {
            on_queue(w, msg);
        } else {
            send_queue(w, consumer.worker as usize, msg);
        }
    }
}

/// Number of messages waiting in this worker's topics (for tests and metrics).
pub fn queued(w: &Worker) -> usize {
    local(w).topics.borrow().values().map(|t| t.queue.len()).sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonical_header_names() {
        assert_eq!(canonical_header("sec-websocket-key"), "Sec-Websocket-Key");
        assert_eq!(canonical_header("host"), "Host");
    }

    #[test]
    fn raw_frames_of_publications() {
        use crate::model::Payload;
        use crate::push::raw_publication_frame;
        let p = |b: &'static [u8], binary| Payload { bytes: Bytes::from_static(b), binary };
        let text = |f: Bytes| (f[0], f[2..].to_vec());
        assert_eq!(text(raw_publication_frame(&p(b"\"hi\\n\"", false))), (0x81, b"hi\n".to_vec()));
        assert_eq!(text(raw_publication_frame(&p(b"{\"a\":1}", false))), (0x81, b"{\"a\":1}".to_vec()));
        assert_eq!(text(raw_publication_frame(&p(b"\x00\x01", true))), (0x82, vec![0, 1]));
    }

    #[test]
    fn events_carry_context_only_when_set() {
        let e = event("close", Map::new(), None);
        assert_eq!(e, json!({"event": "close"}));
        let mut ctx = Map::new();
        ctx.insert("uid".into(), json!("7"));
        let e = event("message", Map::from_iter([("frame".into(), frame_json(false, b"\x01"))]), Some(&ctx));
        assert_eq!(
            e,
            json!({"event": "message", "frame": {"type": "binary", "data": "AQ==", "finish": true}, "context": {"uid": "7"}})
        );
    }
}
