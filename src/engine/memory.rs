//! The memory engine: the state of the channels one worker owns (history streams, presence
//! tables, idempotency results, publication versions), owned by that worker (no locks).
//!
//! A [`Stream`] is a ring of the last `history_size` publications of a channel with
//! contiguous offsets, so finding `since` is index arithmetic. Items expire together
//! `history_ttl` after the last publish; the stream's meta (top offset + epoch) lives
//! `history_meta_ttl` after the last access, then the stream is recreated with a new epoch.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ahash::AHashMap;
use rand::Rng;
use smallvec::SmallVec;

use crate::config::Config;
use crate::error::ApiError;
use crate::model::{ClientInfo, History, Publication, Publish, StreamPosition};

/// A random epoch: 8 ASCII letters, as Centrifugo's memory engine makes them.
pub fn new_epoch() -> Arc<str> {
    const LETTERS: &[u8] = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ";
    let mut rng = rand::rng();
    let s: String = (0..8).map(|_| LETTERS[rng.random_range(0..LETTERS.len())] as char).collect();
    s.into()
}

/// One channel's history stream.
#[derive(Debug)]
pub struct Stream {
    items: VecDeque<Publication>,
    top: u64,
    epoch: Arc<str>,
    expire_items_at: Option<Instant>,
    last_access: Instant,
}

impl Stream {
    pub fn new(now: Instant) -> Self {
        Stream { items: VecDeque::new(), top: 0, epoch: new_epoch(), expire_items_at: None, last_access: now }
    }

    pub fn position(&self) -> StreamPosition {
        StreamPosition { offset: self.top, epoch: self.epoch.clone() }
    }

    /// Drops items whose TTL has passed.
    fn expire(&mut self, now: Instant) {
        if let Some(at) = self.expire_items_at {
            if now >= at {
                self.items.clear();
                self.expire_items_at = None;
            }
        }
    }

    /// The meta counts as used now (a map presence keep-alive: its TTL starts again).
    pub fn touch(&mut self, now: Instant) {
        self.last_access = now;
    }

    /// True when the meta has not been touched for `meta_ttl`: the stream should be dropped.
    pub fn meta_expired(&self, now: Instant, meta_ttl: Duration) -> bool {
        now.duration_since(self.last_access) >= meta_ttl
    }

    /// Appends a publication (its offset is assigned here) keeping at most `size` items.
    pub fn add(&mut self, mut publication: Publication, size: usize, ttl: Duration, now: Instant) -> StreamPosition {
        self.expire(now);
        self.top += 1;
        publication.offset = self.top;
        self.items.push_back(publication);
        while self.items.len() > size.max(1) {
            self.items.pop_front();
        }
        self.expire_items_at = Some(now + ttl);
        self.last_access = now;
        self.position()
    }

    /// Reads history. `limit` 0 → no publications; negative → all. `since` is exclusive:
    /// forward returns offsets after it, reverse returns offsets before it, newest first.
    /// A `since.epoch` that differs from the current one → 112; reverse with since 0 → 107.
    pub fn read(
        &mut self,
        since: Option<&StreamPosition>,
        limit: i64,
        reverse: bool,
        now: Instant,
    ) -> Result<(Vec<Publication>, StreamPosition), ApiError> {
        self.expire(now);
        self.last_access = now;
        if let Some(s) = since {
            if !s.epoch.is_empty() && s.epoch != self.epoch {
                return Err(ApiError::UNRECOVERABLE_POSITION);
            }
            if reverse && s.offset == 0 {
                return Err(ApiError::BAD_REQUEST);
            }
        }
        let pos = self.position();
        if limit == 0 || self.items.is_empty() {
            return Ok((Vec::new(), pos));
        }
        let max = if limit < 0 { usize::MAX } else { limit as usize };
        let first = self.items.front().map(|p| p.offset).unwrap_or(self.top + 1);
        let out: Vec<Publication> = if !reverse {
            let start = match since {
                Some(s) if s.offset >= first => (s.offset + 1 - first) as usize,
                _ => 0,
            };
            self.items.iter().skip(start).take(max).cloned().collect()
        } else {
            let end = match since {
                Some(s) if s.offset <= first => 0,
                Some(s) => ((s.offset - first) as usize).min(self.items.len()),
                None => self.items.len(),
            };
            self.items.iter().take(end).rev().take(max).cloned().collect()
        };
        Ok((out, pos))
    }

    /// Removes all publications; top offset and epoch stay.
    pub fn clear(&mut self, now: Instant) {
        self.items.clear();
        self.expire_items_at = None;
        self.last_access = now;
    }

    /// Number of retained publications.
    pub fn len(&self) -> usize {
        self.items.len()
    }

    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }
}

/// A channel's presence table: client id → info.
#[derive(Debug, Default)]
pub struct Presence {
    clients: ahash::AHashMap<Arc<str>, ClientInfo>,
    users: ahash::AHashMap<Arc<str>, u32>,
}

impl Presence {
    pub fn add(&mut self, info: ClientInfo) {
        if self.clients.insert(info.client.clone(), info.clone()).is_none() {
            *self.users.entry(info.user.clone()).or_default() += 1;
        }
    }

    pub fn remove(&mut self, client: &str) {
        if let Some(info) = self.clients.remove(client) {
            if let Some(n) = self.users.get_mut(&info.user) {
                *n -= 1;
                if *n == 0 {
                    self.users.remove(&info.user);
                }
            }
        }
    }

    pub fn list(&self) -> Vec<ClientInfo> {
        self.clients.values().cloned().collect()
    }

    pub fn stats(&self) -> (u64, u64) {
        (self.clients.len() as u64, self.users.len() as u64)
    }

    pub fn is_empty(&self) -> bool {
        self.clients.is_empty()
    }
}

/// idempotency key → (first result, expiry).
type IdempotencyCache = AHashMap<Box<str>, (Option<StreamPosition>, Instant)>;

/// How long an idempotency key keeps its first result.
const IDEMPOTENCY_TTL: Duration = Duration::from_secs(300);

/// Subscriber counts per worker (only workers with at least one), kept for the shard.
pub type Counts = SmallVec<[(u16, u32); 4]>;

/// A channel's state in memory.
#[derive(Debug, Default)]
pub(super) struct ChannelState {
    /// The shard's subscriber counts, kept beside the channel's state so a publish looks the
    /// channel up once (`benches/api_parse.rs`: two lookups cost 8–13 % of the owner's publish).
    pub(super) subscribers: Counts,
    pub(super) stream: Option<Stream>,
    /// Map channels: the keyed state (see `engine::map`).
    pub(super) map: Option<Box<super::map::MapState>>,
    presence: Presence,
    /// idempotency key → (result, expiry).
    pub(super) idempotency: Option<Box<IdempotencyCache>>,
    /// Last accepted version: (version, version_epoch, forgotten at). It lives as long as
    /// the stream's meta would (`history_meta_ttl` after the publish that set it), as in
    /// Centrifugo, where it is a field of that meta.
    version: Option<(u64, Box<str>, Instant)>,
}

impl ChannelState {
    /// The channel's stream, recreated (new epoch, offsets from 1) when its meta outlived
    /// `meta_ttl` since the last access, created when absent. A map channel's state goes
    /// with its meta (`map.meta_ttl`): a new epoch starts from no keys.
    pub(super) fn live_stream(&mut self, now: Instant, meta_ttl: Duration) -> &mut Stream {
        if self.stream.as_ref().is_some_and(|s| s.meta_expired(now, meta_ttl)) {
            self.stream = None;
            self.map = None;
        }
        self.stream.get_or_insert_with(|| Stream::new(now))
    }

    fn is_idle(&self) -> bool {
        self.subscribers.is_empty()
            && self.stream.is_none()
            && self.presence.is_empty()
            && self.idempotency.is_none()
            && self.version.is_none()
            && self.map.is_none()
    }
}

/// A publication to deliver: its channel, and the workers with subscribers of it.
pub struct Delivery {
    pub channel: Arc<str>,
    pub publication: Publication,
    pub workers: SmallVec<[u16; 8]>,
    /// Published with `delta` (the API flag or the namespace's `delta_publish`).
    pub delta: bool,
    /// A map channel's change published with `delta`: the key's previous value (none for a
    /// new key), which subscribers get a patch against (see `crate::delta`).
    pub prev: Option<bytes::Bytes>,
}

/// Where a subscriber starts: the stream top and, when asked and possible, the publications
/// it missed since its position.
#[derive(Debug, Default)]
pub struct Start {
    pub position: Option<StreamPosition>,
    pub publications: Vec<Publication>,
    pub recovered: bool,
}

/// The memory engine of one worker: the channels it owns. See the module docs.
pub struct Memory {
    pub(super) cfg: Arc<Config>,
    pub(super) channels: AHashMap<Box<str>, ChannelState>,
    /// Where the next sweep continues.
    sweep_cursor: usize,
}

impl Memory {
    pub fn new(cfg: Arc<Config>) -> Self {
        Memory { cfg, channels: AHashMap::new(), sweep_cursor: 0 }
    }

    /// Whether a plain publish (no idempotency key, no version) to `channel` would keep and
    /// deliver nothing: no history is written and the channel has no state (so no
    /// subscribers). [`Memory::publish`] answers such a publish with an empty result.
    pub fn publish_is_void(&self, channel: &str, history: bool) -> bool {
        !history && !self.channels.contains_key(channel)
    }

    /// Applies a publish: idempotency, version, history. Returns the result position and,
    /// when the channel has subscribers, the publication to deliver with the workers that have
    /// them (none for a repeated idempotency key or a stale version).
    pub fn publish(
        &mut self,
        p: Publish,
        now: Instant,
    ) -> Result<(Option<StreamPosition>, Option<Delivery>), ApiError> {
        let opts = self.cfg.resolve_channel(&p.channel)?.options;
        let meta_ttl = self.cfg.history_meta_ttl(opts);
        let history = opts.history_enabled() && !p.skip_history;
        let state = match self.channels.get_mut(&*p.channel) {
            Some(s) => s,
            // Nothing to keep and nobody to tell: no state is created for the channel.
            None if !history && p.idempotency_key.is_none() && p.version == 0 => return Ok((None, None)),
            None => self.channels.entry(p.channel.clone()).or_default(),
        };
        let publication =
            Publication { offset: 0, data: p.data, info: p.info, tags: p.tags, key: None, removed: false };
        if let Some(key) = &p.idempotency_key {
            if let Some((res, exp)) = state.idempotency.as_ref().and_then(|m| m.get(key)) {
                if *exp > now {
                    return Ok((res.clone(), None));
                }
            }
        }
        if p.version > 0 {
            if let Some((v, e, until)) = &state.version {
                if *until > now && *e == p.version_epoch && p.version <= *v {
                    // An older or repeated version is dropped, as Centrifugo does.
                    return Ok((None, None));
                }
            }
            state.version = Some((p.version, p.version_epoch.clone(), now + meta_ttl));
        }
        let mut publication = publication;
        let result = if history {
            let stream = state.live_stream(now, meta_ttl);
            let pos = stream.add(publication.clone(), opts.history_size, opts.history_ttl, now);
            publication.offset = pos.offset;
            Some(pos)
        } else {
            None
        };
        if let Some(key) = p.idempotency_key {
            let map = state.idempotency.get_or_insert_with(Default::default);
            map.insert(key, (result.clone(), now + IDEMPOTENCY_TTL));
        }
        let delivery = (!state.subscribers.is_empty()).then(|| Delivery {
            channel: Arc::from(&*p.channel),
            publication,
            workers: state.subscribers.iter().map(|(w, _)| *w).collect(),
            delta: p.delta || opts.delta_publish,
            prev: None,
        });
        Ok((result, delivery))
    }

    /// The shard's subscriber counts of `channel` (created with the channel's state).
    pub fn subscribers_mut(&mut self, channel: &str) -> &mut Counts {
        if !self.channels.contains_key(channel) {
            self.channels.insert(channel.into(), ChannelState::default());
        }
        &mut self.channels.get_mut(channel).expect("just made").subscribers
    }

    /// Whether `channel` is a map channel (in a namespace with a map subscription type).
    pub fn is_map(&self, channel: &str) -> bool {
        self.cfg.is_map_channel(channel)
    }

    /// The shard's subscriber counts of `channel`, if it has any state.
    pub fn subscribers(&self, channel: &str) -> Option<&Counts> {
        self.channels.get(channel).map(|s| &s.subscribers)
    }

    /// Channels with at least one subscriber.
    pub fn subscribed_channels(&self) -> u64 {
        self.channels.values().filter(|s| !s.subscribers.is_empty()).count() as u64
    }

    /// Frees the channel's state if nothing is left of it.
    pub fn forget_if_idle(&mut self, channel: &str) {
        if self.channels.get(channel).is_some_and(ChannelState::is_idle) {
            self.channels.remove(channel);
        }
    }

    /// `history`. Reading creates the stream meta (epoch) when absent, as Centrifugo does.
    pub fn history(&mut self, h: History, now: Instant) -> Result<(Vec<Publication>, StreamPosition), ApiError> {
        let opts = self.cfg.resolve_channel(&h.channel)?.options;
        let meta_ttl = self.cfg.history_meta_ttl(opts);
        let state = self.channels.entry(h.channel.clone()).or_default();
        state.live_stream(now, meta_ttl).read(h.since.as_ref(), h.limit as i64, h.reverse, now)
    }

    /// `history_remove`: publications go, the position stays.
    pub fn history_remove(&mut self, channel: &str, now: Instant) {
        if let Some(s) = self.channels.get_mut(channel).and_then(|c| c.stream.as_mut()) {
            s.clear(now);
        }
    }

    pub fn presence(&self, channel: &str) -> Vec<ClientInfo> {
        self.channels.get(channel).map(|c| c.presence.list()).unwrap_or_default()
    }

    /// (clients, users) in the channel's presence.
    pub fn presence_stats(&self, channel: &str) -> (u64, u64) {
        self.channels.get(channel).map(|c| c.presence.stats()).unwrap_or((0, 0))
    }

    /// Where a subscriber of `channel` starts: with `position`, the top of the stream; with
    /// `recover`, also the publications after it when they run without a gap to the top
    /// within `limit` (see [`recovers`]), or with `cache` the latest publication only (see
    /// [`recovery`]).
    pub fn start(
        &mut self,
        channel: &str,
        position: bool,
        recover: Option<&StreamPosition>,
        limit: usize,
        cache: bool,
        now: Instant,
    ) -> Result<Start, ApiError> {
        let opts = self.cfg.resolve_channel(channel)?.options;
        let mut out = Start::default();
        if !position && recover.is_none() {
            return Ok(out);
        }
        if !opts.history_enabled() && !opts.is_map() {
            out.position = Some(StreamPosition::default());
            return Ok(out);
        }
        let meta_ttl = self.cfg.history_meta_ttl(opts);
        let state = match self.channels.get_mut(channel) {
            Some(s) => s,
            None => self.channels.entry(Box::from(channel)).or_default(),
        };
        let stream = state.live_stream(now, meta_ttl);
        let top = stream.position();
        if let Some(since) = recover {
            let read = if cache {
                stream.read(None, 1, true, now)
            } else {
                let from = StreamPosition { offset: since.offset, epoch: top.epoch.clone() };
                stream.read(Some(&from), limit as i64 + 1, false, now)
            };
            if let Ok((pubs, _)) = read {
                (out.publications, out.recovered) = recovery(since, &top, pubs, limit, cache);
            }
        }
        out.position = Some(top);
        Ok(out)
    }

    pub fn presence_add(&mut self, channel: &str, info: ClientInfo) {
        self.channels.entry(channel.into()).or_default().presence.add(info);
    }

    /// Removes a client from the channel's presence (the caller frees the channel's state when
    /// nothing is left of it: [`Memory::forget_if_idle`]).
    pub fn presence_remove(&mut self, channel: &str, client: &str) {
        if let Some(state) = self.channels.get_mut(channel) {
            state.presence.remove(client);
        }
    }

    /// Frees state that has expired: idempotency results past 5 minutes, streams and versions
    /// whose meta TTL passed, and channels with nothing left. Visits at most `budget` channels per call
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
            if state.version.as_ref().is_some_and(|(_, _, until)| *until <= now) {
                state.version = None;
            }
            if let Some(s) = &state.stream {
                let meta_ttl =
                    cfg.resolve_channel(name).map(|r| cfg.history_meta_ttl(r.options)).unwrap_or(Duration::ZERO);
                if s.meta_expired(now, meta_ttl) {
                    state.stream = None;
                    state.map = None;
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

    /// Number of channels with any state (for tests and metrics).
    pub fn owned_channels(&self) -> usize {
        self.channels.len()
    }
}

/// What a subscriber recovering after `since` gets, and whether it is recovered, from `pubs`:
/// with stream recovery the publications read after `since` (at most `limit` + 1), which
/// recover it when the epoch is the same and they run to the top without a gap (see
/// [`recovers`]); with `cache` recovery (Centrifugo's cache mode) the newest publication (none
/// or one), which is all it gets: recovered when that publication is the top, and sent unless
/// the subscriber already holds the top. Without a publication it is recovered only when it
/// holds the top already.
pub fn recovery(
    since: &StreamPosition,
    top: &StreamPosition,
    mut pubs: Vec<Publication>,
    limit: usize,
    cache: bool,
) -> (Vec<Publication>, bool) {
    if !cache {
        let ok =
            (since.epoch.is_empty() || since.epoch == top.epoch) && recovers(since.offset, top.offset, &pubs, limit);
        return if ok { (pubs, true) } else { (Vec::new(), false) };
    }
    let holds_top = since.offset > 0 && since.offset == top.offset && since.epoch == top.epoch;
    pubs.truncate(1);
    match pubs.first() {
        None => (pubs, holds_top),
        Some(latest) if latest.offset == top.offset && !holds_top => (pubs, true),
        Some(latest) => (Vec::new(), latest.offset == top.offset),
    }
}

/// Whether publications read after `since` recover a subscriber to `top`: they run without a
/// gap from since+1 to the top (or there are none and nothing was missed), within `limit`.
pub fn recovers(since: u64, top: u64, pubs: &[Publication], limit: usize) -> bool {
    match pubs.first() {
        None => since == top,
        Some(first) => first.offset == since + 1 && pubs.len() <= limit && pubs.last().map(|p| p.offset) == Some(top),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Payload;
    use bytes::Bytes;

    fn publication(n: u8) -> Publication {
        Publication {
            offset: 0,
            data: Payload { bytes: Bytes::from(vec![b'0' + n]), binary: false },
            info: None,
            tags: None,
            key: None,
            removed: false,
        }
    }

    fn offsets(v: &[Publication]) -> Vec<u64> {
        v.iter().map(|p| p.offset).collect()
    }

    #[test]
    fn ring_and_ranges() {
        let now = Instant::now();
        let mut s = Stream::new(now);
        for i in 0..5 {
            s.add(publication(i), 3, Duration::from_secs(60), now);
        }
        let (all, pos) = s.read(None, -1, false, now).unwrap();
        assert_eq!(offsets(&all), vec![3, 4, 5]);
        assert_eq!(pos.offset, 5);
        let since = StreamPosition { offset: 3, epoch: pos.epoch.clone() };
        assert_eq!(offsets(&s.read(Some(&since), -1, false, now).unwrap().0), vec![4, 5]);
        let since5 = StreamPosition { offset: 5, epoch: pos.epoch.clone() };
        assert_eq!(offsets(&s.read(Some(&since5), 10, true, now).unwrap().0), vec![4, 3]);
        assert_eq!(offsets(&s.read(None, 2, true, now).unwrap().0), vec![5, 4]);
        assert_eq!(offsets(&s.read(None, 0, false, now).unwrap().0), Vec::<u64>::new());
        let bad = StreamPosition { offset: 1, epoch: "other".into() };
        assert_eq!(s.read(Some(&bad), 1, false, now).unwrap_err(), ApiError::UNRECOVERABLE_POSITION);
        let zero = StreamPosition { offset: 0, epoch: "".into() };
        assert_eq!(s.read(Some(&zero), 1, true, now).unwrap_err(), ApiError::BAD_REQUEST);
    }

    /// A channel's last version is state like its stream meta: the sweep frees it once
    /// `history_meta_ttl` has passed since the publish that set it, and an expired version no
    /// longer holds back a lower one.
    #[test]
    fn versions_expire_with_the_meta_ttl() {
        let cfg: Config = serde_json::from_value(serde_json::json!({
            "channel": {"history_meta_ttl": "10s", "namespaces": [
                {"name": "nohist"},
                {"name": "hist", "history_size": 10, "history_ttl": "5s"}
            ]}
        }))
        .unwrap();
        let mut m = Memory::new(Arc::new(cfg));
        let now = Instant::now();
        let publish = |m: &mut Memory, ch: &str, version: u64, at: Instant| {
            let data = Payload { bytes: Bytes::from_static(b"1"), binary: false };
            let p = Publish { version, version_epoch: "e".into(), ..Publish::new(ch, data) };
            m.publish(p, at).unwrap()
        };
        for i in 0..100 {
            publish(&mut m, &format!("nohist:{i}"), 5, now);
        }
        assert_eq!(m.owned_channels(), 100);
        // Within the TTL a lower version is still dropped; the sweep keeps the state.
        m.sweep(now + Duration::from_secs(9), 1000);
        assert_eq!(m.owned_channels(), 100);
        m.sweep(now + Duration::from_secs(11), 1000);
        assert_eq!(m.owned_channels(), 0, "versions past history_meta_ttl are freed");
        // On a channel with history (an accepted publication has a position): a lower version
        // is dropped within the TTL and accepted past it.
        assert!(publish(&mut m, "hist:a", 5, now).0.is_some());
        assert!(publish(&mut m, "hist:a", 4, now + Duration::from_secs(9)).0.is_none());
        assert!(publish(&mut m, "hist:a", 4, now + Duration::from_secs(11)).0.is_some());
    }

    #[test]
    fn ttl_clears_items_keeps_position() {
        let now = Instant::now();
        let mut s = Stream::new(now);
        s.add(publication(1), 10, Duration::from_secs(1), now);
        let later = now + Duration::from_secs(2);
        let (pubs, pos) = s.read(None, -1, false, later).unwrap();
        assert!(pubs.is_empty());
        assert_eq!(pos.offset, 1);
    }
}
