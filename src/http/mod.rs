//! HTTP/1.1: the wire codec ([`codec`]), a connection's ordered output ([`out`]) and the
//! keep-alive connection loop with the router ([`serve`]); publish lines of legacy streams
//! spread over their channels' owners ([`pipeline`]); the signed v1 API of Centrifugo 1.x ([`v1`]);
//! SockJS's paths (`sockjs`).

pub mod accept;
pub mod ops;
pub mod out;
pub mod pipeline;
pub mod serve;
mod sockjs;
mod transports;
mod upgrade;
mod v1;

/// Which endpoints a listener serves. Without `http_server.internal_port` one listener serves
/// them all; with it, as in Centrifugo, the external port serves the client transports and the
/// internal port the server API, the admin interface, `/metrics` and `/health`
/// (`http_api.external` / `admin.external` move those two to the external port).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Endpoints {
    /// Client transports (WebSocket, SSE, HTTP-streaming, emulation, uni_*), gateway clients.
    pub clients: bool,
    /// The HTTP server API (and the gateway API).
    pub api: bool,
    /// The admin interface.
    pub admin: bool,
    /// `/metrics` and `/health`.
    pub ops: bool,
}

impl Endpoints {
    pub const ALL: Endpoints = Endpoints { clients: true, api: true, admin: true, ops: true };

    /// The external listener's endpoints (all of them when there is no internal listener).
    pub fn external(cfg: &crate::config::Config) -> Endpoints {
        if cfg.http_server.internal().is_none() {
            return Endpoints::ALL;
        }
        Endpoints { clients: true, api: cfg.http_api.external, admin: cfg.admin.external, ops: false }
    }

    /// The internal listener's endpoints.
    pub fn internal(cfg: &crate::config::Config) -> Endpoints {
        Endpoints { clients: false, api: !cfg.http_api.external, admin: !cfg.admin.external, ops: true }
    }

    /// The enabled endpoints' names, for the start-up log.
    pub fn describe(&self, cfg: &crate::config::Config) -> String {
        let mut names = Vec::new();
        if self.clients {
            names.push("clients");
        }
        if self.api && !cfg.http_api.disabled {
            names.push("api");
        }
        if self.admin && cfg.admin.enabled {
            names.push("admin");
        }
        if self.ops && cfg.prometheus.enabled {
            names.push("prometheus");
        }
        if self.ops && cfg.health.enabled {
            names.push("health");
        }
        names.join(", ")
    }
}

/// Compares secrets in time independent of where they differ.
pub(crate) fn constant_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}
