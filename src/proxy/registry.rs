//! The proxies of a node, resolved once from the config: which proxy (if any) decides each
//! kind of event for a channel namespace or an RPC method.

use std::sync::Arc;

use ahash::AHashMap;

use super::{Kind, Proxy, Target};
use crate::config::proxy::{parse_endpoint, Endpoint, ProxyCommon};
use crate::config::{ChannelOptions, Config};

/// See the module docs.
#[derive(Debug, Default)]
pub struct Proxies {
    pub connect: Option<Arc<Proxy>>,
    pub refresh: Option<Arc<Proxy>>,
    by_name: AHashMap<(Kind, String), Arc<Proxy>>,
    /// The lower-cased names of every header any proxy forwards (a connection keeps only those).
    pub header_names: Vec<String>,
    pub emulated_names: Vec<String>,
    pub metadata_names: Vec<String>,
    rpc_ping: Option<String>,
    rpc_any: bool,
}

/// Where an RPC method goes.
#[derive(Debug, Clone)]
pub enum RpcRoute {
    /// `rpc.ping`: answered by the server with an empty result.
    Ping,
    Proxy(Arc<Proxy>),
    /// No RPC handler for it (error 108).
    NotAvailable,
    /// Its namespace does not exist (error 104).
    UnknownNamespace,
}

/// The channel proxies (kind, name) that the channel options of `c` turn on: a reload may
/// only turn on proxies the node already has (they are built at start-up).
pub fn channel_proxies(c: &crate::config::Channel) -> std::collections::BTreeSet<(&'static str, String)> {
    let mut out = std::collections::BTreeSet::new();
    for o in std::iter::once(&c.without_namespace).chain(c.namespaces.iter().map(|n| &n.options)) {
        let (n, m) = (&o.proxy, &o.map.proxy);
        for (kind, on, name) in [
            (Kind::Subscribe, n.subscribe_proxy_enabled, &n.subscribe_proxy_name),
            (Kind::Publish, n.publish_proxy_enabled, &n.publish_proxy_name),
            (Kind::SubRefresh, n.sub_refresh_proxy_enabled, &n.sub_refresh_proxy_name),
            (Kind::SubscribeStream, n.subscribe_stream_proxy_enabled, &n.subscribe_stream_proxy_name),
            (Kind::MapPublish, m.publish_proxy_enabled, &m.publish_proxy_name),
            (Kind::MapRemove, m.remove_proxy_enabled, &m.remove_proxy_name),
        ] {
            if on {
                out.insert((kind.name(), name.clone()));
            }
        }
    }
    out
}

/// Parses an endpoint: `http(s)://host[:port][/path]` or a gRPC target (the config's rules).
pub fn parse_target(endpoint: &str) -> Result<Target, String> {
    Ok(match parse_endpoint(endpoint)? {
        Endpoint::Http { host, port, path_and_query, https } => Target::Http { host, port, path_and_query, https },
        Endpoint::Grpc { target } => Target::Grpc { uri: format!("http://{target}") },
    })
}

fn lower(v: &[String]) -> Vec<String> {
    v.iter().map(|s| s.to_ascii_lowercase()).collect()
}

impl Proxies {
    /// Resolves every proxy the config uses. The config was validated when loaded; an
    /// endpoint that still does not parse is an error here.
    pub fn build(cfg: &Config) -> Result<Proxies, String> {
        let mut p = Proxies::default();
        let mut next_id = 0usize;
        let mut make = |name: &str, kind: Kind, conf: &ProxyCommon| -> Result<Arc<Proxy>, String> {
            let target = parse_target(&conf.endpoint).map_err(|e| format!("{} proxy {name:?}: {e}", kind.name()))?;
            next_id += 1;
            Ok(Arc::new(Proxy {
                name: name.into(),
                kind,
                target,
                timeout: conf.timeout,
                http_headers: lower(&conf.http_headers),
                emulated_headers: lower(&conf.emulated_headers),
                grpc_metadata: conf.grpc_metadata.clone(),
                conf: conf.clone(),
                id: next_id - 1,
            }))
        };
        if cfg.client.proxy.connect.enabled {
            p.connect = Some(make("default", Kind::Connect, &cfg.client.proxy.connect.proxy)?);
        }
        if cfg.client.proxy.refresh.enabled {
            p.refresh = Some(make("default", Kind::Refresh, &cfg.client.proxy.refresh.proxy)?);
        }
        let named = |name: &str| cfg.proxies.iter().find(|n| n.name == name).map(|n| &n.proxy);
        let mut spaces: Vec<&ChannelOptions> = vec![&cfg.channel.without_namespace];
        spaces.extend(cfg.channel.namespaces.iter().map(|n| &n.options));
        let defaults = &cfg.channel.proxy;
        for o in spaces.iter() {
            let (n, m) = (&o.proxy, &o.map.proxy);
            for (kind, on, name, default) in [
                (Kind::Subscribe, n.subscribe_proxy_enabled, &n.subscribe_proxy_name, &defaults.subscribe),
                (Kind::Publish, n.publish_proxy_enabled, &n.publish_proxy_name, &defaults.publish),
                (Kind::SubRefresh, n.sub_refresh_proxy_enabled, &n.sub_refresh_proxy_name, &defaults.sub_refresh),
                (
                    Kind::SubscribeStream,
                    n.subscribe_stream_proxy_enabled,
                    &n.subscribe_stream_proxy_name,
                    &defaults.subscribe_stream,
                ),
                (Kind::MapPublish, m.publish_proxy_enabled, &m.publish_proxy_name, &defaults.map_publish),
                (Kind::MapRemove, m.remove_proxy_enabled, &m.remove_proxy_name, &defaults.map_remove),
            ] {
                if !on || p.by_name.contains_key(&(kind, name.clone())) {
                    continue;
                }
                let conf = if name == "default" {
                    default
                } else {
                    named(name).ok_or_else(|| format!("{} proxy {name:?} is not in \"proxies\"", kind.name()))?
                };
                let proxy = make(name, kind, conf)?;
                p.by_name.insert((kind, name.clone()), proxy);
            }
        }
        for o in spaces.iter().filter(|o| o.is_shared_poll()) {
            let name = o.shared_poll.proxy().to_string();
            if p.by_name.contains_key(&(Kind::SharedPollRefresh, name.clone())) {
                continue;
            }
            let conf = if name == "default" {
                &defaults.shared_poll_refresh
            } else {
                named(&name).ok_or_else(|| format!("shared poll proxy {name:?} is not in \"proxies\""))?
            };
            let proxy = make(&name, Kind::SharedPollRefresh, conf)?;
            p.by_name.insert((Kind::SharedPollRefresh, name), proxy);
        }
        let mut rpc_spaces = vec![&cfg.rpc.without_namespace];
        rpc_spaces.extend(cfg.rpc.namespaces.iter().map(|n| &n.options));
        for o in rpc_spaces {
            if !o.proxy_enabled || p.by_name.contains_key(&(Kind::Rpc, o.proxy_name.clone())) {
                continue;
            }
            let conf = if o.proxy_name == "default" {
                &cfg.rpc.proxy
            } else {
                named(&o.proxy_name).ok_or_else(|| format!("rpc proxy {:?} is not in \"proxies\"", o.proxy_name))?
            };
            let proxy = make(&o.proxy_name, Kind::Rpc, conf)?;
            p.by_name.insert((Kind::Rpc, o.proxy_name.clone()), proxy);
            p.rpc_any = true;
        }
        if cfg.rpc.ping.enabled {
            p.rpc_ping = Some(cfg.rpc.ping.method.clone());
        }
        let all: Vec<Arc<Proxy>> =
            p.connect.iter().chain(p.refresh.iter()).chain(p.by_name.values()).cloned().collect();
        for x in &all {
            for (list, names) in [
                (&x.http_headers, &mut p.header_names),
                (&x.emulated_headers, &mut p.emulated_names),
                (&x.grpc_metadata, &mut p.metadata_names),
            ] {
                for h in list {
                    if !names.contains(h) {
                        names.push(h.clone());
                    }
                }
            }
        }
        Ok(p)
    }

    /// The proxy of `kind` for channels with options `o`, when the namespace turns it on.
    pub fn channel(&self, kind: Kind, o: &ChannelOptions) -> Option<&Arc<Proxy>> {
        let (n, m) = (&o.proxy, &o.map.proxy);
        let (on, name) = match kind {
            Kind::Subscribe => (n.subscribe_proxy_enabled, &n.subscribe_proxy_name),
            Kind::MapPublish => (m.publish_proxy_enabled, &m.publish_proxy_name),
            Kind::MapRemove => (m.remove_proxy_enabled, &m.remove_proxy_name),
            Kind::Publish => (n.publish_proxy_enabled, &n.publish_proxy_name),
            Kind::SubRefresh => (n.sub_refresh_proxy_enabled, &n.sub_refresh_proxy_name),
            Kind::SubscribeStream => (n.subscribe_stream_proxy_enabled, &n.subscribe_stream_proxy_name),
            Kind::SharedPollRefresh => {
                return self.by_name.get(&(kind, o.shared_poll.proxy().to_string())).filter(|_| o.is_shared_poll())
            }
            _ => return None,
        };
        if !on {
            return None;
        }
        self.by_name.get(&(kind, name.clone()))
    }

    /// Where RPC `method` goes.
    pub fn rpc(&self, cfg: &Config, method: &str) -> RpcRoute {
        if self.rpc_ping.as_deref() == Some(method) {
            return RpcRoute::Ping;
        }
        if !self.rpc_any && self.rpc_ping.is_none() {
            return RpcRoute::NotAvailable;
        }
        let boundary = cfg.rpc.namespace_boundary.as_str();
        let o = match (!boundary.is_empty()).then(|| method.split_once(boundary)).flatten() {
            Some((ns, _)) => match cfg.rpc.namespaces.iter().find(|n| n.name == ns) {
                Some(n) => &n.options,
                None => return RpcRoute::UnknownNamespace,
            },
            None => &cfg.rpc.without_namespace,
        };
        if !o.proxy_enabled {
            return RpcRoute::NotAvailable;
        }
        match self.by_name.get(&(Kind::Rpc, o.proxy_name.clone())) {
            Some(p) => RpcRoute::Proxy(p.clone()),
            None => RpcRoute::NotAvailable,
        }
    }

    /// Every proxy, for metrics and start-up logs.
    pub fn all(&self) -> Vec<Arc<Proxy>> {
        self.connect.iter().chain(self.refresh.iter()).chain(self.by_name.values()).cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints() {
        assert_eq!(
            parse_target("http://127.0.0.1:3000/centrifugo/connect").unwrap(),
            Target::Http {
                host: "127.0.0.1".into(),
                port: 3000,
                path_and_query: "/centrifugo/connect".into(),
                https: false
            }
        );
        assert_eq!(
            parse_target("http://app?x=1").unwrap(),
            Target::Http { host: "app".into(), port: 80, path_and_query: "/?x=1".into(), https: false }
        );
        assert_eq!(parse_target("grpc://app:9000").unwrap(), Target::Grpc { uri: "http://app:9000".into() });
        assert_eq!(parse_target("localhost:9000").unwrap(), Target::Grpc { uri: "http://localhost:9000".into() });
        assert!(parse_target("http://:80/").is_err());
        assert!(parse_target("http://a:99999/").is_err());
    }
}
