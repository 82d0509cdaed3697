//! A push prepared once for every subscriber of a channel: the owner builds the JSON
//! WebSocket frame; each receiving worker builds the protobuf frame at most once for all of
//! its own subscribers. Also the frame a raw (gateway) client gets for a publication.

use std::sync::Arc;

use bytes::Bytes;
use smallvec::SmallVec;

use crate::client::{frame_message, Framing};
use crate::delta::DeltaPub;
use crate::model::{Payload, Publication};
use crate::protocol::{Format, PushBody};
use crate::wire::ws::{frame, OpCode};

/// What kind of push a prepared frame is (subscribers filter join/leave).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PushKind {
    Publication,
    JoinLeave,
}

/// A push encoded once for every subscriber: the JSON WebSocket frame is built by the owner;
/// each receiving worker encodes the protobuf frame at most once for its own subscribers.
#[derive(Debug)]
pub struct Prepared {
    pub channel: Arc<str>,
    pub kind: PushKind,
    pub push: PushBody,
    /// The complete text frame for JSON clients; `None` when the payload is binary (JSON
    /// clients cannot receive it and are disconnected with 3506).
    pub json: Option<Bytes>,
    /// A publication's delta step on the owner (see `crate::delta`), when the channel uses
    /// deltas.
    pub delta: Option<DeltaPub>,
    /// A publication's stream epoch, when it has an offset in a stream: subscribers that keep
    /// their place in the stream (see `crate::hub`) check both.
    pub epoch: Option<Arc<str>>,
}

impl Prepared {
    pub fn new(channel: Arc<str>, kind: PushKind, push: PushBody) -> Self {
        // Binary payloads reach JSON clients raw when they are JSON text (as in Centrifugo);
        // other bytes cannot travel in a JSON frame.
        let binary = matches!(&push, PushBody::Pub(p) if !p.data.json_ok());
        let json = (!binary).then(|| {
            let mut buf = Vec::with_capacity(128);
            crate::protocol::encode_push(Format::Json, &channel, &push, &mut buf);
            frame(OpCode::Text, &buf)
        });
        Prepared { channel, kind, push, json, delta: None, epoch: None }
    }

    /// The stream position this publication was given (`None`, or an offset 0 or an empty
    /// epoch: not in a stream).
    pub fn with_position(mut self, position: Option<&crate::model::StreamPosition>) -> Self {
        self.epoch = position.filter(|p| p.offset != 0 && !p.epoch.is_empty()).map(|p| p.epoch.clone());
        self
    }

    /// This publication's delta step (set by the owner before the push is shared).
    pub fn with_delta(mut self, delta: Option<DeltaPub>) -> Self {
        self.delta = delta;
        self
    }

    /// The frame a subscriber that negotiated fossil deltas receives: the patch (`patch`, a
    /// `"delta": true` publication) or the full data, which JSON clients receive as a JSON
    /// string. `None` when there is no patch, or the data (or patch) is not text a JSON client
    /// can receive.
    pub fn delta_frame(&self, framing: Framing, format: Format, patch: bool) -> Option<Bytes> {
        let PushBody::Pub(p) = &self.push else { return None };
        let bytes = if patch { self.delta.as_ref()?.patch.clone()? } else { p.data.bytes.clone() };
        let bytes = match format {
            Format::Json => crate::delta::json_string(&bytes)?,
            Format::Protobuf => bytes,
        };
        let p = Publication { data: Payload { bytes, binary: false }, ..p.clone() };
        let push = if patch { PushBody::Delta(p) } else { PushBody::Pub(p) };
        Some(push_frame(&self.channel, &push, framing, format))
    }

    /// The complete binary frame for protobuf WebSocket clients.
    pub fn protobuf_frame(&self) -> Bytes {
        self.frame(Framing::WebSocket, Format::Protobuf)
    }

    /// The frame for clients of a transport (`framing`) and `format`: a reply-wrapped push,
    /// or a bare push for the unidirectional transports.
    pub fn frame(&self, framing: Framing, format: Format) -> Bytes {
        push_frame(&self.channel, &self.push, framing, format)
    }

    /// The frame for clients of the older protocol (`crate::protocol::v1`) on a transport.
    pub fn v1_frame(&self, framing: Framing, format: Format) -> Bytes {
        let mut buf = Vec::with_capacity(128);
        crate::protocol::v1::encode_push(format, &self.channel, &self.push, &mut buf);
        frame_message(framing, format, &buf)
    }
}

/// `push` of `channel` as clients of a transport (`framing`) and `format` receive it: a
/// reply-wrapped push, or a bare push for the unidirectional transports.
fn push_frame(channel: &str, push: &PushBody, framing: Framing, format: Format) -> Bytes {
    let mut buf = Vec::with_capacity(128);
    if framing.is_uni() {
        crate::protocol::encode_bare_push(format, channel, push, &mut buf);
    } else {
        crate::protocol::encode_push(format, channel, push, &mut buf);
    }
    frame_message(framing, format, &buf)
}

/// A prepared push and the workers that have subscribers for it.
pub struct Fanout {
    pub prepared: Arc<Prepared>,
    pub workers: SmallVec<[u16; 8]>,
}

/// The text frame a raw client receives for a publication: a JSON string's content, other
/// JSON as its text, binary data as a binary frame.
pub fn raw_publication_frame(data: &crate::model::Payload) -> Bytes {
    if data.binary {
        return match std::str::from_utf8(&data.bytes) {
            Ok(_) if crate::model::is_json(&data.bytes) => frame(OpCode::Text, &data.bytes),
            _ => frame(OpCode::Binary, &data.bytes),
        };
    }
    if data.bytes.first() == Some(&b'"') {
        if let Ok(s) = serde_json::from_slice::<String>(&data.bytes) {
            return frame(OpCode::Text, s.as_bytes());
        }
    }
    frame(OpCode::Text, &data.bytes)
}

/// The metrics kind of a push.
pub fn metrics_kind(p: &PushBody) -> crate::metrics::Kind {
    match p {
        PushBody::Join(_) => crate::metrics::Kind::Join,
        PushBody::Leave(_) => crate::metrics::Kind::Leave,
        _ => crate::metrics::Kind::Publication,
    }
}

/// The frame type of a push (the `frame_type` label of the transport metrics).
pub fn metrics_frame(p: &PushBody) -> crate::metrics::Frame {
    use crate::metrics::Frame;
    match p {
        PushBody::Pub(_) | PushBody::Keyed(_) | PushBody::Delta(_) => Frame::PushPublication,
        PushBody::Join(_) => Frame::PushJoin,
        PushBody::Leave(_) => Frame::PushLeave,
        PushBody::Unsubscribe { .. } => Frame::PushUnsubscribe,
        PushBody::Subscribe { .. } => Frame::PushSubscribe,
        PushBody::Message { .. } => Frame::PushMessage,
        PushBody::Refresh { .. } => Frame::PushRefresh,
        PushBody::Disconnect { .. } => Frame::PushDisconnect,
        PushBody::Connect(_) => Frame::PushConnect,
    }
}
