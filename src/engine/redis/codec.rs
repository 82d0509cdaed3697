//! What Gyre stores in and sends through Redis: publications and client infos as protobuf
//! (Centrifugo's field numbers, so the stored shapes read the same), PUB/SUB payload framing
//! (`__p1:<offset>:<epoch>__`, `__j__`, `__l__`), and the key names.

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::Bytes;
use prost::Message;

use crate::model::{ClientInfo, Payload, Publication, StreamPosition};
use crate::protocol::pb::proto::ClientInfo as PbClientInfo;

/// A publication as stored: the client protocol's `Publication` (same field numbers, so
/// Centrifugo's readers see the same shape) plus one field of Gyre's own, which is why it is
/// declared here rather than taken from `protocol::pb::proto`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct PbPublication {
    #[prost(bytes = "bytes", tag = "4")]
    pub data: Bytes,
    #[prost(message, optional, tag = "5")]
    pub info: Option<PbClientInfo>,
    #[prost(uint64, tag = "6")]
    pub offset: u64,
    #[prost(btree_map = "string, string", tag = "7")]
    pub tags: BTreeMap<String, String>,
    /// The data came from base64 (protobuf clients, `b64data`) and may not be JSON. A field
    /// Centrifugo does not define; other readers skip it.
    /// Map channels: the key the publication sets or removes (the client protocol's field).
    #[prost(string, tag = "11")]
    pub key: String,
    #[prost(bool, tag = "12")]
    pub removed: bool,
    #[prost(bool, tag = "64")]
    pub binary: bool,
    /// Published with `delta`: receiving nodes make fossil patches against the previous
    /// publication they delivered (see `crate::delta`). Gyre's own field, like `binary`.
    #[prost(bool, tag = "65")]
    pub delta: bool,
}

pub(crate) fn info_to_pb(i: &ClientInfo) -> PbClientInfo {
    PbClientInfo {
        user: i.user.to_string(),
        client: i.client.to_string(),
        conn_info: i.conn_info.clone().unwrap_or_default(),
        chan_info: i.chan_info.clone().unwrap_or_default(),
    }
}

pub(crate) fn info_from_pb(p: PbClientInfo) -> ClientInfo {
    ClientInfo {
        user: p.user.into(),
        client: p.client.into(),
        conn_info: (!p.conn_info.is_empty()).then_some(p.conn_info),
        chan_info: (!p.chan_info.is_empty()).then_some(p.chan_info),
    }
}

pub fn encode_info(i: &ClientInfo) -> Bytes {
    info_to_pb(i).encode_to_vec().into()
}

pub fn decode_info(b: &[u8]) -> Option<ClientInfo> {
    PbClientInfo::decode(b).ok().map(info_from_pb)
}

/// A publication without its offset (Redis assigns it).
pub fn encode_publication(
    data: &Payload,
    info: Option<&ClientInfo>,
    tags: Option<&crate::model::Tags>,
    delta: bool,
) -> Bytes {
    let p = PbPublication {
        delta,
        data: data.bytes.clone(),
        info: info.map(info_to_pb),
        offset: 0,
        tags: tags.map(|t| t.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()).unwrap_or_default(),
        binary: data.binary,
        key: String::new(),
        removed: false,
    };
    p.encode_to_vec().into()
}

/// A change of a map channel's key, without its offset (Redis assigns it).
pub fn encode_map_publication(p: &crate::model::Publish, key: &str, removed: bool) -> Bytes {
    let m = PbPublication {
        delta: p.delta && !removed,
        data: p.data.bytes.clone(),
        info: p.info.as_deref().map(info_to_pb),
        offset: 0,
        tags: p
            .tags
            .as_ref()
            .map(|t| t.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect())
            .unwrap_or_default(),
        binary: p.data.binary,
        key: key.to_string(),
        removed,
    };
    m.encode_to_vec().into()
}

/// Decodes a stored publication; `data` stays a slice of `b` (no copy).
pub fn decode_publication(b: Bytes, offset: u64) -> Option<Publication> {
    decode_publication_delta(b, offset).map(|(p, _)| p)
}

/// [`decode_publication`] and whether it was published with `delta`.
fn decode_publication_delta(b: Bytes, offset: u64) -> Option<(Publication, bool)> {
    let p = PbPublication::decode(b).ok()?;
    let delta = p.delta;
    let tags: Option<crate::model::Tags> = (!p.tags.is_empty())
        .then(|| p.tags.into_iter().map(|(k, v)| (k.into_boxed_str(), v.into_boxed_str())).collect::<Vec<_>>().into());
    let publication = Publication {
        offset: if offset > 0 { offset } else { p.offset },
        data: Payload { bytes: p.data, binary: p.binary },
        info: p.info.map(|i| Arc::new(info_from_pb(i))),
        tags,
        key: (!p.key.is_empty()).then(|| Arc::from(p.key)),
        removed: p.removed,
    };
    Some((publication, delta))
}

/// A message received on a channel's PUB/SUB topic.
#[derive(Debug, PartialEq)]
pub enum ChannelMessage {
    /// A publication, its stream position (with history) and whether it was published with
    /// `delta`.
    Publication(Publication, Option<StreamPosition>, bool),
    Join(ClientInfo),
    Leave(ClientInfo),
}

/// The history-publication prefix: `__p1:<offset>:<epoch>__`.
pub fn publication_prefix(offset: u64, epoch: &str) -> String {
    format!("__p1:{offset}:{epoch}__")
}

pub fn join_payload(i: &ClientInfo) -> Bytes {
    let mut v = b"__j__".to_vec();
    v.extend_from_slice(&encode_info(i));
    v.into()
}

pub fn leave_payload(i: &ClientInfo) -> Bytes {
    let mut v = b"__l__".to_vec();
    v.extend_from_slice(&encode_info(i));
    v.into()
}

pub fn decode_channel_message(payload: &Bytes) -> Option<ChannelMessage> {
    if let Some(rest) = payload.strip_prefix(b"__p1:") {
        let end = memchr::memmem::find(rest, b"__")?;
        let head = std::str::from_utf8(&rest[..end]).ok()?;
        let (offset, epoch) = head.split_once(':')?;
        let offset: u64 = offset.parse().ok()?;
        let body = payload.slice(5 + end + 2..);
        let (p, delta) = decode_publication_delta(body, offset)?;
        return Some(ChannelMessage::Publication(p, Some(StreamPosition { offset, epoch: epoch.into() }), delta));
    }
    if let Some(rest) = payload.strip_prefix(b"__j__") {
        return decode_info(rest).map(ChannelMessage::Join);
    }
    if let Some(rest) = payload.strip_prefix(b"__l__") {
        return decode_info(rest).map(ChannelMessage::Leave);
    }
    decode_publication_delta(payload.clone(), 0).map(|(p, delta)| ChannelMessage::Publication(p, None, delta))
}

/// Key and topic names under the configured prefix.
#[derive(Debug, Clone)]
pub struct Keys {
    prefix: String,
    /// The prefix of map channels' keys (`map_broker.redis.prefix`, else `prefix`).
    map_prefix: String,
    /// Redis Cluster: the channel is every key's hash tag (`<prefix>.stream.{<ch>}`), as in
    /// Centrifugo, so a channel's keys share a slot.
    cluster: bool,
}

impl Keys {
    pub fn new(prefix: &str, cluster: bool) -> Self {
        Keys { prefix: prefix.to_string(), map_prefix: prefix.to_string(), cluster }
    }

    /// Map channels' keys under `prefix` instead.
    pub fn with_map_prefix(mut self, prefix: &str) -> Self {
        self.map_prefix = prefix.to_string();
        self
    }
    fn join(&self, part: &str, ch: &str) -> Bytes {
        self.key(&self.prefix, '.', part, ch)
    }
    /// `<prefix><sep><part><sep><channel>`, the channel as hash tag in a Redis Cluster.
    fn key(&self, prefix: &str, sep: char, part: &str, ch: &str) -> Bytes {
        let mut s = String::with_capacity(prefix.len() + part.len() + ch.len() + 4);
        s.push_str(prefix);
        s.push(sep);
        s.push_str(part);
        s.push(sep);
        if self.cluster {
            s.push('{');
            s.push_str(ch);
            s.push('}');
        } else {
            s.push_str(ch);
        }
        Bytes::from(s)
    }
    pub fn client_topic(&self, ch: &str) -> Bytes {
        self.join("client", ch)
    }
    /// The channel name of a client topic, if `topic` is one.
    pub fn channel_of<'a>(&self, topic: &'a [u8]) -> Option<&'a str> {
        let mut rest = topic.strip_prefix(self.prefix.as_bytes())?.strip_prefix(b".client.")?;
        if self.cluster {
            rest = rest.strip_prefix(b"{")?.strip_suffix(b"}")?;
        }
        std::str::from_utf8(rest).ok()
    }
    pub fn stream(&self, ch: &str) -> Bytes {
        self.join("stream", ch)
    }
    pub fn stream_meta(&self, ch: &str) -> Bytes {
        self.join("stream.meta", ch)
    }
    pub fn result(&self, ch: &str, key: &str) -> Bytes {
        self.result_under(&self.prefix, ch, key)
    }
    /// A map channel's idempotency result (under the map prefix).
    pub fn map_result(&self, ch: &str, key: &str) -> Bytes {
        self.result_under(&self.map_prefix, ch, key)
    }
    fn result_under(&self, prefix: &str, ch: &str, key: &str) -> Bytes {
        if self.cluster {
            Bytes::from(format!("{prefix}.result.{{{ch}}}.{key}"))
        } else {
            Bytes::from(format!("{prefix}.result.{ch}.{key}"))
        }
    }
    /// A key of a map channel, in the layout of Centrifugo's Redis map broker:
    /// `<prefix>:<part>:<channel>` (Redis Cluster, where Centrifugo's map broker does not run:
    /// `<prefix>:<part>:{<channel>}`, so a channel's keys share a slot).
    fn map_key(&self, part: &str, ch: &str) -> Bytes {
        self.key(&self.map_prefix, ':', part, ch)
    }
    /// A map channel's change stream (entries `e` epoch, `d` publication; ids are offsets).
    pub fn map_stream(&self, ch: &str) -> Bytes {
        self.map_key("stream", ch)
    }
    /// A map channel's stream meta (`e` epoch, `s` top offset).
    pub fn map_meta(&self, ch: &str) -> Bytes {
        self.map_key("meta", ch)
    }
    /// A map channel's state: key → `<offset>:<epoch>:<publication>`.
    pub fn map_state(&self, ch: &str) -> Bytes {
        self.map_key("state", ch)
    }
    /// A map channel's keys in lexical order (all scored 0; pages follow it).
    pub fn map_order(&self, ch: &str) -> Bytes {
        self.map_key("state:order", ch)
    }
    /// A map channel's key expiries (unix ms).
    pub fn map_expire(&self, ch: &str) -> Bytes {
        self.map_key("state:expire", ch)
    }
    /// A map channel's state meta: `epoch` (of the stream the state belongs to),
    /// `updated_at`, and each key's version as `v:<key>` / `ve:<key>`.
    pub fn map_state_meta(&self, ch: &str) -> Bytes {
        self.map_key("state:meta", ch)
    }
    /// The map channels with keys that expire, scored by the earliest expiry (one key for
    /// the whole Redis shard: the sweep reads it with its own command).
    pub fn map_cleanup(&self) -> Bytes {
        Bytes::from(format!("{}:cleanup:channels", self.map_prefix))
    }
    pub fn presence_data(&self, ch: &str) -> Bytes {
        self.join("presence.data", ch)
    }
    pub fn presence_expire(&self, ch: &str) -> Bytes {
        self.join("presence.expire", ch)
    }
    pub fn control(&self) -> Bytes {
        Bytes::from(format!("{}.control", self.prefix))
    }
    pub fn node(&self, uid: &str) -> Bytes {
        Bytes::from(format!("{}.node.{uid}", self.prefix))
    }
}

/// FNV-1a 64 of a channel name.
pub fn fnv1a64(s: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in s {
        h ^= b as u64;
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// Jump consistent hash (Lamping & Veach): the bucket of `key` among `n`.
pub fn jump_hash(mut key: u64, n: usize) -> usize {
    let (mut b, mut j): (i64, i64) = (-1, 0);
    while j < n as i64 {
        b = j;
        key = key.wrapping_mul(2_862_933_555_777_941_757).wrapping_add(1);
        j = (((b + 1) as f64) * ((1u64 << 31) as f64 / (((key >> 33) + 1) as f64))) as i64;
    }
    b.max(0) as usize
}

/// The Redis shard of a channel: stable across nodes and restarts.
pub fn shard_of(channel: &str, shards: usize) -> usize {
    if shards <= 1 {
        0
    } else {
        jump_hash(fnv1a64(channel.as_bytes()), shards)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn publication_round_trip_through_pubsub_framing() {
        let info = ClientInfo {
            user: "u".into(),
            client: "c".into(),
            conn_info: Some(Bytes::from_static(b"{}")),
            chan_info: None,
        };
        let tags: crate::model::Tags = vec![("a".into(), "1".into())].into();
        let data = Payload { bytes: Bytes::from_static(b"{\"x\":1}"), binary: false };
        let body = encode_publication(&data, Some(&info), Some(&tags), false);
        let mut framed = publication_prefix(7, "ep").into_bytes();
        framed.extend_from_slice(&body);
        match decode_channel_message(&Bytes::from(framed)).unwrap() {
            ChannelMessage::Publication(p, pos, _) => {
                assert_eq!(p.offset, 7);
                assert_eq!(p.data, data);
                assert_eq!(p.info.as_deref(), Some(&info));
                assert_eq!(p.tags.as_deref().map(|t| t.len()), Some(1));
                assert_eq!(pos, Some(StreamPosition { offset: 7, epoch: "ep".into() }));
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(decode_channel_message(&join_payload(&info)), Some(ChannelMessage::Join(info.clone())));
        assert_eq!(decode_channel_message(&leave_payload(&info)), Some(ChannelMessage::Leave(info)));
        let plain = decode_channel_message(&body).unwrap();
        assert!(decode_publication(Bytes::from_static(b"\xff\xff"), 0).is_none());
        assert!(matches!(plain, ChannelMessage::Publication(p, None, false) if p.offset == 0));
    }

    #[test]
    fn jump_hash_is_stable_and_spreads() {
        // Reference values of the published algorithm.
        assert_eq!(jump_hash(0, 1), 0);
        assert_eq!(jump_hash(1, 1), 0);
        let mut counts = [0usize; 3];
        for i in 0..3000 {
            counts[shard_of(&format!("ch-{i}"), 3)] += 1;
        }
        assert!(counts.iter().all(|&c| c > 800), "{counts:?}");
        assert_eq!(shard_of("news", 2), shard_of("news", 2));
        assert_eq!(fnv1a64(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a64(b"a"), 0xaf63_dc4c_8601_ec8c);
    }

    #[test]
    fn keys_and_topics() {
        let c = Keys::new("centrifugo", true);
        assert_eq!(&c.stream("news")[..], b"centrifugo.stream.{news}");
        assert_eq!(&c.stream_meta("news")[..], b"centrifugo.stream.meta.{news}");
        assert_eq!(&c.result("news", "k1")[..], b"centrifugo.result.{news}.k1");
        assert_eq!(&c.presence_data("news")[..], b"centrifugo.presence.data.{news}");
        assert_eq!(&c.client_topic("a:b")[..], b"centrifugo.client.{a:b}");
        assert_eq!(&c.map_state_meta("m:a")[..], b"centrifugo:state:meta:{m:a}");
        assert_eq!(c.channel_of(b"centrifugo.client.{a:b}"), Some("a:b"));
        let k = Keys::new("centrifugo", false);
        assert_eq!(&k.client_topic("news")[..], b"centrifugo.client.news");
        assert_eq!(k.channel_of(b"centrifugo.client.a:b"), Some("a:b"));
        assert_eq!(k.channel_of(b"centrifugo.control"), None);
        assert_eq!(&k.stream_meta("x")[..], b"centrifugo.stream.meta.x");
        assert_eq!(&k.presence_expire("x")[..], b"centrifugo.presence.expire.x");
        // Map channels: Centrifugo's map broker layout.
        assert_eq!(&k.map_stream("m:a")[..], b"centrifugo:stream:m:a");
        assert_eq!(&k.map_meta("m:a")[..], b"centrifugo:meta:m:a");
        assert_eq!(&k.map_state("m:a")[..], b"centrifugo:state:m:a");
        assert_eq!(&k.map_order("m:a")[..], b"centrifugo:state:order:m:a");
        assert_eq!(&k.map_expire("m:a")[..], b"centrifugo:state:expire:m:a");
        assert_eq!(&k.map_state_meta("m:a")[..], b"centrifugo:state:meta:m:a");
        assert_eq!(&k.map_cleanup()[..], b"centrifugo:cleanup:channels");
        assert_eq!(&k.result("m:a", "once")[..], b"centrifugo.result.m:a.once");
        let m = Keys::new("centrifugo", false).with_map_prefix("mb");
        assert_eq!(&m.map_state("m:a")[..], b"mb:state:m:a");
        assert_eq!(&m.map_result("m:a", "once")[..], b"mb.result.m:a.once");
        assert_eq!(&m.map_cleanup()[..], b"mb:cleanup:channels");
        assert_eq!(&m.stream("x")[..], b"centrifugo.stream.x");
    }
}
