//! Shared poll subscriptions (`subscription_type: shared_poll`): the top-level `shared_poll`
//! section (signatures of tracked keys), a namespace's `shared_poll` options and their checks.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{duration, ChannelOptions, Config};

/// `shared_poll`: how the keys clients track are signed by the application backend.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct SharedPoll {
    /// HMAC-SHA256 key of track signatures (required by shared poll namespaces).
    pub hmac_secret_key: String,
    /// The key before a rotation, accepted beside the current one.
    pub hmac_previous_secret_key: String,
    /// Unix seconds: signatures issued after this are not accepted with the previous key
    /// (0: no limit).
    pub hmac_previous_secret_key_valid_until: i64,
    /// Backend refresh calls in flight at once on the node (0: no limit).
    pub concurrency_limit: usize,
}

/// A namespace's `shared_poll` options.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct SharedPollOptions {
    /// The proxy (from `proxies`) the channel's keys are polled through; empty or
    /// "default": `channel.proxy.shared_poll_refresh`.
    pub proxy_name: String,
    /// How often the backend is polled for a channel's tracked keys (0: 10s).
    #[serde(with = "duration")]
    pub refresh_interval: Duration,
    /// Keys per backend call (0: 1000).
    pub refresh_batch_size: usize,
    /// Keys one connection may track in a channel (0: 5000).
    pub max_keys_per_connection: usize,
    /// `versionless` (default: changes found by the data's hash) or `versioned` (the
    /// backend's versions).
    pub mode: String,
    /// How long a channel with no tracked key keeps its state (0: 1s).
    #[serde(with = "duration")]
    pub channel_shutdown_delay: Duration,
    /// How long a key stays tracked after its signature expired, for the client to send a
    /// fresh one (0: 25s).
    #[serde(with = "duration")]
    pub track_expired_extra_delay: Duration,
    /// `shared_poll_publish` may push updates between polls, on every node (versioned mode
    /// only).
    pub publish_enabled: bool,
}

impl SharedPollOptions {
    pub fn refresh_interval(&self) -> Duration {
        or_dur(self.refresh_interval, Duration::from_secs(10))
    }

    pub fn batch_size(&self) -> usize {
        if self.refresh_batch_size == 0 {
            1000
        } else {
            self.refresh_batch_size
        }
    }

    pub fn max_keys(&self) -> usize {
        if self.max_keys_per_connection == 0 {
            5000
        } else {
            self.max_keys_per_connection
        }
    }

    pub fn versioned(&self) -> bool {
        self.mode == "versioned"
    }

    pub fn shutdown_delay(&self) -> Duration {
        or_dur(self.channel_shutdown_delay, Duration::from_secs(1))
    }

    pub fn expired_extra_delay(&self) -> Duration {
        or_dur(self.track_expired_extra_delay, Duration::from_secs(25))
    }

    /// The proxy's name ("default" when unset).
    pub fn proxy(&self) -> &str {
        if self.proxy_name.is_empty() {
            "default"
        } else {
            &self.proxy_name
        }
    }
}

fn or_dur(d: Duration, default: Duration) -> Duration {
    if d.is_zero() {
        default
    } else {
        d
    }
}

impl ChannelOptions {
    /// The namespace's channels are shared poll channels (`subscription_type: shared_poll`).
    pub fn is_shared_poll(&self) -> bool {
        self.subscription_type == "shared_poll"
    }
}

/// The checks of a shared poll namespace at `at`, as Centrifugo makes them.
pub(super) fn validate(at: &str, o: &ChannelOptions, c: &Config) -> Result<(), String> {
    if !o.is_shared_poll() {
        return Ok(());
    }
    let sp = &o.shared_poll;
    if c.shared_poll.hmac_secret_key.is_empty() {
        return Err(format!("{at}: shared_poll.hmac_secret_key is required when subscription_type is \"shared_poll\""));
    }
    if !["", "versionless", "versioned"].contains(&sp.mode.as_str()) {
        return Err(format!("{at}.shared_poll.mode: invalid shared_poll mode {:?}", sp.mode));
    }
    if sp.publish_enabled && !sp.versioned() {
        return Err(format!(
            "{at}.shared_poll.publish_enabled is incompatible with versionless mode (requires explicit versions)"
        ));
    }
    let name = sp.proxy();
    if name == "default" {
        if c.channel.proxy.shared_poll_refresh.endpoint.is_empty() {
            return Err(format!("{at}: channel.proxy.shared_poll_refresh.endpoint is required for shared poll"));
        }
    } else if !c.proxies.iter().any(|p| p.name == name) {
        return Err(format!("{at}.shared_poll.proxy_name: shared poll proxy with name {name:?} not found"));
    }
    if o.proxy.subscribe_stream_proxy_enabled {
        return Err(format!("{at}: subscribe stream proxies are not supported by Gyre on shared poll namespaces"));
    }
    Ok(())
}
