//! The publication write path: encoding a push once (`Prepared::new` → JSON WebSocket frame,
//! `protobuf_frame`) and fanning one frame out to 10,000 local subscribers' `Outbox` queues.
//!
//! Fan-out is timed until every queue has been drained by its writer task (the real
//! `Outbox::run_writer`, writing to a sink that accepts everything at once), so the figure
//! includes waking 10,000 writers and their vectored writes, not only the pushes.

use std::cell::Cell;
use std::future::Future;
use std::hint::black_box;
use std::rc::Rc;
use std::sync::Arc;
use std::task::{Poll, Waker};
use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use monoio::buf::{IoBuf, IoVecBuf};
use monoio::io::AsyncWriteRent;
use monoio::BufResult;

use gyre::client::outbox::Outbox;
use gyre::model::{Payload, Publication};
use gyre::protocol::PushBody;
use gyre::push::{Prepared, PushKind};

fn push_body() -> PushBody {
    let data = Bytes::from_static(br#"{"user":"alice","text":"hello, world","ts":1700000000123,"seq":17}"#);
    PushBody::Pub(Publication {
        offset: 4217,
        data: Payload { bytes: data, binary: false },
        info: None,
        tags: None,
        key: None,
        removed: false,
    })
}

fn encode(c: &mut Criterion) {
    let channel: Arc<str> = Arc::from("room-42");
    let mut g = c.benchmark_group("push_encode");
    g.throughput(Throughput::Elements(1));
    g.bench_function("Prepared::new (JSON frame)", |b| {
        b.iter(|| Prepared::new(channel.clone(), PushKind::Publication, black_box(push_body())))
    });
    let prepared = Prepared::new(channel.clone(), PushKind::Publication, push_body());
    g.bench_function("protobuf_frame", |b| b.iter(|| black_box(&prepared).protobuf_frame()));
    g.finish();
}

/// Bytes written by all sinks, and the main task to wake once `target` is reached.
#[derive(Default)]
struct Written {
    bytes: Cell<usize>,
    target: Cell<usize>,
    waiter: Cell<Option<Waker>>,
}

impl Written {
    fn add(&self, n: usize) {
        self.bytes.set(self.bytes.get() + n);
        if self.bytes.get() >= self.target.get() {
            if let Some(w) = self.waiter.take() {
                w.wake();
            }
        }
    }

    /// Waits until `target` bytes have been written in all. (A task that wakes itself is
    /// re-run first by monoio, so a spin on "yield" would starve the writer tasks.)
    fn reached(&self, target: usize) -> impl Future<Output = ()> + '_ {
        self.target.set(target);
        std::future::poll_fn(move |cx| {
            if self.bytes.get() >= target {
                Poll::Ready(())
            } else {
                self.waiter.set(Some(cx.waker().clone()));
                Poll::Pending
            }
        })
    }
}

/// A socket that takes every byte at once and counts them.
struct Sink(Rc<Written>);

impl AsyncWriteRent for Sink {
    fn write<T: IoBuf>(&mut self, buf: T) -> impl Future<Output = BufResult<usize, T>> {
        let n = buf.bytes_init();
        self.0.add(n);
        std::future::ready((Ok(n), buf))
    }

    fn writev<T: IoVecBuf>(&mut self, bufs: T) -> impl Future<Output = BufResult<usize, T>> {
        // SAFETY: `IoVecBuf` guarantees `read_iovec_len` valid iovecs at `read_iovec_ptr`.
        let iov = unsafe { std::slice::from_raw_parts(bufs.read_iovec_ptr(), bufs.read_iovec_len()) };
        let n: usize = iov.iter().map(|v| v.iov_len).sum();
        self.0.add(n);
        std::future::ready((Ok(n), bufs))
    }

    fn flush(&mut self) -> impl Future<Output = std::io::Result<()>> {
        std::future::ready(Ok(()))
    }

    fn shutdown(&mut self) -> impl Future<Output = std::io::Result<()>> {
        std::future::ready(Ok(()))
    }
}

fn fanout(c: &mut Criterion) {
    let channel: Arc<str> = Arc::from("room-42");
    let prepared = Prepared::new(channel, PushKind::Publication, push_body());
    let frame = prepared.json.clone().expect("JSON payload");
    let mut rt = monoio::RuntimeBuilder::<monoio::LegacyDriver>::new().enable_timer().build().expect("runtime");
    let mut g = c.benchmark_group("fanout");
    for subs in [1_000usize, 10_000] {
        let written = Rc::new(Written::default());
        let outs: Vec<Rc<Outbox>> = (0..subs).map(|_| Rc::new(Outbox::new(1 << 20))).collect();
        rt.block_on(async {
            for out in &outs {
                let (out, sink) = (out.clone(), Sink(written.clone()));
                monoio::spawn(async move { out.run_writer(sink, Duration::from_secs(10)).await });
            }
        });
        g.throughput(Throughput::Elements(subs as u64));
        g.bench_function(format!("one JSON frame to {subs} Outbox queues, drained"), |b| {
            b.iter_custom(|iters| {
                rt.block_on(async {
                    let start = Instant::now();
                    for _ in 0..iters {
                        let target = written.bytes.get() + subs * frame.len();
                        for out in &outs {
                            out.push(frame.clone()).expect("queue bound");
                        }
                        written.reached(target).await;
                    }
                    start.elapsed()
                })
            })
        });
        // The writers see the kill and return when next polled (in the next block_on).
        for out in &outs {
            out.kill();
        }
    }
    g.finish();
}

criterion_group!(benches, encode, fanout);
criterion_main!(benches);
