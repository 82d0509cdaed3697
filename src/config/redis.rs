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

    pub fn display(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }
}
