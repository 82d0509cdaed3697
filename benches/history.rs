//! In-memory history streams (`engine::memory::Stream`): appending into a full ring, and
//! reading 100 publications forward from a position, in reverse, and with limit 0.

use std::hint::black_box;
use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};

use gyre::engine::memory::Stream;
use gyre::model::{Payload, Publication, StreamPosition};

const TTL: Duration = Duration::from_secs(300);

fn publication(data: &Bytes) -> Publication {
    Publication {
        offset: 0,
        data: Payload { bytes: data.clone(), binary: false },
        info: None,
        tags: None,
        key: None,
        removed: false,
    }
}

/// A stream whose ring of `size` is already full, as in steady state.
fn full(size: usize, data: &Bytes, now: Instant) -> Stream {
    let mut s = Stream::new(now);
    for _ in 0..size {
        s.add(publication(data), size, TTL, now);
    }
    s
}

fn add(c: &mut Criterion) {
    let data = Bytes::from_static(br#"{"user":"alice","text":"hello, world","ts":1700000000123}"#);
    let mut g = c.benchmark_group("history_add");
    g.throughput(Throughput::Elements(1));
    for size in [100usize, 10_000] {
        let now = Instant::now();
        let mut s = full(size, &data, now);
        g.bench_function(format!("add into full ring of {size}"), |b| {
            b.iter(|| s.add(publication(black_box(&data)), size, TTL, now))
        });
    }
    g.finish();
}

fn read(c: &mut Criterion) {
    const SIZE: usize = 10_000;
    let data = Bytes::from_static(br#"{"user":"alice","text":"hello, world","ts":1700000000123}"#);
    let now = Instant::now();
    let mut s = full(SIZE, &data, now);
    let top = s.position();
    let mid = StreamPosition { offset: top.offset - SIZE as u64 / 2, epoch: top.epoch.clone() };
    let mut g = c.benchmark_group("history_read");
    g.throughput(Throughput::Elements(100));
    g.bench_function("100 forward from since (ring 10k)", |b| {
        b.iter(|| {
            let (pubs, _) = s.read(Some(black_box(&mid)), 100, false, now).unwrap();
            assert_eq!(pubs.len(), 100);
            pubs
        })
    });
    g.bench_function("100 reverse from since (ring 10k)", |b| {
        b.iter(|| {
            let (pubs, _) = s.read(Some(black_box(&mid)), 100, true, now).unwrap();
            assert_eq!(pubs.len(), 100);
            pubs
        })
    });
    g.bench_function("100 reverse from top (ring 10k)", |b| {
        b.iter(|| {
            let (pubs, _) = s.read(None, black_box(100), true, now).unwrap();
            assert_eq!(pubs.len(), 100);
            pubs
        })
    });
    g.throughput(Throughput::Elements(1));
    g.bench_function("limit 0: position only (ring 10k)", |b| {
        b.iter(|| {
            let (pubs, pos) = s.read(Some(black_box(&mid)), 0, false, now).unwrap();
            assert!(pubs.is_empty());
            pos
        })
    });
    g.finish();
}

criterion_group!(benches, add, read);
criterion_main!(benches);
