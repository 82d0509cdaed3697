//! The HTTP proxy protocol's JSON: a [`Request`] as the body of the call, the body of a 200
//! answer as a [`Response`].

use std::collections::BTreeMap;

use bytes::Bytes;
use serde::Deserialize;
use serde_json::value::RawValue;

use super::{CallError, DisconnectObj, ErrorObj, Kind, Override, Request, Response, ResultObj, SubOptions};
use crate::wire::json::string as write_str;

fn field(out: &mut Vec<u8>, first: &mut bool, name: &str) {
    if !*first {
        out.push(b',');
    }
    *first = false;
    out.push(b'"');
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(b"\":");
}

fn str_field(out: &mut Vec<u8>, first: &mut bool, name: &str, v: &str, always: bool) {
    if v.is_empty() && !always {
        return;
    }
    field(out, first, name);
    write_str(out, v);
}

/// Whether `b` is one JSON value (a raw payload is embedded as is).
fn is_json(b: &[u8]) -> bool {
    serde_json::from_slice::<serde::de::IgnoredAny>(b).is_ok()
}

/// The request body for a proxy of `kind`. A payload that is not JSON cannot be embedded
/// (the proxy needs `binary_encoding`): [`CallError::Encode`].
pub fn encode_request(kind: Kind, r: &Request) -> Result<Vec<u8>, CallError> {
    let mut out = Vec::with_capacity(256);
    out.push(b'{');
    let mut first = true;
    str_field(&mut out, &mut first, "client", &r.client, false);
    str_field(&mut out, &mut first, "transport", r.transport, false);
    str_field(&mut out, &mut first, "protocol", r.protocol, false);
    str_field(&mut out, &mut first, "encoding", r.encoding, false);
    // Connect has no `user`; map requests leave an empty one out (as Centrifugo writes them).
    if kind != Kind::Connect {
        let always = !matches!(kind, Kind::MapPublish | Kind::MapRemove);
        str_field(&mut out, &mut first, "user", &r.user, always);
    }
    str_field(&mut out, &mut first, "channel", &r.channel, false);
    str_field(&mut out, &mut first, "key", &r.key, false);
    str_field(&mut out, &mut first, "method", &r.method, false);
    str_field(&mut out, &mut first, "name", &r.name, false);
    str_field(&mut out, &mut first, "version", &r.version, false);
    if !r.channels.is_empty() {
        field(&mut out, &mut first, "channels");
        out.push(b'[');
        for (i, c) in r.channels.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            write_str(&mut out, c);
        }
        out.push(b']');
    }
    if let Some(d) = r.data.as_ref().filter(|d| !d.is_empty()) {
        if !is_json(d) {
            return Err(CallError::Encode);
        }
        field(&mut out, &mut first, "data");
        out.extend_from_slice(d);
    }
    str_field(&mut out, &mut first, "b64data", &r.b64data, false);
    if let Some(m) = r.meta.as_ref().filter(|m| !m.is_empty() && is_json(m)) {
        field(&mut out, &mut first, "meta");
        out.extend_from_slice(m);
    }
    out.push(b'}');
    Ok(out)
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct BoolValue {
    value: bool,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct OverrideJ {
    presence: Option<BoolValue>,
    join_leave: Option<BoolValue>,
    force_push_join_leave: Option<BoolValue>,
    force_recovery: Option<BoolValue>,
    force_positioning: Option<BoolValue>,
}

impl From<OverrideJ> for Override {
    fn from(o: OverrideJ) -> Override {
        Override {
            presence: o.presence.map(|b| b.value),
            join_leave: o.join_leave.map(|b| b.value),
            force_push_join_leave: o.force_push_join_leave.map(|b| b.value),
            force_recovery: o.force_recovery.map(|b| b.value),
            force_positioning: o.force_positioning.map(|b| b.value),
        }
    }
}

fn raw(v: Option<&RawValue>) -> Option<Bytes> {
    v.map(|v| Bytes::copy_from_slice(v.get().as_bytes()))
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct SubOptionsJ<'a> {
    #[serde(borrow)]
    info: Option<&'a RawValue>,
    b64info: String,
    #[serde(borrow)]
    data: Option<&'a RawValue>,
    b64data: String,
    #[serde(rename = "override")]
    over: Option<OverrideJ>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct ResultJ<'a> {
    user: String,
    expire_at: i64,
    expired: bool,
    #[serde(borrow)]
    info: Option<&'a RawValue>,
    b64info: String,
    #[serde(borrow)]
    data: Option<&'a RawValue>,
    b64data: String,
    channels: Vec<String>,
    #[serde(borrow)]
    subs: BTreeMap<String, SubOptionsJ<'a>>,
    #[serde(borrow)]
    meta: Option<&'a RawValue>,
    #[serde(rename = "override")]
    over: Option<OverrideJ>,
    skip_history: bool,
    tags: BTreeMap<String, String>,
    idempotency_key: String,
    delta: bool,
    version: u64,
    version_epoch: String,
    key: String,
    key_mode: String,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct ErrorJ {
    code: u32,
    message: String,
    temporary: bool,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct DisconnectJ {
    code: u32,
    reason: String,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct ResponseJ<'a> {
    #[serde(borrow)]
    result: Option<ResultJ<'a>>,
    error: Option<ErrorJ>,
    disconnect: Option<DisconnectJ>,
}

/// A 200 answer's body as a response. Anything but a JSON object of the expected shape is
/// [`CallError::Decode`].
pub fn decode_response(body: &[u8]) -> Result<Response, CallError> {
    let r: ResponseJ = serde_json::from_slice(body).map_err(|e| CallError::Decode(e.to_string()))?;
    Ok(Response {
        result: r.result.map(|x| ResultObj {
            user: x.user,
            expire_at: x.expire_at,
            expired: x.expired,
            info: raw(x.info),
            b64info: x.b64info,
            data: raw(x.data),
            b64data: x.b64data,
            channels: x.channels,
            subs: x
                .subs
                .into_iter()
                .map(|(k, s)| {
                    let o = SubOptions {
                        info: raw(s.info),
                        b64info: s.b64info,
                        data: raw(s.data),
                        b64data: s.b64data,
                        over: s.over.map(Into::into).unwrap_or_default(),
                    };
                    (k, o)
                })
                .collect(),
            meta: raw(x.meta),
            over: x.over.map(Into::into).unwrap_or_default(),
            skip_history: x.skip_history,
            tags: x.tags.into_iter().collect(),
            idempotency_key: x.idempotency_key,
            delta: x.delta,
            version: x.version,
            version_epoch: x.version_epoch,
            key: x.key,
            key_mode: x.key_mode,
        }),
        error: r.error.map(|e| ErrorObj { code: e.code, message: e.message, temporary: e.temporary }),
        disconnect: r.disconnect.map(|d| DisconnectObj { code: d.code, reason: d.reason }),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_leave_out_empty_fields_but_user() {
        let r = Request {
            client: "c1".into(),
            transport: "websocket",
            protocol: "json",
            encoding: "json",
            name: "js".into(),
            data: Some(Bytes::from_static(br#"{"a":1}"#)),
            ..Default::default()
        };
        let b = encode_request(Kind::Connect, &r).unwrap();
        assert_eq!(
            std::str::from_utf8(&b).unwrap(),
            r#"{"client":"c1","transport":"websocket","protocol":"json","encoding":"json","name":"js","data":{"a":1}}"#
        );
        let r = Request { channel: "chat:a".into(), ..r };
        let b = encode_request(Kind::Subscribe, &Request { name: String::new(), data: None, ..r.clone() }).unwrap();
        assert_eq!(
            std::str::from_utf8(&b).unwrap(),
            r#"{"client":"c1","transport":"websocket","protocol":"json","encoding":"json","user":"","channel":"chat:a"}"#
        );
        let bad = Request { data: Some(Bytes::from_static(b"\x00\x01")), ..r };
        assert_eq!(encode_request(Kind::Publish, &bad), Err(CallError::Encode));
    }

    #[test]
    fn map_requests_and_results() {
        let r = Request {
            client: "c1".into(),
            transport: "websocket",
            protocol: "json",
            encoding: "json",
            channel: "m:a".into(),
            key: "k1".into(),
            data: Some(Bytes::from_static(br#"{"x":1}"#)),
            ..Default::default()
        };
        // An anonymous client's `user` is left out of map requests (written empty elsewhere).
        let b = encode_request(Kind::MapPublish, &r).unwrap();
        assert_eq!(
            std::str::from_utf8(&b).unwrap(),
            r#"{"client":"c1","transport":"websocket","protocol":"json","encoding":"json","channel":"m:a","key":"k1","data":{"x":1}}"#
        );
        let r = Request { user: "u1".into(), data: None, ..r };
        let b = encode_request(Kind::MapRemove, &r).unwrap();
        assert_eq!(
            std::str::from_utf8(&b).unwrap(),
            r#"{"client":"c1","transport":"websocket","protocol":"json","encoding":"json","user":"u1","channel":"m:a","key":"k1"}"#
        );
        let x = decode_response(
            br#"{"result":{"key":"k2","b64data":"AQI=","tags":{"t":"1"},"key_mode":"if_new","idempotency_key":"i"}}"#,
        )
        .unwrap()
        .result
        .unwrap();
        assert_eq!((x.key.as_str(), x.b64data.as_str(), x.key_mode.as_str()), ("k2", "AQI=", "if_new"));
        assert_eq!((x.tags, x.idempotency_key.as_str()), (vec![("t".to_string(), "1".to_string())], "i"));
    }

    #[test]
    fn responses() {
        let r = decode_response(
            br#"{"result":{"user":"56","expire_at":17,"info":{"n":"A"},"channels":["news"],
                "subs":{"x":{"data":[1],"override":{"presence":{"value":true}}}},"meta":{"r":1},
                "override":{"join_leave":{"value":false}},"tags":{"k":"v"},"unknown":1}}"#,
        )
        .unwrap();
        let x = r.result.unwrap();
        assert_eq!(x.user, "56");
        assert_eq!(x.expire_at, 17);
        assert_eq!(x.info.as_deref(), Some(&br#"{"n":"A"}"#[..]));
        assert_eq!(x.subs[0].0, "x");
        assert_eq!(x.subs[0].1.over.presence, Some(true));
        assert_eq!(x.over.join_leave, Some(false));
        assert_eq!(x.tags, vec![("k".to_string(), "v".to_string())]);
        let r = decode_response(br#"{"disconnect":{"code":4501,"reason":"no"},"error":{"code":1000,"message":"m"}}"#)
            .unwrap();
        assert_eq!(r.disconnect, Some(DisconnectObj { code: 4501, reason: "no".into() }));
        assert_eq!(r.error.unwrap().code, 1000);
        assert_eq!(decode_response(b"{}").unwrap(), Response::default());
        assert!(decode_response(b"").is_err());
        assert!(decode_response(b"[1]").is_err());
        assert!(decode_response(br#"{"result":{"expire_at":"x"}}"#).is_err());
    }
}
