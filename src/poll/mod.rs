//! Shared poll channels on their owner worker: which connections track which keys, the
//! version each of them holds, and the poll loop that asks the application backend for the
//! tracked keys' data ([`refresh`]) once per interval per channel, however many clients track
//! them. Changes go to the connections tracking the key, each at most once per version.
//!
//! A connection's session (on any worker) reaches the owner with [`Worker::ask`]; updates
//! travel back as jobs to the session's worker, which writes them ([`deliver`]). Everything
//! here lives in the owner's [`PollHub`] and is touched only from that worker's thread.

pub mod refresh;
pub mod signature;

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use ahash::{AHashMap, AHashSet};
use bytes::Bytes;

use crate::config::shared_poll::SharedPollOptions;
use crate::error::ApiError;
use crate::model::Payload;
use crate::protocol::KeyedPub;
use crate::proxy::Proxy;
use crate::runtime::worker::{Msg, Worker};

/// One tracking connection: its worker and hub slot (with the slot's generation).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Tracker {
    pub worker: u16,
    pub key: u32,
    pub gen: u32,
}

/// What a connection holds of one key: the version it has seen and when the signature that
/// let it track the key expires (0: never).
#[derive(Debug, Clone, Copy)]
struct KeyState {
    version: u64,
    expire_at: i64,
    /// The server sent it this version's data (so it may get a patch against it).
    sent: bool,
}

/// The owner's view of one tracked key.
#[derive(Debug, Default)]
struct Entry {
    /// The latest version (the backend's, or a counter of data changes in versionless mode).
    version: u64,
    /// Versionless mode: the hash of the latest data.
    hash: u64,
    /// Some tracker needs the current data although the version did not move (it tracked
    /// the key without knowing its version): the next answer is pushed even if unchanged.
    needs_broadcast: bool,
    /// Set by `shared_poll_publish`: the next poll cycle skips the key once.
    fresh: bool,
    /// The latest data, kept while the namespace allows fossil deltas: the base of the next
    /// change's patch.
    data: Option<Bytes>,
    subs: AHashSet<Tracker>,
}

/// One shared poll channel on its owner.
struct Chan {
    opts: SharedPollOptions,
    proxy: Option<Arc<Proxy>>,
    epoch: Arc<str>,
    /// Versioned mode: a backend answer (or a publish) named the epoch.
    epoch_known: bool,
    /// Versionless mode: the last synthetic version given out.
    counter: u64,
    /// The namespace allows fossil deltas (`allowed_delta_types`): each key's data is kept
    /// and changes carry a patch against it.
    delta: bool,
    keys: AHashMap<Arc<str>, Entry>,
    trackers: AHashMap<Tracker, AHashMap<Arc<str>, KeyState>>,
    /// Tells this state apart from a later one of the same channel (its tasks stop then).
    gen: u64,
    /// Keys to poll at once (tracked without data at hand), and whether a poll is queued.
    notified: Vec<Arc<str>>,
    notify_queued: bool,
}

/// A worker's shared poll channels (those it owns).
#[derive(Default)]
pub struct PollHub {
    chans: RefCell<AHashMap<Arc<str>, Chan>>,
    next_gen: Cell<u64>,
    /// Backend calls in flight from this worker (`shared_poll.concurrency_limit`).
    in_flight: Cell<usize>,
}

fn hub(w: &Worker) -> Rc<PollHub> {
    w.local(|_| PollHub::default())
}

/// One key of a track request: key, the version the client holds, when its signature
/// expires (unix seconds, 0: never).
pub type TrackItem = (Arc<str>, u64, i64);

/// The channel's options and backend, if `channel` is a shared poll channel.
fn options(w: &Worker, channel: &str) -> Option<(SharedPollOptions, Option<Arc<Proxy>>)> {
    let r = w.cfg.resolve_channel(channel).ok()?;
    if !r.options.is_shared_poll() {
        return None;
    }
    let proxy = crate::proxy::of(w).channel(crate::proxy::Kind::SharedPollRefresh, r.options).cloned();
    Some((r.options.shared_poll.clone(), proxy))
}

/// Makes sure the channel has state on this (its owner) worker and returns its epoch: a
/// fresh one per state in versionless mode, the backend's in versioned mode ("" until the
/// backend names one).
pub fn epoch(w: &Rc<Worker>, channel: &Arc<str>) -> Result<Arc<str>, ApiError> {
    ensure(w, channel)?;
    Ok(hub(w).chans.borrow().get(channel).map(|c| c.epoch.clone()).unwrap_or_default())
}

fn ensure(w: &Rc<Worker>, channel: &Arc<str>) -> Result<(), ApiError> {
    let h = hub(w);
    if h.chans.borrow().contains_key(channel) {
        return Ok(());
    }
    let Some((opts, proxy)) = options(w, channel) else { return Err(ApiError::NOT_AVAILABLE) };
    let gen = h.next_gen.get() + 1;
    h.next_gen.set(gen);
    let epoch = if opts.versioned() { Arc::from("") } else { crate::engine::memory::new_epoch() };
    let delta = w.cfg.resolve_channel(channel).is_ok_and(|r| r.options.fossil_allowed());
    let chan = Chan {
        opts,
        proxy,
        epoch,
        epoch_known: false,
        counter: 0,
        delta,
        keys: AHashMap::new(),
        trackers: AHashMap::new(),
        gen,
        notified: Vec::new(),
        notify_queued: false,
    };
    h.chans.borrow_mut().insert(channel.clone(), chan);
    monoio::spawn(refresh::run(w.clone(), channel.clone(), gen));
    shutdown_later(w, channel, gen);
    Ok(())
}

/// Tracks `items` for `t` (keys already tracked take the new version and expiry), then
/// untracks `untrack`. Keys new to the channel, and keys the client holds no data of, are
/// polled at once; the rest follow the poll loop. 106 past the connection's key limit.
pub fn track(
    w: &Rc<Worker>,
    channel: &Arc<str>,
    t: Tracker,
    items: Vec<TrackItem>,
    untrack: Vec<String>,
) -> Result<(), ApiError> {
    ensure(w, channel)?;
    let h = hub(w);
    let mut chans = h.chans.borrow_mut();
    let Some(c) = chans.get_mut(channel) else { return Err(ApiError::INTERNAL) };
    let held = c.trackers.get(&t);
    let untracking: AHashSet<&str> = untrack.iter().map(String::as_str).collect();
    let new =
        items.iter().filter(|(k, _, _)| !untracking.contains(&**k) && !held.is_some_and(|m| m.contains_key(k))).count();
    let freed = held.map_or(0, |m| untracking.iter().filter(|k| m.contains_key(**k)).count());
    if held.map_or(0, |m| m.len()) - freed + new > c.opts.max_keys() {
        return Err(ApiError::LIMIT_EXCEEDED);
    }
    let mut poll_now = Vec::new();
    for (key, version, expire_at) in items {
        let entry = c.keys.entry(key.clone()).or_default();
        let cold = entry.subs.is_empty() && entry.version == 0;
        if cold && version == 0 {
            poll_now.push(key.clone());
        } else if !cold && (version == 0 || entry.version > version) {
            // The client lacks the current data: the next answer reaches it even unchanged.
            entry.needs_broadcast = true;
            poll_now.push(key.clone());
        }
        entry.subs.insert(t);
        c.trackers.entry(t).or_default().insert(key, KeyState { version, expire_at, sent: false });
    }
    remove_keys(c, t, untrack.iter().map(String::as_str));
    if !poll_now.is_empty() {
        c.notified.extend(poll_now);
        if !c.notify_queued {
            c.notify_queued = true;
            monoio::spawn(refresh::notified(w.clone(), channel.clone(), c.gen));
        }
    }
    let idle = c.keys.is_empty();
    let gen = c.gen;
    drop(chans);
    if idle {
        shutdown_later(w, channel, gen);
    }
    Ok(())
}

/// Stops tracking `keys` for `t`.
pub fn untrack(w: &Rc<Worker>, channel: &Arc<str>, t: Tracker, keys: Vec<String>) {
    let h = hub(w);
    let mut chans = h.chans.borrow_mut();
    let Some(c) = chans.get_mut(channel) else { return };
    remove_keys(c, t, keys.iter().map(String::as_str));
    let (idle, gen) = (c.keys.is_empty(), c.gen);
    drop(chans);
    if idle {
        shutdown_later(w, channel, gen);
    }
}

/// The connection's subscription ended: everything it tracked is untracked.
pub fn forget(w: &Rc<Worker>, channel: &Arc<str>, t: Tracker) {
    let h = hub(w);
    let mut chans = h.chans.borrow_mut();
    let Some(c) = chans.get_mut(channel) else { return };
    let keys: Vec<Arc<str>> = c.trackers.get(&t).map(|m| m.keys().cloned().collect()).unwrap_or_default();
    remove_keys(c, t, keys.iter().map(|k| &**k));
    c.trackers.remove(&t);
    let (idle, gen) = (c.keys.is_empty(), c.gen);
    drop(chans);
    if idle {
        shutdown_later(w, channel, gen);
    }
}

fn remove_keys<'a>(c: &mut Chan, t: Tracker, keys: impl Iterator<Item = &'a str>) {
    let Some(held) = c.trackers.get_mut(&t) else { return };
    for key in keys {
        if held.remove(key).is_none() {
            continue;
        }
        if let Some(e) = c.keys.get_mut(key) {
            e.subs.remove(&t);
            if e.subs.is_empty() {
                c.keys.remove(key);
            }
        }
    }
    if held.is_empty() {
        c.trackers.remove(&t);
    }
}

/// Drops the channel's state `delay` after it tracks nothing, unless keys are tracked again
/// by then (its poll loop stops with it; a later subscribe starts a new state and epoch).
fn shutdown_later(w: &Rc<Worker>, channel: &Arc<str>, gen: u64) {
    let (w, channel) = (w.clone(), channel.clone());
    let delay = hub(&w).chans.borrow().get(&channel).map(|c| c.opts.shutdown_delay()).unwrap_or_default();
    monoio::spawn(async move {
        monoio::time::sleep(delay).await;
        let h = hub(&w);
        let mut chans = h.chans.borrow_mut();
        if chans.get(&channel).is_some_and(|c| c.gen == gen && c.keys.is_empty() && c.trackers.is_empty()) {
            chans.remove(&channel);
        }
    });
}

/// `shared_poll_publish`: a new version of `key` from the application, pushed to the
/// connections tracking it on this node without waiting for the next poll (versioned mode).
/// A key nobody tracks, or a version not newer than the one held, is dropped.
pub fn publish(w: &Rc<Worker>, channel: &Arc<str>, key: &str, version: u64, epoch: &str, data: Payload) {
    let h = hub(w);
    let mut chans = h.chans.borrow_mut();
    let Some(c) = chans.get_mut(channel) else { return };
    if !c.opts.versioned() {
        return;
    }
    let mut out = Deliveries::default();
    flip_epoch(w, channel, c, epoch);
    let delta = c.delta;
    let Some(e) = c.keys.get_mut(key) else { return };
    if version <= e.version {
        return;
    }
    let base = std::mem::replace(&mut e.version, version);
    e.fresh = true;
    let patch = keep(e, delta, &data.bytes);
    out.update(c, KeyedPub::new(key.into(), Some(data), version, epoch.into()), patch, base);
    drop(chans);
    out.send(w, channel);
}

/// Versioned mode: a backend epoch other than the channel's resets it, and every tracking
/// connection is unsubscribed with "insufficient state" (2500), to subscribe and track again
/// from version 0, as Centrifugo does. The first epoch a new channel state hears is taken as
/// its own without that: Centrifugo unsubscribes every tracker then too, although they hold
/// nothing of another epoch (and a state re-created while they resubscribe starts over).
fn flip_epoch(w: &Rc<Worker>, channel: &Arc<str>, c: &mut Chan, epoch: &str) {
    if !c.opts.versioned() || (c.epoch_known && *c.epoch == *epoch) {
        return;
    }
    if !std::mem::replace(&mut c.epoch_known, true) {
        c.epoch = epoch.into();
        return;
    }
    c.epoch = epoch.into();
    c.keys.clear();
    let mut by_worker: AHashMap<u16, Vec<(u32, u32)>> = AHashMap::new();
    for t in c.trackers.drain().map(|(t, _)| t) {
        by_worker.entry(t.worker).or_default().push((t.key, t.gen));
    }
    for (worker, clients) in by_worker {
        let ch = channel.clone();
        w.send(
            worker as usize,
            Msg::Job(Box::new(move |w| {
                for (key, gen) in clients {
                    if let Some(h) = w.hub.handler(key, gen) {
                        h.resubscribe(&ch);
                    }
                }
            })),
        );
    }
}

/// One backend answer's item.
#[derive(Debug, Clone, Default)]
pub struct Item {
    pub key: String,
    pub data: Option<Bytes>,
    pub version: u64,
    pub removed: bool,
}

/// Applies a backend answer for channel state `gen`: changed keys go to the connections
/// that hold an older version, removed keys to every connection tracking them (and are
/// untracked).
fn apply(w: &Rc<Worker>, channel: &Arc<str>, gen: u64, epoch: &str, items: Vec<Item>) {
    let h = hub(w);
    let mut chans = h.chans.borrow_mut();
    let Some(c) = chans.get_mut(channel).filter(|c| c.gen == gen) else { return };
    flip_epoch(w, channel, c, epoch);
    let mut out = Deliveries::default();
    let versioned = c.opts.versioned();
    for it in items {
        if it.removed {
            out.remove(c, &it.key);
            continue;
        }
        let Some(e) = c.keys.get_mut(it.key.as_str()) else { continue };
        let before = e.version;
        let data = it.data.unwrap_or_else(|| Bytes::from_static(b"null"));
        let version = if !versioned && it.version == 0 {
            let hash = ahash_of(&data);
            if e.version > 0 && hash == e.hash {
                if !std::mem::take(&mut e.needs_broadcast) {
                    continue;
                }
                e.version
            } else {
                e.hash = hash;
                e.needs_broadcast = false;
                c.counter += 1;
                e.version = c.counter;
                c.counter
            }
        } else if it.version <= e.version {
            // Not newer: only a tracker without the data gets it (at the version it has).
            if !(std::mem::take(&mut e.needs_broadcast) && it.version == e.version && e.version > 0) {
                continue;
            }
            e.version
        } else {
            e.needs_broadcast = false;
            e.version = it.version;
            it.version
        };
        // The version before this change (its data is the patch's base); none when the
        // version did not move (a tracker without the data gets it in full).
        let (base, patch) = if version > before { (before, keep(e, c.delta, &data)) } else { (0, None) };
        let key: Arc<str> = it.key.as_str().into();
        let k = KeyedPub::new(key, Some(Payload { bytes: data, binary: false }), version, "".into());
        out.update(c, k, patch, base);
    }
    let (idle, gen) = (c.keys.is_empty(), c.gen);
    drop(chans);
    out.send(w, channel);
    if idle {
        shutdown_later(w, channel, gen);
    }
}

/// Keeps `data` as the key's latest (when the channel uses deltas) and returns the patch
/// from the data kept before, when there was some and the patch is smaller.
fn keep(e: &mut Entry, delta: bool, data: &Bytes) -> Option<Bytes> {
    if !delta {
        return None;
    }
    let prev = e.data.replace(data.clone())?;
    crate::delta::patch(&prev, data)
}

/// A stable hash of a key's data (versionless change detection; never leaves the node).
fn ahash_of(data: &[u8]) -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = ahash::RandomState::with_seeds(1, 2, 3, 4).build_hasher();
    h.write(data);
    h.finish()
}

/// Updates for one worker: each with the (hub slot, generation) of its connections.
/// Updates with the patch for the connections that hold the base, and those connections.
type Batch = Vec<(KeyedPub, Option<Bytes>, Vec<(u32, u32)>)>;

/// Keys to poll with the version to send, in backend calls.
type Calls = Vec<Vec<(Arc<str>, u64)>>;

/// Updates to send, grouped by the trackers' workers.
#[derive(Default)]
struct Deliveries {
    by_worker: AHashMap<u16, Batch>,
}

impl Deliveries {
    /// `k` for every tracker of its key holding an older version (their versions move); its
    /// `patch` (against version `base`) only to trackers that were sent `base`'s data.
    fn update(&mut self, c: &mut Chan, k: KeyedPub, patch: Option<Bytes>, base: u64) {
        let Some(e) = c.keys.get(&k.key) else { return };
        // Per worker: (patched, clients) — with the patch, and without.
        let mut per: AHashMap<(u16, bool), Vec<(u32, u32)>> = AHashMap::new();
        for t in &e.subs {
            let Some(ks) = c.trackers.get_mut(t).and_then(|m| m.get_mut(&k.key)) else { continue };
            if ks.version >= k.version {
                continue;
            }
            let patched = patch.is_some() && ks.sent && ks.version == base;
            ks.version = k.version;
            ks.sent = true;
            per.entry((t.worker, patched)).or_default().push((t.key, t.gen));
        }
        for ((worker, patched), clients) in per {
            let patch = if patched { patch.clone() } else { None };
            self.by_worker.entry(worker).or_default().push((k.clone(), patch, clients));
        }
    }

    /// The removal of `key` for every tracker of it; the key is untracked.
    fn remove(&mut self, c: &mut Chan, key: &str) {
        let Some(e) = c.keys.remove(key) else { return };
        let k = KeyedPub::new(key.into(), None, 0, "".into());
        let mut per: AHashMap<u16, Vec<(u32, u32)>> = AHashMap::new();
        for t in e.subs {
            if let Some(m) = c.trackers.get_mut(&t) {
                m.remove(key);
                if m.is_empty() {
                    c.trackers.remove(&t);
                }
            }
            per.entry(t.worker).or_default().push((t.key, t.gen));
        }
        for (worker, clients) in per {
            self.by_worker.entry(worker).or_default().push((k.clone(), None, clients));
        }
    }

    fn send(self, w: &Worker, channel: &Arc<str>) {
        for (worker, batch) in self.by_worker {
            let ch = channel.clone();
            w.send(worker as usize, Msg::Job(Box::new(move |w| deliver(w, &ch, batch))));
        }
    }
}

/// On a tracker's worker: writes each update to the connections still there.
fn deliver(w: &Worker, channel: &str, batch: Batch) {
    for (k, patch, clients) in batch {
        for (key, gen) in clients {
            if let Some(h) = w.hub.handler(key, gen) {
                h.keyed_push(channel, &k, patch.as_ref());
            }
        }
    }
}

/// Keys to poll for channel state `gen` now: (key, version to send) in batches, or `None`
/// when the state is gone. Drops keys whose signatures expired longer ago than the
/// channel's grace (`track_expired_extra_delay`).
fn cycle_keys(w: &Worker, channel: &str, gen: u64) -> Option<(Calls, Duration)> {
    let h = hub(w);
    let mut chans = h.chans.borrow_mut();
    let c = chans.get_mut(channel).filter(|c| c.gen == gen)?;
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64);
    let grace = c.opts.expired_extra_delay().as_secs() as i64;
    let expired: Vec<(Tracker, Vec<Arc<str>>)> = c
        .trackers
        .iter()
        .map(|(t, m)| {
            let keys = m.iter().filter(|(_, s)| s.expire_at > 0 && s.expire_at + grace < now).map(|(k, _)| k.clone());
            (*t, keys.collect::<Vec<_>>())
        })
        .filter(|(_, k)| !k.is_empty())
        .collect();
    for (t, keys) in expired {
        remove_keys(c, t, keys.iter().map(|k| &**k));
    }
    // Keys a `shared_poll_publish` just refreshed sit this cycle out (once).
    let keys: Vec<Arc<str>> =
        c.keys.iter_mut().filter_map(|(k, e)| (!std::mem::take(&mut e.fresh)).then(|| k.clone())).collect();
    Some((c.calls(keys), c.opts.refresh_interval()))
}

/// The keys queued for an immediate poll of channel state `gen`, with their versions.
fn take_notified(w: &Worker, channel: &str, gen: u64) -> Option<Calls> {
    let h = hub(w);
    let mut chans = h.chans.borrow_mut();
    let c = chans.get_mut(channel).filter(|c| c.gen == gen)?;
    c.notify_queued = false;
    let keys = std::mem::take(&mut c.notified);
    Some(c.calls(keys))
}

impl Chan {
    /// Backend calls for `keys` (those still tracked, each once, in order): with the version
    /// to send — the channel's in versioned mode, 0 where a tracker needs the data again or in
    /// versionless mode — in batches of `refresh_batch_size`.
    fn calls(&self, mut keys: Vec<Arc<str>>) -> Calls {
        keys.sort_unstable();
        keys.dedup();
        let versioned = self.opts.versioned();
        let items: Vec<(Arc<str>, u64)> = keys
            .into_iter()
            .filter_map(|k| {
                let e = self.keys.get(&k)?;
                Some((k, if versioned && !e.needs_broadcast { e.version } else { 0 }))
            })
            .collect();
        items.chunks(self.opts.batch_size()).map(<[_]>::to_vec).collect()
    }
}

/// The channel's backend, if the state `gen` is still there.
fn backend(w: &Worker, channel: &str, gen: u64) -> Option<Option<Arc<Proxy>>> {
    hub(w).chans.borrow().get(channel).filter(|c| c.gen == gen).map(|c| c.proxy.clone())
}
