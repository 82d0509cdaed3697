//! The worker's engine as the layers above see it: which engine runs, how nodes reach each
//! other, and where a channel operation runs (on the channel's owner, or, where the engine
//! allows, on the worker that received it).

use std::rc::Rc;

use super::worker::{Call, Tag, Worker};
use crate::api::Reply;
use crate::shard::{owner_of, ShardOp};

impl Worker {
    /// The Redis engine's connections of this worker, when the Redis engine runs.
    pub fn redis(&self) -> Option<Rc<crate::engine::redis::RedisEngine>> {
        self.shard.borrow().engine().redis().cloned()
    }

    /// The NATS broker's connection of this worker, when the NATS broker runs.
    pub fn nats(&self) -> Option<Rc<crate::engine::nats::NatsEngine>> {
        self.shard.borrow().engine().nats().cloned()
    }

    /// The Redis engine that keeps presence (the Redis engine, or Redis beside NATS).
    pub fn redis_presence(&self) -> Option<Rc<crate::engine::redis::RedisEngine>> {
        self.shard.borrow().engine().redis_presence().cloned()
    }

    /// How this node reaches the other nodes (`None`: a single node).
    pub fn bus(&self) -> Option<crate::engine::Bus> {
        self.shard.borrow().engine().bus()
    }

    /// Routes a single-channel operation: to the channel's owner worker, or, where the engine
    /// runs it on any worker (Redis data commands, NATS history), here.
    pub fn submit_shard(&self, op: ShardOp, tag: Tag) {
        if let Some(op) = self.run_here(op, tag) {
            self.submit(owner_of(op.channel(), self.workers), op, tag);
        }
    }

    /// [`Worker::submit_shard`] as a future.
    pub fn call_shard(self: &Rc<Self>, op: ShardOp) -> Call<Reply> {
        if !self.runs_here(&op) {
            return self.call(owner_of(op.channel(), self.workers), op);
        }
        let slot = self.wait();
        self.run_here(op, Tag::Waiter(slot));
        Call::waiting(self.clone(), slot)
    }

    /// Runs `ops` in order on worker `to`, which owns their channels and runs them there
    /// (not [`Worker::runs_here`]), with one clock reading; one message each way for all of
    /// them. The answers come home before the pushes the operations made leave.
    pub fn call_shard_many(self: &Rc<Self>, to: usize, ops: Vec<ShardOp>) -> Call<Vec<Reply>> {
        self.ask(to, move |w, answer| {
            let now = std::time::Instant::now();
            let mut fanout = Vec::new();
            let replies = ops.into_iter().map(|op| w.exec_local_into(op, now, &mut fanout)).collect();
            answer.send(w, replies);
            w.fan_out_all(fanout);
        })
    }

    /// The engine runs `op` on any worker (else on the channel's owner); a map channel the
    /// node keeps itself (`Shard::keeps_map`) runs on its owner whatever the engine.
    pub(crate) fn runs_here(&self, op: &ShardOp) -> bool {
        let anywhere = (op.is_data() && self.redis().is_some())
            || self.nats().is_some_and(|e| crate::shard::nats::runs_anywhere(&e, op));
        anywhere && !self.shard.borrow().keeps_map(op.channel())
    }

    /// Runs `op` on this worker when [`Worker::runs_here`] (the answer goes to `tag`); gives
    /// it back when it belongs to the channel's owner.
    fn run_here(&self, op: ShardOp, tag: Tag) -> Option<ShardOp> {
        if !self.runs_here(&op) {
            return Some(op);
        }
        let me = self.rc();
        match (self.redis(), self.nats()) {
            (Some(engine), _) => crate::shard::redis::run_data(&engine, op, move |r| me.complete(tag, r)),
            (_, Some(engine)) => crate::shard::nats::run_data(&engine, op, move |r| me.complete(tag, r)),
            _ => return Some(op),
        }
        None
    }
}
