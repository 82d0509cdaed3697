//! permessage-deflate on the publication path: what one publication costs a worker with 1,000
//! subscribers that negotiated compression, when its frame is compressed once and shared (what
//! `Hub::deliver` does: no context takeover makes the bytes valid on every connection) and when
//! it is compressed once per subscriber (what a per-connection compressor must do), next to the
//! plain frame shared by all. Also a single compression and inflation, for the per-message
//! cost of replies and client messages.

use std::hint::black_box;
use std::sync::Arc;

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};

use gyre::model::{Payload, Publication};
use gyre::protocol::PushBody;
use gyre::push::{Prepared, PushKind};
use gyre::wire::deflate;
use gyre::wire::ws::{server_frame_parts, OpCode};

const SUBSCRIBERS: usize = 1000;

/// A publication's JSON frame with `n` bytes of chat-like data.
fn prepared(n: usize) -> Prepared {
    let mut text = String::new();
    while text.len() < n {
        text.push_str(&format!(
            "{{\"user\":\"user{}\",\"text\":\"hello, world\",\"seq\":{}}},",
            text.len() % 97,
            text.len()
        ));
    }
    let data = Bytes::from(format!("[{}]", text.trim_end_matches(',')));
    let body = PushBody::Pub(Publication {
        offset: 4217,
        data: Payload { bytes: data, binary: false },
        info: None,
        tags: None,
        key: None,
        removed: false,
    });
    Prepared::new(Arc::from("room-42"), PushKind::Publication, body)
}

fn fanout(c: &mut Criterion) {
    let mut g = c.benchmark_group("deflate_fanout");
    g.throughput(Throughput::Elements(1));
    for size in [100usize, 2000] {
        let p = prepared(size);
        let plain = p.json.clone().unwrap();
        let (op, payload) = server_frame_parts(&plain).unwrap();
        let payload = payload.to_vec();
        let label = format!("{} B payload, {SUBSCRIBERS} subscribers", payload.len());
        g.bench_with_input(BenchmarkId::new("plain frame shared", &label), &plain, |b, plain| {
            b.iter(|| {
                for _ in 0..SUBSCRIBERS {
                    black_box(plain.clone());
                }
            })
        });
        g.bench_with_input(BenchmarkId::new("compressed once, shared", &label), &payload, |b, payload| {
            b.iter(|| {
                let f = deflate::frame(op, black_box(payload), 1);
                for _ in 0..SUBSCRIBERS {
                    black_box(f.clone());
                }
            })
        });
        g.bench_with_input(BenchmarkId::new("compressed per subscriber", &label), &payload, |b, payload| {
            b.iter(|| {
                for _ in 0..SUBSCRIBERS {
                    black_box(deflate::frame(op, black_box(payload), 1));
                }
            })
        });
    }
    g.finish();
}

fn one_message(c: &mut Criterion) {
    let mut g = c.benchmark_group("deflate_message");
    g.throughput(Throughput::Elements(1));
    for size in [100usize, 2000] {
        let p = prepared(size);
        let payload = server_frame_parts(p.json.as_ref().unwrap()).unwrap().1.to_vec();
        for level in [1i8, 6] {
            let id = BenchmarkId::new(format!("compress level {level}"), format!("{} B", payload.len()));
            g.bench_with_input(id, &payload, |b, payload| {
                b.iter(|| deflate::frame(OpCode::Text, black_box(payload), level))
            });
        }
        let mut z = Vec::new();
        deflate::compress(1, &payload, &mut z);
        let id = BenchmarkId::new("inflate", format!("{} B", payload.len()));
        g.bench_with_input(id, &z, |b, z| b.iter(|| deflate::inflate(black_box(z), 1 << 20).unwrap()));
    }
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(std::time::Duration::from_millis(500))
        .measurement_time(std::time::Duration::from_secs(2));
    targets = fanout, one_message
}
criterion_main!(benches);
