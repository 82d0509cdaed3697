//! The channels a worker owns: which workers have subscribers of each (so a publication is
//! sent once per interested worker), over the worker's [`Engine`] that keeps their state; and
//! the pure routing function that says which worker owns a channel.
//!
//! Called only from its own worker thread: by the router directly when the command's channel
//! is owned locally, or by the inbox loop for commands other workers forwarded. With the
//! Redis engine, data commands (publish, history, presence) run on the receiving worker
//! ([`redis::run_data`]) and subscriptions on the owner ([`redis::subscribe`]).

pub mod nats;
pub mod redis;

use std::sync::Arc;
use std::time::Instant;

use ahash::AHashMap;
use smallvec::SmallVec;

use crate::api::{Reply, Res};
use crate::delta::{Bases, DeltaPub};
use crate::engine::memory::{Counts, Memory};
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
    // The high half of hash × workers: the same spread as `hash % workers` without a 64-bit
    // division, which was a third of this function's time on the reading worker of a
    // pipelined request (every line is routed).
    ((s.hash_one(channel) as u128 * workers as u128) >> 64) as usize
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
    /// Sets (or removes) a key of a map channel.
    MapPublish(Box<MapPub>),
    /// A page of a map channel's state (with `key`: that key's entry only); with a
    /// `revision_epoch`, 112 unless the stream is still of that epoch.
    MapRead {
        channel: Box<str>,
        cursor: String,
        limit: usize,
        key: String,
        revision_epoch: String,
    },
    /// A map channel's change stream, read as `history` reads a stream.
    MapStream(History),
    MapStats(Box<str>),
    MapClear(Box<str>),
    /// A shared poll subscriber comes or goes (see [`PollMember`]).
    PollMember(Box<PollMember>),
}

pub use crate::model::MapPub;

/// A shared poll subscriber comes (`came`) or goes: its presence entry and its join or
/// leave, as for a subscriber of a stream, with no subscriber counted (the poll, not the
/// channel, sends it its updates).
#[derive(Debug)]
pub struct PollMember {
    pub channel: Arc<str>,
    pub info: ClientInfo,
    pub came: bool,
    pub presence: bool,
    pub join_leave: bool,
}

impl ShardOp {
    /// Reads and writes of channel data (not subscriber bookkeeping): with the Redis engine
    /// these go straight to Redis from any worker.
    pub fn is_data(&self) -> bool {
        !matches!(self, ShardOp::Unsubscribe(_) | ShardOp::PollMember(_))
    }

    /// The channel the operation is about (which decides the worker that owns it).
    pub fn channel(&self) -> &str {
        match self {
            ShardOp::Publish(p) => &p.channel,
            ShardOp::History(h) | ShardOp::MapStream(h) => &h.channel,
            ShardOp::HistoryRemove(c) | ShardOp::Presence(c) | ShardOp::PresenceStats(c) => c,
            ShardOp::Unsubscribe(u) => &u.channel,
            ShardOp::MapPublish(m) => &m.publish.channel,
            ShardOp::MapRead { channel, .. } | ShardOp::MapStats(channel) | ShardOp::MapClear(channel) => channel,
            ShardOp::PollMember(m) => &m.channel,
        }
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
    /// Cache recovery: `recover` answers with the latest publication only.
    pub cache: bool,
    /// An unrecovered `recover` fails with 112 (unrecoverable position), nothing counted.
    pub reject_unrecovered: bool,
}

impl SubOp {
    /// The subscribe fails: it asked to recover, was not recovered, and would rather get an
    /// error than a fresh position.
    pub fn rejected(&self, recovered: bool) -> bool {
        self.reject_unrecovered && self.recover.is_some() && !recovered
    }
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
    /// What the subscription added on the owner beyond the count, for undoing it when the
    /// client is gone by the time the answer arrives: the client id entered into presence,
    /// and the info its join was announced with (a leave follows).
    pub undo: Undo,
}

/// See [`SubOutcome::undo`].
#[derive(Debug, Clone, Default)]
pub struct Undo {
    pub presence: Option<Arc<str>>,
    pub joined: Option<ClientInfo>,
}

impl Undo {
    fn of(op: &SubOp) -> Undo {
        Undo { presence: op.presence.as_ref().map(|i| i.client.clone()), joined: op.join.clone() }
    }

    /// The unsubscription that takes back a subscription of a client on `worker`.
    pub fn unsub_op(self, channel: Arc<str>, worker: u16) -> UnsubOp {
        UnsubOp { channel, worker, client: self.presence, leave: self.joined }
    }
}

/// The channels one worker owns. See the module docs.
pub struct Shard {
    /// Subscriber counts of the owned channels with the Redis engine (the memory engine keeps
    /// them beside each channel's state, see `engine::memory::Counts`).
    counts: AHashMap<Box<str>, Counts>,
    engine: Engine,
    /// The node's own store of map channels with the NATS broker (which keeps nothing), and
    /// with the Redis engine under `map_broker.type: memory`: their keys, stream, presence
    /// and subscriber counts live on this node only, as with Centrifugo's memory map broker.
    maps: Option<Memory>,
    /// The last publication delivered on channels that use deltas (both engines).
    bases: Bases,
}

impl Shard {
    pub fn new(engine: Engine) -> Self {
        let maps = match &engine {
            Engine::Nats(n) => Some(Memory::new(n.cfg().clone())),
            Engine::Redis(r) if r.cfg().map_broker.memory() => Some(Memory::new(r.cfg().clone())),
            _ => None,
        };
        Shard { counts: AHashMap::new(), engine, maps, bases: Bases::default() }
    }

    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// The delta step of a publication of `data` delivered on `channel` (see `crate::delta`);
    /// `requested`: it was published with `delta`.
    pub fn delta_step(&mut self, channel: &Arc<str>, data: &bytes::Bytes, requested: bool) -> Option<DeltaPub> {
        self.bases.step(channel, data, requested)
    }

    /// [`Shard::delta_step`] of a map channel's change of `key` (see `Bases::key_step`).
    pub fn key_delta_step(&mut self, channel: &Arc<str>, p: &Publication, requested: bool) -> Option<DeltaPub> {
        let key = p.key.as_ref()?;
        self.bases.key_step(channel, key, &p.data.bytes, p.removed, requested)
    }

    /// A plain publish (no idempotency key, no version) to a channel that keeps and delivers
    /// nothing, answered without building its publication: `Some` with the reply, `None`
    /// when the publish must be [applied](Shard::apply). `history`: the channel's options
    /// write history for this publish.
    pub fn publish_void(&self, channel: &str, history: bool) -> Option<Reply> {
        match &self.engine {
            Engine::Memory(m) if m.publish_is_void(channel, history) => {
                crate::metrics::message_sent(crate::metrics::Kind::Publication);
                Some(Ok(Res::Publish(None)))
            }
            _ => None,
        }
    }

    /// Executes one owner-side operation. The origin has already validated the channel name
    /// and namespace. Pushes to deliver are appended to `fanout`.
    pub fn apply(&mut self, op: ShardOp, now: Instant, fanout: &mut Vec<Fanout>) -> Reply {
        let m = match &mut self.engine {
            Engine::Memory(m) => m,
            Engine::Redis(r) => match self.maps.as_mut() {
                Some(m) if m.is_map(op.channel()) => m,
                _ => return apply_redis(&mut self.counts, &mut self.bases, r, op),
            },
            Engine::Nats(n) => match self.maps.as_mut() {
                Some(m) if m.is_map(op.channel()) => m,
                _ => return nats::apply(&mut self.counts, &mut self.bases, n, op),
            },
        };
        match op {
            ShardOp::MapPublish(mp) => {
                crate::metrics::message_sent(crate::metrics::Kind::Publication);
                let (update, delivery) = m.map_publish(*mp, now)?;
                if let Some(d) = delivery {
                    let delta = d.prev.map(|prev| DeltaPub::keyed(&prev, &d.publication.data.bytes));
                    let prepared =
                        Prepared::new(d.channel, PushKind::Publication, PushBody::Pub(d.publication)).with_delta(delta);
                    fanout.push(Fanout { prepared: Arc::new(prepared), workers: d.workers });
                }
                Ok(Res::MapUpdate(update))
            }
            ShardOp::MapRead { channel, cursor, limit, key, revision_epoch } => {
                let page = m.map_read(&channel, &cursor, limit, &key, now)?;
                let state = Res::MapState { entries: page.entries, position: page.position, cursor: page.cursor };
                map_revision(state, &revision_epoch)
            }
            ShardOp::MapStream(h) => {
                let (entries, position) = m.history(h, now)?;
                Ok(Res::MapState { entries, position, cursor: String::new() })
            }
            ShardOp::MapStats(ch) => Ok(Res::MapStats(m.map_stats(&ch) as u64)),
            ShardOp::MapClear(ch) => {
                m.map_clear(&ch);
                Ok(Res::Empty)
            }
            ShardOp::Publish(p) => {
                crate::metrics::message_sent(crate::metrics::Kind::Publication);
                let (result, delivery) = m.publish(p, now)?;
                if let Some(d) = delivery {
                    let delta = self.bases.step(&d.channel, &d.publication.data.bytes, d.delta);
                    let prepared = Prepared::new(d.channel, PushKind::Publication, PushBody::Pub(d.publication))
                        .with_delta(delta)
                        .with_position(result.as_ref());
                    fanout.push(Fanout { prepared: Arc::new(prepared), workers: d.workers });
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
            ShardOp::PollMember(pm) => {
                let PollMember { channel, info, came, presence, join_leave } = *pm;
                match (came, presence) {
                    (true, true) => m.presence_add(&channel, info.clone()),
                    (false, true) => m.presence_remove(&channel, &info.client),
                    _ => {}
                }
                if join_leave {
                    let workers = m.subscribers(&channel).map(workers).unwrap_or_default();
                    let body = if came { PushBody::Join(info) } else { PushBody::Leave(info) };
                    if !workers.is_empty() {
                        let prepared = Prepared::new(channel.clone(), PushKind::JoinLeave, body);
                        fanout.push(Fanout { prepared: Arc::new(prepared), workers });
                    }
                }
                m.forget_if_idle(&channel);
                Ok(Res::Empty)
            }
            ShardOp::Unsubscribe(u) => {
                let counts = m.subscribers_mut(&u.channel);
                let left = uncount(counts, u.worker);
                let workers = workers(counts);
                if left == 0 {
                    self.bases.forget(&u.channel);
                }
                if let Some(client) = &u.client {
                    m.presence_remove(&u.channel, client);
                }
                if let Some(info) = u.leave {
                    if left > 0 {
                        let prepared = Prepared::new(u.channel.clone(), PushKind::JoinLeave, PushBody::Leave(info));
                        fanout.push(Fanout { prepared: Arc::new(prepared), workers });
                    }
                }
                m.forget_if_idle(&u.channel);
                Ok(Res::Empty)
            }
        }
    }

    /// A subscription with the memory engine (or to a map channel the node keeps itself,
    /// [`Shard::keeps_map`]), answered at once (the Redis engine's owner subscribes its topic
    /// first: [`redis::subscribe`]).
    pub fn subscribe(&mut self, op: SubOp, now: Instant, fanout: &mut Vec<Fanout>) -> Result<SubOutcome, ApiError> {
        let m = match (&mut self.engine, self.maps.as_mut()) {
            (Engine::Memory(m), _) => m,
            (_, Some(m)) if m.is_map(&op.channel) => m,
            _ => return Err(ApiError::api_internal()),
        };
        let start = m.start(&op.channel, op.position, op.recover.as_ref(), op.recover_limit, op.cache, now)?;
        if op.rejected(start.recovered) {
            return Err(ApiError::UNRECOVERABLE_POSITION);
        }
        let undo = Undo::of(&op);
        let counts = m.subscribers_mut(&op.channel);
        count(counts, op.worker);
        let workers = workers(counts);
        if let Some(info) = op.presence {
            m.presence_add(&op.channel, info);
        }
        if let Some(info) = op.join {
            let prepared = Prepared::new(op.channel.clone(), PushKind::JoinLeave, PushBody::Join(info));
            fanout.push(Fanout { prepared: Arc::new(prepared), workers });
        }
        Ok(SubOutcome {
            channel: op.channel,
            position: start.position,
            publications: start.publications,
            recovered: start.recovered,
            extra: Vec::new(),
            undo,
        })
    }

    /// One more subscriber of `channel` on `worker` (the Redis engine's owner, once the
    /// channel's topic is subscribed).
    pub(crate) fn count(&mut self, channel: &str, worker: u16) {
        let counts = match &mut self.engine {
            Engine::Memory(m) => m.subscribers_mut(channel),
            Engine::Redis(_) | Engine::Nats(_) => match self.counts.get_mut(channel) {
                Some(c) => c,
                None => self.counts.entry(channel.into()).or_default(),
            },
        };
        count(counts, worker);
    }

    fn counts(&self, channel: &str) -> Option<&Counts> {
        match &self.engine {
            Engine::Memory(m) => m.subscribers(channel),
            Engine::Redis(_) | Engine::Nats(_) => {
                self.counts.get(channel).or_else(|| self.maps.as_ref()?.subscribers(channel))
            }
        }
    }

    /// Whether the node keeps `channel` itself though the engine is not the memory engine:
    /// a map channel with the NATS broker or under `map_broker.type: memory` (subscribed
    /// with [`Shard::subscribe`], its operations run on its owner).
    pub fn keeps_map(&self, channel: &str) -> bool {
        self.maps.as_ref().is_some_and(|m| m.is_map(channel))
    }

    /// How many subscribers the node has for `channel`.
    pub fn subscriber_count(&self, channel: &str) -> u64 {
        self.counts(channel).map(|c| c.iter().map(|(_, n)| *n as u64).sum()).unwrap_or(0)
    }

    /// The workers with subscribers of `channel`.
    pub fn workers_of(&self, channel: &str) -> SmallVec<[u16; 8]> {
        self.counts(channel).map(workers).unwrap_or_default()
    }

    /// Owned channels with at least one subscriber on this node (each channel has one owner,
    /// so summing this over the workers counts every channel once).
    pub fn channels_with_subscribers(&self) -> u64 {
        match &self.engine {
            Engine::Memory(m) => m.subscribed_channels(),
            Engine::Redis(_) | Engine::Nats(_) => {
                self.counts.len() as u64 + self.maps.as_ref().map_or(0, Memory::subscribed_channels)
            }
        }
    }

    /// Frees expired channel state, at most `budget` channels per call; removes expired keys
    /// of map channels, returning their removals to deliver.
    pub fn sweep(&mut self, now: Instant, budget: usize) -> Vec<Fanout> {
        let mut out = Vec::new();
        let memory = match &mut self.engine {
            Engine::Memory(m) => Some(m),
            _ => self.maps.as_mut(),
        };
        if let Some(m) = memory {
            for d in m.map_expire(now) {
                let prepared = Prepared::new(d.channel, PushKind::Publication, PushBody::Pub(d.publication));
                out.push(Fanout { prepared: Arc::new(prepared), workers: d.workers });
            }
            m.sweep(now, budget);
        }
        out
    }
}

/// The one operation that runs on the owner with the Redis engine: a subscriber leaves
/// (or a shared poll subscriber comes or goes).
fn apply_redis(
    counts: &mut AHashMap<Box<str>, Counts>,
    bases: &mut Bases,
    r: &crate::engine::redis::RedisEngine,
    op: ShardOp,
) -> Reply {
    // Data commands run on the receiving worker (`redis::run_data`).
    match op {
        ShardOp::Unsubscribe(u) => Ok(unsubscribe(counts, bases, r, &u)),
        ShardOp::PollMember(pm) => Ok(poll_member(r, &pm)),
        _ => Err(ApiError::api_internal()),
    }
}

/// What the owner asks of an engine that carries channels between nodes (Redis, NATS) when
/// a subscriber comes or goes.
pub(crate) trait Members {
    /// Adds a presence entry.
    fn present(&self, channel: &str, info: &ClientInfo);
    /// Removes a presence entry.
    fn absent(&self, channel: &str, client: &str);
    /// Emits a join (`joined`) or a leave to every node.
    fn join_leave(&self, channel: &str, info: &ClientInfo, joined: bool);
    /// The node has no subscriber of `channel` left.
    fn release(&self, channel: &str);
}

/// A subscriber leaves: uncounted, out of presence, its leave emitted; the channel released
/// with the node's last subscriber.
pub(crate) fn unsubscribe(
    counts: &mut AHashMap<Box<str>, Counts>,
    bases: &mut Bases,
    e: &impl Members,
    u: &UnsubOp,
) -> Res {
    let left = match counts.get_mut(&*u.channel) {
        Some(c) => {
            let left = uncount(c, u.worker);
            if c.is_empty() {
                counts.remove(&*u.channel);
            }
            left
        }
        None => 0,
    };
    if let Some(client) = &u.client {
        e.absent(&u.channel, client);
    }
    if let Some(info) = &u.leave {
        e.join_leave(&u.channel, info, false);
    }
    if left == 0 {
        bases.forget(&u.channel);
        e.release(&u.channel);
    }
    Res::Empty
}

/// A shared poll subscriber comes or goes: presence and join/leave only.
pub(crate) fn poll_member(e: &impl Members, pm: &PollMember) -> Res {
    match (pm.came, pm.presence) {
        (true, true) => e.present(&pm.channel, &pm.info),
        (false, true) => e.absent(&pm.channel, &pm.info.client),
        _ => {}
    }
    if pm.join_leave {
        e.join_leave(&pm.channel, &pm.info, pm.came);
    }
    Res::Empty
}

/// A state page read for a caller that read earlier pages in stream epoch `epoch` (empty:
/// none): 112 when the stream has another epoch now (the state was reset meanwhile).
pub(crate) fn map_revision(state: Res, epoch: &str) -> Reply {
    match &state {
        Res::MapState { position, .. } if !epoch.is_empty() && *position.epoch != *epoch => {
            Err(ApiError::UNRECOVERABLE_POSITION)
        }
        _ => Ok(state),
    }
}

/// One more subscriber on `worker`.
pub(crate) fn count(c: &mut Counts, worker: u16) {
    match c.iter_mut().find(|(w, _)| *w == worker) {
        Some((_, n)) => *n += 1,
        None => c.push((worker, 1)),
    }
}

/// One subscriber less on `worker`; returns how many the node still has.
pub(crate) fn uncount(c: &mut Counts, worker: u16) -> u32 {
    if let Some(i) = c.iter().position(|(w, _)| *w == worker) {
        c[i].1 -= 1;
        if c[i].1 == 0 {
            c.swap_remove(i);
        }
    }
    c.iter().map(|(_, n)| *n).sum()
}

fn workers(c: &Counts) -> SmallVec<[u16; 8]> {
    c.iter().map(|(w, _)| *w).collect()
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
