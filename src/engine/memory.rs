//! In-memory history streams and presence tables, owned by one worker (no locks).
//!
//! A [`Stream`] is a ring of the last `history_size` publications of a channel with
//! contiguous offsets, so finding `since` is index arithmetic. Items expire together
//! `history_ttl` after the last publish; the stream's meta (top offset + epoch) lives
//! `history_meta_ttl` after the last access, then the stream is recreated with a new epoch.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::Rng;

use crate::error::ApiError;
use crate::model::{ClientInfo, Publication, StreamPosition};

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
