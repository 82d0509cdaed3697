//! Bidirectional emulation: the commands an HTTP-streaming or SSE client sends after its
//! connect arrive as `POST /emulation` requests (`{"session","node","data"}`), on any
//! connection of any worker, of any node. Each is routed to the session it names — the
//! worker from the session id, the node from `node` (another node through a survey with the
//! Redis engine) — and queued to the session, which runs its commands one at a time in
//! arrival order; the replies travel on the session's stream.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::rc::Rc;
use std::sync::Arc;

use ahash::AHashMap;
use base64::Engine as _;
use bytes::Bytes;
use serde_json::{json, Value};

use crate::notify::LocalNotify;
use crate::protocol::Format;
use crate::runtime::worker::Worker;
use crate::session::{session_worker, Session};

/// Commands queued for one emulated session.
#[derive(Default)]
pub struct Inbox {
    queue: RefCell<VecDeque<Bytes>>,
    wake: LocalNotify,
}

/// This worker's emulated sessions by session id.
#[derive(Default)]
struct Sessions(RefCell<AHashMap<Arc<str>, Rc<Inbox>>>);

fn sessions(w: &Worker) -> Rc<Sessions> {
    w.local(|_| Sessions::default())
}

/// Makes session `s` reachable by `/emulation` requests; returns its command queue.
pub fn register(w: &Worker, s: &Session) -> Rc<Inbox> {
    let inbox = Rc::new(Inbox::default());
    if let Some(sid) = &s.sid {
        sessions(w).0.borrow_mut().insert(sid.clone(), inbox.clone());
    }
    inbox
}

pub fn unregister(w: &Worker, sid: &str) {
    sessions(w).0.borrow_mut().remove(sid);
}

/// Runs the queued commands of `s` in order until the session closes.
pub async fn run_commands(s: &Rc<Session>, inbox: &Inbox) {
    let json = s.client.format == Format::Json;
    loop {
        let next = inbox.queue.borrow_mut().pop_front();
        match next {
            Some(data) => {
                if !Box::pin(s.on_message(json, data)).await {
                    return;
                }
            }
            None => inbox.wake.wait().await,
        }
    }
}

/// Queues `data` to session `sid` of this worker; false when there is no such session.
fn deliver_here(w: &Worker, sid: &str, data: Bytes) -> bool {
    let Some(inbox) = sessions(w).0.borrow().get(sid).cloned() else { return false };
    inbox.queue.borrow_mut().push_back(data);
    inbox.wake.notify();
    true
}

/// Queues `data` to session `sid` of this node, on whichever worker holds it; false when
/// no such session is connected.
pub async fn deliver(w: &Rc<Worker>, sid: &str, data: Bytes) -> bool {
    let Some(worker) = session_worker(sid).filter(|&i| i < w.workers) else { return false };
    if worker == w.id {
        return deliver_here(w, sid, data);
    }
    let sid: Box<str> = sid.into();
    w.ask(worker, move |w, a| {
        let found = deliver_here(w, &sid, data);
        a.send(w, found)
    })
    .await
}

/// What became of an emulation request.
#[derive(Debug, PartialEq, Eq)]
pub enum Routed {
    /// Handed to the node that holds the session (whether the session still existed or not:
    /// the client learns it from its stream, as with Centrifugo).
    Done,
    /// `node` names no live node.
    UnknownNode,
    /// The node holding the session did not answer in time.
    Failed,
}

/// Routes an emulation request to its session, on this node or another.
pub async fn route(w: &Rc<Worker>, node: &str, sid: &str, data: Option<Bytes>) -> Routed {
    if node == w.node.uid {
        if let Some(data) = data {
            deliver(w, sid, data).await;
        }
        return Routed::Done;
    }
    if node.is_empty() || !crate::cluster::nodes(w).await.iter().any(|n| n.uid == node) {
        return Routed::UnknownNode;
    }
    let question = json!({
        "kind": "emulation",
        "node": node,
        "session": sid,
        "data": data.map(|d| base64::engine::general_purpose::STANDARD.encode(&d)),
    });
    let answers = crate::cluster::survey(w, question, |parts| parts.iter().any(|p| p.get("node").is_some())).await;
    if answers.iter().any(|p| p.get("node").and_then(Value::as_str) == Some(node)) {
        Routed::Done
    } else {
        Routed::Failed
    }
}

/// Another node's emulation request: the node it names answers once the data is queued.
pub fn answer_survey(w: Rc<Worker>, question: Value) -> std::pin::Pin<Box<dyn std::future::Future<Output = Value>>> {
    Box::pin(async move {
        if question.get("node").and_then(Value::as_str) != Some(w.node.uid.as_str()) {
            return Value::Null;
        }
        let sid = question.get("session").and_then(Value::as_str).unwrap_or("");
        let data = question
            .get("data")
            .and_then(Value::as_str)
            .and_then(|d| base64::engine::general_purpose::STANDARD.decode(d).ok());
        let found = match data {
            Some(data) => deliver(&w, sid, Bytes::from(data)).await,
            None => false,
        };
        json!({"node": w.node.uid, "found": found})
    })
}

/// An emulation request's body: JSON `{"session","node","data"}` (data: the commands as a
/// JSON string), or with `application/octet-stream` the protobuf `EmulationRequest` (node = 1,
/// session = 2, data = 3).
pub struct Request {
    pub node: String,
    pub session: String,
    /// `None` when a JSON request's `data` is not a string: no session can take it, but the
    /// request is still routed (and answered 204), as Centrifugo does.
    pub data: Option<Bytes>,
}

impl Request {
    pub fn decode(body: &[u8], protobuf: bool) -> Option<Request> {
        if protobuf {
            #[derive(Clone, PartialEq, prost::Message)]
            struct Pb {
                #[prost(string, tag = "1")]
                node: String,
                #[prost(string, tag = "2")]
                session: String,
                #[prost(bytes = "bytes", tag = "3")]
                data: Bytes,
            }
            let r = <Pb as prost::Message>::decode(body).ok()?;
            return Some(Request { node: r.node, session: r.session, data: Some(r.data) });
        }
        #[derive(serde::Deserialize)]
        struct J {
            #[serde(default)]
            node: String,
            #[serde(default)]
            session: String,
            #[serde(default)]
            data: Option<Value>,
        }
        let r: J = serde_json::from_slice(body).ok()?;
        let data = match r.data {
            Some(Value::String(s)) => Some(Bytes::from(s)),
            None | Some(Value::Null) => Some(Bytes::new()),
            Some(_) => None,
        };
        Some(Request { node: r.node, session: r.session, data })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_decode() {
        let r = Request::decode(
            br#"{"session":"s","node":"n","data":"{\"subscribe\":{\"channel\":\"c\"},\"id\":2}"}"#,
            false,
        )
        .unwrap();
        assert_eq!((r.session.as_str(), r.node.as_str()), ("s", "n"));
        assert_eq!(&r.data.unwrap()[..], br#"{"subscribe":{"channel":"c"},"id":2}"#);
        assert!(Request::decode(b"{", false).is_none());
        assert!(Request::decode(br#"{"data":{}}"#, false).unwrap().data.is_none());
        // protobuf: node = 1, session = 2, data = 3
        let pb = [10, 1, b'n', 18, 1, b's', 26, 2, 0, 1];
        let r = Request::decode(&pb, true).unwrap();
        assert_eq!((r.node.as_str(), r.session.as_str(), &r.data.unwrap()[..]), ("n", "s", &[0u8, 1][..]));
    }

    #[test]
    fn session_ids_name_their_worker() {
        for w in [0usize, 1, 7, 255] {
            let sid = crate::session::new_session_id(w);
            assert_eq!(session_worker(&sid), Some(w));
            assert_eq!(sid.len(), 36);
        }
        assert_eq!(session_worker("nope"), None);
    }
}
