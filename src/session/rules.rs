//! Why a client is refused, and the log lines that say so. The permission rules of
//! subscriptions (tokens, private and user-limited channels), presence and history live here,
//! and every refusal a session makes leaves a line at the level Centrifugo (and the
//! centrifuge library under it) logs it: each error reply and each disconnect after a command
//! at info (`client command error`, `disconnect after handling command`), and the reason of a
//! refused subscribe, publish, presence or history call at info before it. Every line names
//! the client, its user and its remote address (`client`, `user`, `remote`), and the channel
//! where there is one.

use std::net::IpAddr;
use std::rc::Rc;

use super::commands::sub_user_claim;
use super::{claims, unix_now, Session, TokenUse};
use crate::config::{ChannelOptions, Config};
use crate::error::{ApiError, Disconnect};
use crate::protocol::SubscribeReq;
use crate::token::TokenError;

/// Which capability a client command needs.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Feature {
    Presence,
    History,
}

/// The IP address of the peer of socket `fd`, for log lines.
pub(super) fn peer_ip(fd: i32) -> Option<IpAddr> {
    let mut addr: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
    if unsafe { libc::getpeername(fd, &mut addr as *mut _ as *mut libc::sockaddr, &mut len) } != 0 {
        return None;
    }
    match addr.ss_family as i32 {
        libc::AF_INET => {
            let a = unsafe { &*(&addr as *const _ as *const libc::sockaddr_in) };
            Some(IpAddr::from(u32::from_be(a.sin_addr.s_addr).to_be_bytes()))
        }
        libc::AF_INET6 => {
            let a = unsafe { &*(&addr as *const _ as *const libc::sockaddr_in6) };
            let ip = std::net::Ipv6Addr::from(a.sin6_addr.s6_addr);
            Some(ip.to_ipv4_mapped().map_or(IpAddr::V6(ip), IpAddr::V4))
        }
        _ => None,
    }
}

/// The code of the disconnect of a client that went away: no news, so not logged (as in
/// Centrifugo).
const CONNECTION_CLOSED: u16 = 3000;

impl Session {
    /// The peer's address for log lines ("" when unknown).
    pub(super) fn remote(&self) -> String {
        self.remote.map(|ip| ip.to_string()).unwrap_or_default()
    }

    /// An error reply to a client command.
    pub(super) fn log_command_error(&self, e: &ApiError) {
        if tracing::enabled!(tracing::Level::INFO) {
            let user = self.st.borrow().user.clone();
            tracing::info!(command = self.method.get().name(), client = %self.client.id, user = %user,
                remote = %self.remote(), error = e.message, code = e.code, "client command error");
        }
    }

    /// A client command that ended the connection (a peer that went away is no news).
    pub(super) fn log_disconnect(&self, d: &Disconnect) {
        if d.code != CONNECTION_CLOSED && tracing::enabled!(tracing::Level::INFO) {
            let user = self.st.borrow().user.clone();
            tracing::info!(command = self.method.get().name(), client = %self.client.id, user = %user,
                remote = %self.remote(), reason = %d.reason, code = d.code, "disconnect after handling command");
        }
    }

    /// Logs why a command on `channel` is refused (at info) and gives back `e`.
    pub(super) fn refuse<E>(&self, e: E, why: &str, channel: &str) -> E {
        if tracing::enabled!(tracing::Level::INFO) {
            let user = self.st.borrow().user.clone();
            tracing::info!(channel, client = %self.client.id, user = %user, remote = %self.remote(), "{why}");
        }
        e
    }

    /// As [`Session::refuse`], at warn.
    pub(super) fn refuse_warn<E>(&self, e: E, why: &str, channel: &str) -> E {
        let user = self.st.borrow().user.clone();
        tracing::warn!(channel, client = %self.client.id, user = %user, remote = %self.remote(), "{why}");
        e
    }
}

/// Namespace + permission checks for presence/history commands.
pub(super) fn check(s: &Session, channel: &str, f: Feature) -> Result<(), ApiError> {
    let cfg = &s.w.cfg;
    let what = match (f, s.method.get()) {
        (Feature::History, _) => "history",
        (Feature::Presence, crate::metrics::Frame::PresenceStats) => "presence stats",
        (Feature::Presence, _) => "presence",
    };
    if channel.len() > cfg.channel().max_length {
        return Err(s.refuse(ApiError::BAD_REQUEST, "channel too long", channel));
    }
    let o = match cfg.resolve_channel(channel) {
        Ok(r) => r.options,
        Err(e) => return Err(s.refuse(e, &format!("{what} for unknown channel"), channel)),
    };
    if !cfg.client_channel_allowed(channel, o) {
        return Err(s.refuse(ApiError::BAD_REQUEST, "invalid channel name", channel));
    }
    let st = s.st.borrow();
    let anon = st.user.is_empty();
    let subscribed = st.subs.contains_key(channel);
    let (enabled, for_client, for_sub, for_anon) = match f {
        Feature::Presence => {
            (o.presence, o.allow_presence_for_client, o.allow_presence_for_subscriber, o.allow_presence_for_anonymous)
        }
        Feature::History => (
            o.history_enabled(),
            o.allow_history_for_client,
            o.allow_history_for_subscriber,
            o.allow_history_for_anonymous,
        ),
    };
    drop(st);
    if !enabled {
        return Err(s.refuse(ApiError::NOT_AVAILABLE, &format!("{what} not available in the namespace"), channel));
    }
    let allowed = cfg.client.insecure || ((for_client || (for_sub && subscribed)) && (!anon || for_anon));
    if allowed {
        Ok(())
    } else {
        Err(s.refuse(
            ApiError::PERMISSION_DENIED,
            &format!("attempt to call {what} without sufficient permission"),
            channel,
        ))
    }
}

/// True when `channel` is user-limited and lists `user` after its last `#`.
pub(super) fn user_allowed(cfg: &Config, o: &ChannelOptions, channel: &str, user: &str) -> Option<bool> {
    let b = cfg.channel().user_boundary.as_str();
    if !o.allow_user_limited_channels || b.is_empty() || !channel.contains(b) {
        return None;
    }
    let users = channel.rsplit(b).next().unwrap_or("");
    Some(!user.is_empty() && users.split(cfg.channel().user_separator.as_str()).any(|u| u == user))
}

/// The subscribe's token (`req.token`, not empty) verified and matched against the request
/// and the connection: its claims; `Ok(Err)` answers the subscribe with the error, `Err`
/// closes the connection (a token for another channel, user or client).
pub(super) async fn sub_token(
    s: &Rc<Session>,
    req: &SubscribeReq,
) -> Result<Result<claims::SubClaims, ApiError>, Disconnect> {
    let (cfg, ch) = (s.w.cfg.clone(), req.channel.as_str());
    let t = match s.verify_token(TokenUse::Subscribe, &req.token, ch).await {
        Err(TokenError::Expired) => return Ok(Err(ApiError::TOKEN_EXPIRED)),
        Err(_) => return Ok(Err(ApiError::PERMISSION_DENIED)),
        Ok(claims) => match claims::sub(&claims, sub_user_claim(s)) {
            Ok(t) => t,
            Err(_) => return Ok(Err(ApiError::PERMISSION_DENIED)),
        },
    };
    if let Err(e) = cfg.resolve_channel(&t.channel) {
        return Ok(Err(s.refuse(e, "subscribe unknown channel", &t.channel)));
    }
    let user = s.st.borrow().user.clone();
    let mismatch = if t.channel != req.channel {
        "token channel mismatch"
    } else if t.user != *user {
        "token user mismatch"
    } else if !t.client.is_empty() && *t.client != *s.client.id {
        "token client mismatch"
    } else {
        ""
    };
    if !mismatch.is_empty() {
        return Err(s.refuse(Disconnect::INVALID_TOKEN, mismatch, ch));
    }
    // `expire_at` overrides `exp` for the subscription's lifetime; 0 = never.
    if t.expire_at > 0 && t.expire_at <= unix_now() {
        return Ok(Err(ApiError::EXPIRED));
    }
    Ok(Ok(t))
}

/// A channel with the private prefix takes subscriptions with a token only (103).
pub(super) fn not_private(s: &Session, ch: &str) -> Result<(), ApiError> {
    let prefix = &s.w.cfg.channel().private_prefix;
    if !prefix.is_empty() && ch.starts_with(prefix.as_str()) {
        let why = "attempt to subscribe on private channel without token";
        return Err(s.refuse_warn(ApiError::PERMISSION_DENIED, why, ch));
    }
    Ok(())
}

/// Whether the client may subscribe to `ch` without a token: the user-limited channel rules'
/// verdict (`limited`), else the namespace's permissions (`client.insecure` allows all).
pub(super) fn permitted(
    s: &Session,
    o: &ChannelOptions,
    ch: &str,
    user: &str,
    limited: Option<bool>,
) -> Result<(), ApiError> {
    let allowed = s.w.cfg.client.insecure
        || match limited {
            Some(ok) => ok,
            None => o.allow_subscribe_for_client && (!user.is_empty() || o.allow_subscribe_for_anonymous),
        };
    if !allowed {
        let why = "attempt to subscribe without sufficient permission";
        return Err(s.refuse(ApiError::PERMISSION_DENIED, why, ch));
    }
    Ok(())
}
