//! Subscription streams (`subscribe_stream` proxies, gRPC only): a client's subscription to a
//! channel of such a namespace opens a stream to the backend, whose publications go to this
//! client alone; on a bidirectional stream the client's publications go to the backend.
//!
//! The stream's events arrive on the proxy client thread and come to the session's worker
//! as jobs, addressed by a stream id in the worker's [`Registry`]. Publications that arrive
//! before the subscribe reply was written wait until the channel is released.

use std::cell::RefCell;
use std::rc::{Rc, Weak};
use std::sync::Arc;

use ahash::AHashMap;
use bytes::Bytes;

use super::commands::{json_ok, subscribe_owned, SubOutcome};
use super::proxy as sp;
use super::Session;
use crate::api::Overrides;
use crate::client::Handler;
use crate::error::{ApiError, Disconnect};
use crate::model::{Payload, Publication};
use crate::protocol::{Format, PushBody, ReplyBody, SubscribeReq};
use crate::proxy::{grpc, CallError, Kind, Proxy, Response, StreamEvent};
use crate::runtime::worker::{Msg, Worker};

/// A session's open stream on one channel.
pub(super) struct Open {
    handle: grpc::StreamHandle,
    bidirectional: bool,
    id: u64,
}

struct Entry {
    session: Weak<Session>,
    channel: Arc<str>,
    /// The subscribe reply went out: publications are pushed at once.
    live: bool,
    waiting: Vec<StreamEvent>,
}

/// This worker's open streams by id.
#[derive(Default)]
struct Registry {
    next: std::cell::Cell<u64>,
    entries: RefCell<AHashMap<u64, Entry>>,
}

fn registry(w: &Worker) -> Rc<Registry> {
    w.local(|_| Registry::default())
}

/// Subscribes through the namespace's stream proxy.
pub(super) async fn subscribe(s: &Rc<Session>, p: &Arc<Proxy>, mut req: SubscribeReq) -> SubOutcome {
    let bidirectional =
        s.w.cfg
            .resolve_channel(&req.channel)
            .map(|r| r.options.proxy.subscribe_stream_proxy_bidirectional)
            .unwrap_or(false);
    let mut call = s.proxy_request(p);
    call.channel = req.channel.clone();
    Session::set_payload(p, &mut call, req.data.take());
    let reg = registry(&s.w);
    let id = reg.next.get() + 1;
    reg.next.set(id);
    let channel: Arc<str> = req.channel.as_str().into();
    reg.entries
        .borrow_mut()
        .insert(id, Entry { session: Rc::downgrade(s), channel: channel.clone(), live: false, waiting: Vec::new() });
    let (answer, first) = s.w.await_remote::<Result<Response, CallError>>();
    let mut answer = Some(answer);
    let mailbox = s.w.node.mailboxes[s.w.id].clone();
    let on_event = Box::new(move |ev: StreamEvent| match ev {
        StreamEvent::Subscribed(r) => {
            if let Some(a) = answer.take() {
                a.send(*r);
            }
        }
        ev => {
            mailbox.send(vec![Msg::Job(Box::new(move |w| deliver(w, id, ev)))]);
        }
    });
    let headers = s.call_headers(p);
    let (protocol, kind) = (p.protocol(), Kind::SubscribeStream.name());
    crate::metrics::proxy_started(protocol, kind, &p.name);
    let started = std::time::Instant::now();
    let handle = grpc::open_stream(p, call, headers, bidirectional, on_event);
    let r = match monoio::time::timeout(p.timeout + std::time::Duration::from_secs(1), first).await {
        Ok(r) => r,
        Err(_) => Err(CallError::Timeout),
    };
    crate::metrics::proxy_finished(protocol, kind, &p.name, started.elapsed(), r.is_err());
    let fail = |reg: &Registry| {
        reg.entries.borrow_mut().remove(&id);
    };
    let r = match r {
        Ok(r) => r,
        Err(e) => {
            crate::proxy::warn_failed(p, &e);
            fail(&reg);
            return Ok(Err(ApiError::INTERNAL));
        }
    };
    if s.st.borrow().closed {
        fail(&reg);
        return Err(Disconnect::new(3000, "connection closed"));
    }
    if let Some(d) = &r.disconnect {
        fail(&reg);
        return Err(sp::disconnect(d));
    }
    if let Some(e) = &r.error {
        fail(&reg);
        // A stream's error is final: its `temporary` is not passed on.
        return Ok(Err(ApiError { temporary: false, ..sp::api_error(e) }));
    }
    let res = r.result.unwrap_or_default();
    let (Ok(info), Ok(data)) = (sp::payload(&res.info, &res.b64info), sp::payload(&res.data, &res.b64data)) else {
        fail(&reg);
        return Ok(Err(ApiError::INTERNAL));
    };
    if res.expire_at > 0 && res.expire_at <= super::unix_now() {
        fail(&reg);
        return Ok(Err(ApiError::EXPIRED));
    }
    if !json_ok(s, &data) {
        fail(&reg);
        return Err(Disconnect::INAPPROPRIATE_PROTOCOL);
    }
    // No history on a stream: neither recovery nor positioning.
    req.recover = false;
    req.recoverable = false;
    req.positioned = false;
    req.join_leave = false;
    let o = sp::overrides(&res.over);
    let over = Overrides { force_recovery: Some(false), force_positioning: Some(false), ..o };
    let out = subscribe_owned(s, req, info, false, res.expire_at, over).await;
    match &out {
        Ok(Ok(_)) => {
            s.streams.borrow_mut().insert(channel, Open { handle, bidirectional, id });
        }
        _ => fail(&reg),
    }
    out.map(|r| r.map(|(ch, res)| (ch, crate::protocol::SubscribeResult { data, ..res })))
}

/// The subscribe reply for `channel` went out: waiting publications follow.
pub(super) fn released(s: &Session, channel: &str) {
    let Some(id) = s.streams.borrow().get(channel).map(|o| o.id) else { return };
    let reg = registry(&s.w);
    let waiting = match reg.entries.borrow_mut().get_mut(&id) {
        Some(e) => {
            e.live = true;
            std::mem::take(&mut e.waiting)
        }
        None => return,
    };
    for ev in waiting {
        deliver(&s.w, id, ev);
    }
}

/// One event of stream `id` on its session's worker.
fn deliver(w: &Rc<Worker>, id: u64, ev: StreamEvent) {
    let reg = registry(w);
    let (session, channel) = {
        let mut entries = reg.entries.borrow_mut();
        let Some(e) = entries.get_mut(&id) else { return };
        if !e.live {
            e.waiting.push(ev);
            return;
        }
        (e.session.upgrade(), e.channel.clone())
    };
    let Some(s) = session else {
        reg.entries.borrow_mut().remove(&id);
        return;
    };
    match ev {
        StreamEvent::Publication { data, tags } => {
            if s.client.format == Format::Json && serde_json::from_slice::<serde::de::IgnoredAny>(&data).is_err() {
                // Binary data cannot travel in a JSON frame.
                s.disconnect(Disconnect::INAPPROPRIATE_PROTOCOL);
                return;
            }
            let tags = (!tags.is_empty())
                .then(|| tags.iter().map(|(k, v)| (k.as_str().into(), v.as_str().into())).collect::<Vec<_>>().into());
            let p = Publication {
                offset: 0,
                data: Payload { bytes: data, binary: s.client.format == Format::Protobuf },
                info: None,
                tags,
                key: None,
                removed: false,
            };
            s.push(&channel, &PushBody::Pub(p));
        }
        StreamEvent::Ended { eof } => {
            reg.entries.borrow_mut().remove(&id);
            let open = s.streams.borrow_mut().remove(&channel);
            if open.is_some_and(|o| o.id == id) {
                let (code, reason) = if eof { (2000, "server unsubscribe") } else { (2500, "insufficient state") };
                s.unsubscribe(&channel, Some((code, reason)));
            }
        }
        StreamEvent::Subscribed(_) => {}
    }
}

/// A client publication to a channel of a stream namespace: into its bidirectional stream,
/// refused otherwise. `None` for channels without a stream.
pub(super) fn publish(
    s: &Session,
    channel: &str,
    data: &Bytes,
    o: &crate::config::ChannelOptions,
) -> Option<Result<ReplyBody, ApiError>> {
    if !o.proxy.subscribe_stream_proxy_enabled {
        return None;
    }
    let streams = s.streams.borrow();
    Some(match streams.get(channel) {
        Some(open) if open.bidirectional => {
            if open.handle.publish(data.clone()) {
                Ok(ReplyBody::Publish)
            } else {
                Err(ApiError::INTERNAL)
            }
        }
        _ => Err(ApiError::NOT_AVAILABLE),
    })
}

/// The session leaves `channel` (or closes): its stream, if any, is cancelled.
pub(super) fn closed(s: &Session, channel: Option<&str>) {
    let gone: Vec<Open> = {
        let mut streams = s.streams.borrow_mut();
        match channel {
            Some(ch) => streams.remove(ch).into_iter().collect(),
            None => std::mem::take(&mut *streams).into_entries().map(|(_, o)| o).collect(),
        }
    };
    if gone.is_empty() {
        return;
    }
    let reg = registry(&s.w);
    // Dropping each handle cancels its stream.
    for o in gone {
        reg.entries.borrow_mut().remove(&o.id);
    }
}
