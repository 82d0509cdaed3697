//! `http_server`: the listeners' addresses and the HTTP limits.

use serde::{Deserialize, Serialize};
use std::time::Duration;

use super::duration;
use super::tls::Tls;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct HttpServer {
    /// Listen address; "" means all interfaces (0.0.0.0).
    pub address: String,
    pub port: u16,
    /// Address of the internal listener; "" = the same as `address`.
    pub internal_address: String,
    /// Port of the internal listener (API, admin, metrics, health); "" = none, everything is
    /// served on `port`. A string, as in Centrifugo (a number is accepted too).
    #[serde(deserialize_with = "string_or_number")]
    pub internal_port: String,
    /// Maximum size of an HTTP request head in bytes.
    pub max_head_size: usize,
    /// A keep-alive connection with no request started for this long is closed (0 = never).
    #[serde(with = "duration")]
    pub idle_timeout: Duration,
    /// A request head must arrive whole within this long of its first byte (408 otherwise;
    /// 0 = no limit).
    #[serde(with = "duration")]
    pub read_header_timeout: Duration,
    /// TLS of the listeners (the external one, and the internal one unless `tls_external`).
    pub tls: Tls,
    /// TLS only on the external listener: the internal one serves plain HTTP (unless
    /// `internal_tls` gives it its own).
    pub tls_external: bool,
    /// The internal listener's own TLS; when not enabled it follows `tls` and `tls_external`.
    pub internal_tls: Tls,
}

impl HttpServer {
    /// The internal listener's port when one is set apart from the external listener.
    pub fn internal(&self) -> Option<u16> {
        let port: u16 = self.internal_port.trim().parse().ok()?;
        let same_address = self.internal_address.is_empty() || self.internal_address == self.address;
        (!(same_address && port == self.port && port != 0)).then_some(port)
    }

    /// The TLS options of the external listener (None: plain HTTP).
    pub fn external_tls(&self) -> Option<(&'static str, &Tls)> {
        self.tls.enabled.then_some(("http_server.tls", &self.tls))
    }

    /// The TLS options of the internal listener, as Centrifugo chooses them: `internal_tls`
    /// when enabled, else `tls` unless `tls_external`.
    pub fn internal_listener_tls(&self) -> Option<(&'static str, &Tls)> {
        if self.internal_tls.enabled {
            return Some(("http_server.internal_tls", &self.internal_tls));
        }
        (self.tls.enabled && !self.tls_external).then_some(("http_server.tls", &self.tls))
    }
}

/// A string option that configs may also write as a number (`"internal_port": 9000`).
fn string_or_number<'de, D: serde::Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Either {
        S(String),
        N(u64),
    }
    Ok(match Either::deserialize(d)? {
        Either::S(s) => s,
        Either::N(n) => n.to_string(),
    })
}

impl Default for HttpServer {
    fn default() -> Self {
        HttpServer {
            address: String::new(),
            port: 8000,
            internal_address: String::new(),
            internal_port: String::new(),
            max_head_size: 16 * 1024,
            idle_timeout: Duration::from_secs(60),
            read_header_timeout: Duration::from_secs(30),
            tls: Tls::default(),
            tls_external: false,
            internal_tls: Tls::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::HttpServer;

    #[test]
    fn internal_port_as_string_or_number() {
        let h: HttpServer = serde_json::from_str(r#"{"port": 8000, "internal_port": 9000}"#).unwrap();
        assert_eq!((h.internal_port.as_str(), h.internal()), ("9000", Some(9000)));
        let h: HttpServer = serde_json::from_str(r#"{"internal_port": "9000"}"#).unwrap();
        assert_eq!(h.internal(), Some(9000));
        assert_eq!(HttpServer::default().internal(), None);
        // The same address and port is one listener, as in Centrifugo.
        let h: HttpServer = serde_json::from_str(r#"{"port": 8000, "internal_port": "8000"}"#).unwrap();
        assert_eq!(h.internal(), None);
        let h: HttpServer =
            serde_json::from_str(r#"{"port": 8000, "internal_port": "8000", "internal_address": "127.0.0.1"}"#)
                .unwrap();
        assert_eq!(h.internal(), Some(8000));
        assert!(serde_json::from_str::<HttpServer>(r#"{"internal_port": true}"#).is_err());
    }
}
