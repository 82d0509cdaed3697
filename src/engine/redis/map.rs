//! Map channels on the Redis engine (`subscription_type: map`): several nodes share a
//! channel's keyed state, in the keys and values of Centrifugo's Redis map broker (see
//! `Keys::map_*`), so a state Centrifugo left in Redis reads the same. Each key's value is the
//! publication that set it last (with its offset and epoch); every change also joins the
//! channel's stream (subscribe, position and recovery read it as they read any stream, from
//! the map keys) and is published on the channel's topic, in one script. A channel's keys
//! share its hash tag, so a Redis Cluster runs the scripts on one node.
//!
//! Keys with a TTL (`map.key_ttl`) are listed in an expire sorted set; channels with such keys
//! are registered in one sorted set per Redis shard, which worker 0 of every node sweeps: an
//! expired key's removal runs through the publish script (only while the expiry has still
//! passed, so two nodes sweeping at once remove it once) and reaches subscribers on every node.

use std::sync::Arc;

use bytes::Bytes;

use super::resp::Value;
use super::{internal, log_failure, secs, RedisEngine, MAP_EXPIRED, MAP_PUBLISH, MAP_READ};
use crate::api::Res;
use crate::error::ApiError;
use crate::model::{KeyMode, MapPub, MapUpdate, Payload, Publication, Publish, StreamPosition};

type Done = Box<dyn FnOnce(Result<Res, ApiError>)>;

/// Most keys one state page reads.
const MAX_PAGE: usize = 100_000;

/// Channels one sweep looks at per Redis shard.
const SWEEP_CHANNELS: usize = 100;

fn unix_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

impl RedisEngine {
    /// Sets (`removed` false) or removes a key of a map channel; `cb` gets what it did (the
    /// change's stream position, or the stream top and why nothing changed).
    pub fn map_publish(&self, mp: MapPub, cb: Done) -> Result<(), ApiError> {
        self.map_change(mp, false, Box::new(move |r| cb(r.map(Res::MapUpdate))))
    }

    fn map_change(
        &self,
        mp: MapPub,
        only_expired: bool,
        cb: Box<dyn FnOnce(Result<MapUpdate, ApiError>)>,
    ) -> Result<(), ApiError> {
        let MapPub { publish: mut p, key, removed, key_mode, refresh_ttl } = mp;
        let opts = self.cfg.resolve_channel(&p.channel)?.options;
        if !opts.is_map() || key.is_empty() {
            return Err(ApiError::BAD_REQUEST);
        }
        if p.version > 0 && !opts.map.recoverable() {
            // Versions need the stream (Centrifugo refuses them in ephemeral mode too).
            return Err(ApiError::BAD_REQUEST);
        }
        if removed {
            p.data = Payload { bytes: Bytes::new(), binary: p.data.binary };
        }
        // Published with `delta`: receiving nodes patch it against the key's previous value.
        p.delta |= opts.delta_publish;
        let (size, ttl) = opts.map.stream();
        let key_ttl = if removed { 0 } else { opts.map.key_ttl.as_millis() as u64 };
        let meta_ttl = opts.map.meta_ttl.as_millis() as u64;
        let now = unix_ms();
        let ch = &p.channel;
        let keys = [
            self.keys.map_stream(ch),
            self.keys.map_meta(ch),
            self.keys.map_state(ch),
            self.keys.map_order(ch),
            self.keys.map_expire(ch),
            self.keys.map_result(ch, p.idempotency_key.as_deref().unwrap_or("")),
            self.keys.map_state_meta(ch),
        ];
        let mode: &'static [u8] = match key_mode {
            KeyMode::Replace => b"",
            KeyMode::IfNew => b"if_new",
            KeyMode::IfExists => b"if_exists",
        };
        let argv = vec![
            Bytes::from(key.to_string()),
            super::codec::encode_map_publication(&p, &key, removed),
            Bytes::from_static(if removed { b"1" } else { b"0" }),
            Bytes::from(size.to_string()),
            Bytes::from(secs(ttl)),
            self.keys.client_topic(ch),
            Bytes::from(super::super::memory::new_epoch().to_string()),
            Bytes::from(key_ttl.to_string()),
            Bytes::from(now.to_string()),
            Bytes::from_static(if only_expired { b"1" } else { b"0" }),
            Bytes::from_static(if p.idempotency_key.is_some() { b"1" } else { b"0" }),
            Bytes::from(self.cfg.map_broker.redis.result_ttl().as_secs().max(1).to_string()),
            Bytes::from_static(mode),
            Bytes::from_static(if refresh_ttl { b"1" } else { b"0" }),
            Bytes::from(p.version.to_string()),
            Bytes::from(p.version_epoch.to_string()),
            Bytes::from(meta_ttl.to_string()),
        ];
        if key_ttl > 0 {
            // Registered for the sweep (the earliest expiry wins); a failure leaves the key
            // to the next change of the channel.
            let args = [
                Bytes::from_static(b"ZADD"),
                self.keys.map_cleanup(),
                Bytes::from_static(b"LT"),
                Bytes::from((now + key_ttl).to_string()),
                Bytes::from(ch.to_string()),
            ];
            self.shards[self.shard_index(ch)].cmd.request(&args, Box::new(log_failure));
        }
        let conn = self.cmd(ch);
        self.request_replicated(
            conn,
            &self.evalsha(MAP_PUBLISH, &keys, argv),
            Box::new(move |r| {
                cb(r.map_err(internal).and_then(|v| {
                    let a = v.into_array().ok_or(ApiError::INTERNAL)?;
                    let offset = a.first().and_then(Value::int).ok_or(ApiError::INTERNAL)? as u64;
                    let epoch = a.get(1).and_then(Value::bytes).ok_or(ApiError::INTERNAL)?;
                    let why = a.get(3).and_then(Value::bytes).map(|b| &b[..]).unwrap_or_default();
                    let position = StreamPosition { offset, epoch: String::from_utf8_lossy(epoch).into() };
                    Ok(MapUpdate { position, suppressed: suppress_reason(why) })
                }))
            }),
        );
        Ok(())
    }

    /// A page of at most `limit` keys after `cursor` (from the first key when empty), with
    /// the stream position, as [`Res::MapState`]; with `key`, that key's entry alone.
    pub fn map_read(&self, channel: &str, cursor: &str, limit: usize, key: &str, cb: Done) -> Result<(), ApiError> {
        let opts = self.cfg.resolve_channel(channel)?.options;
        if !opts.is_map() {
            return Err(ApiError::BAD_REQUEST);
        }
        let keys = [
            self.keys.map_meta(channel),
            self.keys.map_state(channel),
            self.keys.map_order(channel),
            self.keys.map_expire(channel),
            self.keys.map_state_meta(channel),
        ];
        let argv = vec![
            Bytes::from(cursor.to_string()),
            Bytes::from(limit.clamp(1, MAX_PAGE).to_string()),
            Bytes::from(unix_ms().to_string()),
            Bytes::from(super::super::memory::new_epoch().to_string()),
            Bytes::from(key.to_string()),
        ];
        self.cmd(channel).request(
            &self.evalsha(MAP_READ, &keys, argv),
            Box::new(move |r| cb(r.map_err(internal).and_then(parse_page))),
        );
        Ok(())
    }

    /// Number of keys of a map channel.
    pub fn map_stats(&self, channel: &str, cb: Done) -> Result<(), ApiError> {
        self.cmd(channel).request(
            &[Bytes::from_static(b"HLEN"), self.keys.map_state(channel)],
            Box::new(move |r| cb(r.map_err(internal).map(|v| Res::MapStats(v.int().unwrap_or(0).max(0) as u64)))),
        );
        Ok(())
    }

    /// Removes every key and the stream (a new epoch follows: subscribers load the state
    /// again).
    pub fn map_clear(&self, channel: &str, cb: Done) -> Result<(), ApiError> {
        let args = [
            Bytes::from_static(b"DEL"),
            self.keys.map_stream(channel),
            self.keys.map_meta(channel),
            self.keys.map_state(channel),
            self.keys.map_order(channel),
            self.keys.map_expire(channel),
            self.keys.map_state_meta(channel),
        ];
        self.cmd(channel).request(&args, Box::new(move |r| cb(r.map(|_| Res::Empty).map_err(internal))));
        Ok(())
    }

    /// Removes the expired keys of the registered map channels (each removal published to
    /// the subscribers of every node). Runs on worker 0 of every node, about once a second.
    pub fn expire_maps(self: &std::rc::Rc<Self>) {
        let now = unix_ms();
        for (i, pair) in self.shards.iter().enumerate() {
            let args = [
                Bytes::from_static(b"ZRANGEBYSCORE"),
                self.keys.map_cleanup(),
                Bytes::from_static(b"-inf"),
                Bytes::from(now.to_string()),
                Bytes::from_static(b"LIMIT"),
                Bytes::from_static(b"0"),
                Bytes::from(SWEEP_CHANNELS.to_string()),
            ];
            let me = self.clone();
            pair.cmd.request(
                &args,
                Box::new(move |r| {
                    let Ok(v) = r.map_err(internal) else { return };
                    for ch in v.into_array().unwrap_or_default() {
                        if let Some(ch) = ch.bytes().and_then(|b| std::str::from_utf8(b).ok()) {
                            me.expire_channel(i, ch, now);
                        }
                    }
                }),
            );
        }
    }

    fn expire_channel(self: &std::rc::Rc<Self>, shard: usize, channel: &str, now: u64) {
        let me = self.clone();
        let ch: Arc<str> = channel.into();
        let keys = [self.keys.map_expire(channel)];
        self.cmd(channel).request(
            &self.evalsha(
                MAP_EXPIRED,
                &keys,
                vec![Bytes::from(now.to_string()), Bytes::from(self.cfg.map_broker.redis.sweep_batch().to_string())],
            ),
            Box::new(move |r| {
                let Ok(v) = r.map_err(internal) else { return };
                let mut a = v.into_array().unwrap_or_default().into_iter();
                let next = a.next().and_then(|v| v.bytes().cloned()).unwrap_or_default();
                for k in a {
                    let Some(key) = k.bytes().and_then(|b| std::str::from_utf8(b).ok()) else { continue };
                    let p = Publish::new(&*ch, Payload { bytes: Bytes::new(), binary: false });
                    if me.map_change(MapPub::new(p, key.into(), true), true, Box::new(|_| {})).is_err() {
                        break;
                    }
                }
                let expiring = me.keys.map_cleanup();
                let args: Vec<Bytes> = if next.is_empty() {
                    vec![Bytes::from_static(b"ZREM"), expiring, Bytes::from(ch.to_string())]
                } else {
                    let next = std::str::from_utf8(&next).ok().and_then(|s| s.parse::<f64>().ok()).unwrap_or(0.0);
                    vec![
                        Bytes::from_static(b"ZADD"),
                        expiring,
                        Bytes::from((next as u64).to_string()),
                        Bytes::from(ch.to_string()),
                    ]
                };
                me.shards[shard].cmd.request(&args, Box::new(log_failure));
            }),
        );
    }
}

/// The script's reason for changing nothing, as the API names it.
fn suppress_reason(why: &[u8]) -> Option<&'static str> {
    ["idempotency", "version", "key_exists", "key_not_found"].into_iter().find(|r| r.as_bytes() == why)
}

/// `{top, epoch, last key, {key, value, ...}}` → a state page.
fn parse_page(v: Value) -> Result<Res, ApiError> {
    let mut a = v.into_array().ok_or(ApiError::INTERNAL)?.into_iter();
    let top = a.next().and_then(|v| v.int()).ok_or(ApiError::INTERNAL)? as u64;
    let epoch = a.next().and_then(|v| v.bytes().cloned()).ok_or(ApiError::INTERNAL)?;
    let last = a.next().and_then(|v| v.bytes().cloned()).unwrap_or_default();
    let flat = a.next().and_then(Value::into_array).unwrap_or_default();
    let mut entries = Vec::with_capacity(flat.len() / 2);
    for kv in flat.chunks(2) {
        let Some(value) = kv.get(1).and_then(Value::bytes) else { continue };
        entries.push(decode_entry(value.clone()).ok_or(ApiError::INTERNAL)?);
    }
    Ok(Res::MapState {
        entries,
        position: StreamPosition { offset: top, epoch: String::from_utf8_lossy(&epoch).into() },
        cursor: String::from_utf8_lossy(&last).into_owned(),
    })
}

/// `<offset>:<epoch>:<publication>` → the publication.
fn decode_entry(v: Bytes) -> Option<Publication> {
    let colon = memchr::memchr(b':', &v)?;
    let offset: u64 = std::str::from_utf8(&v[..colon]).ok()?.parse().ok()?;
    let epoch_end = colon + 1 + memchr::memchr(b':', &v[colon + 1..])?;
    super::codec::decode_publication(v.slice(epoch_end + 1..), offset)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_entries_and_pages_decode() {
        let p = Publish::new("m:a", Payload { bytes: Bytes::from_static(b"{\"v\":1}"), binary: false });
        let body = super::super::codec::encode_map_publication(&p, "k1", false);
        let mut stored = b"7:ep:".to_vec();
        stored.extend_from_slice(&body);
        let e = decode_entry(Bytes::from(stored.clone())).unwrap();
        assert_eq!((e.offset, e.key.as_deref(), e.removed), (7, Some("k1"), false));
        assert_eq!(&e.data.bytes[..], b"{\"v\":1}");
        let page = Value::Array(vec![
            Value::Int(9),
            Value::Bulk(Bytes::from_static(b"ep")),
            Value::Bulk(Bytes::from_static(b"k1")),
            Value::Array(vec![Value::Bulk(Bytes::from_static(b"k1")), Value::Bulk(Bytes::from(stored))]),
        ]);
        match parse_page(page).unwrap() {
            Res::MapState { entries, position, cursor } => {
                assert_eq!(entries.len(), 1);
                assert_eq!((position.offset, &*position.epoch), (9, "ep"));
                assert_eq!(cursor, "k1");
            }
            _ => panic!("not a page"),
        }
        assert!(decode_entry(Bytes::from_static(b"x:e:1")).is_none());
        assert!(decode_entry(Bytes::from_static(b"1:no-epoch")).is_none());
    }
}
