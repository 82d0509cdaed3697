//! The storage boundary: where a channel's history, presence, idempotency results and
//! versions live, and how publications reach other nodes. [`Engine`] is the only place that
//! knows which engine runs: [`memory`] keeps the state in the owning worker's memory; [`redis`]
//! keeps it in Redis and carries publications between nodes over PUB/SUB. A broker (NATS)
//! would be a third variant with the same calls.

pub mod memory;
pub mod redis;

use std::rc::Rc;

/// One worker's engine.
pub enum Engine {
    /// State owned by this worker (single node).
    Memory(memory::Memory),
    /// This worker's connections to Redis (several nodes).
    Redis(Rc<redis::RedisEngine>),
}

impl Engine {
    /// The Redis engine, when it runs.
    pub fn redis(&self) -> Option<&Rc<redis::RedisEngine>> {
        match self {
            Engine::Redis(r) => Some(r),
            Engine::Memory(_) => None,
        }
    }
}
