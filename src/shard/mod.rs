//! The channels a worker owns: which workers have subscribers of each (so a publication is
//! sent once per interested worker), over the worker's [`Engine`] that keeps their state; and
//! the pure routing function that says which worker owns a channel.
//!
//! Called only from its own worker thread: by the router directly when the command's channel
//! is owned locally, or by the inbox loop for commands other workers forwarded. With the
//! Redis engine, data commands (publish, history, presence) run on the receiving worker
//! ([`redis::run_data`]) and subscriptions on the owner ([`redis::subscribe`]).

pub mod redis;

use std::sync::Arc;
use std::time::Instant;

use ahash::AHashMap;
use smallvec::SmallVec;

use crate::api::{Reply, Res};
use crate::engine::Engine;
use crate::error::ApiError;
use crate::model::{ClientInfo, History, Publication, Publish, StreamPosition};
use crate::protocol::PushBody;
use crate::push::{Fanout, Prepared, PushKind};

/// The worker that owns `channel` among `workers`: a pure function of the name (ahash with
/// fixed seeds, so every worker of a process agrees; it is not used across processes).
pub fn owner_of(channel: &str, workers: usize) -> usize {
    if workers <= 1 {
        return 0;
    }
    static STATE: std::sync::OnceLock<ahash::RandomState> = std::sync::OnceLock::new();
    let s = STATE.get_or_init(|| ahash::RandomState::with_seeds(0x6779_7265, 0x5f6f_776e, 0x6572_5f6f, 0x665f_6368));
    (s.hash_one(channel) % workers as u64) as usize
}

/// Work that runs on a channel's owner (with the Redis engine, data commands run on any
/// worker, see [`ShardOp::is_data`]).
#[derive(Debug)]
pub enum ShardOp {
    Publish(Publish),
    History(History),
    HistoryRemove(Box<str>),
    Presence(Box<str>),
    PresenceStats(Box<str>),
    /// The reverse of a successful subscription (exactly one per success).
    Unsubscribe(Box<UnsubOp>),
}

impl ShardOp {
    /// Reads and writes of channel data (not subscriber bookkeeping): with the Redis engine
    /// these go straight to Redis from any worker.
    pub fn is_data(&self) -> bool {
        !matches!(self, ShardOp::Unsubscribe(_))
    }
}

/// A connection on `worker` subscribes: count it, add presence, emit join, and answer with
/// the stream position (and recovered publications).
#[derive(Debug)]
pub struct SubOp {
    pub channel: Arc<str>,
    pub worker: u16,
    /// Added to presence when set.
    pub presence: Option<ClientInfo>,
    /// Emitted as a join push when set.
    pub join: Option<ClientInfo>,
    /// Position wanted: `Some(since)` to recover after `since`, `None` for the top only.
    pub recover: Option<StreamPosition>,
    /// Answer with the stream position (positioning or recovery is on).
    pub position: bool,
    /// Most publications a recovery may return.
    pub recover_limit: usize,
}

#[derive(Debug)]
pub struct UnsubOp {
    pub channel: Arc<str>,
    pub worker: u16,
    /// Removed from presence when set.
    pub client: Option<Arc<str>>,
    /// Emitted as a leave push when set.
    pub leave: Option<ClientInfo>,
}

/// Outcome of a subscription on the owner.
#[derive(Debug, Clone)]
pub struct SubOutcome {
    pub channel: Arc<str>,
    pub position: Option<StreamPosition>,
    pub publications: Vec<Publication>,
    /// The requested position was recovered without a gap.
    pub recovered: bool,
    /// Pushes to send right after the subscribe reply (Redis engine: publications newer than
    /// the position that arrived while the subscribe was being answered).
    pub extra: Vec<Arc<Prepared>>,
}

/// Subscriber counts per worker (only workers with at least one).
type Counts = SmallVec<[(u16, u32); 4]>;

/// The channels one worker owns. See the module docs.
pub struct Shard {
    counts: AHashMap<Box<str>, Counts>,
    engine: Engine,
}

impl Shard {
    pub fn new(engine: Engine) -> Self {
        Shard { counts: AHashMap::new(), engine }
    }

    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// Executes one owner-side operation. The origin has already validated the channel name
    /// and namespace. Pushes to deliver are appended to `fanout`.
    pub fn apply(&mut self, op: ShardOp, now: Instant, fanout: &mut Vec<Fanout>) -> Reply {
        let memory = match (&mut self.engine, op) {
            (Engine::Redis(r), ShardOp::Unsubscribe(u)) => {
                let left = uncount(&mut self.counts, &u.channel, u.worker);
                if let Some(client) = &u.client {
                    r.presence_leave(&u.channel, client);
                }
                if let Some(info) = &u.leave {
                    r.publish_raw(&u.channel, crate::engine::redis::codec::leave_payload(info));
                }
                if left == 0 {
                    r.release(&u.channel);
                }
                return Ok(Res::Empty);
            }
            // Data commands run on the receiving worker (`redis::run_data`).
            (Engine::Redis(_), _) => return Err(ApiError::api_internal()),
            (Engine::Memory(m), op) => (m, op),
        };
        let (m, op) = memory;
        match op {
            ShardOp::Publish(p) => {
                crate::metrics::message_sent(crate::metrics::Kind::Publication);
                // The name is copied only when there is someone to deliver to.
                let workers = workers_of(&self.counts, &p.channel);
                let channel: Option<Arc<str>> = (!workers.is_empty()).then(|| Arc::from(&*p.channel));
                let (result, publication) = m.publish(p, now)?;
                if let (Some(publication), Some(channel)) = (publication, channel) {
                    let prepared = Prepared::new(channel, PushKind::Publication, PushBody::Pub(publication));
                    fanout.push(Fanout { prepared: Arc::new(prepared), workers });
                }
                Ok(Res::Publish(result))
            }
            ShardOp::History(h) => {
                let (publications, position) = m.history(h, now)?;
                Ok(Res::History { publications, position })
            }
            ShardOp::HistoryRemove(ch) => {
                m.history_remove(&ch, now);
                Ok(Res::Empty)
            }
            ShardOp::Presence(ch) => Ok(Res::Presence(m.presence(&ch))),
            ShardOp::PresenceStats(ch) => {
                let (num_clients, num_users) = m.presence_stats(&ch);
                Ok(Res::PresenceStats { num_clients, num_users })
            }
            ShardOp::Unsubscribe(u) => {
                let left = uncount(&mut self.counts, &u.channel, u.worker);
                if let Some(client) = &u.client {
                    m.presence_remove(&u.channel, client);
                }
                if let Some(info) = u.leave {
                    if left > 0 {
                        let prepared = Prepared::new(u.channel.clone(), PushKind::JoinLeave, PushBody::Leave(info));
                        fanout.push(Fanout {
                            prepared: Arc::new(prepared),
                            workers: workers_of(&self.counts, &u.channel),
                        });
                    }
                }
                Ok(Res::Empty)
            }
        }
    }

    /// A subscription with the memory engine, answered at once (the Redis engine's owner
    /// subscribes its topic first: [`redis::subscribe`]).
    pub fn subscribe(&mut self, op: SubOp, now: Instant, fanout: &mut Vec<Fanout>) -> Result<SubOutcome, ApiError> {
        let Engine::Memory(m) = &mut self.engine else { return Err(ApiError::api_internal()) };
        let start = m.start(&op.channel, op.position, op.recover.as_ref(), op.recover_limit, now)?;
        count(&mut self.counts, &op.channel, op.worker);
        if let Some(info) = op.presence {
            m.presence_add(&op.channel, info);
        }
        if let Some(info) = op.join {
            let prepared = Prepared::new(op.channel.clone(), PushKind::JoinLeave, PushBody::Join(info));
            fanout.push(Fanout { prepared: Arc::new(prepared), workers: workers_of(&self.counts, &op.channel) });
        }
        Ok(SubOutcome {
            channel: op.channel,
            position: start.position,
            publications: start.publications,
            recovered: start.recovered,
            extra: Vec::new(),
        })
    }

    /// How many subscribers the node has for `channel`.
    pub fn subscriber_count(&self, channel: &str) -> u64 {
        self.counts.get(channel).map(|c| c.iter().map(|(_, n)| *n as u64).sum()).unwrap_or(0)
    }

    /// The workers with subscribers of `channel`.
    pub fn workers_of(&self, channel: &str) -> SmallVec<[u16; 8]> {
        workers_of(&self.counts, channel)
    }

    /// Owned channels with at least one subscriber on this node (each channel has one owner,
    /// so summing this over the workers counts every channel once).
    pub fn channels_with_subscribers(&self) -> u64 {
        self.counts.len() as u64
    }

    /// Frees expired channel state, at most `budget` channels per call.
    pub fn sweep(&mut self, now: Instant, budget: usize) {
        if let Engine::Memory(m) = &mut self.engine {
            m.sweep(now, budget);
        }
    }
}

/// One more subscriber of `channel` on `worker`.
fn count(counts: &mut AHashMap<Box<str>, Counts>, channel: &str, worker: u16) {
    let c = match counts.get_mut(channel) {
        Some(c) => c,
        None => counts.entry(channel.into()).or_default(),
    };
    match c.iter_mut().find(|(w, _)| *w == worker) {
        Some((_, n)) => *n += 1,
        None => c.push((worker, 1)),
    }
}

/// One subscriber less; returns how many the node still has.
fn uncount(counts: &mut AHashMap<Box<str>, Counts>, channel: &str, worker: u16) -> u32 {
    let Some(c) = counts.get_mut(channel) else { return 0 };
    if let Some(i) = c.iter().position(|(w, _)| *w == worker) {
        c[i].1 -= 1;
        if c[i].1 == 0 {
            c.swap_remove(i);
        }
    }
    let left = c.iter().map(|(_, n)| *n).sum();
    if c.is_empty() {
        counts.remove(channel);
    }
    left
}

fn workers_of(counts: &AHashMap<Box<str>, Counts>, channel: &str) -> SmallVec<[u16; 8]> {
    counts.get(channel).map(|c| c.iter().map(|(w, _)| *w).collect()).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owner_is_stable_and_in_range() {
        for w in 1..9 {
            for ch in ["a", "news", "chat:1", "ünï"] {
                let o = owner_of(ch, w);
                assert!(o < w);
                assert_eq!(o, owner_of(ch, w));
            }
        }
    }
}
