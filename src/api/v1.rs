//! The v1 server API of Centrifugo 1.x, as its `cent` client (PyPI `cent` 2.x) speaks it: the
//! body is one command object or an array of them, `{"method": "publish", "params": {...}}`
//! (with an optional `uid`), and the answer an array with one reply per command, in order,
//! `{"method": "publish", "error": null, "body": ...}` (`uid` echoed when set; a failed
//! command has `"error": "<text>"` and maybe `"advice": "fix"`).
//!
//! Each method maps onto today's [`Command`]; `stats` and `node` answer from `info`. As in
//! Centrifugo 1.x a body that is not such JSON, an unknown method, params that do not decode
//! or a publish without channel or data make the whole request a `400 Bad Request` (here no
//! command of such a request runs).

use serde::Deserialize;
use serde_json::value::RawValue;

use super::{Broadcast, Command, DisconnectCmd, Res, Target, Unsubscribe};
use crate::error::ApiError;
use crate::model::{ClientInfo, History, NodeInfo, Payload, Publication, Publish};
use crate::wire::json::{int, raw_json, string};

/// What a v1 command asks for.
#[derive(Debug, Clone)]
pub enum Op {
    /// A command today's executor runs as it is.
    Run(Command),
    /// A `broadcast` that failed its own checks (1.x answered it with an error, not a 400).
    Refused(ApiError),
    /// `stats`: every node, from `info`.
    Stats,
    /// `node`: this node, from `info`.
    Node,
}

/// One decoded v1 command.
#[derive(Debug, Clone)]
pub struct V1Command {
    pub method: &'static str,
    pub uid: String,
    pub op: Op,
}

/// Why a v1 request is refused as a whole (`400 Bad Request`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invalid(pub String);

#[derive(Deserialize)]
struct RawCommand<'a> {
    #[serde(default)]
    uid: String,
    #[serde(default)]
    method: String,
    #[serde(borrow, default)]
    params: Option<&'a RawValue>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct PublishP<'a> {
    channel: String,
    #[serde(borrow)]
    data: Option<&'a RawValue>,
    channels: Vec<String>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct UserP {
    user: String,
    channel: String,
}

const METHODS: [&str; 9] =
    ["publish", "broadcast", "unsubscribe", "disconnect", "presence", "history", "channels", "stats", "node"];

fn invalid(e: impl std::fmt::Display) -> Invalid {
    Invalid(e.to_string())
}

fn data_payload(data: Option<&RawValue>) -> Option<Payload> {
    data.map(|d| Payload { bytes: bytes::Bytes::copy_from_slice(d.get().as_bytes()), binary: false })
}

fn params_of<'a, T: Deserialize<'a> + Default>(params: Option<&'a RawValue>) -> Result<T, Invalid> {
    match params {
        None => Ok(T::default()),
        Some(p) if p.get() == "null" => Ok(T::default()),
        Some(p) => serde_json::from_str(p.get()).map_err(invalid),
    }
}

/// Decodes a v1 request body.
pub fn decode(body: &[u8]) -> Result<Vec<V1Command>, Invalid> {
    let first = body.iter().copied().find(|b| !b.is_ascii_whitespace());
    let raws: Vec<RawCommand> = match first {
        Some(b'{') => vec![serde_json::from_slice(body).map_err(invalid)?],
        Some(b'[') => serde_json::from_slice(body).map_err(invalid)?,
        _ => return Err(Invalid("invalid message".into())),
    };
    raws.into_iter().map(command).collect()
}

fn command(raw: RawCommand) -> Result<V1Command, Invalid> {
    let method = METHODS
        .iter()
        .copied()
        .find(|m| *m == raw.method)
        .ok_or_else(|| Invalid(format!("method not found: {:?}", raw.method)))?;
    let op = match method {
        "publish" => {
            let p: PublishP = params_of(raw.params)?;
            let data = data_payload(p.data).filter(|_| !p.channel.is_empty());
            let data = data.ok_or_else(|| Invalid("publish needs channel and data".into()))?;
            Op::Run(Command::Publish(Publish::new(p.channel, data)))
        }
        "broadcast" => {
            let p: PublishP = params_of(raw.params)?;
            match data_payload(p.data) {
                Some(data) if !p.channels.is_empty() && p.channels.iter().all(|c| !c.is_empty()) => {
                    Op::Run(Command::Broadcast(Broadcast {
                        channels: p.channels.into_iter().map(String::into_boxed_str).collect(),
                        publish: Publish::new("", data),
                    }))
                }
                _ => Op::Refused(ApiError::BAD_REQUEST),
            }
        }
        "unsubscribe" | "disconnect" => {
            let p: UserP = params_of(raw.params)?;
            let target = Target { user: p.user.into(), client: "".into(), session: "".into() };
            if method == "unsubscribe" {
                Op::Run(Command::Unsubscribe(Unsubscribe { target, channel: p.channel.into() }))
            } else {
                Op::Run(Command::Disconnect(DisconnectCmd {
                    target,
                    whitelist: Vec::new(),
                    code: 3503,
                    reason: "force disconnect".into(),
                }))
            }
        }
        "presence" => Op::Run(Command::Presence { channel: params_of::<UserP>(raw.params)?.channel.into() }),
        "history" => {
            let channel = params_of::<UserP>(raw.params)?.channel.into();
            Op::Run(Command::History(History { channel, limit: -1, since: None, reverse: true }))
        }
        "channels" => Op::Run(Command::Channels { pattern: "".into() }),
        "stats" => Op::Stats,
        _ => Op::Node,
    };
    Ok(V1Command { method, uid: raw.uid, op })
}

/// Centrifugo 1.x's text for an error, and its advice.
fn v1_error(e: &ApiError) -> (&'static str, &'static str) {
    match e.code {
        102 => ("namespace not found", "fix"),
        107 => ("invalid message", "fix"),
        100 => ("internal server error", ""),
        101 => ("unauthorized", ""),
        103 => ("permission denied", ""),
        104 => ("method not found", ""),
        106 => ("limit exceeded", ""),
        108 => ("not available", ""),
        _ => (e.message, ""),
    }
}

fn client_info(out: &mut Vec<u8>, c: &ClientInfo) {
    out.push(b'{');
    if let Some(i) = &c.conn_info {
        out.extend_from_slice(b"\"default_info\":");
        raw_json(out, i);
        out.push(b',');
    }
    if let Some(i) = &c.chan_info {
        out.extend_from_slice(b"\"channel_info\":");
        raw_json(out, i);
        out.push(b',');
    }
    out.extend_from_slice(b"\"user\":");
    string(out, &c.user);
    out.extend_from_slice(b",\"client\":");
    string(out, &c.client);
    out.push(b'}');
}

fn message(out: &mut Vec<u8>, channel: &str, p: &Publication) {
    out.extend_from_slice(b"{\"uid\":\"");
    int(out, p.offset);
    out.push(b'"');
    if let Some(info) = &p.info {
        out.extend_from_slice(b",\"client\":");
        string(out, &info.client);
        out.extend_from_slice(b",\"info\":");
        client_info(out, info);
    }
    out.extend_from_slice(b",\"channel\":");
    string(out, channel);
    out.extend_from_slice(b",\"data\":");
    if p.data.json_ok() {
        raw_json(out, &p.data.bytes);
    } else {
        use base64::Engine;
        string(out, &base64::engine::general_purpose::STANDARD.encode(&p.data.bytes));
    }
    out.push(b'}');
}

fn node_info(out: &mut Vec<u8>, n: &NodeInfo, started_at: u64) {
    out.extend_from_slice(b"{\"uid\":");
    string(out, &n.uid);
    out.extend_from_slice(b",\"version\":");
    string(out, &n.version);
    out.extend_from_slice(b",\"name\":");
    string(out, &n.name);
    out.extend_from_slice(b",\"started_at\":");
    int(out, started_at.saturating_sub(n.uptime));
    out.extend_from_slice(b",\"metrics\":{\"node_num_clients\":");
    int(out, n.num_clients);
    out.extend_from_slice(b",\"node_num_unique_clients\":");
    int(out, n.num_users);
    out.extend_from_slice(b",\"node_num_channels\":");
    int(out, n.num_channels);
    out.extend_from_slice(b",\"node_num_subscriptions\":");
    int(out, n.num_subs);
    out.extend_from_slice(b",\"node_uptime_seconds\":");
    int(out, n.uptime);
    out.extend_from_slice(b"}}");
}

/// Writes one reply. `reply` is the outcome of the command's [`Op`] (`info`'s for `stats` and
/// `node`); `now` (Unix seconds) dates the nodes' `started_at`; `this_node` picks `node`'s one.
pub fn encode_reply(out: &mut Vec<u8>, cmd: &V1Command, reply: &Result<Res, ApiError>, now: u64, this_node: &str) {
    out.push(b'{');
    if !cmd.uid.is_empty() {
        out.extend_from_slice(b"\"uid\":");
        string(out, &cmd.uid);
        out.push(b',');
    }
    out.extend_from_slice(b"\"method\":");
    string(out, cmd.method);
    // A broadcast answers its first failed channel, as 1.x did.
    let failed = match reply {
        Err(e) => Some(*e),
        Ok(Res::Broadcast(items)) => items.iter().find_map(|r| r.as_ref().err().copied()),
        Ok(_) => None,
    };
    out.extend_from_slice(b",\"error\":");
    match failed {
        Some(e) => {
            let (text, advice) = v1_error(&e);
            string(out, text);
            if !advice.is_empty() {
                out.extend_from_slice(b",\"advice\":");
                string(out, advice);
            }
        }
        None => out.extend_from_slice(b"null"),
    }
    out.extend_from_slice(b",\"body\":");
    body(out, cmd, reply.as_ref().ok(), now, this_node);
    out.push(b'}');
}

fn body(out: &mut Vec<u8>, cmd: &V1Command, res: Option<&Res>, now: u64, this_node: &str) {
    let channel = match &cmd.op {
        Op::Run(Command::Presence { channel }) => channel.as_ref(),
        Op::Run(Command::History(h)) => h.channel.as_ref(),
        _ => "",
    };
    match (cmd.method, res) {
        ("presence", res) => {
            out.extend_from_slice(b"{\"channel\":");
            string(out, channel);
            out.extend_from_slice(b",\"data\":");
            match res {
                Some(Res::Presence(clients)) => {
                    out.push(b'{');
                    for (i, c) in clients.iter().enumerate() {
                        if i > 0 {
                            out.push(b',');
                        }
                        string(out, &c.client);
                        out.push(b':');
                        client_info(out, c);
                    }
                    out.push(b'}');
                }
                _ => out.extend_from_slice(b"null"),
            }
            out.push(b'}');
        }
        ("history", res) => {
            out.extend_from_slice(b"{\"channel\":");
            string(out, channel);
            out.extend_from_slice(b",\"data\":");
            match res {
                Some(Res::History { publications, .. }) => {
                    out.push(b'[');
                    for (i, p) in publications.iter().enumerate() {
                        if i > 0 {
                            out.push(b',');
                        }
                        message(out, channel, p);
                    }
                    out.push(b']');
                }
                _ => out.extend_from_slice(b"null"),
            }
            out.push(b'}');
        }
        ("channels", res) => {
            out.extend_from_slice(b"{\"data\":");
            match res {
                Some(Res::Channels(list)) => {
                    out.push(b'[');
                    for (i, (name, _)) in list.iter().enumerate() {
                        if i > 0 {
                            out.push(b',');
                        }
                        string(out, name);
                    }
                    out.push(b']');
                }
                _ => out.extend_from_slice(b"null"),
            }
            out.push(b'}');
        }
        ("stats", Some(Res::Info(nodes))) => {
            out.extend_from_slice(b"{\"data\":{\"nodes\":[");
            for (i, n) in nodes.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                node_info(out, n, now);
            }
            out.extend_from_slice(b"],\"metrics_interval\":60}}");
        }
        ("node", Some(Res::Info(nodes))) => {
            out.extend_from_slice(b"{\"data\":");
            match nodes.iter().find(|n| n.uid == this_node).or(nodes.first()) {
                Some(n) => node_info(out, n, now),
                None => out.extend_from_slice(b"null"),
            }
            out.push(b'}');
        }
        _ => out.extend_from_slice(b"null"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_one_or_many_and_refuses_the_rest() {
        let one = decode(br#"{"method":"publish","params":{"channel":"a","data":{"x":1}},"uid":"u"}"#).unwrap();
        assert_eq!((one.len(), one[0].method, one[0].uid.as_str()), (1, "publish", "u"));
        let many = decode(br#"[{"method":"stats","params":{}},{"method":"channels"}]"#).unwrap();
        assert_eq!(many.len(), 2);
        assert!(decode(b"nope").is_err());
        assert!(decode(b"").is_err());
        assert!(decode(br#"[{"method":"nope","params":{}}]"#).is_err());
        assert!(decode(br#"[{"method":"publish","params":{"channel":"a"}}]"#).is_err());
        assert!(decode(br#"[{"method":"publish","params":{"channel":7,"data":1}}]"#).is_err());
        let b = decode(br#"[{"method":"broadcast","params":{"channels":[],"data":1}}]"#).unwrap();
        assert!(matches!(b[0].op, Op::Refused(_)));
    }

    #[test]
    fn replies_in_the_v1_shape() {
        let cmd = &decode(br#"{"method":"publish","params":{"channel":"a","data":1}}"#).unwrap()[0];
        let mut out = Vec::new();
        encode_reply(&mut out, cmd, &Ok(Res::Publish(None)), 0, "");
        assert_eq!(String::from_utf8(out).unwrap(), r#"{"method":"publish","error":null,"body":null}"#);
        let mut out = Vec::new();
        encode_reply(&mut out, cmd, &Err(ApiError::UNKNOWN_CHANNEL), 0, "");
        assert_eq!(
            String::from_utf8(out).unwrap(),
            r#"{"method":"publish","error":"namespace not found","advice":"fix","body":null}"#
        );
    }
}
