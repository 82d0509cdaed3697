//! permessage-deflate (RFC 7692) on `/connection/websocket`, as Centrifugo v6 does it: the
//! handshake answer, compressed frames out (RSV1, raw DEFLATE without its sync-flush tail),
//! compressed messages in, their limits, and the options.
//!
//! A raw client reads the frame bits itself and (de)compresses with flate2 directly, not with
//! the server's codec; then real clients that negotiate the extension by default: Python
//! `websockets` (`tests/python/ws_deflate.py`) and centrifuge-js over `ws` with
//! `perMessageDeflate: true` (`tests/js/deflate.js`).

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};
use serde_json::{json, Value};

use crate::util::*;
use crate::ws_client::{client_frame, upgrade_request, SAMPLE_KEY, TEXT, WS_PATH};

/// The only answer to an offer, whatever its parameters.
const RESPONSE: &str = "permessage-deflate; server_no_context_takeover; client_no_context_takeover";

/// The common config with insecure clients (every permission, no token) and compression on,
/// `patch` merged in.
fn deflate_config(patch: Value) -> Value {
    let mut c = config_with(json!({"client": {"insecure": true}, "websocket": {"compression": true}}));
    merge(&mut c, patch);
    c
}

/// Raw DEFLATE with a sync flush, the trailing `00 00 ff ff` removed: a compressed message.
fn compress(data: &[u8]) -> Vec<u8> {
    let mut c = Compress::new(Compression::new(6), false);
    let mut out = Vec::with_capacity(data.len() + 1024);
    c.compress_vec(data, &mut out, FlushCompress::Sync).unwrap();
    assert_eq!(c.total_in() as usize, data.len());
    assert!(out.ends_with(&[0, 0, 0xff, 0xff]));
    out.truncate(out.len() - 4);
    out
}

/// A compressed message's data, as a client inflates it.
fn inflate(payload: &[u8]) -> Vec<u8> {
    let mut d = Decompress::new(false);
    let mut input = payload.to_vec();
    input.extend_from_slice(&[0, 0, 0xff, 0xff]);
    let mut out = Vec::with_capacity(1 << 20);
    let status = d.decompress_vec(&input, &mut out, FlushDecompress::Sync).expect("valid DEFLATE data");
    assert!(matches!(status, Status::Ok | Status::BufError | Status::StreamEnd));
    assert_eq!(d.total_in() as usize, input.len(), "the whole message inflated");
    out
}

/// A server frame as it arrived.
#[derive(Debug)]
struct RawFrame {
    /// FIN, RSV1-3 and the opcode.
    b0: u8,
    payload: Vec<u8>,
}

impl RawFrame {
    fn rsv1(&self) -> bool {
        self.b0 & 0x40 != 0
    }

    fn op(&self) -> u8 {
        self.b0 & 0x0f
    }

    /// The message's data: inflated when RSV1 is set.
    fn data(&self) -> Vec<u8> {
        if self.rsv1() {
            inflate(&self.payload)
        } else {
            self.payload.clone()
        }
    }

    fn json(&self) -> Vec<Value> {
        crate::ws_client::json_lines(&self.data())
    }
}

/// A client connection that reads the frame bits itself.
struct Raw {
    s: TcpStream,
    buf: Vec<u8>,
    /// The handshake's `Sec-WebSocket-Extensions`, if any.
    extensions: Option<String>,
}

impl Raw {
    /// Upgrades with `offer` as `Sec-WebSocket-Extensions` (none when `None`).
    fn open(server: &Server, offer: Option<&str>) -> Raw {
        Raw::open_at(server, WS_PATH, offer)
    }

    /// [`Raw::open`] on `path`.
    fn open_at(server: &Server, path: &str, offer: Option<&str>) -> Raw {
        let mut s = TcpStream::connect(server.addr()).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        let headers: Vec<(&str, &str)> = offer.map(|o| ("Sec-WebSocket-Extensions", o)).into_iter().collect();
        s.write_all(&upgrade_request("localhost", path, SAMPLE_KEY, &headers)).unwrap();
        let mut buf = Vec::new();
        let end = loop {
            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            let mut tmp = [0u8; 4096];
            let n = s.read(&mut tmp).unwrap();
            assert!(n > 0, "EOF in the handshake");
            buf.extend_from_slice(&tmp[..n]);
        };
        let head = String::from_utf8_lossy(&buf[..end]).to_string();
        assert!(head.starts_with("HTTP/1.1 101 "), "{head}");
        let found: Vec<&str> = head
            .lines()
            .filter_map(|l| l.split_once(':'))
            .filter(|(k, _)| k.eq_ignore_ascii_case("sec-websocket-extensions"))
            .map(|(_, v)| v.trim())
            .collect();
        assert!(found.len() <= 1, "{head}");
        Raw { s, buf: buf[end..].to_vec(), extensions: found.first().map(|v| v.to_string()) }
    }

    /// One masked text frame, compressed (RSV1) when `compressed`.
    fn send(&mut self, v: &Value, compressed: bool) {
        let text = v.to_string();
        self.send_text(text.as_bytes(), compressed);
    }

    fn send_text(&mut self, data: &[u8], compressed: bool) {
        let frame = if compressed {
            let mut f = client_frame(true, TEXT, &compress(data), true);
            f[0] |= 0x40;
            f
        } else {
            client_frame(true, TEXT, data, true)
        };
        self.s.write_all(&frame).unwrap();
    }

    fn frame(&mut self) -> RawFrame {
        loop {
            if self.buf.len() >= 2 {
                assert_eq!(self.buf[1] & 0x80, 0, "server frames are not masked");
                let (len, at) = match self.buf[1] & 0x7f {
                    126 if self.buf.len() >= 4 => (u16::from_be_bytes([self.buf[2], self.buf[3]]) as usize, 4),
                    127 if self.buf.len() >= 10 => {
                        (u64::from_be_bytes(self.buf[2..10].try_into().unwrap()) as usize, 10)
                    }
                    126 | 127 => (usize::MAX, 0),
                    n => (n as usize, 2),
                };
                if len != usize::MAX && self.buf.len() >= at + len {
                    let f = RawFrame { b0: self.buf[0], payload: self.buf[at..at + len].to_vec() };
                    self.buf.drain(..at + len);
                    assert!(f.b0 & 0x80 != 0, "server frames are final: {f:?}");
                    assert_eq!(f.b0 & 0x30, 0, "no RSV2/RSV3: {f:?}");
                    return f;
                }
            }
            let mut tmp = [0u8; 65536];
            let n = self.s.read(&mut tmp).expect("read a frame");
            assert!(n > 0, "EOF while a frame was expected");
            self.buf.extend_from_slice(&tmp[..n]);
        }
    }

    /// The next frame holding a message with `id` (others skipped), and that message.
    fn reply(&mut self, id: u64) -> (RawFrame, Value) {
        loop {
            let f = self.frame();
            if let Some(m) = f.json().into_iter().find(|m| m["id"] == id) {
                return (f, m);
            }
        }
    }

    /// The next frame holding a publication push, and its data.
    fn publication(&mut self) -> (RawFrame, Value) {
        loop {
            let f = self.frame();
            if let Some(m) = f.json().into_iter().find(|m| m["push"]["pub"].is_object()) {
                return (f, m["push"]["pub"]["data"].clone());
            }
        }
    }

    /// Skips frames until the close frame, which must not be compressed; its code.
    fn close_code(&mut self) -> u16 {
        loop {
            let f = self.frame();
            if f.op() == 0x8 {
                assert_eq!(f.b0, 0x88, "control frames are never compressed");
                return u16::from_be_bytes([f.payload[0], f.payload[1]]);
            }
        }
    }

    /// Connects (insecure) and subscribes to `channel`; both replies' frames.
    fn connect_and_subscribe(&mut self, channel: &str, compressed: bool) -> (RawFrame, RawFrame) {
        self.send(&json!({"id": 1, "connect": {}}), compressed);
        let (connect, m) = self.reply(1);
        assert!(m["connect"]["client"].is_string(), "{m}");
        self.send(&json!({"id": 2, "subscribe": {"channel": channel}}), compressed);
        let (subscribe, m) = self.reply(2);
        assert!(m.get("error").is_none(), "{m}");
        (connect, subscribe)
    }
}

#[test]
fn negotiated_connections_get_compressed_frames() {
    let s = Server::start(deflate_config(json!({})));
    let mut z = Raw::open(&s, Some("permessage-deflate; client_max_window_bits"));
    assert_eq!(z.extensions.as_deref(), Some(RESPONSE));
    // Commands sent plain, then compressed: every reply arrives compressed.
    z.send(&json!({"id": 1, "connect": {}}), false);
    let (f, m) = z.reply(1);
    assert!(f.rsv1() && f.op() == 0x1, "{f:?}");
    assert!(m["connect"]["client"].is_string());
    z.send(&json!({"id": 2, "subscribe": {"channel": "news"}}), true);
    let (f, _) = z.reply(2);
    assert!(f.rsv1());

    // A plain subscriber of the same channel, and one that offered with other parameters.
    let mut plain = Raw::open(&s, None);
    assert_eq!(plain.extensions, None);
    plain.connect_and_subscribe("news", false);
    let mut other = Raw::open(&s, Some("x-webkit-deflate-frame, permessage-deflate; server_max_window_bits=10"));
    assert_eq!(other.extensions.as_deref(), Some(RESPONSE));
    other.connect_and_subscribe("news", true);

    let data = json!({"text": "hello ".repeat(200), "n": 1});
    assert!(s.api("publish", json!({"channel": "news", "data": data})).get("error").is_none());
    let (f, got) = z.publication();
    assert!(f.rsv1(), "{f:?}");
    assert_eq!(got, data);
    assert!(f.payload.len() < 200, "compressed: {} bytes", f.payload.len());
    let (g, got) = other.publication();
    assert_eq!(got, data);
    assert_eq!(g.payload, f.payload, "the same compressed bytes for every compressing subscriber");
    let (p, got) = plain.publication();
    assert!(!p.rsv1() && got == data, "{p:?}");

    // A close (here for RSV2, a protocol error) is never compressed.
    let mut bad = client_frame(true, TEXT, b"{}", true);
    bad[0] |= 0x20;
    z.s.write_all(&bad).unwrap();
    assert_eq!(z.close_code(), 1002);
    s.api("info", json!({}));
}

#[test]
fn min_size_and_level() {
    let s = Server::start(deflate_config(json!({"websocket": {"compression_min_size": 120, "compression_level": 9}})));
    let mut c = Raw::open(&s, Some("permessage-deflate"));
    assert_eq!(c.extensions.as_deref(), Some(RESPONSE));
    c.connect_and_subscribe("news", false);
    s.api("publish", json!({"channel": "news", "data": {"n": 1}}));
    let (f, got) = c.publication();
    assert!(!f.rsv1() && f.payload.len() <= 120, "small: plain ({} bytes)", f.payload.len());
    assert_eq!(got, json!({"n": 1}));
    let big = json!({"text": "abc".repeat(100)});
    s.api("publish", json!({"channel": "news", "data": big}));
    let (f, got) = c.publication();
    assert!(f.rsv1(), "large: compressed");
    assert_eq!(got, big);
}

#[test]
fn compression_off_ignores_the_offer() {
    let s = Server::start(config_with(json!({"client": {"insecure": true}})));
    let mut c = Raw::open(&s, Some("permessage-deflate; client_max_window_bits"));
    assert_eq!(c.extensions, None);
    let (connect, subscribe) = c.connect_and_subscribe("news", false);
    assert!(!connect.rsv1() && !subscribe.rsv1());
    s.api("publish", json!({"channel": "news", "data": {"text": "hello ".repeat(100)}}));
    assert!(!c.publication().0.rsv1());
    // RSV1 without the extension is a protocol error.
    c.send(&json!({"id": 3, "presence": {"channel": "news"}}), true);
    assert_eq!(c.close_code(), 1002);
}

#[test]
fn inflate_limits_close_with_1009() {
    let cfg = json!({"websocket": {"message_size_limit": 1000, "decompressed_message_size_limit": 5000}});
    let s = Server::start(deflate_config(cfg));
    let publish = |n: usize| json!({"id": 3, "publish": {"channel": "news", "data": {"pad": "a".repeat(n)}}});

    // Inflated within the limit, compressed within the message limit: accepted.
    let mut c = Raw::open(&s, Some("permessage-deflate"));
    c.connect_and_subscribe("news", true);
    c.send(&publish(4000), true);
    let (_, m) = c.reply(3);
    assert_eq!(m["publish"], json!({}), "{m}");
    // Inflated over the decompressed limit.
    c.send(&publish(6000), true);
    assert_eq!(c.close_code(), 1009);

    // Compressed size over message_size_limit (incompressible data).
    let mut c = Raw::open(&s, Some("permessage-deflate"));
    c.connect_and_subscribe("news", true);
    let noise: String =
        (0..3000u32).map(|i| char::from(b'!' + ((i.wrapping_mul(2_654_435_761) >> 7) % 90) as u8)).collect();
    assert!(compress(noise.as_bytes()).len() > 1000);
    c.send_text(noise.as_bytes(), true);
    assert_eq!(c.close_code(), 1009);

    // RSV1 on a control frame.
    let mut c = Raw::open(&s, Some("permessage-deflate"));
    let mut ping = client_frame(true, 0x9, b"", true);
    ping[0] |= 0x40;
    c.s.write_all(&ping).unwrap();
    assert_eq!(c.close_code(), 1002);
    s.api("info", json!({}));
}

/// 32 MiB of spaces compressed to about 32 KiB: refused at the default limit (10 × 65536)
/// without the server ever holding it.
#[test]
fn a_deflate_bomb_is_refused_in_bounded_memory() {
    let mut s = Server::start(deflate_config(json!({"workers": 1})));
    // What a first connection sets up once (per-thread state, buffers) is not the bomb's.
    {
        let mut c = Raw::open(&s, Some("permessage-deflate"));
        c.connect_and_subscribe("news", true);
    }
    let before = s.rss_kb();
    let bomb = compress(&vec![b' '; 32 << 20]);
    assert!(bomb.len() < 65536, "{}", bomb.len());
    for _ in 0..3 {
        let mut c = Raw::open(&s, Some("permessage-deflate"));
        let mut f = client_frame(true, TEXT, &bomb, true);
        f[0] |= 0x40;
        c.s.write_all(&f).unwrap();
        assert_eq!(c.close_code(), 1009);
    }
    let grown = s.rss_kb().saturating_sub(before);
    assert!(grown < 16 * 1024, "the server grew by {grown} KiB");
    s.assert_alive();
}

/// The unidirectional WebSocket has options of its own: its connect request may arrive
/// compressed, its pushes leave compressed; the bidirectional endpoint keeps its own setting.
#[test]
fn uni_websocket_compression() {
    let cfg = json!({
        "websocket": {"compression": false},
        "uni_websocket": {"enabled": true, "compression": true, "compression_min_size": 20}
    });
    let s = Server::start(deflate_config(cfg));
    let path = "/connection/uni_websocket";
    let mut c = Raw::open_at(&s, path, Some("permessage-deflate; client_max_window_bits"));
    assert_eq!(c.extensions.as_deref(), Some(RESPONSE));
    // The connect request as the first message, compressed.
    c.send(&json!({}), true);
    let connect = c.frame();
    assert!(connect.rsv1(), "{connect:?}");
    let client = connect.json()[0]["connect"]["client"].clone();
    assert!(client.is_string(), "{:?}", connect.json());
    let r = s.api("subscribe", json!({"user": "", "client": client, "channel": "news"}));
    assert!(r.get("error").is_none(), "{r}");
    s.api("publish", json!({"channel": "news", "data": {"text": "hello ".repeat(20)}}));
    let f = loop {
        let f = c.frame();
        if f.op() == 0x9 {
            assert!(!f.rsv1(), "a control frame is never compressed: {f:?}");
            // The server awaits the pong of its WebSocket pings on this transport.
            c.s.write_all(&client_frame(true, 0xA, &f.payload, true)).unwrap();
            continue;
        }
        if f.json().first().is_some_and(|m| m["pub"].is_object()) {
            break f;
        }
        // Other pushes (the subscribe push, pings `{}`): compressed only over the min size.
        assert_eq!(f.rsv1(), f.data().len() > 20, "{f:?}");
    };
    assert!(f.rsv1(), "{f:?}");
    assert_eq!(f.json()[0]["pub"]["data"]["text"], "hello ".repeat(20));
    // Not negotiated without an offer; the bidirectional endpoint has compression off.
    assert_eq!(Raw::open_at(&s, path, None).extensions, None);
    assert_eq!(Raw::open(&s, Some("permessage-deflate")).extensions, None);
}

#[test]
fn an_invalid_level_stops_the_start_up() {
    let port = free_port().to_string();
    let mut child = Command::new(server_binary())
        .args(["--port", &port])
        .env("CENTRIFUGO_WEBSOCKET_COMPRESSION_LEVEL", "10")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("gyre started with websocket.compression_level 10");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut err = String::new();
    child.stderr.take().unwrap().read_to_string(&mut err).unwrap();
    assert!(!status.success());
    assert!(err.contains("websocket.compression_level") && err.contains("got 10"), "{err}");
}

/// Runs a client script that prints one JSON line; `None` when the tool is missing (skipped
/// unless CI is set).
fn run_script(mut cmd: Command) -> Value {
    let out = cmd.stdin(Stdio::null()).output().expect("run the client script");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "client script failed ({}):\n{stdout}\n{stderr}", out.status);
    serde_json::from_str(stdout.lines().last().unwrap_or("")).unwrap_or_else(|e| panic!("{e}: {stdout}\n{stderr}"))
}

#[test]
fn python_websockets_negotiates_and_receives_compressed_frames() {
    let python = match pyenv_python() {
        Ok(p) => p,
        Err((what, how)) => {
            unavailable("ws_deflate python", &what, how);
            return;
        }
    };
    let s = Server::start(deflate_config(json!({})));
    let mut cmd = Command::new(python);
    cmd.arg(repo_root().join("tests/python/ws_deflate.py"))
        .arg(format!("ws://{}{WS_PATH}", s.addr()))
        .arg(s.url("/api"))
        .arg(KEY)
        .arg("news")
        .env("PYTHONDONTWRITEBYTECODE", "1");
    let r = run_script(cmd);
    assert_eq!(r["header"], RESPONSE, "{r}");
    assert_eq!(r["extensions"], json!(["permessage-deflate"]), "{r}");
    assert!(r["connect"]["connect"]["client"].is_string(), "{r}");
    assert_eq!(r["publish"]["publish"], json!({}), "{r}");
    assert_eq!(r["received"], json!([{"n": 1}, "big", "big"]), "{r}");
    // Every data frame from the server was compressed (min size 0), none plain.
    assert!(r["frames"]["rsv1"].as_u64().unwrap() >= 5, "{r}");
    assert_eq!(r["frames"]["plain"], 0, "{r}");
    assert!(r["sent"]["rsv1"].as_u64().unwrap() >= 3, "the client's messages went compressed: {r}");
    assert!(!s.stderr().contains("panicked"));
}

#[test]
fn centrifuge_js_over_ws_with_per_message_deflate() {
    let mut cmd = match sdk_agent_command(true) {
        Ok(_) => Command::new("node"),
        Err((what, how)) => {
            unavailable("ws_deflate centrifuge-js", &what, how);
            return;
        }
    };
    let s = Server::start(deflate_config(json!({})));
    cmd.arg(repo_root().join("tests/js/deflate.js"))
        .arg(format!("ws://{}{WS_PATH}", s.addr()))
        .arg(s.url("/api"))
        .arg(KEY)
        .arg("news");
    let r = run_script(cmd);
    assert_eq!(r["header"], RESPONSE, "{r}");
    assert_eq!(r["received"], json!(["big", "big"]), "{r}");
    // 52 KB of publication arrived in a few hundred bytes each time.
    for n in r["read"].as_array().unwrap() {
        assert!(n.as_u64().unwrap() < 4096, "socket bytes read for a 52 KB publication: {r}");
    }
}
