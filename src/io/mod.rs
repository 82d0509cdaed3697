//! Socket reads shared by every connection kind (HTTP, WebSocket sessions, gateway backends,
//! Redis connections): growing and shrinking a read buffer, reading after what it holds, and
//! yielding so one busy socket cannot starve its worker's other tasks; and the WebSocket read
//! loop ([`ws`]); TLS whose read and write halves run as two tasks ([`tls`]).

pub mod tls;
pub mod ws;

use bytes::BytesMut;
use monoio::io::AsyncReadRent;

/// Largest read buffer a busy connection grows to.
const READ_MAX: usize = 64 * 1024;

/// Sizes the read buffer before a read: `idle` bytes when nothing is buffered, doubling (up to
/// [`READ_MAX`]) while reads keep filling it.
pub fn prepare_read(buf: &mut BytesMut, last_read_filled: bool, idle: usize) {
    prepare_read_up_to(buf, last_read_filled, idle, READ_MAX)
}

/// [`prepare_read`] growing up to `max` bytes (a connection streaming a long request body
/// reads it in fewer, larger pieces: fewer reads, and fewer writes of the replies).
pub fn prepare_read_up_to(buf: &mut BytesMut, last_read_filled: bool, idle: usize, max: usize) {
    if buf.is_empty() && buf.capacity() > idle * 4 && !last_read_filled {
        *buf = BytesMut::with_capacity(idle);
        return;
    }
    let spare = buf.capacity() - buf.len();
    if last_read_filled {
        buf.reserve((buf.capacity() * 2).clamp(idle, max));
    } else if spare < idle / 2 {
        buf.reserve(idle);
    }
}

/// Reads more bytes **after** what `buf` already holds. (monoio's `read` on a `BytesMut`
/// writes from the start of the allocation, so the unread tail must be protected by reading
/// into the spare capacity only.)
///
/// A read that completes without waiting (the epoll driver, on a socket that always has
/// data) is followed by a yield, so one connection sending as fast as it can never keeps the
/// worker's other tasks from running. (io_uring reads always wait for their completion.)
pub async fn read_more<R: AsyncReadRent>(rd: &mut R, buf: BytesMut) -> (std::io::Result<usize>, BytesMut) {
    use monoio::buf::{IoBuf, IoBufMut};
    let (len, cap) = (buf.bytes_init(), buf.capacity());
    let mut read = std::pin::pin!(rd.read(buf.slice_mut(len..cap)));
    let mut polls = 0u32;
    let (res, slice) = std::future::poll_fn(|cx| {
        polls += 1;
        std::future::Future::poll(read.as_mut(), cx)
    })
    .await;
    if polls == 1 {
        yield_now().await;
    }
    (res, slice.into_inner())
}

/// Lets the worker's other ready tasks run before this one continues. The wake-up comes from
/// a task of its own: monoio puts a task that wakes itself while being polled back at the
/// front of the run queue, which would let nothing else run.
pub async fn yield_now() {
    let mut yielded = false;
    std::future::poll_fn(|cx| {
        if yielded {
            return std::task::Poll::Ready(());
        }
        yielded = true;
        let waker = cx.waker().clone();
        monoio::spawn(async move { waker.wake() });
        std::task::Poll::Pending
    })
    .await
}

/// The socket under a connection: its descriptor (shut both ways to end the connection from
/// the write side) and whether frames may be written straight to it by the worker's flush
/// pass. Under TLS they may not: every byte goes through the TLS layer's writer.
#[derive(Debug, Clone, Copy)]
pub struct Socket {
    pub fd: i32,
    pub direct: bool,
}

impl Socket {
    /// A plain socket, written directly.
    pub fn plain(fd: i32) -> Socket {
        Socket { fd, direct: true }
    }
}
