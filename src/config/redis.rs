//! A Redis server's address as the config names it: `redis[s]://[user[:password]@]host:port[/db]`
//! or `host:port`, with the `engine.redis` user/password/db as defaults. Parsed when the
//! config is loaded (so a bad address is a config error) and again by the engine to connect.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{duration, tls};

/// `engine.redis`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct Redis {
    pub address: Vec<String>,
    pub prefix: String,
    pub password: String,
    pub user: String,
    pub db: u32,
    #[serde(with = "duration")]
    pub connect_timeout: Duration,
    #[serde(with = "duration")]
    pub io_timeout: Duration,
    #[serde(with = "duration")]
    pub presence_ttl: Duration,
    /// TLS to Redis (also turned on per address by a `rediss://` scheme).
    pub tls: tls::Tls,
    /// Redis Cluster: one entry per cluster (shard), its seed nodes comma-separated
    /// (`address` and `sentinel_address` are then unused).
    pub cluster_address: Vec<String>,
    /// Redis Sentinel: one entry per shard, its sentinels comma-separated (`address` is then
    /// unused).
    pub sentinel_address: Vec<String>,
    pub sentinel_master_name: String,
    pub sentinel_user: String,
    pub sentinel_password: String,
    pub sentinel_client_name: String,
    pub sentinel_tls: tls::Tls,
    /// A publication is acknowledged only once this many replicas have it (Redis `WAIT`,
    /// within half of `io_timeout`); else the publish fails. 0: on the master's write, as
    /// Centrifugo. With Sentinel, 1 keeps a failover from losing acknowledged publications.
    pub wait_replicas: u32,
}

impl Default for Redis {
    fn default() -> Self {
        Redis {
            address: vec!["redis://127.0.0.1:6379".into()],
            prefix: "centrifugo".into(),
            password: String::new(),
            user: String::new(),
            db: 0,
            connect_timeout: Duration::from_secs(1),
            io_timeout: Duration::from_secs(4),
            presence_ttl: Duration::from_secs(60),
            tls: tls::Tls::default(),
            cluster_address: Vec::new(),
            sentinel_address: Vec::new(),
            sentinel_master_name: String::new(),
            sentinel_user: String::new(),
            sentinel_password: String::new(),
            sentinel_client_name: String::new(),
            sentinel_tls: tls::Tls::default(),
            wait_replicas: 0,
        }
    }
}

/// Where and how to connect: parsed from `redis://[user[:password]@]host:port[/db]` or
/// `host:port`, with the config's user/password/db as defaults.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    pub host: String,
    pub port: u16,
    pub user: String,
    pub password: String,
    pub db: u32,
    /// Over TLS (`engine.redis.tls.enabled`, or a `rediss://` address).
    pub tls: bool,
    /// Sentinel mode: the master is found through these sentinels (host and port unused).
    pub sentinel: Option<Sentinel>,
    /// Cluster mode: the seed nodes of a Redis Cluster (host and port unused).
    pub cluster: Option<Vec<(String, u16)>>,
}

/// A shard's sentinels (`engine.redis.sentinel_address`, comma-separated) and how to talk to
/// them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sentinel {
    pub addresses: Vec<(String, u16)>,
    pub master_name: String,
    pub user: String,
    pub password: String,
    pub client_name: String,
    /// `engine.redis.sentinel_tls` when enabled.
    pub tls: Option<super::tls::Tls>,
}

impl Endpoint {
    pub fn parse(addr: &str, cfg: &Redis) -> Result<Endpoint, String> {
        let bad = || format!("engine.redis.address: cannot parse {addr:?} (use redis://host:port or host:port)");
        let mut ep = Endpoint {
            host: String::new(),
            port: 6379,
            user: cfg.user.clone(),
            password: cfg.password.clone(),
            db: cfg.db,
            tls: cfg.tls.enabled,
            sentinel: None,
            cluster: None,
        };
        let rest = if let Some(r) = addr.strip_prefix("redis://").or_else(|| addr.strip_prefix("tcp://")) {
            r
        } else if let Some(r) = addr.strip_prefix("rediss://") {
            ep.tls = true;
            r
        } else if addr.starts_with("unix://") {
            return Err(format!("engine.redis.address: {addr:?}: only TCP (redis:// or rediss://) is supported"));
        } else if addr.contains("://") {
            return Err(bad());
        } else {
            addr
        };
        let (auth, hostpart) = match rest.rsplit_once('@') {
            Some((a, h)) => (Some(a), h),
            None => (None, rest),
        };
        if let Some(a) = auth {
            match a.split_once(':') {
                Some((u, p)) => {
                    ep.user = u.to_string();
                    ep.password = p.to_string();
                }
                None => ep.user = a.to_string(),
            }
        }
        let (hostport, db) = match hostpart.split_once('/') {
            Some((h, d)) => (h, Some(d)),
            None => (hostpart, None),
        };
        if let Some(d) = db.filter(|d| !d.is_empty()) {
            ep.db = d.split('?').next().unwrap_or("").parse().map_err(|_| bad())?;
        }
        match hostport.rsplit_once(':') {
            Some((h, p)) if !h.is_empty() => {
                ep.host = h.trim_start_matches('[').trim_end_matches(']').to_string();
                ep.port = p.parse().map_err(|_| bad())?;
            }
            _ if !hostport.is_empty() && !hostport.contains(':') => ep.host = hostport.to_string(),
            _ => return Err(bad()),
        }
        Ok(ep)
    }

    /// `host:port[,host:port...]` of option `at` (one shard of sentinels or cluster seeds).
    fn host_ports(at: &str, spec: &str) -> Result<Vec<(String, u16)>, String> {
        let mut addresses = Vec::new();
        for a in spec.split(',').map(str::trim).filter(|a| !a.is_empty()) {
            let hp = a.strip_prefix("redis://").or_else(|| a.strip_prefix("rediss://")).unwrap_or(a);
            match hp.rsplit_once(':') {
                Some((h, p)) if !h.is_empty() => {
                    let port = p.parse().map_err(|_| format!("{at}: malformed address {a:?}"))?;
                    addresses.push((h.trim_start_matches('[').trim_end_matches(']').to_string(), port));
                }
                _ => return Err(format!("{at}: malformed address {a:?} (use host:port)")),
            }
        }
        if addresses.is_empty() {
            return Err(format!("{at}: an empty shard"));
        }
        Ok(addresses)
    }

    /// One entry of `engine.redis.cluster_address`: the seed nodes of one Redis Cluster.
    pub fn cluster_shard(spec: &str, cfg: &Redis) -> Result<Endpoint, String> {
        let seeds = Self::host_ports("engine.redis.cluster_address", spec)?;
        Ok(Endpoint {
            host: seeds[0].0.clone(),
            port: seeds[0].1,
            user: cfg.user.clone(),
            password: cfg.password.clone(),
            db: 0,
            tls: cfg.tls.enabled || spec.contains("rediss://"),
            sentinel: None,
            cluster: Some(seeds),
        })
    }

    /// One entry of `engine.redis.sentinel_address`: `host:port[,host:port...]`, the
    /// sentinels of one shard (as Centrifugo reads it).
    pub fn sentinel_shard(spec: &str, cfg: &Redis) -> Result<Endpoint, String> {
        let addresses = Self::host_ports("engine.redis.sentinel_address", spec)?;
        if cfg.sentinel_master_name.is_empty() {
            return Err("engine.redis.sentinel_master_name: must be set when using Redis Sentinel".into());
        }
        Ok(Endpoint {
            host: String::new(),
            port: 0,
            user: cfg.user.clone(),
            password: cfg.password.clone(),
            db: cfg.db,
            tls: cfg.tls.enabled,
            cluster: None,
            sentinel: Some(Sentinel {
                addresses,
                master_name: cfg.sentinel_master_name.clone(),
                user: cfg.sentinel_user.clone(),
                password: cfg.sentinel_password.clone(),
                client_name: cfg.sentinel_client_name.clone(),
                tls: cfg.sentinel_tls.enabled.then(|| cfg.sentinel_tls.clone()),
            }),
        })
    }

    /// The shards `engine.redis` names, as Centrifugo picks them: its Redis Clusters when
    /// `cluster_address` is set, else its sentinel shards when `sentinel_address` is, else its
    /// addresses.
    pub fn all(cfg: &Redis) -> Result<Vec<Endpoint>, String> {
        if !cfg.cluster_address.is_empty() {
            return cfg.cluster_address.iter().map(|a| Endpoint::cluster_shard(a, cfg)).collect();
        }
        if cfg.sentinel_address.is_empty() {
            cfg.address.iter().map(|a| Endpoint::parse(a, cfg)).collect()
        } else {
            cfg.sentinel_address.iter().map(|a| Endpoint::sentinel_shard(a, cfg)).collect()
        }
    }

    pub fn display(&self) -> String {
        match (&self.sentinel, &self.cluster) {
            (Some(s), _) => format!("{} (sentinel)", s.master_name),
            (None, Some(_)) if self.port == 0 => "cluster".into(),
            _ => format!("{}:{}", self.host, self.port),
        }
    }
}
