//! A frame in a connection's write queue: its own `Bytes`, or a publication's frame shared by
//! the subscribers of one worker through a reference count that is not atomic.
//!
//! A publication's frame is encoded once and queued on every subscriber. Cloning and dropping
//! a `Bytes` that many times is an atomic increment and decrement per subscriber, each a full
//! barrier on x86: with 1,000 subscribers they were ~10% of a delivery's CPU with the
//! publisher's default batch and ~22% with larger ones (`perf`, BENCHMARKS.md). Within one
//! worker nothing needs the atomics, so [`crate::hub::Hub::deliver`] wraps the frame once per
//! publication in an `Rc` and queues clones of that.

use std::ops::Deref;
use std::rc::Rc;

use bytes::{Buf, Bytes};

/// See the module docs.
#[derive(Clone, Debug)]
pub enum Frame {
    Own(Bytes),
    Local(Rc<Bytes>),
}

impl Frame {
    /// Drops the first `n` bytes (a partly written frame). A shared frame becomes a slice of
    /// its own.
    pub fn advance(&mut self, n: usize) {
        match self {
            Frame::Own(b) => b.advance(n),
            Frame::Local(b) => *self = Frame::Own(b.slice(n..)),
        }
    }

    /// The frame as `Bytes` (for the paths that hand frames on: the writer task, polls).
    pub fn into_bytes(self) -> Bytes {
        match self {
            Frame::Own(b) => b,
            Frame::Local(b) => Rc::try_unwrap(b).unwrap_or_else(|b| Bytes::clone(&b)),
        }
    }
}

impl Deref for Frame {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        match self {
            Frame::Own(b) => b,
            Frame::Local(b) => b,
        }
    }
}

impl From<Bytes> for Frame {
    fn from(b: Bytes) -> Frame {
        Frame::Own(b)
    }
}

impl From<Rc<Bytes>> for Frame {
    fn from(b: Rc<Bytes>) -> Frame {
        Frame::Local(b)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_shared_frame_reads_advances_and_hands_on_its_bytes() {
        let shared = Rc::new(Bytes::from_static(b"hello world"));
        let mut a = Frame::from(shared.clone());
        let b = Frame::from(shared.clone());
        assert_eq!((&*a, Rc::strong_count(&shared)), (&b"hello world"[..], 3));
        a.advance(6);
        assert_eq!(&*a, b"world");
        assert!(matches!(a, Frame::Own(_)), "a partly written frame is a slice of its own");
        assert_eq!(Rc::strong_count(&shared), 2);
        assert_eq!(b.into_bytes(), Bytes::from_static(b"hello world"));
        let mut own = Frame::from(Bytes::from_static(b"abc"));
        own.advance(1);
        assert_eq!(own.into_bytes(), Bytes::from_static(b"bc"));
    }
}
