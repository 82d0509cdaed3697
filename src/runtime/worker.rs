//! One worker: an event loop's shared state. Owns its shard of channels, its outgoing message
//! batches, the reply targets of its connections and the waiters of its async commands.
//!
//! Everything here is `!Send` and used only from the worker's own thread; other workers are
//! reached only through [`Mailbox`]es.

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::Instant;

use slab::Slab;

use super::inbox::{Inbox, Mailbox};
use super::notify::LocalNotify;
use crate::api::{NodeInfo, Reply, Res};
use crate::config::Config;
use crate::shard::{Shard, ShardOp};

/// Work one worker asks another to do.
#[derive(Debug)]
pub enum Op {
    /// Runs on the channel's owner.
    Shard(ShardOp),
    /// Runs on every worker against its own connections; results are merged by the caller.
    Survey(Survey),
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
}

/// Where a result goes back to on the worker that asked.
#[derive(Debug, Clone, Copy)]
pub enum Tag {
    /// A reply slot of a connection: `seq` in that connection's ordered output.
    Reply { conn: u32, gen: u32, seq: u64 },
    /// An async command awaiting the result.
    Waiter(u32),
}

/// Messages between workers.
#[derive(Debug)]
pub enum Msg {
    Exec { from: u16, tag: Tag, op: Op },
    Done { tag: Tag, result: Reply },
    Shutdown,
}

/// Receives command results for one connection, in any order; the sink restores order.
pub trait ReplySink {
    fn fill(&self, seq: u64, reply: Reply);
}

/// Identity and start time of this node, shared read-only by all workers.
pub struct NodeShared {
    pub uid: String,
    pub name: String,
    pub version: String,
    pub started: Instant,
    pub mailboxes: Vec<Mailbox<Msg>>,
}

enum Waiter {
    Waiting(Option<Waker>),
    Ready(Reply),
    Abandoned,
}

/// A worker's state, shared by its tasks through `Rc`.
pub struct Worker {
    pub id: usize,
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
}

impl Worker {
    pub fn new(id: usize, cfg: Arc<Config>, node: Arc<NodeShared>) -> Self {
        let workers = node.mailboxes.len();
        Worker {
            id,
            workers,
            shard: RefCell::new(Shard::new(cfg.clone())),
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
        }
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

    /// Runs `op` on worker `to` and delivers the result to `tag`: at once when `to` is this
    /// worker, else through `to`'s inbox (sent at the end of this loop turn).
    pub fn submit(&self, to: usize, op: Op, tag: Tag) {
        if to == self.id {
            let r = self.exec_local(op);
            self.complete(tag, r);
        } else {
            self.send(to, Msg::Exec { from: self.id as u16, tag, op });
        }
    }

    fn send(&self, to: usize, msg: Msg) {
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
        if to == self.id {
            return Call { worker: self.clone(), state: CallState::Ready(Some(self.exec_local(op))) };
        }
        let slot = self.waiters.borrow_mut().insert(Waiter::Waiting(None)) as u32;
        self.send(to, Msg::Exec { from: self.id as u16, tag: Tag::Waiter(slot), op });
        Call { worker: self.clone(), state: CallState::Waiting(slot) }
    }

    /// Executes an operation that landed on this worker.
    pub fn exec_local(&self, op: Op) -> Reply {
        match op {
            Op::Shard(op) => self.shard.borrow_mut().exec(op, Instant::now()),
            Op::Survey(Survey::Stats) => Ok(Res::Info(vec![NodeInfo::default()])),
            Op::Survey(Survey::Channels(_)) => Ok(Res::Channels(Vec::new())),
            Op::Survey(Survey::Act(_)) => Ok(Res::Empty),
        }
    }

    /// Drains the inbox forever: executes forwarded work and routes results home.
    pub async fn run_inbox(self: Rc<Self>, inbox: Inbox<Msg>) {
        while let Some(batch) = inbox.recv().await {
            self.handle_batch(batch);
            while let Some(batch) = inbox.try_recv() {
                self.handle_batch(batch);
            }
            self.flush();
            if self.shutdown.get() {
                break;
            }
        }
    }

    fn handle_batch(&self, batch: Vec<Msg>) {
        for msg in batch {
            match msg {
                Msg::Exec { from, tag, op } => {
                    let result = self.exec_local(op);
                    self.send(from as usize, Msg::Done { tag, result });
                }
                Msg::Done { tag, result } => self.complete(tag, result),
                Msg::Shutdown => {
                    self.shutdown.set(true);
                    self.shutdown_notify.notify();
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
