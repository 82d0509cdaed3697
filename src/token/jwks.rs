//! JWKS keys (`jwks_public_endpoint`): a process-wide cache the workers read without waiting,
//! filled by one fetcher thread.
//!
//! As in Centrifugo, keys are cached by (resolved endpoint URL, `kid`) for an hour after the
//! fetch that brought them; only keys with `use: "sig"` are kept. A token whose `kid` is not in
//! the cache makes its verification ask the fetcher for the endpoint's set ([`Fetch`]) and wait
//! for the answer on its worker (the session awaits it; the event loop goes on), then look
//! again. The fetcher (thread `gyre-jwks`, a current-thread tokio runtime) fetches each
//! endpoint at most once per [`MIN_INTERVAL`]: requests arriving while a fetch is under way or
//! within that interval are all answered by the next one. A fetch is one GET (HTTP/1.1, plain
//! or TLS with the system's roots, `SSL_CERT_FILE`/`SSL_CERT_DIR` honoured) with a 1 s timeout,
//! tried twice; when the endpoint is down, keys already cached keep verifying until their hour
//! is up, and an unknown `kid` is refused once the attempts have failed (a few seconds at most).
//!
//! Workers see the cache through [`Snapshot`]: an `Arc` of the whole map, replaced by the
//! fetcher after each fetch (a generation counter tells a worker to take the new one).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, RwLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Limited};
use hyper::Uri;
use serde_json::Value;

use super::keys::{self, Jwk};

/// How long a fetched key stays usable without being seen again (Centrifugo's cache TTL).
pub const TTL: Duration = Duration::from_secs(3600);
/// The shortest time between two fetches of one endpoint.
pub const MIN_INTERVAL: Duration = Duration::from_secs(1);
/// One attempt's limit, connection and TLS handshake included.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(1);
const ATTEMPTS: usize = 2;
/// The largest JWKS document read.
const MAX_BODY: usize = 1 << 20;
/// How long a verification waits for the fetcher at most (a backstop: the fetcher answers
/// within `MIN_INTERVAL` plus its attempts).
pub const WAIT_LIMIT: Duration = Duration::from_secs(5);

struct Cached {
    key: Arc<Jwk>,
    until: Instant,
}

type Map = HashMap<(String, String), Cached>;

struct Cache {
    map: RwLock<Arc<Map>>,
    generation: AtomicU64,
}

fn cache() -> &'static Cache {
    static CACHE: OnceLock<Cache> = OnceLock::new();
    CACHE.get_or_init(|| Cache { map: RwLock::new(Arc::new(Map::new())), generation: AtomicU64::new(0) })
}

/// A reader's view of the cache (one per verifier, so per worker).
#[derive(Default)]
pub struct Snapshot {
    seen: std::cell::Cell<u64>,
    map: std::cell::RefCell<Option<Arc<Map>>>,
}

impl Snapshot {
    /// The cached key `kid` of endpoint `url`, if fresh.
    pub fn get(&self, url: &str, kid: &str) -> Option<Arc<Jwk>> {
        let c = cache();
        let generation = c.generation.load(Ordering::Acquire);
        let mut map = self.map.borrow_mut();
        if map.is_none() || self.seen.get() != generation {
            *map = Some(c.map.read().unwrap_or_else(|e| e.into_inner()).clone());
            self.seen.set(generation);
        }
        let hit = map.as_ref()?.get(&(url.to_string(), kid.to_string()))?;
        (hit.until > Instant::now()).then(|| hit.key.clone())
    }
}

/// Puts a key in the cache as a fetch would (tests).
#[doc(hidden)]
pub fn insert(url: &str, kid: &str, key: Jwk) {
    let c = cache();
    let mut guard = c.map.write().unwrap_or_else(|e| e.into_inner());
    let mut map: Map = guard.iter().map(|(k, v)| (k.clone(), Cached { key: v.key.clone(), until: v.until })).collect();
    map.insert((url.to_string(), kid.to_string()), Cached { key: Arc::new(key), until: Instant::now() + TTL });
    *guard = Arc::new(map);
    c.generation.fetch_add(1, Ordering::Release);
}

/// The keys of endpoint `url` are needed: [`Fetch::run`] asks the fetcher and calls back once
/// it has fetched (or failed to).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fetch {
    pub url: String,
}

type Done = Box<dyn FnOnce() + Send>;

impl Fetch {
    /// Hands the request to the fetcher thread; `done` runs there once the endpoint has been
    /// fetched, successfully or not. Returns at once.
    pub fn run(self, done: Done) {
        match sender() {
            Some(tx) => {
                if let Err(e) = tx.send((self.url, done)) {
                    (e.0 .1)();
                }
            }
            None => done(),
        }
    }

    /// Fetches and waits (the CLI; never on a worker).
    pub fn run_blocking(self) {
        let (tx, rx) = std::sync::mpsc::channel();
        self.run(Box::new(move || {
            let _ = tx.send(());
        }));
        let _ = rx.recv_timeout(WAIT_LIMIT);
    }
}

type Request = (String, Done);

fn sender() -> Option<&'static tokio::sync::mpsc::UnboundedSender<Request>> {
    static TX: OnceLock<Option<tokio::sync::mpsc::UnboundedSender<Request>>> = OnceLock::new();
    TX.get_or_init(|| match start() {
        Ok(tx) => Some(tx),
        Err(e) => {
            tracing::error!(error = %e, "cannot start the JWKS fetcher");
            None
        }
    })
    .as_ref()
}

#[derive(Default)]
struct Endpoint {
    waiting: Vec<Done>,
    running: bool,
    last_start: Option<Instant>,
}

fn start() -> Result<tokio::sync::mpsc::UnboundedSender<Request>, String> {
    let rt =
        tokio::runtime::Builder::new_current_thread().enable_io().enable_time().build().map_err(|e| e.to_string())?;
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Request>();
    std::thread::Builder::new()
        .name("gyre-jwks".into())
        .spawn(move || {
            rt.block_on(async move {
                let endpoints: Arc<Mutex<HashMap<String, Endpoint>>> = Arc::default();
                while let Some((url, done)) = rx.recv().await {
                    let mut eps = endpoints.lock().unwrap_or_else(|e| e.into_inner());
                    let ep = eps.entry(url.clone()).or_default();
                    ep.waiting.push(done);
                    if !ep.running {
                        ep.running = true;
                        tokio::spawn(serve(endpoints.clone(), url));
                    }
                }
            })
        })
        .map_err(|e| e.to_string())?;
    Ok(tx)
}

/// Fetches `url` for its waiters, again while new ones arrive, at most once per
/// [`MIN_INTERVAL`].
async fn serve(endpoints: Arc<Mutex<HashMap<String, Endpoint>>>, url: String) {
    loop {
        let last = endpoints.lock().unwrap_or_else(|e| e.into_inner()).get(&url).and_then(|e| e.last_start);
        if let Some(last) = last {
            tokio::time::sleep_until((last + MIN_INTERVAL).into()).await;
        }
        let waiting = {
            let mut eps = endpoints.lock().unwrap_or_else(|e| e.into_inner());
            let ep = eps.entry(url.clone()).or_default();
            ep.last_start = Some(Instant::now());
            std::mem::take(&mut ep.waiting)
        };
        match fetch(&url).await {
            Ok(n) => tracing::debug!(endpoint = %url, keys = n, "JWKS fetched"),
            Err(e) => tracing::warn!(endpoint = %url, error = %e, "JWKS fetch failed"),
        }
        for done in waiting {
            done();
        }
        let mut eps = endpoints.lock().unwrap_or_else(|e| e.into_inner());
        let ep = eps.entry(url.clone()).or_default();
        if ep.waiting.is_empty() {
            ep.running = false;
            return;
        }
    }
}

/// Fetches the set and caches its signing keys; returns how many were cached.
async fn fetch(url: &str) -> Result<usize, String> {
    let mut last = String::new();
    let mut body = None;
    for _ in 0..ATTEMPTS {
        match tokio::time::timeout(ATTEMPT_TIMEOUT, get(url)).await {
            Ok(Ok(b)) => {
                body = Some(b);
                break;
            }
            Ok(Err(e)) => last = e,
            Err(_) => last = "timed out".into(),
        }
    }
    let body = body.ok_or(last)?;
    let doc: Value = serde_json::from_slice(&body).map_err(|e| format!("unmarshal error: {e}"))?;
    let list = doc.get("keys").and_then(Value::as_array).ok_or("unmarshal error: no keys array")?;
    let until = Instant::now() + TTL;
    let mut fresh = Vec::new();
    for k in list {
        if k.get("use").and_then(Value::as_str) != Some("sig") {
            continue;
        }
        match keys::jwk(k) {
            Ok((kid, key)) => fresh.push((kid, key)),
            Err(e) => tracing::debug!(endpoint = %url, error = %e, "JWKS key skipped"),
        }
    }
    if fresh.is_empty() {
        return Err("public key not found".into());
    }
    let c = cache();
    let mut guard = c.map.write().unwrap_or_else(|e| e.into_inner());
    let now = Instant::now();
    let mut map: Map = guard
        .iter()
        .filter(|(_, v)| v.until > now)
        .map(|(k, v)| (k.clone(), Cached { key: v.key.clone(), until: v.until }))
        .collect();
    let n = fresh.len();
    for (kid, key) in fresh {
        map.insert((url.to_string(), kid), Cached { key: Arc::new(key), until });
    }
    *guard = Arc::new(map);
    c.generation.fetch_add(1, Ordering::Release);
    Ok(n)
}

fn tls() -> Result<Arc<tokio_rustls::rustls::ClientConfig>, String> {
    use tokio_rustls::rustls;
    static CONFIG: OnceLock<Result<Arc<rustls::ClientConfig>, String>> = OnceLock::new();
    CONFIG
        .get_or_init(|| {
            let mut roots = rustls::RootCertStore::empty();
            let found = rustls_native_certs::load_native_certs();
            for cert in found.certs {
                let _ = roots.add(cert);
            }
            if roots.is_empty() {
                return Err("no trusted root certificates found".into());
            }
            #[allow(deprecated)]
            let provider = Arc::new(rustls::crypto::ring::default_provider());
            let mut config = rustls::ClientConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .map_err(|e| e.to_string())?
                .with_root_certificates(roots)
                .with_no_client_auth();
            config.alpn_protocols = vec![b"http/1.1".to_vec()];
            Ok(Arc::new(config))
        })
        .clone()
}

/// One GET: the body of a 200 answer.
async fn get(url: &str) -> Result<Bytes, String> {
    let uri: Uri = url.parse().map_err(|e| format!("invalid url: {e}"))?;
    let https = match uri.scheme_str() {
        Some("https") => true,
        Some("http") => false,
        _ => return Err("endpoint must have http:// or https:// scheme".into()),
    };
    let host = uri.host().ok_or("url has no host")?.to_string();
    let bare = host.trim_start_matches('[').trim_end_matches(']').to_string();
    let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });
    let authority = uri.authority().map(|a| a.as_str().to_string()).unwrap_or_else(|| host.clone());
    let path = uri.path_and_query().map(|p| p.as_str().to_string()).unwrap_or_else(|| "/".into());
    let tcp = tokio::net::TcpStream::connect((bare.as_str(), port)).await.map_err(|e| e.to_string())?;
    let _ = tcp.set_nodelay(true);
    if https {
        let name = tokio_rustls::rustls::pki_types::ServerName::try_from(bare).map_err(|e| e.to_string())?;
        let tls = tokio_rustls::TlsConnector::from(tls()?).connect(name, tcp).await.map_err(|e| e.to_string())?;
        request(hyper_util::rt::TokioIo::new(tls), &authority, &path).await
    } else {
        request(hyper_util::rt::TokioIo::new(tcp), &authority, &path).await
    }
}

async fn request<T>(io: T, authority: &str, path: &str) -> Result<Bytes, String>
where
    T: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let (mut sender, conn) = hyper::client::conn::http1::handshake(io).await.map_err(|e| e.to_string())?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    let req = hyper::Request::get(path)
        .header(hyper::header::HOST, authority)
        .header(hyper::header::USER_AGENT, concat!("gyre/", env!("CARGO_PKG_VERSION")))
        .header(hyper::header::ACCEPT, "application/json")
        .body(Empty::<Bytes>::new())
        .map_err(|e| e.to_string())?;
    let resp = sender.send_request(req).await.map_err(|e| e.to_string())?;
    if resp.status() != hyper::StatusCode::OK {
        return Err(format!("unexpected status code: {}", resp.status().as_u16()));
    }
    let body = Limited::new(resp.into_body(), MAX_BODY).collect().await.map_err(|e| e.to_string())?;
    Ok(body.to_bytes())
}

/// An endpoint template: `{{name}}` placeholders filled from the named groups of the
/// issuer/audience regexes (a missing value becomes empty, as with Centrifugo's templates).
pub fn resolve(template: &str, vars: &[(String, String)]) -> Result<String, String> {
    let mut out = String::with_capacity(template.len());
    let mut rest = template;
    while let Some(start) = rest.find("{{") {
        let Some(end) = rest[start + 2..].find("}}") else { break };
        out.push_str(&rest[..start]);
        let name = &rest[start + 2..start + 2 + end];
        if let Some((_, v)) = vars.iter().find(|(n, _)| n == name) {
            out.push_str(v);
        }
        rest = &rest[start + 2 + end + 2..];
    }
    out.push_str(rest);
    let uri: Uri = out.parse().map_err(|e| format!("error parsing JWKS URL: {e}"))?;
    // Checked decoded, as Go's `url.URL.Path`.
    let path = uri.path().replace("%2e", ".").replace("%2E", ".").replace("%2f", "/").replace("%2F", "/");
    if clean(&path) != path {
        return Err(format!("JWKS URL path contains traversal sequences: {path:?}"));
    }
    Ok(out)
}

/// Go's `path.Clean` for absolute paths.
fn clean(path: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for seg in path.split('/') {
        match seg {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            s => parts.push(s),
        }
    }
    format!("/{}", parts.join("/"))
}

/// The `{{name}}` placeholders of a template.
pub fn placeholders(template: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = template;
    while let Some(start) = rest.find("{{") {
        let Some(end) = rest[start + 2..].find("}}") else { break };
        out.push(rest[start + 2..start + 2 + end].to_string());
        rest = &rest[start + 2 + end + 2..];
    }
    out
}

/// Centrifugo's safety check of a templated endpoint: each regex named group used as a
/// placeholder must be an explicit list of fixed values (`a|b|c`), and neither regex may use
/// character classes, since the values come from claims read before the signature is checked.
pub fn check_template_safety(endpoint: &str, regexes: &[(&str, &str)]) -> Result<(), String> {
    use regex_syntax::ast::{parse::Parser, Ast};
    let used = placeholders(endpoint);
    if used.is_empty() {
        return Ok(());
    }
    fn literal(ast: &Ast) -> bool {
        match ast {
            Ast::Empty(_) | Ast::Literal(_) => true,
            Ast::Concat(c) => c.asts.iter().all(literal),
            Ast::Alternation(a) => a.asts.iter().all(literal),
            Ast::Group(g) => literal(&g.ast),
            _ => false,
        }
    }
    fn named<'a>(ast: &'a Ast, out: &mut Vec<(String, &'a Ast)>) {
        match ast {
            Ast::Group(g) => {
                if let regex_syntax::ast::GroupKind::CaptureName { name, .. } = &g.kind {
                    out.push((name.name.clone(), &g.ast));
                }
                named(&g.ast, out);
            }
            Ast::Concat(c) => c.asts.iter().for_each(|a| named(a, out)),
            Ast::Alternation(a) => a.asts.iter().for_each(|x| named(x, out)),
            Ast::Repetition(r) => named(&r.ast, out),
            _ => {}
        }
    }
    for (option, pattern) in regexes {
        if pattern.is_empty() {
            continue;
        }
        let b = pattern.as_bytes();
        let mut i = 0;
        while i < b.len() {
            match b[i] {
                b'[' => {
                    return Err(format!(
                        "{option} contains character class syntax which is not allowed when JWKS endpoint URL template is used — use an explicit list of allowed values (e.g., value1|value2|value3)"
                    ))
                }
                b'\\' if i + 1 < b.len() => {
                    if b"dDwWsSpP".contains(&b[i + 1]) {
                        return Err(format!(
                            "{option} contains character class shorthand (\\{}) which is not allowed when JWKS endpoint URL template is used — use an explicit list of allowed values (e.g., value1|value2|value3)",
                            b[i + 1] as char
                        ));
                    }
                    i += 1;
                }
                _ => {}
            }
            i += 1;
        }
        let ast =
            Parser::new().parse(pattern).map_err(|e| format!("error parsing {option} for JWKS safety check: {e}"))?;
        let mut groups = Vec::new();
        named(&ast, &mut groups);
        for (name, sub) in groups {
            if used.contains(&name) && !literal(sub) {
                return Err(format!(
                    "{option} named group {name:?} is used in JWKS endpoint URL template — only an explicit list of allowed values is permitted (e.g., value1|value2|value3)"
                ));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates() {
        let vars = vec![("tenant".to_string(), "acme".to_string())];
        assert_eq!(resolve("https://h/{{tenant}}/jwks", &vars).unwrap(), "https://h/acme/jwks");
        assert_eq!(resolve("https://h/jwks", &[]).unwrap(), "https://h/jwks");
        assert_eq!(resolve("https://h", &[]).unwrap(), "https://h");
        let dots = vec![("tenant".to_string(), "..".to_string())];
        assert!(resolve("https://h/{{tenant}}/jwks", &dots).is_err());
        assert!(resolve("https://h/a//b", &[]).is_err());
        assert_eq!(placeholders("x{{a}}y{{b}}"), ["a", "b"]);
    }

    #[test]
    fn template_safety() {
        let ep = "https://auth.example.com/{{tenant}}/jwks";
        assert!(check_template_safety(ep, &[("issuer_regex", "^https://(?P<tenant>acme|globex)\\.example$")]).is_ok());
        assert!(check_template_safety(ep, &[("issuer_regex", "^(?P<tenant>.+)$")]).is_err());
        assert!(check_template_safety(ep, &[("audience_regex", "^(?P<tenant>[a-z]+)$")]).is_err());
        assert!(check_template_safety(ep, &[("audience_regex", "^(?P<tenant>\\w+)$")]).is_err());
        // A group not used in the template may be anything; no template, no check.
        assert!(check_template_safety(ep, &[("issuer_regex", "^(?P<other>.+)$")]).is_ok());
        assert!(check_template_safety("https://h/jwks", &[("issuer_regex", "^(?P<tenant>.+)$")]).is_ok());
    }
}
