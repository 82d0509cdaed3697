//! A `map` subscriber's state sync, in JSON or protobuf: subscribe with `type` 1 and phase 2,
//! the later pages naming the first page's `offset`/`epoch` and the previous page's `cursor`,
//! until the last page's reply makes the subscription live; every key received is checked off
//! against the seeded ones.
//!
//! A reply is read as far as the sync needs it — its id, error, disconnect push, and the
//! subscribe result's phase, cursor, position and entry keys — into the same types from both
//! formats: serde reads them from JSON by name, prost from protobuf (`client.proto`'s
//! `Reply`, `SubscribeResult` and `Publication`) by field number, skipping the values.

use std::cell::RefCell;

use gyre::protocol::pb::proto;
use prost::Message as _;
use serde::Deserialize;
use serde_json::json;

use crate::map::MapOpts;
use crate::payload::Track;
use crate::stats::Local;
use crate::target::ClientErr;
use crate::ws::{error_reply, pb_messages, WsClient};
use crate::WireFormat;

/// The keys a subscriber received: one bit per seeded key.
pub struct KeySet {
    bits: Vec<u64>,
    pub distinct: usize,
    /// State entries of a key already received, and keys that were not seeded.
    pub repeated: u64,
    pub foreign: u64,
}

impl KeySet {
    pub fn new(keys: usize) -> KeySet {
        KeySet { bits: vec![0; keys.div_ceil(64)], distinct: 0, repeated: 0, foreign: 0 }
    }

    fn index(&self, key: &str) -> Option<usize> {
        let i: usize = key.strip_prefix('k')?.parse().ok()?;
        (i < self.bits.len() * 64 && key.len() == 1 + itoa::Buffer::new().format(i).len()).then_some(i)
    }

    /// Records a key; `state`: from a state page, where each key comes once.
    pub fn add(&mut self, key: &str, state: bool, seeded: usize) {
        let Some(i) = self.index(key).filter(|&i| i < seeded) else {
            self.foreign += 1;
            return;
        };
        let (w, b) = (i / 64, 1u64 << (i % 64));
        if self.bits[w] & b == 0 {
            self.bits[w] |= b;
            self.distinct += 1;
        } else if state {
            self.repeated += 1;
        }
    }
}

/// One reply (`Reply`), as far as the sync reads it.
#[derive(Deserialize, prost::Message)]
#[serde(default)]
struct Envelope {
    #[prost(uint32, tag = "1")]
    id: u32,
    #[prost(message, optional, tag = "2")]
    error: Option<ErrorBody>,
    #[prost(message, optional, tag = "4")]
    push: Option<Push>,
    #[prost(message, optional, tag = "6")]
    subscribe: Option<Page>,
}

#[derive(Deserialize, prost::Message)]
#[serde(default)]
struct ErrorBody {
    #[prost(uint32, tag = "1")]
    code: u32,
    #[prost(string, tag = "2")]
    message: String,
}

#[derive(Deserialize, prost::Message)]
#[serde(default)]
struct Push {
    #[prost(message, optional, tag = "11")]
    disconnect: Option<Disconnect>,
}

#[derive(Deserialize, prost::Message)]
#[serde(default)]
struct Disconnect {
    #[prost(uint32, tag = "1")]
    code: u32,
    #[prost(string, tag = "2")]
    reason: String,
}

/// A subscribe result (`SubscribeResult`): a state page (phase 2) or the live reply.
#[derive(Deserialize, prost::Message)]
#[serde(default)]
struct Page {
    #[prost(string, tag = "6")]
    epoch: String,
    #[prost(message, repeated, tag = "7")]
    publications: Vec<Entry>,
    #[prost(uint64, tag = "9")]
    offset: u64,
    #[prost(int32, tag = "16")]
    phase: i32,
    #[prost(string, tag = "17")]
    cursor: String,
    #[prost(message, repeated, tag = "18")]
    state: Vec<Entry>,
}

/// A state entry or publication (`Publication`): its key.
#[derive(Deserialize, prost::Message)]
#[serde(default)]
struct Entry {
    #[prost(string, tag = "11")]
    key: String,
}

/// Where the next state page starts: the previous page's cursor, the first page's position.
#[derive(Default)]
struct Next {
    cursor: String,
    offset: u64,
    epoch: String,
}

/// The subscribe command `id` asking for the page at `next` (the first one when its cursor is
/// empty), as one frame's payload.
fn page_request(format: WireFormat, o: &MapOpts, id: u32, next: &Next) -> Vec<u8> {
    match format {
        WireFormat::Json => {
            let mut sub = json!({"channel": o.channel, "type": 1, "phase": 2});
            if let Some(l) = o.page_size {
                sub["limit"] = json!(l);
            }
            if !next.cursor.is_empty() {
                (sub["cursor"], sub["offset"], sub["epoch"]) =
                    (json!(next.cursor), json!(next.offset), json!(next.epoch));
            }
            json!({"id": id, "subscribe": sub}).to_string().into_bytes()
        }
        WireFormat::Protobuf => {
            let mut sub = proto::SubscribeRequest {
                channel: o.channel.clone(),
                r#type: 1,
                phase: 2,
                limit: o.page_size.map_or(0, |l| l.min(i32::MAX as usize) as i32),
                ..Default::default()
            };
            if !next.cursor.is_empty() {
                (sub.cursor, sub.offset, sub.epoch) = (next.cursor.clone(), next.offset, next.epoch.clone());
            }
            let cmd = proto::Command { id, subscribe: Some(sub), ..Default::default() };
            let mut out = Vec::with_capacity(64 + o.channel.len() + next.cursor.len() + next.epoch.len());
            cmd.encode_length_delimited(&mut out).expect("Vec grows");
            out
        }
    }
}

/// The messages of a frame: `\n`-separated JSON objects, or varint-length-prefixed protobufs.
fn messages(format: WireFormat, data: &[u8]) -> Vec<&[u8]> {
    match format {
        WireFormat::Json => data.split(|&b| b == b'\n').filter(|l| !l.trim_ascii().is_empty()).collect(),
        WireFormat::Protobuf => pb_messages(data).collect(),
    }
}

/// A server ping: `{}`, or an empty protobuf message.
fn is_ping(format: WireFormat, msg: &[u8]) -> bool {
    match format {
        WireFormat::Json => msg.trim_ascii() == b"{}",
        WireFormat::Protobuf => msg.is_empty(),
    }
}

/// Reads one message of a frame: the reply to command `id` (`None`: something else).
fn page_of(format: WireFormat, msg: &[u8], id: u32) -> Result<Option<Page>, ClientErr> {
    let e = match format {
        WireFormat::Json => serde_json::from_slice::<Envelope>(msg)
            .map_err(|e| ClientErr::Io(format!("a reply that is not JSON ({e}): {}", snippet(msg))))?,
        WireFormat::Protobuf => Envelope::decode(msg)
            .map_err(|e| ClientErr::Io(format!("a reply that is not a protobuf Reply ({e}): {}", snippet(msg))))?,
    };
    if let Some(d) = e.push.and_then(|p| p.disconnect) {
        return Err(ClientErr::Closed(d.code.min(u16::MAX as u32) as u16, d.reason));
    }
    if e.id != id {
        return Ok(None);
    }
    if let Some(err) = e.error {
        return Err(error_reply("subscribe", &format!("{} {}", err.code, err.message)));
    }
    e.subscribe.map(Some).ok_or_else(|| ClientErr::Io(format!("a subscribe reply without a result: {}", snippet(msg))))
}

fn snippet(b: &[u8]) -> String {
    String::from_utf8_lossy(&b[..b.len().min(200)]).into_owned()
}

/// What one subscriber's sync came to.
pub struct Synced {
    pub pages: u64,
    pub keys: u64,
    pub set: KeySet,
}

/// Loads the state page by page until the reply that makes the subscription live. The frame
/// of that reply goes to `track`: the updates since the first page come in it, and pushes may
/// follow it there.
pub async fn sync(o: &MapOpts, local: &Local, c: &mut WsClient, track: &RefCell<Track>) -> Result<Synced, ClientErr> {
    let mut set = KeySet::new(o.keys);
    let mut next = Next::default();
    let (mut pages, mut keys) = (0u64, 0u64);
    for id in 2u32.. {
        c.send(&page_request(o.format, o, id, &next)).await?;
        let (page, frame) = loop {
            let Some(data) = c.next().await? else { continue };
            let mut found = None;
            for msg in messages(o.format, &data) {
                if is_ping(o.format, msg) {
                    c.pong().await?;
                } else if found.is_none() {
                    found = page_of(o.format, msg, id)?;
                }
            }
            if let Some(p) = found {
                break (p, data);
            }
        };
        pages += 1;
        keys += page.state.len() as u64;
        for e in &page.state {
            set.add(&e.key, true, o.keys);
        }
        if page.phase == 2 {
            if page.cursor.is_empty() {
                return Err(ClientErr::Io("a state page (phase 2) without a cursor".into()));
            }
            if next.epoch.is_empty() {
                (next.offset, next.epoch) = (page.offset, page.epoch);
            }
            next.cursor = page.cursor;
            continue;
        }
        keys += page.publications.len() as u64;
        for e in &page.publications {
            set.add(&e.key, false, o.keys);
        }
        local.deliver(&mut track.borrow_mut(), &frame);
        break;
    }
    Ok(Synced { pages, keys, set })
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use gyre::error::ApiError;
    use gyre::model::{Payload, Publication};
    use gyre::protocol::{pb, PushBody, ReplyBody, SubscribeResult};

    use super::*;
    use crate::payload;
    use crate::ws::{replies, Reply};

    fn opts(args: &[&str]) -> MapOpts {
        use clap::Parser;
        match crate::Cli::try_parse_from([&["gyre-bench", "map"], args].concat()).unwrap().scenario {
            crate::Scenario::Map(o) => o,
            _ => unreachable!(),
        }
    }

    fn entry(key: &str, offset: u64, data: &[u8]) -> Publication {
        Publication {
            offset,
            data: Payload { bytes: Bytes::copy_from_slice(data), binary: false },
            info: None,
            tags: None,
            key: Some(key.into()),
            removed: false,
        }
    }

    /// The single message of a protobuf frame the server wrote.
    fn only(frame: &[u8]) -> &[u8] {
        let m = messages(WireFormat::Protobuf, frame);
        assert_eq!(m.len(), 1);
        m[0]
    }

    #[test]
    fn key_set_counts_distinct_repeated_and_foreign() {
        let mut s = KeySet::new(100);
        for k in ["k0", "k99", "k5", "k5", "k100", "x1", "k05", "k"] {
            s.add(k, true, 100);
        }
        assert_eq!((s.distinct, s.repeated, s.foreign), (3, 1, 4));
        // A key again in the live reply's publications is an update, not a repeat.
        s.add("k0", false, 100);
        assert_eq!((s.distinct, s.repeated), (3, 1));
    }

    #[test]
    fn reads_state_pages_and_refusals() {
        let j = WireFormat::Json;
        let page = br#"{"id":3,"subscribe":{"type":1,"phase":2,"cursor":"k1","offset":7,"epoch":"e","state":[{"data":{"v":0},"offset":1,"key":"k0"},{"data":{"v":1},"offset":2,"key":"k1"}]}}"#;
        let p = page_of(j, page, 3).unwrap().unwrap();
        assert_eq!((p.phase, p.cursor.as_str(), p.offset, p.epoch.as_str(), p.state.len()), (2, "k1", 7, "e", 2));
        assert!(page_of(j, page, 4).unwrap().is_none(), "another command's reply");
        let live = br#"{"id":4,"subscribe":{"type":1,"recoverable":true,"offset":9,"publications":[{"data":{"t":1},"offset":8,"key":"k2"}]}}"#;
        let p = page_of(j, live, 4).unwrap().unwrap();
        assert_eq!((p.phase, p.publications.len()), (0, 1));
        let refused = br#"{"id":2,"error":{"code":107,"message":"bad request"}}"#;
        assert!(matches!(page_of(j, refused, 2), Err(ClientErr::Refused { code: 107, .. })));
        let gone = br#"{"push":{"disconnect":{"code":3001,"reason":"shutdown"}}}"#;
        assert!(matches!(page_of(j, gone, 2), Err(ClientErr::Closed(3001, r)) if r == "shutdown"));
        assert!(is_ping(j, b"{}") && !is_ping(j, page));
        assert_eq!(messages(j, b"{}\n{\"id\":1}\n").len(), 2);
    }

    #[test]
    fn reads_protobuf_state_pages_and_refusals() {
        let pbf = WireFormat::Protobuf;
        let mut frame = vec![0u8]; // a ping first
        let state = vec![entry("k0", 1, br#"{"v":0}"#), entry("k1", 2, br#"{"v":1}"#)];
        let res = SubscribeResult {
            kind: 1,
            phase: 2,
            cursor: "k1".into(),
            epoch: "e".into(),
            offset: 7,
            state,
            ..Default::default()
        };
        pb::encode_reply(3, &Ok(ReplyBody::Subscribe(res)), &mut frame);
        let m = messages(pbf, &frame);
        assert_eq!(m.len(), 2);
        assert!(is_ping(pbf, m[0]) && !is_ping(pbf, m[1]));
        let p = page_of(pbf, m[1], 3).unwrap().unwrap();
        assert_eq!((p.phase, p.cursor.as_str(), p.offset, p.epoch.as_str()), (2, "k1", 7, "e"));
        assert_eq!(p.state.iter().map(|e| e.key.as_str()).collect::<Vec<_>>(), ["k0", "k1"]);
        assert!(page_of(pbf, m[1], 4).unwrap().is_none(), "another command's reply");

        let mut update = Vec::new();
        payload::encode(&mut update, 5, 0, 1, 40);
        let live = SubscribeResult {
            kind: 1,
            recoverable: true,
            epoch: "e".into(),
            offset: 9,
            publications: vec![entry("k2", 8, &update)],
            ..Default::default()
        };
        let mut frame = Vec::new();
        pb::encode_reply(4, &Ok(ReplyBody::Subscribe(live)), &mut frame);
        let p = page_of(pbf, only(&frame), 4).unwrap().unwrap();
        assert_eq!((p.phase, p.cursor.as_str(), p.offset, p.state.len()), (0, "", 9, 0));
        assert_eq!(p.publications.iter().map(|e| e.key.as_str()).collect::<Vec<_>>(), ["k2"]);
        assert_eq!(payload::scan(&frame, |_| {}), 1, "the update in the live reply is counted");

        let mut frame = Vec::new();
        pb::encode_reply(2, &Err(ApiError::BAD_REQUEST), &mut frame);
        assert!(matches!(page_of(pbf, only(&frame), 2), Err(ClientErr::Refused { code: 107, .. })));
        let mut frame = Vec::new();
        let gone = PushBody::Disconnect { code: 3001, reason: "shutdown".into(), reconnect: true };
        pb::encode_push("", &gone, &mut frame);
        assert!(matches!(page_of(pbf, only(&frame), 2), Err(ClientErr::Closed(3001, r)) if r == "shutdown"));
        assert!(matches!(page_of(pbf, b"\xff\xff", 2), Err(ClientErr::Io(_))));
    }

    #[test]
    fn asks_for_pages_in_both_formats() {
        let o = opts(&["--channel", "map:x", "--page-size", "100"]);
        let next = Next { cursor: "k9".into(), offset: 7, epoch: "e".into() };
        let first: serde_json::Value =
            serde_json::from_slice(&page_request(WireFormat::Json, &o, 2, &Next::default())).unwrap();
        assert_eq!(first, json!({"id": 2, "subscribe": {"channel": "map:x", "type": 1, "phase": 2, "limit": 100}}));
        let later: serde_json::Value = serde_json::from_slice(&page_request(WireFormat::Json, &o, 3, &next)).unwrap();
        assert_eq!((&later["subscribe"]["cursor"], &later["subscribe"]["offset"]), (&json!("k9"), &json!(7)));
        assert_eq!(later["subscribe"]["epoch"], "e");

        let cmd = |b: Vec<u8>| proto::Command::decode_length_delimited(&b[..]).unwrap();
        let first = cmd(page_request(WireFormat::Protobuf, &o, 2, &Next::default()));
        let sub = first.subscribe.unwrap();
        assert_eq!((first.id, sub.channel.as_str(), sub.r#type, sub.phase, sub.limit), (2, "map:x", 1, 2, 100));
        assert_eq!((sub.cursor.as_str(), sub.offset, sub.epoch.as_str()), ("", 0, ""));
        let later = cmd(page_request(WireFormat::Protobuf, &opts(&[]), 3, &next));
        let sub = later.subscribe.unwrap();
        assert_eq!((later.id, sub.cursor.as_str(), sub.offset, sub.epoch.as_str(), sub.limit), (3, "k9", 7, "e", 0));
    }

    /// Live updates are `Push{pub}` with the key: the payload is found in the frame as in any
    /// publication, and the frame holds nothing else; a removal carries no payload and ends
    /// nothing.
    #[test]
    fn reads_live_protobuf_map_pushes() {
        let mut data = Vec::new();
        payload::encode(&mut data, 11, 0, 4, 60);
        let mut frame = Vec::new();
        pb::encode_push("map:x", &PushBody::Pub(entry("k3", 12, &data)), &mut frame);
        let mut seen = Vec::new();
        assert_eq!(payload::scan(&frame, |s| seen.push((s.t, s.p, s.s))), 1);
        assert_eq!(seen, [(11, 0, 4)]);
        assert!(replies(WireFormat::Protobuf, &frame).is_empty(), "nothing but the publication");
        let r = proto::Reply::decode(only(&frame)).unwrap();
        let p = r.push.unwrap().r#pub.unwrap();
        assert_eq!((p.offset, &p.data[..]), (12, &data[..]));

        let removal = Publication { removed: true, ..entry("k3", 13, b"") };
        let mut frame = Vec::new();
        pb::encode_push("map:x", &PushBody::Pub(removal), &mut frame);
        assert_eq!(payload::scan(&frame, |_| {}), 0);
        assert_eq!(replies(WireFormat::Protobuf, &frame), [Reply::Other]);
        assert!(Reply::Other.outcome().is_ok());
    }
}
