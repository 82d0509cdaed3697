//! The admin web interface (`admin.enabled`): its login token, its static page and the helpers
//! behind its endpoints. Routing lives in `http::serve`, which calls these.
//!
//! Endpoints, as in Centrifugo:
//! * `GET /` — the page (HTML, CSS and JS embedded in the binary; no build step), its files
//!   under `/admin/static/` and its icon, also at `/favicon.ico`.
//! * `POST /admin/auth` with form field `password` → `{"token":"..."}` (400 on a wrong
//!   password). The token is HMAC-SHA256-signed with `admin.secret` and valid for 30 days.
//! * `POST /admin/api` — the legacy server API (`{"method":..,"params":..}` lines), with
//!   `Authorization: token <t>` unless `admin.insecure`.
//! * `GET /admin/init` → `{"insecure":..,"edition":"oss","authenticated":..}`.
//!
//! Gyre's own additions for the page: `POST /admin/node` (process figures the page turns into
//! rates: memory, messages sent/delivered) and `POST /admin/tail` (a short-lived connection
//! token subscribed server-side to one channel, for the page's live tail over
//! `/connection/websocket`).

use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use serde_json::{json, Map, Value};
use sha2::Sha256;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::config::Config;
use crate::session::hidden;

/// How long an admin login lasts (Centrifugo's securecookie default).
const TOKEN_TTL: u64 = 30 * 24 * 3600;
/// How long a live-tail connection token is valid for connecting.
const TAIL_TTL: Duration = Duration::from_secs(3600);

fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

fn mac(secret: &str, payload: &[u8]) -> Vec<u8> {
    let mut m = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC takes any key length");
    m.update(payload);
    m.finalize().into_bytes().to_vec()
}

/// A new admin session token: `base64(payload).base64(hmac)` where the payload names the
/// holder as authorized until an expiry time.
pub fn issue_token(secret: &str) -> String {
    let payload = B64.encode(json!({"v": "authorized", "exp": now() + TOKEN_TTL}).to_string());
    let sig = B64.encode(mac(secret, payload.as_bytes()));
    format!("{payload}.{sig}")
}

/// True when `token` was issued with `secret` and has not expired.
pub fn check_token(secret: &str, token: &str) -> bool {
    if secret.is_empty() {
        return false;
    }
    let Some((payload, sig)) = token.split_once('.') else { return false };
    let Ok(sig) = B64.decode(sig) else { return false };
    let mut m = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC takes any key length");
    m.update(payload.as_bytes());
    if m.verify_slice(&sig).is_err() {
        return false;
    }
    let Some(v) = B64.decode(payload).ok().and_then(|p| serde_json::from_slice::<Value>(&p).ok()) else {
        return false;
    };
    v["v"] == "authorized" && v["exp"].as_u64().is_some_and(|exp| exp > now())
}

/// Whether a request may use the admin API: `admin.insecure`, or `Authorization: token <t>`
/// with a valid token.
pub fn authorized(cfg: &Config, authorization: Option<&[u8]>) -> bool {
    if cfg.admin.insecure {
        return true;
    }
    let Some(h) = authorization else { return false };
    let h = String::from_utf8_lossy(h);
    let parts: Vec<&str> = h.split_whitespace().collect();
    parts.len() == 2 && parts[0].eq_ignore_ascii_case("token") && check_token(&cfg.admin.secret, parts[1])
}

/// A field of an `application/x-www-form-urlencoded` body (or query string).
pub fn form_value(body: &[u8], name: &str) -> Option<String> {
    let body = String::from_utf8_lossy(body);
    body.split('&').find_map(|kv| {
        let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
        let dec = |s: &str| crate::wire::http::percent_decode(&s.replace('+', " "));
        (dec(k) == name).then(|| dec(v))
    })
}

/// `POST /admin/auth`: the token for the right password; `None` (HTTP 400) otherwise, and
/// always when password or secret is not configured.
pub fn login(cfg: &Config, password: &str) -> Option<String> {
    let a = &cfg.admin;
    if a.password.is_empty() || a.secret.is_empty() {
        return None;
    }
    let (x, y) = (password.as_bytes(), a.password.as_bytes());
    let same = x.len() == y.len() && x.iter().zip(y).fold(0u8, |acc, (p, q)| acc | (p ^ q)) == 0;
    same.then(|| issue_token(&a.secret))
}

/// `GET /admin/init`.
pub fn init(cfg: &Config, authorization: Option<&[u8]>) -> Vec<u8> {
    let authenticated = authorized(cfg, authorization);
    json!({"insecure": cfg.admin.insecure, "edition": "oss", "authenticated": authenticated}).to_string().into_bytes()
}

/// `POST /admin/tail` with `{"channel": CH}`: a connection token whose server-side
/// subscription is `CH` (signed with `client.token.hmac_secret_key`, user `""`), so the page
/// can follow any channel whatever its namespace permissions. The token marks its session
/// hidden (`crate::session::hidden`): the tail is not in the channel's presence, emits no
/// join or leave and is not counted among the node's clients and users.
pub fn tail_token(cfg: &Config, body: &[u8]) -> Result<Vec<u8>, &'static str> {
    let v: Value = serde_json::from_slice(body).map_err(|_| "bad request")?;
    let channel = v["channel"].as_str().filter(|c| !c.is_empty()).ok_or("channel required")?;
    let t = cfg.tokens().token;
    let mut extra = Map::new();
    extra.insert("channels".into(), json!([channel]));
    extra.insert(hidden::CLAIM.into(), Value::from(hidden::mark(&t.hmac_secret_key)));
    if !t.audience.is_empty() {
        extra.insert("aud".into(), Value::from(t.audience.as_str()));
    }
    if !t.issuer.is_empty() {
        extra.insert("iss".into(), Value::from(t.issuer.as_str()));
    }
    let token = crate::token::generate_connection_token(&t.hmac_secret_key, "", Some(TAIL_TTL), extra)
        .map_err(|_| "cannot sign")?;
    Ok(json!({"token": token, "channel": channel}).to_string().into_bytes())
}

/// Whether `path` is one of the admin interface's routes (the page, its icon, `/admin/*`).
pub fn routes(path: &str) -> bool {
    matches!(path, "/" | "/index.html" | "/favicon.ico") || path.starts_with("/admin/")
}

/// The page's files: (content type, bytes) for a request path. The icon is SVG, also at
/// `/favicon.ico` for browsers that ask there without reading the page's `<link rel="icon">`.
pub fn asset(path: &str) -> Option<(&'static str, &'static [u8])> {
    Some(match path {
        "/" | "/index.html" => ("text/html; charset=utf-8", include_bytes!("web/index.html")),
        "/admin/static/app.js" => ("text/javascript; charset=utf-8", include_bytes!("web/app.js")),
        "/admin/static/actions.js" => ("text/javascript; charset=utf-8", include_bytes!("web/actions.js")),
        "/admin/static/app.css" => ("text/css; charset=utf-8", include_bytes!("web/app.css")),
        "/favicon.ico" | "/admin/static/favicon.svg" => ("image/svg+xml", include_bytes!("web/favicon.svg")),
        _ => return None,
    })
}

/// Resident memory of this process in bytes (Linux; 0 elsewhere).
pub fn rss_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: u64 = statm.split_whitespace().nth(1).and_then(|p| p.parse().ok()).unwrap_or(0);
    // SAFETY: sysconf has no preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    pages * page.max(0) as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_verify_only_with_their_secret() {
        let t = issue_token("s3cret");
        assert!(check_token("s3cret", &t));
        assert!(!check_token("other", &t));
        assert!(!check_token("", &t));
        let (p, s) = t.split_once('.').unwrap();
        let forged = B64.encode(json!({"v": "authorized", "exp": now() + 99_999_999}).to_string());
        assert!(!check_token("s3cret", &format!("{forged}.{s}")));
        assert!(!check_token("s3cret", p));
        assert!(!check_token("s3cret", "garbage"));
    }

    #[test]
    fn form_values_are_decoded() {
        assert_eq!(form_value(b"a=1&password=p%40ss+word", "password").as_deref(), Some("p@ss word"));
        assert_eq!(form_value(b"a=1", "password"), None);
    }
}
