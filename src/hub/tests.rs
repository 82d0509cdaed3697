//! Deliveries to the subscribers of a worker: frames per kind, the shared JSON frame,
//! positioned subscribers.

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
                    let mut s = Sub {
                        key: 0,
                        gen: 0,
                        live: true,
                        join_leave: false,
                        delta,
                        base: 0,
                        filter: None,
                        track: None,
                    };
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

/// A positioned subscriber takes each offset of its epoch once and in sequence.
#[test]
fn a_track_takes_the_next_offset_only() {
    let e: Arc<str> = "ep".into();
    let mut t = Track { offset: 5, epoch: e.clone() };
    assert_eq!(t.step(5, &e), Step::Seen);
    assert_eq!(t.step(3, &"ep".into()), Step::Seen, "the same epoch in another string");
    assert_eq!(t.step(6, &e), Step::Next);
    assert_eq!(t.offset, 6);
    assert_eq!(t.step(8, &e), Step::Missed, "a gap");
    assert_eq!(t.step(7, &"other".into()), Step::Missed, "another epoch");
    assert_eq!(t.offset, 6);
}

/// A session that records what it was told to resubscribe to (a delivery here must not
/// disconnect anyone).
#[derive(Default)]
struct Recorder(RefCell<Vec<String>>);

impl Handler for Recorder {
    fn disconnect(&self, d: Disconnect) {
        panic!("disconnected: {d:?}");
    }
    fn on_timer(self: Rc<Self>, _at: std::time::Instant) {}
    fn resubscribe(&self, channel: &str) {
        self.0.borrow_mut().push(channel.to_string());
    }
    fn on_action(self: Rc<Self>, _cmd: &crate::api::Command) -> Option<crate::client::Pending> {
        None
    }
    fn is_connected(&self) -> bool {
        true
    }
}

/// A client of `format` whose frames the hub's flush pass writes to one end of a socket
/// pair (the other end is `fds[1]`, for [`received`]; [`close_pair`] ends both).
fn socket_client(hub: &Hub, format: Format, deflate: Option<Deflate>) -> (Rc<Client>, [i32; 2]) {
    let mut fds = [0; 2];
    // SAFETY: `fds` has room for the two descriptors.
    assert_eq!(unsafe { libc::socketpair(libc::AF_UNIX, libc::SOCK_STREAM, 0, fds.as_mut_ptr()) }, 0);
    let mut c = client(format, deflate);
    c.write_directly(fds[0], hub.writes().clone());
    (Rc::new(c), fds)
}

fn close_pair(fds: [i32; 2]) {
    // SAFETY: both descriptors are ours.
    unsafe {
        libc::close(fds[0]);
        libc::close(fds[1]);
    }
}

/// What has been written to the peer of `fd` so far.
fn received(fd: i32) -> Vec<u8> {
    let mut got = vec![0u8; 1 << 16];
    // SAFETY: reads into `got`, never blocks.
    let n = unsafe { libc::recv(fd, got.as_mut_ptr().cast(), got.len(), libc::MSG_DONTWAIT) };
    got.truncate(n.max(0) as usize);
    got
}

/// A subscriber answered with a position skips what it was given already (a publication
/// kept during its subscribe, or arriving live after its position was read) and is told to
/// resubscribe at a gap; a subscriber without a position gets every push.
#[test]
fn a_positioned_subscriber_gets_each_offset_once_and_resubscribes_at_a_gap() {
    let channel: Arc<str> = "room".into();
    let epoch: Arc<str> = "ep".into();
    let at = |n| text_push(&channel, n).with_position(Some(&StreamPosition { offset: n, epoch: epoch.clone() }));
    let frames = |ns: &[u64]| -> Vec<u8> { ns.iter().flat_map(|&n| at(n).json.unwrap().to_vec()).collect() };
    let hub = Hub::default();
    let mut subs = Vec::new();
    for positioned in [true, false] {
        let (c, fds) = socket_client(&hub, Format::Json, None);
        let h = Rc::new(Recorder::default());
        let key = hub.add(c.clone(), h.clone());
        c.expect(&channel);
        // Answered at offset 2; 2 and 3 were kept while its position was read.
        let top = positioned.then(|| StreamPosition { offset: 2, epoch: epoch.clone() });
        let extra = if positioned { vec![Arc::new(at(2)), Arc::new(at(3))] } else { Vec::new() };
        assert!(hub.accept(key, c.gen, &channel, false, false, None, top.as_ref(), &extra));
        let held: Vec<u8> = c.take_held(&channel).iter().flat_map(|f| f.to_vec()).collect();
        assert_eq!(held, if positioned { frames(&[3]) } else { Vec::new() });
        hub.set_live(&channel, key);
        subs.push((c, h, fds));
    }
    // 3 arrives live too (published before the position was read), then 4; then 6 (5 was lost).
    hub.deliver_all(&[at(3), at(4)].iter().collect::<Vec<_>>());
    hub.deliver(&at(6));
    hub.writes().flush();
    let (positioned, plain) = (&subs[0], &subs[1]);
    assert_eq!(received(positioned.2[1]), frames(&[4]));
    assert_eq!(*positioned.1 .0.borrow(), ["room"]);
    assert_eq!(received(plain.2[1]), frames(&[3, 4, 6]));
    assert!(plain.1 .0.borrow().is_empty());
    for (_, _, fds) in subs {
        close_pair(fds);
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
        let (c, fds) = socket_client(&hub, format, deflate);
        let key = hub.add(c.clone(), Rc::new(Recorder::default()));
        c.expect(&channel);
        assert!(hub.accept(key, c.gen, &channel, false, false, None, None, &[]));
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
        let got = received(fds[1]);
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
        close_pair(*fds);
    }
}
