//! The client write path as the server runs it: `Hub::deliver` queues one publication's frame
//! on every local subscriber and marks each connection dirty, then the worker's flush pass
//! (`Writes::flush`) writes every dirty connection with one non-blocking `send`/`sendmsg`.
//!
//! The subscribers are real sockets (loopback TCP connections, as the load tool's; the peer
//! ends are drained outside the timed part), so the figure is the cost per delivery queued
//! and flushed, kernel send included. `k publications per flush` queues k publications
//! before one pass: each connection then gets its k frames in one `send` (copied together,
//! as small frames are) — a busy loop turn.

use std::hint::black_box;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};

use gyre::api::Command;
use gyre::client::{Client, Framing, Handler};
use gyre::error::Disconnect;
use gyre::hub::Hub;
use gyre::model::{Payload, Publication};
use gyre::protocol::{Format, PushBody};
use gyre::push::{Prepared, PushKind};

/// A session that never needs to act (no overflow happens here; it fails the run if it does).
struct Quiet;

impl Handler for Quiet {
    fn disconnect(&self, d: Disconnect) {
        panic!("a subscriber was disconnected: {d:?}");
    }
    fn on_timer(self: Rc<Self>, _at: Instant) {}
    fn resubscribe(&self, _channel: &str) {}
    fn on_action(self: Rc<Self>, _cmd: &Command) -> Option<gyre::client::Pending> {
        None
    }
    fn is_connected(&self) -> bool {
        true
    }
}

/// `n` connected loopback TCP pairs: (server end, peer end), the server end with
/// `TCP_NODELAY` as the server sets it on client connections.
fn socketpairs(n: usize) -> Vec<[i32; 2]> {
    use std::os::fd::IntoRawFd;
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("listen on loopback");
    let addr = listener.local_addr().expect("listener address");
    (0..n)
        .map(|_| {
            let peer = std::net::TcpStream::connect(addr).expect("connect");
            let (server, _) = listener.accept().expect("accept");
            server.set_nodelay(true).expect("TCP_NODELAY");
            [server.into_raw_fd(), peer.into_raw_fd()]
        })
        .collect()
}

/// Reads everything a peer end has; the byte count.
fn drain(fd: i32) -> usize {
    let mut buf = [0u8; 65536];
    let mut total = 0;
    loop {
        // SAFETY: reads into `buf`, never blocks.
        let n = unsafe { libc::recv(fd, buf.as_mut_ptr().cast(), buf.len(), libc::MSG_DONTWAIT) };
        if n <= 0 {
            return total;
        }
        total += n as usize;
    }
}

fn push_body(seq: u64) -> PushBody {
    let data = format!(r#"{{"user":"alice","text":"hello, world","ts":1700000000123,"seq":{seq}}}"#);
    PushBody::Pub(Publication {
        offset: seq,
        data: Payload { bytes: Bytes::from(data), binary: false },
        info: None,
        tags: None,
        key: None,
        removed: false,
    })
}

fn flush(c: &mut Criterion) {
    let channel: Arc<str> = Arc::from("room-42");
    let mut g = c.benchmark_group("flush");
    g.measurement_time(Duration::from_secs(3));
    for subs in [100usize, 1_000] {
        let hub = Hub::default();
        let pairs = socketpairs(subs);
        for (i, fds) in pairs.iter().enumerate() {
            let mut client =
                Client::new(Arc::from(format!("client-{i}")), Format::Json, false, Framing::WebSocket, 1 << 20);
            client.write_directly(fds[0], hub.writes().clone());
            let client = Rc::new(client);
            let key = hub.add(client.clone(), Rc::new(Quiet));
            client.expect(&channel);
            assert!(hub.accept(key, client.gen, &channel, false, false, None, None, &[]));
            hub.set_live(&channel, key);
        }
        for k in [1u64, 16] {
            let pushes: Vec<Prepared> =
                (0..k).map(|s| Prepared::new(channel.clone(), PushKind::Publication, push_body(s))).collect();
            let per_round: usize = pushes.iter().map(|p| p.json.as_ref().map_or(0, |f| f.len())).sum();
            g.throughput(Throughput::Elements(subs as u64 * k));
            let name = format!("{k} publication(s) per flush to {subs} sockets (per delivery)");
            g.bench_function(name, |b| {
                b.iter_custom(|iters| {
                    let mut timed = Duration::ZERO;
                    for _ in 0..iters {
                        let start = Instant::now();
                        for p in &pushes {
                            hub.deliver(black_box(p));
                        }
                        hub.writes().flush();
                        timed += start.elapsed();
                        for fds in &pairs {
                            assert_eq!(drain(fds[1]), per_round, "every frame reached its socket");
                        }
                    }
                    timed
                })
            });
        }
        drop(hub);
        for fds in pairs {
            // SAFETY: both descriptors are ours and no client writes to them any more.
            unsafe {
                libc::close(fds[0]);
                libc::close(fds[1]);
            }
        }
    }
    g.finish();
}

criterion_group!(benches, flush);
criterion_main!(benches);
