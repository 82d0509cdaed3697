//! The claims of verified connection and subscription tokens, read as Centrifugo reads them
//! (`internal/jwtverify`): a claim of the wrong JSON type makes the token invalid, `null`
//! counts as absent, `b64info`/`b64data` win over `info`/`data` when non-empty.

use base64::Engine as _;
use bytes::Bytes;
use serde_json::{Map, Value};

use crate::api::Overrides;
use crate::token;

/// The token is invalid: Centrifugo's `ErrInvalidToken`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Invalid;

/// Why a connection token's claims were refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum ConnRefused {
    /// Disconnect with 3500.
    Invalid,
    /// The top-level `b64info` is not base64: Centrifugo answers error 100.
    BadInfo,
}

/// A server-side subscription granted by a connection token (`subs` or `channels`).
#[derive(Debug, Clone, Default)]
pub(super) struct ServerSub {
    pub channel: String,
    pub info: Option<Bytes>,
    /// Returned as `data` in this subscription's result.
    pub data: Option<Bytes>,
    pub overrides: Overrides,
}

/// The claims of a verified connection token that Gyre uses.
#[derive(Debug, Clone, Default)]
pub(super) struct ConnClaims {
    pub user: String,
    /// Unix seconds, 0 = never.
    pub expire_at: i64,
    pub info: Option<Bytes>,
    pub subs: Vec<ServerSub>,
    /// The token carries the hidden-session mark (see [`super::hidden`]).
    pub hidden: bool,
    /// `meta`: server-side data of the connection (sent to proxies, never to clients).
    pub meta: Option<Bytes>,
}

/// The claims of a verified subscription token.
#[derive(Debug, Clone, Default)]
pub(super) struct SubClaims {
    pub channel: String,
    pub user: String,
    /// When set, only this client may use the token.
    pub client: String,
    pub info: Option<Bytes>,
    /// Returned as `data` in the subscribe result.
    pub data: Option<Bytes>,
    pub overrides: Overrides,
    /// Unix seconds, 0 = never.
    pub expire_at: i64,
}

/// A string claim: absent or `null` is "", another type is invalid.
fn string(o: &Map<String, Value>, key: &str) -> Result<String, Invalid> {
    match o.get(key) {
        None | Some(Value::Null) => Ok(String::new()),
        Some(Value::String(s)) => Ok(s.clone()),
        Some(_) => Err(Invalid),
    }
}

/// A raw JSON payload (`info`, `data`) or its base64 twin (`b64info`, `b64data`, standard
/// alphabet, padded), which wins when non-empty.
fn payload(o: &Map<String, Value>, key: &str, b64key: &str) -> Result<Option<Bytes>, Invalid> {
    let b64 = string(o, b64key)?;
    if !b64.is_empty() {
        let bytes = base64::engine::general_purpose::STANDARD.decode(b64).map_err(|_| Invalid)?;
        return Ok(Some(Bytes::from(bytes)));
    }
    Ok(o.get(key).map(|v| Bytes::from(serde_json::to_vec(v).unwrap_or_default())))
}

/// `override`: `{"presence":{"value":true},...}`. An entry present as an object overrides
/// (`{}` with `false`); `null` leaves the namespace's option.
fn overrides(o: &Map<String, Value>) -> Result<Overrides, Invalid> {
    let ov = match o.get("override") {
        None | Some(Value::Null) => return Ok(Overrides::default()),
        Some(Value::Object(ov)) => ov,
        Some(_) => return Err(Invalid),
    };
    let get = |k: &str| match ov.get(k) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Object(b)) => match b.get("value") {
            None | Some(Value::Null) => Ok(Some(false)),
            Some(Value::Bool(v)) => Ok(Some(*v)),
            Some(_) => Err(Invalid),
        },
        Some(_) => Err(Invalid),
    };
    Ok(Overrides {
        presence: get("presence")?,
        join_leave: get("join_leave")?,
        force_recovery: get("force_recovery")?,
        force_positioning: get("force_positioning")?,
        force_push_join_leave: get("force_push_join_leave")?,
    })
}

/// The user: the claim named `user_claim` when set (a string, or a number's text), else
/// `sub`. `sub` must be a string in any case (Centrifugo decodes it as one).
fn user(claims: &Map<String, Value>, user_claim: &str) -> Result<String, Invalid> {
    let sub = string(claims, "sub")?;
    if user_claim.is_empty() {
        return Ok(sub);
    }
    match claims.get(user_claim) {
        Some(Value::String(u)) => Ok(u.clone()),
        Some(Value::Number(n)) => Ok(n.to_string()),
        None | Some(Value::Null) => Ok(String::new()),
        Some(_) => Err(Invalid),
    }
}

/// Reads a verified connection token. `subs` (when non-empty) wins over `channels`.
pub(super) fn conn(claims: &Map<String, Value>, user_claim: &str) -> Result<ConnClaims, ConnRefused> {
    let inv = |_| ConnRefused::Invalid;
    // Only subscription tokens may name a channel.
    if !string(claims, "channel").map_err(inv)?.is_empty() {
        return Err(ConnRefused::Invalid);
    }
    let user = user(claims, user_claim).map_err(inv)?;
    let mut subs = Vec::new();
    let channels = match claims.get("channels") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(list)) => {
            list.iter().map(|c| c.as_str().map(str::to_string).ok_or(ConnRefused::Invalid)).collect::<Result<_, _>>()?
        }
        Some(_) => return Err(ConnRefused::Invalid),
    };
    match claims.get("subs") {
        None | Some(Value::Null) => {}
        Some(Value::Object(map)) => {
            for (channel, opts) in map {
                let sub = match opts {
                    Value::Null => ServerSub { channel: channel.clone(), ..Default::default() },
                    Value::Object(o) => ServerSub {
                        channel: channel.clone(),
                        info: payload(o, "info", "b64info").map_err(inv)?,
                        data: payload(o, "data", "b64data").map_err(inv)?,
                        overrides: overrides(o).map_err(inv)?,
                    },
                    _ => return Err(ConnRefused::Invalid),
                };
                subs.push(sub);
            }
        }
        Some(_) => return Err(ConnRefused::Invalid),
    }
    if subs.is_empty() {
        subs = channels.into_iter().map(|channel| ServerSub { channel, ..Default::default() }).collect();
    }
    let info = match payload(claims, "info", "b64info") {
        Ok(i) => i,
        // A malformed `b64info` string is Centrifugo's internal error; a non-string is invalid.
        Err(_) if string(claims, "b64info").is_ok() => return Err(ConnRefused::BadInfo),
        Err(_) => return Err(ConnRefused::Invalid),
    };
    let meta = match claims.get("meta") {
        None | Some(Value::Null) => None,
        Some(v) => Some(Bytes::from(serde_json::to_vec(v).unwrap_or_default())),
    };
    Ok(ConnClaims { user, expire_at: token::expiry(claims), info, subs, hidden: false, meta })
}

/// Reads a verified subscription token; the `channel` claim is required.
pub(super) fn sub(claims: &Map<String, Value>, user_claim: &str) -> Result<SubClaims, Invalid> {
    let channel = string(claims, "channel")?;
    if channel.is_empty() {
        return Err(Invalid);
    }
    Ok(SubClaims {
        channel,
        user: user(claims, user_claim)?,
        client: string(claims, "client")?,
        info: payload(claims, "info", "b64info")?,
        data: payload(claims, "data", "b64data")?,
        overrides: overrides(claims)?,
        expire_at: token::expiry(claims),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn obj(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn overrides_as_centrifugo_reads_them() {
        let o = overrides(&obj(json!({"override": {
            "presence": {"value": true}, "join_leave": {}, "force_recovery": null,
            "force_positioning": {"value": false}, "force_push_join_leave": {"value": null}
        }})))
        .unwrap();
        assert_eq!(o.presence, Some(true));
        assert_eq!(o.join_leave, Some(false));
        assert_eq!(o.force_recovery, None);
        assert_eq!(o.force_positioning, Some(false));
        assert_eq!(o.force_push_join_leave, Some(false));
        assert_eq!(overrides(&obj(json!({"override": null}))).unwrap(), Overrides::default());
        for bad in [json!(true), json!({"presence": true}), json!({"presence": {"value": "yes"}})] {
            assert_eq!(overrides(&obj(json!({ "override": bad }))), Err(Invalid), "{bad}");
        }
    }

    #[test]
    fn payloads() {
        let p = |v: Value| payload(&obj(v), "data", "b64data");
        assert_eq!(p(json!({})).unwrap(), None);
        assert_eq!(p(json!({"data": {"a": 1}})).unwrap().unwrap(), &b"{\"a\":1}"[..]);
        assert_eq!(p(json!({"data": null})).unwrap().unwrap(), &b"null"[..]);
        assert_eq!(p(json!({"data": 1, "b64data": "eyJiIjoyfQ=="})).unwrap().unwrap(), &b"{\"b\":2}"[..]);
        assert_eq!(p(json!({"data": 1, "b64data": ""})).unwrap().unwrap(), &b"1"[..]);
        assert_eq!(p(json!({"b64data": "!!"})), Err(Invalid));
        assert_eq!(p(json!({"b64data": 5})), Err(Invalid));
    }

    #[test]
    fn connection_claims() {
        let c = conn(&obj(json!({"sub": "u", "channels": ["a", "b"]})), "").unwrap();
        assert_eq!(c.subs.iter().map(|s| s.channel.as_str()).collect::<Vec<_>>(), ["a", "b"]);
        let c = conn(&obj(json!({"sub": "u", "channels": ["a"], "subs": {}})), "").unwrap();
        assert_eq!(c.subs.len(), 1, "an empty subs leaves channels in force");
        let c = conn(&obj(json!({"sub": "u", "channels": ["a"], "subs": {"x": {"data": 1}, "y": null}})), "").unwrap();
        assert_eq!(c.subs.len(), 2);
        assert_eq!(c.subs[0].data.as_deref(), Some(&b"1"[..]));
        let c = conn(&obj(json!({"sub": null, "uid": 42, "channel": ""})), "uid").unwrap();
        assert_eq!(c.user, "42");
        for bad in [
            json!({"channel": "x"}),
            json!({"channel": 1}),
            json!({"sub": 42}),
            json!({"channels": "a"}),
            json!({"channels": [1]}),
            json!({"subs": ["a"]}),
            json!({"subs": {"a": true}}),
            json!({"subs": {"a": {"b64info": "%"}}}),
            json!({"b64info": 1}),
        ] {
            assert_eq!(conn(&obj(bad.clone()), "").unwrap_err(), ConnRefused::Invalid, "{bad}");
        }
        assert_eq!(conn(&obj(json!({"b64info": "%"})), "").unwrap_err(), ConnRefused::BadInfo);
    }

    #[test]
    fn subscription_claims() {
        let s = sub(&obj(json!({"sub": "u", "channel": "c", "client": "id", "b64data": "MQ==", "expire_at": 0})), "")
            .unwrap();
        assert_eq!((s.user.as_str(), s.channel.as_str(), s.client.as_str()), ("u", "c", "id"));
        assert_eq!(s.data.as_deref(), Some(&b"1"[..]));
        assert_eq!(s.expire_at, 0);
        for bad in [json!({"sub": "u"}), json!({"channel": ""}), json!({"channel": "c", "client": 1})] {
            assert_eq!(sub(&obj(bad.clone()), "").unwrap_err(), Invalid, "{bad}");
        }
    }
}
