//! A session's deadlines, run by the worker's single timer task: the stale close of a client
//! that never connected, server pings and the pong deadline, credential and subscription
//! expiry.

use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::{unix_now, Session};
use crate::client::{Framing, Handler};
use crate::error::Disconnect;
use crate::protocol;

impl Session {
    /// Asks the worker's timer to run [`Session::run_timer`] at `at` (or earlier if already
    /// scheduled earlier). Only the earliest deadline is kept in the worker's heap.
    pub(super) fn schedule(&self, at: Instant) {
        if self.timer_at.get().is_some_and(|t| t <= at) {
            return;
        }
        self.timer_at.set(Some(at));
        self.w.schedule_timer(at, self.key(), self.client.gen);
    }

    /// Deadlines changed (connect, refresh, a subscription with an expiry): re-evaluate now.
    pub(super) fn reschedule_now(&self) {
        self.schedule(Instant::now());
    }

    /// Runs when the worker's timer reaches this session's deadline: stale close, server
    /// pings, the pong deadline and credential/subscription expiry. Schedules the next one.
    pub(super) fn run_timer(self: &Rc<Self>, at: Instant) {
        if self.timer_at.get() != Some(at) {
            return; // superseded by an earlier schedule
        }
        self.timer_at.set(None);
        if let Some(next) = self.check_deadlines(Instant::now()) {
            self.schedule(next);
        }
    }

    /// Acts on every deadline that has passed; returns the next one (`None` once closed).
    fn check_deadlines(self: &Rc<Self>, now: Instant) -> Option<Instant> {
        let cfg = self.w.cfg.clone();
        let interval = super::commands::ping_interval(self);
        // Unidirectional clients cannot answer pings, except with the WebSocket's own pongs.
        let pong_timeout = match self.client.framing {
            Framing::UniWebSocket if cfg.client.pong_timeout.is_zero() => Duration::from_secs(10),
            Framing::UniWebSocket => cfg.client.pong_timeout,
            f if f.is_uni() => Duration::ZERO,
            // The older protocol has no pongs (SockJS heartbeats are not answered).
            _ if self.client.v1.get() => Duration::ZERO,
            _ => cfg.client.pong_timeout,
        };
        if self.is_closed() {
            return None;
        }
        let mut next = now + Duration::from_secs(10);
        let (connected, ping_sent, expires_at, next_ping) = {
            let st = self.st.borrow();
            (st.connected, st.ping_sent, st.expires_at, st.next_ping)
        };
        if !connected {
            let deadline = self.created + cfg.client.stale_close_delay;
            if now >= deadline {
                self.disconnect(Disconnect::STALE);
                return None;
            }
            return Some(next.min(deadline));
        }
        if let Some(sent) = ping_sent {
            if !pong_timeout.is_zero() {
                let deadline = sent + pong_timeout;
                if now >= deadline {
                    self.disconnect(Disconnect::NO_PONG);
                    return None;
                }
                next = next.min(deadline);
            }
        }
        if !interval.is_zero() {
            let due = match next_ping {
                Some(t) => t,
                None => {
                    // The first ping comes at a random point in [interval/2, interval).
                    let half = interval / 2;
                    let jitter = Duration::from_millis(rand::random::<u64>() % (half.as_millis().max(1) as u64));
                    let t = now + half + jitter;
                    self.st.borrow_mut().next_ping = Some(t);
                    t
                }
            };
            if now >= due {
                if self.raw.is_some() || self.client.framing.is_sockjs() {
                    // Raw clients get the transport's pings; their pongs answer. SockJS
                    // clients get its heartbeat frame.
                    let _ = self.client.send(self.client.ping_frame());
                } else if self.client.framing.is_uni() {
                    // An empty push: `{}`, or an empty protobuf message.
                    let empty: &[u8] = if self.client.format == protocol::Format::Json { b"{}" } else { b"" };
                    self.push_frame(empty.to_vec(), crate::metrics::Frame::ServerPing, false);
                    if self.client.framing == Framing::UniWebSocket {
                        // And the WebSocket's own ping, whose pong is awaited.
                        let _ = self.client.send(self.client.ping_frame());
                    }
                } else {
                    let mut buf = Vec::with_capacity(2);
                    protocol::encode_ping(self.client.format, &mut buf);
                    self.push_frame(buf, crate::metrics::Frame::ServerPing, false);
                }
                let mut st = self.st.borrow_mut();
                if st.ping_sent.is_none() && !pong_timeout.is_zero() {
                    st.ping_sent = Some(now);
                    next = next.min(now + pong_timeout);
                }
                st.next_ping = Some(now + interval);
                next = next.min(now + interval);
            } else {
                next = next.min(due);
            }
        }
        let sub_delay = cfg.client.expired_sub_close_delay.as_secs() as i64;
        let unix = unix_now();
        let expired: Vec<(Arc<str>, bool)> = {
            let st = self.st.borrow();
            let mut soonest = i64::MAX;
            let mut out = Vec::new();
            for (ch, sub) in st.subs.iter().filter(|(_, sub)| sub.expires_at > 0) {
                let at = sub.expires_at + sub_delay;
                if unix >= at {
                    out.push((ch.clone(), sub.server_side));
                } else {
                    soonest = soonest.min(at);
                }
            }
            if soonest != i64::MAX {
                next = next.min(now + Duration::from_secs((soonest - unix) as u64));
            }
            out
        };
        for (ch, server_side) in expired {
            if let Some(Ok(p)) = cfg
                .resolve_channel(&ch)
                .ok()
                .and_then(|r| super::proxy::channel_proxy(self, crate::proxy::Kind::SubRefresh, r.options))
            {
                super::proxied::refresh_subscription(self, p, ch);
                continue;
            }
            if server_side {
                self.disconnect(Disconnect::SUB_EXPIRED);
                return None;
            }
            self.unsubscribe(&ch, Some((2501, "subscription expired")));
        }
        if expires_at > 0 {
            if let Some(p) = super::proxy::proxies(&self.w).refresh.clone() {
                // Refreshed by the server the moment the credentials expire.
                if unix >= expires_at {
                    super::proxied::refresh_connection(self, p);
                } else {
                    next = next.min(now + Duration::from_secs((expires_at - unix) as u64));
                }
                return (!self.is_closed()).then_some(next);
            }
            let close_at = expires_at + cfg.client.expired_close_delay.as_secs() as i64;
            if unix >= close_at {
                self.disconnect(Disconnect::EXPIRED);
                return None;
            }
            next = next.min(now + Duration::from_secs((close_at - unix) as u64));
        }
        (!self.is_closed()).then_some(next)
    }
}
