//! The parts of the configuration a running server replaces on SIGHUP, as Centrifugo does:
//! the channel options (namespaces and their options) and the token settings. Everything
//! else is read once at start-up.
//!
//! A reloaded value is published through an atomic pointer shared by every copy of the
//! [`Config`](super::Config): readers (every worker, on every publish and subscribe) pay one
//! atomic load and never a lock. A replaced value is never freed — a reader may still hold a
//! reference to it — so each reload keeps the previous section in memory (a few KB; reloads
//! are rare).

use std::sync::atomic::{AtomicPtr, Ordering};
use std::sync::Arc;

use super::token::{SubscriptionToken, Token};

/// A value replaced while the server runs; none set means the start-up value.
pub struct Live<T: 'static>(Arc<AtomicPtr<T>>);

impl<T> Default for Live<T> {
    fn default() -> Self {
        Live(Arc::new(AtomicPtr::new(std::ptr::null_mut())))
    }
}

impl<T> Clone for Live<T> {
    fn clone(&self) -> Self {
        Live(self.0.clone())
    }
}

impl<T> std::fmt::Debug for Live<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.get().is_some() { "Live(reloaded)" } else { "Live(start-up)" })
    }
}

impl<T> Live<T> {
    /// The value set last, if any.
    pub fn get(&self) -> Option<&T> {
        let p = self.0.load(Ordering::Acquire);
        // SAFETY: a non-null pointer comes from `Box::into_raw` in `set` and is never freed.
        (!p.is_null()).then(|| unsafe { &*p })
    }

    /// Replaces the value for every reader from now on.
    pub fn set(&self, v: T) {
        self.0.store(Box::into_raw(Box::new(v)), Ordering::Release);
    }

    /// Changes with every `set` (0 before the first).
    pub fn version(&self) -> usize {
        self.0.load(Ordering::Acquire) as usize
    }
}

/// The token settings a reload replaces.
#[derive(Debug, Clone)]
pub struct TokenSettings {
    pub token: Token,
    pub subscription_token: SubscriptionToken,
    pub insecure_skip_token_signature_verify: bool,
}

/// The token settings in effect, borrowed.
#[derive(Debug, Clone, Copy)]
pub struct Tokens<'a> {
    pub token: &'a Token,
    pub subscription_token: &'a SubscriptionToken,
    pub insecure_skip_token_signature_verify: bool,
}

impl super::Config {
    /// The channel options in effect (the start-up ones until a reload).
    pub fn channel(&self) -> &super::Channel {
        self.live_channel.get().unwrap_or(&self.channel)
    }

    /// The token settings in effect (the start-up ones until a reload).
    pub fn tokens(&self) -> Tokens<'_> {
        match self.live_tokens.get() {
            Some(t) => Tokens {
                token: &t.token,
                subscription_token: &t.subscription_token,
                insecure_skip_token_signature_verify: t.insecure_skip_token_signature_verify,
            },
            None => Tokens {
                token: &self.client.token,
                subscription_token: &self.client.subscription_token,
                insecure_skip_token_signature_verify: self.client.insecure_skip_token_signature_verify,
            },
        }
    }

    /// Changes whenever the token settings are replaced (verifiers built from older ones are
    /// rebuilt).
    pub fn tokens_version(&self) -> usize {
        self.live_tokens.version()
    }

    /// Puts the channel options and token settings of `new` in effect.
    pub fn reload_from(&self, new: &super::Config) {
        self.live_channel.set(new.channel.clone());
        self.live_tokens.set(TokenSettings {
            token: new.client.token.clone(),
            subscription_token: new.client.subscription_token.clone(),
            insecure_skip_token_signature_verify: new.client.insecure_skip_token_signature_verify,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::super::Config;

    #[test]
    fn reload_is_seen_by_every_copy() {
        let a = Config::default();
        let b = a.clone();
        assert_eq!(a.channel().namespaces.len(), 0);
        assert_eq!(a.tokens_version(), 0);
        let mut new = Config::default();
        new.channel.namespaces.push(Default::default());
        new.client.token.hmac_secret_key = "k2".into();
        a.reload_from(&new);
        assert_eq!(b.channel().namespaces.len(), 1);
        assert_eq!(b.tokens().token.hmac_secret_key, "k2");
        assert_ne!(b.tokens_version(), 0);
        // The start-up value stays where it was.
        assert_eq!(b.channel.namespaces.len(), 0);
    }
}
