//! The storage boundary: where a channel's history, presence, idempotency results and
//! versions live, and how publications reach other nodes. [`Engine`] is the only place that
//! knows which engine runs: [`memory`] keeps the state in the owning worker's memory; [`redis`]
//! keeps it in Redis and carries publications between nodes over PUB/SUB. A broker (NATS)
//! would be a third variant with the same calls.

pub mod map;
pub mod memory;
pub mod nats;
pub mod redis;

use std::rc::Rc;

/// One worker's engine.
pub enum Engine {
    /// State owned by this worker (single node).
    Memory(memory::Memory),
    /// This worker's connections to Redis (several nodes).
    Redis(Rc<redis::RedisEngine>),
    /// This worker's NATS connection (several nodes, no history).
    Nats(Rc<nats::NatsEngine>),
}

/// How nodes reach each other (control messages: announcements, API actions, surveys).
pub enum Bus {
    Redis(Rc<redis::RedisEngine>),
    Nats(Rc<nats::NatsEngine>),
}

impl Bus {
    /// Publishes a control message to every node; `done` learns whether it went out.
    pub fn publish_control(&self, msg: bytes::Bytes, done: Box<dyn FnOnce(bool)>) {
        match self {
            Bus::Redis(r) => r.publish_control(msg, Box::new(move |r| done(r.is_ok()))),
            Bus::Nats(n) => done(n.publish_control(&msg)),
        }
    }

    /// Publishes a message to one node.
    pub fn publish_node(&self, uid: &str, msg: bytes::Bytes) {
        match self {
            Bus::Redis(r) => r.publish_node(uid, msg),
            Bus::Nats(n) => n.publish_node(uid, &msg),
        }
    }
}

impl Engine {
    /// The Redis engine, when it runs.
    pub fn redis(&self) -> Option<&Rc<redis::RedisEngine>> {
        match self {
            Engine::Redis(r) => Some(r),
            Engine::Memory(_) | Engine::Nats(_) => None,
        }
    }

    /// The NATS broker, when it runs.
    pub fn nats(&self) -> Option<&Rc<nats::NatsEngine>> {
        match self {
            Engine::Nats(n) => Some(n),
            _ => None,
        }
    }

    /// How this node reaches the others (`None`: a single node).
    pub fn bus(&self) -> Option<Bus> {
        match self {
            Engine::Memory(_) => None,
            Engine::Redis(r) => Some(Bus::Redis(r.clone())),
            Engine::Nats(n) => Some(Bus::Nats(n.clone())),
        }
    }

    /// The Redis engine that keeps presence (the Redis engine, or Redis beside NATS).
    pub fn redis_presence(&self) -> Option<&Rc<redis::RedisEngine>> {
        match self {
            Engine::Redis(r) => Some(r),
            Engine::Nats(n) => n.redis_presence(),
            Engine::Memory(_) => None,
        }
    }
}
