//! One worker: an event loop's shared state. Owns its shard of channels, its outgoing message
//! batches, the reply targets of its connections and the waiters of its async commands.
//!
//! Everything here is `!Send` and used only from the worker's own thread; other workers are
//! reached only through [`Mailbox`]es.

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::pin::Pin;
use std::rc::{Rc, Weak};
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use ahash::AHashMap;
use slab::Slab;
use smallvec::SmallVec;

use super::inbox::{Inbox, Mailbox};
use crate::api::{Reply, Res};
use crate::config::Config;
use crate::engine::redis::RedisEngine;
use crate::error::ApiError;
use crate::model::NodeInfo;
use crate::notify::LocalNotify;
use crate::shard::{owner_of, Fanout, Prepared, PushKind, Shard, ShardOp, UnsubOp};
use crate::ws::session::Session;

/// channel → local subscribers: (session key, live).
pub type LocalIndex = AHashMap<Arc<str>, SmallVec<[(u32, bool); 4]>>;

/// Work one worker asks another to do.
#[derive(Debug)]
pub enum Op {
    /// Runs on the channel's owner.
    Shard(ShardOp),
    /// Runs on every worker against its own connections; results are merged by the caller.
    Survey(Survey),
    /// Worker 0 (Redis engine): the other live nodes, as `Res::Info`.
    Nodes,
    /// A gateway action on a client connection, if this worker has it (`Res::Mesh`).
    Mesh(Arc<crate::gateway::mesh::MeshOp>),
    /// A backend starts popping a topic this worker owns (201 when the topic cannot exist).
    QueuePop { topic: Arc<str>, consumer: crate::gateway::Consumer },
}

/// Node-wide questions and actions, answered by each worker for its own connections.
#[derive(Debug, Clone)]
pub enum Survey {
    /// Local counts for `info`.
    Stats,
    /// Local subscriber counts of channels matching the pattern (`None` = all).
    Channels(Option<Arc<globset::GlobMatcher>>),
    /// API subscribe/unsubscribe/disconnect/refresh applied to matching local connections.
    Act(Arc<crate::api::Command>),
    /// This worker's metric counters and connection counts, as `Res::Metrics`.
    Metrics,
}

/// Where a result goes back to on the worker that asked.
#[derive(Debug, Clone, Copy)]
pub enum Tag {
    /// A reply slot of a connection: `seq` in that connection's ordered output.
    Reply { conn: u32, gen: u32, seq: u64 },
    /// An async command awaiting the result.
    Waiter(u32),
    /// A session's subscription awaiting the owner: on success the session joins the local
    /// index (holding live pushes until its reply is written) before anything else runs.
    SubWaiter { slot: u32, session: u32, gen: u32 },
    /// Nobody waits for the result.
    Discard,
}

/// Messages between workers.
#[derive(Debug)]
pub enum Msg {
    Exec {
        from: u16,
        tag: Tag,
        op: Op,
    },
    Done {
        tag: Tag,
        result: Reply,
    },
    /// A push for this worker's subscribers of the channel.
    Deliver(Arc<Prepared>),
    /// The channel's subscribers may have missed publications (its Redis PUB/SUB connection
    /// broke): unsubscribe them with "insufficient state" so they resubscribe and recover.
    Resubscribe(Arc<str>),
    /// Another node's answer to a survey this worker started.
    SurveyPart {
        id: u64,
        part: serde_json::Value,
    },
    /// Gateway queue traffic.
    Queue(crate::gateway::QueueMsg),
    /// A server API command from outside the workers (the gRPC thread): executed here, its
    /// reply handed to `done` (which may send it to another thread).
    Api {
        cmd: Box<crate::api::Command>,
        protocol: crate::metrics::Protocol,
        done: ReplyTo,
    },
    Shutdown,
}

/// Where the reply of a [`Msg::Api`] command goes.
pub struct ReplyTo(pub Box<dyn FnOnce(Reply) + Send>);

impl std::fmt::Debug for ReplyTo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ReplyTo")
    }
}

/// Receives command results for one connection, in any order; the sink restores order.
pub trait ReplySink {
    fn fill(&self, seq: u64, reply: Reply);
    /// Replies are still owed or unsent (graceful shutdown waits for them).
    fn busy(&self) -> bool;
}

/// Identity and start time of this node, shared read-only by all workers.
pub struct NodeShared {
    pub uid: String,
    pub name: String,
    pub version: String,
    pub started: Instant,
    pub mailboxes: Vec<Mailbox<Msg>>,
    pub gateway: crate::gateway::Shared,
    /// Open WebSocket connections of the node (`client.connection_limit`).
    pub connections: std::sync::atomic::AtomicUsize,
    /// Workers that finished answering their in-flight HTTP requests during shutdown.
    pub drained: std::sync::atomic::AtomicUsize,
    /// Workers whose inbox then stayed quiet (deliveries of those requests done).
    pub quiet: std::sync::atomic::AtomicUsize,
}

enum Waiter {
    Waiting(Option<Waker>),
    Ready(Reply),
    Abandoned,
}

/// A worker's state, shared by its tasks through `Rc`.
pub struct Worker {
    pub id: usize,
    me: Weak<Worker>,
    /// The Redis engine's connections of this worker (engine "redis").
    pub redis: Option<Rc<RedisEngine>>,
    /// Cluster state (node registry, surveys) for the Redis engine.
    pub cluster: super::cluster::Cluster,
    /// Gateway state: owned topics, backend connections, client ids.
    pub gw: crate::gateway::Local,
    pub workers: usize,
    pub cfg: Arc<Config>,
    pub node: Arc<NodeShared>,
    pub shard: RefCell<Shard>,
    outbox: RefCell<Vec<Vec<Msg>>>,
    outbox_dirty: Cell<bool>,
    flusher: LocalNotify,
    sinks: RefCell<Slab<(u32, Rc<dyn ReplySink>)>>,
    next_gen: Cell<u32>,
    waiters: RefCell<Slab<Waiter>>,
    pub shutdown: Cell<bool>,
    pub shutdown_notify: LocalNotify,
    /// Client sessions on this worker.
    pub clients: RefCell<Slab<Rc<Session>>>,
    /// channel → local subscribers (session key, live). Not live: the subscribe reply is not
    /// written yet, so pushes are held by the session.
    pub index: RefCell<LocalIndex>,
    /// user → number of its sessions here.
    pub users: RefCell<AHashMap<Arc<str>, u32>>,
    /// Verifies connection tokens (and subscription tokens unless they have their own key).
    pub conn_tokens: crate::token::Verifier,
    pub sub_tokens: crate::token::Verifier,
    /// Session deadlines: (when, session key, generation), earliest first. Entries a session
    /// superseded are skipped when popped.
    timers: RefCell<std::collections::BinaryHeap<std::cmp::Reverse<(Instant, u32, u32)>>>,
    timer_wake: LocalNotify,
    /// New-connection token bucket: (tokens, last refill).
    conn_bucket: Cell<(f64, Instant)>,
    /// When the inbox last delivered a batch (graceful shutdown waits for it to go quiet).
    pub last_inbox: Cell<Instant>,
}

impl Worker {
    pub fn new(
        id: usize,
        cfg: Arc<Config>,
        node: Arc<NodeShared>,
        me: Weak<Worker>,
        redis: Option<Rc<RedisEngine>>,
    ) -> Self {
        let workers = node.mailboxes.len();
        Worker {
            id,
            me,
            redis,
            cluster: Default::default(),
            gw: Default::default(),
            workers,
            shard: RefCell::new(Shard::new(cfg.clone())),
            cfg: cfg.clone(),
            node,
            outbox: RefCell::new((0..workers).map(|_| Vec::new()).collect()),
            outbox_dirty: Cell::new(false),
            flusher: LocalNotify::default(),
            sinks: RefCell::new(Slab::new()),
            next_gen: Cell::new(1),
            waiters: RefCell::new(Slab::new()),
            shutdown: Cell::new(false),
            shutdown_notify: LocalNotify::default(),
            timers: RefCell::new(std::collections::BinaryHeap::new()),
            timer_wake: LocalNotify::default(),
            conn_bucket: Cell::new((f64::MAX, Instant::now())),
            last_inbox: Cell::new(Instant::now()),
            clients: RefCell::new(Slab::new()),
            index: RefCell::new(AHashMap::new()),
            users: RefCell::new(AHashMap::new()),
            conn_tokens: crate::token::Verifier::new(
                &cfg.client.token.hmac_secret_key,
                &cfg.client.token.audience,
                &cfg.client.token.issuer,
            ),
            sub_tokens: if cfg.client.subscription_token.enabled {
                crate::token::Verifier::new(&cfg.client.subscription_token.hmac_secret_key, "", "")
            } else {
                crate::token::Verifier::new(
                    &cfg.client.token.hmac_secret_key,
                    &cfg.client.token.audience,
                    &cfg.client.token.issuer,
                )
            },
        }
    }

    /// Registers a connection's reply sink; the returned (key, gen) goes into its tags.
    pub fn register_sink(&self, sink: Rc<dyn ReplySink>) -> (u32, u32) {
        let gen = self.next_gen.get();
        self.next_gen.set(gen.wrapping_add(1));
        let key = self.sinks.borrow_mut().insert((gen, sink)) as u32;
        (key, gen)
    }

    /// True while some HTTP connection of this worker owes or has not sent replies.
    pub fn http_busy(&self) -> bool {
        self.sinks.borrow().iter().any(|(_, (_, s))| s.busy())
    }

    /// Takes one token of the worker's new-connection bucket (`client.connection_rate_limit`,
    /// split evenly over the workers); false when the node is over its rate.
    pub fn take_connection_token(&self) -> bool {
        let rate = self.cfg.client.connection_rate_limit;
        if rate == 0 {
            return true;
        }
        let per_worker = (rate as f64 / self.workers as f64).max(1.0);
        let now = Instant::now();
        let (tokens, last) = self.conn_bucket.get();
        let tokens = (tokens + now.duration_since(last).as_secs_f64() * per_worker).min(per_worker);
        if tokens < 1.0 {
            self.conn_bucket.set((tokens, now));
            return false;
        }
        self.conn_bucket.set((tokens - 1.0, now));
        true
    }

    /// Forgets a connection; results still in flight for it are dropped on arrival.
    pub fn unregister_sink(&self, key: u32) {
        self.sinks.borrow_mut().try_remove(key as usize);
    }

    /// Runs `op` on worker `to` and delivers the result to `tag`: at once when `to` is this
    /// worker, else through `to`'s inbox (sent at the end of this loop turn).
    pub fn submit(&self, to: usize, op: Op, tag: Tag) {
        if to == self.id {
            self.run_op(self.id as u16, tag, op);
        } else {
            self.send(to, Msg::Exec { from: self.id as u16, tag, op });
        }
    }

    /// This worker as an `Rc` (for tasks and callbacks).
    pub fn rc(&self) -> Rc<Worker> {
        self.me.upgrade().expect("a worker outlives its tasks")
    }

    /// Runs an operation that landed on this worker and sends its answer to `tag` on worker
    /// `from`: the answer first, then the pushes the op produced (a subscriber sees its
    /// subscribe reply before its own join). With the Redis engine a subscribe runs as a task.
    fn run_op(&self, from: u16, tag: Tag, op: Op) {
        if let Op::Mesh(m) = op {
            let w = self.rc();
            monoio::spawn(async move {
                let r = crate::gateway::mesh::exec_here(&w, &m).await;
                w.finish(from, tag, Ok(Res::Mesh(r)));
            });
            return;
        }
        if self.redis.is_some() {
            match op {
                Op::Shard(ShardOp::Subscribe(s)) => {
                    monoio::spawn(super::cluster::owner_subscribe(self.rc(), from, tag, s));
                    return;
                }
                Op::Shard(ShardOp::Unsubscribe(u)) => {
                    super::cluster::owner_unsubscribe(self, *u);
                    self.finish(from, tag, Ok(Res::Empty));
                    return;
                }
                _ => {}
            }
        }
        let (r, fanout) = self.exec_op(op);
        self.finish(from, tag, r);
        self.fan_out_all(fanout);
    }

    /// Delivers a result to `tag` on worker `from`.
    pub fn finish(&self, from: u16, tag: Tag, result: Reply) {
        if matches!(tag, Tag::Discard) {
            return;
        }
        if from as usize == self.id {
            self.complete(tag, result);
        } else {
            self.send(from as usize, Msg::Done { tag, result });
        }
    }

    /// Routes a single-channel operation: to the channel's owner worker, or, with the Redis
    /// engine, straight to Redis from this worker for publish/history/presence (subscriptions
    /// still go to the owner, which holds the channel's PUB/SUB subscription).
    pub fn submit_shard(&self, channel: &str, op: ShardOp, tag: Tag) {
        match &self.redis {
            Some(engine) if op.is_data() => self.exec_redis(engine, op, tag),
            _ => self.submit(owner_of(channel, self.workers), Op::Shard(op), tag),
        }
    }

    /// [`Worker::submit_shard`] as a future.
    pub fn call_shard(self: &Rc<Self>, channel: &str, op: ShardOp) -> Call {
        match &self.redis {
            Some(engine) if op.is_data() => {
                let slot = self.waiters.borrow_mut().insert(Waiter::Waiting(None)) as u32;
                self.exec_redis(engine, op, Tag::Waiter(slot));
                Call { worker: self.clone(), state: CallState::Waiting(slot) }
            }
            _ => self.call(owner_of(channel, self.workers), Op::Shard(op)),
        }
    }

    fn exec_redis(&self, engine: &RedisEngine, op: ShardOp, tag: Tag) {
        let me = self.rc();
        let done = move |r: Reply| me.complete(tag, r);
        let sent = match op {
            ShardOp::Publish(p) => {
                crate::metrics::message_sent(crate::metrics::Kind::Publication);
                engine.publish(p, Box::new(move |r| done(r.map(Res::Publish))))
            }
            ShardOp::History(h) => engine.history(h, Box::new(done)),
            ShardOp::HistoryRemove(ch) => engine.history_remove(&ch, Box::new(done)),
            ShardOp::Presence(ch) => engine.presence(&ch, Box::new(done)),
            ShardOp::PresenceStats(ch) => engine.presence_stats(&ch, Box::new(done)),
            ShardOp::Subscribe(_) | ShardOp::Unsubscribe(_) | ShardOp::Subscribers(_) => Err(ApiError::api_internal()),
        };
        if let Err(e) = sent {
            self.complete(tag, Err(e));
        }
    }

    /// A value from one of this worker's Redis PUB/SUB connections.
    pub fn on_redis_push(&self, shard: usize, v: crate::engine::redis::resp::Value) {
        let Some(engine) = &self.redis else { return };
        match engine.on_push(shard, v) {
            Some(crate::engine::redis::Incoming::Push(p)) => {
                engine.keep_for_sync(&p);
                let workers = self.shard.borrow().workers_of(&p.channel);
                if !workers.is_empty() {
                    self.fan_out(Fanout { prepared: p, workers });
                }
            }
            Some(crate::engine::redis::Incoming::Control(b)) => super::cluster::on_control(&self.rc(), b),
            None => {}
        }
    }

    /// Queues a message for worker `to` (this worker included: it then arrives through the
    /// own inbox, which keeps re-entrant work out of the current call stack).
    pub fn send(&self, to: usize, msg: Msg) {
        self.outbox.borrow_mut()[to].push(msg);
        if !self.outbox_dirty.replace(true) {
            self.flusher.notify();
        }
    }

    /// Sends every queued batch (one channel push per destination).
    pub fn flush(&self) {
        if !self.outbox_dirty.replace(false) {
            return;
        }
        let mut outbox = self.outbox.borrow_mut();
        for (to, batch) in outbox.iter_mut().enumerate() {
            if !batch.is_empty() {
                let b = std::mem::take(batch);
                self.node.mailboxes[to].send(b);
            }
        }
    }

    /// Delivers a result to its target on this worker.
    pub fn complete(&self, tag: Tag, result: Reply) {
        match tag {
            Tag::Reply { conn, gen, seq } => {
                let sink = match self.sinks.borrow().get(conn as usize) {
                    Some((g, s)) if *g == gen => s.clone(),
                    _ => return,
                };
                sink.fill(seq, result);
            }
            Tag::Discard => {}
            Tag::SubWaiter { slot, session, gen } => {
                if let Ok(Res::Subscribed(outcome)) = &result {
                    let alive =
                        self.clients.borrow().get(session as usize).filter(|s| s.gen == gen && !s.is_closed()).cloned();
                    match alive {
                        Some(s) if s.start_holding(&outcome.channel) => {
                            self.index.borrow_mut().entry(outcome.channel.clone()).or_default().push((session, false));
                            // Publications newer than the subscribe's position that arrived
                            // while it was answered (Redis engine) follow the reply.
                            for p in &outcome.extra {
                                if let Some(frame) = frame_for(&s, p, &mut None) {
                                    s.hold(&outcome.channel, frame);
                                }
                            }
                        }
                        _ => {
                            // The session went away (or gave up) while the owner counted it.
                            let op = UnsubOp {
                                channel: outcome.channel.clone(),
                                worker: self.id as u16,
                                client: None,
                                leave: None,
                            };
                            let owner = owner_of(&outcome.channel, self.workers);
                            self.send(
                                owner,
                                Msg::Exec {
                                    from: self.id as u16,
                                    tag: Tag::Discard,
                                    op: Op::Shard(ShardOp::Unsubscribe(Box::new(op))),
                                },
                            );
                        }
                    }
                }
                self.complete(Tag::Waiter(slot), result);
            }
            Tag::Waiter(slot) => {
                let mut waiters = self.waiters.borrow_mut();
                let Some(w) = waiters.get_mut(slot as usize) else { return };
                match std::mem::replace(w, Waiter::Ready(result)) {
                    Waiter::Waiting(Some(waker)) => waker.wake(),
                    Waiter::Waiting(None) => {}
                    Waiter::Abandoned => {
                        waiters.remove(slot as usize);
                    }
                    Waiter::Ready(_) => unreachable!("a waiter is completed once"),
                }
            }
        }
    }

    /// Runs `op` on worker `to` and returns a future of its result. The request leaves when
    /// this is called (not when first polled), so several calls made before awaiting run in
    /// parallel on their owners.
    pub fn call(self: &Rc<Self>, to: usize, op: Op) -> Call {
        let runs_as_task = matches!(op, Op::Mesh(_))
            || (self.redis.is_some() && matches!(op, Op::Shard(ShardOp::Subscribe(_) | ShardOp::Unsubscribe(_))));
        if to == self.id && !runs_as_task {
            return Call { worker: self.clone(), state: CallState::Ready(Some(self.exec_local(op))) };
        }
        let slot = self.waiters.borrow_mut().insert(Waiter::Waiting(None)) as u32;
        if to == self.id {
            self.run_op(self.id as u16, Tag::Waiter(slot), op);
        } else {
            self.send(to, Msg::Exec { from: self.id as u16, tag: Tag::Waiter(slot), op });
        }
        Call { worker: self.clone(), state: CallState::Waiting(slot) }
    }

    /// Like [`Worker::call`] for a session's subscription: see [`Tag::SubWaiter`].
    pub fn call_subscribe(self: &Rc<Self>, to: usize, op: ShardOp, session: &Session) -> Call {
        let slot = self.waiters.borrow_mut().insert(Waiter::Waiting(None)) as u32;
        self.submit(to, Op::Shard(op), Tag::SubWaiter { slot, session: session.key.get(), gen: session.gen });
        Call { worker: self.clone(), state: CallState::Waiting(slot) }
    }

    /// Executes an operation that landed on this worker, pushes included.
    pub fn exec_local(&self, op: Op) -> Reply {
        let (r, fanout) = self.exec_op(op);
        self.fan_out_all(fanout);
        r
    }

    fn fan_out_all(&self, fanout: Vec<Fanout>) {
        for f in fanout {
            self.fan_out(f);
        }
    }

    /// Executes an operation and returns the pushes it produced without sending them, so the
    /// caller can answer first: a subscriber sees its subscribe reply before its own join.
    fn exec_op(&self, op: Op) -> (Reply, Vec<Fanout>) {
        let mut fanout = Vec::new();
        let r = self.exec_inner(op, &mut fanout);
        (r, fanout)
    }

    fn exec_inner(&self, op: Op, fanout: &mut Vec<Fanout>) -> Reply {
        match op {
            Op::Shard(op) => {
                if matches!(op, ShardOp::Publish(_)) {
                    crate::metrics::message_sent(crate::metrics::Kind::Publication);
                }
                self.shard.borrow_mut().exec(op, Instant::now(), fanout)
            }
            Op::Survey(Survey::Stats) => {
                let index = self.index.borrow();
                let info = NodeInfo {
                    num_clients: self.clients.borrow().iter().filter(|(_, s)| s.is_connected()).count() as u64,
                    users: self.users.borrow().keys().cloned().collect(),
                    num_channels: self.shard.borrow().channels_with_subscribers(),
                    num_subs: index.values().map(|v| v.len() as u64).sum(),
                    ..Default::default()
                };
                Ok(Res::Info(vec![info]))
            }
            Op::Survey(Survey::Channels(m)) => {
                let index = self.index.borrow();
                let list = index
                    .iter()
                    .filter(|(ch, subs)| !subs.is_empty() && m.as_ref().is_none_or(|m| m.is_match(&***ch)))
                    .map(|(ch, subs)| (Box::from(&**ch), subs.len() as u64))
                    .collect();
                Ok(Res::Channels(list))
            }
            Op::Survey(Survey::Metrics) => {
                let index = self.index.borrow();
                let mut snap = crate::metrics::snapshot(self.id);
                snap.num_clients = self.clients.borrow().iter().filter(|(_, s)| s.is_connected()).count() as u64;
                snap.users = self.users.borrow().keys().cloned().collect();
                snap.num_channels = self.shard.borrow().channels_with_subscribers();
                snap.num_subs = index.values().map(|v| v.len() as u64).sum();
                snap.gateway_queued = crate::gateway::queued(self) as u64;
                snap.gateway_dropped = self.gw.dropped.get();
                Ok(Res::Metrics(Box::new(snap)))
            }
            Op::Survey(Survey::Act(cmd)) => {
                crate::ws::commands::api_act(self, &cmd);
                Ok(Res::Empty)
            }
            Op::Nodes => Ok(Res::Info(super::cluster::other_nodes(self))),
            Op::Mesh(_) => Err(ApiError::api_internal()),
            Op::QueuePop { topic, consumer } => crate::gateway::pop(self, topic, consumer),
        }
    }

    /// Sends a prepared push to every worker with subscribers (this one directly).
    fn fan_out(&self, f: Fanout) {
        let kind = push_kind(&f.prepared);
        if kind != crate::metrics::Kind::Publication && self.redis.is_none() {
            crate::metrics::message_sent(kind);
        }
        crate::metrics::message_received(kind);
        for w in f.workers {
            if w as usize == self.id {
                self.deliver_local(&f.prepared);
            } else {
                self.send(w as usize, Msg::Deliver(f.prepared.clone()));
            }
        }
    }

    /// Queues a push on every local subscriber of its channel: the same JSON frame for all,
    /// the protobuf frame encoded at most once. Overflowing sessions are closed afterwards.
    pub fn deliver_local(&self, p: &Prepared) {
        let mut to_close: SmallVec<[(u32, crate::error::Disconnect); 4]> = SmallVec::new();
        {
            let index = self.index.borrow();
            let Some(subs) = index.get(&*p.channel) else { return };
            let clients = self.clients.borrow();
            let mut pb: Option<bytes::Bytes> = None;
            let (mut frames, mut bytes) = (0u64, 0u64);
            for &(key, live) in subs.iter() {
                let Some(s) = clients.get(key as usize) else { continue };
                if p.kind == PushKind::JoinLeave && !s.wants_join_leave(&p.channel) {
                    continue;
                }
                let Some(frame) = frame_for(s, p, &mut pb) else {
                    to_close.push((key, crate::error::Disconnect::INAPPROPRIATE_PROTOCOL));
                    continue;
                };
                frames += 1;
                bytes += frame.len() as u64;
                let ok = if live { s.out.push(frame).is_ok() } else { s.hold(&p.channel, frame) };
                if !ok {
                    to_close.push((key, crate::error::Disconnect::SLOW));
                }
            }
            if frames > 0 {
                crate::metrics::ws_frames_sent(push_kind(p), frames, bytes / frames);
            }
        }
        for (key, d) in to_close {
            let s = self.clients.borrow().get(key as usize).cloned();
            if let Some(s) = s {
                s.disconnect(d);
            }
        }
    }

    /// Removes a session from the local index of `channel`.
    pub fn index_remove(&self, channel: &str, key: u32) {
        let mut index = self.index.borrow_mut();
        if let Some(subs) = index.get_mut(channel) {
            subs.retain(|(k, _)| *k != key);
            if subs.is_empty() {
                index.remove(channel);
            }
        }
    }

    /// Marks a session's subscription live (its reply has been written).
    pub fn index_set_live(&self, channel: &str, key: u32) {
        if let Some(subs) = self.index.borrow_mut().get_mut(channel) {
            if let Some(e) = subs.iter_mut().find(|(k, _)| *k == key) {
                e.1 = true;
            }
        }
    }

    /// Drains the inbox forever: executes forwarded work and routes results home.
    pub async fn run_inbox(self: Rc<Self>, inbox: Inbox<Msg>) {
        while let Some(batch) = inbox.recv().await {
            self.last_inbox.set(Instant::now());
            let started = Instant::now();
            self.handle_batch(batch);
            while let Some(batch) = inbox.try_recv() {
                self.handle_batch(batch);
            }
            crate::metrics::inbox_batch(started.elapsed());
            // Keeps running while the worker shuts down: in-flight commands may still need it.
            self.flush();
        }
    }

    fn handle_batch(&self, batch: Vec<Msg>) {
        for msg in batch {
            match msg {
                Msg::Exec { from, tag, op } => self.run_op(from, tag, op),
                Msg::Done { tag, result } => self.complete(tag, result),
                Msg::Deliver(p) => self.deliver_local(&p),
                Msg::Resubscribe(channel) => {
                    let keys: Vec<u32> = self
                        .index
                        .borrow()
                        .get(&channel)
                        .map(|v| v.iter().map(|(k, _)| *k).collect())
                        .unwrap_or_default();
                    for key in keys {
                        let s = self.clients.borrow().get(key as usize).cloned();
                        if let Some(s) = s {
                            s.resubscribe(&channel);
                        }
                    }
                }
                Msg::SurveyPart { id, part } => super::cluster::survey_part(self, id, part),
                Msg::Queue(q) => crate::gateway::on_queue(self, q),
                Msg::Api { cmd, protocol, done } => {
                    let w = self.rc();
                    monoio::spawn(async move {
                        let method = cmd.method();
                        let started = Instant::now();
                        let reply = crate::api::exec::exec(w, *cmd).await;
                        let error = reply.as_ref().err().map(|e| e.code);
                        crate::metrics::api_command(protocol, method, started.elapsed(), error);
                        (done.0)(reply);
                    });
                }
                Msg::Shutdown => {
                    self.shutdown.set(true);
                    self.shutdown_notify.notify();
                }
            }
        }
    }

    /// Schedules session `key` (generation `gen`) to run its deadlines at `at`.
    pub fn schedule_timer(&self, at: Instant, key: u32, gen: u32) {
        let mut heap = self.timers.borrow_mut();
        let earliest = heap.peek().is_none_or(|std::cmp::Reverse((t, _, _))| at < *t);
        heap.push(std::cmp::Reverse((at, key, gen)));
        if earliest {
            self.timer_wake.notify();
        }
    }

    /// The worker's one timer task: sleeps until the earliest session deadline (or until an
    /// earlier one is scheduled) and runs the sessions that are due.
    pub async fn run_timers(self: Rc<Self>) {
        loop {
            let next = self.timers.borrow().peek().map(|std::cmp::Reverse((t, _, _))| *t);
            let wait = next.map_or(Duration::from_secs(3600), |t| t.saturating_duration_since(Instant::now()));
            if !wait.is_zero() {
                let sleep = monoio::time::sleep(wait);
                monoio::select! {
                    _ = sleep => {}
                    _ = self.timer_wake.wait() => {}
                }
            }
            let now = Instant::now();
            loop {
                let due = {
                    let mut heap = self.timers.borrow_mut();
                    match heap.peek() {
                        Some(std::cmp::Reverse((t, _, _))) if *t <= now => heap.pop().map(|std::cmp::Reverse(e)| e),
                        _ => None,
                    }
                };
                let Some((at, key, gen)) = due else { break };
                let session = self.clients.borrow().get(key as usize).filter(|s| s.gen == gen).cloned();
                if let Some(s) = session {
                    s.on_timer(at);
                }
            }
        }
    }

    /// Sends queued batches at the end of each loop turn in which something was queued.
    pub async fn run_flusher(self: Rc<Self>) {
        loop {
            self.flusher.wait().await;
            self.flush();
        }
    }
}

/// The metrics kind of a push.
fn push_kind(p: &Prepared) -> crate::metrics::Kind {
    match p.push {
        crate::protocol::PushBody::Join(_) => crate::metrics::Kind::Join,
        crate::protocol::PushBody::Leave(_) => crate::metrics::Kind::Leave,
        _ => crate::metrics::Kind::Publication,
    }
}

/// The frame of a push for one session's format (the protobuf frame encoded at most once per
/// `pb` cache); `None` when a JSON client cannot receive the binary payload.
fn frame_for(s: &Session, p: &Prepared, pb: &mut Option<bytes::Bytes>) -> Option<bytes::Bytes> {
    if s.is_raw() {
        return match &p.push {
            crate::protocol::PushBody::Pub(publication) => {
                Some(crate::gateway::raw_publication_frame(&publication.data))
            }
            _ => None,
        };
    }
    match s.format {
        crate::protocol::Format::Json => p.json.clone(),
        crate::protocol::Format::Protobuf => Some(pb.get_or_insert_with(|| p.protobuf_frame()).clone()),
    }
}

enum CallState {
    Ready(Option<Reply>),
    Waiting(u32),
    Done,
}

/// The future of [`Worker::call`].
pub struct Call {
    worker: Rc<Worker>,
    state: CallState,
}

impl Future for Call {
    type Output = Reply;
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Reply> {
        let this = &mut *self;
        match &mut this.state {
            CallState::Ready(r) => {
                let r = r.take().expect("polled after completion");
                this.state = CallState::Done;
                Poll::Ready(r)
            }
            CallState::Waiting(slot) => {
                let slot = *slot;
                let mut waiters = this.worker.waiters.borrow_mut();
                match &mut waiters[slot as usize] {
                    Waiter::Ready(_) => {
                        let Waiter::Ready(r) = waiters.remove(slot as usize) else { unreachable!() };
                        this.state = CallState::Done;
                        Poll::Ready(r)
                    }
                    Waiter::Waiting(w) => {
                        *w = Some(cx.waker().clone());
                        Poll::Pending
                    }
                    Waiter::Abandoned => unreachable!("only Drop abandons"),
                }
            }
            CallState::Done => panic!("polled after completion"),
        }
    }
}

impl Drop for Call {
    fn drop(&mut self) {
        if let CallState::Waiting(slot) = self.state {
            let mut waiters = self.worker.waiters.borrow_mut();
            if matches!(waiters.get(slot as usize), Some(Waiter::Ready(_))) {
                waiters.remove(slot as usize);
            } else if let Some(w) = waiters.get_mut(slot as usize) {
                *w = Waiter::Abandoned;
            }
        }
    }
}
