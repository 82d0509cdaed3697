//! WebSocket framing and protobuf client-protocol codec throughput.

use std::hint::black_box;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use prost::Message as _;

use gyre::model::{ClientInfo, Payload, Publication};
use gyre::protocol::{pb, PushBody};
use gyre::wire::ws::{self as codec, Decoder, OpCode};

const MASK: [u8; 4] = [0x12, 0x34, 0x56, 0x78];

fn ws_decode(c: &mut Criterion) {
    let mut g = c.benchmark_group("ws_decode");
    for size in [64usize, 16 * 1024] {
        let payload = vec![b'a'; size];
        let mut wire = Vec::new();
        for _ in 0..64 {
            encode_text(&payload, &mut wire);
        }
        g.throughput(Throughput::Bytes(wire.len() as u64));
        g.bench_function(format!("64 text frames of {size} B"), |b| {
            b.iter(|| {
                let mut d = Decoder::new(1 << 20, 1 << 20);
                let mut buf = BytesMut::from(&wire[..]);
                let mut n = 0;
                while let Some(m) = d.decode(&mut buf).unwrap() {
                    black_box(m);
                    n += 1;
                }
                assert_eq!(n, 64);
            })
        });
    }
    g.finish();
}

fn encode_text(payload: &[u8], out: &mut Vec<u8>) {
    codec::encode_client_frame(OpCode::Text, payload, MASK, out);
}

fn pb_codec(c: &mut Criterion) {
    let publication = Publication {
        offset: 12345,
        data: Payload { bytes: Bytes::from(vec![7u8; 256]), binary: true },
        info: Some(Arc::new(ClientInfo {
            user: "user-42".into(),
            client: "6c0e3f4e-6a5a-4d8e-9a62-3f1d6e0a1b2c".into(),
            conn_info: Some(Bytes::from_static(b"{\"name\":\"x\"}")),
            chan_info: None,
        })),
        tags: Some(Arc::from(vec![("kind".into(), "update".into())])),
        key: None,
        removed: false,
    };
    let push = PushBody::Pub(publication);
    let mut out = Vec::with_capacity(1024);
    c.bench_function("pb encode_push pub 256 B", |b| {
        b.iter(|| {
            out.clear();
            pb::encode_push(black_box("news:sports"), black_box(&push), &mut out);
            let frame = codec::frame(OpCode::Binary, &out);
            black_box(frame);
        })
    });

    let mut frame = Vec::new();
    for id in 1..=16 {
        let cmd = pb::proto::Command {
            id,
            publish: Some(pb::proto::PublishRequest {
                channel: "chat:room".into(),
                data: Bytes::from_static(b"{\"text\":\"hello\"}"),
                ..Default::default()
            }),
            ..Default::default()
        };
        cmd.encode_length_delimited(&mut frame).unwrap();
    }
    c.bench_function("pb decode 16 publish commands", |b| b.iter(|| black_box(pb::decode(black_box(&frame)).unwrap())));
}

criterion_group!(benches, ws_decode, pb_codec);
criterion_main!(benches);
