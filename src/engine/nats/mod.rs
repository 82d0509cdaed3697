//! The NATS broker (`broker.type: nats`): publications, join/leave pushes and the nodes'
//! control messages travel between nodes through a nats-server, on Centrifugo's subjects
//! (`<prefix>.client.<channel>`, `<prefix>.control`, `<prefix>.node.<id>`) with its payload
//! (a client-protocol `Push` in protobuf). NATS keeps nothing: history and recovery are not
//! available (108), as with Centrifugo, and map channels are each node's own (kept in memory
//! by their owner worker, `crate::shard::Shard::keeps_map`). Presence stays with the engine:
//! the memory engine's (each node knows its own clients, kept on the channel's owner worker)
//! or Redis's (`engine.type: redis`, shared by the nodes).
//!
//! Each worker has one NATS connection. A channel's publications go out on its owner worker's
//! connection (NATS keeps one connection's order); the owner also subscribes the channel's subject while the node
//! has subscribers, and fans what arrives out to the node's workers, as with Redis.

pub mod codec;
pub mod conn;

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::Arc;
use std::task::{Poll, Waker};
use std::time::Duration;

use ahash::AHashMap;
use bytes::Bytes;

use self::conn::{NatsConn, PublishError};
use crate::api::Res;
use crate::config::Config;
use crate::engine::memory::Presence;
use crate::error::ApiError;
use crate::model::{ClientInfo, Publish};
use crate::push::Prepared;

/// The owner's subscription of one channel's subject.
#[derive(Default)]
struct ChanSub {
    /// Connection generation on which the `SUB` was confirmed (0: not yet).
    confirmed_gen: u64,
    /// Generation on which the `SUB` was sent.
    sent_gen: u64,
    waiters: Vec<Waker>,
    /// Subscribes in progress (the subject is not left while > 0).
    syncing: u32,
}

/// Where presence lives with the NATS broker.
pub enum PresenceStore {
    /// This worker's owned channels, this node's clients only.
    Local(RefCell<AHashMap<Box<str>, Presence>>),
    /// The Redis engine's (shared by every node).
    Redis(Rc<crate::engine::redis::RedisEngine>),
}

/// What arrived on the NATS connection, for the worker to act on.
#[allow(clippy::large_enum_variant)] // one per message, moved once (into an `Arc`)
pub enum Incoming {
    /// A push for the channel's subscribers; with `true` a publication published with `delta`.
    Push(Prepared, bool),
    /// A control message (node announcement, action, survey).
    Control(Bytes),
}

/// A worker's NATS broker.
pub struct NatsEngine {
    cfg: Arc<Config>,
    pub conn: Rc<NatsConn>,
    /// `<prefix>.client.`
    client_prefix: String,
    chans: RefCell<AHashMap<Arc<str>, ChanSub>>,
    pub presence: PresenceStore,
}

impl NatsEngine {
    pub fn cfg(&self) -> &Arc<Config> {
        &self.cfg
    }

    pub fn new(cfg: Arc<Config>, node_name: &str, presence: PresenceStore) -> Result<NatsEngine, String> {
        let n = &cfg.broker.nats;
        let url = crate::config::broker::NatsUrl::parse(&n.url)?;
        let conn = NatsConn::new(url, format!("gyre {node_name}"), n.dial_timeout, n.write_timeout);
        Ok(NatsEngine {
            client_prefix: format!("{}.client.", n.prefix),
            conn,
            chans: RefCell::new(AHashMap::new()),
            presence,
            cfg,
        })
    }

    /// The Redis engine that keeps presence, when it does.
    pub fn redis_presence(&self) -> Option<&Rc<crate::engine::redis::RedisEngine>> {
        match &self.presence {
            PresenceStore::Redis(r) => Some(r),
            PresenceStore::Local(_) => None,
        }
    }

    fn subject(&self, channel: &str) -> Bytes {
        let mut s = Vec::with_capacity(self.client_prefix.len() + channel.len());
        s.extend_from_slice(self.client_prefix.as_bytes());
        s.extend_from_slice(channel.as_bytes());
        s.into()
    }

    pub fn control_subject(&self) -> Bytes {
        Bytes::from(format!("{}.control", self.cfg.broker.nats.prefix))
    }

    pub fn node_subject(&self, uid: &str) -> Bytes {
        Bytes::from(format!("{}.node.{uid}", self.cfg.broker.nats.prefix))
    }

    /// A NATS subject is dot-separated tokens: a channel with a space, or with NATS's
    /// wildcards, cannot be one (Centrifugo refuses wildcards too).
    fn check_channel(channel: &str) -> Result<(), ApiError> {
        if channel.is_empty() || channel.bytes().any(|b| matches!(b, b' ' | b'\t' | b'\r' | b'\n' | b'*' | b'>')) {
            return Err(ApiError::BAD_REQUEST);
        }
        Ok(())
    }

    fn sent(r: Result<(), PublishError>) -> Result<(), ApiError> {
        match r {
            Ok(()) => Ok(()),
            Err(PublishError::Down) => {
                tracing::debug!("nats unavailable");
                Err(ApiError::INTERNAL)
            }
            Err(PublishError::TooLarge) => {
                tracing::warn!("a publication is larger than the nats-server's max_payload");
                Err(ApiError::INTERNAL)
            }
        }
    }

    /// Publishes. NATS keeps no history: the answer carries no position, and an idempotency
    /// key or version is not checked (Centrifugo's NATS broker ignores them too).
    pub fn publish(&self, p: &Publish) -> Result<Res, ApiError> {
        Self::check_channel(&p.channel)?;
        let opts = self.cfg.resolve_channel(&p.channel)?.options;
        let payload = codec::encode_publication(&p.channel, p, p.delta || opts.delta_publish);
        Self::sent(self.conn.publish(&self.subject(&p.channel), &payload))?;
        Ok(Res::Publish(None))
    }

    /// Publishes a join (`true`) or leave of `info` on `channel`; failures are logged only.
    pub fn publish_join_leave(&self, channel: &str, info: &ClientInfo, join: bool) {
        let payload = codec::encode_join_leave(channel, info, join);
        if Self::sent(self.conn.publish(&self.subject(channel), &payload)).is_err() {
            tracing::debug!(channel, "a join/leave push was not sent");
        }
    }

    /// Publishes a control message to every node.
    pub fn publish_control(&self, msg: &[u8]) -> bool {
        self.conn.publish(&self.control_subject(), msg).is_ok()
    }

    /// Publishes a message to one node.
    pub fn publish_node(&self, uid: &str, msg: &[u8]) {
        let _ = self.conn.publish(&self.node_subject(uid), msg);
    }

    // -----------------------------------------------------------------------------------
    // Presence kept on this worker (memory engine beside the broker).
    // -----------------------------------------------------------------------------------

    fn local(&self) -> Option<&RefCell<AHashMap<Box<str>, Presence>>> {
        match &self.presence {
            PresenceStore::Local(l) => Some(l),
            PresenceStore::Redis(_) => None,
        }
    }

    /// A subscriber with presence joined `channel` on this node.
    pub fn presence_join(&self, channel: &str, info: &ClientInfo) {
        match &self.presence {
            PresenceStore::Local(l) => l.borrow_mut().entry(channel.into()).or_default().add(info.clone()),
            PresenceStore::Redis(r) => r.presence_join(channel, info),
        }
    }

    /// A subscriber with presence left `channel` on this node.
    pub fn presence_leave(&self, channel: &str, client: &str) {
        match &self.presence {
            PresenceStore::Local(l) => {
                let mut l = l.borrow_mut();
                if let Some(p) = l.get_mut(channel) {
                    p.remove(client);
                    if p.is_empty() {
                        l.remove(channel);
                    }
                }
            }
            PresenceStore::Redis(r) => r.presence_leave(channel, client),
        }
    }

    /// The local presence of an owned channel (`None` when presence is in Redis).
    pub fn local_presence(&self, channel: &str) -> Option<Vec<ClientInfo>> {
        let l = self.local()?.borrow();
        Some(l.get(channel).map(Presence::list).unwrap_or_default())
    }

    /// The local presence counts of an owned channel (`None` when presence is in Redis).
    pub fn local_presence_stats(&self, channel: &str) -> Option<(u64, u64)> {
        let l = self.local()?.borrow();
        Some(l.get(channel).map(Presence::stats).unwrap_or((0, 0)))
    }

    // -----------------------------------------------------------------------------------
    // The owner's subject subscriptions.
    // -----------------------------------------------------------------------------------

    /// Owner side: makes sure the channel's subject is subscribed (confirmed by the server),
    /// counting a subscribe in progress until [`NatsEngine::end_sync`].
    pub async fn begin_sync(&self, channel: &Arc<str>) -> Result<(), ApiError> {
        Self::check_channel(channel)?;
        self.chans.borrow_mut().entry(channel.clone()).or_default().syncing += 1;
        let subject = self.subject(channel);
        let wait = std::future::poll_fn(|cx| {
            if !self.conn.is_up() {
                return Poll::Ready(Err(ApiError::INTERNAL));
            }
            let gen = self.conn.gen();
            let mut chans = self.chans.borrow_mut();
            let c = chans.entry(channel.clone()).or_default();
            if c.confirmed_gen == gen {
                return Poll::Ready(Ok(()));
            }
            if c.sent_gen != gen {
                c.sent_gen = gen;
                self.conn.subscribe(subject.clone());
            }
            c.waiters.push(cx.waker().clone());
            Poll::Pending
        });
        let limit = self.cfg.broker.nats.write_timeout.max(Duration::from_millis(500)) * 2;
        let r = monoio::time::timeout(limit, wait).await.unwrap_or(Err(ApiError::INTERNAL));
        if r.is_err() {
            self.end_sync(channel);
        }
        r
    }

    /// Ends a subscribe started by [`NatsEngine::begin_sync`].
    pub fn end_sync(&self, channel: &str) {
        let mut chans = self.chans.borrow_mut();
        if let Some(c) = chans.get_mut(channel) {
            c.syncing = c.syncing.saturating_sub(1);
            if c.syncing == 0 && c.confirmed_gen == 0 && c.sent_gen == 0 {
                chans.remove(channel);
            }
        }
    }

    /// True while the channel's subject is subscribed on the current connection.
    pub fn is_subscribed(&self, channel: &str) -> bool {
        self.conn.is_up() && self.chans.borrow().get(channel).is_some_and(|c| c.confirmed_gen == self.conn.gen())
    }

    /// Owner side: the node has no subscribers of the channel left.
    pub fn release(&self, channel: &str) {
        let mut chans = self.chans.borrow_mut();
        if chans.get(channel).is_some_and(|c| c.syncing == 0) {
            chans.remove(channel);
            self.conn.unsubscribe(&self.subject(channel));
        }
    }

    /// The connection (re)connected: worker 0 (`control`: the node's id) listens to the
    /// control subjects; subscribes waiting on the old connection retry on this one.
    pub fn on_up(&self, control: Option<&str>) {
        if let Some(uid) = control {
            self.conn.subscribe(self.control_subject());
            self.conn.subscribe(self.node_subject(uid));
        }
        self.wake_all();
    }

    /// The connection was lost: returns the channels that were subscribed through it (their
    /// local subscribers may have missed publications).
    pub fn on_down(&self) -> Vec<Arc<str>> {
        let mut lost = Vec::new();
        {
            let mut chans = self.chans.borrow_mut();
            for (ch, c) in chans.iter_mut() {
                if c.confirmed_gen != 0 {
                    lost.push(ch.clone());
                }
                c.confirmed_gen = 0;
                c.sent_gen = 0;
            }
            chans.retain(|_, c| c.syncing > 0);
        }
        self.wake_all();
        lost
    }

    /// `SUB`s of connection `gen` were processed.
    pub fn on_confirmed(&self, gen: u64, subjects: Vec<Bytes>) {
        let mut wakers = Vec::new();
        {
            let mut chans = self.chans.borrow_mut();
            for s in subjects {
                let Some(ch) = s.strip_prefix(self.client_prefix.as_bytes()) else { continue };
                let Some(c) = std::str::from_utf8(ch).ok().and_then(|ch| chans.get_mut(ch)) else { continue };
                if c.sent_gen == gen {
                    c.confirmed_gen = gen;
                }
                wakers.append(&mut c.waiters);
            }
        }
        for w in wakers {
            w.wake();
        }
    }

    fn wake_all(&self) {
        let wakers: Vec<Waker> =
            self.chans.borrow_mut().iter_mut().flat_map(|(_, c)| std::mem::take(&mut c.waiters)).collect();
        for w in wakers {
            w.wake();
        }
    }

    /// Interprets one message from the NATS connection.
    pub fn on_msg(&self, subject: &[u8], payload: Bytes) -> Option<Incoming> {
        let Some(channel) = subject.strip_prefix(self.client_prefix.as_bytes()) else {
            return Some(Incoming::Control(payload));
        };
        let channel = std::str::from_utf8(channel).ok()?;
        match codec::decode(&payload) {
            Some(m) => {
                let delta = m.delta;
                Some(Incoming::Push(m.prepared(channel.into()), delta))
            }
            None => {
                tracing::warn!(channel, "undecodable message on a channel subject");
                None
            }
        }
    }
}
