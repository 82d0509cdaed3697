//! Map publish and map remove proxies: in a namespace with `map.publish_proxy_enabled`
//! (`map.remove_proxy_enabled`) a client's map publish (remove) goes to the backend, which
//! decides on it in place of the namespace's `allow_*` permissions (and of `map.client_key`,
//! which the config refuses beside a proxy).
//!
//! The backend refuses with its `error` (the client's error) or its `disconnect` (the
//! connection closes), or accepts with a result: the key to write (empty: the client's), for a
//! publish the data (`data`, else `b64data`; none: the client's), and the tags, idempotency
//! key, version and key mode of the change. A call that fails (unreachable backend, timeout, an answer that is not a
//! response) gets error 100, as does `b64data` that is not base64.

use std::rc::Rc;
use std::sync::Arc;

use bytes::Bytes;

use super::proxy as sp;
use super::Session;
use crate::client::Handler;
use crate::config::ChannelOptions;
use crate::error::ApiError;
use crate::model::{Payload, Publish};
use crate::protocol::{Format, ReplyBody};
use crate::proxy::{Kind, Proxy};
use crate::shard::{MapPub, ShardOp};

/// The proxy deciding a client's map publish (`removed`: remove) in a namespace with options
/// `o`, when the namespace turns it on (`Err` 108 when it does but no such proxy exists).
pub(super) fn proxy(s: &Session, o: &ChannelOptions, removed: bool) -> Option<Result<Arc<Proxy>, ApiError>> {
    sp::channel_proxy(s, if removed { Kind::MapRemove } else { Kind::MapPublish }, o)
}

/// A client's map publish or remove through proxy `p`: the reply to the client. A backend's
/// disconnect closes the session here (no reply goes out then).
pub(super) async fn publish(
    s: &Rc<Session>,
    p: Arc<Proxy>,
    channel: String,
    data: Bytes,
    key: String,
    removed: bool,
) -> Result<ReplyBody, ApiError> {
    let mut call = s.proxy_request(&p);
    call.channel = channel.clone();
    call.key = key.clone();
    if !removed {
        Session::set_payload(&p, &mut call, Some(data.clone()));
    }
    let res = match super::proxied::decide(s, &p, call).await {
        Ok(Ok(res)) => res,
        Ok(Err(e)) => return Err(e),
        Err(d) => {
            s.log_disconnect(&d);
            s.disconnect(d);
            return Err(ApiError::INTERNAL);
        }
    };
    let key = if res.key.is_empty() { key } else { res.key };
    if key.is_empty() {
        return Err(s.refuse(ApiError::BAD_REQUEST, "map publish without a key", &channel));
    }
    let bytes = if removed {
        Bytes::new()
    } else {
        match (res.data, res.b64data.is_empty()) {
            (Some(d), _) => d,
            (None, false) => sp::b64(&res.b64data).ok_or(ApiError::INTERNAL)?,
            (None, true) => data,
        }
    };
    let tags: Option<crate::model::Tags> = (!res.tags.is_empty())
        .then(|| res.tags.iter().map(|(k, v)| (k.as_str().into(), v.as_str().into())).collect::<Vec<_>>().into());
    // A removal carries no publisher info (as Centrifugo's), a publish the client's.
    let info = (!removed).then(|| {
        let chan_info = s.st.borrow().subs.get(channel.as_str()).and_then(|x| x.chan_info.clone());
        Arc::new(s.info(chan_info))
    });
    let publish = Publish {
        info,
        tags,
        idempotency_key: (!res.idempotency_key.is_empty()).then(|| res.idempotency_key.as_str().into()),
        delta: res.delta,
        version: res.version,
        version_epoch: res.version_epoch.as_str().into(),
        ..Publish::new(channel.as_str(), Payload { bytes, binary: s.client.format == Format::Protobuf })
    };
    // A key mode the engine does not know is the backend's mistake.
    let key_mode = crate::model::KeyMode::parse(&res.key_mode).ok_or(ApiError::INTERNAL)?;
    let op = ShardOp::MapPublish(Box::new(MapPub { key_mode, ..MapPub::new(publish, key.into(), removed) }));
    s.w.call_shard(op).await.map(|_| ReplyBody::Publish)
}
