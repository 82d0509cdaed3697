//! A worker's owned world: the channels this worker owns (history, presence, idempotency
//! results) and the pure routing function that says which worker owns a channel.
//!
//! Called only from its own worker thread: by the API executor directly when the command's
//! channel is owned locally, or by the inbox loop for commands other workers forwarded.

use std::sync::Arc;
use std::time::{Duration, Instant};

use ahash::AHashMap;

use bytes::Bytes;
use smallvec::SmallVec;

use crate::api::Res;
use crate::config::Config;
use crate::engine::memory::{Presence, Stream};
use crate::error::ApiError;
use crate::model::{ClientInfo, History, Publication, Publish, StreamPosition};
use crate::protocol::{Format, PushBody};

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

/// idempotency key → (first result, expiry).
type IdempotencyCache = AHashMap<Box<str>, (Option<StreamPosition>, Instant)>;

/// How long an idempotency key keeps its first result.
const IDEMPOTENCY_TTL: Duration = Duration::from_secs(300);

/// Work that runs on a channel's owner.
#[derive(Debug)]
pub enum ShardOp {
    Publish(Publish),
    History(History),
    HistoryRemove(Box<str>),
    Presence(Box<str>),
    PresenceStats(Box<str>),
    /// A connection on `worker` subscribes: count it, add presence, emit join, and answer
    /// with the stream position (and recovered publications).
    Subscribe(Box<SubOp>),
    /// The reverse of a successful `Subscribe` (exactly one per success).
    Unsubscribe(Box<UnsubOp>),
    /// How many subscribers the node has for the channel (`Res::Count`).
    Subscribers(Box<str>),
}

impl ShardOp {
    /// Reads and writes of channel data (not subscriber bookkeeping): with the Redis engine
    /// these go straight to Redis from any worker.
    pub fn is_data(&self) -> bool {
        !matches!(self, ShardOp::Subscribe(_) | ShardOp::Unsubscribe(_) | ShardOp::Subscribers(_))
    }
}

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

/// Outcome of a `Subscribe` on the owner.
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

/// What kind of push a prepared frame is (subscribers filter join/leave).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PushKind {
    Publication,
    JoinLeave,
}

/// Whether publications read after `since` recover a subscriber to `top`: they run without a
/// gap from since+1 to the top (or there are none and nothing was missed), within `limit`.
pub fn recovers(since: u64, top: u64, pubs: &[Publication], limit: usize) -> bool {
    match pubs.first() {
        None => since == top,
        Some(first) => first.offset == since + 1 && pubs.len() <= limit && pubs.last().map(|p| p.offset) == Some(top),
    }
}

/// A push encoded once for every subscriber: the JSON WebSocket frame is built by the owner;
/// each receiving worker encodes the protobuf frame at most once for its own subscribers.
#[derive(Debug)]
pub struct Prepared {
    pub channel: Arc<str>,
    pub kind: PushKind,
    pub push: PushBody,
    /// The complete text frame for JSON clients; `None` when the payload is binary (JSON
    /// clients cannot receive it and are disconnected with 3506).
    pub json: Option<Bytes>,
}

impl Prepared {
    pub fn new(channel: Arc<str>, kind: PushKind, push: PushBody) -> Self {
        // Binary payloads reach JSON clients raw when they are JSON text (as in Centrifugo);
        // other bytes cannot travel in a JSON frame.
        let binary = matches!(&push, PushBody::Pub(p) if !p.data.json_ok());
        let json = (!binary).then(|| {
            let mut buf = Vec::with_capacity(128);
            crate::protocol::encode_push(Format::Json, &channel, &push, &mut buf);
            crate::wire::ws::frame(crate::wire::ws::OpCode::Text, &buf)
        });
        Prepared { channel, kind, push, json }
    }

    /// The complete binary frame for protobuf clients.
    pub fn protobuf_frame(&self) -> Bytes {
        let mut buf = Vec::with_capacity(128);
        crate::protocol::encode_push(Format::Protobuf, &self.channel, &self.push, &mut buf);
        crate::wire::ws::frame(crate::wire::ws::OpCode::Binary, &buf)
    }
}

/// A prepared push and the workers that have subscribers for it.
pub struct Fanout {
    pub prepared: Arc<Prepared>,
    pub workers: SmallVec<[u16; 8]>,
}

/// A channel owned by this worker.
#[derive(Debug, Default)]
struct ChannelState {
    /// Subscriber count per worker (only workers with at least one).
    workers: SmallVec<[(u16, u32); 4]>,
    stream: Option<Stream>,
    presence: Presence,
    /// idempotency key → (result, expiry).
    idempotency: Option<Box<IdempotencyCache>>,
    /// Last accepted (version, version_epoch).
    version: Option<(u64, Box<str>)>,
}

impl ChannelState {
    /// The channel's stream, recreated (new epoch, offsets from 1) when its meta outlived
    /// `meta_ttl` since the last access, created when absent.
    fn live_stream(&mut self, now: Instant, meta_ttl: Duration) -> &mut Stream {
        if self.stream.as_ref().is_some_and(|s| s.meta_expired(now, meta_ttl)) {
            self.stream = None;
        }
        self.stream.get_or_insert_with(|| Stream::new(now))
    }

    fn is_idle(&self) -> bool {
        self.workers.is_empty()
            && self.stream.is_none()
            && self.presence.is_empty()
            && self.idempotency.is_none()
            && self.version.is_none()
    }
}

/// The channels one worker owns.
pub struct Shard {
    cfg: Arc<Config>,
    channels: AHashMap<Box<str>, ChannelState>,
    /// Channels to visit on the next sweep (names; the sweep removes idle state).
    sweep_cursor: usize,
}

impl Shard {
    pub fn new(cfg: Arc<Config>) -> Self {
        Shard { cfg, channels: AHashMap::new(), sweep_cursor: 0 }
    }

    /// Executes one owner-side operation. The origin has already validated the channel name
    /// and namespace. Pushes to deliver are appended to `fanout`.
    pub fn exec(&mut self, op: ShardOp, now: Instant, fanout: &mut Vec<Fanout>) -> Result<Res, ApiError> {
        match op {
            ShardOp::Publish(p) => self.publish(p, now, fanout).map(Res::Publish),
            ShardOp::Subscribe(s) => self.subscribe(*s, now, fanout).map(Res::Subscribed),
            ShardOp::Unsubscribe(u) => {
                self.unsubscribe(*u, fanout);
                Ok(Res::Empty)
            }
            ShardOp::History(h) => self.history(h, now),
            ShardOp::HistoryRemove(ch) => {
                if let Some(s) = self.channels.get_mut(&ch).and_then(|c| c.stream.as_mut()) {
                    s.clear(now);
                }
                Ok(Res::Empty)
            }
            ShardOp::Presence(ch) => {
                Ok(Res::Presence(self.channels.get(&ch).map(|c| c.presence.list()).unwrap_or_default()))
            }
            ShardOp::PresenceStats(ch) => {
                let (num_clients, num_users) = self.channels.get(&ch).map(|c| c.presence.stats()).unwrap_or((0, 0));
                Ok(Res::PresenceStats { num_clients, num_users })
            }
            ShardOp::Subscribers(ch) => Ok(Res::Count(
                self.channels.get(&ch).map(|c| c.workers.iter().map(|(_, n)| *n as u64).sum()).unwrap_or(0),
            )),
        }
    }

    fn publish(
        &mut self,
        p: Publish,
        now: Instant,
        fanout: &mut Vec<Fanout>,
    ) -> Result<Option<StreamPosition>, ApiError> {
        let opts = self.cfg.resolve_channel(&p.channel)?.options;
        let meta_ttl = self.cfg.history_meta_ttl(opts);
        let history = opts.history_enabled() && !p.skip_history;
        let state = match self.channels.get_mut(&*p.channel) {
            Some(s) => s,
            // Nothing to keep and nobody to tell: no state is created for the channel.
            None if !history && p.idempotency_key.is_none() && p.version == 0 => return Ok(None),
            None => self.channels.entry(p.channel.clone()).or_default(),
        };
        if let Some(key) = &p.idempotency_key {
            if let Some((res, exp)) = state.idempotency.as_ref().and_then(|m| m.get(key)) {
                if *exp > now {
                    return Ok(res.clone());
                }
            }
        }
        if p.version > 0 {
            if let Some((v, e)) = &state.version {
                if *e == p.version_epoch && p.version <= *v {
                    // An older or repeated version is dropped, as Centrifugo does.
                    return Ok(None);
                }
            }
            state.version = Some((p.version, p.version_epoch.clone()));
        }
        let mut publication = Publication { offset: 0, data: p.data, info: p.info, tags: p.tags };
        let result = if history {
            let stream = state.live_stream(now, meta_ttl);
            let pos = stream.add(publication.clone(), opts.history_size, opts.history_ttl, now);
            publication.offset = pos.offset;
            Some(pos)
        } else {
            None
        };
        if !state.workers.is_empty() {
            let channel: Arc<str> = Arc::from(&*p.channel);
            let prepared = Arc::new(Prepared::new(channel, PushKind::Publication, PushBody::Pub(publication)));
            fanout.push(Fanout { prepared, workers: state.workers.iter().map(|(w, _)| *w).collect() });
        }
        if let Some(key) = p.idempotency_key {
            let map = state.idempotency.get_or_insert_with(Default::default);
            map.insert(key, (result.clone(), now + IDEMPOTENCY_TTL));
        }
        Ok(result)
    }

    fn history(&mut self, h: History, now: Instant) -> Result<Res, ApiError> {
        let opts = self.cfg.resolve_channel(&h.channel)?.options;
        let meta_ttl = self.cfg.history_meta_ttl(opts);
        let state = match self.channels.get_mut(&*h.channel) {
            Some(s) => s,
            None => self.channels.entry(h.channel.clone()).or_default(),
        };
        // Reading history creates the stream meta (epoch) when absent, as Centrifugo does.
        let stream = state.live_stream(now, meta_ttl);
        let (publications, position) = stream.read(h.since.as_ref(), h.limit as i64, h.reverse, now)?;
        Ok(Res::History { publications, position })
    }

    fn subscribe(&mut self, op: SubOp, now: Instant, fanout: &mut Vec<Fanout>) -> Result<SubOutcome, ApiError> {
        let opts = self.cfg.resolve_channel(&op.channel)?.options;
        let meta_ttl = self.cfg.history_meta_ttl(opts);
        let state = match self.channels.get_mut(&*op.channel) {
            Some(s) => s,
            None => self.channels.entry(Box::from(&*op.channel)).or_default(),
        };
        let mut outcome = SubOutcome {
            channel: op.channel.clone(),
            position: None,
            publications: Vec::new(),
            recovered: false,
            extra: Vec::new(),
        };
        if op.position || op.recover.is_some() {
            if opts.history_enabled() {
                let stream = state.live_stream(now, meta_ttl);
                let top = stream.position();
                if let Some(since) = &op.recover {
                    if since.epoch.is_empty() || since.epoch == top.epoch {
                        let since = StreamPosition { offset: since.offset, epoch: top.epoch.clone() };
                        if let Ok((pubs, _)) = stream.read(Some(&since), op.recover_limit as i64 + 1, false, now) {
                            if recovers(since.offset, top.offset, &pubs, op.recover_limit) {
                                outcome.publications = pubs;
                                outcome.recovered = true;
                            }
                        }
                    }
                }
                outcome.position = Some(top);
            } else {
                outcome.position = Some(StreamPosition::default());
            }
        }
        match state.workers.iter_mut().find(|(w, _)| *w == op.worker) {
            Some((_, n)) => *n += 1,
            None => state.workers.push((op.worker, 1)),
        }
        if let Some(info) = op.presence {
            state.presence.add(info);
        }
        if let Some(info) = op.join {
            let prepared = Arc::new(Prepared::new(op.channel.clone(), PushKind::JoinLeave, PushBody::Join(info)));
            fanout.push(Fanout { prepared, workers: state.workers.iter().map(|(w, _)| *w).collect() });
        }
        Ok(outcome)
    }

    fn unsubscribe(&mut self, op: UnsubOp, fanout: &mut Vec<Fanout>) {
        let Some(state) = self.channels.get_mut(&*op.channel) else { return };
        if let Some(i) = state.workers.iter().position(|(w, _)| *w == op.worker) {
            state.workers[i].1 -= 1;
            if state.workers[i].1 == 0 {
                state.workers.swap_remove(i);
            }
        }
        if let Some(client) = &op.client {
            state.presence.remove(client);
        }
        if let Some(info) = op.leave {
            if !state.workers.is_empty() {
                let prepared = Arc::new(Prepared::new(op.channel.clone(), PushKind::JoinLeave, PushBody::Leave(info)));
                fanout.push(Fanout { prepared, workers: state.workers.iter().map(|(w, _)| *w).collect() });
            }
        }
        if state.is_idle() {
            self.channels.remove(&*op.channel);
        }
    }

    /// Counts one more subscriber of `channel` on `worker` (Redis engine; the memory engine
    /// counts inside `exec`).
    pub fn count_subscriber(&mut self, channel: &str, worker: u16) {
        let state = match self.channels.get_mut(channel) {
            Some(s) => s,
            None => self.channels.entry(channel.into()).or_default(),
        };
        match state.workers.iter_mut().find(|(w, _)| *w == worker) {
            Some((_, n)) => *n += 1,
            None => state.workers.push((worker, 1)),
        }
    }

    /// Counts one subscriber less; returns how many the node still has.
    pub fn uncount_subscriber(&mut self, channel: &str, worker: u16) -> u32 {
        let Some(state) = self.channels.get_mut(channel) else { return 0 };
        if let Some(i) = state.workers.iter().position(|(w, _)| *w == worker) {
            state.workers[i].1 -= 1;
            if state.workers[i].1 == 0 {
                state.workers.swap_remove(i);
            }
        }
        let left = state.workers.iter().map(|(_, n)| *n).sum();
        if state.is_idle() {
            self.channels.remove(channel);
        }
        left
    }

    /// The workers with subscribers of `channel`.
    pub fn workers_of(&self, channel: &str) -> SmallVec<[u16; 8]> {
        self.channels.get(channel).map(|s| s.workers.iter().map(|(w, _)| *w).collect()).unwrap_or_default()
    }

    /// Owned channels with at least one subscriber on this node (each channel has one owner,
    /// so summing this over the workers counts every channel once).
    pub fn channels_with_subscribers(&self) -> u64 {
        self.channels.values().filter(|c| !c.workers.is_empty()).count() as u64
    }

    /// Every channel's presence entries (for the Redis engine's periodic refresh).
    pub fn presence_snapshot(&self) -> Vec<(Box<str>, Vec<ClientInfo>)> {
        self.channels
            .iter()
            .filter(|(_, s)| !s.presence.is_empty())
            .map(|(name, s)| (name.clone(), s.presence.list()))
            .collect()
    }

    /// Adds or removes a client in a channel's presence table.
    pub fn presence_update(&mut self, channel: &str, info: Result<ClientInfo, Arc<str>>) {
        match info {
            Ok(info) => self.channels.entry(channel.into()).or_default().presence.add(info),
            Err(client) => {
                if let Some(state) = self.channels.get_mut(channel) {
                    state.presence.remove(&client);
                }
            }
        }
    }

    /// Frees state that has expired: idempotency results past 5 minutes, streams whose meta
    /// TTL passed, and channels with nothing left. Visits at most `budget` channels per call
    /// so a large map never stalls the loop.
    pub fn sweep(&mut self, now: Instant, budget: usize) {
        let cfg = self.cfg.clone();
        let len = self.channels.len();
        if len == 0 {
            return;
        }
        let start = self.sweep_cursor % len;
        let mut dead: Vec<Box<str>> = Vec::new();
        for (name, state) in self.channels.iter_mut().skip(start).take(budget) {
            if let Some(m) = state.idempotency.as_mut() {
                m.retain(|_, (_, exp)| *exp > now);
                if m.is_empty() {
                    state.idempotency = None;
                }
            }
            if let Some(s) = &state.stream {
                let meta_ttl =
                    cfg.resolve_channel(name).map(|r| cfg.history_meta_ttl(r.options)).unwrap_or(Duration::ZERO);
                if s.meta_expired(now, meta_ttl) {
                    state.stream = None;
                }
            }
            if state.is_idle() {
                dead.push(name.clone());
            }
        }
        self.sweep_cursor = start + budget;
        for name in dead {
            self.channels.remove(&name);
        }
    }

    /// Number of channels with any owned state (for tests and metrics).
    pub fn owned_channels(&self) -> usize {
        self.channels.len()
    }
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
