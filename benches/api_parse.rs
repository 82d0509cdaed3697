//! Server API decoding: one legacy line, a pipelined legacy body through `LineSplitter` (and
//! the reading worker's share of spreading it over 8 workers), new-style `decode_params` (one
//! publish, and a `batch` of 1,000 publishes with and without the hand-written reader), the
//! parser choice (serde_json `RawValue` vs simd-json's DOM plus re-encoding `data`), and
//! decode + owner-side execution of a publish on one shard.

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use simd_json::prelude::*;

use gyre::api::parse::{decode_line, decode_params, LineSplitter, Piece};
use gyre::api::{Command, Method};
use gyre::config::Config;
use gyre::engine::{memory::Memory, Engine};
use gyre::exec::check_channel;
use gyre::http::out::Group;
use gyre::shard::{owner_of, Shard, ShardOp, SubOp};

/// A typical legacy publish line (150 bytes): `data` is an object with a few fields.
const LINE: &[u8] = br#"{"id":1,"method":"publish","params":{"channel":"room-42","data":{"user":"alice","text":"hello, world","ts":1700000000123,"seq":17,"tags":["a","b"]}}}"#;

/// The `params` object of [`LINE`], as a new-style `POST /api/publish` body.
const PARAMS: &[u8] = br#"{"channel":"room-42","data":{"user":"alice","text":"hello, world","ts":1700000000123,"seq":17,"tags":["a","b"]}}"#;

/// A legacy line for command `i` on one of `channels` channels.
fn line(i: usize, channels: usize) -> Vec<u8> {
    format!(
        r#"{{"id":{},"method":"publish","params":{{"channel":"room-{}","data":{{"user":"alice","text":"hello, world","ts":{},"seq":{}}}}}}}"#,
        i + 1,
        i % channels,
        1_700_000_000_000u64 + i as u64,
        i
    )
    .into_bytes()
}

fn decode_one(c: &mut Criterion) {
    let mut g = c.benchmark_group("api_decode");
    g.throughput(Throughput::Elements(1));
    g.bench_function("decode_line publish (150 B)", |b| {
        b.iter(|| {
            let l = decode_line(black_box(LINE));
            assert!(l.command.is_ok());
            l
        })
    });
    g.bench_function("fast::publish read only (150 B)", |b| {
        b.iter(|| gyre::api::fast::publish(black_box(LINE)).unwrap())
    });
    g.bench_function("fast::route channel scan (150 B)", |b| {
        b.iter(|| gyre::api::fast::route(black_box(LINE)).unwrap())
    });
    g.bench_function("decode_line_general publish (150 B, serde_json)", |b| {
        b.iter(|| {
            let l = gyre::api::parse::decode_line_general(black_box(LINE));
            assert!(l.command.is_ok());
            l
        })
    });
    g.bench_function("decode_params publish (new-style)", |b| {
        b.iter(|| decode_params(Method::Publish, black_box(PARAMS)).unwrap())
    });
    g.finish();
}

/// A `batch` body of `n` publishes in the shape of [`PARAMS`], over 1,000 channels.
fn batch_body(n: usize) -> Vec<u8> {
    let commands: Vec<String> = (0..n)
        .map(|i| {
            format!(
                r#"{{"publish":{{"channel":"room-{}","data":{{"user":"alice","text":"hello, world","ts":{},"seq":{}}}}}}}"#,
                i % 1000,
                1_700_000_000_000u64 + i as u64,
                i
            )
        })
        .collect();
    format!(r#"{{"commands":[{}]}}"#, commands.join(",")).into_bytes()
}

fn decode_batch(c: &mut Criterion) {
    let body = batch_body(1000);
    let mut g = c.benchmark_group("api_decode_batch");
    g.throughput(Throughput::Elements(1000));
    g.bench_function("decode_params batch of 1,000 publishes", |b| {
        b.iter(|| decode_params(Method::Batch, black_box(&body)).unwrap())
    });
    g.bench_function("decode_batch_general batch of 1,000 publishes (serde_json)", |b| {
        b.iter(|| gyre::api::parse::decode_batch_general(black_box(&body)).unwrap())
    });
    g.bench_function("fast::batch read only, 1,000 publishes", |b| {
        b.iter(|| gyre::api::fast::batch(black_box(&body)).unwrap())
    });
    g.finish();
}

fn pipelined(c: &mut Criterion) {
    const LINES: usize = 10_000;
    let mut body = Vec::new();
    for i in 0..LINES {
        body.extend_from_slice(&line(i, 1000));
        body.push(b'\n');
    }
    let mut g = c.benchmark_group("api_pipeline");
    g.throughput(Throughput::Elements(LINES as u64));
    g.bench_function("10k lines, 64 KiB chunks, split + decode_line", |b| {
        b.iter(|| {
            let mut s = LineSplitter::new(1 << 20);
            let mut ok = 0usize;
            let mut f = |p: Piece<'_>| {
                if let Piece::Line(l) = p {
                    ok += decode_line(l).command.is_ok() as usize;
                }
            };
            for chunk in black_box(&body).chunks(64 * 1024) {
                s.feed(chunk, &mut f);
            }
            s.finish(&mut f);
            assert_eq!(ok, LINES);
        })
    });
    // What the reading worker does per line when 8 workers own the channels (1,000 of them):
    // split, find the channel and its owner, copy the line into that owner's batch, and put
    // the owners' replies back together in the lines' order (one group per 64 KiB chunk).
    // The 1/8 of the lines it owns are not run here (see `parse_and_dispatch`).
    const WORKERS: usize = 8;
    let reply = b"\n{\"id\":1,\"result\":{}}";
    g.bench_function("10k lines, 64 KiB chunks, spread over 8 workers: reader's share", |b| {
        let mut batches: Vec<Vec<u8>> = (0..WORKERS).map(|_| Vec::with_capacity(16 * 1024)).collect();
        let mut counts = [0u32; WORKERS];
        let mut order: Vec<(u16, u32)> = Vec::new();
        b.iter(|| {
            let mut s = LineSplitter::new(1 << 20);
            let mut merged = 0usize;
            for chunk in black_box(&body).chunks(64 * 1024) {
                s.feed(chunk, &mut |p: Piece<'_>| {
                    let Piece::Line(l) = p else { return };
                    let owner = owner_of(gyre::api::fast::route(l).unwrap(), WORKERS);
                    batches[owner].extend_from_slice(l);
                    counts[owner] += 1;
                    match order.last_mut() {
                        Some((o, n)) if *o as usize == owner => *n += 1,
                        _ => order.push((owner as u16, 1)),
                    }
                });
                let mut group = Group::new(std::mem::take(&mut order), WORKERS, 0);
                for (w, n) in counts.iter_mut().enumerate() {
                    let replies = reply.repeat(*n as usize);
                    let ends = (1..=*n).map(|k| k * reply.len() as u32).collect();
                    group.add(w, replies, ends);
                    *n = 0;
                    batches[w].clear();
                }
                merged += group.merge().len();
            }
            assert_eq!(merged, LINES * reply.len());
        })
    });
    g.bench_function("10k lines, 64 KiB chunks, split only", |b| {
        b.iter(|| {
            let mut s = LineSplitter::new(1 << 20);
            let mut n = 0usize;
            let mut f = |p: Piece<'_>| n += matches!(p, Piece::Line(_)) as usize;
            for chunk in black_box(&body).chunks(64 * 1024) {
                s.feed(chunk, &mut f);
            }
            s.finish(&mut f);
            assert_eq!(n, LINES);
        })
    });
    g.finish();
}

/// What the simd-json path would have to do to produce the same channel and raw `data` bytes:
/// parse the line in place into a borrowed DOM, then re-encode `params.data` (the DOM keeps no
/// source span). The re-encoded bytes are not the sender's bytes (whitespace, number spelling),
/// which Centrifugo compatibility needs; this bench puts a price on the rest.
fn simd_json_publish(buf: &mut [u8], buffers: &mut simd_json::Buffers, out: &mut Vec<u8>) -> (u64, Box<str>) {
    let v = simd_json::to_borrowed_value_with_buffers(buf, buffers).unwrap();
    let id = v.get("id").and_then(|i| i.as_u64()).unwrap_or(0);
    let params = v.get("params").unwrap();
    let channel: Box<str> = params.get("channel").and_then(|c| c.as_str()).unwrap().into();
    out.clear();
    params.get("data").unwrap().write(out).unwrap();
    (id, channel)
}

fn parser_choice(c: &mut Criterion) {
    let mut g = c.benchmark_group("parser_choice");
    g.throughput(Throughput::Elements(1));
    g.bench_function("serde_json RawValue: decode_line", |b| b.iter(|| decode_line(black_box(LINE))));
    g.bench_function("simd-json borrowed DOM + re-encode data", |b| {
        let mut buffers = simd_json::Buffers::new(LINE.len());
        let mut out = Vec::with_capacity(128);
        // The copy is outside the timed region: a server could parse its read buffer in place.
        b.iter_batched_ref(
            || LINE.to_vec(),
            |buf| {
                let r = simd_json_publish(buf, &mut buffers, &mut out);
                // Same ownership as decode_line's result: `data` in its own `Bytes`.
                (r, bytes::Bytes::copy_from_slice(&out))
            },
            BatchSize::SmallInput,
        )
    });
    g.bench_function("simd-json borrowed DOM only", |b| {
        let mut buffers = simd_json::Buffers::new(LINE.len());
        b.iter_batched_ref(
            || LINE.to_vec(),
            |buf| {
                simd_json::to_borrowed_value_with_buffers(buf, &mut buffers)
                    .map(|v| v.get("id").and_then(|i| i.as_u64()))
                    .unwrap()
            },
            BatchSize::SmallInput,
        )
    });
    g.finish();
}

/// A one-worker config: channels without namespace, history as given (0 = off).
fn config(history_size: usize) -> Arc<Config> {
    let mut cfg = Config::default();
    cfg.channel.without_namespace.history_size = history_size;
    cfg.channel.without_namespace.history_ttl =
        if history_size > 0 { Duration::from_secs(300) } else { Duration::ZERO };
    Arc::new(cfg)
}

/// The legacy path per command on one core, minus the socket: `decode_line`, channel check,
/// `Shard::apply(Publish)` on the owner (history append; with subscribers also the JSON push
/// frame, encoded once), and dropping the fan-out list.
fn parse_and_dispatch(c: &mut Criterion) {
    const CHANNELS: usize = 1000;
    let lines: Vec<Vec<u8>> = (0..CHANNELS * 4).map(|i| line(i, CHANNELS)).collect();
    let mut g = c.benchmark_group("parse_and_dispatch");
    g.throughput(Throughput::Elements(1));
    for (name, history, subscribed) in [
        ("publish, no history, no subscribers", 0, false),
        ("publish, history 100, no subscribers", 100, false),
        ("publish, history 100, subscribers (JSON frame)", 100, true),
    ] {
        let cfg = config(history);
        let mut shard = Shard::new(Engine::Memory(Memory::new(cfg.clone())));
        let mut fanout = Vec::new();
        if subscribed {
            for i in 0..CHANNELS {
                let op = SubOp {
                    channel: Arc::from(format!("room-{i}")),
                    worker: 0,
                    presence: None,
                    join: None,
                    recover: None,
                    position: false,
                    recover_limit: 0,
                    cache: false,
                    reject_unrecovered: false,
                };
                shard.subscribe(op, Instant::now(), &mut fanout).unwrap();
            }
        }
        let mut next = 0usize;
        g.bench_function(name, |b| {
            b.iter(|| {
                let l = decode_line(black_box(&lines[next]));
                next = (next + 1) % lines.len();
                let Ok(Command::Publish(p)) = l.command else { panic!("not a publish") };
                check_channel(&cfg, &p.channel).unwrap();
                let r = shard.apply(ShardOp::Publish(p), Instant::now(), &mut fanout).unwrap();
                assert_eq!(fanout.len(), subscribed as usize);
                fanout.clear();
                r
            })
        });
    }
    // What the legacy stream does on the owner for a publish nobody listens to and nothing
    // keeps: the hand-written reader, the channel check, and an answer with nothing built.
    let cfg = config(0);
    let shard = Shard::new(Engine::Memory(Memory::new(cfg.clone())));
    let mut next = 0usize;
    g.bench_function("publish, no history, no subscribers: fast::publish + publish_void", |b| {
        b.iter(|| {
            let f = gyre::api::fast::publish(black_box(&lines[next])).unwrap();
            next = (next + 1) % lines.len();
            let opts = check_channel(&cfg, f.channel).unwrap();
            shard.publish_void(f.channel, opts.history_enabled() && !f.skip_history).unwrap()
        })
    });
    g.finish();
}

criterion_group!(benches, decode_one, decode_batch, pipelined, parser_choice, parse_and_dispatch);
criterion_main!(benches);
