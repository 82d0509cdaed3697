//! A single-thread wake-up flag for tasks of one worker (writer ← reader, flusher ← anyone).

use std::cell::Cell;
use std::future::poll_fn;
use std::task::{Poll, Waker};

/// One waiting task, woken by `notify`. A notify with nobody waiting is remembered once.
#[derive(Default)]
pub struct LocalNotify {
    flag: Cell<bool>,
    waker: Cell<Option<Waker>>,
}

impl LocalNotify {
    pub fn notify(&self) {
        self.flag.set(true);
        if let Some(w) = self.waker.take() {
            w.wake();
        }
    }

    pub async fn wait(&self) {
        poll_fn(|cx| {
            if self.flag.replace(false) {
                Poll::Ready(())
            } else {
                self.waker.set(Some(cx.waker().clone()));
                Poll::Pending
            }
        })
        .await
    }
}
