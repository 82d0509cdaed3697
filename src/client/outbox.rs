//! A WebSocket connection's write queue: complete frames (`Bytes`, often shared by every
//! subscriber of a publication) bounded by bytes. The writer task sends everything queued with
//! one vectored write per wake-up, so all frames queued during a loop turn leave together.
//!
//! Overflow (a client that does not read) is the session's "slow" disconnect: the queue is
//! dropped, only the close frame is sent, and the socket is shut within the write timeout.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::task::{Poll, Waker};
use std::time::Duration;

use bytes::Bytes;
use monoio::buf::IoVecBuf;

/// Most frames gathered into one vectored write.
const MAX_IOV: usize = 512;

#[derive(Default)]
struct Inner {
    queue: VecDeque<Bytes>,
    bytes: usize,
    writer: Option<Waker>,
    /// Close frame to send last; set once.
    close: Option<Bytes>,
    dead: bool,
}

/// See the module docs.
pub struct Outbox {
    inner: RefCell<Inner>,
    max_bytes: usize,
}

/// The queue is over its byte bound.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Overflow;

impl Outbox {
    pub fn new(max_bytes: usize) -> Self {
        Outbox { inner: RefCell::new(Inner::default()), max_bytes: max_bytes.max(1) }
    }

    /// Queues a frame. Frames after a close are dropped.
    pub fn push(&self, frame: Bytes) -> Result<(), Overflow> {
        let mut i = self.inner.borrow_mut();
        if i.close.is_some() || i.dead {
            return Ok(());
        }
        if i.bytes + frame.len() > self.max_bytes && !i.queue.is_empty() {
            return Err(Overflow);
        }
        i.bytes += frame.len();
        i.queue.push_back(frame);
        if let Some(w) = i.writer.take() {
            w.wake();
        }
        Ok(())
    }

    /// Queues the close frame; with `drop_queued` the pending frames are discarded first.
    pub fn close(&self, frame: Bytes, drop_queued: bool) {
        let mut i = self.inner.borrow_mut();
        if i.close.is_some() {
            return;
        }
        if drop_queued {
            i.queue.clear();
            i.bytes = 0;
        }
        i.close = Some(frame);
        if let Some(w) = i.writer.take() {
            w.wake();
        }
    }

    /// True once closing or dead.
    pub fn is_closed(&self) -> bool {
        let i = self.inner.borrow();
        i.close.is_some() || i.dead
    }

    /// Marks the socket gone (the reader saw EOF): the writer stops.
    pub fn kill(&self) {
        let mut i = self.inner.borrow_mut();
        i.dead = true;
        i.queue.clear();
        i.bytes = 0;
        if let Some(w) = i.writer.take() {
            w.wake();
        }
    }

    /// True when nothing is left to write (the writer finished or the peer is gone).
    pub fn is_drained(&self) -> bool {
        let i = self.inner.borrow();
        i.dead && i.queue.is_empty()
    }

    pub fn queued_bytes(&self) -> usize {
        self.inner.borrow().bytes
    }

    /// Waits for frames; returns up to [`MAX_IOV`] of them, or `None` when the writer should
    /// send the close frame (returned in `close`) and stop.
    async fn next_batch(&self, batch: &mut Vec<Bytes>) -> Option<Option<Bytes>> {
        std::future::poll_fn(|cx| {
            let mut i = self.inner.borrow_mut();
            if i.dead {
                return Poll::Ready(Some(None));
            }
            if !i.queue.is_empty() {
                let n = i.queue.len().min(MAX_IOV);
                batch.reserve_exact(n);
                for f in i.queue.drain(..n) {
                    batch.push(f);
                }
                let sent: usize = batch.iter().map(|b| b.len()).sum();
                i.bytes -= sent;
                return Poll::Ready(None);
            }
            if let Some(c) = i.close.take() {
                i.dead = true;
                return Poll::Ready(Some(Some(c)));
            }
            i.writer = Some(cx.waker().clone());
            Poll::Pending
        })
        .await
    }

    /// The writer task. `write_timeout` bounds how long one write may block (a peer that
    /// stopped reading); then the connection is dropped.
    pub async fn run_writer<W: monoio::io::AsyncWriteRent>(&self, mut w: W, write_timeout: Duration) {
        use monoio::io::AsyncWriteRentExt;
        loop {
            // A fresh Vec per batch: an idle connection then holds no batch allocation.
            let mut batch: Vec<Bytes> = Vec::new();
            match self.next_batch(&mut batch).await {
                None => {
                    // Boxed so the idle writer's state stays small.
                    let write = Box::pin(write_frames(&mut w, batch));
                    let res = monoio::time::timeout(write_timeout.max(Duration::from_millis(100)) * 10, write).await;
                    if !matches!(res, Ok(Ok(()))) {
                        self.kill();
                        return;
                    }
                }
                Some(close) => {
                    if let Some(c) = close {
                        let _ = monoio::time::timeout(write_timeout, w.write_all(c)).await;
                    }
                    let _ = w.shutdown().await;
                    return;
                }
            }
        }
    }
}

/// Writes every frame with as few `writev` calls as the socket allows. After a short write
/// the iovecs are rebuilt from what is left (the first frame advanced past the written bytes);
/// monoio 0.2.4's `write_vectored_all` mishandles short writes, so it is not used.
async fn write_frames<W: monoio::io::AsyncWriteRent>(w: &mut W, mut frames: Vec<Bytes>) -> std::io::Result<()> {
    use bytes::Buf;
    while !frames.is_empty() {
        let (res, done) = w.writev(Frames::new(frames)).await;
        frames = done.bufs;
        let mut n = match res {
            Ok(0) => return Err(std::io::ErrorKind::WriteZero.into()),
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        let mut whole = 0;
        for f in frames.iter_mut() {
            if n >= f.len() {
                n -= f.len();
                whole += 1;
            } else {
                f.advance(n);
                break;
            }
        }
        frames.drain(..whole);
    }
    Ok(())
}

/// Frames handed to `writev`: the `Bytes` keep the memory alive while the kernel reads it.
struct Frames {
    bufs: Vec<Bytes>,
    iov: Vec<libc::iovec>,
}

impl Frames {
    fn new(bufs: Vec<Bytes>) -> Self {
        let iov = bufs
            .iter()
            .take(MAX_IOV)
            .map(|b| libc::iovec { iov_base: b.as_ptr() as *mut _, iov_len: b.len() })
            .collect();
        Frames { bufs, iov }
    }
}

// SAFETY: `iov` points into `bufs`, which `Frames` owns and never mutates while it exists;
// `Bytes` memory does not move when the `Vec<Bytes>` itself moves.
unsafe impl IoVecBuf for Frames {
    fn read_iovec_ptr(&self) -> *const libc::iovec {
        self.iov.as_ptr()
    }
    fn read_iovec_len(&self) -> usize {
        self.iov.len()
    }
}
