//! Test harness: starts the real `gyre` binary on a free port with a JSON config written to a
//! temporary directory, and talks to it with a minimal raw HTTP/1.1 client over std
//! `TcpStream` (arbitrary bytes out; status, headers and Content-Length / chunked /
//! close-delimited bodies in). For the Redis engine: `redis-server` processes of the tests' own
//! ([`RedisServer`]) and clusters of gyre nodes on them ([`cluster`]).

#![allow(dead_code)]

use std::collections::{HashSet, VecDeque};
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

/// The API key of [`config`].
pub const KEY: &str = "test-key";

/// How long any single read from the server may block before the test fails.
pub const READ_TIMEOUT: Duration = Duration::from_secs(60);

/// The common test config (without port): a history+presence default namespace, `hist`
/// (history 100, presence) and `nohist` (nothing enabled).
pub fn config() -> Value {
    json!({
        "http_api": {"key": KEY},
        "health": {"enabled": true},
        "channel": {
            "without_namespace": {"presence": true, "history_size": 10, "history_ttl": "300s"},
            "namespaces": [
                {"name": "hist", "history_size": 100, "history_ttl": "300s", "presence": true},
                {"name": "nohist"}
            ]
        },
        "workers": 2
    })
}

/// `config()` with `patch` merged in (objects merged recursively, other values replaced).
pub fn config_with(patch: Value) -> Value {
    let mut c = config();
    merge(&mut c, patch);
    c
}

/// Deep-merges `src` into `dst` (objects key by key, anything else replaced).
pub fn merge(dst: &mut Value, src: Value) {
    match (dst, src) {
        (Value::Object(d), Value::Object(s)) => {
            for (k, v) in s {
                merge(d.entry(k).or_insert(Value::Null), v);
            }
        }
        (d, s) => *d = s,
    }
}

/// Ports handed out by this test process, so two servers started concurrently never share
/// one (the server binds with SO_REUSEPORT, which would silently let them).
static PORTS: Mutex<Option<HashSet<u16>>> = Mutex::new(None);
static DIRS: AtomicUsize = AtomicUsize::new(0);

/// A free TCP port no other server of this test process was given.
pub fn free_port() -> u16 {
    loop {
        let port = TcpListener::bind("0.0.0.0:0").and_then(|l| l.local_addr()).expect("bind 0.0.0.0:0").port();
        let mut used = PORTS.lock().unwrap_or_else(|e| e.into_inner());
        if used.get_or_insert_with(HashSet::new).insert(port) {
            return port;
        }
    }
}

/// The server binary: `$GYRE_TEST_BIN` when set (e.g. a release build), else the one cargo
/// built for this test run.
pub fn server_binary() -> PathBuf {
    std::env::var_os("GYRE_TEST_BIN").map(PathBuf::from).unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_gyre")))
}

/// Runs `gyre <args> <file>` where the file holds `cfg` (JSON), without the environment's
/// `CENTRIFUGO_*` and `GYRE_*` variables: whether it exited 0, and what it printed. For
/// configs a command refuses (`checkconfig`, or the server refusing to start).
pub fn gyre_with_config(args: &[&str], cfg: &Value) -> (bool, String) {
    let dir = std::env::temp_dir().join(format!("gyre-config-{}-{}", std::process::id(), free_port()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("config.json");
    std::fs::write(&path, cfg.to_string()).unwrap();
    let mut cmd = Command::new(server_binary());
    cmd.args(args).arg(&path);
    for (k, _) in std::env::vars_os() {
        let k = k.to_string_lossy().to_string();
        if k.starts_with("CENTRIFUGO_") || k.starts_with("GYRE_") {
            cmd.env_remove(k);
        }
    }
    let out = cmd.output().expect("running gyre");
    let _ = std::fs::remove_dir_all(&dir);
    (out.status.success(), format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)))
}

/// `gyre checkconfig` of `cfg`: whether it passed, and what it printed.
pub fn checkconfig(cfg: &Value) -> (bool, String) {
    gyre_with_config(&["checkconfig", "--config"], cfg)
}

/// A running `gyre` process; killed (and its directory removed) on drop. When the test is
/// failing, its stderr is printed first.
pub struct Server {
    child: Child,
    pub port: u16,
    dir: PathBuf,
    stderr_path: PathBuf,
    reported: bool,
}

impl Server {
    /// Starts `gyre --config <dir>/config.json` with `cfg` plus a free port and waits (≤ 10 s)
    /// until it accepts connections.
    pub fn start(cfg: Value) -> Server {
        Self::start_with_env(cfg, &[])
    }

    /// Like [`Server::start`] with extra environment variables for the process.
    pub fn start_with_env(cfg: Value, envs: &[(&str, &str)]) -> Server {
        Self::start_in(cfg, envs, &[])
    }

    /// Like [`Server::start_with_env`] with `files` (name, text) written to the server's
    /// working directory first (a `.env`, a key).
    pub fn start_in(cfg: Value, envs: &[(&str, &str)], files: &[(&str, &str)]) -> Server {
        let mut last_err = String::new();
        for _attempt in 0..5 {
            match Self::try_start(cfg.clone(), envs, files) {
                Ok(s) => return s,
                // The port was taken between probing it and the server binding it: retry.
                Err((msg, retry)) if retry => last_err = msg,
                Err((msg, _)) => panic!("{msg}"),
            }
        }
        panic!("gyre did not start after 5 attempts: {last_err}");
    }

    fn try_start(mut cfg: Value, envs: &[(&str, &str)], files: &[(&str, &str)]) -> Result<Server, (String, bool)> {
        let port = free_port();
        merge(&mut cfg, json!({"http_server": {"port": port}}));
        // `GYRE_TEST_DRIVER=epoll` runs the whole suite on the epoll event loop (CI runs it
        // under both drivers); a test that sets `driver` itself keeps its choice.
        if let Ok(driver) = std::env::var("GYRE_TEST_DRIVER") {
            if cfg.get("driver").is_none() {
                merge(&mut cfg, json!({ "driver": driver }));
            }
        }
        // `GYRE_TEST_REDIS=redis://HOST:PORT` runs servers of tests that do not choose an
        // engine on the Redis engine (each server with its own key prefix).
        if let Ok(addr) = std::env::var("GYRE_TEST_REDIS") {
            if cfg.get("engine").is_none() {
                // A number of its own (two servers starting at once must not share a prefix).
                let prefix = format!("it{}-p{}", std::process::id(), DIRS.fetch_add(1, Ordering::Relaxed));
                merge(&mut cfg, json!({"engine": {"type": "redis", "redis": {"address": [addr], "prefix": prefix}}}));
            }
        }
        let dir = std::env::temp_dir().join(format!(
            "gyre-it-{}-{}",
            std::process::id(),
            DIRS.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).expect("create temp dir");
        let config_path = dir.join("config.json");
        std::fs::write(&config_path, serde_json::to_vec_pretty(&cfg).unwrap()).expect("write config");
        for (name, text) in files {
            std::fs::write(dir.join(name), text).expect("write a file of the server");
        }
        let stderr_path = dir.join("stderr.log");
        let stderr = std::fs::File::create(&stderr_path).expect("create stderr log");
        let mut cmd = Command::new(server_binary());
        cmd.arg("--config")
            .arg(&config_path)
            .current_dir(&dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr);
        // The server reads CENTRIFUGO_* / GYRE_* variables: keep the caller's out of tests.
        for (k, _) in std::env::vars_os() {
            let k = k.to_string_lossy().into_owned();
            if k.starts_with("CENTRIFUGO_") || k.starts_with("GYRE_") {
                cmd.env_remove(k);
            }
        }
        cmd.envs(envs.iter().copied());
        let child = cmd.spawn().expect("spawn gyre");
        let mut server = Server { child, port, dir, stderr_path, reported: false };
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if TcpStream::connect_timeout(&server.addr(), Duration::from_millis(200)).is_ok() {
                return Ok(server);
            }
            if let Ok(Some(status)) = server.child.try_wait() {
                let log = server.stderr();
                server.reported = true;
                let retry = log.contains("in use") || log.contains("cannot listen");
                return Err((
                    format!("gyre exited with {status} before accepting on port {port}; stderr:\n{log}"),
                    retry,
                ));
            }
            if Instant::now() > deadline {
                let log = server.stderr();
                server.reported = true;
                return Err((format!("gyre did not accept on port {port} within 10 s; stderr:\n{log}"), false));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{}", self.port, path)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// What the server has written to stderr so far.
    pub fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr_path).unwrap_or_default()
    }

    /// A new connection to the server.
    pub fn connect(&self) -> Conn {
        Conn::new(self.addr())
    }

    /// One request on a fresh connection: `POST path` with `body` and extra `headers`
    /// (Host and Content-Length are added).
    pub fn post(&self, path: &str, body: &[u8], headers: &[(&str, &str)]) -> Response {
        let mut c = self.connect();
        c.send(&request("POST", path, body, headers));
        c.read_response().unwrap_or_else(|e| panic!("POST {path}: reading the response failed: {e}"))
    }

    /// Any method, no body.
    pub fn request(&self, method: &str, path: &str, headers: &[(&str, &str)]) -> Response {
        let mut c = self.connect();
        c.send(&request(method, path, b"", headers));
        c.read_response().unwrap_or_else(|e| panic!("{method} {path}: reading the response failed: {e}"))
    }

    /// `POST /api/<method>` with the API key; asserts HTTP 200 and returns the JSON body.
    pub fn api(&self, method: &str, body: Value) -> Value {
        let r = self.post(&format!("/api/{method}"), body.to_string().as_bytes(), &[("X-API-Key", KEY)]);
        assert_eq!(r.status, 200, "POST /api/{method} {body}: status {} body {:?}", r.status, r.text());
        assert_eq!(r.header("content-type"), Some("application/json"), "/api/{method}");
        r.json()
    }

    /// `POST /api` (legacy) with the API key and a Content-Length body; returns the response.
    pub fn legacy(&self, body: &[u8]) -> Response {
        self.post("/api", body, &[("X-API-Key", KEY)])
    }

    /// Resident set size of the server process in KiB (`VmRSS`).
    pub fn rss_kb(&self) -> u64 {
        rss_kb(self.pid())
    }

    /// Asserts the process is still running and answers `/health`.
    pub fn assert_alive(&mut self) {
        if let Ok(Some(status)) = self.child.try_wait() {
            panic!("gyre exited with {status}; stderr:\n{}", self.stderr());
        }
        let r = self.request("GET", "/health", &[]);
        assert_eq!((r.status, r.text().as_str()), (200, "{}"), "health check");
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() && !self.reported {
            eprintln!("---- gyre stderr (port {}) ----\n{}---- end of gyre stderr ----", self.port, self.stderr());
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// `VmRSS` of a process in KiB (0 if it cannot be read).
pub fn rss_kb(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// The bytes of an HTTP/1.1 request with a Content-Length body.
pub fn request(method: &str, path: &str, body: &[u8], headers: &[(&str, &str)]) -> Vec<u8> {
    let mut out = format!("{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n");
    for (k, v) in headers {
        out.push_str(&format!("{k}: {v}\r\n"));
    }
    if !(method == "GET" && body.is_empty()) {
        out.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    out.push_str("\r\n");
    let mut out = out.into_bytes();
    out.extend_from_slice(body);
    out
}

/// The head of a chunked request (the body follows as [`chunk`]s and [`LAST_CHUNK`]).
pub fn chunked_head(path: &str, headers: &[(&str, &str)]) -> Vec<u8> {
    let mut out = format!("POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: chunked\r\n");
    for (k, v) in headers {
        out.push_str(&format!("{k}: {v}\r\n"));
    }
    out.push_str("\r\n");
    out.into_bytes()
}

/// One chunk of a chunked body (must not be empty).
pub fn chunk(data: &[u8]) -> Vec<u8> {
    assert!(!data.is_empty());
    let mut out = format!("{:x}\r\n", data.len()).into_bytes();
    out.extend_from_slice(data);
    out.extend_from_slice(b"\r\n");
    out
}

pub const LAST_CHUNK: &[u8] = b"0\r\n\r\n";

/// A parsed response.
#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    pub reason: String,
    /// Header names lower-cased.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers.iter().find(|(n, _)| *n == name).map(|(_, v)| v.as_str())
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("response body is not JSON ({e}): {:?}", self.text()))
    }

    /// True when the server announced it will close the connection.
    pub fn closes(&self) -> bool {
        self.header("connection").is_some_and(|v| v.eq_ignore_ascii_case("close"))
    }

    /// The body of a legacy `/api` response split into reply objects (`\n`-separated).
    pub fn lines(&self) -> Vec<Value> {
        parse_lines(&self.body)
    }
}

/// Splits a legacy reply body on `\n` and parses every line; asserts there is no trailing
/// newline and no empty line.
pub fn parse_lines(body: &[u8]) -> Vec<Value> {
    assert!(!body.ends_with(b"\n"), "legacy reply body must not end with a newline");
    body.split(|&b| b == b'\n')
        .map(|l| {
            serde_json::from_slice(l)
                .unwrap_or_else(|e| panic!("reply line is not JSON ({e}): {:?}", String::from_utf8_lossy(l)))
        })
        .collect()
}

/// Status line and headers of a response.
#[derive(Debug, Clone)]
pub struct Head {
    pub status: u16,
    pub reason: String,
    pub headers: Vec<(String, String)>,
}

impl Head {
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers.iter().find(|(n, _)| *n == name).map(|(_, v)| v.as_str())
    }

    pub fn chunked(&self) -> bool {
        self.header("transfer-encoding").is_some_and(|v| v.to_ascii_lowercase().contains("chunked"))
    }
}

/// A client connection with its own read buffer.
pub struct Conn {
    pub stream: TcpStream,
    buf: Vec<u8>,
    pos: usize,
}

fn other(msg: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg.into())
}

impl Conn {
    pub fn new(addr: SocketAddr) -> Conn {
        let stream = TcpStream::connect(addr).unwrap_or_else(|e| panic!("connect {addr}: {e}"));
        stream.set_nodelay(true).unwrap();
        stream.set_read_timeout(Some(READ_TIMEOUT)).unwrap();
        Conn { stream, buf: Vec::with_capacity(64 * 1024), pos: 0 }
    }

    /// A second handle on the same socket for writing from another thread.
    pub fn writer(&self) -> TcpStream {
        self.stream.try_clone().expect("clone socket")
    }

    /// Writes all bytes; panics on failure.
    pub fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).unwrap_or_else(|e| panic!("write to server failed: {e}"));
    }

    /// Writes all bytes, tolerating a server that already closed (for error responses
    /// sent before the request was fully written).
    pub fn send_lossy(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.stream.write_all(bytes)
    }

    fn buffered(&self) -> &[u8] {
        &self.buf[self.pos..]
    }

    /// Reads more bytes into the buffer; Ok(0) at EOF.
    fn fill(&mut self) -> io::Result<usize> {
        if self.pos > 0 && self.pos == self.buf.len() {
            self.buf.clear();
            self.pos = 0;
        } else if self.pos > 32 * 1024 {
            self.buf.drain(..self.pos);
            self.pos = 0;
        }
        let len = self.buf.len();
        self.buf.resize(len + 64 * 1024, 0);
        // A signal (a child process of another test exiting) interrupts a read with a timeout
        // even under SA_RESTART: read again.
        let r = loop {
            match self.stream.read(&mut self.buf[len..]) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                r => break r,
            }
        };
        let n = *r.as_ref().unwrap_or(&0);
        self.buf.truncate(len + n);
        r
    }

    fn fill_or_eof(&mut self, what: &str) -> io::Result<()> {
        if self.fill()? == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("connection closed while reading {what}"),
            ));
        }
        Ok(())
    }

    /// Reads up to and including the next `\r\n` (or `\n`); returns the line without it.
    fn read_line(&mut self, what: &str) -> io::Result<Vec<u8>> {
        loop {
            if let Some(i) = self.buffered().iter().position(|&b| b == b'\n') {
                let mut line = self.buffered()[..i].to_vec();
                self.pos += i + 1;
                if line.last() == Some(&b'\r') {
                    line.pop();
                }
                return Ok(line);
            }
            if self.buffered().len() > 64 * 1024 {
                return Err(other(format!("{what}: line too long")));
            }
            self.fill_or_eof(what)?;
        }
    }

    fn read_exact_buf(&mut self, n: usize, what: &str) -> io::Result<Vec<u8>> {
        while self.buffered().len() < n {
            self.fill_or_eof(what)?;
        }
        let out = self.buffered()[..n].to_vec();
        self.pos += n;
        Ok(out)
    }

    /// Reads a status line and headers.
    pub fn read_head(&mut self) -> io::Result<Head> {
        let status_line =
            String::from_utf8(self.read_line("status line")?).map_err(|_| other("status line not UTF-8"))?;
        let mut parts = status_line.splitn(3, ' ');
        let version = parts.next().unwrap_or("");
        if version != "HTTP/1.1" && version != "HTTP/1.0" {
            return Err(other(format!("bad status line {status_line:?}")));
        }
        let status: u16 = parts
            .next()
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| other(format!("bad status line {status_line:?}")))?;
        let reason = parts.next().unwrap_or("").to_string();
        let mut headers = Vec::new();
        loop {
            let line = self.read_line("headers")?;
            if line.is_empty() {
                break;
            }
            let line = String::from_utf8(line).map_err(|_| other("header not UTF-8"))?;
            let (k, v) = line.split_once(':').ok_or_else(|| other(format!("bad header {line:?}")))?;
            headers.push((k.trim().to_ascii_lowercase(), v.trim().to_string()));
        }
        Ok(Head { status, reason, headers })
    }

    /// The next chunk of a chunked body; `None` after the last chunk (trailers consumed).
    pub fn read_chunk(&mut self) -> io::Result<Option<Vec<u8>>> {
        let line = self.read_line("chunk size")?;
        let line = String::from_utf8(line).map_err(|_| other("chunk size not UTF-8"))?;
        let hex = line.split(';').next().unwrap_or("").trim();
        let size = usize::from_str_radix(hex, 16).map_err(|_| other(format!("bad chunk size {line:?}")))?;
        if size == 0 {
            loop {
                if self.read_line("trailer")?.is_empty() {
                    return Ok(None);
                }
            }
        }
        let data = self.read_exact_buf(size, "chunk data")?;
        let crlf = self.read_line("chunk end")?;
        if !crlf.is_empty() {
            return Err(other("chunk data not followed by CRLF"));
        }
        Ok(Some(data))
    }

    /// Reads the body that follows `head`.
    pub fn read_body(&mut self, head: &Head) -> io::Result<Vec<u8>> {
        if (100..200).contains(&head.status) || head.status == 204 || head.status == 304 {
            return Ok(Vec::new());
        }
        if head.chunked() {
            let mut body = Vec::new();
            while let Some(c) = self.read_chunk()? {
                body.extend_from_slice(&c);
            }
            return Ok(body);
        }
        if let Some(n) = head.header("content-length") {
            let n: usize = n.parse().map_err(|_| other(format!("bad content-length {n:?}")))?;
            return self.read_exact_buf(n, "body");
        }
        // Close-delimited.
        let mut body = self.buffered().to_vec();
        self.pos = self.buf.len();
        loop {
            let mut tmp = [0u8; 8192];
            match self.stream.read(&mut tmp) {
                Ok(0) => return Ok(body),
                Ok(n) => body.extend_from_slice(&tmp[..n]),
                Err(e) => return Err(e),
            }
        }
    }

    /// Reads one whole response (an interim 1xx response is returned on its own).
    pub fn read_response(&mut self) -> io::Result<Response> {
        let head = self.read_head()?;
        let body = self.read_body(&head)?;
        Ok(Response { status: head.status, reason: head.reason, headers: head.headers, body })
    }

    /// True when the peer has closed the connection: EOF (or a reset) arrives within
    /// `within` and no further bytes were sent. Panics if bytes arrive instead.
    pub fn is_closed(&mut self, within: Duration) -> bool {
        if !self.buffered().is_empty() {
            panic!("unexpected bytes after the response: {:?}", String::from_utf8_lossy(self.buffered()));
        }
        self.stream.set_read_timeout(Some(within)).unwrap();
        let mut tmp = [0u8; 1024];
        let r = self.stream.read(&mut tmp);
        self.stream.set_read_timeout(Some(READ_TIMEOUT)).unwrap();
        match r {
            Ok(0) => true,
            Ok(n) => panic!("unexpected bytes after the response: {:?}", String::from_utf8_lossy(&tmp[..n])),
            Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => false,
            Err(_) => true,
        }
    }

    /// True when nothing arrives within `within` (the server is waiting for us).
    pub fn nothing_within(&mut self, within: Duration) -> bool {
        if !self.buffered().is_empty() {
            return false;
        }
        self.stream.set_read_timeout(Some(within)).unwrap();
        let r = self.fill();
        self.stream.set_read_timeout(Some(READ_TIMEOUT)).unwrap();
        match r {
            Ok(0) => false,
            Ok(_) => false,
            Err(e) => matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut),
        }
    }
}

/// Reads the reply lines of a streamed (chunked) legacy response as they arrive.
pub struct ReplyStream<'a> {
    conn: &'a mut Conn,
    /// Bytes of the line being received.
    pending: Vec<u8>,
    /// Complete lines not yet handed out.
    ready: std::collections::VecDeque<Vec<u8>>,
    done: bool,
}

impl<'a> ReplyStream<'a> {
    /// Reads the response head (must be a chunked 200) and returns the stream of its lines.
    pub fn start(conn: &'a mut Conn) -> ReplyStream<'a> {
        let head = conn.read_head().expect("reading the legacy response head");
        assert_eq!(head.status, 200, "legacy response status");
        assert!(head.chunked(), "legacy response must be chunked: {:?}", head.headers);
        assert_eq!(head.header("content-type"), Some("application/json"));
        ReplyStream { conn, pending: Vec::new(), ready: Default::default(), done: false }
    }

    /// The next complete reply line: one followed by `\n`, or the last one once the body
    /// has ended. `None` after the end.
    pub fn next_line(&mut self) -> Option<Vec<u8>> {
        loop {
            if let Some(l) = self.ready.pop_front() {
                return Some(l);
            }
            if self.done {
                return None;
            }
            match self.conn.read_chunk().expect("reading a reply chunk") {
                Some(data) => self.split_lines(&data),
                None => {
                    self.done = true;
                    assert!(!self.pending.is_empty(), "legacy reply body ended with a newline or was empty");
                    self.ready.push_back(std::mem::take(&mut self.pending));
                }
            }
        }
    }

    /// Moves the complete lines of `data` to `ready`, keeping the unterminated tail pending.
    fn split_lines(&mut self, data: &[u8]) {
        let mut rest = data;
        while let Some(i) = rest.iter().position(|&b| b == b'\n') {
            self.pending.extend_from_slice(&rest[..i]);
            self.ready.push_back(std::mem::take(&mut self.pending));
            rest = &rest[i + 1..];
        }
        self.pending.extend_from_slice(rest);
    }

    /// The next reply parsed as JSON.
    pub fn next_json(&mut self) -> Option<Value> {
        self.next_line().map(|l| {
            serde_json::from_slice(&l)
                .unwrap_or_else(|e| panic!("reply line is not JSON ({e}): {:?}", String::from_utf8_lossy(&l)))
        })
    }

    /// The bytes received of the line not yet terminated.
    pub fn pending(&self) -> &[u8] {
        &self.pending
    }

    /// Reads chunks until the partial line is a complete JSON value (the last reply sent so
    /// far has no `\n` after it until the next one arrives). Returns it without consuming.
    pub fn wait_pending_json(&mut self) -> Value {
        loop {
            assert!(self.ready.is_empty(), "wait_pending_json with complete lines unread");
            if let Ok(v) = serde_json::from_slice::<Value>(&self.pending) {
                return v;
            }
            assert!(!self.done, "stream ended");
            let data = self.conn.read_chunk().expect("reading a reply chunk").expect("stream ended early");
            self.split_lines(&data);
            assert!(self.ready.is_empty(), "more replies than expected arrived");
        }
    }

    pub fn is_done(&self) -> bool {
        self.done && self.ready.is_empty()
    }
}

/// Root of the repository (for `tests/python`, `target/pyenv`).
pub fn repo_root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// A publish line of the legacy API.
pub fn publish_line(id: u32, channel: &str, data: &str) -> String {
    format!(r#"{{"id":{id},"method":"publish","params":{{"channel":"{channel}","data":{data}}}}}"#)
}

/// `{"error":{"code":N,"message":M}}`.
pub fn api_error(code: u32) -> Value {
    json!({"error": error_obj(code)})
}

/// `{"code":N,"message":M}` with Centrifugo's exact message for the code.
pub fn error_obj(code: u32) -> Value {
    let message = match code {
        100 => "internal server error",
        102 => "unknown channel",
        104 => "not found",
        107 => "bad request",
        108 => "not available",
        112 => "unrecoverable position",
        113 => "conflict",
        _ => panic!("unknown error code {code}"),
    };
    json!({"code": code, "message": message})
}

/// An HS256 JWT with `claims`, signed here (not by the server's code).
pub fn jwt(secret: &str, claims: Value) -> String {
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()),
    )
    .expect("sign a JWT")
}

// ---------------------------------------------------------------------------------------------
// Redis: `redis-server` processes of the tests' own, and gyre clusters on them.
// ---------------------------------------------------------------------------------------------

/// Whether `redis-server` can be run. When it cannot, a test fails if `CI` is set (CI installs
/// it) and is skipped with a message otherwise: `if !redis_available("test") { return; }`.
pub fn redis_available(test: &str) -> bool {
    let ok = Command::new("redis-server").arg("--version").output().is_ok_and(|o| o.status.success());
    ok || unavailable(test, "`redis-server` is not on PATH", "apt-get install redis-server")
}

/// A `redis-server` process on a free loopback port, killed (and its directory removed) on
/// drop. When the test is failing, its log is printed first.
pub struct RedisServer {
    child: Option<Child>,
    pub port: u16,
    /// The working directory (`--dir`): where an append-only file lives.
    pub dir: PathBuf,
    /// `start_persistent`: AOF with fsync on every write, kept across `kill` + `restart`.
    persistent: bool,
    /// The directory is ours to remove (not the caller's).
    own_dir: bool,
    /// Log of every run of the process (appended on restart).
    log_path: PathBuf,
    /// More arguments for redis-server (`--tls-port ...`).
    extra: Vec<String>,
}

impl RedisServer {
    /// A throw-away server: no RDB snapshots, no AOF.
    pub fn start() -> RedisServer {
        Self::start_with_args(Vec::new())
    }

    /// [`RedisServer::start`] with more arguments for redis-server.
    pub fn start_with_args(extra: Vec<String>) -> RedisServer {
        let dir = std::env::temp_dir().join(format!(
            "gyre-it-redis-{}-{}",
            std::process::id(),
            DIRS.fetch_add(1, Ordering::Relaxed)
        ));
        Self::start_in(dir, false, true, extra)
    }

    /// The process id (for signals).
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    /// A server whose every acknowledged write is on disk in `dir` (`--appendonly yes
    /// --appendfsync always`), so a SIGKILL loses nothing it answered; `restart` finds it again.
    pub fn start_persistent(dir: &Path) -> RedisServer {
        Self::start_in(dir.to_path_buf(), true, false, Vec::new())
    }

    fn start_in(dir: PathBuf, persistent: bool, own_dir: bool, extra: Vec<String>) -> RedisServer {
        std::fs::create_dir_all(&dir).expect("create the redis directory");
        let log_path = dir.join("redis.log");
        let mut r = RedisServer { child: None, port: 0, dir, persistent, own_dir, log_path, extra };
        let mut last_err = String::new();
        for _attempt in 0..5 {
            r.port = free_port();
            match r.spawn() {
                Ok(()) => return r,
                // The port was taken between probing it and redis binding it: another port.
                Err(e) if e.contains("in use") => last_err = e,
                Err(e) => panic!("{e}"),
            }
        }
        panic!("redis-server did not start after 5 attempts: {last_err}");
    }

    /// Starts the process on `self.port` and waits (≤ 10 s) until it answers PING.
    fn spawn(&mut self) -> Result<(), String> {
        let log =
            std::fs::OpenOptions::new().create(true).append(true).open(&self.log_path).expect("open the redis log");
        let log2 = log.try_clone().expect("clone the redis log handle");
        let port = self.port.to_string();
        let mut cmd = Command::new("redis-server");
        cmd.args(["--port", &port, "--bind", "127.0.0.1", "--save", "", "--daemonize", "no"])
            .args(["--protected-mode", "no", "--dir"])
            .arg(&self.dir);
        if self.persistent {
            cmd.args(["--appendonly", "yes", "--appendfsync", "always"]);
        } else {
            cmd.args(["--appendonly", "no"]);
        }
        cmd.args(&self.extra);
        let child = cmd
            .current_dir(&self.dir)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log2)
            .spawn()
            .map_err(|e| format!("spawn redis-server: {e}"))?;
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Ok(Value::String(s)) = self.try_cmd(&["PING"]) {
                if s == "PONG" {
                    return Ok(());
                }
            }
            if let Some(Ok(Some(status))) = self.child.as_mut().map(|c| c.try_wait()) {
                self.child = None;
                return Err(format!(
                    "redis-server exited with {status} before answering on port {}; log:\n{}",
                    self.port,
                    self.log()
                ));
            }
            if Instant::now() > deadline {
                self.kill();
                return Err(format!("redis-server did not answer PING on port {} within 10 s", self.port));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// `redis://127.0.0.1:PORT`, for `engine.redis.address`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// SIGKILL: no shutdown, no final save; what was not on disk is gone.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts the server again on the same port and directory (after [`RedisServer::kill`]).
    pub fn restart(&mut self) {
        self.kill();
        // The old process is gone, but its port may be busy for a moment: retry briefly.
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match self.spawn() {
                Ok(()) => return,
                Err(e) if e.contains("in use") && Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(100))
                }
                Err(e) => panic!("restarting redis-server on port {}: {e}", self.port),
            }
        }
    }

    pub fn is_running(&mut self) -> bool {
        self.child.as_mut().is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// What the server has logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// One command over a fresh connection (RESP2); the reply as JSON: simple strings and
    /// bulk strings → strings (lossy UTF-8), integers → numbers, nil → null, arrays → arrays,
    /// an error reply → `Err(message)` (as is any I/O failure).
    pub fn try_cmd(&self, args: &[&str]) -> Result<Value, String> {
        let addr = SocketAddr::from(([127, 0, 0, 1], self.port));
        let mut s = TcpStream::connect_timeout(&addr, Duration::from_millis(500)).map_err(|e| e.to_string())?;
        s.set_read_timeout(Some(Duration::from_secs(5))).map_err(|e| e.to_string())?;
        let mut req = format!("*{}\r\n", args.len()).into_bytes();
        for a in args {
            req.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
            req.extend_from_slice(a.as_bytes());
            req.extend_from_slice(b"\r\n");
        }
        s.write_all(&req).map_err(|e| e.to_string())?;
        let mut r = io::BufReader::new(s);
        read_resp(&mut r)?
    }

    /// Like [`RedisServer::try_cmd`], panicking on any failure.
    pub fn cmd(&self, args: &[&str]) -> Value {
        self.try_cmd(args).unwrap_or_else(|e| panic!("redis (port {}) {args:?}: {e}", self.port))
    }

    /// Every key matching `pattern` (SCAN, so the server is not blocked), sorted.
    pub fn keys(&self, pattern: &str) -> Vec<String> {
        let mut cursor = "0".to_string();
        let mut out = Vec::new();
        loop {
            let r = self.cmd(&["SCAN", &cursor, "MATCH", pattern, "COUNT", "1000"]);
            cursor = r[0].as_str().expect("SCAN cursor").to_string();
            out.extend(r[1].as_array().expect("SCAN keys").iter().map(|k| k.as_str().unwrap().to_string()));
            if cursor == "0" {
                break;
            }
        }
        out.sort();
        out.dedup();
        out
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
        if std::thread::panicking() {
            eprintln!("---- redis-server log (port {}) ----\n{}---- end of redis log ----", self.port, self.log());
        }
        if self.own_dir {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// One RESP2 reply. The outer `Result` is an I/O or protocol failure, the inner one an error
/// reply.
pub fn read_resp(r: &mut impl io::BufRead) -> Result<Result<Value, String>, String> {
    let mut line = Vec::new();
    r.read_until(b'\n', &mut line).map_err(|e| e.to_string())?;
    if !line.ends_with(b"\r\n") {
        return Err(format!("truncated RESP line {:?}", String::from_utf8_lossy(&line)));
    }
    line.truncate(line.len() - 2);
    let (kind, rest) = line.split_first().ok_or("empty RESP line")?;
    let rest = String::from_utf8_lossy(rest).into_owned();
    let int = |s: &str| s.parse::<i64>().map_err(|_| format!("bad RESP integer {s:?}"));
    Ok(match kind {
        b'+' => Ok(Value::String(rest)),
        b'-' => Err(rest),
        b':' => Ok(json!(int(&rest)?)),
        b'$' => {
            let n = int(&rest)?;
            if n < 0 {
                return Ok(Ok(Value::Null));
            }
            let mut buf = vec![0u8; n as usize + 2];
            r.read_exact(&mut buf).map_err(|e| e.to_string())?;
            buf.truncate(n as usize);
            Ok(Value::String(String::from_utf8_lossy(&buf).into_owned()))
        }
        b'*' => {
            let n = int(&rest)?;
            if n < 0 {
                return Ok(Ok(Value::Null));
            }
            let mut items = Vec::with_capacity(n as usize);
            for _ in 0..n {
                // An error inside an array (EXEC) is kept as {"error": message}.
                items.push(read_resp(r)?.unwrap_or_else(|e| json!({ "error": e })));
            }
            Ok(Value::Array(items))
        }
        _ => return Err(format!("unknown RESP type in {:?}", String::from_utf8_lossy(&line))),
    })
}

/// `config()` with the Redis engine on `redis` (several servers: channels sharded across
/// them) and prefix `gyre-test`, then `patch` merged in.
pub fn redis_config(redis: &[&RedisServer], patch: Value) -> Value {
    let address: Vec<String> = redis.iter().map(|r| r.url()).collect();
    let mut c = config_with(json!({
        "engine": {"type": "redis", "redis": {"address": address, "prefix": "gyre-test"}}
    }));
    merge(&mut c, patch);
    c
}

/// `n` gyre nodes on one Redis (see [`cluster_on`]).
pub fn cluster(n: usize, redis: &RedisServer, patch: Value) -> Vec<Server> {
    cluster_on(n, &[redis], patch)
}

/// `n` gyre nodes sharing the Redis servers `redis` and one prefix, each on its own HTTP
/// port, named `node0`, `node1`, ... (`node.name`, shown by `info`). Started in parallel.
pub fn cluster_on(n: usize, redis: &[&RedisServer], patch: Value) -> Vec<Server> {
    let cfg = redis_config(redis, patch);
    std::thread::scope(|scope| {
        let handles: Vec<_> = (0..n)
            .map(|i| {
                let mut c = cfg.clone();
                merge(&mut c, json!({"node": {"name": format!("node{i}")}}));
                scope.spawn(move || Server::start(c))
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap_or_else(|_| panic!("starting a gyre node failed"))).collect()
    })
}

impl Server {
    /// `POST /api/<method>` that must be answered within `limit` (a hung call fails the test
    /// instead of waiting for [`READ_TIMEOUT`]); returns the HTTP status, the body (JSON, or
    /// the text as a JSON string) and how long the call took.
    pub fn api_within(&self, method: &str, body: Value, limit: Duration) -> (u16, Value, Duration) {
        let started = Instant::now();
        let mut c = self.connect();
        c.stream.set_read_timeout(Some(limit)).unwrap();
        c.send(&request("POST", &format!("/api/{method}"), body.to_string().as_bytes(), &[("X-API-Key", KEY)]));
        let r = c.read_response().unwrap_or_else(|e| {
            panic!("POST /api/{method} {body} on port {}: no answer within {limit:?} ({e}) — the call hangs", self.port)
        });
        let took = started.elapsed();
        let v = serde_json::from_slice(&r.body).unwrap_or_else(|_| Value::String(r.text()));
        (r.status, v, took)
    }

    /// Kills the process now (SIGKILL), as a crash would.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// ---------------------------------------------------------------------------------------------
// Helper processes driven over JSON lines: the SDK agents, the gateway test backend.
// ---------------------------------------------------------------------------------------------

/// False (and a SKIPPED line) when a tool `test` needs is missing and `CI` is unset; panics
/// when it is set (CI installs every tool).
pub fn unavailable(test: &str, what: &str, how: &str) -> bool {
    if std::env::var_os("CI").is_some() {
        panic!("{test}: {what} and CI is set; install it with: {how}");
    }
    eprintln!("SKIPPED {test}: {what}; install it with: {how}");
    false
}

/// How long [`LineProc::take`] and [`LineProc::wait`] wait for a line.
pub const LINE_WAIT: Duration = Duration::from_secs(20);

/// A child process that takes JSON commands on stdin and reports JSON lines on stdout. What
/// it reports can be read two ways: taken one by one ([`LineProc::take`]: each line once, for
/// sequences of events) or looked up in the log of everything reported ([`LineProc::wait`],
/// [`LineProc::count`]: for counting events and finding the first ones).
pub struct LineProc {
    what: String,
    child: Child,
    stdin: ChildStdin,
    rx: Receiver<Value>,
    /// Everything the process wrote to stderr so far.
    stderr: Arc<Mutex<String>>,
    /// Every line received, in order (a stdout line that is not JSON arrives as `fatal`).
    pub log: Vec<Value>,
    /// The lines received and not yet taken, in arrival order.
    pub pending: VecDeque<Value>,
}

impl LineProc {
    /// Spawns `cmd` in the repository root with piped stdio (and without the caller's proxy
    /// settings, which must not reroute loopback connections) and waits for its `ready` line.
    pub fn spawn(what: &str, mut cmd: Command) -> LineProc {
        use std::io::BufRead;
        for k in [
            "HTTP_PROXY",
            "HTTPS_PROXY",
            "http_proxy",
            "https_proxy",
            "WS_PROXY",
            "WSS_PROXY",
            "ALL_PROXY",
            "all_proxy",
        ] {
            cmd.env_remove(k);
        }
        let mut child = cmd
            .current_dir(repo_root())
            .env("PYTHONDONTWRITEBYTECODE", "1")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {what}: {e}"));
        let stdin = child.stdin.take().unwrap();
        let stdout = child.stdout.take().unwrap();
        let mut stderr_pipe = child.stderr.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if line.trim().is_empty() {
                    continue;
                }
                let v = serde_json::from_str(&line).unwrap_or_else(
                    |_| json!({"ev": "fatal", "where": "stdout", "message": format!("not JSON: {line}")}),
                );
                if tx.send(v).is_err() {
                    break;
                }
            }
        });
        let stderr = Arc::new(Mutex::new(String::new()));
        {
            let stderr = stderr.clone();
            std::thread::spawn(move || {
                let mut buf = [0u8; 4096];
                while let Ok(n) = stderr_pipe.read(&mut buf) {
                    if n == 0 {
                        break;
                    }
                    stderr.lock().unwrap().push_str(&String::from_utf8_lossy(&buf[..n]));
                }
            });
        }
        let mut p =
            LineProc { what: what.to_string(), child, stdin, rx, stderr, log: Vec::new(), pending: VecDeque::new() };
        p.take("the ready line", |e| e["ev"] == "ready");
        p
    }

    /// Writes `cmd` as one line.
    pub fn send(&mut self, cmd: Value) {
        let mut line = cmd.to_string();
        line.push('\n');
        if let Err(e) = self.stdin.write_all(line.as_bytes()).and_then(|_| self.stdin.flush()) {
            self.fail(&format!("writing {cmd} failed: {e}"));
        }
    }

    /// Fails the test with `msg`, the last lines received, those not yet taken and stderr.
    pub fn fail(&self, msg: &str) -> ! {
        std::thread::sleep(Duration::from_millis(100)); // let the stderr reader catch up
        panic!(
            "{}: {msg}\nlast lines received:\n{}\nnot yet taken:\n{}\nstderr:\n{}",
            self.what,
            self.tail(40),
            self.pending.iter().map(|v| format!("  {v}\n")).collect::<String>(),
            self.stderr.lock().unwrap_or_else(|e| e.into_inner())
        );
    }

    fn tail(&self, n: usize) -> String {
        self.log[self.log.len().saturating_sub(n)..].iter().map(|v| format!("  {v}\n")).collect()
    }

    /// Receives the next line into `log` and `pending`; false when none came before
    /// `deadline`. A `fatal` or `bad` line, or the end of the process, fails the test.
    pub fn recv(&mut self, deadline: Instant) -> bool {
        let left = deadline.saturating_duration_since(Instant::now());
        match self.rx.recv_timeout(left) {
            Ok(v) => {
                self.log.push(v.clone());
                self.pending.push_back(v.clone());
                if v["ev"] == "fatal" || v["ev"] == "bad" {
                    self.fail(&format!("reported {v}"));
                }
                true
            }
            Err(RecvTimeoutError::Timeout) => false,
            Err(RecvTimeoutError::Disconnected) => {
                std::thread::sleep(Duration::from_millis(100));
                let status = self.child.try_wait().ok().flatten();
                self.fail(&format!("the process ended ({status:?})"))
            }
        }
    }

    /// Takes the first line not taken yet (oldest first) that `pred` accepts, waiting for it
    /// until `deadline`; `None` when it did not come.
    pub fn take_by(&mut self, deadline: Instant, pred: impl Fn(&Value) -> bool) -> Option<Value> {
        loop {
            if let Some(i) = self.pending.iter().position(&pred) {
                return self.pending.remove(i);
            }
            if !self.recv(deadline) {
                return None;
            }
        }
    }

    /// Takes the first line not taken yet that `pred` accepts, waiting up to [`LINE_WAIT`].
    pub fn take(&mut self, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
        match self.take_by(Instant::now() + LINE_WAIT, pred) {
            Some(v) => v,
            None => self.fail(&format!("no {what} within {LINE_WAIT:?}")),
        }
    }

    /// Receives whatever comes within `d`.
    pub fn settle(&mut self, d: Duration) {
        let deadline = Instant::now() + d;
        while Instant::now() < deadline {
            self.recv(deadline);
        }
    }

    /// Waits (≤ `within`) until at least `n` lines of the log match `pred`; returns the
    /// first `n`.
    pub fn wait_n_within(
        &mut self,
        what: &str,
        n: usize,
        within: Duration,
        pred: impl Fn(&Value) -> bool,
    ) -> Vec<Value> {
        let deadline = Instant::now() + within;
        loop {
            let found: Vec<Value> = self.log.iter().filter(|e| pred(e)).take(n).cloned().collect();
            if found.len() == n {
                return found;
            }
            if !self.recv(deadline) {
                self.fail(&format!("timed out waiting for {what} ({} of {n} seen)", found.len()));
            }
        }
    }

    /// [`LineProc::wait_n_within`] [`LINE_WAIT`].
    pub fn wait_n(&mut self, what: &str, n: usize, pred: impl Fn(&Value) -> bool) -> Vec<Value> {
        self.wait_n_within(what, n, LINE_WAIT, pred)
    }

    /// The first line of the log that matches `pred`, waiting up to [`LINE_WAIT`] for it.
    pub fn wait(&mut self, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
        self.wait_n(what, 1, pred).remove(0)
    }

    /// Every line of the log that matches `pred`.
    pub fn all(&self, pred: impl Fn(&Value) -> bool) -> Vec<Value> {
        self.log.iter().filter(|e| pred(e)).cloned().collect()
    }

    pub fn count(&self, pred: impl Fn(&Value) -> bool) -> usize {
        self.log.iter().filter(|e| pred(e)).count()
    }
}

impl Drop for LineProc {
    fn drop(&mut self) {
        let _ = self.stdin.write_all(b"{\"op\":\"exit\"}\n");
        let deadline = Instant::now() + Duration::from_secs(2);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!(
                "---- {}: last lines ----\n{}---- {} stderr ----\n{}---- end ----",
                self.what,
                self.tail(60),
                self.what,
                self.stderr.lock().unwrap_or_else(|e| e.into_inner())
            );
        }
    }
}

/// The official client SDKs, each run by an agent speaking one line protocol.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Sdk {
    Js,
    Py,
}

/// A running SDK agent (`tests/js/agent.js` or `tests/python/sdk_agent.py`; their line
/// protocol is documented at the top of each). Its [`LineProc`] is reached through it.
pub struct Agent {
    pub sdk: Sdk,
    p: LineProc,
    next_id: u64,
}

impl std::ops::Deref for Agent {
    type Target = LineProc;
    fn deref(&self) -> &LineProc {
        &self.p
    }
}

impl std::ops::DerefMut for Agent {
    fn deref_mut(&mut self) -> &mut LineProc {
        &mut self.p
    }
}

impl Agent {
    /// Starts the agent for `sdk`; `None` (test skipped) when the SDK is not installed and
    /// `CI` is unset.
    pub fn start(sdk: Sdk, test: &str) -> Option<Agent> {
        Self::start_with_env(sdk, test, &[])
    }

    /// [`Agent::start`] with extra environment variables for the agent's process.
    pub fn start_with_env(sdk: Sdk, test: &str, envs: &[(&str, &str)]) -> Option<Agent> {
        let mut cmd = match sdk_agent_command(sdk == Sdk::Js) {
            Ok(c) => c,
            Err((what, how)) => {
                unavailable(test, &what, how);
                return None;
            }
        };
        cmd.envs(envs.iter().copied());
        let p = LineProc::spawn(&format!("the {sdk:?} agent"), cmd);
        let ready = p.log.iter().find(|e| e["ev"] == "ready").expect("the ready line");
        eprintln!("{test}: {} {}", ready["sdk"].as_str().unwrap_or("?"), ready["version"].as_str().unwrap_or("?"));
        Some(Agent { sdk, p, next_id: 0 })
    }

    /// `connect` for client `c` to the Centrifugo endpoint of `node` with `extra` (token,
    /// tokens, protobuf, opts).
    pub fn connect(&mut self, c: &str, node: &Server, extra: Value) {
        let url = format!("ws://127.0.0.1:{}/connection/websocket", node.port);
        self.send(with_fields(json!({"op": "connect", "c": c, "url": url}), extra));
    }

    pub fn sub(&mut self, c: &str, ch: &str, opts: Value) {
        self.send(json!({"op": "sub", "c": c, "ch": ch, "opts": opts}));
    }

    /// A client call (publish, presence, presenceStats, history; send with agent.js) and its
    /// outcome: the result, or the error code.
    pub fn call(&mut self, c: &str, method: &str, ch: &str, extra: Value) -> Result<Value, i64> {
        self.next_id += 1;
        let id = self.next_id;
        self.send(with_fields(json!({"op": "call", "c": c, "id": id, "method": method, "ch": ch}), extra));
        let r = self.wait(&format!("{c}: result of {method} {ch}"), |e| e["ev"] == "result" && e["id"] == id);
        match r.get("err") {
            Some(e) => Err(e["code"].as_i64().unwrap_or(-1)),
            None => Ok(r["ok"].clone()),
        }
    }
}

/// `cmd` with the fields of the object `extra` set (replaced, not merged).
fn with_fields(mut cmd: Value, extra: Value) -> Value {
    for (k, v) in extra.as_object().cloned().unwrap_or_default() {
        cmd[k] = v;
    }
    cmd
}

/// Client `c`'s event `name`.
pub fn ev<'a>(c: &'a str, name: &'a str) -> impl Fn(&Value) -> bool + 'a {
    move |e| e["c"] == c && e["ev"] == name
}

/// Client `c`'s subscription event `name` on `ch`.
pub fn sev<'a>(c: &'a str, ch: &'a str, name: &'a str) -> impl Fn(&Value) -> bool + 'a {
    move |e| e["c"] == c && e["ch"] == ch && e["ev"] == name
}

/// The `n` field of each publication's data.
pub fn ns(pubs: &[Value]) -> Vec<i64> {
    pubs.iter().map(|p| p["data"]["n"].as_i64().unwrap_or(-1)).collect()
}

/// The offset of each publication.
pub fn offsets(pubs: &[Value]) -> Vec<i64> {
    pubs.iter().map(|p| p["offset"].as_i64().unwrap_or(-1)).collect()
}

/// The command that runs the SDK agent (`tests/js/agent.js` with centrifuge-js, or
/// `tests/python/sdk_agent.py` with centrifuge-python); `Err((what is missing, how to get it))`
/// when the SDK is not installed.
pub fn sdk_agent_command(js: bool) -> Result<Command, (String, &'static str)> {
    let root = repo_root();
    if js {
        let how = "npm ci --prefix tests/js";
        let node_ok = Command::new("node").arg("--version").output().is_ok_and(|o| o.status.success());
        if !node_ok {
            return Err(("`node` is not on PATH".into(), "apt-get install nodejs npm"));
        }
        for pkg in ["centrifuge", "ws"] {
            if !root.join("tests/js/node_modules").join(pkg).join("package.json").exists() {
                return Err((format!("tests/js/node_modules/{pkg} is missing"), how));
            }
        }
        let mut c = Command::new("node");
        c.arg(root.join("tests/js/agent.js"));
        Ok(c)
    } else {
        let mut c = Command::new(pyenv_python()?);
        c.arg(root.join("tests/python/sdk_agent.py"));
        Ok(c)
    }
}

/// `target/pyenv/bin/python`, with centrifuge-python and websockets installed (the Python SDK
/// agent and the gateway test backend run on it); `Err((what is missing, how to get it))`.
pub fn pyenv_python() -> Result<PathBuf, (String, &'static str)> {
    let how = "python3 -m venv target/pyenv && target/pyenv/bin/pip install \
               centrifuge-python==0.7.0 websockets==17.4 protobuf==7.36.2 (or bash .ci/run)";
    let python = repo_root().join("target/pyenv/bin/python");
    if !python.exists() {
        return Err((format!("{} is missing", python.display()), how));
    }
    let import_ok =
        Command::new(&python).args(["-c", "import centrifuge, websockets"]).output().is_ok_and(|o| o.status.success());
    if !import_ok {
        return Err(("websockets / centrifuge-python are not installed in target/pyenv".into(), how));
    }
    Ok(python)
}

/// A TCP proxy in front of a Redis server that holds back by `delay` everything Redis sends
/// on a connection from the moment that connection has sent `SUBSCRIBE` (a PUB/SUB
/// connection): its confirmations and messages arrive late, the replies on the other
/// connections on time. A publication made just after a subscription took effect thus reaches
/// the node after a read of the stream made meanwhile has already returned it.
pub struct SlowPubSub {
    pub port: u16,
    stop: Arc<AtomicBool>,
}

impl SlowPubSub {
    pub fn start(upstream: u16, delay: Duration) -> SlowPubSub {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the proxy");
        listener.set_nonblocking(true).unwrap();
        let port = listener.local_addr().unwrap().port();
        let stop = Arc::new(AtomicBool::new(false));
        let halt = stop.clone();
        std::thread::spawn(move || {
            while !halt.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((client, _)) => {
                        client.set_nonblocking(false).unwrap();
                        let Ok(server) = TcpStream::connect(("127.0.0.1", upstream)) else { continue };
                        Self::pipe(client, server, delay, halt.clone());
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        SlowPubSub { port, stop }
    }

    /// The address to give the node (`engine.redis.address`).
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    fn pipe(client: TcpStream, server: TcpStream, delay: Duration, halt: Arc<AtomicBool>) {
        let pubsub = Arc::new(AtomicBool::new(false));
        let (mut from_client, mut to_server) = (client.try_clone().unwrap(), server.try_clone().unwrap());
        let flag = pubsub.clone();
        std::thread::spawn(move || {
            let mut buf = vec![0u8; 1 << 16];
            while let Ok(n) = from_client.read(&mut buf) {
                if n == 0 || to_server.write_all(&buf[..n]).is_err() {
                    break;
                }
                if buf[..n].windows(9).any(|w| w.eq_ignore_ascii_case(b"SUBSCRIBE")) {
                    flag.store(true, Ordering::Relaxed);
                }
            }
            let _ = to_server.shutdown(std::net::Shutdown::Write);
        });
        let (tx, rx) = std::sync::mpsc::channel::<(Instant, Vec<u8>)>();
        let (mut from_server, mut to_client) = (server, client);
        std::thread::spawn(move || {
            let mut buf = vec![0u8; 1 << 16];
            while let Ok(n) = from_server.read(&mut buf) {
                if n == 0 {
                    break;
                }
                let late = if pubsub.load(Ordering::Relaxed) { delay } else { Duration::ZERO };
                if tx.send((Instant::now() + late, buf[..n].to_vec())).is_err() {
                    break;
                }
            }
        });
        std::thread::spawn(move || {
            // In order: a chunk waits for the ones before it.
            while let Ok((due, chunk)) = rx.recv() {
                if halt.load(Ordering::Relaxed) {
                    break;
                }
                std::thread::sleep(due.saturating_duration_since(Instant::now()));
                if to_client.write_all(&chunk).is_err() {
                    break;
                }
            }
            let _ = to_client.shutdown(std::net::Shutdown::Both);
        });
    }
}

impl Drop for SlowPubSub {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// Sets the flag when dropped: a thread that runs until told to stop (a publisher) stops
/// however the test ends, so a scope around it can end.
pub struct SetOnDrop<'a>(pub &'a AtomicBool);

impl Drop for SetOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}
