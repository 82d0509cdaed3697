//! This worker's connected clients and their subscriptions: channel → local subscribers and
//! user → connection count. [`Hub::deliver`] is the last leg of fan-out:
//! it queues a prepared push on every local subscriber of its channel (the same JSON frame
//! for all, shared through an `Rc` when there are several: `crate::client::frame`; the
//! protobuf frame encoded at most once per push, and for clients that negotiated
//! permessage-deflate each of them compressed at most once per push) and closes the clients
//! that overflowed after the iteration.
//!
//! Owned by one worker and used only from its thread; other workers reach it through the
//! worker's inbox (`Deliver` messages and jobs).

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::Arc;

use ahash::AHashMap;
use bytes::Bytes;
use slab::Slab;
use smallvec::SmallVec;

use crate::client::writes::{Batching, Writes};
use crate::client::{Client, Frame, Framing, Handler};
use crate::error::Disconnect;
use crate::filter::Filter;
use crate::protocol::{Format, PushBody};
use crate::push::{metrics_frame, raw_publication_frame, Prepared, PushKind};
use crate::wire::deflate::{self, Deflate};

/// A local subscriber of a channel.
#[derive(Debug, Clone)]
struct Sub {
    key: u32,
    /// The client's generation: an entry never reaches a later client in the same slot.
    gen: u32,
    /// The subscribe reply is written: pushes go to the queue (else they are held).
    live: bool,
    /// This subscriber receives join/leave pushes.
    join_leave: bool,
    /// It negotiated fossil deltas (see `crate::delta`).
    delta: bool,
    /// With `delta`: the owner's sequence number of the last publication it was sent (0: none
    /// known), the only base a patch may apply to.
    base: u64,
    /// Its tags filter: publications whose tags it rejects are not sent.
    filter: Option<Arc<Filter>>,
}

/// Whether the push reaches this subscriber as far as its tags filter is concerned (only
/// publications are filtered).
fn passes(s: &Sub, p: &Prepared) -> bool {
    match (&s.filter, &p.push) {
        (Some(f), PushBody::Pub(publication)) => f.matches(publication.tags.as_deref().unwrap_or_default()),
        _ => true,
    }
}

/// A client in its slot: the part fan-out uses and the session behind it.
struct Entry {
    client: Rc<Client>,
    handler: Rc<dyn Handler>,
}

/// See the module docs.
#[derive(Default)]
pub struct Hub {
    clients: RefCell<Slab<Entry>>,
    index: RefCell<AHashMap<Arc<str>, SmallVec<[Sub; 4]>>>,
    users: RefCell<AHashMap<Arc<str>, u32>>,
    /// Clients with frames to write this loop turn (see `crate::client::outbox`).
    writes: Rc<Writes<Client>>,
}

/// This worker's share of the node's `info` figures.
#[derive(Debug, Default)]
pub struct Counts {
    pub clients: u64,
    pub users: Vec<Arc<str>>,
    pub subs: u64,
}

impl Hub {
    /// A hub whose clients batch their writes as `batching` says.
    pub fn new(batching: Batching) -> Hub {
        Hub { writes: Rc::new(Writes::new(batching)), ..Hub::default() }
    }

    /// The flush list of this worker's clients; its task ([`Writes::run`]) runs on the worker.
    pub fn writes(&self) -> &Rc<Writes<Client>> {
        &self.writes
    }

    /// Adds a client; its slot is written into `client.key`.
    pub fn add(&self, client: Rc<Client>, handler: Rc<dyn Handler>) -> u32 {
        let key = self.clients.borrow_mut().insert(Entry { client: client.clone(), handler }) as u32;
        client.key.set(key);
        key
    }

    /// Removes a client (its subscriptions must have been removed first).
    pub fn remove(&self, key: u32) {
        self.clients.borrow_mut().try_remove(key as usize);
    }

    /// The session in slot `key` if it is still generation `gen`.
    pub fn handler(&self, key: u32, gen: u32) -> Option<Rc<dyn Handler>> {
        self.clients.borrow().get(key as usize).filter(|e| e.client.gen == gen).map(|e| e.handler.clone())
    }

    /// Every session on this worker (a snapshot: callers may close them while iterating).
    pub fn handlers(&self) -> Vec<Rc<dyn Handler>> {
        self.clients.borrow().iter().map(|(_, e)| e.handler.clone()).collect()
    }

    /// Every client on this worker (graceful shutdown waits for their queues).
    pub fn clients(&self) -> Vec<Rc<Client>> {
        self.clients.borrow().iter().map(|(_, e)| e.client.clone()).collect()
    }

    /// A connection of `user` completed its handshake.
    pub fn user_added(&self, user: &Arc<str>) {
        *self.users.borrow_mut().entry(user.clone()).or_default() += 1;
    }

    /// A connection of `user` that completed its handshake is gone.
    pub fn user_removed(&self, user: &str) {
        let mut users = self.users.borrow_mut();
        if let Some(n) = users.get_mut(user) {
            *n -= 1;
            if *n == 0 {
                users.remove(user);
            }
        }
    }

    /// The owner accepted a subscription of client `key` (generation `gen`): it joins the
    /// channel's subscribers, with pushes held until its reply is written, and `extra` pushes
    /// (newer than the position it was answered with, those its tags `filter` passes) held
    /// first. False when the client is gone or no longer waits for it: the owner's count must
    /// then be taken back. With `delta` it negotiated fossil deltas.
    #[allow(clippy::too_many_arguments)] // the subscription's parts, each a plain value
    pub fn accept(
        &self,
        key: u32,
        gen: u32,
        channel: &Arc<str>,
        join_leave: bool,
        delta: bool,
        filter: Option<Arc<Filter>>,
        extra: &[Arc<Prepared>],
    ) -> bool {
        let client = match self.clients.borrow().get(key as usize) {
            Some(e) if e.client.gen == gen && e.client.expects(channel) => e.client.clone(),
            _ => return false,
        };
        let mut sub = Sub { key, gen, live: false, join_leave, delta, base: 0, filter };
        for p in extra {
            if !passes(&sub, p) {
                continue;
            }
            if let Some(frame) = sub_frame(&client, &mut sub, p, &mut Frames::new(p, 1)) {
                client.hold(channel, frame.into_bytes());
            }
        }
        self.index.borrow_mut().entry(channel.clone()).or_default().push(sub);
        true
    }

    /// Marks a subscription live (its reply has been written).
    pub fn set_live(&self, channel: &str, key: u32) {
        if let Some(subs) = self.index.borrow_mut().get_mut(channel) {
            if let Some(e) = subs.iter_mut().find(|s| s.key == key) {
                e.live = true;
            }
        }
    }

    /// Whether client `key` is one of the subscribers of `channel` here (its subscription was
    /// accepted, whether or not its reply has been written).
    pub fn is_subscriber(&self, channel: &str, key: u32) -> bool {
        self.index.borrow().get(channel).is_some_and(|subs| subs.iter().any(|s| s.key == key))
    }

    /// Removes client `key` from the subscribers of `channel`.
    pub fn unsubscribe(&self, channel: &str, key: u32) {
        let mut index = self.index.borrow_mut();
        if let Some(subs) = index.get_mut(channel) {
            subs.retain(|s| s.key != key);
            if subs.is_empty() {
                index.remove(channel);
            }
        }
    }

    /// The sessions subscribed to `channel` on this worker.
    pub fn subscribers(&self, channel: &str) -> Vec<Rc<dyn Handler>> {
        let index = self.index.borrow();
        let clients = self.clients.borrow();
        let Some(subs) = index.get(channel) else { return Vec::new() };
        subs.iter()
            .filter_map(|s| clients.get(s.key as usize).filter(|e| e.client.gen == s.gen))
            .map(|e| e.handler.clone())
            .collect()
    }

    /// Queues a push on every local subscriber of its channel. See the module docs.
    pub fn deliver(&self, p: &Prepared) {
        self.deliver_all(&[p]);
    }

    /// Queues pushes to one channel, in order, on each of its local subscribers: a subscriber
    /// is visited once for all of them, so its client's memory is read once per run of
    /// publications rather than once per publication (a chain of dependent loads per
    /// subscriber, most of a delivery's cost outside the kernel with 1,000 subscribers).
    pub fn deliver_all<P: std::ops::Deref<Target = Prepared>>(&self, ps: &[P]) {
        let Some(first) = ps.first() else { return };
        debug_assert!(ps.iter().all(|p| p.channel == first.channel));
        let mut to_close: SmallVec<[(u32, Disconnect); 4]> = SmallVec::new();
        {
            let mut index = self.index.borrow_mut();
            let Some(subs) = index.get_mut(&*first.channel) else { return };
            let clients = self.clients.borrow();
            let mut each: SmallVec<[Delivery; 1]> = ps.iter().map(|p| Delivery::new(p, subs.len())).collect();
            for s in subs.iter_mut() {
                let Some(e) = clients.get(s.key as usize).filter(|e| e.client.gen == s.gen) else { continue };
                for d in each.iter_mut() {
                    let p = d.p;
                    if p.kind == PushKind::JoinLeave && !s.join_leave {
                        continue;
                    }
                    if !passes(s, p) {
                        continue;
                    }
                    let frame = match &d.local {
                        Some(f) if takes_json_as_is(&e.client, s) => Frame::Local(f.clone()),
                        _ => match sub_frame(&e.client, s, p, &mut d.frames) {
                            Some(f) => f,
                            None => {
                                to_close.push((s.key, Disconnect::INAPPROPRIATE_PROTOCOL));
                                break;
                            }
                        },
                    };
                    let t = &mut d.sent[e.client.framing.index()];
                    t.0 += 1;
                    t.1 += frame.len() as u64;
                    let ok = if s.live {
                        e.client.send(frame).is_ok()
                    } else {
                        e.client.hold(&p.channel, frame.into_bytes())
                    };
                    if !ok {
                        // The client is closed: its later pushes would be dropped.
                        to_close.push((s.key, Disconnect::SLOW));
                        break;
                    }
                }
            }
            for d in &each {
                for (t, &(frames, bytes)) in d.sent.iter().enumerate().filter(|(_, s)| s.0 > 0) {
                    crate::metrics::frames_sent(t, metrics_frame(&d.p.push), frames, bytes);
                }
            }
        }
        for (key, d) in to_close {
            let h = self.clients.borrow().get(key as usize).map(|e| e.handler.clone());
            if let Some(h) = h {
                h.disconnect(d);
            }
        }
    }

    /// This worker's client, user and subscription counts.
    pub fn counts(&self) -> Counts {
        Counts {
            clients: self.clients.borrow().iter().filter(|(_, e)| e.handler.is_connected()).count() as u64,
            users: self.users.borrow().keys().cloned().collect(),
            subs: self.index.borrow().values().map(|v| v.len() as u64).sum(),
        }
    }

    /// Subscriber counts of the channels whose name `keep` accepts.
    pub fn channels(&self, keep: impl Fn(&str) -> bool) -> Vec<(Box<str>, u64)> {
        self.index
            .borrow()
            .iter()
            .filter(|(ch, subs)| !subs.is_empty() && keep(ch))
            .map(|(ch, subs)| (Box::from(&**ch), subs.len() as u64))
            .collect()
    }
}

/// Consecutive pushes to one channel, gathered for [`Hub::deliver_all`]: delivered when a
/// push to another channel comes or the run is flushed.
pub struct Run<P>(SmallVec<[P; 16]>);

impl<P> Default for Run<P> {
    fn default() -> Self {
        Run(SmallVec::new())
    }
}

impl<P: std::ops::Deref<Target = Prepared>> Run<P> {
    pub fn push(&mut self, hub: &Hub, p: P) {
        if self.0.first().is_some_and(|q| q.channel != p.channel) {
            self.flush(hub);
        }
        self.0.push(p);
    }

    pub fn flush(&mut self, hub: &Hub) {
        hub.deliver_all(&self.0);
        self.0.clear();
    }
}

/// One push of a delivery: its frames, the JSON frame most subscribers take (see
/// [`takes_json_as_is`]), and the messages and bytes sent per transport (a metrics index).
struct Delivery<'a> {
    p: &'a Prepared,
    frames: Frames,
    local: Option<Rc<Bytes>>,
    sent: [(u64, u64); crate::metrics::TRANSPORTS.len()],
}

impl<'a> Delivery<'a> {
    fn new(p: &'a Prepared, subscribers: usize) -> Delivery<'a> {
        let frames = Frames::new(p, subscribers);
        let local = match &frames.json {
            Some(Frame::Local(f)) => Some(f.clone()),
            _ => None,
        };
        Delivery { p, frames, local, sent: [(0, 0); crate::metrics::TRANSPORTS.len()] }
    }
}

/// The frames of one push built during one delivery, by [`Client::frame_kind`]: each kind is
/// encoded at most once per push and worker, whatever the number of its subscribers; so is
/// each compressed frame (by kind and level), since with no context takeover a frame
/// compressed once is valid on every connection that negotiated permessage-deflate; and so
/// are the two frames of delta subscribers (full data, patch), by kind.
struct Frames {
    /// The JSON frame the owner built, which most subscribers take as it is: with
    /// [`LOCAL_SHARE_MIN`] subscribers or more on the worker, wrapped once in an `Rc` and
    /// shared without atomics (see `crate::client::frame`); with fewer the allocation is not
    /// worth it.
    json: Option<Frame>,
    /// The other plain frames, by kind.
    plain: [Option<Bytes>; crate::client::FRAME_KINDS],
    /// Compressed frames: kind, level, frame.
    deflated: SmallVec<[(usize, i8, Frame); 2]>,
    /// Delta subscribers' frames (full data, patch), by kind.
    delta: SmallVec<[(usize, Option<Bytes>); 2]>,
}

impl Frames {
    /// The cache of a delivery of `p` to `subscribers` subscribers on this worker.
    fn new(p: &Prepared, subscribers: usize) -> Frames {
        let json = match &p.json {
            Some(f) if subscribers >= LOCAL_SHARE_MIN => Some(Frame::Local(Rc::new(f.clone()))),
            f => f.clone().map(Frame::Own),
        };
        Frames { json, plain: std::array::from_fn(|_| None), deflated: SmallVec::new(), delta: SmallVec::new() }
    }

    /// `plain`, this push's WebSocket frame of `kind`, as a client with `d` receives it.
    fn deflated(&mut self, kind: usize, d: Deflate, plain: Frame) -> Frame {
        let Some((op, payload)) = crate::wire::ws::server_frame_parts(&plain) else { return plain };
        if !d.wants(payload.len()) {
            return plain;
        }
        if let Some((_, _, f)) = self.deflated.iter().find(|(k, l, _)| *k == kind && *l == d.level) {
            return f.clone();
        }
        let f = Frame::Own(deflate::frame(op, payload, d.level));
        self.deflated.push((kind, d.level, f.clone()));
        f
    }
}

/// The frame of a push for subscriber `s` of client `c`: for a delta subscriber of a
/// publication, the patch when the owner made one against the publication `s` was sent last,
/// else the full data in the delta form (see `crate::delta`); `s` then remembers this
/// publication as its base. Other pushes and subscribers: [`frame_for`].
fn sub_frame(c: &Client, s: &mut Sub, p: &Prepared, frames: &mut Frames) -> Option<Frame> {
    if !s.delta || p.kind != PushKind::Publication {
        return frame_for(c, p, frames);
    }
    let d = p.delta.as_ref();
    if matches!(&p.push, PushBody::Pub(x) if x.removed) {
        // A map removal has no data to patch or escape.
        return frame_for(c, p, frames);
    }
    let patch = d.is_some_and(|d| {
        d.patch.is_some() && if d.keyed { s.filter.is_none() } else { d.base != 0 && d.base == s.base }
    });
    s.base = d.map_or(0, |d| d.seq);
    if patch {
        if let Some(f) = delta_frame(c, p, true, frames) {
            return Some(f);
        }
    }
    if c.format == Format::Protobuf {
        // The full data in protobuf is the plain publication.
        return frame_for(c, p, frames);
    }
    delta_frame(c, p, false, frames)
}

/// A delta subscriber's frame (`patch` or full data, see [`Prepared::delta_frame`]), built once
/// per kind and delivery, compressed when the client negotiated permessage-deflate.
fn delta_frame(c: &Client, p: &Prepared, patch: bool, frames: &mut Frames) -> Option<Frame> {
    // Kinds of the delta forms, apart from the plain frames' in the compression cache.
    let kind = c.frame_kind() + crate::client::FRAME_KINDS * (1 + patch as usize);
    let plain = match frames.delta.iter().find(|(k, _)| *k == kind) {
        Some((_, f)) => f.clone(),
        None => {
            let f = p.delta_frame(c.framing, c.format, patch);
            frames.delta.push((kind, f.clone()));
            f
        }
    }?
    .into();
    Some(match c.deflate {
        Some(d) => frames.deflated(kind, d, plain),
        None => plain,
    })
}

/// The frame of a push for one client (see [`plain_frame_for`]), compressed when the client
/// negotiated permessage-deflate.
fn frame_for(c: &Client, p: &Prepared, frames: &mut Frames) -> Option<Frame> {
    let plain = plain_frame_for(c, p, frames)?;
    Some(match c.deflate {
        Some(d) => frames.deflated(c.frame_kind(), d, plain),
        None => plain,
    })
}

/// Subscribers of one channel on a worker from which a delivery shares its JSON frame through
/// an `Rc` rather than through `Bytes`' atomic count.
const LOCAL_SHARE_MIN: usize = 4;

/// Whether client `c` takes the JSON frame the owner built as it is (a WebSocket JSON client
/// of today's protocol, not a raw one), before any compression.
fn plain_json(c: &Client) -> bool {
    !c.raw && c.framing == Framing::WebSocket && c.format == Format::Json && !c.v1.get()
}

/// Whether [`sub_frame`] gives subscriber `s` of `c` the owner's JSON frame as it is (not a
/// delta subscriber, no compression, [`plain_json`]): the common case, which a delivery to
/// many subscribers takes without the cache. Through `sub_frame` the frame moves through three
/// calls, and a delivery to 1,000 subscribers cost 8-25% more CPU per subscriber at 64
/// publications per pass. `hub::tests::the_shortcut_agrees_with_sub_frame` keeps the two in step.
#[inline]
fn takes_json_as_is(c: &Client, s: &Sub) -> bool {
    !s.delta && c.deflate.is_none() && plain_json(c)
}

/// The frame of a push for one client's transport and format (built at most once per
/// `frames` cache); `None` when a JSON client cannot receive the binary payload.
fn plain_frame_for(c: &Client, p: &Prepared, frames: &mut Frames) -> Option<Frame> {
    if c.raw {
        return match &p.push {
            PushBody::Pub(publication) => Some(raw_publication_frame(&publication.data).into()),
            _ => None,
        };
    }
    if plain_json(c) {
        // The owner built it: the common case costs a reference count.
        return frames.json.clone();
    }
    if c.format == Format::Json && p.json.is_none() {
        return None;
    }
    let slot = &mut frames.plain[c.frame_kind()];
    let build = || if c.v1.get() { p.v1_frame(c.framing, c.format) } else { p.frame(c.framing, c.format) };
    Some(slot.get_or_insert_with(build).clone().into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Payload, Publication};

    fn client(format: Format, deflate: Option<Deflate>) -> Client {
        let mut c = Client::new("c".into(), format, false, Framing::WebSocket, 1 << 20);
        c.deflate = deflate;
        c
    }

    /// A publication of ~250 bytes of JSON to `channel` (`n` in it and as its offset).
    fn text_push(channel: &Arc<str>, n: u64) -> Prepared {
        let data = Bytes::from(format!("{{\"text\":\"{}\",\"n\":{n}}}", "hello ".repeat(40)));
        let publication = Publication {
            offset: n,
            data: Payload { bytes: data, binary: false },
            info: None,
            tags: None,
            key: None,
            removed: false,
        };
        Prepared::new(channel.clone(), PushKind::Publication, PushBody::Pub(publication))
    }

    /// Compressing subscribers of one delivery share one compressed frame per format and
    /// level; the others keep the plain frame; the min size is strict.
    #[test]
    fn compressed_once_per_delivery() {
        let p = text_push(&"news".into(), 1);
        let plain = p.json.clone().unwrap();
        let len = crate::wire::ws::server_frame_parts(&plain).unwrap().1.len();
        let d1 = Some(Deflate::new(1, 0));
        let mut cache = Frames::new(&p, 1);
        let a = frame_for(&client(Format::Json, d1), &p, &mut cache).unwrap();
        let b = frame_for(&client(Format::Json, d1), &p, &mut cache).unwrap();
        assert_eq!(a[0], 0xC1, "FIN + RSV1 + text");
        assert!(a.len() < plain.len());
        assert_eq!(a.as_ptr(), b.as_ptr(), "one compression for both");
        let pb = frame_for(&client(Format::Protobuf, d1), &p, &mut cache).unwrap();
        assert_eq!(pb[0], 0xC2);
        let l9 = frame_for(&client(Format::Json, Some(Deflate::new(9, 0))), &p, &mut cache).unwrap();
        assert_ne!(l9.as_ptr(), a.as_ptr());
        assert_eq!(cache.deflated.len(), 3);
        let off = frame_for(&client(Format::Json, None), &p, &mut cache).unwrap();
        assert_eq!(off.as_ptr(), plain.as_ptr());
        let at_min = frame_for(&client(Format::Json, Some(Deflate::new(1, len))), &p, &mut cache).unwrap();
        assert_eq!(at_min.as_ptr(), plain.as_ptr(), "not longer than the min size: plain");
        let over_min = frame_for(&client(Format::Json, Some(Deflate::new(1, len - 1))), &p, &mut cache).unwrap();
        assert_eq!(over_min.as_ptr(), a.as_ptr());
        let mut dec = crate::wire::ws::Decoder::client(1 << 20, 1 << 20).with_inflate(1 << 20);
        let msg = dec.decode(&mut bytes::BytesMut::from(&a[..])).unwrap().unwrap();
        assert_eq!(msg, crate::wire::ws::Message::Text(Bytes::copy_from_slice(&plain[plain.len() - len..])));
    }

    /// The plain JSON frame is one `Rc` handed to every JSON subscriber from
    /// `LOCAL_SHARE_MIN` subscribers on; below that, and for every other kind, a frame of its own.
    #[test]
    fn json_subscribers_share_one_rc_from_the_minimum_on() {
        let p = text_push(&"news".into(), 1);
        let json = client(Format::Json, None);
        let mut many = Frames::new(&p, LOCAL_SHARE_MIN);
        let (Some(Frame::Local(a)), Some(Frame::Local(b))) =
            (frame_for(&json, &p, &mut many), frame_for(&json, &p, &mut many))
        else {
            panic!("not shared through an Rc");
        };
        assert!(Rc::ptr_eq(&a, &b));
        assert_eq!(**a, p.json.clone().unwrap());
        let own = |c: &Client, n: usize| matches!(frame_for(c, &p, &mut Frames::new(&p, n)), Some(Frame::Own(_)));
        assert!(own(&json, LOCAL_SHARE_MIN - 1));
        assert!(own(&client(Format::Protobuf, None), LOCAL_SHARE_MIN));
        assert!(own(&client(Format::Json, Some(Deflate::new(1, 0))), LOCAL_SHARE_MIN));
    }

    /// The shortcut a delivery takes gives exactly what `sub_frame` would, and only the owner's
    /// JSON frame: over every transport, format, protocol, compression and delta choice.
    #[test]
    fn the_shortcut_agrees_with_sub_frame() {
        let p = text_push(&"news".into(), 1);
        let json = p.json.clone().unwrap();
        let mut shortcuts = 0;
        for framing in Framing::ALL {
            for format in [Format::Json, Format::Protobuf] {
                for (raw, v1, delta) in (0..8).map(|b| (b & 1 != 0, b & 2 != 0, b & 4 != 0)) {
                    for deflate in [None, Some(Deflate::new(1, 0))] {
                        let mut c = Client::new("c".into(), format, raw, framing, 1 << 20);
                        c.deflate = deflate;
                        c.v1.set(v1);
                        let mut s = Sub { key: 0, gen: 0, live: true, join_leave: false, delta, base: 0, filter: None };
                        let full = sub_frame(&c, &mut s, &p, &mut Frames::new(&p, LOCAL_SHARE_MIN));
                        if takes_json_as_is(&c, &s) {
                            shortcuts += 1;
                            assert_eq!(full.as_deref(), Some(&json[..]), "{framing:?} {format:?} {raw} {v1} {delta}");
                        }
                    }
                }
            }
        }
        assert_eq!(shortcuts, 1, "only the plain JSON WebSocket subscriber of today's protocol");
    }

    /// A session with nothing to do (a delivery here must not disconnect anyone).
    struct Quiet;

    impl Handler for Quiet {
        fn disconnect(&self, d: Disconnect) {
            panic!("disconnected: {d:?}");
        }
        fn on_timer(self: Rc<Self>, _at: std::time::Instant) {}
        fn resubscribe(&self, _channel: &str) {}
        fn on_action(self: Rc<Self>, _cmd: &crate::api::Command) -> Option<crate::client::Pending> {
            None
        }
        fn is_connected(&self) -> bool {
            true
        }
    }

    /// With enough subscribers the plain JSON ones share the frame through an `Rc`; every
    /// other kind (protobuf, compressed, held until its subscribe reply) still gets its own
    /// form, and each socket receives exactly its frames, in order.
    #[test]
    fn a_delivery_to_many_mixed_subscribers_gives_each_its_frame() {
        mixed_subscribers(false);
    }

    /// The same pushes delivered together reach each subscriber as they do one by one.
    #[test]
    fn pushes_delivered_together_arrive_as_one_by_one() {
        mixed_subscribers(true);
    }

    fn mixed_subscribers(together: bool) {
        let channel: Arc<str> = "room".into();
        let hub = Hub::default();
        let kinds = [(Format::Json, None), (Format::Protobuf, None), (Format::Json, Some(Deflate::new(1, 0)))];
        let mut subs = Vec::new();
        for k in 0..8usize {
            let (format, deflate) = kinds[k.saturating_sub(5)];
            let mut fds = [0; 2];
            // SAFETY: `fds` has room for the two descriptors.
            assert_eq!(unsafe { libc::socketpair(libc::AF_UNIX, libc::SOCK_STREAM, 0, fds.as_mut_ptr()) }, 0);
            let mut c = client(format, deflate);
            c.write_directly(fds[0], hub.writes().clone());
            let c = Rc::new(c);
            let key = hub.add(c.clone(), Rc::new(Quiet));
            c.expect(&channel);
            assert!(hub.accept(key, c.gen, &channel, false, false, None, &[]));
            if k != 4 {
                hub.set_live(&channel, key);
            }
            subs.push((c, fds));
        }
        let pushes = [1, 2, 3].map(|n| text_push(&channel, n));
        if together {
            hub.deliver_all(&pushes.iter().collect::<Vec<_>>());
        } else {
            for p in &pushes {
                hub.deliver(p);
            }
        }
        hub.writes().flush();
        for (k, (c, fds)) in subs.iter().enumerate() {
            let mut got = vec![0u8; 1 << 16];
            // SAFETY: reads into `got`, never blocks.
            let n = unsafe { libc::recv(fds[1], got.as_mut_ptr().cast(), got.len(), libc::MSG_DONTWAIT) };
            got.truncate(n.max(0) as usize);
            let want: Vec<u8> =
                pushes.iter().flat_map(|p| frame_for(c, p, &mut Frames::new(p, 1)).unwrap().to_vec()).collect();
            if k == 4 {
                assert!(got.is_empty(), "held until its reply is written");
                let held: Vec<u8> = c.take_held(&channel).iter().flat_map(|f| f.to_vec()).collect();
                assert_eq!(held, want);
            } else {
                assert_eq!(got, want, "subscriber {k}");
            }
            if k < 4 {
                assert_eq!(&got[..want.len() / 3], &pushes[0].json.clone().unwrap()[..]);
            }
            // SAFETY: both descriptors are ours.
            unsafe {
                libc::close(fds[0]);
                libc::close(fds[1]);
            }
        }
    }
}
