//! Commands and deadlines the proxies decide: connect without a token, subscribe and
//! publish in namespaces that turn their proxy on, RPC, and the server-side refresh of
//! connections and subscriptions.

use std::rc::Rc;
use std::sync::Arc;

use bytes::Bytes;

use super::claims::{ConnClaims, ServerSub};
use super::commands::{json_ok, subscribe_owned, SubOutcome};
use super::proxy as sp;
use super::{unix_now, Session};
use crate::client::Handler;
use crate::error::{ApiError, Disconnect};
use crate::model::{Payload, Publish};
use crate::protocol::{self, Format, ReplyBody, SubscribeReq};
use crate::proxy::RpcRoute;
use crate::shard::ShardOp;

/// What the connect proxy decided.
pub(super) enum ProxyConnect {
    /// Credentials (and the connect reply's `data`).
    Accepted(ConnClaims, Option<Bytes>),
    /// An error reply or a refusal was already sent.
    Replied,
    /// No result: the connection has no credentials.
    NoResult,
}

/// Asks the connect proxy about a connect without a token.
pub(super) async fn connect_proxy(
    s: &Rc<Session>,
    p: &Arc<crate::proxy::Proxy>,
    id: u32,
    c: &protocol::ConnectReq,
) -> Result<ProxyConnect, Disconnect> {
    let mut req = s.proxy_request(p);
    req.user = String::new();
    req.meta = None;
    req.name = c.name.clone();
    req.version = c.version.clone();
    req.channels = c.subs.iter().map(|(ch, _)| ch.clone()).collect();
    Session::set_payload(p, &mut req, c.data.clone());
    let refuse = |e: ApiError| {
        s.st.borrow_mut().unusable = true;
        s.reply(id, &Err(e));
        Ok(ProxyConnect::Replied)
    };
    let r = match s.call_proxy(p, req).await {
        Ok(r) => r,
        Err(_) => return refuse(ApiError::INTERNAL),
    };
    if s.st.borrow().closed {
        return Err(Disconnect::new(3000, "connection closed"));
    }
    if let Some(d) = &r.disconnect {
        return Err(sp::disconnect(d));
    }
    if let Some(e) = &r.error {
        return refuse(sp::api_error(e));
    }
    let Some(res) = r.result else { return Ok(ProxyConnect::NoResult) };
    let (Ok(info), Ok(data)) = (sp::payload(&res.info, &res.b64info), sp::payload(&res.data, &res.b64data)) else {
        return refuse(ApiError::INTERNAL);
    };
    let mut subs: Vec<ServerSub> =
        res.channels.iter().map(|ch| ServerSub { channel: ch.clone(), ..Default::default() }).collect();
    for (ch, o) in &res.subs {
        let (Ok(info), Ok(data)) = (sp::payload(&o.info, &o.b64info), sp::payload(&o.data, &o.b64data)) else {
            return refuse(ApiError::INTERNAL);
        };
        let sub = ServerSub { channel: ch.clone(), info, data, overrides: sp::overrides(&o.over) };
        match subs.iter_mut().find(|x| x.channel == *ch) {
            Some(x) => *x = sub,
            None => subs.push(sub),
        }
    }
    // An expiry is capped at a year from now.
    let expire_at = if res.expire_at > 0 { res.expire_at.min(unix_now() + 365 * 24 * 3600) } else { 0 };
    let claims = ConnClaims { user: res.user, expire_at, info, subs, hidden: false, meta: res.meta };
    Ok(ProxyConnect::Accepted(claims, data))
}

/// A command's call to `p`: the answer's result (empty when it has none), or the error the
/// client gets (100 when the call failed, else the backend's), or the close of the connection
/// (the backend's disconnect, or the connection closed meanwhile).
pub(super) async fn decide(
    s: &Rc<Session>,
    p: &Arc<crate::proxy::Proxy>,
    call: crate::proxy::Request,
) -> Result<Result<crate::proxy::ResultObj, ApiError>, Disconnect> {
    let r = match s.call_proxy(p, call).await {
        Ok(r) => r,
        Err(_) => return Ok(Err(ApiError::INTERNAL)),
    };
    if s.st.borrow().closed {
        return Err(Disconnect::new(3000, "connection closed"));
    }
    if let Some(d) = &r.disconnect {
        return Err(sp::disconnect(d));
    }
    if let Some(e) = &r.error {
        return Ok(Err(sp::api_error(e)));
    }
    Ok(Ok(r.result.unwrap_or_default()))
}

/// What the subscribe proxy allowed a subscribe with.
pub(super) struct SubAllowed {
    /// The result's channel info and data (`b64info` / `b64data` decoded).
    pub info: Option<Bytes>,
    pub data: Option<Bytes>,
    /// 0: the subscription does not expire.
    pub expire_at: i64,
    pub overrides: crate::api::Overrides,
}

/// Asks the subscribe proxy whether this client may subscribe to `channel` (with the
/// subscribe's `data`): what it allowed, or the error the client gets (a result already
/// expired is 110), or the close of the connection.
pub(super) async fn ask_subscribe(
    s: &Rc<Session>,
    p: &Arc<crate::proxy::Proxy>,
    channel: &str,
    data: Option<Bytes>,
) -> Result<Result<SubAllowed, ApiError>, Disconnect> {
    let mut call = s.proxy_request(p);
    call.channel = channel.to_string();
    Session::set_payload(p, &mut call, data);
    let res = match decide(s, p, call).await? {
        Ok(res) => res,
        Err(e) => return Ok(Err(e)),
    };
    let (Ok(info), Ok(data)) = (sp::payload(&res.info, &res.b64info), sp::payload(&res.data, &res.b64data)) else {
        return Ok(Err(ApiError::INTERNAL));
    };
    if res.expire_at > 0 && res.expire_at <= unix_now() {
        return Ok(Err(ApiError::EXPIRED));
    }
    Ok(Ok(SubAllowed { info, data, expire_at: res.expire_at, overrides: sp::overrides(&res.over) }))
}

/// Asks the subscribe proxy whether this client may subscribe, and with which options.
pub(super) async fn subscribe_proxy(
    s: &Rc<Session>,
    p: &Arc<crate::proxy::Proxy>,
    mut req: SubscribeReq,
) -> SubOutcome {
    let a = match ask_subscribe(s, p, &req.channel, req.data.take()).await? {
        Ok(a) => a,
        Err(e) => return Ok(Err(e)),
    };
    if !json_ok(s, &a.data) {
        return Err(Disconnect::INAPPROPRIATE_PROTOCOL);
    }
    // The backend decides the options: the client's own asks do not count.
    req.recoverable = false;
    req.positioned = false;
    req.join_leave = false;
    let channel_opts = s.w.cfg.resolve_channel(&req.channel).map(|r| r.options.clone());
    let data = a.data;
    let r = subscribe_owned(s, req, a.info, false, a.expire_at, a.overrides).await;
    r.map(|r| {
        r.map(|(channel, mut out)| {
            out.data = data;
            if channel_opts.is_ok_and(|o| o.proxy.sub_refresh_proxy_enabled) {
                // Refreshed by the server: the client is not told when it expires.
                out.expires = false;
                out.ttl = 0;
            }
            (channel, out)
        })
    })
}

/// Asks the publish proxy; the server publishes what it answers.
pub(super) async fn publish_proxy(
    s: &Rc<Session>,
    p: &Arc<crate::proxy::Proxy>,
    channel: String,
    data: Bytes,
) -> Result<Result<ReplyBody, ApiError>, Disconnect> {
    let mut call = s.proxy_request(p);
    call.channel = channel.clone();
    Session::set_payload(p, &mut call, Some(data.clone()));
    let res = match decide(s, p, call).await? {
        Ok(res) => res,
        Err(e) => return Ok(Err(e)),
    };
    // The publish result's `data` wins over `b64data` when both are there.
    let bytes = match (&res.data, res.b64data.is_empty()) {
        (Some(d), _) => d.clone(),
        (None, false) => match sp::b64(&res.b64data) {
            Some(d) => d,
            None => return Ok(Err(ApiError::INTERNAL)),
        },
        (None, true) => data,
    };
    let chan_info = s.st.borrow().subs.get(channel.as_str()).and_then(|x| x.chan_info.clone());
    let payload = Payload { bytes, binary: s.client.format == Format::Protobuf };
    let tags: Option<crate::model::Tags> = (!res.tags.is_empty())
        .then(|| res.tags.iter().map(|(k, v)| (k.as_str().into(), v.as_str().into())).collect::<Vec<_>>().into());
    let pb = Publish {
        info: Some(Arc::new(s.info(chan_info))),
        skip_history: res.skip_history,
        tags,
        idempotency_key: (!res.idempotency_key.is_empty()).then(|| res.idempotency_key.as_str().into()),
        delta: res.delta,
        version: res.version,
        version_epoch: res.version_epoch.as_str().into(),
        ..Publish::new(channel.as_str(), payload)
    };
    Ok(match s.w.call_shard(ShardOp::Publish(pb)).await {
        Ok(_) => Ok(ReplyBody::Publish),
        Err(e) => Err(e),
    })
}

/// A client RPC: `rpc.ping`, or the RPC proxy of the method's namespace.
pub(super) async fn rpc(s: &Rc<Session>, id: u32, method: String, data: Bytes) -> Result<(), Disconnect> {
    let p = match sp::proxies(&s.w).rpc(&s.w.cfg, &method) {
        RpcRoute::Ping => {
            s.reply(id, &Ok(ReplyBody::Rpc { data: None }));
            return Ok(());
        }
        RpcRoute::NotAvailable => {
            s.reply(id, &Err(ApiError::NOT_AVAILABLE));
            return Ok(());
        }
        RpcRoute::UnknownNamespace => {
            s.reply(id, &Err(ApiError::METHOD_NOT_FOUND));
            return Ok(());
        }
        RpcRoute::Proxy(p) => p,
    };
    let mut call = s.proxy_request(&p);
    call.method = method;
    // A JSON rpc without data carries `null`: nothing to forward.
    let data = (data.as_ref() != b"null").then_some(data);
    Session::set_payload(&p, &mut call, data);
    let r = match s.call_proxy(&p, call).await {
        Ok(r) => r,
        Err(_) => {
            s.reply(id, &Err(ApiError::INTERNAL));
            return Ok(());
        }
    };
    if s.st.borrow().closed {
        return Ok(());
    }
    if let Some(d) = &r.disconnect {
        return Err(sp::disconnect(d));
    }
    if let Some(e) = &r.error {
        s.reply(id, &Err(sp::api_error(e)));
        return Ok(());
    }
    let res = r.result.unwrap_or_default();
    let Ok(data) = sp::payload(&res.data, &res.b64data) else {
        s.reply(id, &Err(ApiError::INTERNAL));
        return Ok(());
    };
    if !json_ok(s, &data) {
        return Err(Disconnect::INAPPROPRIATE_PROTOCOL);
    }
    s.reply(id, &Ok(ReplyBody::Rpc { data }));
    Ok(())
}

/// How long a refresh waits after a failed call before trying again.
const RETRY_AFTER: i64 = 60;

/// The connection's credentials expired and a refresh proxy is on: asks it for new ones.
/// (While the call runs the connection does not expire: `expires_at` is 0.)
pub(super) fn refresh_connection(s: &Rc<Session>, p: Arc<crate::proxy::Proxy>) {
    let old = std::mem::take(&mut s.st.borrow_mut().expires_at);
    monoio::spawn(refresh_connection_call(s.clone(), p, old));
}

async fn refresh_connection_call(s: Rc<Session>, p: Arc<crate::proxy::Proxy>, old: i64) {
    let call = s.proxy_request(&p);
    let r = s.call_proxy(&p, call).await;
    if s.st.borrow().closed {
        return;
    }
    let now = unix_now();
    let res = match r {
        Err(_) => {
            s.st.borrow_mut().expires_at = now + RETRY_AFTER;
            s.reschedule_now();
            return;
        }
        // A refresh ignores `error` and `disconnect`: only a result keeps the connection.
        Ok(r) => match r.result {
            Some(res) if !res.expired => res,
            _ => {
                s.disconnect(Disconnect::EXPIRED);
                return;
            }
        },
    };
    let Ok(info) = sp::payload(&res.info, &res.b64info) else {
        s.disconnect(Disconnect::INTERNAL);
        return;
    };
    let expire_at = if res.expire_at > 0 { res.expire_at.min(now + 365 * 24 * 3600) } else { old };
    if expire_at <= now {
        s.disconnect(Disconnect::EXPIRED);
        return;
    }
    {
        let mut st = s.st.borrow_mut();
        st.expires_at = expire_at;
        if info.is_some() {
            st.conn_info = info;
        }
        if res.meta.is_some() {
            st.meta = res.meta.map(Box::new);
        }
    }
    s.reschedule_now();
}

/// A subscription's expiry passed in a namespace with a sub_refresh proxy: asks it whether
/// the subscription goes on. (While the call runs it does not expire.)
pub(super) fn refresh_subscription(s: &Rc<Session>, p: Arc<crate::proxy::Proxy>, channel: Arc<str>) {
    let server_side = {
        let mut st = s.st.borrow_mut();
        let Some(sub) = st.subs.get_mut(&channel) else { return };
        sub.expires_at = 0;
        sub.server_side
    };
    monoio::spawn(refresh_subscription_call(s.clone(), p, channel, server_side));
}

async fn refresh_subscription_call(s: Rc<Session>, p: Arc<crate::proxy::Proxy>, channel: Arc<str>, server_side: bool) {
    let mut call = s.proxy_request(&p);
    call.channel = channel.to_string();
    let r = s.call_proxy(&p, call).await;
    if s.st.borrow().closed || !s.st.borrow().subs.contains_key(&channel) {
        return;
    }
    let now = unix_now();
    let end = |s: &Rc<Session>| {
        if server_side {
            s.disconnect(Disconnect::SUB_EXPIRED);
        } else {
            s.unsubscribe(&channel, Some((2501, "subscription expired")));
        }
    };
    let res = match r {
        Err(_) => {
            if let Some(sub) = s.st.borrow_mut().subs.get_mut(&channel) {
                sub.expires_at = now + RETRY_AFTER;
            }
            s.reschedule_now();
            return;
        }
        Ok(r) => match r.result {
            Some(res) if !(res.expired || (res.expire_at > 0 && res.expire_at < now)) => res,
            _ => return end(&s),
        },
    };
    let Ok(info) = sp::payload(&res.info, &res.b64info) else { return end(&s) };
    if let Some(sub) = s.st.borrow_mut().subs.get_mut(&channel) {
        // 0 means the subscription no longer expires.
        sub.expires_at = res.expire_at;
        if info.as_ref().is_some_and(|i| !i.is_empty()) {
            sub.chan_info = info;
        }
    }
    s.reschedule_now();
}
