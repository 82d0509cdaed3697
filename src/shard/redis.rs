//! The owner's side of channels with the Redis engine: a subscription subscribes the
//! channel's topic (confirmed) before its position is read and the subscriber is counted, so
//! no publication falls between the position and live delivery; data commands go straight to
//! Redis from whichever worker received them.

use std::cell::RefCell;
use std::rc::Rc;

use super::{Shard, ShardOp, SubOp, SubOutcome};
use crate::api::{Reply, Res};
use crate::config::Config;
use crate::engine::memory::recovery;
use crate::engine::redis::{codec, RedisEngine};
use crate::error::ApiError;
use crate::model::StreamPosition;

/// Runs a data command (see [`ShardOp::is_data`]) on Redis from this worker; `done` gets the
/// reply (at once when Redis refused the request).
pub fn run_data<F: FnOnce(Reply) + Clone + 'static>(engine: &RedisEngine, op: ShardOp, done: F) {
    let d = done.clone();
    let sent = match op {
        ShardOp::Publish(p) => {
            crate::metrics::message_sent(crate::metrics::Kind::Publication);
            engine.publish(p, Box::new(move |r| d(r.map(Res::Publish))))
        }
        ShardOp::History(h) => engine.history(h, Box::new(d)),
        ShardOp::HistoryRemove(ch) => engine.history_remove(&ch, Box::new(d)),
        ShardOp::Presence(ch) => engine.presence(&ch, Box::new(d)),
        ShardOp::PresenceStats(ch) => engine.presence_stats(&ch, Box::new(d)),
        ShardOp::Unsubscribe(_) | ShardOp::PollMember(_) => Err(ApiError::api_internal()),
        ShardOp::MapPublish(mp) => {
            crate::metrics::message_sent(crate::metrics::Kind::Publication);
            engine.map_publish(*mp, Box::new(d))
        }
        ShardOp::MapRead { channel, cursor, limit, key, revision_epoch } => {
            let d = move |r: Reply| d(r.and_then(|state| super::map_revision(state, &revision_epoch)));
            engine.map_read(&channel, &cursor, limit, &key, Box::new(d))
        }
        ShardOp::MapStream(h) => engine.history(
            h,
            Box::new(move |r| {
                d(r.map(|res| match res {
                    Res::History { publications, position } => {
                        Res::MapState { entries: publications, position, cursor: String::new() }
                    }
                    other => other,
                }))
            }),
        ),
        ShardOp::MapStats(ch) => engine.map_stats(&ch, Box::new(d)),
        ShardOp::MapClear(ch) => engine.map_clear(&ch, Box::new(d)),
    };
    if let Err(e) = sent {
        done(Err(e));
    }
}

/// A connection on worker `op.worker` subscribes: subscribe the topic (confirmed), read the
/// position/recovery, then count the subscriber and answer with no await in between.
pub async fn subscribe(
    shard: &RefCell<Shard>,
    engine: Rc<RedisEngine>,
    cfg: &Config,
    op: &SubOp,
) -> Result<SubOutcome, ApiError> {
    let opts = cfg.resolve_channel(&op.channel)?.options;
    engine.begin_sync(&op.channel).await?;
    let mut outcome = SubOutcome {
        channel: op.channel.clone(),
        position: None,
        publications: Vec::new(),
        recovered: false,
        extra: Vec::new(),
        undo: super::Undo::of(op),
    };
    let unused = |shard: &RefCell<Shard>| shard.borrow().workers_of(&op.channel).is_empty();
    let mut top = None;
    if op.position || op.recover.is_some() {
        // A map channel's changes are its stream.
        if opts.history_enabled() || opts.is_map() {
            let read = if op.cache && op.recover.is_some() {
                engine.latest(&op.channel).await
            } else {
                let since = op.recover.as_ref().map(|s| s.offset);
                engine.position(&op.channel, since, op.recover_limit as i64 + 1).await
            };
            let fail = |e: ApiError| -> Result<SubOutcome, ApiError> {
                engine.end_sync(&op.channel, None);
                if unused(shard) {
                    engine.release(&op.channel);
                }
                Err(e)
            };
            let (pos, pubs) = match read {
                Ok(r) => r,
                Err(e) => return fail(e),
            };
            if let Some(since) = &op.recover {
                (outcome.publications, outcome.recovered) = recovery(since, &pos, pubs, op.recover_limit, op.cache);
                if op.rejected(outcome.recovered) {
                    return fail(ApiError::UNRECOVERABLE_POSITION);
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
        if unused(shard) {
            engine.release(&op.channel);
        }
        return Err(ApiError::INTERNAL);
    }
    // Counted and answered with no await in between: every later publication reaches it.
    shard.borrow_mut().count(&op.channel, op.worker);
    if let Some(info) = &op.presence {
        engine.presence_join(&op.channel, info);
    }
    if let Some(info) = &op.join {
        engine.publish_raw(&op.channel, codec::join_payload(info));
    }
    Ok(outcome)
}

impl super::Members for RedisEngine {
    fn present(&self, channel: &str, info: &crate::model::ClientInfo) {
        self.presence_join(channel, info);
    }
    fn absent(&self, channel: &str, client: &str) {
        self.presence_leave(channel, client);
    }
    fn join_leave(&self, channel: &str, info: &crate::model::ClientInfo, joined: bool) {
        let payload = if joined { codec::join_payload(info) } else { codec::leave_payload(info) };
        self.publish_raw(channel, payload);
    }
    fn release(&self, channel: &str) {
        RedisEngine::release(self, channel);
    }
}
