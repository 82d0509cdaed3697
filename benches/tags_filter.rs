//! Tags filters: the cost of matching one publication's tags (a single `eq` leaf, and an
//! `and`/`or` tree with a numeric comparison), and `Hub::deliver` to 1,000 local subscribers
//! with no filter, with a filter every publication passes, and with one that rejects it.
//!
//! The delivery figure is the hub's loop alone: the subscribers' subscriptions are not live yet,
//! so each frame is held on the client (a reference count and a push onto a vector), and the
//! held frames are taken back outside the timed part.

use std::hint::black_box;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};

use gyre::api::Command;
use gyre::client::{Client, Framing, Handler, Pending};
use gyre::error::Disconnect;
use gyre::filter::{Filter, FilterNode};
use gyre::hub::Hub;
use gyre::model::{Payload, Publication, Tags};
use gyre::protocol::{Format, PushBody};
use gyre::push::{Prepared, PushKind};

const SUBSCRIBERS: usize = 1000;

fn leaf(key: &str, cmp: &str, val: &str) -> FilterNode {
    FilterNode { key: key.into(), cmp: cmp.into(), val: val.into(), ..Default::default() }
}

fn node(op: &str, nodes: Vec<FilterNode>) -> FilterNode {
    FilterNode { op: op.into(), nodes, ..Default::default() }
}

fn tags(t: &[(&str, &str)]) -> Tags {
    t.iter().map(|(k, v)| (Box::from(*k), Box::from(*v))).collect::<Vec<_>>().into()
}

fn eval(c: &mut Criterion) {
    let t = tags(&[("team", "eng"), ("region", "eu-west"), ("prio", "7.5"), ("kind", "alert")]);
    let eq = Filter::compile(&leaf("team", "eq", "eng")).unwrap();
    let tree = Filter::compile(&node(
        "and",
        vec![
            node("or", vec![leaf("team", "eq", "ops"), leaf("region", "sw", "eu-")]),
            leaf("prio", "gte", "5"),
            node("not", vec![leaf("kind", "eq", "debug")]),
        ],
    ))
    .unwrap();
    let mut g = c.benchmark_group("tags_filter_match");
    g.throughput(Throughput::Elements(1));
    g.bench_function("eq leaf", |b| b.iter(|| black_box(&eq).matches(black_box(&t))));
    g.bench_function("and/or/not tree with gte", |b| b.iter(|| black_box(&tree).matches(black_box(&t))));
    g.bench_function("compile the tree", |b| {
        let n = node(
            "and",
            vec![node("or", vec![leaf("team", "eq", "ops"), leaf("region", "sw", "eu-")]), leaf("prio", "gte", "5")],
        );
        b.iter(|| Filter::compile(black_box(&n)).unwrap())
    });
    g.finish();
}

struct Idle;

impl Handler for Idle {
    fn disconnect(&self, _: Disconnect) {}
    fn on_timer(self: Rc<Self>, _: Instant) {}
    fn resubscribe(&self, _: &str) {}
    fn on_action(self: Rc<Self>, _: &Command) -> Option<Pending> {
        None
    }
    fn is_connected(&self) -> bool {
        true
    }
}

/// A hub with [`SUBSCRIBERS`] JSON WebSocket subscribers of `channel`, each with `filter`.
fn hub_with(channel: &Arc<str>, filter: Option<Arc<Filter>>) -> (Hub, Vec<Rc<Client>>) {
    let hub = Hub::default();
    let mut clients = Vec::new();
    for i in 0..SUBSCRIBERS {
        let c = Rc::new(Client::new(format!("c{i}").into(), Format::Json, false, Framing::WebSocket, usize::MAX));
        let key = hub.add(c.clone(), Rc::new(Idle));
        c.expect(channel);
        assert!(hub.accept(key, c.gen, channel, false, false, filter.clone(), None, &[]));
        clients.push(c);
    }
    (hub, clients)
}

fn fanout(c: &mut Criterion) {
    let channel: Arc<str> = Arc::from("room-42");
    let data = Bytes::from_static(br#"{"user":"alice","text":"hello, world","ts":1700000000123,"seq":17}"#);
    let publication = Publication {
        offset: 4217,
        data: Payload { bytes: data, binary: false },
        info: None,
        tags: Some(tags(&[("team", "eng"), ("region", "eu-west")])),
        key: None,
        removed: false,
    };
    let p = Prepared::new(channel.clone(), PushKind::Publication, PushBody::Pub(publication));
    let passing = Arc::new(Filter::compile(&leaf("team", "eq", "eng")).unwrap());
    let rejecting = Arc::new(Filter::compile(&leaf("team", "eq", "ops")).unwrap());
    let mut g = c.benchmark_group("tags_filter_fanout");
    g.throughput(Throughput::Elements(SUBSCRIBERS as u64));
    for (name, filter) in [("no filter", None), ("filter passes", Some(passing)), ("filter rejects", Some(rejecting))] {
        let (hub, clients) = hub_with(&channel, filter);
        g.bench_function(format!("Hub::deliver to {SUBSCRIBERS}, {name}"), |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let t = Instant::now();
                    hub.deliver(black_box(&p));
                    total += t.elapsed();
                    for c in &clients {
                        black_box(c.take_held(&channel));
                        c.expect(&channel);
                    }
                }
                total
            })
        });
    }
    g.finish();
}

criterion_group!(benches, eval, fanout);
criterion_main!(benches);
