//! `broker`: a PUB/SUB broker that replaces the engine's (Centrifugo v6 `broker.enabled` +
//! `broker.type`). Gyre has the NATS broker: publications, join/leave and the nodes' control
//! messages travel through a nats-server; history is not available (as in Centrifugo), and
//! presence stays with the engine (memory: each node its own; redis: shared).

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::duration;

/// `broker`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct Broker {
    pub enabled: bool,
    /// "memory" (the engine's own) or "nats".
    #[serde(rename = "type")]
    pub kind: String,
    pub nats: Nats,
}

impl Default for Broker {
    fn default() -> Self {
        Broker { enabled: false, kind: "memory".into(), nats: Nats::default() }
    }
}

impl Broker {
    /// The NATS broker runs.
    pub fn nats(&self) -> bool {
        self.enabled && self.kind == "nats"
    }
}

/// `broker.nats`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct Nats {
    /// `nats://[user:password@|token@]host:port`.
    pub url: String,
    /// Subjects are `<prefix>.client.<channel>`, `<prefix>.control`, `<prefix>.node.<id>`.
    pub prefix: String,
    #[serde(with = "duration")]
    pub dial_timeout: Duration,
    /// A write to NATS (and a PING's answer) may take this long before the connection is
    /// dropped and made again.
    #[serde(with = "duration")]
    pub write_timeout: Duration,
}

impl Default for Nats {
    fn default() -> Self {
        Nats {
            url: "nats://localhost:4222".into(),
            prefix: "centrifugo".into(),
            dial_timeout: Duration::from_secs(1),
            write_timeout: Duration::from_secs(1),
        }
    }
}

/// A parsed `broker.nats.url`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NatsUrl {
    pub host: String,
    pub port: u16,
    pub user: String,
    pub password: String,
    pub token: String,
}

impl NatsUrl {
    /// `nats://[user:password@|token@]host[:port]` (also `host:port`; the first of a
    /// comma-separated list).
    pub fn parse(url: &str) -> Result<NatsUrl, String> {
        let bad = || format!("broker.nats.url: expected nats://[user:password@]host:port, got {url:?}");
        let first = url.split(',').next().unwrap_or("").trim();
        let rest = match first.split_once("://") {
            Some(("nats", rest)) => rest,
            Some(("tls", _)) => return Err("broker.nats.url: TLS to NATS (tls://) is not supported by Gyre".into()),
            Some(_) => return Err(bad()),
            None => first,
        };
        let rest = rest.trim_end_matches('/');
        let (auth, hostport) = match rest.rsplit_once('@') {
            Some((a, h)) => (Some(a), h),
            None => (None, rest),
        };
        let (mut user, mut password, mut token) = (String::new(), String::new(), String::new());
        match auth.map(|a| a.split_once(':')) {
            Some(Some((u, p))) => (user, password) = (u.to_string(), p.to_string()),
            Some(None) => token = auth.unwrap_or_default().to_string(),
            None => {}
        }
        let (host, port) = match hostport.rsplit_once(':') {
            Some((h, p)) => (h, p.parse::<u16>().map_err(|_| bad())?),
            None => (hostport, 4222),
        };
        let host = host.trim_start_matches('[').trim_end_matches(']');
        if host.is_empty() {
            return Err(bad());
        }
        Ok(NatsUrl { host: host.to_string(), port, user, password, token })
    }

    /// The address without credentials, for logs.
    pub fn display(&self) -> String {
        format!("nats://{}:{}", self.host, self.port)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_urls() {
        let u = NatsUrl::parse("nats://localhost:4222").unwrap();
        assert_eq!((u.host.as_str(), u.port), ("localhost", 4222));
        let u = NatsUrl::parse("nats://bob:secret@10.0.0.1:5222, nats://other:1").unwrap();
        assert_eq!((u.user.as_str(), u.password.as_str(), u.port), ("bob", "secret", 5222));
        let u = NatsUrl::parse("nats://s3cr3t@h").unwrap();
        assert_eq!((u.token.as_str(), u.port), ("s3cr3t", 4222));
        assert_eq!(NatsUrl::parse("127.0.0.1:1234").unwrap().port, 1234);
        assert!(NatsUrl::parse("http://h:1").is_err());
        assert!(NatsUrl::parse("nats://h:port").is_err());
        assert!(NatsUrl::parse("tls://h:1").unwrap_err().contains("not supported"));
    }
}
