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

/// A single-use channel within one worker: the sender is a closure (for callbacks), the
/// receiver a future.
pub fn oneshot<T: 'static>() -> (impl FnOnce(T), impl std::future::Future<Output = T>) {
    use std::cell::RefCell;
    use std::rc::Rc;
    let slot: Rc<RefCell<(Option<T>, Option<Waker>)>> = Rc::new(RefCell::new((None, None)));
    let tx_slot = slot.clone();
    let tx = move |v: T| {
        let mut s = tx_slot.borrow_mut();
        s.0 = Some(v);
        if let Some(w) = s.1.take() {
            w.wake();
        }
    };
    let rx = poll_fn(move |cx| {
        let mut s = slot.borrow_mut();
        match s.0.take() {
            Some(v) => Poll::Ready(v),
            None => {
                s.1 = Some(cx.waker().clone());
                Poll::Pending
            }
        }
    });
    (tx, rx)
}
