//! Shared poll subscriptions (`type` 4 in subscribe: centrifuge-js `sharedPoll: true`). Gyre
//! has no `subscription_type: shared_poll` namespaces yet (the option is refused at start-up),
//! so a shared poll subscribe gets Centrifugo's answer for a namespace of another subscription
//! type: 105 when the client is already subscribed to the channel, 106 past the client's
//! channel limit, 102 for an unknown namespace, 107 for a channel name the namespace refuses,
//! otherwise 103 (permission denied). The SDK reports it as a subscribe error and stays
//! unsubscribed; the client's other subscriptions go on.

use super::Session;
use crate::error::ApiError;
use crate::protocol::SubscribeReq;

/// The subscription type of shared poll subscriptions in the client protocol.
pub(super) const KIND: i32 = 4;

/// Answers a shared poll subscribe command.
pub(super) fn subscribe(s: &Session, id: u32, req: &SubscribeReq) {
    s.reply(id, &Err(refusal(s, req)));
}

fn refusal(s: &Session, req: &SubscribeReq) -> ApiError {
    let cfg = s.w.cfg.clone();
    let ch = req.channel.as_str();
    {
        let st = s.st.borrow();
        if st.subs.contains_key(ch) || st.pending.contains_key(ch) {
            return s.refuse(ApiError::ALREADY_SUBSCRIBED, "client already subscribed on channel", ch);
        }
        if st.subs.len() + st.pending.len() >= cfg.client.channel_limit {
            return s.refuse(ApiError::LIMIT_EXCEEDED, "maximum limit of channels per client reached", ch);
        }
    }
    if ch.len() > cfg.channel().max_length {
        return s.refuse(ApiError::BAD_REQUEST, "channel too long", ch);
    }
    match cfg.resolve_channel(ch) {
        Err(e) => s.refuse(e, "subscribe unknown channel", ch),
        Ok(r) if !cfg.client_channel_allowed(ch, r.options) => {
            s.refuse(ApiError::BAD_REQUEST, "invalid channel name", ch)
        }
        Ok(_) => s.refuse(ApiError::PERMISSION_DENIED, "subscription type not allowed for namespace", ch),
    }
}
