//! A worker's flush lists: the connections whose queued frames ([`Outbox`]) its flush pass
//! writes at the end of this loop turn, and — with `client.write_delay` ([`Batching`]) — the
//! *later* list of those waiting out the delay.
//!
//! With a delay a connection's first frame does not mark it for this turn's pass: the
//! connection joins the later list, a FIFO (every connection of a worker waits the same delay,
//! so deadlines come in order), and one timer task writes each connection whose delay is over
//! — everything it has queued by then, in one `sendmsg`: fewer, larger writes for some
//! latency. A connection with `max_messages_in_frame` frames queued, or a reply to a command
//! with `client.reply_without_queue`, goes to this turn's pass instead (with what is queued
//! before it: frames never overtake one another). A connection that only its writer task
//! writes (TLS, SockJS polling) waits the same way: once its delay is over, the later list's
//! pass wakes its writer.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::rc::Rc;
use std::time::{Duration, Instant};

use super::outbox::{Outbox, Scratch};
use crate::notify::LocalNotify;

/// A worker's flush list: the connections with frames queued during this loop turn, written
/// once each by [`Writes::flush`] when the turn's other work is done (see [`super::outbox`]),
/// and its later list.
pub struct Writes<T> {
    dirty: RefCell<Vec<Rc<T>>>,
    /// The list being flushed (kept to reuse its allocation).
    spare: RefCell<Vec<Rc<T>>>,
    scratch: RefCell<Scratch>,
    wake: LocalNotify,
    batching: Batching,
    /// Connections waiting out `batching.delay`, by deadline (see the module docs).
    later: RefCell<VecDeque<(Instant, Rc<T>)>>,
    later_wake: LocalNotify,
}

/// How a worker's connections batch their writes: `client.write_delay`,
/// `client.max_messages_in_frame` and `client.reply_without_queue` (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Batching {
    /// How long frames wait for more; zero: they leave at the end of their loop turn.
    pub delay: Duration,
    /// With a delay: this many queued frames leave without waiting the rest of it.
    pub max_frames: usize,
    /// With a delay: replies to commands leave at the end of their loop turn.
    pub replies_now: bool,
}

impl Default for Batching {
    fn default() -> Self {
        Batching { delay: Duration::ZERO, max_frames: usize::MAX, replies_now: true }
    }
}

impl Batching {
    /// The options of `client` (`max_messages_in_frame`: 0 is 16, negative is no bound).
    pub fn of(client: &crate::config::Client) -> Batching {
        let max_frames = match client.max_messages_in_frame {
            0 => 16,
            n if n < 0 => usize::MAX,
            n => n as usize,
        };
        Batching { delay: client.write_delay, max_frames, replies_now: client.reply_without_queue }
    }

    /// How a frame waits: `None`, written this loop turn; `Some(n)`, until the delay is over
    /// or `n` frames are queued. `reply`: the frame answers a command.
    pub fn linger(&self, reply: bool) -> Option<usize> {
        let now = self.delay.is_zero() || (reply && self.replies_now);
        (!now).then_some(self.max_frames)
    }
}

/// What a push asks of the worker's flush lists.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mark {
    /// Nothing: the connection is listed already, or its writer task has the queue.
    None,
    /// Put it in this loop turn's flush list ([`Writes::mark`]).
    Now,
    /// Put it in the later list ([`Writes::mark_later`]).
    Later,
}

/// What [`Writes`] can flush: something that has an [`Outbox`].
pub trait HasOutbox {
    fn outbox(&self) -> &Outbox;
}

impl<T: HasOutbox> Default for Writes<T> {
    fn default() -> Self {
        Writes::new(Batching::default())
    }
}

impl<T: HasOutbox> Writes<T> {
    pub fn new(batching: Batching) -> Self {
        Writes {
            dirty: RefCell::new(Vec::new()),
            spare: RefCell::new(Vec::new()),
            scratch: RefCell::new(Scratch::default()),
            wake: LocalNotify::default(),
            batching,
            later: RefCell::new(VecDeque::new()),
            later_wake: LocalNotify::default(),
        }
    }

    pub fn batching(&self) -> &Batching {
        &self.batching
    }

    /// Puts a connection whose push answered [`Mark::Later`] in the later list: it is
    /// written once the delay is over.
    pub fn mark_later(&self, conn: Rc<T>) {
        let mut later = self.later.borrow_mut();
        if later.is_empty() {
            self.later_wake.notify();
        }
        later.push_back((Instant::now() + self.batching.delay, conn));
    }

    /// The later list's task (spawned only with a delay): writes each connection whose
    /// delay is over, everything it has queued by then.
    pub async fn run_later(self: Rc<Self>) {
        loop {
            let next = self.later.borrow().front().map(|(at, _)| *at);
            let Some(at) = next else {
                self.later_wake.wait().await;
                continue;
            };
            let now = Instant::now();
            if at > now {
                monoio::time::sleep_until(at.into()).await;
                continue;
            }
            loop {
                let due = {
                    let mut later = self.later.borrow_mut();
                    match later.front() {
                        Some((at, _)) if *at <= now => later.pop_front(),
                        _ => None,
                    }
                };
                let Some((_, conn)) = due else { break };
                conn.outbox().flush_now(&mut self.scratch.borrow_mut(), true);
            }
        }
    }

    /// Puts a connection whose [`Outbox::push`] answered `Ok(true)` in the list.
    pub fn mark(&self, conn: Rc<T>) {
        let mut dirty = self.dirty.borrow_mut();
        if dirty.is_empty() {
            self.wake.notify();
        }
        dirty.push(conn);
    }

    /// Writes every dirty connection once (connections marked meanwhile wait for the next
    /// pass, which the mark has scheduled).
    pub fn flush(&self) {
        let mut list = std::mem::take(&mut *self.spare.borrow_mut());
        std::mem::swap(&mut list, &mut *self.dirty.borrow_mut());
        {
            let mut scratch = self.scratch.borrow_mut();
            for conn in list.drain(..) {
                conn.outbox().flush_now(&mut scratch, false);
            }
        }
        *self.spare.borrow_mut() = list;
    }

    /// The worker's flush task: one pass after each loop turn that marked a connection. It
    /// lets the tasks woken in the same turn run first (they may queue more frames for the
    /// same connections, and an HTTP publisher's reply then leaves before the deliveries).
    pub async fn run(self: Rc<Self>) {
        loop {
            self.wake.wait().await;
            crate::io::yield_now().await;
            self.flush();
        }
    }
}
