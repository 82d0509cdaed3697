//! One worker: the router of an event loop. It owns the loop's shard of channels and its hub
//! of clients, sends work to the owners of other channels, routes answers home, and runs the
//! cold paths other layers hand it as [`Job`]s. It never names a transport or a feature.
//!
//! Everything here is `!Send` and used only from the worker's own thread; other workers are
//! reached only through [`Mailbox`]es. Hot messages are typed ([`Msg::Exec`], [`Msg::Done`],
//! [`Msg::Subscribe`], [`Msg::Subscribed`], [`Msg::Deliver`]); everything else travels as a
//! boxed closure ([`Msg::Job`]).

use std::any::{Any, TypeId};
use std::cell::{Cell, RefCell};
use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;
use std::rc::{Rc, Weak};
use std::sync::atomic::AtomicUsize;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use ahash::AHashMap;
use slab::Slab;

use super::inbox::{Inbox, Mailbox};
use crate::api::Reply;
use crate::client::Client;
use crate::config::Config;
use crate::engine::Engine;
use crate::error::ApiError;
use crate::filter::Filter;
use crate::hub::{Hub, Run};
use crate::notify::LocalNotify;
use crate::push::{metrics_kind, Fanout, Prepared};
use crate::shard::{owner_of, Shard, ShardOp, SubOp, SubOutcome};

/// Work for a worker that the router does not look into: a closure run on that worker's
/// thread (node surveys, API actions on connections, gateway queues, gRPC commands).
pub type Job = Box<dyn FnOnce(&Rc<Worker>) + Send>;

/// Messages between workers.
pub enum Msg {
    /// A channel operation for its owner; the result goes to `tag` on worker `from`.
    Exec {
        from: u16,
        tag: Tag,
        op: ShardOp,
    },
    /// The result of an `Exec`.
    Done {
        tag: Tag,
        result: Reply,
    },
    /// A connection of worker `from` subscribes to a channel this worker owns.
    Subscribe {
        from: u16,
        tag: SubTag,
        op: Box<SubOp>,
    },
    /// The owner's answer to a `Subscribe`.
    Subscribed {
        tag: SubTag,
        result: Result<SubOutcome, ApiError>,
    },
    /// A push for this worker's subscribers of the channel.
    Deliver(Arc<Prepared>),
    /// A cold path, see [`Job`].
    Job(Job),
    Shutdown,
}

/// Where a result goes back to on the worker that asked.
#[derive(Debug, Clone, Copy)]
pub enum Tag {
    /// A reply slot of a connection: `seq` in that connection's ordered output.
    Reply { conn: u32, gen: u32, seq: u64 },
    /// An async command awaiting the result.
    Waiter(u32),
    /// Nobody waits for the result.
    Discard,
}

/// A client's subscription awaiting its owner: on success the client joins the hub's
/// subscribers (holding live pushes until its reply is written) before anything else runs.
#[derive(Debug, Clone)]
pub struct SubTag {
    slot: u32,
    client: u32,
    gen: u32,
    /// The client receives join/leave pushes of the channel.
    join_leave: bool,
    /// The client negotiated fossil deltas for the channel.
    delta: bool,
    /// The subscription's tags filter.
    filter: Option<Arc<Filter>>,
}

/// Receives command results for one connection, in any order; the sink restores order.
pub trait ReplySink {
    fn fill(&self, seq: u64, reply: Reply);
    /// Worker `from`'s part of the group of legacy reply lines in slot `seq`: the replies of
    /// its lines in order, already encoded, and where each ends in `replies`.
    fn fill_part(&self, seq: u64, from: usize, replies: Vec<u8>, ends: Vec<u32>);
    /// Replies are still owed or unsent (graceful shutdown waits for them).
    fn busy(&self) -> bool;
}

/// Identity and start time of this node, shared read-only by all workers (the counters are
/// atomics, touched when connections and gateway topics come and go, never on the publish
/// path).
pub struct NodeShared {
    pub uid: String,
    pub name: String,
    pub version: String,
    pub started: Instant,
    pub mailboxes: Vec<Mailbox<Msg>>,
    /// Open client connections of the node (`client.connection_limit`), each counted from
    /// before its upgrade is answered until it ends: see [`NodeShared::reserve_connection`].
    pub connections: AtomicUsize,
    /// Gateway queue topics of the node (`gateway.max_topics`).
    pub topics: AtomicUsize,
    /// Workers that finished answering their in-flight HTTP requests during shutdown.
    pub drained: AtomicUsize,
    /// Workers whose inbox then stayed quiet (deliveries of those requests done).
    pub quiet: AtomicUsize,
    /// This node's number among the live nodes of its Redis (`engine::redis::node_number`;
    /// `NONE` with the memory engine or until claimed).
    pub node_number: std::sync::atomic::AtomicU64,
}

impl NodeShared {
    /// Takes a place among the node's open client connections, or `None` when `limit` of them
    /// (0: no limit) are open. One atomic step, so upgrades racing on every worker never
    /// exceed the limit together; the place is freed when the slot is dropped.
    pub fn reserve_connection(self: &Arc<Self>, limit: usize) -> Option<ConnectionSlot> {
        use std::sync::atomic::Ordering::Relaxed;
        self.connections.fetch_update(Relaxed, Relaxed, |n| (limit == 0 || n < limit).then_some(n + 1)).ok()?;
        Some(ConnectionSlot(self.clone()))
    }
}

/// A client connection's place in the node's count, held from before its upgrade is answered
/// until it ends; dropping it (on any path: the handshake failed, the session ended) frees it.
pub struct ConnectionSlot(Arc<NodeShared>);

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        self.0.connections.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    }
}

enum Waiter {
    Waiting(Option<Waker>),
    Ready(Box<dyn Any>),
    Abandoned,
}

/// A worker's state, shared by its tasks through `Rc`.
pub struct Worker {
    pub id: usize,
    me: Weak<Worker>,
    pub workers: usize,
    pub cfg: Arc<Config>,
    pub node: Arc<NodeShared>,
    /// The channels this worker owns, over its engine.
    pub shard: RefCell<Shard>,
    /// The clients connected to this worker.
    pub hub: Hub,
    outbox: RefCell<Vec<Vec<Msg>>>,
    outbox_dirty: Cell<bool>,
    flusher: LocalNotify,
    sinks: RefCell<Slab<(u32, Rc<dyn ReplySink>)>>,
    next_gen: Cell<u32>,
    waiters: RefCell<Slab<Waiter>>,
    pub shutdown: Cell<bool>,
    pub shutdown_notify: LocalNotify,
    /// When a stopping worker stops answering requests (`shutdown.timeout` after the signal).
    pub shutdown_deadline: Cell<Option<Instant>>,
    /// Stopping: client sessions and gateway backends start no new command (what they
    /// acknowledged is delivered before clients are told to go).
    pub hold_sessions: Cell<bool>,
    /// Commands this worker's client sessions and gateway backends are running.
    pub session_commands: Cell<u32>,
    /// Client deadlines: (when, client key, generation), earliest first. Entries a client
    /// superseded are skipped when popped.
    timers: RefCell<std::collections::BinaryHeap<std::cmp::Reverse<(Instant, u32, u32)>>>,
    timer_wake: LocalNotify,
    /// New-connection token bucket: (tokens, last refill).
    conn_bucket: Cell<(f64, Instant)>,
    /// When the inbox last delivered a batch (graceful shutdown waits for it to go quiet).
    pub last_inbox: Cell<Instant>,
    /// Per-worker state of the layers above (gateway queues, node registry, token
    /// verifiers), by type.
    locals: RefCell<AHashMap<TypeId, Rc<dyn Any>>>,
}

impl Worker {
    pub fn new(id: usize, cfg: Arc<Config>, node: Arc<NodeShared>, me: Weak<Worker>, engine: Engine) -> Self {
        let workers = node.mailboxes.len();
        Worker {
            id,
            me,
            workers,
            shard: RefCell::new(Shard::new(engine)),
            hub: Hub::new(crate::client::writes::Batching::of(&cfg.client)),
            cfg,
            node,
            outbox: RefCell::new((0..workers).map(|_| Vec::new()).collect()),
            outbox_dirty: Cell::new(false),
            flusher: LocalNotify::default(),
            sinks: RefCell::new(Slab::new()),
            next_gen: Cell::new(1),
            waiters: RefCell::new(Slab::new()),
            shutdown: Cell::new(false),
            shutdown_notify: LocalNotify::default(),
            shutdown_deadline: Cell::new(None),
            hold_sessions: Cell::new(false),
            session_commands: Cell::new(0),
            timers: RefCell::new(std::collections::BinaryHeap::new()),
            timer_wake: LocalNotify::default(),
            conn_bucket: Cell::new((f64::MAX, Instant::now())),
            last_inbox: Cell::new(Instant::now()),
            locals: RefCell::new(AHashMap::new()),
        }
    }

    /// This worker as an `Rc` (for tasks and callbacks).
    pub fn rc(&self) -> Rc<Worker> {
        self.me.upgrade().expect("a worker outlives its tasks")
    }

    /// This worker's instance of a layer's per-worker state, made by `init` on first use.
    pub fn local<T: 'static>(&self, init: impl FnOnce(&Worker) -> T) -> Rc<T> {
        let id = TypeId::of::<T>();
        if let Some(v) = self.locals.borrow().get(&id) {
            return v.clone().downcast::<T>().expect("locals are keyed by their type");
        }
        let v = Rc::new(init(self));
        self.locals.borrow_mut().insert(id, v.clone());
        v
    }

    /// Registers a connection's reply sink; the returned (key, gen) goes into its tags.
    pub fn register_sink(&self, sink: Rc<dyn ReplySink>) -> (u32, u32) {
        let gen = self.next_gen.get();
        self.next_gen.set(gen.wrapping_add(1));
        let key = self.sinks.borrow_mut().insert((gen, sink)) as u32;
        (key, gen)
    }

    /// Forgets a connection; results still in flight for it are dropped on arrival.
    pub fn unregister_sink(&self, key: u32) {
        self.sinks.borrow_mut().try_remove(key as usize);
    }

    /// The worker is stopping and its `shutdown.timeout` has passed: requests still being
    /// read are cut (a reader with bytes always available kept its worker busy and the
    /// shutdown wait's timer firing late, so the wait cannot rely on that timer alone).
    pub fn past_shutdown_deadline(&self) -> bool {
        self.shutdown_deadline.get().is_some_and(|d| Instant::now() >= d)
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

    // -----------------------------------------------------------------------------------
    // Channel operations.
    // -----------------------------------------------------------------------------------

    /// Runs `op` on worker `to` and delivers the result to `tag`: at once when `to` is this
    /// worker, else through `to`'s inbox (sent at the end of this loop turn).
    pub fn submit(&self, to: usize, op: ShardOp, tag: Tag) {
        if to == self.id {
            self.run_op(self.id as u16, tag, op);
        } else {
            self.send(to, Msg::Exec { from: self.id as u16, tag, op });
        }
    }

    /// Runs `op` on worker `to` and returns a future of its result. The request leaves when
    /// this is called (not when first polled), so several calls made before awaiting run in
    /// parallel on their owners.
    pub fn call(self: &Rc<Self>, to: usize, op: ShardOp) -> Call<Reply> {
        if to == self.id {
            return Call { worker: self.clone(), state: CallState::Ready(Some(self.exec_local(op))) };
        }
        let slot = self.wait();
        self.send(to, Msg::Exec { from: self.id as u16, tag: Tag::Waiter(slot), op });
        Call::waiting(self.clone(), slot)
    }

    /// Executes an operation that landed on this worker, pushes included.
    pub fn exec_local(&self, op: ShardOp) -> Reply {
        self.exec_local_at(op, Instant::now())
    }

    /// [`Worker::exec_local`] at `now` (one clock reading for a run of operations).
    pub fn exec_local_at(&self, op: ShardOp, now: Instant) -> Reply {
        let mut fanout = Vec::new();
        let r = self.exec_local_into(op, now, &mut fanout);
        self.fan_out_all(fanout);
        r
    }

    /// [`Worker::exec_local_at`] with the pushes added to `fanout` for the caller to send
    /// ([`Worker::fan_out_all`]) after a run of operations.
    pub fn exec_local_into(&self, op: ShardOp, now: Instant, fanout: &mut Vec<Fanout>) -> Reply {
        self.shard.borrow_mut().apply(op, now, fanout)
    }

    /// Runs an operation that landed on this worker and sends its answer to `tag` on worker
    /// `from`: the answer first, then the pushes the op produced.
    fn run_op(&self, from: u16, tag: Tag, op: ShardOp) {
        let mut fanout = Vec::new();
        let r = self.shard.borrow_mut().apply(op, Instant::now(), &mut fanout);
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

    /// Subscribes `client` to the channel of `op` on its owner. On success the client is one
    /// of the hub's subscribers (pushes held) by the time the future resolves.
    pub fn subscribe(
        self: &Rc<Self>,
        client: &Client,
        join_leave: bool,
        delta: bool,
        filter: Option<Arc<Filter>>,
        op: SubOp,
    ) -> Call<Result<SubOutcome, ApiError>> {
        let slot = self.wait();
        let tag = SubTag { slot, client: client.key.get(), gen: client.gen, join_leave, delta, filter };
        // Through the owner's inbox even when the owner is this worker: a session's
        // unsubscribe goes that way too (see `Session::send_unsub`), so an unsubscribe followed
        // by a subscribe to the same channel reaches the owner in that order. Run at once, the
        // subscribe would overtake the queued unsubscribe, which would then take away the new
        // subscription's presence entry and count.
        let to = owner_of(&op.channel, self.workers);
        self.send(to, Msg::Subscribe { from: self.id as u16, tag, op: Box::new(op) });
        Call::waiting(self.clone(), slot)
    }

    /// The owner's side of a subscription: the answer first, then the join push it produced
    /// (a subscriber sees its subscribe reply before its own join). With the Redis engine it
    /// runs as a task (the topic is subscribed first).
    fn run_subscribe(&self, from: u16, tag: SubTag, op: Box<SubOp>) {
        if let Some(engine) = self.redis().filter(|_| !self.shard.borrow().keeps_map(&op.channel)) {
            let w = self.rc();
            monoio::spawn(async move {
                let r = crate::shard::redis::subscribe(&w.shard, engine, &w.cfg, &op).await;
                w.answer_subscribe(from, tag, r);
            });
            return;
        }
        if let Some(engine) = self.nats().filter(|_| !self.shard.borrow().keeps_map(&op.channel)) {
            let w = self.rc();
            monoio::spawn(async move {
                let r = crate::shard::nats::subscribe(&w.shard, engine, &w.cfg, &op).await;
                w.answer_subscribe(from, tag, r);
            });
            return;
        }
        let mut fanout = Vec::new();
        let r = self.shard.borrow_mut().subscribe(*op, Instant::now(), &mut fanout);
        self.answer_subscribe(from, tag, r);
        self.fan_out_all(fanout);
    }

    fn answer_subscribe(&self, from: u16, tag: SubTag, result: Result<SubOutcome, ApiError>) {
        if from as usize == self.id {
            self.subscribed(tag, result);
        } else {
            self.send(from as usize, Msg::Subscribed { tag, result });
        }
    }

    /// A subscription's answer is back on the client's worker.
    fn subscribed(&self, tag: SubTag, result: Result<SubOutcome, ApiError>) {
        if let Ok(o) = &result {
            // A map channel's stream is read in its own phases: only plain streams are tracked.
            let stream = self.cfg.resolve_channel(&o.channel).is_ok_and(|r| !r.options.is_map());
            let position = o.position.as_ref().filter(|_| stream);
            let (client, gen, channel) = (tag.client, tag.gen, &o.channel);
            if !self.hub.accept(client, gen, channel, tag.join_leave, tag.delta, tag.filter, position, &o.extra) {
                // The client went away while the owner counted it: take back everything the
                // subscription added there (count, presence entry; its join gets a leave).
                let op = o.undo.clone().unsub_op(o.channel.clone(), self.id as u16);
                self.submit(owner_of(&o.channel, self.workers), ShardOp::Unsubscribe(Box::new(op)), Tag::Discard);
            }
        }
        self.fill(tag.slot, Box::new(result));
    }

    // -----------------------------------------------------------------------------------
    // Fan-out.
    // -----------------------------------------------------------------------------------

    pub fn fan_out_all(&self, fanout: Vec<Fanout>) {
        // Consecutive pushes to one channel reach this worker's subscribers together
        // (`Hub::deliver_all`); every subscriber still gets its pushes in order.
        let mut run = Run::default();
        for f in &fanout {
            if self.fan_out(f) {
                run.push(&self.hub, &*f.prepared);
            }
        }
        run.flush(&self.hub);
    }

    /// Sends a prepared push to every other worker with subscribers; whether this one has
    /// some (the caller delivers it here).
    fn fan_out(&self, f: &Fanout) -> bool {
        let kind = metrics_kind(&f.prepared.push);
        if kind != crate::metrics::Kind::Publication && self.bus().is_none() {
            crate::metrics::message_sent(kind);
        }
        crate::metrics::message_received(kind);
        let mut here = false;
        for &w in &f.workers {
            if w as usize == self.id {
                here = true;
            } else {
                self.send(w as usize, Msg::Deliver(f.prepared.clone()));
            }
        }
        here
    }

    /// A push that arrived from another node for a channel this worker owns; `delta`: a
    /// publication published with `delta`. Its delta step is taken here, on the owner, in
    /// the order the node receives the channel's publications.
    pub fn fan_out_remote(&self, p: Prepared, delta: bool) {
        let p = match &p.push {
            crate::protocol::PushBody::Pub(publication) if p.kind == crate::push::PushKind::Publication => {
                let mut shard = self.shard.borrow_mut();
                let step = match publication.key {
                    Some(_) => shard.key_delta_step(&p.channel, publication, delta),
                    None => shard.delta_step(&p.channel, &publication.data.bytes, delta),
                };
                drop(shard);
                Arc::new(p.with_delta(step))
            }
            _ => Arc::new(p),
        };
        if let Some(engine) = self.redis() {
            engine.keep_for_sync(&p);
        }
        let workers = self.shard.borrow().workers_of(&p.channel);
        if !workers.is_empty() {
            let f = Fanout { prepared: p, workers };
            if self.fan_out(&f) {
                self.hub.deliver(&f.prepared);
            }
        }
    }

    /// The subscribers of these channels (owned here) may have missed publications: every
    /// worker with subscribers tells them to resubscribe (and recover).
    pub fn resubscribe(&self, channels: Vec<Arc<str>>) {
        for ch in channels {
            let workers = self.shard.borrow().workers_of(&ch);
            for wid in workers {
                let ch = ch.clone();
                self.send(
                    wid as usize,
                    Msg::Job(Box::new(move |w| {
                        for h in w.hub.subscribers(&ch) {
                            h.resubscribe(&ch);
                        }
                    })),
                );
            }
        }
    }

    // -----------------------------------------------------------------------------------
    // Messages, jobs and waiters.
    // -----------------------------------------------------------------------------------

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

    /// Runs `job` on worker `to` (at once when it is this one) and returns a future of what
    /// the job answers through its [`Answer`].
    pub fn ask<T, F>(self: &Rc<Self>, to: usize, job: F) -> Call<T>
    where
        T: Send + 'static,
        F: FnOnce(&Rc<Worker>, Answer<T>) + Send + 'static,
    {
        let slot = self.wait();
        let answer = Answer { from: self.id as u16, slot, _t: PhantomData };
        if to == self.id {
            job(self, answer);
        } else {
            self.send(to, Msg::Job(Box::new(move |w| job(w, answer))));
        }
        Call::waiting(self.clone(), slot)
    }

    /// A future of a value another thread (not a worker) computes: it hands the value to the
    /// [`RemoteAnswer`], which brings it back through this worker's inbox.
    pub fn await_remote<T: Send + 'static>(self: &Rc<Self>) -> (RemoteAnswer<T>, Call<T>) {
        let slot = self.wait();
        let answer = RemoteAnswer { mailbox: self.node.mailboxes[self.id].clone(), slot, _t: PhantomData };
        (answer, Call::waiting(self.clone(), slot))
    }

    /// [`Worker::ask`] every worker (this one included) the same job; answers in worker order.
    pub fn ask_all<T, F>(self: &Rc<Self>, job: F) -> Vec<Call<T>>
    where
        T: Send + 'static,
        F: FnOnce(&Rc<Worker>, Answer<T>) + Send + Clone + 'static,
    {
        (0..self.workers).map(|i| self.ask(i, job.clone())).collect()
    }

    pub(super) fn wait(&self) -> u32 {
        self.waiters.borrow_mut().insert(Waiter::Waiting(None)) as u32
    }

    /// An answer for waiter `slot` of this worker.
    fn fill(&self, slot: u32, value: Box<dyn Any>) {
        let mut waiters = self.waiters.borrow_mut();
        let Some(w) = waiters.get_mut(slot as usize) else { return };
        match std::mem::replace(w, Waiter::Ready(value)) {
            Waiter::Waiting(Some(waker)) => waker.wake(),
            Waiter::Waiting(None) => {}
            Waiter::Abandoned => {
                waiters.remove(slot as usize);
            }
            Waiter::Ready(_) => unreachable!("a waiter is completed once"),
        }
    }

    /// The reply sink of connection `conn` (generation `gen`) of this worker, if it is open.
    pub fn sink(&self, conn: u32, gen: u32) -> Option<Rc<dyn ReplySink>> {
        match self.sinks.borrow().get(conn as usize) {
            Some((g, s)) if *g == gen => Some(s.clone()),
            _ => None,
        }
    }

    /// Delivers a result to its target on this worker.
    pub fn complete(&self, tag: Tag, result: Reply) {
        match tag {
            Tag::Reply { conn, gen, seq } => {
                if let Some(sink) = self.sink(conn, gen) {
                    sink.fill(seq, result);
                }
            }
            Tag::Waiter(slot) => self.fill(slot, Box::new(result)),
            Tag::Discard => {}
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

    fn handle_batch(self: &Rc<Self>, batch: Vec<Msg>) {
        // Consecutive pushes to one channel are delivered together (`Hub::deliver_all`), before
        // any message of another kind.
        let mut run = Run::default();
        for msg in batch {
            if !matches!(msg, Msg::Deliver(_)) {
                run.flush(&self.hub);
            }
            match msg {
                Msg::Exec { from, tag, op } => self.run_op(from, tag, op),
                Msg::Done { tag, result } => self.complete(tag, result),
                Msg::Subscribe { from, tag, op } => self.run_subscribe(from, tag, op),
                Msg::Subscribed { tag, result } => self.subscribed(tag, result),
                Msg::Deliver(p) => run.push(&self.hub, p),
                Msg::Job(job) => job(self),
                Msg::Shutdown => {
                    self.shutdown.set(true);
                    self.shutdown_notify.notify();
                }
            }
        }
        run.flush(&self.hub);
    }

    // -----------------------------------------------------------------------------------
    // Timers.
    // -----------------------------------------------------------------------------------

    /// Schedules client `key` (generation `gen`) to run its deadlines at `at`.
    pub fn schedule_timer(&self, at: Instant, key: u32, gen: u32) {
        let mut heap = self.timers.borrow_mut();
        let earliest = heap.peek().is_none_or(|std::cmp::Reverse((t, _, _))| at < *t);
        heap.push(std::cmp::Reverse((at, key, gen)));
        if earliest {
            self.timer_wake.notify();
        }
    }

    /// The worker's one timer task: sleeps until the earliest client deadline (or until an
    /// earlier one is scheduled) and runs the clients that are due.
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
                if let Some(h) = self.hub.handler(key, gen) {
                    h.on_timer(at);
                }
            }
        }
    }

    /// Sends queued batches at the end of each loop turn in which something was queued.
    pub async fn run_flusher(self: Rc<Self>) {
        // And the clients' writes, once per loop turn that queued frames.
        monoio::spawn(self.hub.writes().clone().run());
        if !self.hub.writes().batching().delay.is_zero() {
            monoio::spawn(self.hub.writes().clone().run_later());
        }
        loop {
            self.flusher.wait().await;
            self.flush();
        }
    }
}

/// How a [`Job`] started by [`Worker::ask`] answers the worker that asked.
pub struct Answer<T> {
    from: u16,
    slot: u32,
    _t: PhantomData<fn(T)>,
}

impl<T: Send + 'static> Answer<T> {
    /// Sends the answer home (at once when the job ran on the asking worker).
    pub fn send(self, w: &Worker, value: T) {
        let slot = self.slot;
        if self.from as usize == w.id {
            w.fill(slot, Box::new(value));
        } else {
            w.send(self.from as usize, Msg::Job(Box::new(move |w| w.fill(slot, Box::new(value)))));
        }
    }
}

/// How a thread outside the workers answers a [`Worker::await_remote`].
pub struct RemoteAnswer<T> {
    mailbox: Mailbox<Msg>,
    slot: u32,
    _t: PhantomData<fn(T)>,
}

impl<T: Send + 'static> RemoteAnswer<T> {
    pub fn send(self, value: T) {
        let slot = self.slot;
        self.mailbox.send(vec![Msg::Job(Box::new(move |w| w.fill(slot, Box::new(value))))]);
    }
}

enum CallState<T> {
    Ready(Option<T>),
    Waiting(u32),
    Done,
}

/// The future of an answer from a worker ([`Worker::call`], [`Worker::ask`]).
pub struct Call<T> {
    worker: Rc<Worker>,
    state: CallState<T>,
}

impl<T> Call<T> {
    pub(super) fn waiting(worker: Rc<Worker>, slot: u32) -> Self {
        Call { worker, state: CallState::Waiting(slot) }
    }
}

impl<T: Unpin + 'static> Future for Call<T> {
    type Output = T;
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<T> {
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
                        Poll::Ready(*r.downcast::<T>().expect("an answer of the type asked for"))
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

impl<T> Drop for Call<T> {
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
