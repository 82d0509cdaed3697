//! The Redis engine: several Gyre nodes share channels, history and presence through Redis.
//!
//! Each worker has, per Redis shard, one pipelined command connection and one PUB/SUB
//! connection. Publishes, history and presence reads run on the worker that received the
//! command (one Lua script per publish: offset, stream append, PUBLISH, all atomic). A
//! channel's owner worker subscribes its PUB/SUB connection to the channel's topic while the
//! node has subscribers, and fans what arrives out to the node's workers exactly as the memory
//! engine's owner does. Worker 0 also listens to the control topics (node announcements,
//! API actions for connections on other nodes, channel surveys).

pub mod cluster;
pub mod codec;
pub mod conn;
pub mod map;
pub mod node_number;
pub mod resp;
pub mod scripts;
pub mod sentinel;

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::sync::Arc;
use std::task::{Poll, Waker};
use std::time::Duration;

use ahash::AHashMap;
use bytes::Bytes;

use self::codec::Keys;
use self::conn::{Conn, RedisError, RedisReply};
use self::resp::Value;
use crate::api::Res;
use crate::config::redis::Endpoint;
use crate::config::Config;
use crate::engine::memory::Presence;
use crate::error::ApiError;
use crate::model::{ClientInfo, History, Publication, Publish, StreamPosition};
use crate::push::{Prepared, PushKind};

/// The TLS connector of option `at` (`engine.redis.tls`, `engine.redis.sentinel_tls`), built
/// once per worker thread: every connection of the worker, and every sentinel query (one a
/// second), share it instead of reading the certificates (or the system's roots) again. The
/// Redis options are not reloaded while the server runs.
pub fn tls_connector(at: &'static str, t: &crate::config::tls::Tls) -> Result<Arc<rustls::ClientConfig>, String> {
    type Built = Vec<(&'static str, Arc<rustls::ClientConfig>)>;
    thread_local! {
        static BUILT: RefCell<Built> = const { RefCell::new(Vec::new()) };
    }
    if let Some(c) = BUILT.with(|b| b.borrow().iter().find(|(a, _)| *a == at).map(|(_, c)| c.clone())) {
        return Ok(c);
    }
    let c = crate::config::tls::client_config(at, t)?;
    BUILT.with(|b| b.borrow_mut().push((at, c.clone())));
    Ok(c)
}

/// One Redis server's connections for one worker.
/// Receives a stream read: the position plus the publications read.
type StreamCallback = Box<dyn FnOnce(Result<(StreamPosition, Vec<Publication>), ApiError>)>;

pub struct Pair {
    pub cmd: Cmd,
    pub sub: Rc<Conn>,
}

/// Where a shard's commands go: one server (standalone or the Sentinel's master) or the
/// primaries of a Redis Cluster.
pub enum Cmd {
    Single(Rc<Conn>),
    Cluster(Rc<cluster::ClusterCmd>),
}

impl Cmd {
    /// Sends a command (to the node owning its first key's slot in a cluster).
    pub fn request<A: AsRef<[u8]>>(&self, args: &[A], cb: conn::Callback) {
        match self {
            Cmd::Single(c) => c.request(args, cb),
            Cmd::Cluster(c) => c.request(args, None, cb),
        }
    }

    /// Sends a keyless command to the node that owns `route` (a `WAIT` behind a write).
    pub fn request_routed<A: AsRef<[u8]>>(&self, route: &[u8], args: &[A], cb: conn::Callback) {
        match self {
            Cmd::Single(c) => c.request(args, cb),
            Cmd::Cluster(c) => c.request(args, Some(route), cb),
        }
    }

    /// Starts the connection tasks (on the worker's loop).
    pub fn spawn(&self) {
        match self {
            Cmd::Single(c) => drop(monoio::spawn(c.clone().run())),
            Cmd::Cluster(c) => drop(monoio::spawn(c.clone().run())),
        }
    }
}

/// The owner's PUB/SUB state of one channel.
#[derive(Default)]
struct ChanSub {
    /// Connection generation on which the subscription was confirmed (0 = not subscribed).
    confirmed_gen: u64,
    /// Generation on which SUBSCRIBEs were sent and how many are not confirmed yet.
    sent_gen: u64,
    outstanding: u32,
    waiters: Vec<Waker>,
    /// Subscribes between "topic subscribed" and "answered": while > 0, publications that
    /// arrive are also kept in `buf` for them (they may be newer than the history they read).
    syncing: u32,
    buf: Vec<Arc<Prepared>>,
}

const SCRIPTS: [&str; 8] = [
    scripts::PUBLISH,
    scripts::HISTORY,
    scripts::PRESENCE_ADD,
    scripts::PRESENCE_REMOVE,
    scripts::PRESENCE_GET,
    scripts::MAP_PUBLISH,
    scripts::MAP_READ,
    scripts::MAP_EXPIRED,
];
const PUBLISH: usize = 0;
const HISTORY: usize = 1;
const PRESENCE_ADD: usize = 2;
const PRESENCE_REMOVE: usize = 3;
const PRESENCE_GET: usize = 4;
const MAP_PUBLISH: usize = 5;
const MAP_READ: usize = 6;
const MAP_EXPIRED: usize = 7;

/// Idempotency results live this long, as in Centrifugo.
const RESULT_TTL_SECS: u64 = 300;

/// A worker's Redis engine.
pub struct RedisEngine {
    cfg: Arc<Config>,
    pub keys: Keys,
    pub shards: Vec<Pair>,
    shas: Vec<Bytes>,
    chans: RefCell<AHashMap<Arc<str>, ChanSub>>,
    rr: Cell<usize>,
    /// Presence entries this worker added (the owner's subscribers), refreshed in Redis
    /// before they expire.
    present: RefCell<AHashMap<Box<str>, Presence>>,
}

/// What arrived on a PUB/SUB connection, for the worker to act on.
#[allow(clippy::large_enum_variant)] // one per message, moved once (into an `Arc`)
pub enum Incoming {
    /// A push for the channel's subscribers; with `true` a publication published with `delta`.
    Push(Prepared, bool),
    /// A control message (node announcement, action, survey).
    Control(Bytes),
}

pub fn internal(e: RedisError) -> ApiError {
    match &e {
        RedisError::Server(m) => tracing::warn!(error = %String::from_utf8_lossy(m), "redis error"),
        RedisError::Timeout => tracing::debug!("redis request timed out"),
        RedisError::Unavailable => tracing::debug!("redis unavailable"),
    }
    ApiError::INTERNAL
}

fn secs(d: Duration) -> String {
    if d.is_zero() {
        "0".into()
    } else {
        d.as_secs_f64().ceil().max(1.0).to_string()
    }
}

fn unix_now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

impl RedisEngine {
    pub fn cfg(&self) -> &Arc<Config> {
        &self.cfg
    }

    /// Builds the connections (started by [`RedisEngine::conns`]' `run` tasks).
    pub fn new(cfg: Arc<Config>) -> Result<RedisEngine, String> {
        let rc = &cfg.engine.redis;
        let init: Vec<Vec<Bytes>> = SCRIPTS
            .iter()
            .map(|s| vec![Bytes::from_static(b"SCRIPT"), Bytes::from_static(b"LOAD"), Bytes::from(s.to_string())])
            .collect();
        let mut shards = Vec::new();
        let in_cluster = !rc.cluster_address.is_empty();
        for ep in Endpoint::all(rc)? {
            let sub = Conn::new(ep.clone(), true, rc, Vec::new());
            let cmd = match &ep.cluster {
                Some(seeds) => Cmd::Cluster(cluster::ClusterCmd::new(ep.clone(), seeds.clone(), rc, init.clone())),
                None => {
                    let cmd = Conn::new(ep, false, rc, init.clone());
                    Conn::pair(&cmd, &sub);
                    Cmd::Single(cmd)
                }
            };
            shards.push(Pair { cmd, sub });
        }
        if shards.is_empty() {
            return Err("engine.redis.address: at least one address is required".into());
        }
        Ok(RedisEngine {
            keys: Keys::new(&rc.prefix, in_cluster).with_map_prefix(cfg.map_broker.redis_prefix(&rc.prefix)),
            shards,
            shas: SCRIPTS.iter().map(|s| Bytes::from(scripts::sha(s))).collect(),
            chans: RefCell::new(AHashMap::new()),
            rr: Cell::new(0),
            present: RefCell::new(AHashMap::new()),
            cfg,
        })
    }

    pub fn shard_index(&self, channel: &str) -> usize {
        codec::shard_of(channel, self.shards.len())
    }

    fn cmd(&self, channel: &str) -> &Cmd {
        &self.shards[self.shard_index(channel)].cmd
    }

    fn evalsha(&self, script: usize, keys: &[Bytes], argv: Vec<Bytes>) -> Vec<Bytes> {
        let mut args = Vec::with_capacity(3 + keys.len() + argv.len());
        args.push(Bytes::from_static(b"EVALSHA"));
        args.push(self.shas[script].clone());
        args.push(Bytes::from(keys.len().to_string()));
        args.extend_from_slice(keys);
        args.extend(argv);
        args
    }

    /// Publishes; `cb` gets the stream position (`None` without history or for a dropped
    /// stale version).
    pub fn publish(
        &self,
        p: Publish,
        cb: Box<dyn FnOnce(Result<Option<StreamPosition>, ApiError>)>,
    ) -> Result<(), ApiError> {
        let opts = self.cfg.resolve_channel(&p.channel)?.options;
        let history = opts.history_enabled() && !p.skip_history;
        let payload =
            codec::encode_publication(&p.data, p.info.as_deref(), p.tags.as_ref(), p.delta || opts.delta_publish);
        let topic = self.keys.client_topic(&p.channel);
        let conn = self.cmd(&p.channel);
        if !history && p.idempotency_key.is_none() && p.version == 0 {
            conn.request(
                &[Bytes::from_static(b"PUBLISH"), topic, payload],
                Box::new(move |r| cb(r.map(|_| None).map_err(internal))),
            );
            return Ok(());
        }
        let [stream, meta] = self.stream_keys(&p.channel, opts.is_map());
        let keys = [stream, meta, self.keys.result(&p.channel, p.idempotency_key.as_deref().unwrap_or(""))];
        let argv = vec![
            payload,
            Bytes::from(if history { opts.history_size.to_string() } else { "0".into() }),
            Bytes::from(secs(opts.history_ttl)),
            topic,
            Bytes::from(secs(self.cfg.history_meta_ttl(opts))),
            Bytes::from(super::memory::new_epoch().to_string()),
            Bytes::from_static(if p.idempotency_key.is_some() { b"1" } else { b"0" }),
            Bytes::from(RESULT_TTL_SECS.to_string()),
            Bytes::from(p.version.to_string()),
            Bytes::from(p.version_epoch.to_string()),
        ];
        self.request_replicated(
            conn,
            &self.evalsha(PUBLISH, &keys, argv),
            Box::new(move |r| {
                cb(r.map_err(internal).and_then(|v| {
                    let a = v.into_array().ok_or(ApiError::INTERNAL)?;
                    let offset = a.first().and_then(Value::int).ok_or(ApiError::INTERNAL)? as u64;
                    let epoch = a.get(1).and_then(Value::bytes).ok_or(ApiError::INTERNAL)?;
                    let epoch: Arc<str> = String::from_utf8_lossy(epoch).into();
                    Ok((offset > 0).then_some(StreamPosition { offset, epoch }))
                }))
            }),
        );
        Ok(())
    }

    /// A write whose reply `cb` gets once `engine.redis.wait_replicas` replicas have it (a
    /// `WAIT` right behind it in the pipeline); with fewer, an error.
    fn request_replicated(&self, conn: &Cmd, args: &[Bytes], cb: Box<dyn FnOnce(conn::RedisReply)>) {
        let n = self.cfg.engine.redis.wait_replicas;
        if n == 0 {
            conn.request(args, cb);
            return;
        }
        let slot: Rc<RefCell<Option<conn::RedisReply>>> = Default::default();
        let stash = slot.clone();
        conn.request(args, Box::new(move |r| *stash.borrow_mut() = Some(r)));
        let limit = (self.cfg.engine.redis.io_timeout / 2).as_millis().max(1);
        let wait = [Bytes::from_static(b"WAIT"), Bytes::from(n.to_string()), Bytes::from(limit.to_string())];
        // The script's first key names the node that ran it (in a cluster).
        let route = args.get(3).cloned().unwrap_or_default();
        conn.request_routed(
            &route,
            &wait,
            Box::new(move |w| {
                let r = slot.borrow_mut().take().unwrap_or(Err(RedisError::Unavailable));
                match w {
                    Ok(v) if v.int().is_some_and(|k| k >= n as i64) => cb(r),
                    Ok(v) => {
                        tracing::warn!(replicas = ?v.int(), wanted = n, "a write was not replicated in time: not acknowledged");
                        cb(Err(RedisError::Server(Bytes::from_static(b"NOREPLICAS not enough replicas acknowledged the write"))))
                    }
                    Err(e) => cb(Err(e)),
                }
            }),
        );
    }

    /// The history script: position plus (when `limit` != 0) publications.
    fn read_stream(
        &self,
        channel: &str,
        since: Option<u64>,
        limit: i64,
        reverse: bool,
        cb: StreamCallback,
    ) -> Result<(), ApiError> {
        let opts = self.cfg.resolve_channel(channel)?.options;
        let keys = self.stream_keys(channel, opts.is_map());
        let argv = vec![
            Bytes::from_static(if limit != 0 { b"1" } else { b"0" }),
            Bytes::from(since.map(|s| s.to_string()).unwrap_or_default()),
            Bytes::from(if limit < 0 { "-1".to_string() } else { limit.to_string() }),
            Bytes::from_static(if reverse { b"1" } else { b"0" }),
            // A map channel's meta lives as long as its keys: changes keep it, reads do not.
            Bytes::from(if opts.is_map() { "0".to_string() } else { secs(self.cfg.history_meta_ttl(opts)) }),
            Bytes::from(super::memory::new_epoch().to_string()),
        ];
        self.cmd(channel).request(
            &self.evalsha(HISTORY, &keys, argv),
            Box::new(move |r| cb(r.map_err(internal).and_then(parse_history))),
        );
        Ok(())
    }

    pub fn history(&self, h: History, cb: Box<dyn FnOnce(Result<Res, ApiError>)>) -> Result<(), ApiError> {
        if let Some(s) = &h.since {
            if h.reverse && s.offset == 0 {
                return Err(ApiError::BAD_REQUEST);
            }
        }
        let want_epoch = h.since.as_ref().map(|s| s.epoch.clone()).filter(|e| !e.is_empty());
        // `since` with offset 0 forward means "from the start".
        let since = h.since.as_ref().map(|s| s.offset).filter(|&o| o > 0 || h.reverse);
        self.read_stream(
            &h.channel,
            since,
            h.limit as i64,
            h.reverse,
            Box::new(move |r| {
                cb(r.and_then(|(position, publications)| {
                    if want_epoch.is_some_and(|e| e != position.epoch) {
                        return Err(ApiError::UNRECOVERABLE_POSITION);
                    }
                    Ok(Res::History { publications, position })
                }))
            }),
        )
    }

    /// The stream top and, with `recover = Some(since)`, up to `limit` publications after it.
    pub async fn position(
        &self,
        channel: &str,
        recover: Option<u64>,
        limit: i64,
    ) -> Result<(StreamPosition, Vec<Publication>), ApiError> {
        let (tx, rx) = crate::notify::oneshot();
        self.read_stream(channel, recover, if recover.is_some() { limit } else { 0 }, false, Box::new(tx))?;
        rx.await
    }

    /// The stream top and its newest publication (if any is kept), read at once.
    pub async fn latest(&self, channel: &str) -> Result<(StreamPosition, Vec<Publication>), ApiError> {
        let (tx, rx) = crate::notify::oneshot();
        self.read_stream(channel, None, 1, true, Box::new(tx))?;
        rx.await
    }

    /// A channel's stream and stream meta keys (a map channel's in the map layout).
    fn stream_keys(&self, channel: &str, map: bool) -> [Bytes; 2] {
        if map {
            [self.keys.map_stream(channel), self.keys.map_meta(channel)]
        } else {
            [self.keys.stream(channel), self.keys.stream_meta(channel)]
        }
    }

    pub fn history_remove(&self, channel: &str, cb: Box<dyn FnOnce(Result<Res, ApiError>)>) -> Result<(), ApiError> {
        let map = self.cfg.resolve_channel(channel)?.options.is_map();
        let [stream, _] = self.stream_keys(channel, map);
        self.cmd(channel).request(
            &[Bytes::from_static(b"DEL"), stream],
            Box::new(move |r| cb(r.map(|_| Res::Empty).map_err(internal))),
        );
        Ok(())
    }

    fn presence_read(&self, channel: &str, cb: Box<dyn FnOnce(Result<Vec<ClientInfo>, ApiError>)>) {
        let keys = [self.keys.presence_expire(channel), self.keys.presence_data(channel)];
        self.cmd(channel).request(
            &self.evalsha(PRESENCE_GET, &keys, vec![Bytes::from(unix_now().to_string())]),
            Box::new(move |r| {
                cb(r.map_err(internal).map(|v| {
                    let flat = v.into_array().unwrap_or_default();
                    flat.chunks(2)
                        .filter_map(|kv| kv.get(1).and_then(Value::bytes).and_then(|b| codec::decode_info(b)))
                        .collect()
                }))
            }),
        );
    }

    pub fn presence(&self, channel: &str, cb: Box<dyn FnOnce(Result<Res, ApiError>)>) -> Result<(), ApiError> {
        self.presence_read(channel, Box::new(move |r| cb(r.map(Res::Presence))));
        Ok(())
    }

    pub fn presence_stats(&self, channel: &str, cb: Box<dyn FnOnce(Result<Res, ApiError>)>) -> Result<(), ApiError> {
        self.presence_read(
            channel,
            Box::new(move |r| {
                cb(r.map(|list| {
                    let users: ahash::AHashSet<&str> = list.iter().map(|i| &*i.user).collect();
                    Res::PresenceStats { num_clients: list.len() as u64, num_users: users.len() as u64 }
                }))
            }),
        );
        Ok(())
    }

    /// Adds (or refreshes) presence entries of one channel; failures are logged only (the
    /// next refresh retries).
    fn presence_add(&self, channel: &str, infos: &[ClientInfo]) {
        if infos.is_empty() {
            return;
        }
        let ttl = self.cfg.engine.redis.presence_ttl.max(Duration::from_secs(1));
        let keys = [self.keys.presence_expire(channel), self.keys.presence_data(channel)];
        let mut argv = vec![Bytes::from(secs(ttl)), Bytes::from((unix_now() + ttl.as_secs()).to_string())];
        for i in infos {
            argv.push(Bytes::from(i.client.to_string()));
            argv.push(codec::encode_info(i));
        }
        self.cmd(channel).request(&self.evalsha(PRESENCE_ADD, &keys, argv), Box::new(log_failure));
    }

    fn presence_remove(&self, channel: &str, client: &str) {
        let keys = [self.keys.presence_expire(channel), self.keys.presence_data(channel)];
        let argv = vec![Bytes::from(client.to_string())];
        self.cmd(channel).request(&self.evalsha(PRESENCE_REMOVE, &keys, argv), Box::new(log_failure));
    }

    /// A subscriber with presence joined `channel` on this node.
    pub fn presence_join(&self, channel: &str, info: &ClientInfo) {
        self.present.borrow_mut().entry(channel.into()).or_default().add(info.clone());
        self.presence_add(channel, std::slice::from_ref(info));
    }

    /// A subscriber with presence left `channel` on this node.
    pub fn presence_leave(&self, channel: &str, client: &str) {
        let mut present = self.present.borrow_mut();
        if let Some(p) = present.get_mut(channel) {
            p.remove(client);
            if p.is_empty() {
                present.remove(channel);
            }
        }
        drop(present);
        self.presence_remove(channel, client);
    }

    /// Adds every presence entry of this worker again (before `presence_ttl` expires them).
    pub fn refresh_presence(&self) {
        let list: Vec<(Box<str>, Vec<ClientInfo>)> =
            self.present.borrow().iter().map(|(ch, p)| (ch.clone(), p.list())).collect();
        for (ch, infos) in list {
            self.presence_add(&ch, &infos);
        }
    }

    /// Publishes a join or leave payload to the channel's topic.
    pub fn publish_raw(&self, channel: &str, payload: Bytes) {
        self.cmd(channel).request(
            &[Bytes::from_static(b"PUBLISH"), self.keys.client_topic(channel), payload],
            Box::new(log_failure),
        );
    }

    /// Publishes a control message to every node (round-robin over the shards; every node
    /// listens on all of them).
    pub fn publish_control(&self, msg: Bytes, cb: Box<dyn FnOnce(RedisReply)>) {
        let i = self.rr.get();
        self.rr.set(i.wrapping_add(1));
        let conn = &self.shards[i % self.shards.len()].cmd;
        conn.request(&[Bytes::from_static(b"PUBLISH"), self.keys.control(), msg], cb);
    }

    /// Publishes a message to one node's own topic.
    pub fn publish_node(&self, uid: &str, msg: Bytes) {
        let i = self.rr.get();
        self.rr.set(i.wrapping_add(1));
        let conn = &self.shards[i % self.shards.len()].cmd;
        conn.request(&[Bytes::from_static(b"PUBLISH"), self.keys.node(uid), msg], Box::new(log_failure));
    }

    /// Owner side: makes sure this worker's PUB/SUB connection is subscribed to the channel's
    /// topic (confirmed by Redis), and counts a subscribe in progress: until
    /// [`RedisEngine::end_sync`], publications arriving for the channel are kept for it.
    pub async fn begin_sync(&self, channel: &Arc<str>) -> Result<(), ApiError> {
        self.chans.borrow_mut().entry(channel.clone()).or_default().syncing += 1;
        let conn = self.shards[self.shard_index(channel)].sub.clone();
        let topic = self.keys.client_topic(channel);
        let wait = std::future::poll_fn(|cx| {
            if !conn.is_up() {
                return Poll::Ready(Err(ApiError::INTERNAL));
            }
            let gen = conn.gen();
            let mut chans = self.chans.borrow_mut();
            let c = chans.entry(channel.clone()).or_default();
            if c.confirmed_gen == gen && c.outstanding == 0 {
                return Poll::Ready(Ok(()));
            }
            if c.sent_gen != gen || (c.outstanding == 0 && c.confirmed_gen != gen) {
                c.sent_gen = gen;
                c.outstanding = 1;
                conn.pubsub(true, topic.clone());
            }
            c.waiters.push(cx.waker().clone());
            Poll::Pending
        });
        let r =
            match monoio::time::timeout(self.cfg.engine.redis.io_timeout.max(Duration::from_millis(100)), wait).await {
                Ok(r) => r,
                Err(_) => Err(ApiError::INTERNAL),
            };
        if r.is_err() {
            self.end_sync(channel, None);
        }
        r
    }

    /// True while the channel's topic subscription is confirmed on the current PUB/SUB
    /// connection (it is lost when that connection breaks).
    pub fn is_subscribed(&self, channel: &str) -> bool {
        let conn = &self.shards[self.shard_index(channel)].sub;
        conn.is_up()
            && self.chans.borrow().get(channel).is_some_and(|c| c.confirmed_gen == conn.gen() && c.outstanding == 0)
    }

    /// Ends a subscribe started by [`RedisEngine::begin_sync`]; returns the publications kept
    /// meanwhile that are newer than `top` (all of them when the channel has no positions).
    pub fn end_sync(&self, channel: &str, top: Option<&StreamPosition>) -> Vec<Arc<Prepared>> {
        let mut chans = self.chans.borrow_mut();
        let Some(c) = chans.get_mut(channel) else { return Vec::new() };
        c.syncing = c.syncing.saturating_sub(1);
        let out = c
            .buf
            .iter()
            .filter(|p| match (&p.push, top) {
                (crate::protocol::PushBody::Pub(publication), Some(top)) => {
                    top.offset == 0 || publication.offset == 0 || publication.offset > top.offset
                }
                (crate::protocol::PushBody::Pub(_), None) => true,
                _ => false,
            })
            .cloned()
            .collect();
        if c.syncing == 0 {
            c.buf.clear();
            if c.confirmed_gen == 0 && c.outstanding == 0 {
                chans.remove(channel);
            }
        }
        out
    }

    /// Owner side: the node has no subscribers of the channel left.
    pub fn release(&self, channel: &str) {
        let mut chans = self.chans.borrow_mut();
        if let Some(c) = chans.get(channel) {
            if c.syncing > 0 {
                return;
            }
            let was = c.confirmed_gen != 0 || c.outstanding > 0;
            chans.remove(channel);
            if was {
                self.shards[self.shard_index(channel)].sub.pubsub(false, self.keys.client_topic(channel));
            }
        }
    }

    /// Keeps a push for subscribes in progress on its channel.
    pub fn keep_for_sync(&self, p: &Arc<Prepared>) {
        if let Some(c) = self.chans.borrow_mut().get_mut(&*p.channel) {
            if c.syncing > 0 {
                c.buf.push(p.clone());
            }
        }
    }

    /// A PUB/SUB connection (re)connected with generation `gen`.
    pub fn on_up(&self, shard: usize, control: Option<&str>) {
        if let Some(uid) = control {
            let sub = &self.shards[shard].sub;
            sub.pubsub(true, self.keys.control());
            sub.pubsub(true, self.keys.node(uid));
        }
        // Subscribes waiting on the old connection retry on this one.
        self.wake_all(shard);
    }

    /// A PUB/SUB connection was lost: returns the channels that were subscribed through it
    /// (their local subscribers may have missed publications).
    pub fn on_down(&self, shard: usize) -> Vec<Arc<str>> {
        let mut lost = Vec::new();
        {
            let mut chans = self.chans.borrow_mut();
            for (ch, c) in chans.iter_mut() {
                if codec::shard_of(ch, self.shards.len()) != shard {
                    continue;
                }
                if c.confirmed_gen != 0 {
                    lost.push(ch.clone());
                }
                c.confirmed_gen = 0;
                c.outstanding = 0;
                c.sent_gen = 0;
            }
            chans.retain(|_, c| c.syncing > 0);
        }
        self.wake_all(shard);
        lost
    }

    fn wake_all(&self, shard: usize) {
        let wakers: Vec<Waker> = self
            .chans
            .borrow_mut()
            .iter_mut()
            .filter(|(ch, _)| codec::shard_of(ch, self.shards.len()) == shard)
            .flat_map(|(_, c)| std::mem::take(&mut c.waiters))
            .collect();
        for w in wakers {
            w.wake();
        }
    }

    /// Interprets one value from a PUB/SUB connection.
    pub fn on_push(&self, shard: usize, v: Value) -> Option<Incoming> {
        let mut a = v.into_array()?;
        if a.len() < 3 {
            return None;
        }
        let kind = a[0].bytes()?.clone();
        match &kind[..] {
            b"message" => {
                let payload = match a.pop()? {
                    Value::Bulk(b) => b,
                    _ => return None,
                };
                let topic = a.pop()?;
                let topic = topic.bytes()?;
                let Some(channel) = self.keys.channel_of(topic) else {
                    return Some(Incoming::Control(payload));
                };
                let channel: Arc<str> = channel.into();
                let (kind, push, delta, position) = match codec::decode_channel_message(&payload) {
                    Some(codec::ChannelMessage::Publication(p, position, delta)) => {
                        (PushKind::Publication, crate::protocol::PushBody::Pub(p), delta, position)
                    }
                    Some(codec::ChannelMessage::Join(i)) => {
                        (PushKind::JoinLeave, crate::protocol::PushBody::Join(i), false, None)
                    }
                    Some(codec::ChannelMessage::Leave(i)) => {
                        (PushKind::JoinLeave, crate::protocol::PushBody::Leave(i), false, None)
                    }
                    None => {
                        tracing::warn!(channel = %channel, "undecodable message on a channel topic");
                        return None;
                    }
                };
                Some(Incoming::Push(Prepared::new(channel, kind, push).with_position(position.as_ref()), delta))
            }
            b"subscribe" => {
                let topic = a[1].bytes()?;
                let channel = self.keys.channel_of(topic)?;
                let gen = self.shards[shard].sub.gen();
                let wakers = {
                    let mut chans = self.chans.borrow_mut();
                    let c = chans.get_mut(channel)?;
                    if c.sent_gen == gen && c.outstanding > 0 {
                        c.outstanding -= 1;
                        if c.outstanding == 0 {
                            c.confirmed_gen = gen;
                        }
                    }
                    std::mem::take(&mut c.waiters)
                };
                for w in wakers {
                    w.wake();
                }
                None
            }
            _ => None,
        }
    }
}

fn log_failure(r: RedisReply) {
    if let Err(e) = r {
        let _ = internal(e);
    }
}

/// `{top, epoch[, entries]}` → position and publications.
fn parse_history(v: Value) -> Result<(StreamPosition, Vec<Publication>), ApiError> {
    let mut a = v.into_array().ok_or(ApiError::INTERNAL)?.into_iter();
    let top = a.next().and_then(|v| v.int()).ok_or(ApiError::INTERNAL)? as u64;
    let epoch = a.next().and_then(|v| v.bytes().cloned()).ok_or(ApiError::INTERNAL)?;
    let position = StreamPosition { offset: top, epoch: String::from_utf8_lossy(&epoch).into() };
    let mut pubs = Vec::new();
    if let Some(entries) = a.next().and_then(Value::into_array) {
        pubs.reserve(entries.len());
        for e in entries {
            let mut e = e.into_array().ok_or(ApiError::INTERNAL)?.into_iter();
            let id = e.next().and_then(|v| v.bytes().cloned()).ok_or(ApiError::INTERNAL)?;
            let offset: u64 = std::str::from_utf8(&id)
                .ok()
                .and_then(|s| s.split('-').next())
                .and_then(|s| s.parse().ok())
                .ok_or(ApiError::INTERNAL)?;
            let fields = e.next().and_then(Value::into_array).unwrap_or_default();
            let data = fields
                .chunks(2)
                .find(|kv| kv.first().and_then(Value::bytes).is_some_and(|k| &k[..] == b"d"))
                .and_then(|kv| kv.get(1).and_then(Value::bytes).cloned())
                .ok_or(ApiError::INTERNAL)?;
            pubs.push(codec::decode_publication(data, offset).ok_or(ApiError::INTERNAL)?);
        }
    }
    Ok((position, pubs))
}
