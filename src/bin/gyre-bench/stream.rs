//! The HTTP streaming clients. HTTP-streaming and SSE are bidirectional by emulation: the
//! connect command opens the stream, and later commands — the subscribe, the pongs — are
//! `/emulation` requests naming the session and node the connect reply gave; their replies
//! arrive on the stream. The unidirectional SSE and HTTP stream send a connect request and
//! receive bare pushes; the connection token's `channels` claim subscribes them.
//!
//! The stream is read as the WebSocket client reads frames: the publications are counted
//! where they lie in the read buffer ([`crate::body`] hands over runs of whole messages), and
//! only the other messages — replies, pings, disconnect pushes — are copied and looked at.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use bytes::{Buf, Bytes};
use gyre::protocol::pb::proto;
use monoio::io::AsyncWriteRentExt;
use monoio::net::TcpStream;
use prost::Message as _;
use serde_json::{json, Value};

use crate::body::{self, url_encode, Body, Msgs};
use crate::payload::Track;
use crate::stats::Local;
use crate::target::{self, ClientErr, Reader};
use crate::ws::{connect_json, error_reply, json_reply, pb_reply, refused, uni_connected, Hello, Reply};
use crate::{Transport, WireFormat};

/// Largest response head accepted.
const MAX_HEAD: usize = 16 * 1024;
/// Longest wait for the answer to an `/emulation` request.
const EMULATION_TIMEOUT: Duration = Duration::from_secs(10);

/// Where a bidirectional client's commands go after connect.
struct Emulation {
    addr: SocketAddr,
    source: Option<Ipv4Addr>,
    host: String,
    path: String,
    session: String,
    node: String,
}

/// An open (and subscribed, if asked) streaming client.
pub struct StreamClient {
    conn: Reader<TcpStream>,
    body: Body,
    msgs: Msgs,
    format: WireFormat,
    /// The name of the transport, for messages.
    what: &'static str,
    /// Bidirectional clients only.
    emu: Option<Emulation>,
    /// Messages read while opening that came after the last one it needed.
    pending: VecDeque<Bytes>,
}

impl StreamClient {
    /// Opens the stream, waits for the connect reply (or push), then subscribes through
    /// `/emulation` where the transport is bidirectional and a channel is asked for.
    pub async fn open(h: &Hello<'_>, transport: Transport, emulation_path: &str) -> Result<StreamClient, ClientErr> {
        let what = transport.name();
        let stream =
            target::connect(h.addr, h.source).await.map_err(|e| ClientErr::io(&format!("connect to {}", h.addr), e))?;
        let json = h.format == WireFormat::Json;
        let connect_cmd = || format!("{{\"id\":1,\"connect\":{}}}", connect_json(h.token));
        let (msgs, request) = match transport {
            Transport::HttpStream if json => (Msgs::Lines, post(h, "application/json", connect_cmd().as_bytes())),
            Transport::HttpStream => {
                let connect = proto::ConnectRequest {
                    token: h.token.to_string(),
                    name: "gyre-bench".into(),
                    ..Default::default()
                };
                let cmd = proto::Command { id: 1, connect: Some(connect), ..Default::default() };
                (Msgs::Varint, post(h, "application/octet-stream", &cmd.encode_length_delimited_to_vec()))
            }
            Transport::Sse => (Msgs::Sse, get(h, &connect_cmd())),
            Transport::UniSse => (Msgs::Sse, get(h, &connect_json(h.token))),
            Transport::UniHttpStream => (Msgs::Lines, post(h, "application/json", connect_json(h.token).as_bytes())),
            Transport::Websocket | Transport::UniWebsocket => {
                return Err(ClientErr::Io(format!("{what} is not an HTTP streaming transport")))
            }
        };
        let mut conn = Reader::new(stream);
        let (res, _) = conn.rd.write_all(request).await;
        res.map_err(|e| ClientErr::io(&format!("{what} request"), e))?;
        let chunked = response_head(&mut conn, what, h.path).await?;
        let mut c = StreamClient {
            conn,
            body: Body::new(msgs, chunked),
            msgs,
            format: h.format,
            what,
            emu: None,
            pending: VecDeque::new(),
        };
        let opened = if transport.is_uni() {
            let first = c.next_message().await?;
            uni_connected(&first, h.channel)
        } else {
            c.connected(h, emulation_path).await
        };
        opened.map(|()| c).map_err(|e| refused(e, h.token.is_empty()))
    }

    /// The connect reply of a bidirectional stream, then the subscription through emulation.
    async fn connected(&mut self, h: &Hello<'_>, emulation_path: &str) -> Result<(), ClientErr> {
        let (session, node) = loop {
            let msg = self.next_message().await?;
            match self.reply(&msg) {
                Reply::Answer { id: 1, error: Some(e) } => return Err(error_reply("connect", &e)),
                Reply::Answer { id: 1, error: None } => break session_and_node(self.format, &msg)?,
                Reply::Disconnected(code, reason) => return Err(ClientErr::Closed(code, reason)),
                _ => {}
            }
        };
        self.emu = Some(Emulation {
            addr: h.addr,
            source: h.source,
            host: h.host.to_string(),
            path: emulation_path.to_string(),
            session,
            node,
        });
        let Some(ch) = h.channel else { return Ok(()) };
        let subscribe = match self.format {
            WireFormat::Json => json!({"id": 2, "subscribe": {"channel": ch}}).to_string().into_bytes(),
            WireFormat::Protobuf => {
                let sub = proto::SubscribeRequest { channel: ch.to_string(), ..Default::default() };
                proto::Command { id: 2, subscribe: Some(sub), ..Default::default() }.encode_length_delimited_to_vec()
            }
        };
        self.emulate(&subscribe).await?;
        loop {
            let msg = self.next_message().await?;
            match self.reply(&msg) {
                Reply::Answer { id: 2, error: Some(e) } => return Err(error_reply("subscribe", &e)),
                Reply::Answer { id: 2, error: None } => return Ok(()),
                Reply::Ping => self.pong().await?,
                r => r.outcome()?,
            }
        }
    }

    /// The next message, read one at a time while opening (what follows stays in `pending`).
    async fn next_message(&mut self) -> Result<Bytes, ClientErr> {
        loop {
            if let Some(m) = self.pending.pop_front() {
                return Ok(m);
            }
            let (msgs, pending) = (self.msgs, &mut self.pending);
            let used = self
                .body
                .feed(&self.conn.buf, |region| {
                    pending.extend(body::messages(msgs, region).map(Bytes::copy_from_slice));
                })
                .map_err(|e| ClientErr::Io(format!("{}: {e}", self.what)))?;
            self.conn.buf.advance(used);
            if !self.pending.is_empty() {
                continue;
            }
            if self.body.done {
                return Err(ClientErr::Io(format!("{}: the server ended the stream", self.what)));
            }
            self.conn.fill_some(self.what).await?;
        }
    }

    fn reply(&self, msg: &[u8]) -> Reply {
        match self.format {
            WireFormat::Json => json_reply(msg),
            WireFormat::Protobuf => pb_reply(msg),
        }
    }

    /// Reads pushes until the stream ends; returns why.
    pub async fn run(&mut self, local: &Local, track: &RefCell<Track>) -> ClientErr {
        let mut others: Vec<Bytes> = Vec::new();
        for m in std::mem::take(&mut self.pending) {
            if local.deliver(&mut track.borrow_mut(), &m) == 0 {
                others.push(m);
            }
        }
        loop {
            let used = {
                let mut t = track.borrow_mut();
                let mut batch = local.batch(&mut t);
                let msgs = self.msgs;
                let fed = self.body.feed(&self.conn.buf, |region| {
                    for m in body::messages(msgs, region) {
                        if batch.scan(m) == 0 {
                            others.push(Bytes::copy_from_slice(m));
                        }
                    }
                });
                match fed {
                    Ok(n) => n,
                    Err(e) => return ClientErr::Io(format!("{}: {e}", self.what)),
                }
            };
            self.conn.buf.advance(used);
            for m in others.drain(..) {
                let res = match self.reply(&m) {
                    Reply::Ping => self.pong().await,
                    r => r.outcome(),
                };
                if let Err(e) = res {
                    return e;
                }
            }
            if self.body.done {
                return ClientErr::Io(format!("{}: the server ended the stream", self.what));
            }
            if let Err(e) = self.conn.fill_some(self.what).await {
                return e;
            }
        }
    }

    /// Answers a server ping of a bidirectional stream (unidirectional ones take no answer).
    async fn pong(&self) -> Result<(), ClientErr> {
        match (&self.emu, self.format) {
            (None, _) => Ok(()),
            (Some(_), WireFormat::Json) => self.emulate(b"{}").await,
            (Some(_), WireFormat::Protobuf) => self.emulate(&[0]).await,
        }
    }

    /// Sends commands (JSON lines, or varint-prefixed protobuf commands) to the session
    /// through one `/emulation` request on a connection of its own; their replies arrive on
    /// the stream.
    async fn emulate(&self, commands: &[u8]) -> Result<(), ClientErr> {
        let Some(e) = &self.emu else { return Ok(()) };
        let (content_type, body) = match self.format {
            WireFormat::Json => {
                let data = String::from_utf8_lossy(commands);
                (
                    "application/json",
                    json!({"session": e.session, "node": e.node, "data": data}).to_string().into_bytes(),
                )
            }
            WireFormat::Protobuf => {
                let req =
                    EmulationRequest { node: e.node.clone(), session: e.session.clone(), data: commands.to_vec() };
                ("application/octet-stream", req.encode_to_vec())
            }
        };
        let request = http_post(&e.path, &e.host, content_type, &body, "Connection: close\r\n");
        let exchange = async {
            let stream =
                target::connect(e.addr, e.source).await.map_err(|err| ClientErr::io("connect for /emulation", err))?;
            let mut conn = Reader::new(stream);
            let (res, _) = conn.rd.write_all(request).await;
            res.map_err(|err| ClientErr::io("emulation request", err))?;
            let (status, _) = read_head(&mut conn, "emulation").await?;
            match status {
                204 | 200 => Ok(()),
                404 => Err(ClientErr::Rejected(format!(
                    "emulation on {}: HTTP 404 (node {} unknown to the server, or no emulation endpoint there)",
                    e.path, e.node
                ))),
                s if (400..500).contains(&s) => Err(ClientErr::Rejected(format!("emulation on {}: HTTP {s}", e.path))),
                s => Err(ClientErr::Io(format!("emulation on {}: HTTP {s}", e.path))),
            }
        };
        monoio::time::timeout(EMULATION_TIMEOUT, exchange)
            .await
            .unwrap_or_else(|_| Err(ClientErr::Io("emulation request unanswered after 10 s".into())))
    }
}

/// The protobuf body of an `/emulation` request.
#[derive(Clone, PartialEq, prost::Message)]
struct EmulationRequest {
    #[prost(string, tag = "1")]
    node: String,
    #[prost(string, tag = "2")]
    session: String,
    #[prost(bytes = "vec", tag = "3")]
    data: Vec<u8>,
}

/// The session and node of a connect reply: what `/emulation` requests must name.
fn session_and_node(format: WireFormat, msg: &[u8]) -> Result<(String, String), ClientErr> {
    let (session, node) = match format {
        WireFormat::Json => {
            let v: Value = serde_json::from_slice(msg).unwrap_or_default();
            let field = |k: &str| v["connect"][k].as_str().unwrap_or("").to_string();
            (field("session"), field("node"))
        }
        WireFormat::Protobuf => {
            let c = proto::Reply::decode(msg).ok().and_then(|r| r.connect).unwrap_or_default();
            (c.session, c.node)
        }
    };
    if session.is_empty() || node.is_empty() {
        return Err(ClientErr::Rejected(
            "the connect reply names no session or node: the server does not emulate this transport".into(),
        ));
    }
    Ok((session, node))
}

fn http_post(path: &str, host: &str, content_type: &str, body: &[u8], extra: &str) -> Vec<u8> {
    let mut out = format!(
        "POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n{extra}\r\n",
        body.len()
    )
    .into_bytes();
    out.extend_from_slice(body);
    out
}

/// A streaming `POST` with `body`.
fn post(h: &Hello<'_>, content_type: &str, body: &[u8]) -> Vec<u8> {
    http_post(h.path, h.host, content_type, body, "")
}

/// An event-stream `GET` with the connect command (or request) in `cf_connect`.
fn get(h: &Hello<'_>, connect: &str) -> Vec<u8> {
    format!(
        "GET {}?cf_connect={} HTTP/1.1\r\nHost: {}\r\nAccept: text/event-stream\r\n\r\n",
        h.path,
        url_encode(connect),
        h.host
    )
    .into_bytes()
}

/// Reads a response head: its status and whether the body is chunked. The head is consumed.
async fn read_head(conn: &mut Reader<TcpStream>, what: &str) -> Result<(u16, bool), ClientErr> {
    let head_len = loop {
        if let Some(i) = memchr::memmem::find(&conn.buf, b"\r\n\r\n") {
            break i + 4;
        }
        if conn.buf.len() > MAX_HEAD {
            return Err(ClientErr::Io(format!("{what}: response head too large")));
        }
        conn.fill_some(what).await?;
    };
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut resp = httparse::Response::new(&mut headers);
    resp.parse(&conn.buf[..head_len]).map_err(|e| ClientErr::io(what, e))?;
    let chunked = resp.headers.iter().any(|x| {
        x.name.eq_ignore_ascii_case("transfer-encoding")
            && String::from_utf8_lossy(x.value).to_ascii_lowercase().contains("chunked")
    });
    let status = resp.code.unwrap_or(0);
    conn.buf.advance(head_len);
    Ok((status, chunked))
}

/// The head of a stream's response: 200 expected; whether the body is chunked.
async fn response_head(conn: &mut Reader<TcpStream>, what: &str, path: &str) -> Result<bool, ClientErr> {
    let (status, chunked) = read_head(conn, what).await?;
    match status {
        200 => Ok(chunked),
        404 | 405 => Err(ClientErr::Rejected(format!(
            "{what} on {path}: HTTP {status} (is {what}.enabled set in the server's configuration, and the path \
             right? see --transport-path)"
        ))),
        s if (400..500).contains(&s) => Err(ClientErr::Rejected(format!("{what} on {path}: HTTP {s}"))),
        s => Err(ClientErr::Io(format!("{what} on {path}: HTTP {s} instead of 200"))),
    }
}
