//! Map channels on the memory engine (`engine::map`): the owner's side of a state sync — a
//! subscriber reading all 10,000 keys of a map in pages of 100 — and a key update (the change
//! joins the stream and the state).

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};

use gyre::config::Config;
use gyre::engine::memory::Memory;
use gyre::model::{MapPub, Payload, Publish};

const KEYS: usize = 10_000;

fn memory() -> Memory {
    let mut cfg = Config::default();
    cfg.channel.without_namespace.subscription_type = "map".into();
    cfg.channel.without_namespace.map.mode = "recoverable".into();
    cfg.channel.without_namespace.map.key_ttl = Duration::from_secs(300);
    Memory::new(Arc::new(cfg))
}

fn publish(m: &mut Memory, key: &str, data: &Bytes, now: Instant) {
    let p = Publish::new("board", Payload { bytes: data.clone(), binary: false });
    m.map_publish(MapPub::new(p, Arc::from(key), false), now).unwrap();
}

fn sync(c: &mut Criterion) {
    let data = Bytes::from_static(br#"{"user":"alice","color":"red","x":120,"y":48}"#);
    let now = Instant::now();
    let mut m = memory();
    for i in 0..KEYS {
        publish(&mut m, &format!("key-{i:05}"), &data, now);
    }
    let mut g = c.benchmark_group("map_state");
    g.throughput(Throughput::Elements(KEYS as u64));
    g.bench_function("read 10k keys in pages of 100", |b| {
        b.iter(|| {
            let mut cursor = String::new();
            let mut n = 0;
            loop {
                let page = m.map_read("board", &cursor, 100, "", now).unwrap();
                n += page.entries.len();
                if page.cursor.is_empty() {
                    break;
                }
                cursor = page.cursor;
            }
            black_box(n)
        })
    });
    g.throughput(Throughput::Elements(1));
    let mut i = 0usize;
    g.bench_function("update one of 10k keys", |b| {
        b.iter(|| {
            i = (i + 7919) % KEYS;
            publish(&mut m, &format!("key-{i:05}"), black_box(&data), now)
        })
    });
    g.finish();
}

criterion_group!(benches, sync);
criterion_main!(benches);
