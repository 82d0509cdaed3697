use bytes::Bytes;

use super::*;
use crate::model::{ClientInfo, Payload, Publication};
use crate::protocol::SubscribeResult;

fn delimited_msg(body: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    prost::encoding::encode_varint(body.len() as u64, &mut out);
    out.extend_from_slice(body);
    out
}

fn pb_command(id: u32, method: u32, params: &[u8]) -> Vec<u8> {
    let c = CommandPb { id, method, params: Bytes::copy_from_slice(params) };
    delimited_msg(&c.encode_to_vec())
}

#[test]
fn recognises_the_older_protocol_by_its_first_message() {
    assert!(is_v1(Format::Json, br#"{"id":1,"params":{"token":"t"}}"#));
    assert!(is_v1(Format::Json, br#"{"method":1,"params":{"channel":"a"},"id":2}"#));
    assert!(is_v1(Format::Json, br#"{"id":1}"#));
    assert!(!is_v1(Format::Json, br#"{"id":1,"connect":{}}"#));
    assert!(!is_v1(Format::Json, b"{}"));
    assert!(!is_v1(Format::Json, b"nope"));
    assert!(!is_v1(Format::Json, b""));
    let connect = proto::ConnectRequest { token: "t".into(), ..Default::default() }.encode_to_vec();
    assert!(is_v1(Format::Protobuf, &pb_command(1, 0, &connect)));
    let v2 = proto::Command { id: 1, connect: Some(Default::default()), ..Default::default() };
    assert!(!is_v1(Format::Protobuf, &delimited_msg(&v2.encode_to_vec())));
    assert!(!is_v1(Format::Protobuf, &[0xff, 0xff]));
    assert!(!is_v1(Format::Protobuf, &[5, 1]));
}

#[test]
fn decodes_every_method_in_json() {
    let frame = concat!(
        r#"{"id":1,"params":{"token":"t","name":"js","subs":{"s":{"recover":true,"offset":3,"epoch":"e"}}}}"#,
        "\n",
        r#"{"id":2,"method":1,"params":{"channel":"a","recover":true,"offset":5,"epoch":"x","seq":1,"gen":0}}"#,
        "\n",
        r#"{"id":3,"method":2,"params":{"channel":"a"}}"#,
        "\n",
        r#"{"id":4,"method":3,"params":{"channel":"a","data":{"x":1}}}"#,
        "\n",
        r#"{"id":5,"method":"presence","params":{"channel":"a"}}"#,
        "\n",
        r#"{"id":6,"method":5,"params":{"channel":"a"}}"#,
        "\n",
        r#"{"id":7,"method":6,"params":{"channel":"a","limit":2,"since":{"offset":1,"epoch":"e"}}}"#,
        "\n",
        r#"{"id":8,"method":7}"#,
        "\n",
        r#"{"method":8,"params":{"data":"hi"}}"#,
        "\n",
        r#"{"id":9,"method":9,"params":{"method":"m","data":[1]}}"#,
        "\n",
        r#"{"id":10,"method":10,"params":{"token":"r"}}"#,
        "\n",
        r#"{"id":11,"method":11,"params":{"channel":"a","token":"s"}}"#,
        "\n",
        r#"{"id":12,"method":99,"params":{}}"#,
    );
    let cmds = decode(Format::Json, frame.as_bytes()).unwrap();
    assert_eq!(cmds.len(), 13);
    assert!(matches!(&cmds[0].req, Req::Connect(c) if c.token == "t" && c.subs[0].1.offset == 3));
    assert!(matches!(&cmds[1].req, Req::Subscribe(s) if s.channel == "a" && s.recover && s.offset == 5));
    assert_eq!(cmds[2].req, Req::Unsubscribe { channel: "a".into() });
    assert!(matches!(&cmds[3].req, Req::Publish { data, .. } if &data[..] == br#"{"x":1}"#));
    assert_eq!(cmds[4].req, Req::Presence { channel: "a".into() });
    assert_eq!(cmds[5].req, Req::PresenceStats { channel: "a".into() });
    assert!(matches!(&cmds[6].req, Req::History(h) if h.limit == 2 && h.since.as_ref().unwrap().offset == 1));
    assert_eq!(cmds[7].req, Req::Ping);
    assert!(matches!(&cmds[8].req, Req::Send { data } if &data[..] == b"\"hi\""));
    assert_eq!(cmds[8].id, 0);
    assert!(matches!(&cmds[9].req, Req::Rpc { method, .. } if method == "m"));
    assert_eq!(cmds[10].req, Req::Refresh { token: "r".into() });
    assert!(matches!(&cmds[11].req, Req::SubRefresh { channel, token, .. } if channel == "a" && token == "s"));
    assert_eq!(cmds[12], Cmd { id: 12, req: Req::Unknown });
}

#[test]
fn decodes_protobuf_commands() {
    let sub = proto::SubscribeRequest { channel: "a".into(), recover: true, offset: 7, ..Default::default() };
    let mut frame = pb_command(2, 1, &sub.encode_to_vec());
    frame.extend(pb_command(3, 7, &[]));
    frame.extend(pb_command(4, 77, &[]));
    let cmds = decode(Format::Protobuf, &frame).unwrap();
    assert!(matches!(&cmds[0].req, Req::Subscribe(s) if s.channel == "a" && s.offset == 7));
    assert_eq!(cmds[1].req, Req::Ping);
    assert_eq!(cmds[2].req, Req::Unknown);
}

/// Malformed input is a `BadFrame` (the session closes with "bad request"), never a panic.
#[test]
fn malformed_frames_are_refused() {
    for bad in [
        &b""[..],
        b"\n\n",
        b"{",
        b"[1,2]",
        br#"{"id":"x"}"#,
        br#"{"id":1,"method":1,"params":[1]}"#,
        br#"{"id":1,"method":1,"params":"s"}"#,
        br#"{"id":1,"method":-1}"#,
        br#"{"id":1,"method":1,"params":{"channel":5}}"#,
    ] {
        assert!(decode(Format::Json, bad).is_err(), "{}", String::from_utf8_lossy(bad));
    }
    for bad in [&b""[..], &[0x80][..], &[10, 1, 2][..], &pb_command(1, 1, &[0xff, 0xff, 0xff])] {
        assert!(decode(Format::Protobuf, bad).is_err(), "{bad:?}");
    }
    // Arbitrary bytes: refused or decoded, never a panic.
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    for len in 0..400 {
        let bytes: Vec<u8> = (0..len % 64)
            .map(|_| {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                seed as u8
            })
            .collect();
        let _ = decode(Format::Protobuf, &bytes);
        let _ = decode(Format::Json, &bytes);
        let _ = is_v1(Format::Protobuf, &bytes);
        let _ = is_v1(Format::Json, &bytes);
    }
}

#[test]
fn encodes_replies_and_pushes_in_json() {
    let mut out = Vec::new();
    encode_reply(Format::Json, 3, &Ok(ReplyBody::Ping), &mut out);
    assert_eq!(out, br#"{"id":3,"result":{}}"#);
    out.clear();
    encode_reply(Format::Json, 4, &Err(ApiError::PERMISSION_DENIED), &mut out);
    assert_eq!(out, br#"{"id":4,"error":{"code":103,"message":"permission denied"}}"#);
    out.clear();
    let info = ClientInfo { user: "u".into(), client: "c".into(), conn_info: None, chan_info: None };
    let p = Publication {
        data: Payload { bytes: Bytes::from_static(b"{\"a\":1}"), binary: false },
        offset: 5,
        info: None,
        tags: None,
        key: None,
        removed: false,
    };
    encode_push(Format::Json, "ch", &PushBody::Pub(p), &mut out);
    assert_eq!(out, br#"{"result":{"channel":"ch","data":{"data":{"a":1},"offset":5}}}"#);
    out.clear();
    encode_push(Format::Json, "ch", &PushBody::Join(info), &mut out);
    assert_eq!(out, br#"{"result":{"type":1,"channel":"ch","data":{"info":{"user":"u","client":"c"}}}}"#);
    out.clear();
    encode_push(
        Format::Json,
        "ch",
        &PushBody::Unsubscribe { code: 2500, reason: "insufficient state".into() },
        &mut out,
    );
    assert_eq!(out, br#"{"result":{"type":3,"channel":"ch","data":{"resubscribe":true}}}"#);
    out.clear();
    let r = SubscribeResult { recoverable: true, epoch: "e".into(), offset: 2, ..Default::default() };
    encode_reply(Format::Json, 2, &Ok(ReplyBody::Subscribe(r)), &mut out);
    assert_eq!(out, br#"{"id":2,"result":{"recoverable":true,"epoch":"e","offset":2}}"#);
}

#[test]
fn encodes_protobuf_replies_with_result_bytes() {
    let mut out = Vec::new();
    encode_reply(Format::Protobuf, 7, &Ok(ReplyBody::PresenceStats { num_clients: 2, num_users: 1 }), &mut out);
    // Reply { id: 7, result: PresenceStatsResult { 2, 1 } }
    assert_eq!(out, vec![8, 8, 7, 0x1a, 4, 8, 2, 16, 1]);
    out.clear();
    encode_push(Format::Protobuf, "c", &PushBody::Message { data: Bytes::from_static(b"x") }, &mut out);
    // Reply { result: Push { type: 4, data: Message { data: "x" } } }
    assert_eq!(out, vec![9, 0x1a, 7, 8, 4, 0x1a, 3, 10, 1, b'x']);
}

#[test]
fn disconnects_carry_that_eras_codes() {
    assert_eq!(close_of(&Disconnect::INVALID_TOKEN), (3002, r#"{"reason":"invalid token","reconnect":false}"#.into()));
    assert_eq!(close_of(&Disconnect::BAD_REQUEST), (3003, r#"{"reason":"bad request","reconnect":false}"#.into()));
    assert_eq!(close_of(&Disconnect::SHUTDOWN), (3001, r#"{"reason":"shutdown","reconnect":true}"#.into()));
    assert_eq!(close_of(&Disconnect::FORCE_DISCONNECT).0, 3012);
    assert_eq!(close_of(&Disconnect::new(4100, "custom")), (4100, r#"{"reason":"custom","reconnect":true}"#.into()));
    assert_eq!(close_of(&Disconnect::new(1000, "")), (1000, String::new()));
}
