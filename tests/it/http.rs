//! HTTP/1.1 protocol edge cases: keep-alive, pipelining, `Expect: 100-continue`,
//! `Connection: close`, malformed input, size limits, clients that vanish mid-request.

use std::io::Write;
use std::time::{Duration, Instant};

use serde_json::json;

use crate::util::*;

const INFO: &[u8] = b"{}";

fn publish_body(channel: &str, n: u32) -> Vec<u8> {
    format!(r#"{{"channel":"{channel}","data":{n}}}"#).into_bytes()
}

#[test]
fn keep_alive_two_requests_one_connection() {
    let s = Server::start(config());
    let mut c = s.connect();
    for n in 1..=3 {
        c.send(&request("POST", "/api/publish", &publish_body("hist:k", n), &[("X-API-Key", KEY)]));
        let r = c.read_response().unwrap();
        assert_eq!(r.status, 200);
        assert!(!r.closes(), "{:?}", r.headers);
        assert_eq!(r.json()["result"]["offset"], n);
    }
    // Legacy and health on the same connection too.
    c.send(&request("POST", "/api", br#"{"id":1,"method":"info","params":{}}"#, &[("X-API-Key", KEY)]));
    assert_eq!(c.read_response().unwrap().status, 200);
    c.send(&request("GET", "/health", b"", &[]));
    let r = c.read_response().unwrap();
    assert_eq!((r.status, r.text().as_str()), (200, "{}"));
    // HTTP/1.0 defaults to close.
    let mut c = s.connect();
    c.send(b"POST /api/info HTTP/1.0\r\nX-API-Key: test-key\r\nContent-Length: 2\r\n\r\n{}");
    let r = c.read_response().unwrap();
    assert_eq!(r.status, 200);
    assert!(c.is_closed(Duration::from_secs(5)), "HTTP/1.0 without keep-alive is closed after the response");
}

#[test]
fn pipelined_requests_answered_in_order() {
    let s = Server::start(config());
    let mut c = s.connect();
    let mut all = Vec::new();
    for n in 1..=5 {
        all.extend(request("POST", "/api/publish", &publish_body("hist:pp", n), &[("X-API-Key", KEY)]));
    }
    all.extend(request("POST", "/api/history", br#"{"channel":"hist:pp","limit":-1}"#, &[("X-API-Key", KEY)]));
    all.extend(request(
        "POST",
        "/api",
        br#"{"id":9,"method":"presence_stats","params":{"channel":"hist:pp"}}"#,
        &[("X-API-Key", KEY)],
    ));
    all.extend(request("GET", "/health", b"", &[]));
    all.extend(request("GET", "/nope", b"", &[]));
    all.extend(request("POST", "/api/info", b"{}", &[("X-API-Key", KEY)]));
    c.send(&all);
    for n in 1..=5u64 {
        let r = c.read_response().unwrap();
        assert_eq!(r.json()["result"]["offset"], n, "response {n}");
    }
    let r = c.read_response().unwrap();
    assert_eq!(r.json()["result"]["publications"].as_array().map(Vec::len), Some(5), "{}", r.text());
    let r = c.read_response().unwrap();
    assert_eq!(r.text(), r#"{"id":9,"result":{"num_clients":0,"num_users":0}}"#);
    let r = c.read_response().unwrap();
    assert_eq!((r.status, r.text().as_str()), (200, "{}"));
    let r = c.read_response().unwrap();
    assert_eq!(r.status, 404);
    let r = c.read_response().unwrap();
    assert_eq!(r.status, 200);
    assert!(r.json()["result"]["nodes"].is_array());
    // Error responses to requests with a body (404, 401, 405) either keep the connection
    // in sync (Go's server drains small unread bodies) or announce `Connection: close`.
    for (path, headers) in [("/api/nope", vec![("X-API-Key", KEY)]), ("/api/info", vec![]), ("/nope", vec![])] {
        let mut c = s.connect();
        let mut both = request("POST", path, b"{\"x\":1}", &headers);
        both.extend(request("POST", "/api/info", b"{}", &[("X-API-Key", KEY)]));
        c.send(&both);
        let r = c.read_response().unwrap();
        assert!(r.status >= 400, "{path}");
        if r.closes() {
            assert!(c.is_closed(Duration::from_secs(5)), "{path}: announced close");
        } else {
            let r = c.read_response().unwrap();
            assert_eq!(r.status, 200, "{path}: next request after an error");
        }
    }
    let mut c = s.connect();
    let mut both = request("PUT", "/api/info", b"{}", &[("X-API-Key", KEY)]);
    both.extend(request("POST", "/api/info", b"{}", &[("X-API-Key", KEY)]));
    c.send(&both);
    assert_eq!(c.read_response().unwrap().status, 405);
}

/// A request whose bytes arrive in several reads (a slow client, a head split across TCP
/// segments) is parsed exactly like one that arrives at once.
#[test]
fn request_split_across_reads() {
    let s = Server::start(config());
    let body = br#"{"channel":"hist:split","data":{"x":1}}"#;
    let req = request("POST", "/api/publish", body, &[("X-API-Key", KEY)]);
    let head_len = req.len() - body.len();
    let mut offset = 0;
    for at in [3, 10, 30, 45, head_len - 3, head_len - 1, head_len, head_len + 7] {
        let mut c = s.connect();
        c.send(&req[..at]);
        std::thread::sleep(Duration::from_millis(30));
        c.send(&req[at..]);
        let r = c.read_response().unwrap();
        assert_eq!(r.status, 200, "split at byte {at}: {}", r.text());
        offset += 1;
        assert_eq!(r.json()["result"]["offset"], offset, "split at byte {at}");
    }
    // Byte by byte.
    let mut c = s.connect();
    for b in &req {
        c.send(std::slice::from_ref(b));
        std::thread::sleep(Duration::from_millis(1));
    }
    let r = c.read_response().unwrap();
    assert_eq!(r.status, 200, "byte by byte: {}", r.text());
    // A legacy chunked body split inside chunk-size lines and chunk-ending CRLFs.
    let line = publish_line(1, "nohist:split", "1");
    let mut req = chunked_head("/api", &[("X-API-Key", KEY)]);
    let head_len = req.len();
    for _ in 0..3 {
        req.extend(chunk(format!("{line}\n").as_bytes()));
    }
    req.extend_from_slice(LAST_CHUNK);
    let want = [r#"{"id":1,"result":{}}"#; 3].join("\n");
    for at in head_len + 1..head_len + 80 {
        let mut c = s.connect();
        c.send(&req[..at]);
        std::thread::sleep(Duration::from_millis(20));
        c.send(&req[at..]);
        let r = c.read_response().unwrap();
        assert_eq!((r.status, r.text()), (200, want.clone()), "chunked body split at byte {at}");
    }
}

#[test]
fn expect_100_continue() {
    let s = Server::start(config());
    for (path, body) in [
        ("/api/publish", &br#"{"channel":"hist:e","data":1}"#[..]),
        ("/api", br#"{"id":5,"method":"publish","params":{"channel":"hist:e","data":2}}"#),
    ] {
        let mut c = s.connect();
        c.stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let req = request("POST", path, body, &[("X-API-Key", KEY), ("Expect", "100-continue")]);
        c.send(&req[..req.len() - body.len()]);
        // The interim response comes before any body byte is sent.
        let interim = c.read_response().expect("100 Continue");
        assert_eq!(interim.status, 100, "{path}");
        assert!(interim.body.is_empty());
        c.send(body);
        let r = c.read_response().unwrap();
        assert_eq!(r.status, 200, "{path}: {}", r.text());
        let v = if path == "/api" { r.lines().remove(0) } else { r.json() };
        assert!(v["result"]["offset"].as_u64().is_some(), "{path}: {v}");
    }
    // Too large with Expect: refused without reading the body.
    let s = Server::start(config_with(json!({"http_api": {"max_body_size": 1000}})));
    let mut c = s.connect();
    c.send(b"POST /api/publish HTTP/1.1\r\nHost: x\r\nX-API-Key: test-key\r\nExpect: 100-continue\r\nContent-Length: 5000\r\n\r\n");
    let r = c.read_response().unwrap();
    assert_eq!(r.status, 413);
}

#[test]
fn connection_close_is_honoured() {
    let s = Server::start(config());
    for (path, body) in [("/api/info", INFO), ("/api", br#"{"method":"info","params":{}}"#), ("/health", b"")] {
        let mut c = s.connect();
        c.send(&request("POST", path, body, &[("X-API-Key", KEY), ("Connection", "close")]));
        let r = c.read_response().unwrap();
        assert_eq!(r.status, 200, "{path}");
        assert!(r.closes(), "{path}: response says Connection: close: {:?}", r.headers);
        assert!(c.is_closed(Duration::from_secs(5)), "{path}: connection closed after the response");
    }
    // Pipelined after a `Connection: close` request: not answered.
    let mut c = s.connect();
    let mut both = request("POST", "/api/info", INFO, &[("X-API-Key", KEY), ("Connection", "close")]);
    both.extend(request("POST", "/api/publish", &publish_body("hist:cc", 1), &[("X-API-Key", KEY)]));
    c.send(&both);
    assert_eq!(c.read_response().unwrap().status, 200);
    assert!(c.is_closed(Duration::from_secs(5)));
    let h = s.api("history", json!({"channel": "hist:cc", "limit": -1}));
    assert_eq!(h["result"]["offset"], 0, "a request after Connection: close must not run: {h}");
}

#[test]
fn malformed_requests_get_400_and_close() {
    let mut s = Server::start(config());
    let cases: [&[u8]; 6] = [
        b"BLAH BLAH BLAH\r\n\r\n",
        b"POST /api/info HTTP/9.9\r\n\r\n",
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03garbage\r\n\r\n",
        b"POST /api/info HTTP/1.1\r\nBad Header Line\r\n\r\n",
        b"POST /api/info HTTP/1.1\r\nContent-Length: abc\r\n\r\n",
        b"POST /api/info HTTP/1.1\r\nContent-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\n{}",
    ];
    for raw in cases {
        let mut c = s.connect();
        c.send(raw);
        let r = c.read_response().unwrap_or_else(|e| panic!("{:?}: {e}", String::from_utf8_lossy(raw)));
        assert_eq!(r.status, 400, "{:?}", String::from_utf8_lossy(raw));
        assert!(c.is_closed(Duration::from_secs(5)), "{:?}: closed after 400", String::from_utf8_lossy(raw));
    }
    // Broken chunked framing mid-body.
    let mut c = s.connect();
    c.send(&chunked_head("/api/publish", &[("X-API-Key", KEY)]));
    c.send(b"zz\r\n{}\r\n0\r\n\r\n");
    let r = c.read_response().unwrap();
    assert_eq!(r.status, 400);
    assert!(c.is_closed(Duration::from_secs(5)));
    s.assert_alive();
}

/// Framing that a proxy in front could read differently (RFC 9112: Content-Length is
/// `1*DIGIT`, a chunk size `1*HEXDIG` then an optional extension, framing lines end with
/// CRLF) is refused with 400 (501 for a transfer coding other than chunked) and the
/// connection closes; none of those requests runs, and valid framing still does.
#[test]
fn lenient_framing_is_refused() {
    let mut s = Server::start(config());
    let body = publish_body("hist:strict", 1);
    let (cl, hex) = (body.len().to_string(), format!("{:x}", body.len()));
    assert!(cl.len() == 2 && hex.len() == 2);
    let head = |framing: &str| format!("POST /api/publish HTTP/1.1\r\nHost: x\r\nX-API-Key: {KEY}\r\n{framing}\r\n");
    let with_length = |v: &str| {
        let mut r = head(&format!("Content-Length: {v}\r\n")).into_bytes();
        r.extend_from_slice(&body);
        r
    };
    let chunked = |size_line: &str, data_end: &str, last: &str| {
        let mut r = head("Transfer-Encoding: chunked\r\n").into_bytes();
        r.extend_from_slice(size_line.as_bytes());
        r.extend_from_slice(&body);
        r.extend_from_slice(data_end.as_bytes());
        r.extend_from_slice(last.as_bytes());
        r
    };
    let mut cases: Vec<(&str, Vec<u8>, u16)> = vec![
        ("Content-Length with a plus sign", with_length(&format!("+{cl}")), 400),
        ("Content-Length with a space inside", with_length(&format!("{} {}", &cl[..1], &cl[1..])), 400),
        ("Content-Length as a list", with_length(&format!("{cl}, {cl}")), 400),
        ("empty Content-Length", with_length(""), 400),
        ("chunk size with a plus sign", chunked(&format!("+{hex}\r\n"), "\r\n", "0\r\n\r\n"), 400),
        ("chunk size between spaces", chunked(&format!(" {hex} \r\n"), "\r\n", "0\r\n\r\n"), 400),
        ("chunk size with 0x", chunked(&format!("0x{hex}\r\n"), "\r\n", "0\r\n\r\n"), 400),
        ("chunk size line ended by LF", chunked(&format!("{hex}\n"), "\r\n", "0\r\n\r\n"), 400),
        ("chunk data ended by LF", chunked(&format!("{hex}\r\n"), "\n", "0\r\n\r\n"), 400),
        ("last chunk ended by LF", chunked(&format!("{hex}\r\n"), "\r\n", "0\n\r\n"), 400),
        ("trailer section ended by LF", chunked(&format!("{hex}\r\n"), "\r\n", "0\r\n\n"), 400),
        (
            "Transfer-Encoding gzip, chunked",
            {
                let mut r = head("Transfer-Encoding: gzip, chunked\r\n").into_bytes();
                r.extend(chunk(&body));
                r.extend_from_slice(LAST_CHUNK);
                r
            },
            501,
        ),
    ];
    let mut two_lengths = head(&format!("Content-Length: {cl}\r\nContent-Length: {}\r\n", body.len() + 1)).into_bytes();
    two_lengths.extend_from_slice(&body);
    cases.push(("two different Content-Lengths", two_lengths, 400));
    let bare_lf_head = String::from_utf8(with_length(&cl)).unwrap().replacen("\r\n", "\n", 1).into_bytes();
    cases.push(("a head line ended by LF", bare_lf_head, 400));
    for (what, raw, status) in cases {
        let mut c = s.connect();
        let _ = c.send_lossy(&raw);
        let r = c.read_response().unwrap_or_else(|e| panic!("{what}: {e}"));
        assert_eq!(r.status, status, "{what}: {:?}", String::from_utf8_lossy(&raw));
        assert!(c.is_closed(Duration::from_secs(5)), "{what}: closed after {status}");
    }
    let h = s.api("history", json!({"channel": "hist:strict", "limit": -1}));
    assert_eq!(h["result"]["offset"], 0, "a refused request ran: {h}");
    // Valid framing: leading zeros, a chunk extension (with whitespace before `;`), trailers.
    for raw in [
        with_length(&format!("00{cl}")),
        chunked(&format!("{hex} ;ext=\"a b\"\r\n"), "\r\n", "0\r\nX-Trailer: 1\r\n\r\n"),
    ] {
        let mut c = s.connect();
        c.send(&raw);
        let r = c.read_response().unwrap();
        assert_eq!(r.status, 200, "{:?}: {}", String::from_utf8_lossy(&raw), r.text());
    }
    let h = s.api("history", json!({"channel": "hist:strict", "limit": -1}));
    assert_eq!(h["result"]["offset"], 2, "{h}");
    s.assert_alive();
}

#[test]
fn body_size_limit() {
    let mut s = Server::start(config_with(json!({"http_api": {"max_body_size": 1000}})));
    let data = format!("\"{}\"", "x".repeat(1200));
    let body = format!(r#"{{"channel":"hist:big","data":{data}}}"#);
    // Declared length over the limit.
    let mut c = s.connect();
    let req = request("POST", "/api/publish", body.as_bytes(), &[("X-API-Key", KEY)]);
    let _ = c.send_lossy(&req);
    let r = c.read_response().unwrap();
    assert_eq!(r.status, 413);
    assert!(c.is_closed(Duration::from_secs(5)));
    // Chunked body growing over the limit.
    let mut c = s.connect();
    let mut req = chunked_head("/api/publish", &[("X-API-Key", KEY)]);
    for piece in body.as_bytes().chunks(300) {
        req.extend(chunk(piece));
    }
    req.extend_from_slice(LAST_CHUNK);
    let _ = c.send_lossy(&req);
    let r = c.read_response().unwrap();
    assert_eq!(r.status, 413);
    // A body at the limit is fine.
    let ok = format!(r#"{{"channel":"hist:big","data":"{}"}}"#, "y".repeat(1000 - 32));
    assert_eq!(ok.len(), 1000);
    let r = s.post("/api/publish", ok.as_bytes(), &[("X-API-Key", KEY)]);
    assert_eq!(r.status, 200, "{}", r.text());
    let h = s.api("history", json!({"channel": "hist:big", "limit": -1}));
    assert_eq!(h["result"]["offset"], 1, "the oversized publishes did not run: {h}");
    s.assert_alive();
}

#[test]
fn unknown_paths_and_health() {
    let s = Server::start(config());
    for path in ["/", "/nope", "/apis", "/api_x", "/healthz", "/connection/nope"] {
        let r = s.post(path, b"{}", &[("X-API-Key", KEY)]);
        assert_eq!(r.status, 404, "{path}");
    }
    for method in ["GET", "POST", "OPTIONS"] {
        let r = s.request(method, "/health", &[]);
        assert_eq!(r.status, 200, "{method} /health");
        assert_eq!(r.text(), "{}", "{method} /health");
        assert_eq!(r.header("content-type"), Some("application/json"), "{method} /health");
    }
    // Disabled health endpoint is a 404.
    let s = Server::start(config_with(json!({"health": {"enabled": false}})));
    assert_eq!(s.request("GET", "/health", &[]).status, 404);
}

/// A response to HEAD carries no body (RFC 9110 §9.3.2); Go's server drops it.
#[test]
fn head_response_has_no_body() {
    let s = Server::start(config());
    // 200 without a body; the next response on the connection must parse cleanly.
    let mut c = s.connect();
    c.send(b"HEAD /health HTTP/1.1\r\nHost: x\r\n\r\n");
    let head = c.read_head().unwrap();
    assert_eq!(head.status, 200, "HEAD /health");
    c.send(&request("GET", "/health", b"", &[]));
    let r = c.read_response().expect("response after HEAD (a body sent for HEAD would corrupt it)");
    assert_eq!((r.status, r.text().as_str()), (200, "{}"));
    let mut c = s.connect();
    c.send(b"HEAD /nope HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(c.read_head().unwrap().status, 404);
    c.send(&request("GET", "/health", b"", &[]));
    let r = c.read_response().expect("response after HEAD 404");
    assert_eq!(r.status, 200);
}

#[test]
fn client_vanishing_mid_request() {
    let mut s = Server::start(config());
    // New-style: head and part of the body, then gone.
    for _ in 0..20 {
        let mut c = s.connect();
        c.send(b"POST /api/publish HTTP/1.1\r\nHost: x\r\nX-API-Key: test-key\r\nContent-Length: 1000\r\n\r\n{\"channel\":\"hist:v\",");
        drop(c);
    }
    // Mid-head.
    for _ in 0..20 {
        let mut c = s.connect();
        c.send(b"POST /api/publish HTTP/1.1\r\nHost: x\r\nX-API-");
        drop(c);
    }
    // Legacy: a few complete lines, then a partial one, then gone (replies unread).
    for _ in 0..20 {
        let mut c = s.connect();
        let mut body = Vec::new();
        for id in 1..=50 {
            body.extend(publish_line(id, "hist:v2", "1").into_bytes());
            body.push(b'\n');
        }
        body.extend_from_slice(br#"{"id":51,"method":"pub"#);
        let mut req = chunked_head("/api", &[("X-API-Key", KEY)]);
        req.extend(chunk(&body));
        c.send(&req);
        drop(c);
    }
    // A big legacy request whose replies are never read: the server must not block forever.
    {
        let c = s.connect();
        let mut w = c.writer();
        w.write_all(&chunked_head("/api", &[("X-API-Key", KEY)])).unwrap();
        let mut body = Vec::new();
        for id in 1..=20_000 {
            body.extend(publish_line(id, "nohist:v3", "1").into_bytes());
            body.push(b'\n');
        }
        let _ = w.write_all(&chunk(&body));
        drop(w);
        drop(c);
    }
    std::thread::sleep(Duration::from_millis(200));
    // Nothing from the broken requests ran except complete legacy lines; the server works.
    let h = s.api("history", json!({"channel": "hist:v", "limit": -1}));
    assert_eq!(h["result"]["offset"], 0, "{h}");
    s.assert_alive();
    let r = s.api("publish", json!({"channel": "hist:after", "data": 1}));
    assert_eq!(r["result"]["offset"], 1);
}

#[test]
fn oversized_head_is_refused() {
    let mut s = Server::start(config());
    let mut c = s.connect();
    let mut req = b"POST /api/info HTTP/1.1\r\nHost: x\r\n".to_vec();
    for i in 0..2000 {
        req.extend(format!("X-Pad-{i}: {}\r\n", "p".repeat(20)).into_bytes());
    }
    let _ = c.send_lossy(&req);
    let r = c.read_response().unwrap();
    assert_eq!(r.status, 431, "{}", r.text());
    s.assert_alive();
}

#[test]
fn server_survives_everything_concurrently() {
    let mut s = Server::start(config());
    let port = s.port;
    let threads: Vec<_> = (0..8)
        .map(|t| {
            std::thread::spawn(move || {
                let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
                for i in 0..50u32 {
                    let mut c = Conn::new(addr);
                    match (t + i) % 4 {
                        0 => {
                            let _ = c.send_lossy(b"\x00\x01\x02\x03 garbage\r\n\r\n");
                            let _ = c.read_response();
                        }
                        1 => {
                            let _ = c.send_lossy(b"POST /api/publish HTTP/1.1\r\nContent-Length: 50\r\n\r\n{");
                        }
                        2 => {
                            c.send(&request(
                                "POST",
                                "/api/publish",
                                &publish_body("hist:conc", i),
                                &[("X-API-Key", KEY)],
                            ));
                            let r = c.read_response().unwrap();
                            assert_eq!(r.status, 200);
                        }
                        _ => {
                            c.send(&request(
                                "POST",
                                "/api",
                                br#"{"method":"info","params":{}}"#,
                                &[("X-API-Key", KEY)],
                            ));
                            let r = c.read_response().unwrap();
                            assert_eq!(r.status, 200);
                        }
                    }
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    s.assert_alive();
    let h = s.api("history", json!({"channel": "hist:conc"}));
    assert_eq!(h["result"]["offset"], 100, "{h}");
}

#[test]
fn idle_and_slow_head_timeouts() {
    let s = Server::start(config_with(json!({"http_server": {"idle_timeout": "1s", "read_header_timeout": "1s"}})));
    // A keep-alive connection that sends nothing more is closed after idle_timeout, without
    // a response.
    let mut c = s.connect();
    c.send(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n");
    let r = c.read_response().expect("first response");
    assert_eq!(r.status, 200);
    assert!(!c.is_closed(Duration::from_millis(300)), "closed before idle_timeout");
    assert!(c.is_closed(Duration::from_secs(3)), "idle connection still open after idle_timeout");
    // A head trickling in is answered 408 once read_header_timeout passed since its first byte.
    let mut c = s.connect();
    c.send(b"GET /health HTTP/1.1\r\nHo");
    let t = Instant::now();
    let r = c.read_response().expect("a 408 response");
    assert_eq!(r.status, 408, "{}", r.text());
    assert!(t.elapsed() >= Duration::from_millis(800) && t.elapsed() < Duration::from_secs(4), "{:?}", t.elapsed());
    assert!(c.is_closed(Duration::from_secs(2)));
    // Others are served meanwhile.
    assert_eq!(s.request("GET", "/health", &[]).status, 200);
}
