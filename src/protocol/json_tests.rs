use std::sync::Arc;

use super::*;

#[test]
fn decodes_js_first_frame() {
    let frame = b"{\"connect\":{\"token\":\"t\",\"name\":\"js\"},\"id\":1}\n{\"subscribe\":{\"channel\":\"news\",\"recover\":true,\"offset\":5,\"epoch\":\"ab\"},\"id\":2}";
    let cmds = decode(frame).unwrap();
    assert_eq!(cmds.len(), 2);
    assert!(matches!(&cmds[0].req, Req::Connect(c) if c.token == "t" && c.name == "js"));
    assert!(matches!(&cmds[1].req, Req::Subscribe(s) if s.channel == "news" && s.recover && s.offset == 5));
    assert_eq!(decode(b"{}").unwrap()[0].req, Req::Pong);
    assert_eq!(decode(b"{\"id\":4}").unwrap()[0].req, Req::Unknown);
    assert!(decode(b"").is_err());
    assert!(decode(b"{nope").is_err());
}

#[test]
fn decodes_tags_filter() {
    let frame = br#"{"id":2,"subscribe":{"channel":"c","tf":{"op":"and","nodes":[{"key":"a","cmp":"eq","val":"1"},{"op":"not","nodes":[{"key":"b","cmp":"in","vals":["x","y"]}]},null],"key":null,"extra":5}}}"#;
    let Req::Subscribe(s) = decode(frame).unwrap().remove(0).req else { panic!() };
    let leaf = |key: &str, cmp: &str, val: &str, vals: &[&str]| crate::filter::FilterNode {
        key: key.into(),
        cmp: cmp.into(),
        val: val.into(),
        vals: vals.iter().map(|v| v.to_string()).collect(),
        ..Default::default()
    };
    let node = |op: &str, nodes| crate::filter::FilterNode { op: op.into(), nodes, ..Default::default() };
    assert_eq!(
        s.tf,
        Some(node(
            "and",
            vec![leaf("a", "eq", "1", &[]), node("not", vec![leaf("b", "in", "", &["x", "y"])]), Default::default()]
        ))
    );
    let Req::Subscribe(s) = decode(br#"{"id":2,"subscribe":{"channel":"c","tf":null}}"#).unwrap().remove(0).req else {
        panic!()
    };
    assert_eq!(s.tf, None);
    assert!(decode(br#"{"id":2,"subscribe":{"channel":"c","tf":{"op":5}}}"#).is_err());
    assert!(decode(br#"{"id":2,"subscribe":{"channel":"c","tf":"x"}}"#).is_err());
    // Nesting past serde_json's recursion limit is a bad frame, not a stack overflow.
    let deep = format!(
        r#"{{"id":2,"subscribe":{{"channel":"c","tf":{}{}}}}}"#,
        r#"{"op":"not","nodes":["#.repeat(5000),
        "]}".repeat(5000)
    );
    assert!(decode(deep.as_bytes()).is_err());
}

fn reply_text(r: Result<ReplyBody, ApiError>) -> String {
    let mut out = Vec::new();
    encode_reply(1, &r, &mut out);
    String::from_utf8(out).unwrap()
}

fn push_text(channel: &str, p: PushBody) -> String {
    let mut out = Vec::new();
    encode_push(channel, &p, &mut out);
    String::from_utf8(out).unwrap()
}

fn data(json: &'static str) -> crate::model::Payload {
    crate::model::Payload { bytes: Bytes::from_static(json.as_bytes()), binary: false }
}

/// Every reply in its empty form, byte for byte as Centrifugo's encoder writes it: fields
/// are omitted when empty except the ones its protocol always writes.
#[test]
#[rustfmt::skip]
fn empty_replies_match_centrifugo() {
    let empty = || Some(Bytes::new());
    let pos = |offset, epoch: &str| StreamPosition { offset, epoch: epoch.into() };
    let one = Publication { offset: 3, data: data("{\"a\":1}"), info: None, tags: None, key: None, removed: false };
    let cases: Vec<(Result<ReplyBody, ApiError>, &str)> = vec![
        (Ok(ReplyBody::Connect(ConnectResult::default())), r#"{"id":1,"connect":{}}"#),
        (Ok(ReplyBody::Connect(ConnectResult { data: empty(), ..Default::default() })), r#"{"id":1,"connect":{}}"#),
        (Ok(ReplyBody::Subscribe(SubscribeResult::default())), r#"{"id":1,"subscribe":{}}"#),
        (Ok(ReplyBody::Subscribe(SubscribeResult { data: empty(), ..Default::default() })), r#"{"id":1,"subscribe":{}}"#),
        (Ok(ReplyBody::Unsubscribe), r#"{"id":1,"unsubscribe":{}}"#),
        (Ok(ReplyBody::Publish), r#"{"id":1,"publish":{}}"#),
        (Ok(ReplyBody::Presence(vec![])), r#"{"id":1,"presence":{"presence":{}}}"#),
        (Ok(ReplyBody::PresenceStats { num_clients: 0, num_users: 0 }),
         r#"{"id":1,"presence_stats":{"num_clients":0,"num_users":0}}"#),
        (Ok(ReplyBody::PresenceStats { num_clients: 2, num_users: 1 }),
         r#"{"id":1,"presence_stats":{"num_clients":2,"num_users":1}}"#),
        (Ok(ReplyBody::History { publications: vec![], position: pos(0, "") }),
         r#"{"id":1,"history":{"publications":[],"epoch":"","offset":0}}"#),
        (Ok(ReplyBody::History { publications: vec![], position: pos(7, "abcd") }),
         r#"{"id":1,"history":{"publications":[],"epoch":"abcd","offset":7}}"#),
        (Ok(ReplyBody::History { publications: vec![one], position: pos(3, "abcd") }),
         r#"{"id":1,"history":{"publications":[{"data":{"a":1},"offset":3}],"epoch":"abcd","offset":3}}"#),
        (Ok(ReplyBody::Ping), r#"{"id":1,"ping":{}}"#),
        (Ok(ReplyBody::Rpc { data: None }), r#"{"id":1,"rpc":{}}"#),
        (Ok(ReplyBody::Rpc { data: empty() }), r#"{"id":1,"rpc":{}}"#),
        (Ok(ReplyBody::Refresh { client: String::new(), version: String::new(), expires: false, ttl: 0 }),
         r#"{"id":1,"refresh":{}}"#),
        (Ok(ReplyBody::SubRefresh { expires: false, ttl: 0 }), r#"{"id":1,"sub_refresh":{}}"#),
        (Err(ApiError::PERMISSION_DENIED), r#"{"id":1,"error":{"code":103,"message":"permission denied"}}"#),
        (Err(ApiError::INTERNAL), r#"{"id":1,"error":{"code":100,"message":"internal server error","temporary":true}}"#),
    ];
    for (reply, want) in cases {
        assert_eq!(reply_text(reply.clone()), want, "{reply:?}");
    }
}

/// Every push in its empty form, as Centrifugo's encoder writes it.
#[test]
#[rustfmt::skip]
fn empty_pushes_match_centrifugo() {
    let nobody = ClientInfo::default();
    let bare = Publication { offset: 0, data: data(""), info: None, tags: Some(Arc::from(vec![])), key: None, removed: false };
    let cases: Vec<(PushBody, &str)> = vec![
        (PushBody::Pub(bare), r#"{"push":{"channel":"c","pub":{}}}"#),
        (PushBody::Pub(Publication { offset: 0, data: data("null"), info: None, tags: None, key: None, removed: false }),
         r#"{"push":{"channel":"c","pub":{"data":null}}}"#),
        (PushBody::Join(nobody.clone()), r#"{"push":{"channel":"c","join":{"info":{"user":"","client":""}}}}"#),
        (PushBody::Leave(nobody), r#"{"push":{"channel":"c","leave":{"info":{"user":"","client":""}}}}"#),
        (PushBody::Unsubscribe { code: 0, reason: String::new() }, r#"{"push":{"channel":"c","unsubscribe":{}}}"#),
        (PushBody::Subscribe { recoverable: false, epoch: String::new(), offset: 0, positioned: false, data: None },
         r#"{"push":{"channel":"c","subscribe":{}}}"#),
        (PushBody::Message { data: Bytes::new() }, r#"{"push":{"message":{}}}"#),
        (PushBody::Refresh { expires: false, ttl: 0 }, r#"{"push":{"refresh":{}}}"#),
        (PushBody::Disconnect { code: 0, reason: String::new(), reconnect: false }, r#"{"push":{"disconnect":{}}}"#),
        (PushBody::Disconnect { code: 3001, reason: "shutdown".into(), reconnect: true },
         r#"{"push":{"disconnect":{"code":3001,"reason":"shutdown","reconnect":true}}}"#),
    ];
    for (push, want) in cases {
        assert_eq!(push_text("c", push.clone()), want, "{push:?}");
    }
}

#[test]
fn encodes_replies_and_pushes() {
    let mut out = Vec::new();
    let c = ConnectResult { client: "c1".into(), version: "1 OSS".into(), ping: 25, pong: true, ..Default::default() };
    encode_reply(1, &Ok(ReplyBody::Connect(c)), &mut out);
    assert_eq!(
        String::from_utf8(out).unwrap(),
        r#"{"id":1,"connect":{"client":"c1","version":"1 OSS","ping":25,"pong":true}}"#
    );
    let mut out = Vec::new();
    let c = ConnectResult { client: "c1".into(), session: "s".into(), time: 1_700_000_000_123, ..Default::default() };
    encode_reply(1, &Ok(ReplyBody::Connect(c.clone())), &mut out);
    assert_eq!(
        String::from_utf8(out).unwrap(),
        r#"{"id":1,"connect":{"client":"c1","session":"s","time":1700000000123}}"#
    );
    let mut out = Vec::new();
    encode_bare_push("", &PushBody::Connect(Box::new(c)), &mut out);
    assert_eq!(String::from_utf8(out).unwrap(), r#"{"connect":{"client":"c1","session":"s","time":1700000000123}}"#);
    let mut out = Vec::new();
    encode_push("news", &PushBody::Unsubscribe { code: 2000, reason: "server unsubscribe".into() }, &mut out);
    assert_eq!(
        String::from_utf8(out).unwrap(),
        r#"{"push":{"channel":"news","unsubscribe":{"code":2000,"reason":"server unsubscribe"}}}"#
    );
    let mut out = Vec::new();
    encode_reply(3, &Err(ApiError::PERMISSION_DENIED), &mut out);
    assert_eq!(String::from_utf8(out).unwrap(), r#"{"id":3,"error":{"code":103,"message":"permission denied"}}"#);
}
