//! A connection's write queue: complete frames ([`Frame`]: `Bytes`, or a publication's frame
//! shared by its subscribers on this worker) bounded by bytes.
//!
//! Two ways out. A client connection writes *directly* ([`Outbox::write_directly`]): a push
//! only marks the connection dirty (once, however many frames a loop turn queues), and the
//! worker's flush pass at the end of the loop turn ([`super::writes::Writes`]) sends each
//! dirty connection's frames with one non-blocking `send` (small frames copied together, see
//! [`Scratch`]) or `sendmsg` — no task wake-up, no timer, no allocation per write. What the
//! socket does not take at once (its send buffer is full, or the peer is gone) is handed to
//! the connection's writer task, which owns the queue until it is empty again, waiting for
//! the socket within the write timeout. Other connections (gateway backends) leave
//! everything to the writer task: one vectored write per wake-up.
//!
//! With `client.write_delay` frames may wait longer, in the worker's later list (see
//! [`super::writes`]).
//!
//! Overflow (a client that does not read) is the session's "slow" disconnect: the queue is
//! dropped, only the close frame is sent, and the socket is shut within the write timeout.

use std::cell::{RefCell, RefMut};
use std::collections::VecDeque;
use std::task::{Poll, Waker};
use std::time::Duration;

use bytes::Bytes;
use monoio::buf::IoVecBuf;

use super::writes::Mark;
use super::Frame;

/// Most frames gathered into one vectored write.
const MAX_IOV: usize = 512;

/// Most bytes the flush pass copies into one contiguous buffer for a plain `send`, and the
/// largest frame it copies (see [`Scratch`]).
const GATHER_MAX: usize = 32 * 1024;
const GATHER_FRAME_MAX: usize = 2048;

/// The flush pass's scratch space, reused for every connection it writes.
///
/// Several small frames (a loop turn's publications to one subscriber) are copied into `buf`
/// and leave in one `send` rather than in one `sendmsg` with a segment per frame: the kernel's
/// cost per segment (importing the vector, one user copy per segment into the socket buffer)
/// is more than copying small frames here. Measured on loopback TCP, 1,000 connections, the
/// two ways alternated in one process (`benches/flush.rs` for the whole path; BENCHMARKS.md):
/// 9–17% less CPU per delivery for 4 to 64 frames of ~150 B per connection; a plain C loop
/// puts the break-even near 4 KiB frames, hence the per-frame bound. The queue keeps the
/// shared frames; only the write copies them.
#[derive(Default)]
pub(super) struct Scratch {
    iov: Vec<libc::iovec>,
    buf: Vec<u8>,
}

struct Inner {
    queue: VecDeque<Frame>,
    bytes: usize,
    writer: Option<Waker>,
    /// Close frame to send last; set once.
    close: Option<Bytes>,
    dead: bool,
    /// The socket the flush pass writes to directly; -1 when only the writer task writes.
    fd: i32,
    /// Waiting in the worker's flush list.
    dirty: bool,
    /// Waiting in the worker's later list (`client.write_delay`).
    lingering: bool,
    /// The writer task owns the queue (a write is in flight or the socket was full): frames
    /// go to it, not to the flush pass, until the queue is empty again.
    writing: bool,
    /// Spawns the writer task the first time it is needed (a connection that only ever
    /// writes directly never has one).
    start: Option<Box<dyn FnOnce()>>,
    /// Frames are queued but not written (a response whose head depends on the outcome of
    /// its first command) until [`Outbox::resume`].
    paused: bool,
    /// The front frame has been partly written: it must be finished, or the stream's
    /// framing breaks.
    partial: bool,
}

impl Default for Inner {
    fn default() -> Self {
        Inner {
            queue: VecDeque::new(),
            bytes: 0,
            writer: None,
            close: None,
            dead: false,
            fd: -1,
            dirty: false,
            lingering: false,
            writing: false,
            start: None,
            paused: false,
            partial: false,
        }
    }
}

/// Wakes the writer task, or spawns it when it has not been yet (once the queue is no longer
/// borrowed: the starter runs with `i` released).
fn wake_writer(mut i: RefMut<'_, Inner>) {
    if let Some(w) = i.writer.take() {
        w.wake();
    }
    let start = i.start.take();
    drop(i);
    if let Some(f) = start {
        f();
    }
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

    /// The writer task is spawned by `start` when first needed (a full socket, the close
    /// frame), not for every connection. See [`Outbox::take_start`].
    pub fn start_writer_on_demand(&self, start: Box<dyn FnOnce()>) {
        self.inner.borrow_mut().start = Some(start);
    }

    /// The writer's starter if it was never needed (the connection ends: dropping it releases
    /// what it holds, such as the socket's write half). The flush passes stop writing to the
    /// socket from here on: a connection still waiting in a flush list (`client.write_delay`
    /// keeps it there for the delay) must not write to a descriptor that is closed, or by then
    /// another connection's.
    pub fn take_start(&self) -> Option<Box<dyn FnOnce()>> {
        let mut i = self.inner.borrow_mut();
        let start = i.start.take();
        if start.is_some() {
            i.fd = -1;
        }
        start
    }

    /// From now on frames leave through the flush pass, written straight to `fd` (the socket
    /// whose write half the writer task holds). See the module docs.
    pub fn write_directly(&self, fd: i32) {
        self.inner.borrow_mut().fd = fd;
    }

    /// The queue's bound in bytes.
    pub fn max_bytes(&self) -> usize {
        self.max_bytes
    }

    /// Queues a frame to be written this loop turn. Frames after a close are dropped.
    /// `Ok(true)`: the connection became dirty and must be put in its worker's flush list
    /// ([`Writes::mark`]).
    pub fn push(&self, frame: impl Into<Frame>) -> Result<bool, Overflow> {
        Ok(self.push_with(frame.into(), None)? == Mark::Now)
    }

    /// Queues a frame that may wait ([`Batching::linger`]): the answer says which of the
    /// worker's lists the connection must join.
    pub fn push_with(&self, frame: Frame, linger: Option<usize>) -> Result<Mark, Overflow> {
        let mut i = self.inner.borrow_mut();
        if i.close.is_some() || i.dead {
            return Ok(Mark::None);
        }
        if i.bytes + frame.len() > self.max_bytes && !i.queue.is_empty() {
            return Err(Overflow);
        }
        i.bytes += frame.len();
        if i.queue.capacity() == 0 {
            // Room for one frame at first (a plain push makes room for four): most connections
            // get a frame at a time, and an idle one keeps what its last write left.
            i.queue.reserve_exact(1);
        }
        i.queue.push_back(frame);
        if i.paused {
            return Ok(Mark::None);
        }
        let direct = i.fd >= 0 && !i.writing;
        // A frame that may wait does so whoever writes the connection: the flush pass, or (a
        // connection only its writer task writes, over TLS) the writer, which the later
        // list's pass wakes.
        let waits = linger.is_some_and(|max| i.queue.len() < max);
        let (flag, mark) = match (waits && (direct || i.fd < 0), direct) {
            (true, _) => (&mut i.lingering, Mark::Later),
            (false, true) => (&mut i.dirty, Mark::Now),
            (false, false) => {
                wake_writer(i);
                return Ok(Mark::None);
            }
        };
        Ok(if std::mem::replace(flag, true) { Mark::None } else { mark })
    }

    /// The flush pass's part: writes what is queued with non-blocking `send` calls of up to
    /// [`GATHER_MAX`] bytes of small frames copied together, or `sendmsg` calls of up to
    /// [`MAX_IOV`] frames; what the socket does not take (or an error) goes to the writer
    /// task. `scratch`: the pass's (see [`Scratch`]); `later`: the later list's pass.
    pub(super) fn flush_now(&self, scratch: &mut Scratch, later: bool) {
        let Scratch { iov, buf } = scratch;
        let mut i = self.inner.borrow_mut();
        if later {
            i.lingering = false;
            if i.fd < 0 {
                // Its writer task writes it (see `push_with`): the delay is over.
                if !i.dead && !i.queue.is_empty() {
                    wake_writer(i);
                }
                return;
            }
        } else {
            i.dirty = false;
        }
        if i.dead || i.writing || i.paused || i.fd < 0 || i.queue.is_empty() {
            return;
        }
        if i.close.is_some() {
            // The writer sends the rest and the close frame.
            i.writing = true;
            wake_writer(i);
            return;
        }
        loop {
            // The frames that fit the gather buffer, and what they add up to.
            let (mut count, mut want) = (0, 0);
            for b in i.queue.iter().take(MAX_IOV) {
                if b.len() > GATHER_FRAME_MAX || want + b.len() > GATHER_MAX {
                    break;
                }
                count += 1;
                want += b.len();
            }
            iov.clear();
            if count > 1 {
                buf.clear();
                for b in i.queue.iter().take(count) {
                    buf.extend_from_slice(b);
                }
                iov.push(libc::iovec { iov_base: buf.as_ptr() as *mut _, iov_len: want });
            } else {
                iov.extend(
                    i.queue
                        .iter()
                        .take(MAX_IOV)
                        .map(|b| libc::iovec { iov_base: b.as_ptr() as *mut _, iov_len: b.len() }),
                );
                want = iov.iter().map(|v| v.iov_len).sum();
            }
            const FLAGS: i32 = libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL;
            // SAFETY: `iov` points into `buf` or into frames the queue keeps alive during the
            // call (a zeroed msghdr is valid); MSG_DONTWAIT never blocks, MSG_NOSIGNAL never
            // raises SIGPIPE. One frame, or the gathered ones, take the cheaper `send`.
            let n = unsafe {
                if iov.len() == 1 {
                    libc::send(i.fd, iov[0].iov_base, iov[0].iov_len, FLAGS)
                } else {
                    let mut msg: libc::msghdr = std::mem::zeroed();
                    msg.msg_iov = iov.as_mut_ptr();
                    msg.msg_iovlen = iov.len() as _;
                    libc::sendmsg(i.fd, &msg, FLAGS)
                }
            };
            let mut left = if n > 0 { n as usize } else { 0 };
            i.bytes -= left;
            while left > 0 {
                let front = i.queue.front_mut().expect("written bytes were queued");
                if left >= front.len() {
                    left -= front.len();
                    i.queue.pop_front();
                    i.partial = false;
                } else {
                    front.advance(left);
                    left = 0;
                    i.partial = true;
                }
            }
            if i.queue.is_empty() {
                return;
            }
            if n < 0 || n as usize != want {
                break;
            }
        }
        // The socket is full (or failed): the writer waits for it, within the write timeout,
        // and reports a failure by killing the queue.
        i.writing = true;
        wake_writer(i);
    }

    /// Queues the close frame; with `drop_queued` the pending frames are discarded first.
    pub fn close(&self, frame: Bytes, drop_queued: bool) {
        let mut i = self.inner.borrow_mut();
        if i.close.is_some() {
            return;
        }
        if drop_queued {
            // A partly written frame is finished first, so the closing frame stays readable.
            let keep = if i.partial { i.queue.pop_front() } else { None };
            i.queue.clear();
            i.bytes = keep.as_ref().map_or(0, |f| f.len());
            i.queue.extend(keep);
        }
        i.close = Some(frame);
        if i.paused {
            return;
        }
        wake_writer(i);
    }

    /// Holds what is queued from now on until [`Outbox::resume`] (nothing may have been
    /// written yet).
    pub fn pause(&self) {
        self.inner.borrow_mut().paused = true;
    }

    /// Starts writing what a paused queue holds, after `first` (a response head). With
    /// `instead` the queue and its close are replaced by those frames, and the connection
    /// ends after them. The writer task takes it from here.
    pub fn resume(&self, first: Option<Bytes>, instead: Option<Vec<Bytes>>) {
        let mut i = self.inner.borrow_mut();
        i.paused = false;
        if let Some(frames) = instead {
            i.queue = frames.into_iter().map(Frame::from).collect();
            i.close = Some(Bytes::new());
        }
        if let Some(f) = first {
            i.queue.push_front(f.into());
        }
        i.bytes = i.queue.iter().map(|f| f.len()).sum();
        if i.dead {
            return;
        }
        i.writing = true;
        wake_writer(i);
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

    /// For a transport without a socket of its own (SockJS xhr-polling, whose poll requests
    /// take what is queued): waits for frames and takes up to [`MAX_IOV`] of them; `Err` with
    /// the close frame (empty when none) once the connection is over.
    pub async fn take_frames(&self) -> Result<Vec<Bytes>, Bytes> {
        let mut batch = Vec::new();
        match self.next_batch(&mut batch).await {
            None => Ok(batch),
            Some(close) => Err(close.unwrap_or_default()),
        }
    }

    /// Waits for frames; returns up to [`MAX_IOV`] of them, or `None` when the writer should
    /// send the close frame (returned in `close`) and stop.
    async fn next_batch(&self, batch: &mut Vec<Bytes>) -> Option<Option<Bytes>> {
        std::future::poll_fn(|cx| {
            let mut i = self.inner.borrow_mut();
            if i.dead {
                return Poll::Ready(Some(None));
            }
            if i.paused {
                i.writer = Some(cx.waker().clone());
                return Poll::Pending;
            }
            // Writing directly, the flush pass sends what is queued until it hands over.
            if !i.queue.is_empty() && (i.fd < 0 || i.writing || i.close.is_some()) {
                i.writing = true;
                let n = i.queue.len().min(MAX_IOV);
                batch.reserve_exact(n);
                for f in i.queue.drain(..n) {
                    batch.push(f.into_bytes());
                }
                // The writer finishes a partly written frame first.
                i.partial = false;
                let sent: usize = batch.iter().map(|b| b.len()).sum();
                i.bytes -= sent;
                return Poll::Ready(None);
            }
            if let Some(c) = i.close.take() {
                i.dead = true;
                return Poll::Ready(Some(Some(c)));
            }
            i.writing = false;
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
                    if let Some(c) = close.filter(|c| !c.is_empty()) {
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;
    use std::rc::Rc;
    use std::time::Instant;

    use crate::client::writes::{Batching, HasOutbox, Writes};

    struct Conn(Outbox);

    impl HasOutbox for Conn {
        fn outbox(&self) -> &Outbox {
            &self.0
        }
    }

    /// A connected pair of Unix stream sockets (closed on drop).
    struct Pair([i32; 2]);

    impl Pair {
        fn new() -> Pair {
            let mut fds = [0; 2];
            // SAFETY: `fds` has room for the two descriptors.
            assert_eq!(unsafe { libc::socketpair(libc::AF_UNIX, libc::SOCK_STREAM, 0, fds.as_mut_ptr()) }, 0);
            Pair(fds)
        }

        /// A connection (1 MiB queue) written directly to this pair's first socket.
        fn conn(&self) -> Rc<Conn> {
            let conn = Rc::new(Conn(Outbox::new(1 << 20)));
            conn.0.write_directly(self.0[0]);
            conn
        }

        /// Everything readable on the peer now.
        fn drain(&self) -> Vec<u8> {
            let mut out = Vec::new();
            let mut buf = [0u8; 65536];
            loop {
                // SAFETY: reads into `buf`, never blocks.
                let n = unsafe { libc::recv(self.0[1], buf.as_mut_ptr().cast(), buf.len(), libc::MSG_DONTWAIT) };
                if n <= 0 {
                    return out;
                }
                out.extend_from_slice(&buf[..n as usize]);
            }
        }
    }

    impl Drop for Pair {
        fn drop(&mut self) {
            // SAFETY: both descriptors are ours.
            unsafe {
                libc::close(self.0[0]);
                libc::close(self.0[1]);
            }
        }
    }

    #[test]
    fn a_loop_turn_of_frames_leaves_in_one_flush() {
        let pair = Pair::new();
        let conn = pair.conn();
        let writes = Writes::<Conn>::default();
        assert_eq!(conn.0.push(Bytes::from_static(b"one ")), Ok(true));
        writes.mark(conn.clone());
        // Already dirty: not listed twice.
        assert_eq!(conn.0.push(Bytes::from_static(b"two ")), Ok(false));
        assert_eq!(conn.0.push(Bytes::from_static(b"three")), Ok(false));
        assert!(pair.drain().is_empty(), "nothing is written before the flush pass");
        writes.flush();
        assert_eq!(pair.drain(), b"one two three");
        assert_eq!(conn.0.queued_bytes(), 0);
        // The next turn marks it again.
        assert_eq!(conn.0.push(Bytes::from_static(b"four")), Ok(true));
        writes.mark(conn.clone());
        writes.flush();
        assert_eq!(pair.drain(), b"four");
    }

    /// Small frames are copied together for one `send` (at most `GATHER_MAX` bytes each),
    /// larger ones go as they are; whatever the mix, one pass writes all of it, in order.
    #[test]
    fn small_and_large_frames_leave_in_order_in_one_pass() {
        let pair = Pair::new();
        let conn = pair.conn();
        let writes = Writes::<Conn>::default();
        let mut expected = Vec::new();
        let mut sizes: Vec<usize> = vec![150; 300]; // 45 KB of small frames: two gathers
        sizes.extend([GATHER_FRAME_MAX + 1, 150, 150, 150, 3000, GATHER_FRAME_MAX, 7, 40_000, 150]);
        for (k, n) in sizes.into_iter().enumerate() {
            let frame = Bytes::from(vec![b'a' + (k % 26) as u8; n]);
            expected.extend_from_slice(&frame);
            if conn.0.push(frame).unwrap() {
                writes.mark(conn.clone());
            }
        }
        writes.flush();
        assert_eq!(conn.0.queued_bytes(), 0, "one pass wrote everything");
        assert!(pair.drain() == expected, "every byte, in order");
    }

    /// With a delay, frames wait in the later list and leave together once it is over; a
    /// connection with `max_frames` queued, or a reply with `replies_now`, leaves this turn.
    #[test]
    fn a_write_delay_batches_frames_until_it_is_over() {
        let pair = Pair::new();
        let conn = pair.conn();
        let b = Batching { delay: Duration::from_millis(30), max_frames: 3, replies_now: true };
        assert_eq!((b.linger(false), b.linger(true)), (Some(3), None));
        assert_eq!(Batching { replies_now: false, ..b }.linger(true), Some(3));
        assert_eq!(Batching::default().linger(false), None);
        let writes = Rc::new(Writes::<Conn>::new(b));
        let push = |f: &'static [u8], reply: bool| match conn.0.push_with(Bytes::from_static(f).into(), b.linger(reply))
        {
            Ok(Mark::Now) => writes.mark(conn.clone()),
            Ok(Mark::Later) => writes.mark_later(conn.clone()),
            Ok(Mark::None) => {}
            Err(_) => panic!("overflow"),
        };
        let mut rt = monoio::RuntimeBuilder::<monoio::LegacyDriver>::new().enable_timer().build().unwrap();
        rt.block_on(async {
            monoio::spawn(writes.clone().run_later());
            let t0 = Instant::now();
            push(b"a", false);
            push(b"b", false);
            writes.flush();
            assert!(pair.drain().is_empty(), "nothing leaves before the delay");
            let got = loop {
                monoio::time::sleep(Duration::from_millis(2)).await;
                let got = pair.drain();
                if !got.is_empty() {
                    break got;
                }
                assert!(t0.elapsed() < Duration::from_secs(5), "the delayed frames never left");
            };
            assert_eq!(got, b"ab");
            assert!(t0.elapsed() >= Duration::from_millis(30), "left after {:?}", t0.elapsed());
            // The third queued frame makes the connection due this turn.
            push(b"c", false);
            push(b"d", false);
            assert!(pair.drain().is_empty());
            push(b"e", false);
            writes.flush();
            assert_eq!(pair.drain(), b"cde");
            // A reply leaves this turn, after the frame queued before it.
            push(b"f", false);
            push(b"g", true);
            writes.flush();
            assert_eq!(pair.drain(), b"fg");
            // The later list's stale entry finds nothing; new frames wait a whole delay again.
            push(b"h", false);
            monoio::time::sleep(Duration::from_millis(80)).await;
            assert_eq!(pair.drain(), b"h");
        });
    }

    /// Once the connection ends (its writer's starter is taken and dropped, with the socket's
    /// write half), a flush pass no longer writes to the socket's descriptor.
    #[test]
    fn an_ended_connection_is_not_written_by_a_later_pass() {
        let pair = Pair::new();
        let conn = pair.conn();
        conn.0.start_writer_on_demand(Box::new(|| {}));
        let writes = Writes::<Conn>::default();
        assert_eq!(conn.0.push(Bytes::from_static(b"queued")), Ok(true));
        writes.mark(conn.clone());
        assert!(conn.0.take_start().is_some());
        writes.flush();
        assert!(pair.drain().is_empty());
    }

    /// A sink that takes every byte (the writer task's socket once the flush handed over).
    struct Sink(Rc<RefCell<Vec<u8>>>, Rc<Cell<usize>>);

    impl monoio::io::AsyncWriteRent for Sink {
        async fn write<T: monoio::buf::IoBuf>(&mut self, buf: T) -> monoio::BufResult<usize, T> {
            // SAFETY: `IoBuf` guarantees `bytes_init` readable bytes at `read_ptr`.
            let b = unsafe { std::slice::from_raw_parts(buf.read_ptr(), buf.bytes_init()) };
            self.0.borrow_mut().extend_from_slice(b);
            (Ok(b.len()), buf)
        }

        async fn writev<T: IoVecBuf>(&mut self, bufs: T) -> monoio::BufResult<usize, T> {
            self.1.set(self.1.get() + 1);
            // SAFETY: `IoVecBuf` guarantees `read_iovec_len` valid iovecs at `read_iovec_ptr`.
            let iov = unsafe { std::slice::from_raw_parts(bufs.read_iovec_ptr(), bufs.read_iovec_len()) };
            let mut n = 0;
            for v in iov {
                // SAFETY: each iovec is readable for `iov_len` bytes.
                let b = unsafe { std::slice::from_raw_parts(v.iov_base as *const u8, v.iov_len) };
                self.0.borrow_mut().extend_from_slice(b);
                n += b.len();
            }
            (Ok(n), bufs)
        }

        async fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }

        async fn shutdown(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_full_socket_hands_the_rest_to_the_writer_in_order() {
        let pair = Pair::new();
        let small: libc::c_int = 4096;
        // SAFETY: sets an int socket option from a valid pointer.
        unsafe {
            let p = (&small as *const libc::c_int).cast();
            libc::setsockopt(pair.0[0], libc::SOL_SOCKET, libc::SO_SNDBUF, p, 4);
        }
        let conn = Rc::new(Conn(Outbox::new(16 << 20)));
        conn.0.write_directly(pair.0[0]);
        let writes = Writes::<Conn>::default();
        let mut expected = Vec::new();
        for k in 0..2000u32 {
            let frame = Bytes::from(format!("frame {k:05} ").repeat(20));
            expected.extend_from_slice(&frame);
            if conn.0.push(frame).unwrap() {
                writes.mark(conn.clone());
            }
        }
        writes.flush();
        let direct = pair.drain();
        assert!(!direct.is_empty() && direct.len() < expected.len(), "the socket took part: {}", direct.len());
        assert!(conn.0.queued_bytes() > 0);
        // Frames pushed now go to the writer too (it owns the queue), after the rest.
        let late = Bytes::from_static(b"late");
        expected.extend_from_slice(&late);
        assert_eq!(conn.0.push(late), Ok(false));
        let (got, writevs) = (Rc::new(RefCell::new(direct)), Rc::new(Cell::new(0)));
        let mut rt = monoio::RuntimeBuilder::<monoio::LegacyDriver>::new().enable_timer().build().unwrap();
        rt.block_on(async {
            let c = conn.clone();
            let sink = Sink(got.clone(), writevs.clone());
            let writer = monoio::spawn(async move { c.0.run_writer(sink, Duration::from_secs(5)).await });
            while conn.0.queued_bytes() > 0 {
                monoio::time::sleep(Duration::from_millis(1)).await;
            }
            // Queue empty: the flush pass writes directly again.
            assert_eq!(conn.0.push(Bytes::from_static(b"!")), Ok(true));
            writes.mark(conn.clone());
            writes.flush();
            conn.0.kill();
            writer.await;
        });
        assert!(writevs.get() >= 1);
        assert_eq!(*got.borrow(), expected);
        assert_eq!(pair.drain(), b"!");
    }
}
