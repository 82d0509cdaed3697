//! The backend WebSocket API `/ws/v1`: `ping`/`pong`, `queue.pop` / `queue.unpop`, `conn.call`,
//! `mesh.send` and `mesh.publish`, as `{"m","p","i"}` commands answered with
//! `{"E":null,"r":{...},"i":id}` or `{"E":{"c":code,"m":message},"i":id}`.

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::Arc;

use ahash::AHashSet;
use bytes::{Bytes, BytesMut};
use serde_json::{json, Value};

use super::mesh::{self, MeshError};
use super::{Consumer, QueueMsg};
use crate::client::outbox::Outbox;
use crate::runtime::worker::Worker;
use crate::shard::owner_of;
use crate::wire::ws::{self as codec, OpCode};

/// What an authenticated backend may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Roles {
    /// queue.pop / queue.unpop.
    pub read: bool,
    /// mesh.send, mesh.publish, conn.call.
    pub write: bool,
}

impl Roles {
    pub const ALL: Roles = Roles { read: true, write: true };
}

/// Queue of a backend connection: deep, since a topic's backlog is handed over at once.
const BACKEND_QUEUE_BYTES: usize = 64 << 20;

/// One `/ws/v1` connection.
pub struct Backend {
    pub gen: u32,
    key: std::cell::Cell<u32>,
    pub out: Outbox,
    popped: RefCell<AHashSet<Arc<str>>>,
    roles: Roles,
}

impl Backend {
    /// Takes a queued message for a topic it pops; false when it cannot (gone, unpopped, full).
    pub fn take(&self, topic: &Arc<str>, frame: Bytes) -> bool {
        if self.out.is_closed() || !self.popped.borrow().contains(topic) {
            return false;
        }
        if self.out.push(frame).is_err() {
            self.out.close(codec::close_frame(1008, "slow consumer"), true);
            return false;
        }
        true
    }

    fn consumer(&self, w: &Worker) -> Consumer {
        Consumer { worker: w.id as u16, key: self.key.get(), gen: self.gen }
    }

    fn reply(&self, id: &Value, r: Result<Value, MeshError>) {
        let msg = match r {
            Ok(r) => json!({"E": null, "r": r, "i": id}),
            Err(e) => json!({"E": {"c": e.code, "m": e.message}, "i": id}),
        };
        let _ = self.out.push(codec::frame(OpCode::Text, msg.to_string().as_bytes()));
    }

    fn unpop_all(&self, w: &Worker) {
        let topics: Vec<Arc<str>> = self.popped.borrow_mut().drain().collect();
        let consumer = self.consumer(w);
        for topic in topics {
            let owner = owner_of(&topic, w.workers);
            super::send_queue(w, owner, QueueMsg::Unpop { topic, consumer });
        }
    }
}

static NEXT_GEN: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(1);

/// Runs a backend connection on an upgraded socket until it closes.
pub async fn run<R, W>(w: Rc<Worker>, roles: Roles, mut rd: R, wr: W, buf: BytesMut, fd: i32)
where
    R: monoio::io::AsyncReadRent,
    W: monoio::io::AsyncWriteRent + 'static,
{
    let b = Rc::new(Backend {
        gen: NEXT_GEN.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
        key: Default::default(),
        out: Outbox::new(BACKEND_QUEUE_BYTES),
        popped: RefCell::new(AHashSet::new()),
        roles,
    });
    let key = super::local(&w).backends.borrow_mut().insert(b.clone()) as u32;
    b.key.set(key);
    let writer = {
        let b = b.clone();
        let timeout = w.cfg.websocket.write_timeout;
        monoio::spawn(async move {
            b.out.run_writer(wr, timeout).await;
            unsafe { libc::shutdown(fd, libc::SHUT_RDWR) };
        })
    };
    let limit = w.cfg.websocket.message_size_limit.max(1 << 20);
    let conn = BackendConn { w: w.clone(), b: b.clone() };
    crate::io::ws::read_loop(&conn, &mut rd, buf, limit, BACKEND_READ_IDLE).await;
    b.unpop_all(&w);
    super::local(&w).backends.borrow_mut().try_remove(key as usize);
    let _ = writer.await;
}

/// Read buffer of an idle backend connection.
const BACKEND_READ_IDLE: usize = 4096;

struct BackendConn {
    w: Rc<Worker>,
    b: Rc<Backend>,
}

impl crate::io::ws::Conn for BackendConn {
    fn send(&self, frame: Bytes) {
        let _ = self.b.out.push(frame);
    }
    fn is_closed(&self) -> bool {
        self.b.out.is_closed()
    }
    async fn on_data(&self, text: bool, data: Bytes) -> bool {
        if !text {
            self.b.out.close(codec::close_frame(1003, "text frames only"), false);
            return false;
        }
        handle(&self.w, &self.b, data)
    }
    fn on_close(&self, code: u16) {
        self.b.out.close(codec::close_frame(code, ""), false);
    }
    fn on_gone(&self) {
        self.b.out.kill();
    }
}

/// Handles one text message; false when the connection should end.
fn handle(w: &Rc<Worker>, b: &Rc<Backend>, data: Bytes) -> bool {
    if data.trim_ascii() == b"ping" {
        let _ = b.out.push(codec::frame(OpCode::Text, b"pong"));
        return true;
    }
    let cmd: Value = match serde_json::from_slice(&data) {
        Ok(Value::Object(o)) => Value::Object(o),
        _ => {
            b.reply(&Value::Null, Err(MeshError::bad("invalid command: not a JSON object")));
            return true;
        }
    };
    // Some clients send "id" instead of "i"; the reply echoes it as "i".
    let id = cmd.get("i").or_else(|| cmd.get("id")).cloned().unwrap_or(Value::Null);
    let method = cmd.get("m").and_then(Value::as_str).unwrap_or("").to_string();
    let params = cmd.get("p").cloned().unwrap_or(Value::Null);
    let needs_write = !matches!(method.as_str(), "queue.pop" | "queue.unpop");
    let allowed = if needs_write { b.roles.write } else { b.roles.read };
    if !allowed {
        b.reply(&id, Err(MeshError::new(403, "permission denied")));
        return true;
    }
    match method.as_str() {
        "queue.pop" => {
            let topics: Option<Vec<String>> = match &params {
                Value::Array(a) => a.iter().map(|t| t.as_str().map(str::to_string)).collect(),
                Value::Object(o) => match o.get("t") {
                    Some(Value::Array(a)) => a.iter().map(|t| t.as_str().map(str::to_string)).collect(),
                    Some(Value::String(s)) => Some(vec![s.clone()]),
                    _ => None,
                },
                _ => None,
            };
            let topics = match topics {
                Some(t) if !t.is_empty() && t.iter().all(|t| !t.is_empty()) => t,
                _ => {
                    b.reply(&id, Err(MeshError::bad("invalid argument: t must list topics")));
                    return true;
                }
            };
            if topics.iter().any(|t| b.popped.borrow().contains(t.as_str())) {
                b.reply(&id, Err(MeshError::new(202, "repeated consumption: this connection already pops the topic")));
                return true;
            }
            let consumer = b.consumer(w);
            let topics: Vec<Arc<str>> = topics.into_iter().map(Arc::from).collect();
            b.popped.borrow_mut().extend(topics.iter().cloned());
            let calls: Vec<_> = topics
                .iter()
                .map(|t| {
                    let topic = t.clone();
                    w.ask(owner_of(t, w.workers), move |w, a| a.send(w, super::pop(w, topic, consumer)))
                })
                .collect();
            let b = b.clone();
            // The owners answer (a topic over the node's limit is refused); the reply waits.
            monoio::spawn(async move {
                let mut failed = None;
                for (t, c) in topics.iter().zip(calls) {
                    if let Err(e) = c.await {
                        b.popped.borrow_mut().remove(t);
                        failed = Some(MeshError::new(e.code, e.message));
                    }
                }
                b.reply(&id, failed.map_or(Ok(json!({"s": true})), Err));
            });
        }
        "queue.unpop" => {
            // Answered once every owner let go of its topic (a pop right after it, from any
            // connection, sees the topic count without them).
            let topics: Vec<Arc<str>> = b.popped.borrow_mut().drain().collect();
            let consumer = b.consumer(w);
            let calls: Vec<_> = topics
                .into_iter()
                .map(|topic| {
                    w.ask(owner_of(&topic, w.workers), move |w, a| {
                        super::on_queue(w, QueueMsg::Unpop { topic, consumer });
                        a.send(w, ());
                    })
                })
                .collect();
            let b = b.clone();
            monoio::spawn(async move {
                for c in calls {
                    c.await;
                }
                b.reply(&id, Ok(json!({"s": true})));
            });
        }
        "conn.call" | "mesh.send" | "mesh.publish" => {
            let Some(p) = params.as_object().cloned() else {
                b.reply(&id, Err(MeshError::bad("invalid argument: p must be an object")));
                return true;
            };
            if w.hold_sessions.get() {
                // The node is stopping: as for client sessions, no new command starts once
                // HTTP requests are answered (not run, not answered; the connection ends with
                // the process), so everything acknowledged is delivered first.
                return true;
            }
            let (w, b) = (w.clone(), b.clone());
            // Counted until answered: the shutdown waits for it before disconnecting clients.
            let running = &w.session_commands;
            running.set(running.get() + 1);
            // Runs on its own: a call to a client on another node must not hold up the next
            // command (replies carry their id).
            monoio::spawn(async move {
                let r = match method.as_str() {
                    "mesh.publish" => mesh::publish(&w, &p).await.map(|(s, f)| json!({"s": s, "f": f})),
                    "mesh.send" => match mesh::parse_send(&p) {
                        Ok(op) => mesh::run(&w, op).await.map(|_| json!({"s": true})),
                        Err(e) => Err(e),
                    },
                    _ => match mesh::parse_call(&p) {
                        Ok(op) => mesh::run(&w, op).await.map(|_| json!({"s": true})),
                        Err(e) => Err(e),
                    },
                };
                b.reply(&id, r);
                w.session_commands.set(w.session_commands.get() - 1);
            });
        }
        _ => b.reply(&id, Err(MeshError::bad(format!("invalid command: unknown method {method:?}")))),
    }
    true
}
