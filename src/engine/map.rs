//! Map channels in memory (`subscription_type: map`): a channel holds keyed state, each key
//! the last publication that set it, and a stream of the changes (sets and removals, with
//! contiguous offsets) that subscribers catch up from between reading the state and going
//! live. Owned by the channel's owner worker like streams: no locks.
//!
//! Keys with a TTL (`map.key_ttl`) are removed once it passes, with a removal in the stream
//! that subscribers receive like any other.

use std::collections::BTreeMap;
use std::ops::Bound;
use std::sync::Arc;
use std::time::Instant;

use super::memory::{Delivery, Memory};
use crate::error::ApiError;
use crate::model::{KeyMode, MapPub, MapUpdate, Publication, Publish, StreamPosition};

/// One key's value: the publication that set it last, when it expires, and the version it
/// was published with (0: none).
#[derive(Debug)]
struct Entry {
    publication: Publication,
    expires: Option<Instant>,
    version: u64,
    version_epoch: Box<str>,
}

impl Entry {
    /// Its TTL passed at `now` (the key is removed at the next sweep).
    fn expired(&self, now: Instant) -> bool {
        self.expires.is_some_and(|at| at <= now)
    }
}

/// A map channel's keys, in key order (pages follow it).
#[derive(Debug, Default)]
pub struct MapState {
    entries: BTreeMap<Arc<str>, Entry>,
}

/// One page of a map's state.
#[derive(Debug, Default)]
pub struct StatePage {
    pub entries: Vec<Publication>,
    /// The stream top when the page was read.
    pub position: StreamPosition,
    /// The key the next page starts after; empty on the last page.
    pub cursor: String,
}

impl Memory {
    /// Sets (`removed` false) or removes a key of a map channel: the change joins the stream,
    /// the state follows it. Returns what it did (the stream position of the change, or the
    /// stream top and why nothing changed) and what to deliver (none when nobody is
    /// subscribed or nothing changed). Checked in Centrifugo's order: idempotency key,
    /// version (per key), key mode; removing an absent key changes nothing (`key_not_found`).
    pub fn map_publish(&mut self, mp: MapPub, now: Instant) -> Result<(MapUpdate, Option<Delivery>), ApiError> {
        let MapPub { publish: p, key, removed, key_mode, refresh_ttl } = mp;
        let opts = self.cfg.resolve_channel(&p.channel)?.options;
        if !opts.is_map() {
            return Err(ApiError::BAD_REQUEST);
        }
        if p.version > 0 && !opts.map.recoverable() {
            // Versions need the stream (Centrifugo refuses them in ephemeral mode too).
            return Err(ApiError::BAD_REQUEST);
        }
        let meta_ttl = self.cfg.history_meta_ttl(opts);
        let (size, ttl) = opts.map.stream();
        let key_ttl = opts.map.key_ttl;
        let state = self.channels.entry(p.channel.clone()).or_default();
        // An expired meta takes the state with it before anything is looked at.
        let top = state.live_stream(now, meta_ttl).position();
        let suppressed = |why| Ok((MapUpdate { position: top.clone(), suppressed: Some(why) }, None));
        if let Some(k) = &p.idempotency_key {
            if let Some((Some(res), exp)) = state.idempotency.as_ref().and_then(|m| m.get(k)) {
                if *exp > now {
                    return Ok((MapUpdate { position: res.clone(), suppressed: Some("idempotency") }, None));
                }
            }
        }
        let map = state.map.get_or_insert_with(Default::default);
        if removed && !map.entries.contains_key(&key) {
            return suppressed("key_not_found");
        }
        // For a write, a key whose TTL passed (not swept yet) counts as absent.
        let current = map.entries.get_mut(&key).filter(|e| !e.expired(now));
        if !removed && p.version > 0 {
            if let Some(e) = &current {
                if (p.version_epoch.is_empty() || p.version_epoch == e.version_epoch) && p.version <= e.version {
                    return suppressed("version");
                }
            }
        }
        // Published with `delta`: subscribers may get a patch against the key's value.
        let prev = (!removed && (p.delta || opts.delta_publish))
            .then(|| current.as_ref().map(|e| e.publication.data.bytes.clone()))
            .flatten();
        match (key_mode, current) {
            (KeyMode::IfNew, Some(e)) if !removed => {
                if refresh_ttl && !key_ttl.is_zero() {
                    e.expires = Some(now + key_ttl);
                    state.live_stream(now, meta_ttl).touch(now);
                }
                return suppressed("key_exists");
            }
            (KeyMode::IfExists, None) if !removed => return suppressed("key_not_found"),
            _ => {}
        }
        let data =
            if removed { crate::model::Payload { bytes: bytes::Bytes::new(), binary: p.data.binary } } else { p.data };
        // A removal carries the key's tags, so subscribers' tags filters pass it as they passed
        // the key.
        let tags = match p.tags {
            None if removed => map.entries.get(&key).and_then(|e| e.publication.tags.clone()),
            t => t,
        };
        let mut publication = Publication { offset: 0, data, info: p.info, tags, key: Some(key.clone()), removed };
        let pos = state.live_stream(now, meta_ttl).add(publication.clone(), size, ttl, now);
        publication.offset = pos.offset;
        let map = state.map.get_or_insert_with(Default::default);
        if removed {
            map.entries.remove(&key);
        } else {
            let expires = (!key_ttl.is_zero()).then(|| now + key_ttl);
            let entry =
                Entry { publication: publication.clone(), expires, version: p.version, version_epoch: p.version_epoch };
            map.entries.insert(key, entry);
        }
        if let Some(k) = p.idempotency_key {
            let m = state.idempotency.get_or_insert_with(Default::default);
            m.insert(k, (Some(pos.clone()), now + std::time::Duration::from_secs(300)));
        }
        let delivery = (!state.subscribers.is_empty()).then(|| Delivery {
            channel: Arc::from(&*p.channel),
            publication,
            workers: state.subscribers.iter().map(|(w, _)| *w).collect(),
            delta: prev.is_some(),
            prev,
        });
        Ok((MapUpdate { position: pos, suppressed: None }, delivery))
    }

    /// A page of at most `limit` keys after `cursor` (from the first key when empty), with
    /// the stream position; with `key`, that key's entry alone (if it is there).
    pub fn map_read(
        &mut self,
        channel: &str,
        cursor: &str,
        limit: usize,
        key: &str,
        now: Instant,
    ) -> Result<StatePage, ApiError> {
        let opts = self.cfg.resolve_channel(channel)?.options;
        if !opts.is_map() {
            return Err(ApiError::BAD_REQUEST);
        }
        let meta_ttl = self.cfg.history_meta_ttl(opts);
        let state = match self.channels.get_mut(channel) {
            Some(s) => s,
            None => self.channels.entry(Box::from(channel)).or_default(),
        };
        let position = state.live_stream(now, meta_ttl).position();
        let mut page = StatePage { position, ..Default::default() };
        let Some(map) = &state.map else { return Ok(page) };
        if !key.is_empty() {
            let live = map.entries.get(key).filter(|e| !e.expired(now));
            page.entries.extend(live.map(|e| e.publication.clone()));
            return Ok(page);
        }
        let from = if cursor.is_empty() { Bound::Unbounded } else { Bound::Excluded(cursor) };
        let mut it = map.entries.range::<str, _>((from, Bound::Unbounded));
        for (_, e) in it.by_ref().take(limit.max(1)) {
            page.entries.push(e.publication.clone());
        }
        if it.next().is_some() {
            page.cursor = page.entries.last().and_then(|p| p.key.as_deref()).unwrap_or_default().to_string();
        }
        Ok(page)
    }

    /// Number of keys of a map channel.
    pub fn map_stats(&self, channel: &str) -> usize {
        self.channels.get(channel).and_then(|c| c.map.as_ref()).map_or(0, |m| m.entries.len())
    }

    /// Removes every key and the stream (a new epoch follows: subscribers load the state
    /// again).
    pub fn map_clear(&mut self, channel: &str) {
        if let Some(c) = self.channels.get_mut(channel) {
            c.map = None;
            c.stream = None;
        }
    }

    /// Removes keys whose TTL has passed, each with a removal in the stream; returns what to
    /// deliver.
    pub fn map_expire(&mut self, now: Instant) -> Vec<Delivery> {
        let mut expired: Vec<(Box<str>, Arc<str>)> = Vec::new();
        for (name, c) in &self.channels {
            if let Some(m) = &c.map {
                for (k, e) in &m.entries {
                    if e.expired(now) {
                        expired.push((name.clone(), k.clone()));
                    }
                }
            }
        }
        let mut out = Vec::new();
        for (channel, key) in expired {
            let data = crate::model::Payload { bytes: bytes::Bytes::new(), binary: false };
            let p = Publish::new(channel, data);
            if let Ok((_, Some(d))) = self.map_publish(MapPub::new(p, key, true), now) {
                out.push(d);
            }
        }
        out
    }
}
