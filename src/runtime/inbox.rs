//! Message passing between workers: one inbox per worker (a lock-free crossbeam list channel
//! of message batches) and a cross-thread wake-up of the task that drains it.
//!
//! Senders batch: a worker queues messages per destination during a loop turn and sends each
//! destination one `Vec` when the turn's work is done, so a publish costs one channel push
//! and at most one wake-up per destination worker per turn, never a lock.

use std::future::poll_fn;
use std::sync::Arc;
use std::task::Poll;

use atomic_waker::AtomicWaker;
use crossbeam_channel::{Receiver, Sender, TryRecvError};

/// The sending side of one worker's inbox; cloned into every worker.
pub struct Mailbox<M> {
    tx: Sender<Vec<M>>,
    waker: Arc<AtomicWaker>,
}

impl<M> Clone for Mailbox<M> {
    fn clone(&self) -> Self {
        Mailbox { tx: self.tx.clone(), waker: self.waker.clone() }
    }
}

impl<M> Mailbox<M> {
    /// Queues a batch and wakes the receiving loop. Returns false when the worker is gone.
    pub fn send(&self, batch: Vec<M>) -> bool {
        let ok = self.tx.send(batch).is_ok();
        self.waker.wake();
        ok
    }
}

/// The receiving side, owned by the worker's inbox task.
pub struct Inbox<M> {
    rx: Receiver<Vec<M>>,
    waker: Arc<AtomicWaker>,
}

impl<M> Inbox<M> {
    /// Waits for the next batch; `None` when every sender is gone.
    pub async fn recv(&self) -> Option<Vec<M>> {
        poll_fn(|cx| match self.rx.try_recv() {
            Ok(b) => Poll::Ready(Some(b)),
            Err(TryRecvError::Disconnected) => Poll::Ready(None),
            Err(TryRecvError::Empty) => {
                self.waker.register(cx.waker());
                // Re-check after registering so a send racing with the registration is seen.
                match self.rx.try_recv() {
                    Ok(b) => Poll::Ready(Some(b)),
                    Err(TryRecvError::Disconnected) => Poll::Ready(None),
                    Err(TryRecvError::Empty) => Poll::Pending,
                }
            }
        })
        .await
    }

    /// A batch already queued, without waiting.
    pub fn try_recv(&self) -> Option<Vec<M>> {
        self.rx.try_recv().ok()
    }
}

/// A connected mailbox/inbox pair.
pub fn inbox<M>() -> (Mailbox<M>, Inbox<M>) {
    let (tx, rx) = crossbeam_channel::unbounded();
    let waker = Arc::new(AtomicWaker::new());
    (Mailbox { tx, waker: waker.clone() }, Inbox { rx, waker })
}
