//! Channels with the NATS broker. A publish goes out on the NATS connection of the channel's
//! owner worker (no history: history reads answer 108, not available, as Centrifugo's
//! NATS broker does). A subscription subscribes the channel's subject on the owner (confirmed)
//! before the subscriber is counted. Presence kept locally is read on the owner; presence in
//! Redis is read from any worker. Map channels are kept by the node itself, in memory on
//! their owner (NATS carries none of their changes), as Centrifugo's default memory map
//! broker keeps them.

use std::cell::RefCell;
use std::rc::Rc;

use ahash::AHashMap;

use super::{ShardOp, SubOp, SubOutcome};
use crate::api::{Reply, Res};
use crate::config::Config;
use crate::delta::Bases;
use crate::engine::memory::Counts;
use crate::engine::nats::NatsEngine;
use crate::error::ApiError;
use crate::model::StreamPosition;

/// Whether `op` runs on the worker that received it (else on the channel's owner). A
/// publish goes out on the owner's connection: NATS keeps the order of one connection's
/// messages only, so one connection per channel keeps a node's publications to it in order.
/// (Everything about a map channel runs on its owner, which keeps the channel in memory:
/// the worker checks `Shard::keeps_map` after this.)
pub fn runs_anywhere(engine: &NatsEngine, op: &ShardOp) -> bool {
    match op {
        ShardOp::History(_) | ShardOp::HistoryRemove(_) => true,
        ShardOp::Publish(_) => false,
        ShardOp::Presence(_) | ShardOp::PresenceStats(_) => engine.redis_presence().is_some(),
        ShardOp::Unsubscribe(_) | ShardOp::PollMember(_) => false,
        ShardOp::MapPublish(_)
        | ShardOp::MapRead { .. }
        | ShardOp::MapStream(_)
        | ShardOp::MapStats(_)
        | ShardOp::MapClear(_) => false,
    }
}

/// Runs an operation [`runs_anywhere`] allows here; `done` gets the reply.
pub fn run_data<F: FnOnce(Reply) + Clone + 'static>(engine: &NatsEngine, op: ShardOp, done: F) {
    match op {
        ShardOp::Publish(p) => {
            crate::metrics::message_sent(crate::metrics::Kind::Publication);
            done(engine.publish(&p))
        }
        ShardOp::History(_) | ShardOp::HistoryRemove(_) => done(Err(ApiError::NOT_AVAILABLE)),
        op @ (ShardOp::Presence(_) | ShardOp::PresenceStats(_)) => match engine.redis_presence() {
            Some(r) => super::redis::run_data(r, op, done),
            None => done(Err(ApiError::api_internal())),
        },
        ShardOp::Unsubscribe(_)
        | ShardOp::PollMember(_)
        | ShardOp::MapPublish(_)
        | ShardOp::MapRead { .. }
        | ShardOp::MapStream(_)
        | ShardOp::MapStats(_)
        | ShardOp::MapClear(_) => done(Err(ApiError::api_internal())),
    }
}

/// An operation on the channel's owner (map channels run on the node's own store instead,
/// see `Shard::apply`).
pub fn apply(counts: &mut AHashMap<Box<str>, Counts>, bases: &mut Bases, n: &NatsEngine, op: ShardOp) -> Reply {
    match op {
        ShardOp::Publish(p) => {
            crate::metrics::message_sent(crate::metrics::Kind::Publication);
            n.publish(&p)
        }
        ShardOp::History(_) | ShardOp::HistoryRemove(_) => Err(ApiError::NOT_AVAILABLE),
        ShardOp::MapPublish(_)
        | ShardOp::MapRead { .. }
        | ShardOp::MapStream(_)
        | ShardOp::MapStats(_)
        | ShardOp::MapClear(_) => Err(ApiError::api_internal()),
        ShardOp::Presence(ch) => n.local_presence(&ch).map(Res::Presence).ok_or(ApiError::api_internal()),
        ShardOp::PresenceStats(ch) => n
            .local_presence_stats(&ch)
            .map(|(num_clients, num_users)| Res::PresenceStats { num_clients, num_users })
            .ok_or(ApiError::api_internal()),
        ShardOp::PollMember(pm) => Ok(super::poll_member(n, &pm)),
        ShardOp::Unsubscribe(u) => Ok(super::unsubscribe(counts, bases, n, &u)),
    }
}

impl super::Members for NatsEngine {
    fn present(&self, channel: &str, info: &crate::model::ClientInfo) {
        self.presence_join(channel, info);
    }
    fn absent(&self, channel: &str, client: &str) {
        self.presence_leave(channel, client);
    }
    fn join_leave(&self, channel: &str, info: &crate::model::ClientInfo, joined: bool) {
        self.publish_join_leave(channel, info, joined);
    }
    fn release(&self, channel: &str) {
        NatsEngine::release(self, channel);
    }
}

/// A connection on worker `op.worker` subscribes: subscribe the subject (confirmed), then
/// count the subscriber and answer with no await in between.
pub async fn subscribe(
    shard: &RefCell<super::Shard>,
    engine: Rc<NatsEngine>,
    cfg: &Config,
    op: &SubOp,
) -> Result<SubOutcome, ApiError> {
    let opts = cfg.resolve_channel(&op.channel)?.options;
    if (op.position || op.recover.is_some()) && opts.history_enabled() {
        // NATS keeps no stream to take a position in or recover from.
        return Err(ApiError::NOT_AVAILABLE);
    }
    engine.begin_sync(&op.channel).await?;
    engine.end_sync(&op.channel);
    if !engine.is_subscribed(&op.channel) {
        if shard.borrow().workers_of(&op.channel).is_empty() {
            engine.release(&op.channel);
        }
        return Err(ApiError::INTERNAL);
    }
    shard.borrow_mut().count(&op.channel, op.worker);
    if let Some(info) = &op.presence {
        engine.presence_join(&op.channel, info);
    }
    if let Some(info) = &op.join {
        engine.publish_join_leave(&op.channel, info, true);
    }
    let position = (op.position || op.recover.is_some()).then(StreamPosition::default);
    Ok(SubOutcome {
        channel: op.channel.clone(),
        position,
        publications: Vec::new(),
        recovered: false,
        extra: Vec::new(),
        undo: super::Undo::of(op),
    })
}
