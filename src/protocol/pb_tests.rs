//! Tests of the protobuf codec: frames built with the prost messages, decoded back.
use std::collections::BTreeMap;
use std::sync::Arc;

use super::*;

fn frame_of(cmds: &[proto::Command]) -> Vec<u8> {
    let mut buf = Vec::new();
    for c in cmds {
        c.encode_length_delimited(&mut buf).unwrap();
    }
    buf
}

/// Decodes every length-prefixed `Reply` in `buf`.
fn replies(mut buf: &[u8]) -> Vec<proto::Reply> {
    let mut out = Vec::new();
    while !buf.is_empty() {
        out.push(proto::Reply::decode_length_delimited(&mut buf).unwrap());
    }
    out
}

fn reply(id: u32, r: Result<ReplyBody, ApiError>) -> proto::Reply {
    let mut buf = Vec::new();
    encode_reply(id, &r, &mut buf);
    let mut all = replies(&buf);
    assert_eq!(all.len(), 1);
    all.pop().unwrap()
}

fn push(channel: &str, p: PushBody) -> proto::Push {
    let mut buf = Vec::new();
    encode_push(channel, &p, &mut buf);
    let r = replies(&buf).pop().unwrap();
    assert_eq!((r.id, r.error), (0, None));
    r.push.unwrap()
}

fn info(user: &str, client: &str) -> ClientInfo {
    ClientInfo {
        user: user.into(),
        client: client.into(),
        conn_info: Some(Bytes::from_static(b"{\"c\":1}")),
        chan_info: None,
    }
}

fn pb_info(user: &str, client: &str) -> proto::ClientInfo {
    proto::ClientInfo {
        user: user.into(),
        client: client.into(),
        conn_info: Bytes::from_static(b"{\"c\":1}"),
        chan_info: Bytes::new(),
    }
}

fn publication_with(offset: u64, data: Vec<u8>) -> Publication {
    Publication {
        offset,
        data: Payload { bytes: data.into(), binary: true },
        info: Some(Arc::new(info("u1", "c1"))),
        tags: Some(Arc::from(vec![("k1".into(), "v1".into()), ("k2".into(), "".into())])),
        key: None,
        removed: false,
    }
}

fn pb_publication_with(offset: u64, data: Vec<u8>) -> proto::Publication {
    proto::Publication {
        data: data.into(),
        info: Some(pb_info("u1", "c1")),
        offset,
        tags: BTreeMap::from([("k1".into(), "v1".into()), ("k2".into(), "".into())]),
        delta: false,
    }
}

#[test]
fn decodes_several_commands() {
    let connect = proto::Command {
        id: 1,
        connect: Some(proto::ConnectRequest {
            token: "tok".into(),
            data: Bytes::from_static(b"\x01\x02"),
            subs: BTreeMap::from([(
                "news".into(),
                proto::SubscribeRequest { recover: true, offset: 7, epoch: "ep".into(), ..Default::default() },
            )]),
            name: "js".into(),
            version: "1.0".into(),
            headers: BTreeMap::from([("x-a".into(), "b".into())]),
        }),
        ..Default::default()
    };
    let subscribe = proto::Command {
        id: 2,
        subscribe: Some(proto::SubscribeRequest {
            channel: "chat".into(),
            token: "st".into(),
            recover: true,
            epoch: "e".into(),
            offset: 300,
            data: Bytes::from_static(b"d"),
            positioned: true,
            recoverable: true,
            join_leave: true,
            delta: "fossil".into(),
            tf: Some(crate::filter::PbFilterNode {
                op: "or".into(),
                nodes: vec![
                    crate::filter::PbFilterNode {
                        key: "team".into(),
                        cmp: "eq".into(),
                        val: "eng".into(),
                        ..Default::default()
                    },
                    crate::filter::PbFilterNode {
                        key: "kind".into(),
                        cmp: "in".into(),
                        vals: vec!["a".into(), "b".into()],
                        ..Default::default()
                    },
                ],
                ..Default::default()
            }),
            flag: 5,
            ..Default::default()
        }),
        ..Default::default()
    };
    let history = |id, since| proto::Command {
        id,
        history: Some(proto::HistoryRequest { channel: "h".into(), limit: 10, since, reverse: true }),
        ..Default::default()
    };
    let frame = frame_of(&[
        connect,
        subscribe,
        proto::Command::default(),
        history(3, Some(proto::StreamPosition { offset: 0, epoch: String::new() })),
        history(4, None),
        proto::Command { id: 5, ..Default::default() },
        proto::Command { id: 6, ping: Some(proto::PingRequest {}), ..Default::default() },
    ]);
    let cmds = decode(&frame).unwrap();
    let hist = |since| Req::History(HistoryReq { channel: "h".into(), limit: 10, since, reverse: true });
    assert_eq!(
        cmds,
        vec![
            Cmd {
                id: 1,
                req: Req::Connect(ConnectReq {
                    token: "tok".into(),
                    data: Some(Bytes::from_static(b"\x01\x02")),
                    subs: vec![("news".into(), SubRecover { recover: true, offset: 7, epoch: "ep".into() })],
                    name: "js".into(),
                    version: "1.0".into(),
                    headers: vec![("x-a".into(), "b".into())],
                }),
            },
            Cmd {
                id: 2,
                req: Req::Subscribe(SubscribeReq {
                    channel: "chat".into(),
                    token: "st".into(),
                    recover: true,
                    epoch: "e".into(),
                    offset: 300,
                    data: Some(Bytes::from_static(b"d")),
                    positioned: true,
                    recoverable: true,
                    join_leave: true,
                    delta: "fossil".into(),
                    tf: Some(crate::filter::FilterNode {
                        op: "or".into(),
                        nodes: vec![
                            crate::filter::FilterNode {
                                key: "team".into(),
                                cmp: "eq".into(),
                                val: "eng".into(),
                                ..Default::default()
                            },
                            crate::filter::FilterNode {
                                key: "kind".into(),
                                cmp: "in".into(),
                                vals: vec!["a".into(), "b".into()],
                                ..Default::default()
                            },
                        ],
                        ..Default::default()
                    }),
                    flag: 5,
                    ..Default::default()
                }),
            },
            Cmd { id: 0, req: Req::Pong },
            Cmd { id: 3, req: hist(Some(StreamPosition::default())) },
            Cmd { id: 4, req: hist(None) },
            Cmd { id: 5, req: Req::Unknown },
            Cmd { id: 6, req: Req::Ping },
        ]
    );
}

#[test]
fn first_request_in_field_order_wins() {
    let c = proto::Command {
        id: 9,
        rpc: Some(proto::RpcRequest { data: Bytes::from_static(b"r"), method: "m".into() }),
        publish: Some(proto::PublishRequest {
            channel: "p".into(),
            data: Bytes::from_static(b"x"),
            ..Default::default()
        }),
        send: Some(proto::SendRequest { data: Bytes::from_static(b"s") }),
        ..Default::default()
    };
    let cmds = decode(&frame_of(&[c])).unwrap();
    assert_eq!(cmds[0].req, Req::Publish { channel: "p".into(), data: Bytes::from_static(b"x") });
    let c = proto::Command {
        rpc: Some(proto::RpcRequest { data: Bytes::from_static(b"r"), method: "m".into() }),
        send: Some(proto::SendRequest { data: Bytes::from_static(b"s") }),
        ..Default::default()
    };
    assert_eq!(decode(&frame_of(&[c])).unwrap()[0], Cmd { id: 0, req: Req::Send { data: Bytes::from_static(b"s") } });
}

/// Prost bounds the nesting of a tags filter: a deeper one is a bad frame, not a stack
/// overflow.
#[test]
fn deeply_nested_filter_is_a_bad_frame() {
    // Built as bytes: a `not` node around the one before it, 2000 levels deep.
    let mut node =
        crate::filter::PbFilterNode { key: "a".into(), cmp: "ex".into(), ..Default::default() }.encode_to_vec();
    for _ in 0..2000 {
        let mut outer = Vec::with_capacity(node.len() + 16);
        put_str(&mut outer, 1, "not");
        put_bytes(&mut outer, 6, &node);
        node = outer;
    }
    let mut sub = Vec::new();
    put_str(&mut sub, 1, "c");
    put_bytes(&mut sub, 13, &node);
    let mut cmd = Vec::new();
    put_u64(&mut cmd, 1, 1);
    put_bytes(&mut cmd, 5, &sub);
    let mut frame = Vec::new();
    encode_varint(cmd.len() as u64, &mut frame);
    frame.extend_from_slice(&cmd);
    let r = std::thread::Builder::new().stack_size(1 << 20).spawn(move || decode(&frame).is_err()).unwrap();
    assert!(r.join().unwrap());
}

#[test]
fn bad_frames() {
    assert_eq!(decode(b""), Err(BadFrame));
    // Truncated varint length.
    assert_eq!(decode(&[0x80]), Err(BadFrame));
    // Length beyond the frame.
    assert_eq!(decode(&[0x05, 0x08, 0x01]), Err(BadFrame));
    // A valid command followed by a truncated one.
    let mut f = frame_of(&[proto::Command { id: 1, ping: Some(proto::PingRequest {}), ..Default::default() }]);
    f.extend_from_slice(&[0x04, 0x08]);
    assert_eq!(decode(&f), Err(BadFrame));
    // Garbage inside a well-sized command: wire type 7 does not exist.
    assert_eq!(decode(&[0x02, 0x0F, 0xFF]), Err(BadFrame));
    // A text (JSON) frame sent to a protobuf connection.
    assert_eq!(decode(b"{\"id\":1,\"connect\":{}}"), Err(BadFrame));
}

#[test]
fn connect_reply() {
    let sub = SubscribeResult {
        recoverable: true,
        epoch: "ep".into(),
        offset: 4,
        positioned: true,
        publications: vec![publication_with(4, b"x".to_vec())],
        ..Default::default()
    };
    let r = reply(
        1,
        Ok(ReplyBody::Connect(ConnectResult {
            client: "cid".into(),
            version: "0.1.0".into(),
            expires: true,
            ttl: 60,
            data: Some(Bytes::from_static(b"{}")),
            subs: vec![("server-side".into(), sub)],
            ping: 25,
            pong: true,
            session: "sid".into(),
            node: "nid".into(),
            time: 1_700_000_000_123,
        })),
    );
    assert_eq!(r.id, 1);
    assert_eq!(
        r.connect.unwrap(),
        proto::ConnectResult {
            client: "cid".into(),
            version: "0.1.0".into(),
            expires: true,
            ttl: 60,
            data: Bytes::from_static(b"{}"),
            subs: BTreeMap::from([(
                "server-side".into(),
                proto::SubscribeResult {
                    recoverable: true,
                    epoch: "ep".into(),
                    offset: 4,
                    positioned: true,
                    publications: vec![pb_publication_with(4, b"x".to_vec())],
                    ..Default::default()
                }
            )]),
            ping: 25,
            pong: true,
            session: "sid".into(),
            node: "nid".into(),
            time: 1_700_000_000_123,
        }
    );
}

#[test]
fn subscribe_reply_with_publications_of_every_length_prefix_size() {
    // Payload sizes around the 1-, 2- and 3-byte varint boundaries of each nesting level.
    let sizes = [0usize, 1, 100, 127, 128, 200, 16_383, 16_384, 70_000];
    let publications: Vec<_> = sizes.iter().map(|&n| publication_with(n as u64 + 1, vec![0xAB; n])).collect();
    let r = reply(
        7,
        Ok(ReplyBody::Subscribe(SubscribeResult {
            expires: true,
            ttl: 30,
            recoverable: true,
            epoch: "xyz".into(),
            publications,
            recovered: true,
            offset: 70_001,
            positioned: false,
            data: None,
            was_recovering: true,
            delta: true,
            ..Default::default()
        })),
    );
    assert_eq!(r.id, 7);
    assert_eq!(
        r.subscribe.unwrap(),
        proto::SubscribeResult {
            expires: true,
            ttl: 30,
            recoverable: true,
            epoch: "xyz".into(),
            publications: sizes.iter().map(|&n| pb_publication_with(n as u64 + 1, vec![0xAB; n])).collect(),
            recovered: true,
            offset: 70_001,
            was_recovering: true,
            delta: true,
            ..Default::default()
        }
    );
}

#[test]
fn error_reply() {
    let r = reply(3, Err(ApiError::TOO_MANY_REQUESTS));
    assert_eq!(
        r,
        proto::Reply {
            id: 3,
            error: Some(proto::Error { code: 111, message: "too many requests".into(), temporary: true }),
            ..Default::default()
        }
    );
}

#[test]
fn other_replies_set_their_field() {
    let mut buf = Vec::new();
    let bodies = [
        ReplyBody::Unsubscribe,
        ReplyBody::Publish,
        ReplyBody::Presence(vec![info("u1", "c1"), info("u2", "c2")]),
        ReplyBody::PresenceStats { num_clients: 2, num_users: 1 },
        ReplyBody::History {
            publications: vec![publication_with(1, b"a".to_vec())],
            position: StreamPosition { offset: 1, epoch: "E".into() },
        },
        ReplyBody::Ping,
        ReplyBody::Rpc { data: Some(Bytes::from_static(b"out")) },
        ReplyBody::Refresh { client: "c".into(), version: "v".into(), expires: true, ttl: 9 },
        ReplyBody::SubRefresh { expires: true, ttl: 8 },
    ];
    for (i, b) in bodies.iter().enumerate() {
        encode_reply(i as u32 + 1, &Ok(b.clone()), &mut buf);
    }
    let r = replies(&buf);
    assert_eq!(r.iter().map(|r| r.id).collect::<Vec<_>>(), (1..=9).collect::<Vec<_>>());
    assert_eq!(r[0].unsubscribe, Some(proto::UnsubscribeResult {}));
    assert_eq!(r[1].publish, Some(proto::PublishResult {}));
    let presence = &r[2].presence.as_ref().unwrap().presence;
    assert_eq!(presence.len(), 2);
    assert_eq!(presence["c2"], pb_info("u2", "c2"));
    assert_eq!(r[3].presence_stats, Some(proto::PresenceStatsResult { num_clients: 2, num_users: 1 }));
    assert_eq!(
        r[4].history,
        Some(proto::HistoryResult {
            publications: vec![pb_publication_with(1, b"a".to_vec())],
            epoch: "E".into(),
            offset: 1,
        })
    );
    assert_eq!(r[5].ping, Some(proto::PingResult {}));
    assert_eq!(r[6].rpc, Some(proto::RpcResult { data: Bytes::from_static(b"out") }));
    assert_eq!(
        r[7].refresh,
        Some(proto::RefreshResult { client: "c".into(), version: "v".into(), expires: true, ttl: 9 })
    );
    assert_eq!(r[8].sub_refresh, Some(proto::SubRefreshResult { expires: true, ttl: 8 }));
    assert!(r.iter().all(|r| r.error.is_none() && r.push.is_none()));
}

#[test]
fn publication_push_with_tags_and_info() {
    let p = push("news", PushBody::Pub(publication_with(42, b"{\"n\":1}".to_vec())));
    assert_eq!(
        p,
        proto::Push {
            channel: "news".into(),
            r#pub: Some(pb_publication_with(42, b"{\"n\":1}".to_vec())),
            ..Default::default()
        }
    );
    let bare = Publication {
        offset: 0,
        data: Payload { bytes: Bytes::from_static(b"d"), binary: false },
        info: None,
        tags: None,
        key: None,
        removed: false,
    };
    let p = push("c", PushBody::Pub(bare));
    assert_eq!(p.r#pub, Some(proto::Publication { data: Bytes::from_static(b"d"), ..Default::default() }));
}

#[test]
fn other_pushes() {
    assert_eq!(push("ch", PushBody::Join(info("u", "c"))).join.unwrap().info, Some(pb_info("u", "c")));
    let leave = push("ch", PushBody::Leave(info("u", "c")));
    assert_eq!((leave.channel.as_str(), leave.leave.unwrap().info), ("ch", Some(pb_info("u", "c"))));
    let unsub = push("ch", PushBody::Unsubscribe { code: 2000, reason: "server unsubscribe".into() });
    assert_eq!(unsub.channel, "ch");
    assert_eq!(unsub.unsubscribe, Some(proto::Unsubscribe { code: 2000, reason: "server unsubscribe".into() }));
    let sub = push(
        "ch",
        PushBody::Subscribe {
            recoverable: true,
            epoch: "e".into(),
            offset: 3,
            positioned: true,
            data: Some(Bytes::from_static(b"x")),
        },
    );
    assert_eq!(sub.channel, "ch");
    assert_eq!(
        sub.subscribe,
        Some(proto::Subscribe {
            recoverable: true,
            epoch: "e".into(),
            offset: 3,
            positioned: true,
            data: Bytes::from_static(b"x"),
        })
    );
    let msg = push("ignored", PushBody::Message { data: Bytes::from_static(b"m") });
    assert_eq!(
        msg,
        proto::Push { message: Some(proto::Message { data: Bytes::from_static(b"m") }), ..Default::default() }
    );
    let refresh = push("ignored", PushBody::Refresh { expires: true, ttl: 5 });
    assert_eq!(refresh, proto::Push { refresh: Some(proto::Refresh { expires: true, ttl: 5 }), ..Default::default() });
    let d = push("ignored", PushBody::Disconnect { code: 3001, reason: "shutdown".into(), reconnect: true });
    assert_eq!(
        d,
        proto::Push {
            disconnect: Some(proto::Disconnect { code: 3001, reason: "shutdown".into(), reconnect: true }),
            ..Default::default()
        }
    );
}
