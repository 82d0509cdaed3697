//! `gyre api`: a console client of the server API, for Gyre and Centrifugo.
//!
//! Profiles live in `~/.centrc`, the INI file of Centrifugo 1.x's `cent` console: a section per
//! server with `address`, `secret` (signed v1 API) or `key` (API key), and `timeout` (seconds).
//! `--address`, `--key` and `--secret` stand in for a profile. With a key a command goes to
//! `POST <address>/api/<method>`; commands read from stdin (one JSON command a line,
//! `{"method": "...", "params": {...}}`) go as one legacy `POST <address>/api` request. With a
//! secret, commands go to `POST <address>/api/` signed with HMAC-SHA256, one or many in one
//! request. Replies are printed pretty (on a terminal, or `--pretty`) or as they came
//! (`--raw`). Exit status: 0, 1 when a reply is an error or the request failed, 2 for a usage
//! or profile error.

use std::io::{BufRead, IsTerminal, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use clap::Args;
use hmac::{Hmac, Mac};
use serde_json::{json, Value};
use sha2::Sha256;

#[derive(Args)]
pub struct ApiArgs {
    /// `PROFILE METHOD`, `PROFILE` (commands from stdin), or with `--address` just `METHOD`
    /// (or nothing: commands from stdin).
    #[arg(num_args = 0..=2)]
    words: Vec<String>,
    /// The command's params, a JSON object.
    #[arg(short = 'p', long = "params", default_value = "{}")]
    params: String,
    /// Profile file.
    #[arg(long = "config")]
    config: Option<PathBuf>,
    /// Server address (`http://host:port`), instead of a profile's.
    #[arg(long = "address")]
    address: Option<String>,
    /// API key (Gyre, Centrifugo 2 and later).
    #[arg(long = "key")]
    key: Option<String>,
    /// Secret of the signed v1 API (Centrifugo 1.x).
    #[arg(long = "secret")]
    secret: Option<String>,
    /// Request timeout in seconds.
    #[arg(long = "timeout")]
    timeout: Option<u64>,
    /// CA certificate (PEM file) that signs an `https://` server's certificate (else the
    /// system's roots, or `SSL_CERT_FILE`).
    #[arg(long = "cacert")]
    cacert: Option<String>,
    /// Print replies as they came, one a line.
    #[arg(long = "raw", conflicts_with = "pretty")]
    raw: bool,
    /// Print replies indented (the default on a terminal).
    #[arg(long = "pretty")]
    pretty: bool,
}

/// Where and how to send.
struct Target {
    address: String,
    key: String,
    secret: String,
    timeout: Duration,
    cacert: String,
}

/// Usage and profile errors (exit 2), apart from failed requests (exit 1).
struct Usage(anyhow::Error);

/// Sections of an INI file: name → (key → value).
fn parse_ini(text: &str) -> Vec<(String, Vec<(String, String)>)> {
    let mut out: Vec<(String, Vec<(String, String)>)> = Vec::new();
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            out.push((name.trim().to_owned(), Vec::new()));
        } else if let Some(i) = line.find(['=', ':']) {
            if let Some((_, kv)) = out.last_mut() {
                kv.push((line[..i].trim().to_ascii_lowercase(), line[i + 1..].trim().to_owned()));
            }
        }
    }
    out
}

fn target(a: &ApiArgs, profile: Option<&str>) -> Result<Target, Usage> {
    let mut t = Target {
        address: String::new(),
        key: String::new(),
        secret: String::new(),
        timeout: Duration::ZERO,
        cacert: a.cacert.clone().unwrap_or_default(),
    };
    let mut timeout = 5;
    if let Some(name) = profile {
        let path = match &a.config {
            Some(p) => p.clone(),
            None => PathBuf::from(std::env::var_os("HOME").ok_or_else(|| Usage(anyhow!("HOME is not set")))?)
                .join(".centrc"),
        };
        let text = std::fs::read_to_string(&path)
            .map_err(|e| Usage(anyhow!("reading profiles from {}: {e}", path.display())))?;
        let sections = parse_ini(&text);
        let Some((_, kv)) = sections.iter().find(|(n, _)| n == name) else {
            return Err(Usage(anyhow!("section {name} not found in {} configuration file", path.display())));
        };
        for (k, v) in kv {
            match k.as_str() {
                "address" => t.address = v.clone(),
                "secret" => t.secret = v.clone(),
                "key" | "api_key" => t.key = v.clone(),
                "timeout" => {
                    timeout = v.parse().map_err(|_| Usage(anyhow!("profile {name}: timeout {v:?} is not seconds")))?
                }
                _ => {}
            }
        }
    }
    if let Some(v) = &a.address {
        t.address = v.clone();
    }
    if let Some(v) = &a.key {
        t.key = v.clone();
    }
    if let Some(v) = &a.secret {
        t.secret = v.clone();
    }
    t.timeout = Duration::from_secs(a.timeout.unwrap_or(timeout).max(1));
    if t.address.is_empty() {
        return Err(Usage(anyhow!("no address: name a profile of ~/.centrc or pass --address")));
    }
    Ok(t)
}

/// The commands to send: one from the words, or each line of stdin.
fn commands(method: Option<&str>, params: &str) -> Result<Vec<Value>, Usage> {
    if let Some(m) = method {
        let p: Value = serde_json::from_str(params).map_err(|e| Usage(anyhow!("--params: {e}")))?;
        if !p.is_object() {
            return Err(Usage(anyhow!("--params must be a JSON object")));
        }
        return Ok(vec![json!({"method": m, "params": p})]);
    }
    let mut out = Vec::new();
    for (i, line) in std::io::stdin().lock().lines().enumerate() {
        let line = line.map_err(|e| Usage(anyhow!("reading stdin: {e}")))?;
        if line.trim().is_empty() {
            continue;
        }
        let v: Value = serde_json::from_str(&line).map_err(|e| Usage(anyhow!("stdin line {}: {e}", i + 1)))?;
        if !v.get("method").is_some_and(Value::is_string) {
            return Err(Usage(anyhow!(
                "stdin line {}: a command is {{\"method\": \"...\", \"params\": {{...}}}}",
                i + 1
            )));
        }
        out.push(v);
    }
    if out.is_empty() {
        return Err(Usage(anyhow!("no METHOD and no commands on stdin")));
    }
    Ok(out)
}

/// `http[s]://host[:port][/prefix]` → (TLS?, host:port, path prefix without a trailing `/api`
/// or `/`).
fn split_address(address: &str) -> Result<(bool, String, String)> {
    let (tls, rest) = match (address.strip_prefix("http://"), address.strip_prefix("https://")) {
        (Some(r), _) => (false, r),
        (_, Some(r)) => (true, r),
        _ => bail!("address {address:?} must start with http:// or https://"),
    };
    let (host, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let port = if tls { 443 } else { 80 };
    let host = if host.contains(':') && !host.ends_with(']') { host.to_owned() } else { format!("{host}:{port}") };
    let path = path.trim_end_matches('/');
    Ok((tls, host, path.strip_suffix("/api").unwrap_or(path).to_owned()))
}

/// A connection to the server, over TLS for `https://` addresses.
enum Conn {
    Plain(TcpStream),
    Tls(Box<rustls::StreamOwned<rustls::ClientConnection, TcpStream>>),
}

impl Conn {
    fn open(t: &Target, tls: bool, host: &str) -> Result<Conn> {
        let addr = host.to_socket_addrs()?.next().ok_or_else(|| anyhow!("no address for {host}"))?;
        let s = TcpStream::connect_timeout(&addr, t.timeout).with_context(|| format!("connecting to {host}"))?;
        s.set_read_timeout(Some(t.timeout))?;
        s.set_write_timeout(Some(t.timeout))?;
        if !tls {
            return Ok(Conn::Plain(s));
        }
        let opts = gyre::config::tls::Tls { enabled: true, server_ca_pem: t.cacert.clone(), ..Default::default() };
        let cfg = gyre::config::tls::client_config("--cacert", &opts).map_err(|e| anyhow!(e))?;
        let name = host.rsplit_once(':').map_or(host, |(h, _)| h).trim_start_matches('[').trim_end_matches(']');
        let name = gyre::config::tls::server_name("--address", &opts, name).map_err(|e| anyhow!(e))?;
        let c = rustls::ClientConnection::new(cfg, name).context("TLS")?;
        Ok(Conn::Tls(Box::new(rustls::StreamOwned::new(c, s))))
    }

    fn write_all(&mut self, b: &[u8]) -> std::io::Result<()> {
        match self {
            Conn::Plain(s) => s.write_all(b),
            Conn::Tls(s) => s.write_all(b),
        }
    }

    /// Everything until the server closes (a TLS peer that closes without close_notify ends
    /// the reply too: the server answers `Connection: close`).
    fn read_to_end(&mut self, out: &mut Vec<u8>) -> std::io::Result<usize> {
        match self {
            Conn::Plain(s) => s.read_to_end(out),
            Conn::Tls(s) => match s.read_to_end(out) {
                Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof && !out.is_empty() => Ok(out.len()),
                r => r,
            },
        }
    }
}

/// One HTTP/1.1 POST; returns the status and the (de-chunked) body.
fn post(t: &Target, path: &str, headers: &[(&str, &str)], body: &[u8]) -> Result<(u16, Vec<u8>)> {
    let (tls, host, prefix) = split_address(&t.address)?;
    let mut s = Conn::open(t, tls, &host)?;
    let mut req = format!(
        "POST {prefix}{path} HTTP/1.1\r\nHost: {host}\r\nContent-Length: {}\r\nConnection: close\r\n",
        body.len()
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes())?;
    s.write_all(body)?;
    let mut resp = Vec::new();
    s.read_to_end(&mut resp).with_context(|| format!("reading the reply from {host}"))?;
    let end = resp.windows(4).position(|w| w == b"\r\n\r\n").ok_or_else(|| anyhow!("no HTTP reply from {host}"))?;
    let head = String::from_utf8_lossy(&resp[..end]).into_owned();
    let status: u16 =
        head.split_whitespace().nth(1).and_then(|s| s.parse().ok()).ok_or_else(|| anyhow!("bad reply: {head}"))?;
    let chunked = head.lines().any(|l| {
        let l = l.to_ascii_lowercase();
        l.starts_with("transfer-encoding:") && l.contains("chunked")
    });
    let raw = &resp[end + 4..];
    Ok((status, if chunked { dechunk(raw)? } else { raw.to_vec() }))
}

fn dechunk(mut b: &[u8]) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let i = b.windows(2).position(|w| w == b"\r\n").ok_or_else(|| anyhow!("truncated chunked reply"))?;
        let size_text = String::from_utf8_lossy(&b[..i]);
        let size = usize::from_str_radix(size_text.split(';').next().unwrap_or("").trim(), 16)
            .map_err(|_| anyhow!("bad chunk size {size_text:?}"))?;
        b = &b[i + 2..];
        if size == 0 {
            return Ok(out);
        }
        if b.len() < size + 2 {
            bail!("truncated chunked reply");
        }
        out.extend_from_slice(&b[..size]);
        b = &b[size + 2..];
    }
}

fn sign(secret: &str, data: &[u8]) -> String {
    let mut m = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC takes any key length");
    m.update(data);
    m.finalize().into_bytes().iter().map(|b| format!("{b:02x}")).collect()
}

/// Sends the commands; the replies, in order.
fn send(t: &Target, cmds: &[Value]) -> Result<Vec<Value>> {
    let (path, body, headers): (String, Vec<u8>, Vec<(&str, String)>) = if !t.secret.is_empty() && t.key.is_empty() {
        let body = serde_json::to_vec(cmds)?;
        let sig = sign(&t.secret, &body);
        ("/api/".into(), body, vec![("Content-Type", "application/json".into()), ("X-API-Sign", sig)])
    } else if cmds.len() == 1 {
        let m = cmds[0]["method"].as_str().unwrap_or("");
        let params = cmds[0].get("params").cloned().unwrap_or(json!({}));
        (format!("/api/{m}"), serde_json::to_vec(&params)?, vec![("X-API-Key", t.key.clone())])
    } else {
        let mut body = Vec::new();
        for c in cmds {
            serde_json::to_writer(&mut body, c)?;
            body.push(b'\n');
        }
        ("/api".into(), body, vec![("X-API-Key", t.key.clone())])
    };
    let headers: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let (status, reply) = post(t, &path, &headers, &body)?;
    let text = String::from_utf8_lossy(&reply);
    if status != 200 {
        bail!("HTTP {status} from {}{path}: {}", t.address, text.trim());
    }
    let mut out = Vec::new();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        match serde_json::from_str(line).with_context(|| format!("reply is not JSON: {line}"))? {
            Value::Array(items) => out.extend(items),
            v => out.push(v),
        }
    }
    if out.is_empty() && !text.trim().is_empty() {
        out.push(serde_json::from_str(&text)?);
    }
    Ok(out)
}

/// Whether a reply (v6 `{"error": {...}}`, v1 `{"error": "..."}`, or a batch/broadcast with
/// failed parts) reports an error.
fn is_error(v: &Value) -> bool {
    let own = v.get("error").is_some_and(|e| !e.is_null());
    let parts = |key: &str| {
        v.pointer(&format!("/result/{key}")).and_then(Value::as_array).is_some_and(|a| a.iter().any(is_error))
    };
    own || parts("responses") || v.get("replies").and_then(Value::as_array).is_some_and(|a| a.iter().any(is_error))
}

pub fn run(a: ApiArgs) -> ExitCode {
    let by_address = a.address.is_some();
    let (profile, method) = match (by_address, a.words.as_slice()) {
        (true, [m]) => (None, Some(m.as_str())),
        (true, []) => (None, None),
        (false, [p]) => (Some(p.as_str()), None),
        (false, [p, m]) => (Some(p.as_str()), Some(m.as_str())),
        (true, [p, m]) => (Some(p.as_str()), Some(m.as_str())),
        _ => (None, None),
    };
    if !by_address && a.words.is_empty() {
        eprintln!("error: name a PROFILE of ~/.centrc (or pass --address)");
        return ExitCode::from(2);
    }
    let prepared = target(&a, profile).and_then(|t| commands(method, &a.params).map(|c| (t, c)));
    let (t, cmds) = match prepared {
        Ok(x) => x,
        Err(Usage(e)) => {
            eprintln!("error: {e:#}");
            return ExitCode::from(2);
        }
    };
    let replies = match send(&t, &cmds) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: {e:#}");
            return ExitCode::FAILURE;
        }
    };
    let pretty = a.pretty || (!a.raw && std::io::stdout().is_terminal());
    let mut out = std::io::stdout().lock();
    for r in &replies {
        let text = if pretty { serde_json::to_string_pretty(r) } else { serde_json::to_string(r) };
        let _ = writeln!(out, "{}", text.unwrap_or_default());
    }
    if replies.iter().any(is_error) {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_cent_profiles() {
        let s = parse_ini("# c\n[local]\naddress = http://localhost:8000\nsecret: s\n\n[other]\nkey=k\n");
        assert_eq!(s.len(), 2);
        assert_eq!(s[0].1, [("address".into(), "http://localhost:8000".into()), ("secret".into(), "s".into())]);
        assert_eq!(s[1].1, [("key".to_string(), "k".to_string())]);
    }

    #[test]
    fn splits_addresses() {
        assert_eq!(split_address("http://h:1/api/").unwrap(), (false, "h:1".into(), "".into()));
        assert_eq!(split_address("http://h/x").unwrap(), (false, "h:80".into(), "/x".into()));
        assert_eq!(split_address("https://h").unwrap(), (true, "h:443".into(), "".into()));
        assert!(split_address("ftp://h").is_err());
        assert_eq!(dechunk(b"3\r\nabc\r\n1\r\nd\r\n0\r\n\r\n").unwrap(), b"abcd");
    }
}
