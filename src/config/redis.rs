//! A Redis server's address as the config names it: `redis[s]://[user[:password]@]host:port[/db]`
//! or `host:port`, with the `engine.redis` user/password/db as defaults. Parsed when the
//! config is loaded (so a bad address is a config error) and again by the engine to connect.

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
    pub fn parse(addr: &str, cfg: &super::Redis) -> Result<Endpoint, String> {
        let bad = || format!("engine.redis.address: cannot parse {addr:?} (use redis://host:port or host:port)");
        let mut ep = Endpoint {
            host: String::new(),
            port: 6379,
            user: cfg.user.clone(),
            password: cfg.password.clone(),
            db: cfg.db,
            tls: cfg.tls.enabled,
            sentinel: None,
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

    /// One entry of `engine.redis.sentinel_address`: `host:port[,host:port...]`, the
    /// sentinels of one shard (as Centrifugo reads it).
    pub fn sentinel_shard(spec: &str, cfg: &super::Redis) -> Result<Endpoint, String> {
        let mut addresses = Vec::new();
        for a in spec.split(',').map(str::trim).filter(|a| !a.is_empty()) {
            let hp = a.strip_prefix("redis://").unwrap_or(a);
            match hp.rsplit_once(':') {
                Some((h, p)) if !h.is_empty() => {
                    let port =
                        p.parse().map_err(|_| format!("engine.redis.sentinel_address: malformed address {a:?}"))?;
                    addresses.push((h.trim_start_matches('[').trim_end_matches(']').to_string(), port));
                }
                _ => return Err(format!("engine.redis.sentinel_address: malformed address {a:?} (use host:port)")),
            }
        }
        if addresses.is_empty() {
            return Err("engine.redis.sentinel_address: an empty shard".into());
        }
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

    /// The shards `engine.redis` names: its sentinel shards when `sentinel_address` is set
    /// (as in Centrifugo, `address` is then unused), else its addresses.
    pub fn all(cfg: &super::Redis) -> Result<Vec<Endpoint>, String> {
        if cfg.sentinel_address.is_empty() {
            cfg.address.iter().map(|a| Endpoint::parse(a, cfg)).collect()
        } else {
            cfg.sentinel_address.iter().map(|a| Endpoint::sentinel_shard(a, cfg)).collect()
        }
    }

    pub fn display(&self) -> String {
        match &self.sentinel {
            Some(s) => format!("{} (sentinel)", s.master_name),
            None => format!("{}:{}", self.host, self.port),
        }
    }
}
