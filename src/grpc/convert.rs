//! Between the gRPC messages and the server API: requests become the JSON params of the same
//! method and go through `api::parse::decode_params` (the one door from bytes to a
//! [`Command`](crate::api::Command), so gRPC validates exactly like HTTP); results are built
//! from the executor's [`Res`].

use base64::Engine as _;
use serde_json::value::RawValue;
use serde_json::{json, Map, Value};

use super::pb;
use crate::api::Res;
use crate::error::ApiError;
use crate::model::{ClientInfo, NodeInfo, Publication, StreamPosition};

/// `data` bytes as JSON params: embedded as they are when they are JSON (so subscribers get
/// them byte for byte), else as `b64data`. A non-empty `b64data` field wins, as over HTTP.
fn put_data(m: &mut Map<String, Value>, key: &str, b64key: &str, data: Vec<u8>, b64: String) {
    if !b64.is_empty() {
        m.insert(b64key.into(), Value::String(b64));
        return;
    }
    if data.is_empty() {
        return;
    }
    match String::from_utf8(data) {
        Ok(text) if serde_json::from_str::<serde::de::IgnoredAny>(&text).is_ok() => {
            let raw = RawValue::from_string(text).expect("checked to be JSON");
            m.insert(key.into(), serde_json::to_value(raw).unwrap_or(Value::Null));
        }
        Ok(text) => {
            m.insert(b64key.into(), Value::String(base64::engine::general_purpose::STANDARD.encode(text)));
        }
        Err(e) => {
            let bytes = e.into_bytes();
            m.insert(b64key.into(), Value::String(base64::engine::general_purpose::STANDARD.encode(bytes)));
        }
    }
}

fn obj(v: Value) -> Map<String, Value> {
    match v {
        Value::Object(m) => m,
        _ => Map::new(),
    }
}

fn position(p: Option<pb::StreamPosition>) -> Value {
    p.map_or(Value::Null, |p| json!({"offset": p.offset, "epoch": p.epoch}))
}

pub fn publish(r: pb::PublishRequest) -> Value {
    let mut m = obj(json!({
        "channel": r.channel, "skip_history": r.skip_history,
        "idempotency_key": r.idempotency_key, "delta": r.delta, "version": r.version,
        "version_epoch": r.version_epoch,
    }));
    if !r.tags.is_empty() {
        m.insert("tags".into(), json!(r.tags));
    }
    put_data(&mut m, "data", "b64data", r.data, r.b64data);
    Value::Object(m)
}

pub fn map_publish(r: pb::MapPublishRequest) -> Value {
    let mut m = obj(json!({
        "channel": r.channel, "key": r.key, "idempotency_key": r.idempotency_key, "delta": r.delta,
        "version": r.version, "version_epoch": r.version_epoch, "key_mode": r.key_mode,
    }));
    if !r.tags.is_empty() {
        m.insert("tags".into(), json!(r.tags));
    }
    put_data(&mut m, "data", "b64data", r.data, r.b64data);
    Value::Object(m)
}

pub fn shared_poll_publish(r: pb::SharedPollPublishRequest) -> Value {
    let mut m = obj(json!({"channel": r.channel, "key": r.key, "version": r.version, "epoch": r.epoch}));
    put_data(&mut m, "data", "b64data", r.data, r.b64data);
    Value::Object(m)
}

/// A map publish or remove's result: offset, epoch, suppressed, suppress reason.
fn map_result(r: Res) -> (u64, String, bool, String) {
    match r {
        Res::MapUpdate(u) => (
            u.position.offset,
            u.position.epoch.to_string(),
            u.suppressed.is_some(),
            u.suppressed.unwrap_or_default().to_string(),
        ),
        _ => (0, String::new(), false, String::new()),
    }
}

pub fn map_publish_res(r: Res) -> pb::MapPublishResult {
    let (offset, epoch, suppressed, suppress_reason) = map_result(r);
    pb::MapPublishResult { offset, epoch, suppressed, suppress_reason }
}

pub fn map_remove_res(r: Res) -> pb::MapRemoveResult {
    let (offset, epoch, suppressed, suppress_reason) = map_result(r);
    pb::MapRemoveResult { offset, epoch, suppressed, suppress_reason }
}

pub fn map_stats_res(r: Res) -> pb::MapStatsResult {
    pb::MapStatsResult { num_keys: if let Res::MapStats(n) = r { n as i32 } else { 0 } }
}

pub fn map_remove(r: pb::MapRemoveRequest) -> Value {
    json!({"channel": r.channel, "key": r.key, "idempotency_key": r.idempotency_key})
}

pub fn map_read_state(r: pb::MapReadStateRequest) -> Value {
    json!({"channel": r.channel, "cursor": r.cursor, "limit": r.limit, "key": r.key, "revision_epoch": r.revision_epoch})
}

pub fn map_read_stream(r: pb::MapReadStreamRequest) -> Value {
    json!({"channel": r.channel, "since_offset": r.since_offset, "since_epoch": r.since_epoch, "limit": r.limit,
           "reverse": r.reverse})
}

fn map_entry(p: &Publication) -> pb::MapEntry {
    pb::MapEntry {
        key: p.key.as_deref().unwrap_or_default().to_string(),
        data: p.data.bytes.to_vec(),
        tags: p.tags.iter().flat_map(|t| t.iter()).map(|(k, v)| (k.to_string(), v.to_string())).collect(),
        offset: p.offset,
        removed: p.removed,
        ..Default::default()
    }
}

pub fn map_state_res(r: Res) -> pb::MapReadStateResult {
    let Res::MapState { entries, position, cursor } = r else { return pb::MapReadStateResult::default() };
    pb::MapReadStateResult {
        entries: entries.iter().map(map_entry).collect(),
        offset: position.offset,
        epoch: position.epoch.to_string(),
        cursor,
    }
}

pub fn map_stream_res(r: Res) -> pb::MapReadStreamResult {
    let Res::MapState { entries, position, .. } = r else { return pb::MapReadStreamResult::default() };
    pb::MapReadStreamResult {
        entries: entries.iter().map(map_entry).collect(),
        offset: position.offset,
        epoch: position.epoch.to_string(),
    }
}

pub fn broadcast(r: pb::BroadcastRequest) -> Value {
    let mut m = obj(json!({
        "channels": r.channels, "skip_history": r.skip_history,
        "idempotency_key": r.idempotency_key, "delta": r.delta, "version": r.version,
        "version_epoch": r.version_epoch,
    }));
    if !r.tags.is_empty() {
        m.insert("tags".into(), json!(r.tags));
    }
    put_data(&mut m, "data", "b64data", r.data, r.b64data);
    Value::Object(m)
}

pub fn subscribe(r: pb::SubscribeRequest) -> Value {
    let mut m = obj(json!({
        "channel": r.channel, "user": r.user, "expire_at": r.expire_at, "client": r.client,
        "session": r.session, "recover_since": position(r.recover_since),
    }));
    if let Some(o) = r.r#override {
        let b = |v: Option<pb::BoolValue>| v.map_or(Value::Null, |v| json!({"value": v.value}));
        m.insert(
            "override".into(),
            json!({
                "presence": b(o.presence), "join_leave": b(o.join_leave),
                "force_recovery": b(o.force_recovery), "force_positioning": b(o.force_positioning),
                "force_push_join_leave": b(o.force_push_join_leave),
            }),
        );
    }
    put_data(&mut m, "info", "b64info", r.info, r.b64info);
    put_data(&mut m, "data", "b64data", r.data, r.b64data);
    strip_nulls(Value::Object(m))
}

pub fn unsubscribe(r: pb::UnsubscribeRequest) -> Value {
    json!({"channel": r.channel, "user": r.user, "client": r.client, "session": r.session})
}

pub fn disconnect(r: pb::DisconnectRequest) -> Value {
    let mut m = obj(json!({
        "user": r.user, "client": r.client, "session": r.session, "whitelist": r.whitelist,
    }));
    if let Some(d) = r.disconnect {
        m.insert("disconnect".into(), json!({"code": d.code, "reason": d.reason}));
    }
    Value::Object(m)
}

pub fn refresh(r: pb::RefreshRequest) -> Value {
    let mut m = obj(json!({
        "user": r.user, "client": r.client, "session": r.session, "expired": r.expired,
        "expire_at": r.expire_at,
    }));
    put_data(&mut m, "info", "b64info", r.info, String::new());
    Value::Object(m)
}

pub fn channel(channel: String) -> Value {
    json!({ "channel": channel })
}

pub fn history(r: pb::HistoryRequest) -> Value {
    strip_nulls(json!({
        "channel": r.channel, "limit": r.limit, "since": position(r.since), "reverse": r.reverse,
    }))
}

pub fn channels(r: pb::ChannelsRequest) -> Value {
    json!({ "pattern": r.pattern })
}

pub fn rpc(r: pb::RpcRequest) -> Value {
    json!({ "method": r.method })
}

/// A batch: `{"commands":[{"<method>": params}, ...], "parallel": bool}`.
pub fn batch(r: pb::BatchRequest) -> Value {
    let commands: Vec<Value> = r
        .commands
        .into_iter()
        .map(|c| {
            let (name, params) = if let Some(p) = c.publish {
                ("publish", publish(p))
            } else if let Some(p) = c.broadcast {
                ("broadcast", broadcast(p))
            } else if let Some(p) = c.subscribe {
                ("subscribe", subscribe(p))
            } else if let Some(p) = c.unsubscribe {
                ("unsubscribe", unsubscribe(p))
            } else if let Some(p) = c.disconnect {
                ("disconnect", disconnect(p))
            } else if let Some(p) = c.presence {
                ("presence", channel(p.channel))
            } else if let Some(p) = c.presence_stats {
                ("presence_stats", channel(p.channel))
            } else if let Some(p) = c.history {
                ("history", history(p))
            } else if let Some(p) = c.history_remove {
                ("history_remove", channel(p.channel))
            } else if c.info.is_some() {
                ("info", json!({}))
            } else if let Some(p) = c.rpc {
                ("rpc", rpc(p))
            } else if let Some(p) = c.refresh {
                ("refresh", refresh(p))
            } else if let Some(p) = c.channels {
                ("channels", channels(p))
            } else if let Some(p) = c.map_publish {
                ("map_publish", map_publish(p))
            } else if let Some(p) = c.map_remove {
                ("map_remove", map_remove(p))
            } else if let Some(p) = c.map_read_state {
                ("map_read_state", map_read_state(p))
            } else if let Some(p) = c.map_read_stream {
                ("map_read_stream", map_read_stream(p))
            } else if let Some(p) = c.map_stats {
                ("map_stats", channel(p.channel))
            } else if let Some(p) = c.map_clear {
                ("map_clear", channel(p.channel))
            } else if let Some(p) = c.shared_poll_publish {
                ("shared_poll_publish", shared_poll_publish(p))
            } else {
                // An empty command: the batch decoder answers it as unknown (104).
                ("", json!({}))
            };
            json!({ name: params })
        })
        .collect();
    json!({"commands": commands, "parallel": r.parallel})
}

/// JSON `null`s dropped from an object, so absent proto messages read as absent fields.
fn strip_nulls(v: Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(m.into_iter().filter(|(_, v)| !v.is_null()).collect()),
        v => v,
    }
}

// ---------------------------------------------------------------------------------------
// Results.

pub fn error(e: &ApiError) -> pb::Error {
    pb::Error { code: e.code, message: e.message.to_string() }
}

fn publish_result(p: &Option<StreamPosition>) -> pb::PublishResult {
    match p {
        Some(p) => pb::PublishResult { offset: p.offset, epoch: p.epoch.to_string() },
        None => pb::PublishResult::default(),
    }
}

fn client_info(c: &ClientInfo) -> pb::ClientInfo {
    pb::ClientInfo {
        user: c.user.to_string(),
        client: c.client.to_string(),
        conn_info: c.conn_info.as_ref().map(|b| b.to_vec()).unwrap_or_default(),
        chan_info: c.chan_info.as_ref().map(|b| b.to_vec()).unwrap_or_default(),
    }
}

fn publication(p: &Publication) -> pb::Publication {
    pb::Publication {
        data: p.data.bytes.to_vec(),
        info: p.info.as_deref().map(client_info),
        offset: p.offset,
        tags: p.tags.iter().flat_map(|t| t.iter()).map(|(k, v)| (k.to_string(), v.to_string())).collect(),
    }
}

fn node(n: &NodeInfo) -> pb::NodeResult {
    pb::NodeResult {
        uid: n.uid.clone(),
        name: n.name.clone(),
        version: n.version.clone(),
        num_clients: n.num_clients as u32,
        num_users: n.num_users as u32,
        num_channels: n.num_channels as u32,
        uptime: n.uptime as u32,
        metrics: None,
        process: None,
        num_subs: n.num_subs as u32,
    }
}

pub fn publish_res(r: Res) -> pb::PublishResult {
    match r {
        Res::Publish(p) => publish_result(&p),
        _ => pb::PublishResult::default(),
    }
}

pub fn broadcast_res(r: Res) -> pb::BroadcastResult {
    let Res::Broadcast(items) = r else { return pb::BroadcastResult::default() };
    pb::BroadcastResult {
        responses: items
            .iter()
            .map(|i| match i {
                Ok(p) => pb::PublishResponse { error: None, result: Some(publish_result(p)) },
                Err(e) => pb::PublishResponse { error: Some(error(e)), result: None },
            })
            .collect(),
    }
}

pub fn presence_res(r: Res) -> pb::PresenceResult {
    let Res::Presence(list) = r else { return pb::PresenceResult::default() };
    pb::PresenceResult { presence: list.iter().map(|c| (c.client.to_string(), client_info(c))).collect() }
}

pub fn presence_stats_res(r: Res) -> pb::PresenceStatsResult {
    match r {
        Res::PresenceStats { num_clients, num_users } => {
            pb::PresenceStatsResult { num_clients: num_clients as u32, num_users: num_users as u32 }
        }
        _ => pb::PresenceStatsResult::default(),
    }
}

pub fn history_res(r: Res) -> pb::HistoryResult {
    let Res::History { publications, position } = r else { return pb::HistoryResult::default() };
    pb::HistoryResult {
        publications: publications.iter().map(publication).collect(),
        epoch: position.epoch.to_string(),
        offset: position.offset,
    }
}

pub fn info_res(r: Res) -> pb::InfoResult {
    let Res::Info(nodes) = r else { return pb::InfoResult::default() };
    pb::InfoResult { nodes: nodes.iter().map(node).collect() }
}

pub fn channels_res(r: Res) -> pb::ChannelsResult {
    let Res::Channels(list) = r else { return pb::ChannelsResult::default() };
    pb::ChannelsResult {
        channels: list
            .into_iter()
            .map(|(name, n)| (name.into_string(), pb::ChannelInfo { num_clients: n as u32 }))
            .collect(),
    }
}

/// One reply of a batch: `error`, or the result member of its method.
pub fn batch_reply(method: Option<crate::api::Method>, reply: crate::api::Reply) -> pb::Reply {
    use crate::api::Method as M;
    let mut out = pb::Reply::default();
    let res = match reply {
        Err(e) => {
            out.error = Some(error(&e));
            return out;
        }
        Ok(res) => res,
    };
    match method {
        Some(M::Publish) => out.publish = Some(publish_res(res)),
        Some(M::Broadcast) => out.broadcast = Some(broadcast_res(res)),
        Some(M::Subscribe) => out.subscribe = Some(pb::SubscribeResult {}),
        Some(M::Unsubscribe) => out.unsubscribe = Some(pb::UnsubscribeResult {}),
        Some(M::Disconnect) => out.disconnect = Some(pb::DisconnectResult {}),
        Some(M::Presence) => out.presence = Some(presence_res(res)),
        Some(M::PresenceStats) => out.presence_stats = Some(presence_stats_res(res)),
        Some(M::History) => out.history = Some(history_res(res)),
        Some(M::HistoryRemove) => out.history_remove = Some(pb::HistoryRemoveResult {}),
        Some(M::Info) => out.info = Some(info_res(res)),
        Some(M::Rpc) => out.rpc = Some(pb::RpcResult::default()),
        Some(M::Refresh) => out.refresh = Some(pb::RefreshResult {}),
        Some(M::Channels) => out.channels = Some(channels_res(res)),
        Some(M::SharedPollPublish) => out.shared_poll_publish = Some(pb::SharedPollPublishResult {}),
        Some(M::MapPublish) => out.map_publish = Some(map_publish_res(res)),
        Some(M::MapRemove) => out.map_remove = Some(map_remove_res(res)),
        Some(M::MapReadState) => out.map_read_state = Some(map_state_res(res)),
        Some(M::MapReadStream) => out.map_read_stream = Some(map_stream_res(res)),
        Some(M::MapStats) => out.map_stats = Some(map_stats_res(res)),
        Some(M::MapClear) => out.map_clear = Some(pb::MapClearResult {}),
        Some(M::Batch) | None => {}
    }
    out
}

pub fn batch_res(r: Res) -> pb::BatchResponse {
    let Res::Batch(replies) = r else { return pb::BatchResponse::default() };
    pb::BatchResponse { replies: replies.into_iter().map(|(m, r)| batch_reply(m, r)).collect() }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_data_is_embedded_and_other_bytes_become_b64data() {
        let v = publish(pb::PublishRequest {
            channel: "c".into(),
            data: br#"{"b":1,"a":2}"#.to_vec(),
            ..Default::default()
        });
        assert_eq!(v["data"], json!({"b": 1, "a": 2}));
        assert!(v.get("b64data").is_none());
        let v = publish(pb::PublishRequest { channel: "c".into(), data: vec![0xff, 0], ..Default::default() });
        assert_eq!(v["b64data"], "/wA=");
        let v = publish(pb::PublishRequest { channel: "c".into(), data: b"plain".to_vec(), ..Default::default() });
        assert_eq!(v["b64data"], "cGxhaW4=");
    }

    #[test]
    fn shared_poll_publish_params() {
        let r = pb::SharedPollPublishRequest {
            channel: "prices:eu".into(),
            key: "a".into(),
            data: br#"{"v":5}"#.to_vec(),
            version: 5,
            epoch: "e1".into(),
            ..Default::default()
        };
        let v = shared_poll_publish(r);
        assert_eq!(v, json!({"channel": "prices:eu", "key": "a", "version": 5, "epoch": "e1", "data": {"v": 5}}));
        let r = pb::SharedPollPublishRequest { b64data: "/wA=".into(), data: b"1".to_vec(), ..Default::default() };
        assert_eq!(shared_poll_publish(r)["b64data"], "/wA=");
        let reply = batch_reply(Some(crate::api::Method::SharedPollPublish), Ok(Res::Empty));
        assert_eq!(reply.shared_poll_publish, Some(pb::SharedPollPublishResult {}));
    }

    #[test]
    fn batch_commands_are_named_by_their_member() {
        let v = batch(pb::BatchRequest {
            commands: vec![
                pb::Command { info: Some(pb::InfoRequest {}), ..Default::default() },
                pb::Command { presence: Some(pb::PresenceRequest { channel: "x".into() }), ..Default::default() },
            ],
            parallel: true,
        });
        assert_eq!(v, json!({"commands": [{"info": {}}, {"presence": {"channel": "x"}}], "parallel": true}));
    }
}
