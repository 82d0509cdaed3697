//! `mesh.send`, `mesh.publish` and `conn.call`: find the client (on any worker, then on any
//! node) and act on its connection, or publish to a channel for every kind of subscriber.

use std::rc::Rc;
use std::sync::Arc;

use bytes::Bytes;
use serde_json::{json, Map, Value};

use crate::error::ApiError;
use crate::model::{Payload, Publish};
use crate::runtime::worker::Worker;
use crate::shard::{owner_of, ShardOp};

/// A connection `mesh.send` and `conn.call` can act on (implemented by the client session).
pub trait MeshTarget {
    /// `mesh.send` to this connection.
    fn mesh_send(&self, data: &MeshData) -> Result<(), String>;
    /// `conn.call` on this connection.
    fn mesh_call(
        self: Rc<Self>,
        f: String,
        args: Vec<Value>,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), MeshError>>>>;
}

/// A gateway error: code and message, as `{"E":{"c":..,"m":..}}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MeshError {
    pub code: u32,
    pub message: String,
}

impl MeshError {
    pub fn new(code: u32, message: impl Into<String>) -> Self {
        MeshError { code, message: message.into() }
    }
    pub fn bad(message: impl Into<String>) -> Self {
        MeshError::new(101, message)
    }
}

/// Data of a send or publish: `t` = "text" (default) or "binary" (`d` in base64).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MeshData {
    Text(Bytes),
    Binary(Bytes),
}

impl MeshData {
    pub fn parse(p: &Map<String, Value>) -> Result<MeshData, MeshError> {
        use base64::Engine;
        let d = match p.get("d") {
            Some(Value::String(s)) => s.as_str(),
            Some(Value::Null) | None => "",
            Some(_) => return Err(MeshError::bad("invalid argument: d must be a string")),
        };
        match p.get("t").and_then(Value::as_str).unwrap_or("text") {
            "text" | "" => Ok(MeshData::Text(Bytes::copy_from_slice(d.as_bytes()))),
            "binary" => base64::engine::general_purpose::STANDARD
                .decode(d)
                .map(|b| MeshData::Binary(b.into()))
                .map_err(|_| MeshError::bad("invalid argument: d is not base64")),
            _ => Err(MeshError::bad("invalid argument: t must be text or binary")),
        }
    }

    /// As a publication payload: text that is JSON stays as it is, other text becomes a JSON
    /// string; binary stays binary.
    pub fn payload(&self) -> Payload {
        match self {
            MeshData::Text(b) if crate::model::is_json(b) => Payload { bytes: b.clone(), binary: false },
            MeshData::Text(b) => {
                let s = serde_json::to_vec(&String::from_utf8_lossy(b)).unwrap_or_default();
                Payload { bytes: s.into(), binary: false }
            }
            MeshData::Binary(b) => Payload { bytes: b.clone(), binary: true },
        }
    }

    fn to_json(&self) -> Value {
        use base64::Engine;
        match self {
            MeshData::Text(b) => json!({"t": "text", "d": String::from_utf8_lossy(b)}),
            MeshData::Binary(b) => json!({"t": "binary", "d": base64::engine::general_purpose::STANDARD.encode(b)}),
        }
    }
}

/// An action on one client connection.
#[derive(Debug, Clone)]
pub enum MeshOp {
    Send { client: Arc<str>, data: MeshData },
    Call { client: Arc<str>, f: String, args: Vec<Value> },
}

impl MeshOp {
    pub fn client(&self) -> &str {
        match self {
            MeshOp::Send { client, .. } | MeshOp::Call { client, .. } => client,
        }
    }

    /// The "client not found" error of this kind of action.
    fn not_found(&self) -> MeshError {
        match self {
            MeshOp::Send { .. } => MeshError::new(401, "failed to send: client not found"),
            MeshOp::Call { .. } => MeshError::new(301, "execution failed: client not found"),
        }
    }

    pub fn to_json(&self) -> Value {
        match self {
            MeshOp::Send { client, data } => {
                let mut v = data.to_json();
                v["op"] = json!("send");
                v["c"] = json!(&**client);
                v
            }
            MeshOp::Call { client, f, args } => json!({"op": "call", "c": &**client, "f": f, "a": args}),
        }
    }

    pub fn from_json(v: &Value) -> Option<MeshOp> {
        let o = v.as_object()?;
        let client: Arc<str> = o.get("c")?.as_str()?.into();
        match o.get("op")?.as_str()? {
            "send" => Some(MeshOp::Send { client, data: MeshData::parse(o).ok()? }),
            "call" => Some(MeshOp::Call {
                client,
                f: o.get("f")?.as_str()?.to_string(),
                args: o.get("a")?.as_array()?.clone(),
            }),
            _ => None,
        }
    }
}

/// Parses `conn.call` params `{c, f, a}`.
pub fn parse_call(p: &Map<String, Value>) -> Result<MeshOp, MeshError> {
    let client = client_param(p)?;
    let f = p.get("f").and_then(Value::as_str).ok_or_else(|| MeshError::bad("invalid parameter: f"))?;
    if !matches!(f, "set_context_value" | "set_context" | "subscribe" | "unsubscribe") {
        return Err(MeshError::bad(format!("invalid parameter: unknown function {f:?}")));
    }
    let args = match p.get("a") {
        Some(Value::Array(a)) => a.clone(),
        None | Some(Value::Null) => Vec::new(),
        Some(_) => return Err(MeshError::bad("invalid parameter: a must be an array")),
    };
    check_args(f, &args)?;
    Ok(MeshOp::Call { client, f: f.to_string(), args })
}

/// Parses `mesh.send` params `{c, d, t}`.
pub fn parse_send(p: &Map<String, Value>) -> Result<MeshOp, MeshError> {
    Ok(MeshOp::Send { client: client_param(p)?, data: MeshData::parse(p)? })
}

fn client_param(p: &Map<String, Value>) -> Result<Arc<str>, MeshError> {
    match p.get("c") {
        Some(Value::String(s)) if !s.is_empty() => Ok(s.as_str().into()),
        Some(Value::Number(n)) => Ok(n.to_string().into()),
        _ => Err(MeshError::bad("invalid argument: c (client id) is required")),
    }
}

fn check_args(f: &str, args: &[Value]) -> Result<(), MeshError> {
    let ok = match f {
        "set_context_value" => args.len() == 2 && args[0].is_string(),
        "set_context" => args.len() == 1 && args[0].is_object(),
        _ => !args.is_empty() && args.iter().all(|a| a.as_str().is_some_and(|s| !s.is_empty())),
    };
    if ok {
        Ok(())
    } else {
        Err(MeshError::bad(format!("invalid parameter: bad arguments for {f}")))
    }
}

/// Runs a mesh action wherever its client is: this node's workers first, then (Redis engine)
/// the other nodes.
pub async fn run(w: &Rc<Worker>, op: MeshOp) -> Result<(), MeshError> {
    if let Some(r) = run_local(w, Arc::new(op.clone())).await {
        return r;
    }
    if let Some(r) = run_remote(w, &op).await {
        return r;
    }
    Err(op.not_found())
}

/// Runs a mesh action on this node's connection of its client: `None` when no worker has it.
async fn run_local(w: &Rc<Worker>, op: Arc<MeshOp>) -> Option<Result<(), MeshError>> {
    let calls = w.ask_all(move |w, a| {
        let target = super::local(w).targets.borrow().get(op.client()).and_then(|t| t.upgrade());
        let Some(target) = target else { return a.send(w, None) };
        match &*op {
            MeshOp::Send { data, .. } => a.send(w, Some(target.mesh_send(data).map_err(|m| (401, m)))),
            MeshOp::Call { f, args, .. } => {
                let (w, f, args) = (w.clone(), f.clone(), args.clone());
                monoio::spawn(async move {
                    let r = target.mesh_call(f, args).await.map_err(|e| (e.code, e.message));
                    a.send(&w, Some(r));
                });
            }
        }
    });
    let mut result = None;
    for c in calls {
        if let Some(r) = c.await {
            result.get_or_insert(r);
        }
    }
    result.map(|r| r.map_err(|(code, m)| MeshError::new(code, m)))
}

/// A gateway action for a client on another node: `None` when no node has the client.
async fn run_remote(w: &Rc<Worker>, op: &MeshOp) -> Option<Result<(), MeshError>> {
    let found = |p: &Value| p.get("found").and_then(Value::as_bool).unwrap_or(false);
    let question = json!({"kind": "mesh", "op": op.to_json()});
    let parts = crate::cluster::survey(w, question, |parts| parts.iter().any(found)).await;
    let hit = parts.iter().find(|p| found(p))?;
    Some(match hit.get("err").and_then(Value::as_array) {
        Some(e) => Err(MeshError::new(
            e.first().and_then(Value::as_u64).unwrap_or(301) as u32,
            e.get(1).and_then(Value::as_str).unwrap_or("execution failed"),
        )),
        None => Ok(()),
    })
}

/// Another node's `mesh` survey: runs the action here if this node has the client,
/// answering `{"found": bool, "err": [code, msg] | null}`.
pub fn answer_survey(w: Rc<Worker>, question: Value) -> std::pin::Pin<Box<dyn std::future::Future<Output = Value>>> {
    Box::pin(async move {
        let Some(op) = question.get("op").and_then(MeshOp::from_json) else { return Value::Null };
        match run_local(&w, Arc::new(op)).await {
            Some(r) => json!({"found": true, "err": r.err().map(|e| json!([e.code, e.message]))}),
            None => json!({"found": false, "err": null}),
        }
    })
}

/// `mesh.publish`: publishes to the channel (every kind of subscriber receives it) and counts
/// the subscribers this node had for it.
pub async fn publish(w: &Rc<Worker>, p: &Map<String, Value>) -> Result<(u64, u64), MeshError> {
    let channel = match p.get("c") {
        Some(Value::String(s)) if !s.is_empty() && !s.chars().any(char::is_whitespace) => s.as_str(),
        _ => return Err(MeshError::bad("invalid argument: c must be a channel name without spaces")),
    };
    let data = MeshData::parse(p)?;
    crate::exec::check_channel(&w.cfg, channel)
        .map_err(|e| MeshError::bad(format!("invalid argument: {}", e.message)))?;
    let publish = Publish::new(channel, data.payload());
    let name: Box<str> = channel.into();
    let count = w.ask(owner_of(channel, w.workers), move |w, a| a.send(w, w.shard.borrow().subscriber_count(&name)));
    let published = w.call_shard(ShardOp::Publish(publish));
    let n = count.await;
    match published.await {
        Ok(_) => Ok((n, 0)),
        Err(e) if e == ApiError::INTERNAL => Err(MeshError::new(101, "publish failed: internal error")),
        Err(e) => Err(MeshError::bad(format!("invalid argument: {}", e.message))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn obj(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn parses_data_and_payloads() {
        assert_eq!(MeshData::parse(&obj(json!({"d": "hi"}))).unwrap(), MeshData::Text(Bytes::from_static(b"hi")));
        assert_eq!(
            MeshData::parse(&obj(json!({"d": "AAE=", "t": "binary"}))).unwrap(),
            MeshData::Binary(Bytes::from_static(&[0, 1]))
        );
        assert!(MeshData::parse(&obj(json!({"d": "!!", "t": "binary"}))).is_err());
        assert!(MeshData::parse(&obj(json!({"d": 5}))).is_err());
        assert!(MeshData::parse(&obj(json!({"d": "x", "t": "other"}))).is_err());
        assert_eq!(&MeshData::Text(Bytes::from_static(b"hi")).payload().bytes[..], b"\"hi\"");
        assert_eq!(&MeshData::Text(Bytes::from_static(b"{\"a\":1}")).payload().bytes[..], b"{\"a\":1}");
        assert!(MeshData::Binary(Bytes::from_static(b"\x00")).payload().binary);
    }

    #[test]
    fn parses_calls_and_round_trips_ops() {
        let c = parse_call(&obj(json!({"c": "12", "f": "set_context_value", "a": ["uid", 7]}))).unwrap();
        assert_eq!(MeshOp::from_json(&c.to_json()).map(|o| o.to_json()), Some(c.to_json()));
        assert!(parse_call(&obj(json!({"c": "12", "f": "nope", "a": []}))).is_err());
        assert!(parse_call(&obj(json!({"c": "12", "f": "subscribe", "a": []}))).is_err());
        assert!(parse_call(&obj(json!({"c": "12", "f": "set_context", "a": [1]}))).is_err());
        assert!(parse_call(&obj(json!({"f": "subscribe", "a": ["x"]}))).is_err());
        let s = parse_send(&obj(json!({"c": 42, "d": "AAE=", "t": "binary"}))).unwrap();
        assert_eq!(s.client(), "42");
        assert_eq!(MeshOp::from_json(&s.to_json()).map(|o| o.to_json()), Some(s.to_json()));
    }
}
