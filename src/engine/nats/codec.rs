//! What the NATS broker sends on a channel's subject: the client protocol's `Push` in
//! protobuf (Centrifugo's field numbers: `channel` 2, `pub` 4, `join` 5, `leave` 6; in the
//! publication `data` 4, `info` 5, `offset` 6, `tags` 7, `delta` 8, `time` 9), plus one field
//! of Gyre's own that other readers skip.

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::Bytes;
use prost::Message;

use crate::engine::redis::codec::{info_from_pb, info_to_pb};
use crate::model::{ClientInfo, Payload, Publication, Publish};
use crate::protocol::pb::proto::{ClientInfo as PbClientInfo, Join, Leave};
use crate::protocol::PushBody;
use crate::push::{Prepared, PushKind};

#[derive(Clone, PartialEq, prost::Message)]
pub struct WirePush {
    #[prost(string, tag = "2")]
    pub channel: String,
    #[prost(message, optional, tag = "4")]
    pub publication: Option<WirePublication>,
    #[prost(message, optional, tag = "5")]
    pub join: Option<Join>,
    #[prost(message, optional, tag = "6")]
    pub leave: Option<Leave>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct WirePublication {
    #[prost(bytes = "bytes", tag = "4")]
    pub data: Bytes,
    #[prost(message, optional, tag = "5")]
    pub info: Option<PbClientInfo>,
    #[prost(uint64, tag = "6")]
    pub offset: u64,
    #[prost(btree_map = "string, string", tag = "7")]
    pub tags: BTreeMap<String, String>,
    #[prost(bool, tag = "8")]
    pub delta: bool,
    /// Unix milliseconds of the publish.
    #[prost(int64, tag = "9")]
    pub time: i64,
    /// The data came from base64 (protobuf clients, `b64data`) and may not be JSON.
    #[prost(bool, tag = "64")]
    pub binary: bool,
}

fn unix_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

/// A publication's message; `delta`: receivers make delta patches against the previous one.
pub fn encode_publication(channel: &str, p: &Publish, delta: bool) -> Vec<u8> {
    WirePush {
        channel: channel.to_string(),
        publication: Some(WirePublication {
            data: p.data.bytes.clone(),
            info: p.info.as_deref().map(info_to_pb),
            offset: 0,
            tags: p
                .tags
                .as_ref()
                .map(|t| t.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect())
                .unwrap_or_default(),
            delta,
            time: unix_ms(),
            binary: p.data.binary,
        }),
        join: None,
        leave: None,
    }
    .encode_to_vec()
}

/// A join (`true`) or leave message.
pub fn encode_join_leave(channel: &str, info: &ClientInfo, join: bool) -> Vec<u8> {
    let info = Some(info_to_pb(info));
    let (join, leave) = if join { (Some(Join { info }), None) } else { (None, Some(Leave { info })) };
    WirePush { channel: channel.to_string(), publication: None, join, leave }.encode_to_vec()
}

/// A decoded channel message.
#[derive(Debug, PartialEq)]
pub struct Decoded {
    pub push: PushBody,
    pub delta: bool,
}

impl Decoded {
    pub fn prepared(self, channel: Arc<str>) -> Prepared {
        let kind = match self.push {
            PushBody::Pub(_) => PushKind::Publication,
            _ => PushKind::JoinLeave,
        };
        Prepared::new(channel, kind, self.push)
    }
}

pub fn decode(payload: &Bytes) -> Option<Decoded> {
    let m = WirePush::decode(payload.clone()).ok()?;
    if let Some(p) = m.publication {
        let tags: Option<crate::model::Tags> = (!p.tags.is_empty()).then(|| {
            p.tags.into_iter().map(|(k, v)| (k.into_boxed_str(), v.into_boxed_str())).collect::<Vec<_>>().into()
        });
        let publication = Publication {
            offset: p.offset,
            data: Payload { bytes: p.data, binary: p.binary },
            info: p.info.map(|i| Arc::new(info_from_pb(i))),
            tags,
            key: None,
            removed: false,
        };
        return Some(Decoded { push: PushBody::Pub(publication), delta: p.delta });
    }
    if let Some(info) = m.join.and_then(|j| j.info) {
        return Some(Decoded { push: PushBody::Join(info_from_pb(info)), delta: false });
    }
    if let Some(info) = m.leave.and_then(|l| l.info) {
        return Some(Decoded { push: PushBody::Leave(info_from_pb(info)), delta: false });
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips() {
        let info = ClientInfo {
            user: "u".into(),
            client: "c".into(),
            conn_info: Some(Bytes::from_static(b"{}")),
            chan_info: None,
        };
        let p = Publish {
            channel: "news".into(),
            data: Payload { bytes: Bytes::from_static(b"{\"a\":1}"), binary: false },
            skip_history: false,
            tags: Some(vec![("k".into(), "v".into())].into()),
            idempotency_key: None,
            delta: false,
            version: 0,
            version_epoch: "".into(),
            info: Some(Arc::new(info.clone())),
        };
        let d = decode(&Bytes::from(encode_publication("news", &p, true))).unwrap();
        assert!(d.delta);
        let PushBody::Pub(got) = d.push else { panic!("not a publication") };
        assert_eq!(&got.data.bytes[..], b"{\"a\":1}");
        assert_eq!(got.info.as_deref(), Some(&info));
        assert_eq!(got.tags.unwrap()[0].1.as_ref(), "v");
        let d = decode(&Bytes::from(encode_join_leave("news", &info, false))).unwrap();
        assert_eq!(d.push, PushBody::Leave(info.clone()));
        assert!(decode(&Bytes::from_static(b"\xff\xff")).is_none());
        assert!(decode(&Bytes::new()).is_none());
    }
}
