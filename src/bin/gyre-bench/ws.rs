//! The Centrifuge client: a WebSocket connection (RFC 6455 client side, with Gyre's codec)
//! that sends `connect` (and optionally `subscribe`) in JSON or protobuf, then reads pushes.
//! The unidirectional WebSocket is the same client: its connect request travels in the URL
//! (`cf_connect`), the server's first message is the connect push and the rest are bare pushes.
//!
//! Publications are not decoded: [`Shared::deliver`] finds the payloads in the raw frame. Only
//! what is not a publication is looked at — server pings (`{}` / an empty protobuf reply) are
//! answered with pongs so connections held longer than the ping interval survive, and errors,
//! unsubscribe pushes and close frames end the session with a reason.

use std::cell::RefCell;
use std::net::{Ipv4Addr, SocketAddr};

use bytes::{Buf, Bytes};
use gyre::protocol::pb::proto;
use gyre::wire::ws::{accept_key, encode_client_frame, Decoder, Message, OpCode};
use monoio::io::AsyncWriteRentExt;
use monoio::net::TcpStream;
use prost::Message as _;
use serde_json::{json, Value};

use crate::body::url_encode;
use crate::payload::{Track, MARK};
use crate::stats::Local;
use crate::target::{self, ClientErr, Reader};
use crate::WireFormat;

/// Largest frame / message accepted from the server.
const MAX_MESSAGE: usize = 64 << 20;
/// Largest handshake response head.
const MAX_HEAD: usize = 16 * 1024;

/// What a client sends when it opens.
pub struct Hello<'a> {
    pub addr: SocketAddr,
    pub source: Option<Ipv4Addr>,
    pub host: &'a str,
    pub path: &'a str,
    pub format: WireFormat,
    /// Empty: connect without a token.
    pub token: &'a str,
    pub channel: Option<&'a str>,
    /// The unidirectional WebSocket (`path` is its endpoint, without the query).
    pub uni: bool,
}

/// An open, connected (and subscribed, if asked) client.
pub struct WsClient {
    conn: Reader<TcpStream>,
    dec: Decoder,
    format: WireFormat,
    mask: [u8; 4],
    out: Vec<u8>,
    /// Unidirectional: the server's pings take no answer.
    uni: bool,
}

impl WsClient {
    /// Connects, upgrades, and runs `connect` (+ `subscribe`) until both are answered.
    pub async fn open(h: &Hello<'_>) -> Result<WsClient, ClientErr> {
        Self::open_raw(h).await.map_err(|e| refused(e, h.token.is_empty()))
    }

    /// [`WsClient::open`] with the server's refusals as they came (close codes and error
    /// replies), without the hints for the person running the tool.
    pub async fn open_raw(h: &Hello<'_>) -> Result<WsClient, ClientErr> {
        let stream =
            target::connect(h.addr, h.source).await.map_err(|e| ClientErr::io(&format!("connect to {}", h.addr), e))?;
        let mut c = WsClient {
            conn: Reader::new(stream),
            dec: Decoder::client(MAX_MESSAGE, MAX_MESSAGE),
            format: h.format,
            mask: rand::random(),
            out: Vec::with_capacity(256),
            uni: h.uni,
        };
        c.handshake(h).await?;
        let hello = if h.uni { c.uni_hello(h).await } else { c.hello(h).await };
        hello.map(|()| c)
    }

    /// Ends the connection with a normal closing frame (1000), without waiting for the
    /// server's answer.
    pub async fn close(mut self) {
        let _ = self.frame(OpCode::Close, &1000u16.to_be_bytes()).await;
    }

    /// Holds the connection without a subscription: answers the server's pings, returns why
    /// the connection ended.
    pub async fn idle(&mut self) -> ClientErr {
        loop {
            let data = match self.next().await {
                Ok(Some(d)) => d,
                Ok(None) => continue,
                Err(e) => return e,
            };
            if let Err(e) = self.answer(&data).await {
                return e;
            }
        }
    }

    /// The connection once open: the socket, what was read past the replies, the frame
    /// decoder and the client's mask (a client that sends its own commands takes it over).
    pub fn into_parts(self) -> (TcpStream, bytes::BytesMut, Decoder, [u8; 4]) {
        (self.conn.rd, self.conn.buf, self.dec, self.mask)
    }

    /// The unidirectional WebSocket's first message: the connect push.
    async fn uni_hello(&mut self, h: &Hello<'_>) -> Result<(), ClientErr> {
        loop {
            if let Some(data) = self.next().await? {
                let first = data.split(|&b| b == b'\n').next().unwrap_or_default();
                return uni_connected(first, h.channel);
            }
        }
    }

    async fn handshake(&mut self, h: &Hello<'_>) -> Result<(), ClientErr> {
        use base64::Engine as _;
        let key = base64::engine::general_purpose::STANDARD.encode(rand::random::<[u8; 16]>());
        let proto = match h.format {
            WireFormat::Json => "",
            WireFormat::Protobuf => "Sec-WebSocket-Protocol: centrifuge-protobuf\r\n",
        };
        let query = if h.uni { format!("?cf_connect={}", url_encode(&connect_json(h.token))) } else { String::new() };
        let req = format!(
            "GET {}{query} HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n{proto}\r\n",
            h.path, h.host
        );
        self.write(req.into_bytes()).await?;
        let head_len = loop {
            if let Some(i) = memchr::memmem::find(&self.conn.buf, b"\r\n\r\n") {
                break i + 4;
            }
            if self.conn.buf.len() > MAX_HEAD {
                return Err(ClientErr::Io("websocket handshake: response head too large".into()));
            }
            self.conn.fill_some("websocket handshake").await?;
        };
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut resp = httparse::Response::new(&mut headers);
        resp.parse(&self.conn.buf[..head_len]).map_err(|e| ClientErr::io("websocket handshake", e))?;
        let status = resp.code.unwrap_or(0);
        if status != 101 {
            let msg = format!("websocket handshake on {}: HTTP {status} instead of 101", h.path);
            // A wrong path or a disabled endpoint will not fix itself.
            return Err(if (400..500).contains(&status) { ClientErr::Rejected(msg) } else { ClientErr::Io(msg) });
        }
        let accept = resp.headers.iter().find(|x| x.name.eq_ignore_ascii_case("sec-websocket-accept")).map(|x| x.value);
        if accept != Some(accept_key(key.as_bytes()).as_bytes()) {
            return Err(ClientErr::Rejected("websocket handshake: wrong Sec-WebSocket-Accept".into()));
        }
        self.conn.buf.advance(head_len);
        Ok(())
    }

    /// Sends `connect` (and `subscribe`) in one frame, as the SDKs do, and waits for the replies.
    async fn hello(&mut self, h: &Hello<'_>) -> Result<(), ClientErr> {
        let mut payload = Vec::new();
        match self.format {
            WireFormat::Json => {
                let mut connect = json!({"name": "gyre-bench"});
                if !h.token.is_empty() {
                    connect["token"] = json!(h.token);
                }
                payload.extend_from_slice(json!({"id": 1, "connect": connect}).to_string().as_bytes());
                if let Some(ch) = h.channel {
                    payload.push(b'\n');
                    payload.extend_from_slice(json!({"id": 2, "subscribe": {"channel": ch}}).to_string().as_bytes());
                }
            }
            WireFormat::Protobuf => {
                let connect = proto::ConnectRequest {
                    token: h.token.to_string(),
                    name: "gyre-bench".into(),
                    ..Default::default()
                };
                let cmd = proto::Command { id: 1, connect: Some(connect), ..Default::default() };
                cmd.encode_length_delimited(&mut payload).expect("Vec grows");
                if let Some(ch) = h.channel {
                    let sub = proto::SubscribeRequest { channel: ch.to_string(), ..Default::default() };
                    let cmd = proto::Command { id: 2, subscribe: Some(sub), ..Default::default() };
                    cmd.encode_length_delimited(&mut payload).expect("Vec grows");
                }
            }
        }
        self.send(&payload).await?;
        let want = if h.channel.is_some() { 2 } else { 1 };
        let mut got = 0;
        while got < want {
            let data = match self.next().await? {
                Some(d) => d,
                None => continue,
            };
            for r in replies(self.format, &data) {
                match r {
                    Reply::Ping => self.pong().await?,
                    Reply::Answer { id, error: Some(e) } => {
                        return Err(error_reply(if id == 1 { "connect" } else { "subscribe" }, &e));
                    }
                    Reply::Answer { id, error: None } if id == 1 || id == 2 => got += 1,
                    Reply::Disconnected(code, reason) => return Err(ClientErr::Closed(code, reason)),
                    _ => {}
                }
            }
        }
        Ok(())
    }

    /// Reads pushes until the connection ends; returns why.
    pub async fn run(&mut self, local: &Local, track: &RefCell<Track>) -> ClientErr {
        loop {
            let data = match self.scan_front(local, track) {
                Front::More => {
                    if let Err(e) = self.conn.fill_some("websocket").await {
                        return e;
                    }
                    continue;
                }
                // Its publications are counted; the rest needs a look.
                Front::Replies(data) => data,
                Front::Slow => {
                    let data = match self.next().await {
                        Ok(Some(d)) => d,
                        Ok(None) => continue,
                        Err(e) => return e,
                    };
                    let found = local.deliver(&mut track.borrow_mut(), &data);
                    if only_publications(self.format, &data, found) {
                        continue;
                    }
                    data
                }
            };
            if let Err(e) = self.answer(&data).await {
                return e;
            }
        }
    }

    /// The receive fast path: counts the complete, unfragmented data frames at the front of
    /// the read buffer where they lie — no copy, no allocation, no UTF-8 check (payloads are
    /// found by their marker), one clock read and one counter update per read — and consumes
    /// them. It stops at an incomplete frame, at a frame the decoder must see (control frames,
    /// fragments, anything unusual), and after a frame that held more than publications.
    fn scan_front(&mut self, local: &Local, track: &RefCell<Track>) -> Front {
        let mut track = track.borrow_mut();
        let mut unborrowed = Some(&mut *track);
        let mut batch = None;
        let buf = &self.conn.buf[..];
        let mut pos = 0;
        let front = loop {
            let rest = &buf[pos..];
            let Some(h) = FrameHead::parse(rest) else {
                break Front::More;
            };
            if !h.plain_data() {
                break Front::Slow;
            }
            let Some(frame) = rest.get(..h.header_len + h.payload_len) else {
                break Front::More;
            };
            let payload = &frame[h.header_len..];
            if let Some(t) = unborrowed.take() {
                batch = Some(local.batch(t));
            }
            let found = batch.as_mut().map_or(0, |b| b.scan(payload));
            pos += frame.len();
            if !only_publications(self.format, payload, found) {
                break Front::Replies(Bytes::copy_from_slice(payload));
            }
        };
        drop(batch);
        self.conn.buf.advance(pos);
        front
    }

    /// The next data message; control frames are handled here (`None` after one).
    pub async fn next(&mut self) -> Result<Option<Bytes>, ClientErr> {
        loop {
            match self.dec.decode(&mut self.conn.buf) {
                Ok(Some(Message::Text(b) | Message::Binary(b))) => return Ok(Some(b)),
                Ok(Some(Message::Ping(p))) => {
                    self.frame(OpCode::Pong, &p).await?;
                    return Ok(None);
                }
                Ok(Some(Message::Pong(_))) => return Ok(None),
                Ok(Some(Message::Close(c))) => {
                    let (code, reason) = c.unwrap_or((1005, String::new()));
                    return Err(ClientErr::Closed(code, reason));
                }
                Ok(None) => self.conn.fill_some("websocket").await?,
                Err(e) => return Err(ClientErr::io("websocket", e)),
            }
        }
    }

    /// Goes through the replies in `data` once connected: pings are answered (a
    /// unidirectional connection's need no answer), an error or a disconnect ends the client.
    async fn answer(&mut self, data: &[u8]) -> Result<(), ClientErr> {
        for r in replies(self.format, data) {
            match r {
                Reply::Ping if self.uni => {}
                Reply::Ping => self.pong().await?,
                r => r.outcome()?,
            }
        }
        Ok(())
    }

    /// Answers a server ping: `{}` in JSON, an empty command (length 0) in protobuf.
    pub async fn pong(&mut self) -> Result<(), ClientErr> {
        match self.format {
            WireFormat::Json => self.send(b"{}").await,
            WireFormat::Protobuf => self.send(&[0]).await,
        }
    }

    pub async fn send(&mut self, payload: &[u8]) -> Result<(), ClientErr> {
        let op = match self.format {
            WireFormat::Json => OpCode::Text,
            WireFormat::Protobuf => OpCode::Binary,
        };
        self.frame(op, payload).await
    }

    async fn frame(&mut self, op: OpCode, payload: &[u8]) -> Result<(), ClientErr> {
        let mut out = std::mem::take(&mut self.out);
        out.clear();
        encode_client_frame(op, payload, self.mask, &mut out);
        let out = self.write(out).await?;
        self.out = out;
        Ok(())
    }

    async fn write(&mut self, buf: Vec<u8>) -> Result<Vec<u8>, ClientErr> {
        let (res, buf) = self.conn.rd.write_all(buf).await;
        res.map_err(|e| ClientErr::io("websocket write", e))?;
        Ok(buf)
    }
}

/// What the receive loop does next with the front of the read buffer.
enum Front {
    /// No complete frame there: read more.
    More,
    /// A frame for the decoder ([`WsClient::next`]).
    Slow,
    /// A data frame, consumed, whose publications are counted but which held other messages.
    Replies(Bytes),
}

/// The header of a frame from the server, read without consuming it.
struct FrameHead {
    fin: bool,
    /// The opcode bits; `None` when reserved bits or a mask are set (the decoder rejects it).
    op: Option<u8>,
    header_len: usize,
    payload_len: usize,
}

impl FrameHead {
    /// `None` until the whole header is in `b`.
    fn parse(b: &[u8]) -> Option<FrameHead> {
        let (b0, b1) = (*b.first()?, *b.get(1)?);
        let (payload_len, header_len) = match b1 & 0x7F {
            126 => (u16::from_be_bytes([*b.get(2)?, *b.get(3)?]) as u64, 4),
            127 => (u64::from_be_bytes(b.get(2..10)?.try_into().ok()?), 10),
            n => (n as u64, 2),
        };
        let op = (b0 & 0x70 == 0 && b1 & 0x80 == 0).then_some(b0 & 0x0F);
        Some(FrameHead { fin: b0 & 0x80 != 0, op, header_len, payload_len: payload_len.min(u32::MAX as u64) as usize })
    }

    /// A whole text or binary message of an acceptable size.
    fn plain_data(&self) -> bool {
        self.fin && matches!(self.op, Some(0x1 | 0x2)) && self.payload_len <= MAX_MESSAGE
    }
}

/// A refusal at connect, with what to do about it where the code tells.
pub fn refused(e: ClientErr, no_token: bool) -> ClientErr {
    match e {
        ClientErr::Closed(code @ (3500 | 3501 | 3507), reason) => {
            let hint = match (code, no_token) {
                (3500, _) => " (check --token / --hmac-secret against client.token.hmac_secret_key)",
                (3501, true) => {
                    " (the server wants a token: pass --token or --hmac-secret, or allow anonymous connects)"
                }
                _ => "",
            };
            ClientErr::Rejected(format!("connect refused with code {code} ({reason}){hint}"))
        }
        e => e,
    }
}

/// The connect request of a unidirectional client, as JSON.
pub fn connect_json(token: &str) -> String {
    let mut connect = json!({"name": "gyre-bench"});
    if !token.is_empty() {
        connect["token"] = json!(token);
    }
    connect.to_string()
}

/// Checks the first message of a unidirectional stream: the connect push, whose `subs` must
/// hold `channel` (the token's `channels` claim subscribes it); a disconnect push there is
/// the refusal ([`ClientErr::Closed`]).
pub fn uni_connected(msg: &[u8], channel: Option<&str>) -> Result<(), ClientErr> {
    let what = || String::from_utf8_lossy(&msg[..msg.len().min(200)]).into_owned();
    let v: Value = serde_json::from_slice(msg)
        .map_err(|_| ClientErr::Io(format!("the first message is not a JSON push: {}", what())))?;
    if let Reply::Disconnected(code, reason) = json_reply(msg) {
        return Err(ClientErr::Closed(code, reason));
    }
    let Some(c) = v.get("connect") else {
        return Err(ClientErr::Io(format!("expected the connect push first, got {}", what())));
    };
    match channel {
        Some(ch) if c.get("subs").and_then(|s| s.get(ch)).is_none() => Err(ClientErr::Rejected(format!(
            "the connect push lists no subscription to {ch}: unidirectional clients are subscribed by the \
             token's channels claim (pass --hmac-secret, or a --token whose claim names the channel)"
        ))),
        _ => Ok(()),
    }
}

/// What the connect/subscribe/publish error means for the person running the tool.
pub fn hint(what: &str, code: u32) -> &'static str {
    match (what, code) {
        ("connect", 101) => {
            " (pass --token or --hmac-secret, enable client.insecure / anonymous connect, or the connect proxy)"
        }
        ("subscribe", 103) => " (enable allow_subscribe_for_client for the channel's namespace, or client.insecure)",
        ("publish", 103) => {
            " (enable allow_publish_for_client or publish_proxy_enabled for the channel's namespace, or client.insecure)"
        }
        (_, 102) => " (the channel's namespace is not configured)",
        _ => "",
    }
}

/// An error reply (`"<code> <message>"`, as [`Reply::Answer`] holds it) to `what`.
pub fn error_reply(what: &'static str, e: &str) -> ClientErr {
    let (code, message) = e.split_once(' ').unwrap_or((e, ""));
    ClientErr::Refused { what, code: code.parse().unwrap_or(0), message: message.to_string() }
}

/// A message of a frame that is not a publication, as far as the client cares.
#[derive(Debug, PartialEq, Eq)]
pub enum Reply {
    Ping,
    Answer {
        id: u32,
        error: Option<String>,
    },
    Unsubscribed(u32, String),
    /// A disconnect push: the server is ending the connection with this code.
    Disconnected(u16, String),
    Other,
}

impl Reply {
    /// Whether the client goes on after this message (pings are answered by the caller).
    pub fn outcome(self) -> Result<(), ClientErr> {
        match self {
            Reply::Answer { error: Some(e), .. } => Err(ClientErr::Io(format!("error reply: {e}"))),
            Reply::Unsubscribed(code, reason) => {
                Err(ClientErr::Io(format!("unsubscribed by the server: {code} {reason}")))
            }
            Reply::Disconnected(code, reason) => Err(ClientErr::Closed(code, reason)),
            _ => Ok(()),
        }
    }
}

/// Whether a frame in which `found` payloads were found holds nothing else. The usual frame
/// holds one publication: then one search for a line break answers (cheaper than counting).
fn only_publications(format: WireFormat, data: &[u8], found: usize) -> bool {
    match (format, found) {
        (_, 0) => false,
        (WireFormat::Json, 1) => memchr::memchr(b'\n', data).is_none(),
        _ => found == count_messages(format, data),
    }
}

/// Messages in a frame: `\n`-separated JSON objects, or varint-length-prefixed protobufs.
fn count_messages(format: WireFormat, data: &[u8]) -> usize {
    match format {
        WireFormat::Json => memchr::memchr_iter(b'\n', data).count() + 1,
        WireFormat::Protobuf => pb_messages(data).count(),
    }
}

/// The varint-length-prefixed messages of a protobuf frame (a truncated last one is dropped).
pub fn pb_messages(mut data: &[u8]) -> impl Iterator<Item = &[u8]> {
    std::iter::from_fn(move || {
        if data.is_empty() {
            return None;
        }
        let len = prost::encoding::decode_varint(&mut data).ok()? as usize;
        if len > data.len() {
            data = &[];
            return None;
        }
        let (msg, rest) = data.split_at(len);
        data = rest;
        Some(msg)
    })
}

/// The non-publication messages of a frame.
pub fn replies(format: WireFormat, data: &[u8]) -> Vec<Reply> {
    match format {
        WireFormat::Json => data
            .split(|&b| b == b'\n')
            .filter(|l| !l.is_empty() && memchr::memmem::find(l, MARK).is_none())
            .map(json_reply)
            .collect(),
        WireFormat::Protobuf => {
            pb_messages(data).filter(|m| memchr::memmem::find(m, MARK).is_none()).map(pb_reply).collect()
        }
    }
}

/// A JSON reply, or a bare push of the unidirectional transports.
pub fn json_reply(line: &[u8]) -> Reply {
    let trimmed = line.trim_ascii();
    if trimmed == b"{}" {
        return Reply::Ping;
    }
    let Ok(v) = serde_json::from_slice::<Value>(trimmed) else {
        return Reply::Other;
    };
    // Pushes come wrapped in replies (`{"push":{...}}`), bare on unidirectional transports.
    let push = match v.get("push") {
        Some(p) => p,
        None if v.get("id").is_none() => &v,
        None => &Value::Null,
    };
    let text = |x: &Value| x["reason"].as_str().unwrap_or("").to_string();
    if let Some(u) = push.get("unsubscribe") {
        return Reply::Unsubscribed(u["code"].as_u64().unwrap_or(0) as u32, text(u));
    }
    if let Some(d) = push.get("disconnect") {
        return Reply::Disconnected(d["code"].as_u64().unwrap_or(0) as u16, text(d));
    }
    let id = v["id"].as_u64().unwrap_or(0) as u32;
    if id == 0 {
        return Reply::Other;
    }
    let error = v.get("error").map(|e| format!("{} {}", e["code"], e["message"].as_str().unwrap_or("")));
    Reply::Answer { id, error }
}

pub fn pb_reply(msg: &[u8]) -> Reply {
    if msg.is_empty() {
        return Reply::Ping;
    }
    let Ok(r) = proto::Reply::decode(msg) else {
        return Reply::Other;
    };
    if let Some(u) = r.push.as_ref().and_then(|p| p.unsubscribe.as_ref()) {
        return Reply::Unsubscribed(u.code, u.reason.clone());
    }
    if let Some(d) = r.push.as_ref().and_then(|p| p.disconnect.as_ref()) {
        return Reply::Disconnected(d.code as u16, d.reason.clone());
    }
    if r.id == 0 {
        return Reply::Other;
    }
    Reply::Answer { id: r.id, error: r.error.map(|e| format!("{} {}", e.code, e.message)) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_frame_heads_in_place() {
        let mut f = Vec::new();
        gyre::wire::ws::encode_frame(OpCode::Text, &[b'x'; 300], &mut f);
        let h = FrameHead::parse(&f).unwrap();
        assert_eq!((h.header_len, h.payload_len, h.plain_data()), (4, 300, true));
        assert!(FrameHead::parse(&f[..3]).is_none(), "extended length incomplete");
        let mut ping = Vec::new();
        gyre::wire::ws::encode_frame(OpCode::Ping, b"", &mut ping);
        assert!(!FrameHead::parse(&ping).unwrap().plain_data());
        // Not final, reserved bit, masked: all left to the decoder.
        for (b0, b1) in [(0x01, 0x05), (0xC1, 0x05), (0x81, 0x85)] {
            assert!(!FrameHead::parse(&[b0, b1]).unwrap().plain_data(), "{b0:x} {b1:x}");
        }
        let mut huge = vec![0x82, 127];
        huge.extend_from_slice(&(u64::MAX >> 1).to_be_bytes());
        assert!(!FrameHead::parse(&huge).unwrap().plain_data());
    }

    #[test]
    fn classifies_json_messages() {
        let frame = b"{}\n{\"id\":1,\"connect\":{\"client\":\"x\"}}\n{\"id\":2,\"error\":{\"code\":103,\"message\":\"permission denied\"}}\n{\"push\":{\"channel\":\"c\",\"unsubscribe\":{\"code\":2000,\"reason\":\"server unsubscribe\"}}}";
        let r = replies(WireFormat::Json, frame);
        assert_eq!(
            r,
            vec![
                Reply::Ping,
                Reply::Answer { id: 1, error: None },
                Reply::Answer { id: 2, error: Some("103 permission denied".into()) },
                Reply::Unsubscribed(2000, "server unsubscribe".into()),
            ]
        );
        assert_eq!(count_messages(WireFormat::Json, frame), 4);
        let publication = br#"{"push":{"channel":"c","pub":{"data":{"t":1,"p":0,"s":1}}}}"#;
        assert!(only_publications(WireFormat::Json, publication, 1));
        assert!(!only_publications(WireFormat::Json, &[&publication[..], b"\n{}"].concat(), 1));
        assert!(only_publications(WireFormat::Json, &[&publication[..], b"\n", publication].concat(), 2));
        assert!(!only_publications(WireFormat::Json, b"{}", 0));
    }

    #[test]
    fn classifies_bare_pushes_and_disconnects() {
        let r = |s: &str| json_reply(s.as_bytes());
        assert_eq!(
            r(r#"{"disconnect":{"code":3001,"reason":"shutdown"}}"#),
            Reply::Disconnected(3001, "shutdown".into())
        );
        assert_eq!(
            r(r#"{"push":{"disconnect":{"code":3500,"reason":"invalid token"}}}"#),
            Reply::Disconnected(3500, "invalid token".into())
        );
        assert_eq!(
            r(r#"{"channel":"c","unsubscribe":{"code":2000,"reason":"x"}}"#),
            Reply::Unsubscribed(2000, "x".into())
        );
        assert_eq!(r(r#"{"connect":{"client":"x","subs":{"c":{}}}}"#), Reply::Other);
        // A reply to an unsubscribe command is an answer, not an unsubscribe push.
        assert_eq!(r(r#"{"id":3,"unsubscribe":{}}"#), Reply::Answer { id: 3, error: None });
        assert!(matches!(r("{}").outcome(), Ok(())));
        assert!(matches!(
            r(r#"{"disconnect":{"code":3001,"reason":"shutdown"}}"#).outcome(),
            Err(ClientErr::Closed(3001, _))
        ));
    }

    #[test]
    fn checks_the_connect_push() {
        let push = br#"{"connect":{"client":"x","subs":{"bench-0":{}},"ping":25,"session":"s"}}"#;
        assert!(uni_connected(push, Some("bench-0")).is_ok());
        assert!(uni_connected(push, None).is_ok());
        assert!(
            matches!(uni_connected(push, Some("bench-1")), Err(ClientErr::Rejected(m)) if m.contains("channels claim"))
        );
        let refused = br#"{"disconnect":{"code":3500,"reason":"invalid token"}}"#;
        assert!(matches!(refused_err(uni_connected(refused, None)), ClientErr::Rejected(m) if m.contains("3500")));
        assert!(matches!(uni_connected(b"{}", None), Err(ClientErr::Io(m)) if m.contains("connect push")));
        assert!(matches!(uni_connected(b"nope", None), Err(ClientErr::Io(_))));
        assert_eq!(connect_json(""), r#"{"name":"gyre-bench"}"#);
    }

    fn refused_err(r: Result<(), ClientErr>) -> ClientErr {
        refused(r.unwrap_err(), false)
    }

    #[test]
    fn classifies_protobuf_messages() {
        let mut frame = vec![0u8];
        let r = proto::Reply { id: 1, connect: Some(Default::default()), ..Default::default() };
        r.encode_length_delimited(&mut frame).unwrap();
        let r = proto::Reply {
            id: 2,
            error: Some(proto::Error { code: 103, message: "permission denied".into(), temporary: false }),
            ..Default::default()
        };
        r.encode_length_delimited(&mut frame).unwrap();
        assert_eq!(count_messages(WireFormat::Protobuf, &frame), 3);
        assert_eq!(
            replies(WireFormat::Protobuf, &frame),
            vec![
                Reply::Ping,
                Reply::Answer { id: 1, error: None },
                Reply::Answer { id: 2, error: Some("103 permission denied".into()) }
            ]
        );
    }
}
