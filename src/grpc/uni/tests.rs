use std::io::Write;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use prost::Message as _;
use prost_reflect::{DescriptorPool, DynamicMessage, MapKey, Value};
use tonic::codegen::tokio_stream::Stream;

use super::{cut, Cut, Pushes};
use crate::client::{frame_message, Framing};
use crate::model::{ClientInfo, Payload, Publication};
use crate::protocol::{decode_connect_request, encode_bare_push, ConnectResult, Format, PushBody, SubscribeResult};

fn framed(payload: &[u8]) -> Bytes {
    frame_message(Framing::UniGrpc, Format::Protobuf, payload)
}

#[test]
fn messages_are_cut_at_their_prefixes_however_the_bytes_arrive() {
    let stream: Vec<u8> = [framed(b"first"), framed(b""), framed(&[7u8; 300])].concat();
    // Every split point: the messages come out whole and in order.
    for at in 0..stream.len() {
        let mut buf = BytesMut::new();
        let mut out = Vec::new();
        for piece in [&stream[..at], &stream[at..]] {
            buf.extend_from_slice(piece);
            while let Cut::Message(m) = cut(&mut buf) {
                out.push(m);
            }
        }
        assert_eq!(out, vec![Bytes::from_static(b"first"), Bytes::new(), Bytes::from(vec![7u8; 300])], "split at {at}");
        assert!(buf.is_empty());
    }
    let mut partial = BytesMut::from(&framed(&[1u8; 40])[..20]);
    assert_eq!(cut(&mut partial), Cut::Need(45));
    assert_eq!(cut(&mut BytesMut::from(&b"\x00\x00"[..])), Cut::Need(5));
    // A compressed message is nothing the session writes.
    assert_eq!(cut(&mut BytesMut::from(&b"\x01\x00\x00\x00\x00"[..])), Cut::Malformed);
}

/// Polls `pushes` to its next item on a current-thread runtime.
fn next(rt: &tokio::runtime::Runtime, pushes: &mut Pushes) -> Option<Result<Bytes, tonic::Status>> {
    rt.block_on(std::future::poll_fn(|cx| std::pin::Pin::new(&mut *pushes).poll_next(cx)))
}

#[test]
fn the_stream_yields_each_message_as_written_and_ends_with_the_sessions_end() {
    let rt = tokio::runtime::Builder::new_current_thread().enable_io().build().unwrap();
    let (ours, mut theirs) = std::os::unix::net::UnixStream::pair().unwrap();
    ours.set_nonblocking(true).unwrap();
    let mut pushes = rt.block_on(async { Pushes::new(tokio::net::UnixStream::from_std(ours).unwrap()) });
    let big = vec![b'x'; 200_000];
    let writer = std::thread::spawn(move || {
        theirs.write_all(&framed(b"connect")).unwrap();
        let f = framed(&big);
        // A large message in several writes.
        for part in f.chunks(7_000) {
            theirs.write_all(part).unwrap();
        }
        theirs.write_all(&[framed(b""), framed(b"bye")].concat()).unwrap();
        // Half a message, then the end: the rest never comes.
        theirs.write_all(&framed(b"cut short")[..8]).unwrap();
    });
    assert_eq!(next(&rt, &mut pushes).unwrap().unwrap(), "connect");
    assert_eq!(next(&rt, &mut pushes).unwrap().unwrap().len(), 200_000);
    assert_eq!(next(&rt, &mut pushes).unwrap().unwrap(), "");
    assert_eq!(next(&rt, &mut pushes).unwrap().unwrap(), "bye");
    writer.join().unwrap();
    assert!(next(&rt, &mut pushes).is_none());
}

#[test]
fn dropping_the_stream_closes_the_sessions_socket() {
    let rt = tokio::runtime::Builder::new_current_thread().enable_io().build().unwrap();
    let (ours, mut theirs) = std::os::unix::net::UnixStream::pair().unwrap();
    ours.set_nonblocking(true).unwrap();
    let pushes = rt.block_on(async { Pushes::new(tokio::net::UnixStream::from_std(ours).unwrap()) });
    drop(pushes);
    let mut b = [0u8; 1];
    assert_eq!(std::io::Read::read(&mut theirs, &mut b).unwrap(), 0, "the session reads the end");
}

/// `proto/unistream.proto`, compiled as any client would.
fn schema() -> DescriptorPool {
    let root = env!("CARGO_MANIFEST_DIR");
    let fds = protox::compile([format!("{root}/proto/unistream.proto")], [format!("{root}/proto")]).unwrap();
    DescriptorPool::from_file_descriptor_set(fds).unwrap()
}

/// A bare push as sessions encode it, decoded with the schema's `Push`.
fn decode_push(pool: &DescriptorPool, channel: &str, push: &PushBody) -> DynamicMessage {
    let mut payload = Vec::new();
    encode_bare_push(Format::Protobuf, channel, push, &mut payload);
    let desc = pool.get_message_by_name("centrifugal.centrifugo.unistream.Push").unwrap();
    let m = DynamicMessage::decode(desc, &payload[..]).unwrap();
    assert!(m.unknown_fields().next().is_none(), "fields the schema lacks in {push:?}: {m:?}");
    m
}

/// The message in `field` of `m`.
fn sub(m: &DynamicMessage, field: &str) -> DynamicMessage {
    assert!(m.has_field_by_name(field), "{field} is set in {m:?}");
    m.get_field_by_name(field).unwrap().as_message().unwrap().clone()
}

fn get(m: &DynamicMessage, field: &str) -> Value {
    m.get_field_by_name(field).unwrap().into_owned()
}

fn info(user: &str, client: &str) -> ClientInfo {
    ClientInfo {
        user: user.into(),
        client: client.into(),
        conn_info: Some(Bytes::from_static(b"{\"c\":1}")),
        chan_info: Some(Bytes::from_static(b"\x00\x01")),
    }
}

fn publication() -> Publication {
    Publication {
        offset: 7,
        data: Payload { bytes: Bytes::from_static(b"\x00\xffbinary"), binary: true },
        info: Some(Arc::new(info("u", "c"))),
        tags: Some(Arc::from(vec![("k".into(), "v".into())])),
        key: None,
        removed: false,
    }
}

fn check_info(m: &DynamicMessage, user: &str, client: &str) {
    assert_eq!(get(m, "user"), Value::String(user.into()));
    assert_eq!(get(m, "client"), Value::String(client.into()));
    assert_eq!(get(m, "conn_info"), Value::Bytes(Bytes::from_static(b"{\"c\":1}")));
    assert_eq!(get(m, "chan_info"), Value::Bytes(Bytes::from_static(b"\x00\x01")));
}

fn check_publication(p: &DynamicMessage) {
    assert_eq!(get(p, "data"), Value::Bytes(Bytes::from_static(b"\x00\xffbinary")));
    assert_eq!(get(p, "offset"), Value::U64(7));
    check_info(&sub(p, "info"), "u", "c");
    let tags = get(p, "tags");
    let tags = tags.as_map().unwrap();
    assert_eq!(tags.get(&MapKey::String("k".into())), Some(&Value::String("v".into())));
}

#[test]
fn every_push_a_session_sends_decodes_with_the_schema() {
    let pool = schema();

    let m = decode_push(&pool, "ch", &PushBody::Pub(publication()));
    assert_eq!(get(&m, "channel"), Value::String("ch".into()));
    check_publication(&sub(&m, "pub"));

    let m = decode_push(&pool, "ch", &PushBody::Join(info("u2", "c2")));
    check_info(&sub(&sub(&m, "join"), "info"), "u2", "c2");
    let m = decode_push(&pool, "ch", &PushBody::Leave(info("u3", "c3")));
    check_info(&sub(&sub(&m, "leave"), "info"), "u3", "c3");

    let m = decode_push(&pool, "ch", &PushBody::Unsubscribe { code: 2000, reason: "server unsubscribe".into() });
    let u = sub(&m, "unsubscribe");
    assert_eq!((get(&u, "code"), get(&u, "reason")), (Value::U32(2000), Value::String("server unsubscribe".into())));

    let s = PushBody::Subscribe {
        recoverable: true,
        epoch: "ep".into(),
        offset: 9,
        positioned: true,
        data: Some(Bytes::from_static(b"d")),
    };
    let s = sub(&decode_push(&pool, "ch", &s), "subscribe");
    assert_eq!(get(&s, "recoverable"), Value::Bool(true));
    assert_eq!(get(&s, "epoch"), Value::String("ep".into()));
    assert_eq!(get(&s, "offset"), Value::U64(9));
    assert_eq!(get(&s, "positioned"), Value::Bool(true));
    assert_eq!(get(&s, "data"), Value::Bytes(Bytes::from_static(b"d")));

    let m = decode_push(&pool, "", &PushBody::Message { data: Bytes::from_static(b"hello") });
    assert_eq!(get(&sub(&m, "message"), "data"), Value::Bytes(Bytes::from_static(b"hello")));

    let r = sub(&decode_push(&pool, "", &PushBody::Refresh { expires: true, ttl: 60 }), "refresh");
    assert_eq!((get(&r, "expires"), get(&r, "ttl")), (Value::Bool(true), Value::U32(60)));

    let d = PushBody::Disconnect { code: 3005, reason: "connection expired".into(), reconnect: false };
    let d = sub(&decode_push(&pool, "", &d), "disconnect");
    assert_eq!((get(&d, "code"), get(&d, "reason")), (Value::U32(3005), Value::String("connection expired".into())));

    let result = SubscribeResult {
        expires: true,
        ttl: 30,
        recoverable: true,
        epoch: "e1".into(),
        publications: vec![publication()],
        recovered: true,
        offset: 7,
        positioned: true,
        data: Some(Bytes::from_static(b"sd")),
        was_recovering: true,
        delta: false,
        ..Default::default()
    };
    let connect = ConnectResult {
        client: "cid".into(),
        version: "1.0 OSS".into(),
        expires: true,
        ttl: 600,
        data: Some(Bytes::from_static(b"cd")),
        subs: vec![("#42".into(), result)],
        ping: 25,
        pong: false,
        session: "sid".into(),
        node: String::new(),
        time: 0,
    };
    let c = sub(&decode_push(&pool, "", &PushBody::Connect(Box::new(connect))), "connect");
    for (field, want) in [
        ("client", Value::String("cid".into())),
        ("version", Value::String("1.0 OSS".into())),
        ("data", Value::Bytes(Bytes::from_static(b"cd"))),
        ("expires", Value::Bool(true)),
        ("ttl", Value::U32(600)),
        ("ping", Value::U32(25)),
        ("session", Value::String("sid".into())),
    ] {
        assert_eq!(get(&c, field), want, "connect.{field}");
    }
    let subs = get(&c, "subs");
    let s = subs.as_map().unwrap().get(&MapKey::String("#42".into())).unwrap().as_message().unwrap().clone();
    for (field, want) in [
        ("expires", Value::Bool(true)),
        ("ttl", Value::U32(30)),
        ("recoverable", Value::Bool(true)),
        ("epoch", Value::String("e1".into())),
        ("recovered", Value::Bool(true)),
        ("offset", Value::U64(7)),
        ("positioned", Value::Bool(true)),
        ("data", Value::Bytes(Bytes::from_static(b"sd"))),
        ("was_recovering", Value::Bool(true)),
    ] {
        assert_eq!(get(&s, field), want, "subs[#42].{field}");
    }
    let pubs = get(&s, "publications");
    check_publication(pubs.as_list().unwrap()[0].as_message().unwrap());

    // A ping: the empty push.
    let desc = pool.get_message_by_name("centrifugal.centrifugo.unistream.Push").unwrap();
    assert_eq!(DynamicMessage::decode(desc.clone(), &b""[..]).unwrap(), DynamicMessage::new(desc));
}

#[test]
fn a_connect_request_built_from_the_schema_decodes_as_the_clients_connect() {
    let pool = schema();
    let desc = pool.get_message_by_name("centrifugal.centrifugo.unistream.ConnectRequest").unwrap();
    let sub_desc = pool.get_message_by_name("centrifugal.centrifugo.unistream.SubscribeRequest").unwrap();
    let mut recover = DynamicMessage::new(sub_desc);
    recover.set_field_by_name("recover", Value::Bool(true));
    recover.set_field_by_name("epoch", Value::String("ep".into()));
    recover.set_field_by_name("offset", Value::U64(12));
    let mut req = DynamicMessage::new(desc);
    req.set_field_by_name("token", Value::String("t".into()));
    req.set_field_by_name("data", Value::Bytes(Bytes::from_static(b"{}")));
    req.set_field_by_name(
        "subs",
        Value::Map([(MapKey::String("news".into()), Value::Message(recover))].into_iter().collect()),
    );
    req.set_field_by_name("name", Value::String("n".into()));
    req.set_field_by_name("version", Value::String("v".into()));
    req.set_field_by_name(
        "headers",
        Value::Map([(MapKey::String("h".into()), Value::String("x".into()))].into_iter().collect()),
    );
    let c = decode_connect_request(Format::Protobuf, &req.encode_to_vec()).unwrap();
    assert_eq!(c.token, "t");
    assert_eq!(c.data.as_deref(), Some(&b"{}"[..]));
    assert_eq!(c.subs.len(), 1);
    let (ch, r) = &c.subs[0];
    assert_eq!((ch.as_str(), r.recover, r.offset, r.epoch.as_str()), ("news", true, 12, "ep"));
    assert_eq!((c.name.as_str(), c.version.as_str()), ("n", "v"));
    assert_eq!(c.headers, vec![("h".to_string(), "x".to_string())]);
    // Not a protobuf message: refused (the call then fails with INVALID_ARGUMENT).
    assert!(decode_connect_request(Format::Protobuf, b"\xff\xff\xff").is_err());
}
