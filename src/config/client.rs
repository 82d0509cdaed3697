//! The `client` section: connections, their tokens, limits and how their writes are batched.

use serde::{Deserialize, Serialize};
use std::time::Duration;

use super::{duration, proxy, CodeToDisconnect, SubscriptionToken, Token};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct Client {
    pub token: Token,
    pub subscription_token: SubscriptionToken,
    pub insecure: bool,
    pub allow_anonymous_connect_without_token: bool,
    pub disallow_anonymous_connection_tokens: bool,
    /// Tokens are read without checking their signature (testing only).
    pub insecure_skip_token_signature_verify: bool,
    #[serde(with = "duration")]
    pub ping_interval: Duration,
    #[serde(with = "duration")]
    pub pong_timeout: Duration,
    #[serde(with = "duration")]
    pub expired_close_delay: Duration,
    #[serde(with = "duration")]
    pub expired_sub_close_delay: Duration,
    #[serde(with = "duration")]
    pub stale_close_delay: Duration,
    pub channel_limit: usize,
    pub user_connection_limit: usize,
    /// Most WebSocket connections on this node (0 = no limit); above it upgrades get 503.
    pub connection_limit: usize,
    /// Most new WebSocket connections per second on this node (0 = no limit; 503 above).
    pub connection_rate_limit: usize,
    /// Most commands per second one connection may send (0 = no limit); above it commands
    /// get error 111 "too many requests" (raw gateway clients are closed with 1008).
    pub command_rate_limit: usize,
    pub queue_max_size: usize,
    pub history_max_publication_limit: usize,
    pub recovery_max_publication_limit: usize,
    pub allowed_origins: Vec<String>,
    pub subscribe_to_user_personal_channel: PersonalChannel,
    /// How a refused connect of a unidirectional transport becomes its disconnect.
    pub connect_code_to_unidirectional_disconnect: CodeToDisconnect,
    /// `client.proxy.connect` and `client.proxy.refresh`.
    pub proxy: proxy::ClientProxies,
    /// The connect result carries the server's time (`time`, ms since the epoch).
    pub connect_include_server_time: bool,
    /// Clients of the older protocol (Centrifugo 2.x/3.x) asking history without a limit get
    /// every publication (up to `history_max_publication_limit`), as Centrifugo 3's option of
    /// this name allowed while clients migrated; otherwise only the stream position.
    pub use_unlimited_history_by_default: bool,
    /// How long a connection's frames wait for more before they are written (zero: at the
    /// end of the loop turn that queued them), as Centrifugo PRO's option of this name.
    #[serde(with = "duration")]
    pub write_delay: Duration,
    /// With `write_delay`: this many queued frames are written without waiting the rest of
    /// the delay (0: 16, negative: no bound).
    pub max_messages_in_frame: i64,
    /// With `write_delay`: replies to commands are not delayed (they leave at the end of
    /// their loop turn, with the frames queued before them).
    pub reply_without_queue: bool,
}

impl Default for Client {
    fn default() -> Self {
        Client {
            token: Token::default(),
            subscription_token: SubscriptionToken::default(),
            insecure: false,
            allow_anonymous_connect_without_token: false,
            disallow_anonymous_connection_tokens: false,
            insecure_skip_token_signature_verify: false,
            ping_interval: Duration::from_secs(25),
            pong_timeout: Duration::from_secs(8),
            expired_close_delay: Duration::from_secs(25),
            expired_sub_close_delay: Duration::from_secs(25),
            stale_close_delay: Duration::from_secs(10),
            channel_limit: 128,
            user_connection_limit: 0,
            connection_limit: 0,
            connection_rate_limit: 0,
            command_rate_limit: 0,
            queue_max_size: 1_048_576,
            history_max_publication_limit: 300,
            recovery_max_publication_limit: 300,
            allowed_origins: Vec::new(),
            subscribe_to_user_personal_channel: PersonalChannel::default(),
            connect_code_to_unidirectional_disconnect: CodeToDisconnect::default(),
            proxy: proxy::ClientProxies::default(),
            connect_include_server_time: false,
            use_unlimited_history_by_default: false,
            write_delay: Duration::ZERO,
            max_messages_in_frame: 16,
            reply_without_queue: false,
        }
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct PersonalChannel {
    pub enabled: bool,
    pub personal_channel_namespace: String,
    pub single_connection: bool,
}
