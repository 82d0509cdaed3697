//! Fossil delta compression of a ~4 KB JSON document that changes one field per publication:
//! the owner's patch (once per publication), the frames a delta subscriber's worker builds
//! (once per publication and worker), beside the plain JSON frame every other subscriber gets.
//! The sizes are printed once: full data, patch, and each frame.

use std::hint::black_box;

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};

use gyre::client::Framing;
use gyre::delta::{patch, Bases};
use gyre::model::{Payload, Publication};
use gyre::protocol::{Format, PushBody};
use gyre::push::{Prepared, PushKind};

/// The document with `n` in one of its 80 fields.
fn doc(n: u64) -> Bytes {
    let mut s = String::from("{");
    for i in 0..80 {
        if i == 7 {
            s.push_str(&format!("\"field{i}\":{n},"));
        } else {
            s.push_str(&format!("\"field{i}\":\"value of field {i}, unchanged text\","));
        }
    }
    s.push_str("\"end\":true}");
    Bytes::from(s)
}

fn prepared(data: Bytes, delta: Option<gyre::delta::DeltaPub>) -> Prepared {
    let p = Publication {
        offset: 2,
        data: Payload { bytes: data, binary: false },
        info: None,
        tags: None,
        key: None,
        removed: false,
    };
    Prepared::new("doc".into(), PushKind::Publication, PushBody::Pub(p)).with_delta(delta)
}

fn delta(c: &mut Criterion) {
    let (a, b) = (doc(1), doc(2));
    let mut bases = Bases::default();
    let ch: std::sync::Arc<str> = "doc".into();
    bases.step(&ch, &a, true);
    let step = bases.step(&ch, &b, true);
    let p = prepared(b.clone(), step.clone());
    let full = p.json.clone().unwrap();
    let patch_frame = p.delta_frame(Framing::WebSocket, Format::Json, true).unwrap();
    let string_frame = p.delta_frame(Framing::WebSocket, Format::Json, false).unwrap();
    let pb_patch = p.delta_frame(Framing::WebSocket, Format::Protobuf, true).unwrap();
    eprintln!(
        "data {} B, patch {} B; JSON frames: plain {} B, delta full {} B, delta patch {} B; protobuf patch frame {} B",
        b.len(),
        step.as_ref().unwrap().patch.as_ref().unwrap().len(),
        full.len(),
        string_frame.len(),
        patch_frame.len(),
        pb_patch.len()
    );

    let mut g = c.benchmark_group("delta");
    g.throughput(Throughput::Elements(1));
    g.bench_function("fossil patch, 4 KB document, one field changed", |bn| {
        bn.iter(|| patch(black_box(&a), black_box(&b)))
    });
    g.bench_function("owner: plain JSON frame (every publication)", |bn| {
        bn.iter(|| prepared(black_box(b.clone()), None).json)
    });
    g.bench_function("worker: JSON patch frame (once per publication)", |bn| {
        bn.iter(|| black_box(&p).delta_frame(Framing::WebSocket, Format::Json, true))
    });
    g.bench_function("worker: JSON full-string frame (subscribers without a base)", |bn| {
        bn.iter(|| black_box(&p).delta_frame(Framing::WebSocket, Format::Json, false))
    });
    g.finish();
}

criterion_group!(benches, delta);
criterion_main!(benches);
