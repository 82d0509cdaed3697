//! Decoding server API commands from JSON bytes, in place and without copies of `data`.
//!
//! The legacy stream is split into lines by [`LineSplitter`] (bounded memory whatever the body
//! length); each line is an envelope `{"id","method","params"}` decoded by [`decode_line`].
//! New-style bodies go straight to [`decode_params`].
//!
//! Parser choice: serde_json with borrowed `&RawValue` gives `data`/`info` as the exact input
//! slice, so a payload is copied once into its own `Bytes` and never re-serialised.
//! simd-json (the design's first choice) has no raw-value support: keeping `data`
//! byte-for-byte would mean re-serialising it from its DOM; `benches/api_parse.rs` measures
//! both on a typical publish line.

use std::borrow::Cow;
use std::collections::BTreeMap;

use base64::Engine as _;
use bytes::{Bytes, BytesMut};
use memchr::memchr;
use serde::Deserialize;
use serde_json::value::RawValue;

use super::*;

/// Why a command could not be decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DecodeError {
    /// Not JSON, or JSON of the wrong shape/types: HTTP 400 for a new-style request,
    /// error 107 for one line of a legacy stream.
    Malformed,
    /// Well-formed but rejected with an in-band error (107 missing field, 104 unknown method).
    Api(ApiError),
}

impl DecodeError {
    /// The in-band error a legacy line or batch element gets.
    pub fn api_error(self) -> ApiError {
        match self {
            DecodeError::Malformed => ApiError::BAD_REQUEST,
            DecodeError::Api(e) => e,
        }
    }
}

impl From<serde_json::Error> for DecodeError {
    fn from(_: serde_json::Error) -> Self {
        DecodeError::Malformed
    }
}

fn bad() -> DecodeError {
    DecodeError::Api(ApiError::BAD_REQUEST)
}

/// `params` of a legacy line: decoded on the spot when `method` came first and is `publish`
/// (the hot path: one pass over the line), else kept raw and decoded once the method is known.
enum Params<'a> {
    Publish(Result<PublishP<'a>, DecodeError>),
    Raw(&'a RawValue),
}

/// The legacy envelope `{"id","method","params"}`, read in one pass.
#[derive(Default)]
struct Envelope<'a> {
    id: u32,
    /// `None` = absent; `Some(None)` = present but unknown (104).
    method: Option<Option<Method>>,
    params: Option<Params<'a>>,
}

impl<'de> Deserialize<'de> for Envelope<'de> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = Envelope<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a command object")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, mut m: A) -> Result<Envelope<'de>, A::Error> {
                let mut env = Envelope::default();
                while let Some(key) = m.next_key::<Cow<'de, str>>()? {
                    match &*key {
                        "id" => env.id = m.next_value::<Option<u32>>()?.unwrap_or(0),
                        "method" => env.method = Some(m.next_value::<MethodField>()?.0),
                        "params" if env.method == Some(Some(Method::Publish)) => {
                            env.params = Some(Params::Publish(m.next_value::<ObjectOnly<PublishP<'de>>>()?.0));
                        }
                        "params" => env.params = Some(Params::Raw(m.next_value()?)),
                        _ => {
                            m.next_value::<serde::de::IgnoredAny>()?;
                        }
                    }
                }
                Ok(env)
            }
        }
        d.deserialize_map(V)
    }
}

/// The envelope with `params` kept raw (the slow path for lines whose params are malformed).
#[derive(Deserialize)]
struct RawEnvelope<'a> {
    #[serde(default)]
    id: u32,
    #[serde(default)]
    method: Option<MethodField>,
    #[serde(borrow, default)]
    params: Option<&'a RawValue>,
}

/// `method` as a name (any case) or a legacy number; `null` means publish.
struct MethodField(Option<Method>);

impl<'de> Deserialize<'de> for MethodField {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = MethodField;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a method name or number")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<MethodField, E> {
                Ok(MethodField(Method::from_name(v).filter(|m| *m != Method::Batch)))
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<MethodField, E> {
                Ok(MethodField(Method::from_number(v)))
            }
            fn visit_unit<E: serde::de::Error>(self) -> Result<MethodField, E> {
                Ok(MethodField(Some(Method::Publish)))
            }
        }
        d.deserialize_any(V)
    }
}

/// A params object decoded in place; arrays (which serde's derived structs would read by
/// position) and scalars are malformed, `null` is an empty object. The error stays with the
/// command instead of failing the envelope.
struct ObjectOnly<T>(Result<T, DecodeError>);

impl<'de, T: Deserialize<'de> + Default> Deserialize<'de> for ObjectOnly<T> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<T>(std::marker::PhantomData<T>);
        impl<'de, T: Deserialize<'de> + Default> serde::de::Visitor<'de> for V<T> {
            type Value = ObjectOnly<T>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("an object")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, m: A) -> Result<ObjectOnly<T>, A::Error> {
                T::deserialize(serde::de::value::MapAccessDeserializer::new(m)).map(|t| ObjectOnly(Ok(t)))
            }
            fn visit_unit<E: serde::de::Error>(self) -> Result<ObjectOnly<T>, E> {
                Ok(ObjectOnly(Ok(T::default())))
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut s: A) -> Result<ObjectOnly<T>, A::Error> {
                while s.next_element::<serde::de::IgnoredAny>()?.is_some() {}
                Ok(ObjectOnly(Err(DecodeError::Malformed)))
            }
            fn visit_bool<E: serde::de::Error>(self, _: bool) -> Result<ObjectOnly<T>, E> {
                Ok(ObjectOnly(Err(DecodeError::Malformed)))
            }
            fn visit_i64<E: serde::de::Error>(self, _: i64) -> Result<ObjectOnly<T>, E> {
                Ok(ObjectOnly(Err(DecodeError::Malformed)))
            }
            fn visit_u64<E: serde::de::Error>(self, _: u64) -> Result<ObjectOnly<T>, E> {
                Ok(ObjectOnly(Err(DecodeError::Malformed)))
            }
            fn visit_f64<E: serde::de::Error>(self, _: f64) -> Result<ObjectOnly<T>, E> {
                Ok(ObjectOnly(Err(DecodeError::Malformed)))
            }
            fn visit_str<E: serde::de::Error>(self, _: &str) -> Result<ObjectOnly<T>, E> {
                Ok(ObjectOnly(Err(DecodeError::Malformed)))
            }
        }
        d.deserialize_any(V(std::marker::PhantomData))
    }
}

/// A decoded legacy line: its id (0 = none) and the command or the error for its reply.
#[derive(Debug)]
pub struct Line {
    pub id: u32,
    pub command: Result<Command, ApiError>,
}

/// Decodes one legacy line `{"id":1,"method":"publish","params":{...}}`. `method` may be a
/// name (any case) or a legacy number; absent means publish. Unknown method → 104 in-band.
/// Publish lines of the usual shape take the hand-written reader ([`super::fast`]).
pub fn decode_line(line: &[u8]) -> Line {
    match super::fast::publish(line) {
        Some(f) => Line { id: f.id, command: Ok(Command::Publish(f.to_publish())) },
        None => decode_line_general(line),
    }
}

/// [`decode_line`] without the hand-written reader.
pub fn decode_line_general(line: &[u8]) -> Line {
    if !is_object(line) {
        return Line { id: 0, command: Err(ApiError::BAD_REQUEST) };
    }
    let env: Envelope = match serde_json::from_slice(line) {
        Ok(e) => e,
        // The one-pass read fails on a params error too; re-read with params kept raw so the
        // reply still carries the line's id.
        Err(_) => match serde_json::from_slice::<RawEnvelope>(line) {
            Ok(r) => Envelope { id: r.id, method: r.method.map(|m| m.0), params: r.params.map(Params::Raw) },
            Err(_) => return Line { id: 0, command: Err(ApiError::BAD_REQUEST) },
        },
    };
    let id = env.id;
    let Some(method) = env.method.unwrap_or(Some(Method::Publish)) else {
        return Line { id, command: Err(ApiError::NOT_FOUND) };
    };
    let command = match env.params {
        Some(Params::Publish(p)) => p.and_then(publish_command),
        Some(Params::Raw(raw)) => decode_params(method, raw.get().as_bytes()),
        None => decode_params(method, b"{}"),
    };
    Line { id, command: command.map_err(DecodeError::api_error) }
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct PublishP<'a> {
    #[serde(borrow)]
    channel: Cow<'a, str>,
    #[serde(borrow)]
    channels: Option<Vec<Cow<'a, str>>>,
    #[serde(borrow)]
    data: Option<&'a RawValue>,
    #[serde(borrow)]
    b64data: Cow<'a, str>,
    skip_history: bool,
    tags: Option<BTreeMap<String, String>>,
    #[serde(borrow)]
    idempotency_key: Cow<'a, str>,
    delta: bool,
    version: u64,
    #[serde(borrow)]
    version_epoch: Cow<'a, str>,
    /// `map_publish`: the key set.
    #[serde(borrow)]
    key: Cow<'a, str>,
}

/// `map_publish`'s own field beside those of [`PublishP`] (read apart: the publish path's
/// parameters stay small).
#[derive(Deserialize, Default)]
#[serde(default)]
struct KeyModeP<'a> {
    /// `""`, `if_new` or `if_exists`.
    #[serde(borrow)]
    key_mode: Cow<'a, str>,
}

/// `map_remove`, `map_read_state`, `map_stats`, `map_clear`.
#[derive(Deserialize, Default)]
#[serde(default)]
struct MapP<'a> {
    #[serde(borrow)]
    channel: Cow<'a, str>,
    #[serde(borrow)]
    key: Cow<'a, str>,
    #[serde(borrow)]
    idempotency_key: Cow<'a, str>,
    cursor: String,
    limit: i64,
    /// `map_read_state`: the epoch of the stream position earlier pages were read at.
    revision_epoch: String,
    /// `map_read_stream`.
    since_offset: u64,
    since_epoch: String,
    reverse: bool,
}

/// `shared_poll_publish`.
#[derive(Deserialize, Default)]
#[serde(default)]
struct SharedPollP<'a> {
    #[serde(borrow)]
    channel: Cow<'a, str>,
    #[serde(borrow)]
    key: Cow<'a, str>,
    #[serde(borrow)]
    data: Option<&'a RawValue>,
    #[serde(borrow)]
    b64data: Cow<'a, str>,
    version: u64,
    #[serde(borrow)]
    epoch: Cow<'a, str>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct TargetP<'a> {
    #[serde(borrow)]
    channel: Cow<'a, str>,
    #[serde(borrow)]
    user: Cow<'a, str>,
    #[serde(borrow)]
    client: Cow<'a, str>,
    #[serde(borrow)]
    session: Cow<'a, str>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct BoolValue {
    value: bool,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct OverrideP {
    presence: Option<BoolValue>,
    join_leave: Option<BoolValue>,
    force_recovery: Option<BoolValue>,
    force_positioning: Option<BoolValue>,
    force_push_join_leave: Option<BoolValue>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct PositionP {
    offset: u64,
    epoch: String,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct SubscribeP<'a> {
    #[serde(borrow, flatten)]
    target: TargetP<'a>,
    expire_at: i64,
    #[serde(borrow)]
    info: Option<&'a RawValue>,
    #[serde(borrow)]
    b64info: Cow<'a, str>,
    #[serde(borrow)]
    data: Option<&'a RawValue>,
    #[serde(borrow)]
    b64data: Cow<'a, str>,
    recover_since: Option<PositionP>,
    #[serde(rename = "override")]
    overrides: Option<OverrideP>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct DisconnectObjP {
    code: u32,
    reason: String,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct DisconnectP<'a> {
    #[serde(borrow, flatten)]
    target: TargetP<'a>,
    whitelist: Vec<String>,
    disconnect: Option<DisconnectObjP>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct RefreshP<'a> {
    #[serde(borrow, flatten)]
    target: TargetP<'a>,
    expired: bool,
    expire_at: i64,
    #[serde(borrow)]
    info: Option<&'a RawValue>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct HistoryP<'a> {
    #[serde(borrow)]
    channel: Cow<'a, str>,
    limit: i32,
    since: Option<PositionP>,
    reverse: bool,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct ChannelsP<'a> {
    #[serde(borrow)]
    pattern: Cow<'a, str>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct RpcP<'a> {
    #[serde(borrow)]
    method: Cow<'a, str>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct InfoP {}

#[derive(Deserialize, Default)]
#[serde(default)]
struct BatchP<'a> {
    #[serde(borrow)]
    commands: Vec<&'a RawValue>,
    parallel: bool,
}

/// The payload from `data`/`b64data` (non-empty `b64data` wins). Invalid base64 → 107.
fn payload(data: Option<&RawValue>, b64: &str) -> Result<Option<Payload>, DecodeError> {
    if !b64.is_empty() {
        let bytes = base64::engine::general_purpose::STANDARD.decode(b64).map_err(|_| bad())?;
        return Ok(Some(Payload { bytes: Bytes::from(bytes), binary: true }));
    }
    Ok(data.map(|d| Payload { bytes: Bytes::copy_from_slice(d.get().as_bytes()), binary: false }))
}

fn position(p: Option<PositionP>) -> Option<StreamPosition> {
    p.map(|p| StreamPosition { offset: p.offset, epoch: p.epoch.into() })
}

fn target(t: &TargetP) -> Target {
    Target { user: t.user.as_ref().into(), client: t.client.as_ref().into(), session: t.session.as_ref().into() }
}

fn publish_from(p: PublishP, channel: Box<str>) -> Result<Publish, DecodeError> {
    let data = payload(p.data, &p.b64data)?.ok_or_else(bad)?;
    Ok(Publish {
        channel,
        data,
        skip_history: p.skip_history,
        tags: p
            .tags
            .filter(|t| !t.is_empty())
            .map(|t| t.into_iter().map(|(k, v)| (k.into_boxed_str(), v.into_boxed_str())).collect()),
        idempotency_key: Some(p.idempotency_key).filter(|k| !k.is_empty()).map(|k| k.as_ref().into()),
        delta: p.delta,
        version: p.version,
        version_epoch: p.version_epoch.as_ref().into(),
        info: None,
    })
}

fn publish_command(p: PublishP) -> Result<Command, DecodeError> {
    let channel = required_channel(&p.channel)?;
    Ok(Command::Publish(publish_from(p, channel)?))
}

fn required_channel(c: &str) -> Result<Box<str>, DecodeError> {
    if c.is_empty() {
        Err(bad())
    } else {
        Ok(c.into())
    }
}

/// True when the JSON text starts as an object. serde's derived structs also accept arrays
/// (fields by position), which Centrifugo's decoder refuses.
fn is_object(json: &[u8]) -> bool {
    json.trim_ascii_start().first() == Some(&b'{')
}

/// Decodes the parameters object of `method`. `null` counts as `{}` (Go's decoder leaves the
/// request empty); any other non-object is malformed.
pub fn decode_params(method: Method, params: &[u8]) -> Result<Command, DecodeError> {
    let params = if params.trim_ascii() == b"null" { b"{}".as_slice() } else { params };
    if !is_object(params) {
        return Err(DecodeError::Malformed);
    }
    Ok(match method {
        Method::Publish => publish_command(serde_json::from_slice(params)?)?,
        Method::Broadcast => {
            let mut p: PublishP = serde_json::from_slice(params)?;
            let channels: Vec<Box<str>> =
                p.channels.take().unwrap_or_default().iter().map(|c| c.as_ref().into()).collect();
            if channels.is_empty() {
                return Err(bad());
            }
            Command::Broadcast(Broadcast { channels, publish: publish_from(p, Box::from(""))? })
        }
        Method::Subscribe => {
            let p: SubscribeP = serde_json::from_slice(params)?;
            let o = p.overrides.unwrap_or_default();
            let v = |b: Option<BoolValue>| b.map(|b| b.value);
            Command::Subscribe(Subscribe {
                channel: required_channel(&p.target.channel)?,
                target: target(&p.target),
                expire_at: p.expire_at,
                info: payload(p.info, &p.b64info)?,
                data: payload(p.data, &p.b64data)?,
                recover_since: position(p.recover_since),
                overrides: Overrides {
                    presence: v(o.presence),
                    join_leave: v(o.join_leave),
                    force_recovery: v(o.force_recovery),
                    force_positioning: v(o.force_positioning),
                    force_push_join_leave: v(o.force_push_join_leave),
                },
            })
        }
        Method::Unsubscribe => {
            let p: TargetP = serde_json::from_slice(params)?;
            Command::Unsubscribe(Unsubscribe { channel: p.channel.as_ref().into(), target: target(&p) })
        }
        Method::Disconnect => {
            let p: DisconnectP = serde_json::from_slice(params)?;
            let (code, reason) = match p.disconnect {
                Some(d) if d.code != 0 => (u16::try_from(d.code).map_err(|_| bad())?, d.reason),
                _ => (3503, "force disconnect".to_string()),
            };
            Command::Disconnect(DisconnectCmd {
                target: target(&p.target),
                whitelist: p.whitelist.into_iter().map(String::into_boxed_str).collect(),
                code,
                reason: reason.into(),
            })
        }
        Method::Refresh => {
            let p: RefreshP = serde_json::from_slice(params)?;
            Command::Refresh(Refresh {
                target: target(&p.target),
                expired: p.expired,
                expire_at: p.expire_at,
                info: payload(p.info, "")?,
            })
        }
        Method::Presence | Method::PresenceStats | Method::HistoryRemove => {
            let p: TargetP = serde_json::from_slice(params)?;
            let channel = required_channel(&p.channel)?;
            match method {
                Method::Presence => Command::Presence { channel },
                Method::PresenceStats => Command::PresenceStats { channel },
                _ => Command::HistoryRemove { channel },
            }
        }
        Method::History => {
            let p: HistoryP = serde_json::from_slice(params)?;
            Command::History(History {
                channel: required_channel(&p.channel)?,
                limit: p.limit,
                since: position(p.since),
                reverse: p.reverse,
            })
        }
        Method::Channels => {
            let p: ChannelsP = serde_json::from_slice(params)?;
            Command::Channels { pattern: p.pattern.as_ref().into() }
        }
        Method::Info => {
            let _: InfoP = serde_json::from_slice(params)?;
            Command::Info
        }
        Method::Rpc => {
            let p: RpcP = serde_json::from_slice(params)?;
            if p.method.is_empty() {
                return Err(bad());
            }
            Command::Rpc { method: p.method.as_ref().into() }
        }
        Method::MapPublish => {
            let p: PublishP = serde_json::from_slice(params)?;
            let channel = required_channel(&p.channel)?;
            let key: Box<str> = p.key.as_ref().into();
            let m: KeyModeP = serde_json::from_slice(params)?;
            let key_mode = crate::model::KeyMode::parse(&m.key_mode).ok_or_else(bad)?;
            if key.is_empty() {
                return Err(bad());
            }
            Command::Map(MapCmd::Publish { publish: publish_from(p, channel)?, key, key_mode })
        }
        Method::MapRemove | Method::MapReadState | Method::MapReadStream | Method::MapStats | Method::MapClear => {
            let p: MapP = serde_json::from_slice(params)?;
            let channel = required_channel(&p.channel)?;
            Command::Map(match method {
                Method::MapRemove if p.key.is_empty() => return Err(bad()),
                Method::MapRemove => MapCmd::Remove {
                    channel,
                    key: p.key.as_ref().into(),
                    idempotency_key: Some(p.idempotency_key).filter(|k| !k.is_empty()).map(|k| k.as_ref().into()),
                },
                Method::MapReadState => MapCmd::ReadState {
                    channel,
                    cursor: p.cursor,
                    limit: if p.limit > 0 { p.limit as usize } else { 0 },
                    key: p.key.into_owned(),
                    revision_epoch: p.revision_epoch,
                },
                Method::MapReadStream => {
                    let since = (p.since_offset > 0 || !p.since_epoch.is_empty())
                        .then(|| StreamPosition { offset: p.since_offset, epoch: p.since_epoch.as_str().into() });
                    let limit = p.limit.clamp(i32::MIN as i64, i32::MAX as i64) as i32;
                    MapCmd::ReadStream(History { channel, limit, since, reverse: p.reverse })
                }
                Method::MapStats => MapCmd::Stats { channel },
                _ => MapCmd::Clear { channel },
            })
        }
        Method::SharedPollPublish => {
            let p: SharedPollP = serde_json::from_slice(params)?;
            if p.channel.is_empty() || p.key.is_empty() || p.version == 0 {
                return Err(bad());
            }
            // Bad base64 is the executor's to report, after the namespace checks.
            let data =
                payload(p.data, &p.b64data).ok().map(|d| d.unwrap_or(Payload { bytes: Bytes::new(), binary: false }));
            Command::SharedPollPublish(SharedPollPub {
                channel: p.channel.as_ref().into(),
                key: p.key.as_ref().into(),
                version: p.version,
                epoch: p.epoch.as_ref().into(),
                data,
            })
        }
        // A batch of publishes of the usual shape takes the hand-written reader.
        Method::Batch => match super::fast::batch(params) {
            Some((publishes, parallel)) => Command::Batch(Batch {
                commands: publishes.iter().map(|p| Ok(Command::Publish(p.to_publish()))).collect(),
                parallel,
            }),
            None => decode_batch_general(params)?,
        },
    })
}

/// The params of `batch` read without the hand-written reader.
pub fn decode_batch_general(params: &[u8]) -> Result<Command, DecodeError> {
    let p: BatchP = serde_json::from_slice(params)?;
    let commands = p.commands.iter().map(|raw| decode_batch_element(raw.get().as_bytes())).collect();
    Ok(Command::Batch(Batch { commands, parallel: p.parallel }))
}

/// One element of `batch.commands`: `{"publish":{...}}`. `null` → 107, no known key → 104.
fn decode_batch_element(raw: &[u8]) -> Result<Command, ApiError> {
    if raw == b"null" || !is_object(raw) {
        return Err(ApiError::BAD_REQUEST);
    }
    let obj: Vec<(Cow<str>, &RawValue)> =
        serde_json::from_slice::<BTreeMapVec>(raw).map_err(|_| ApiError::BAD_REQUEST)?.0;
    for (key, value) in obj {
        if let Some(m) = Method::from_name(&key).filter(|m| *m != Method::Batch && key == m.name()) {
            if value.get() == "null" {
                continue;
            }
            return decode_params(m, value.get().as_bytes()).map_err(DecodeError::api_error);
        }
    }
    Err(ApiError::NOT_FOUND)
}

/// A JSON object kept as its entries in input order.
struct BTreeMapVec<'a>(Vec<(Cow<'a, str>, &'a RawValue)>);

impl<'de: 'a, 'a> Deserialize<'de> for BTreeMapVec<'a> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> serde::de::Visitor<'de> for V<'a> {
            type Value = BTreeMapVec<'a>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("an object")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, mut m: A) -> Result<Self::Value, A::Error> {
                let mut v = Vec::new();
                while let Some((k, val)) = m.next_entry::<Cow<'de, str>, &'de RawValue>()? {
                    v.push((k, val));
                }
                Ok(BTreeMapVec(v))
            }
        }
        d.deserialize_map(V(std::marker::PhantomData))
    }
}

/// What the splitter produced for one line.
#[derive(Debug, PartialEq, Eq)]
pub enum Piece<'a> {
    /// A complete line without its `\n` (never empty or all-whitespace).
    Line(&'a [u8]),
    /// A line longer than the limit; its bytes were dropped.
    TooLong,
}

/// Splits a body arriving in arbitrary chunks into newline-delimited lines. Lines wholly
/// inside one chunk are handed out as slices of that chunk (no copy); only a line that
/// straddles chunks is gathered in `partial`, which never grows past `max_line` bytes: a
/// longer line is skipped up to its newline and reported once as [`Piece::TooLong`].
pub struct LineSplitter {
    partial: BytesMut,
    max_line: usize,
    skipping: bool,
}

impl LineSplitter {
    pub fn new(max_line: usize) -> Self {
        LineSplitter { partial: BytesMut::new(), max_line, skipping: false }
    }

    /// Feeds one chunk; calls `f` for each complete piece, in order.
    pub fn feed(&mut self, mut chunk: &[u8], f: &mut dyn FnMut(Piece<'_>)) {
        while !chunk.is_empty() {
            match memchr(b'\n', chunk) {
                Some(nl) => {
                    let (head, rest) = (&chunk[..nl], &chunk[nl + 1..]);
                    chunk = rest;
                    if self.skipping {
                        self.skipping = false;
                        continue;
                    }
                    if self.partial.is_empty() {
                        if head.len() > self.max_line {
                            f(Piece::TooLong);
                        } else {
                            emit(head, f);
                        }
                    } else if self.partial.len() + head.len() > self.max_line {
                        self.partial.clear();
                        f(Piece::TooLong);
                    } else {
                        self.partial.extend_from_slice(head);
                        let line = std::mem::take(&mut self.partial);
                        emit(&line, f);
                        self.partial = line;
                        self.partial.clear();
                    }
                }
                None => {
                    if !self.skipping {
                        if self.partial.len() + chunk.len() > self.max_line {
                            self.partial.clear();
                            self.skipping = true;
                            f(Piece::TooLong);
                        } else {
                            self.partial.extend_from_slice(chunk);
                        }
                    }
                    chunk = &[];
                }
            }
        }
    }

    /// Ends the body: a last line without trailing newline is emitted.
    pub fn finish(&mut self, f: &mut dyn FnMut(Piece<'_>)) {
        self.skipping = false;
        if !self.partial.is_empty() {
            let line = std::mem::take(&mut self.partial);
            emit(&line, f);
        }
    }

    /// Bytes held for an incomplete line.
    pub fn buffered(&self) -> usize {
        self.partial.len()
    }
}

fn emit(line: &[u8], f: &mut dyn FnMut(Piece<'_>)) {
    let line = trim(line);
    if !line.is_empty() {
        f(Piece::Line(line));
    }
}

fn trim(mut s: &[u8]) -> &[u8] {
    while let [first, rest @ ..] = s {
        if first.is_ascii_whitespace() {
            s = rest;
        } else {
            break;
        }
    }
    while let [rest @ .., last] = s {
        if last.is_ascii_whitespace() {
            s = rest;
        } else {
            break;
        }
    }
    s
}

#[cfg(test)]
#[path = "parse_tests.rs"]
mod tests;
