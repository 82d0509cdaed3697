//! Legacy `POST /api`: newline-delimited `{"id","method","params"}` commands, replies joined by
//! `\n` in request order, streamed while the body is still arriving, with bounded memory.

use std::io::Write;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::util::*;

fn lines_body(lines: &[String]) -> Vec<u8> {
    let mut body = lines.join("\n").into_bytes();
    body.push(b'\n');
    body
}

/// Sends `body` as one legacy request from a writer thread (Content-Length, or chunked in
/// pieces of the given sizes, cycled) and returns the whole response.
fn legacy_request(s: &Server, body: Vec<u8>, chunk_sizes: Option<&[usize]>) -> Response {
    let mut c = s.connect();
    let mut w = c.writer();
    let sizes = chunk_sizes.map(|s| s.to_vec());
    let writer = thread::spawn(move || {
        match sizes {
            None => {
                w.write_all(&request("POST", "/api", &body, &[("X-API-Key", KEY)]))?;
            }
            Some(sizes) => {
                w.write_all(&chunked_head("/api", &[("X-API-Key", KEY)]))?;
                let mut rest = &body[..];
                let mut i = 0;
                while !rest.is_empty() {
                    let n = sizes[i % sizes.len()].min(rest.len());
                    let mut framed = chunk(&rest[..n]);
                    if i % 7 == 3 {
                        // A chunk extension, which must be ignored.
                        let hex = format!("{n:x}");
                        framed.splice(hex.len()..hex.len(), b";ext=1".iter().copied());
                    }
                    w.write_all(&framed)?;
                    rest = &rest[n..];
                    i += 1;
                    if i % 64 == 0 {
                        // Let the server see partial input now and then.
                        thread::sleep(Duration::from_millis(1));
                    }
                }
                w.write_all(b"0\r\nX-Trailer: yes\r\n\r\n")?;
            }
        }
        Ok::<_, std::io::Error>(())
    });
    let r = c.read_response().expect("legacy response");
    writer.join().unwrap().expect("writing the request");
    r
}

/// Compares two reply bodies line by line, reporting the first difference (bodies are long).
fn assert_same_lines(got: &str, want: &str, what: &str) {
    let (g, w): (Vec<&str>, Vec<&str>) = (got.split('\n').collect(), want.split('\n').collect());
    for (i, (a, b)) in g.iter().zip(&w).enumerate() {
        assert_eq!(a, b, "{what}: reply {} differs", i + 1);
    }
    assert_eq!(g.len(), w.len(), "{what}: number of replies (last got: {:?})", g.last());
}

#[test]
fn reply_shapes_ids_and_method_forms() {
    let s = Server::start(config());
    let body = [
        r#"{"id":1,"method":"publish","params":{"channel":"hist:l","data":{"a":1}}}"#,
        r#"{"method":"publish","params":{"channel":"nohist:l","data":1}}"#,
        r#"{"id":0,"method":"publish","params":{"channel":"nohist:l","data":1}}"#,
        r#"{"id":3,"method":0,"params":{"channel":"hist:l","data":2}}"#,
        r#"{"id":4,"method":"PUBLISH","params":{"channel":"hist:l","data":3}}"#,
        r#"{"id":5,"method":"History","params":{"channel":"hist:l","limit":2,"reverse":true}}"#,
        r#"{"id":6,"method":6,"params":{"channel":"hist:l","limit":1}}"#,
        r#"{"id":7,"method":"presence_stats","params":{"channel":"hist:l"}}"#,
        r#"{"id":8,"method":5,"params":{"channel":"hist:l"}}"#,
        r#"{"id":9,"method":"publish","params":{"channel":"nope:l","data":1}}"#,
        r#"{"id":10,"method":"rpc","params":{"method":"x"}}"#,
        r#"{"id":11,"method":99,"params":{}}"#,
        r#"{"id":12,"params":{"channel":"hist:l","data":4}}"#,
        r#"{"id":13,"method":"broadcast","params":{"channels":["hist:l","nope:z"],"data":5}}"#,
        r#"{"id":14,"method":"history_remove","params":{"channel":"nohist:l"}}"#,
        r#"{"id":15,"method":"channels","params":{}}"#,
        r#"{"id":16,"method":"presence","params":{"channel":"hist:l"}}"#,
        r#"{"id":17,"method":"publish","params":{"data":1}}"#,
        r#"{"id":4294967295,"method":"disconnect","params":{"user":"u"}}"#,
    ]
    .join("\n");
    let r = s.legacy(body.as_bytes());
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("content-type"), Some("application/json"));
    let replies = r.lines();
    assert_eq!(replies.len(), 19, "{}", r.text());
    let epoch = replies[0]["result"]["epoch"].as_str().unwrap_or_else(|| panic!("{}", r.text())).to_string();
    let expected = vec![
        json!({"id": 1, "result": {"offset": 1, "epoch": epoch}}),
        json!({"result": {}}),
        json!({"result": {}}),
        json!({"id": 3, "result": {"offset": 2, "epoch": epoch}}),
        json!({"id": 4, "result": {"offset": 3, "epoch": epoch}}),
        json!({"id": 5, "result": {"publications": [{"data": 3, "offset": 3}, {"data": 2, "offset": 2}], "epoch": epoch, "offset": 3}}),
        json!({"id": 6, "result": {"publications": [{"data": {"a": 1}, "offset": 1}], "epoch": epoch, "offset": 3}}),
        json!({"id": 7, "result": {"num_clients": 0, "num_users": 0}}),
        json!({"id": 8, "result": {"num_clients": 0, "num_users": 0}}),
        json!({"id": 9, "error": error_obj(102)}),
        json!({"id": 10, "error": error_obj(104)}),
        json!({"id": 11, "error": error_obj(104)}),
        json!({"id": 12, "result": {"offset": 4, "epoch": epoch}}),
        json!({"id": 13, "result": {"responses": [{"result": {"offset": 5, "epoch": epoch}}, {"error": error_obj(102)}]}}),
        json!({"id": 14, "error": error_obj(108)}),
        json!({"id": 15, "result": {"channels": {}}}),
        json!({"id": 16, "result": {"presence": {}}}),
        json!({"id": 17, "error": error_obj(107)}),
        json!({"id": 4294967295u32, "result": {}}),
    ];
    for (i, (got, want)) in replies.iter().zip(&expected).enumerate() {
        assert_eq!(got, want, "reply {} of {}", i + 1, r.text());
    }
    // Exact bytes: `id` first and only when non-zero, `\n` between replies, none at the end.
    let text = r.text();
    let raw: Vec<&str> = text.split('\n').collect();
    assert_eq!(raw[1], r#"{"result":{}}"#);
    assert_eq!(raw[2], r#"{"result":{}}"#);
    assert_eq!(raw[9], r#"{"id":9,"error":{"code":102,"message":"unknown channel"}}"#);
    assert_eq!(raw[18], r#"{"id":4294967295,"result":{}}"#);
}

#[test]
fn single_command_without_trailing_newline_and_blank_lines() {
    let s = Server::start(config());
    let r = s.legacy(br#"{"id":1,"method":"publish","params":{"channel":"nohist:a","data":1}}"#);
    assert_eq!((r.status, r.text().as_str()), (200, r#"{"id":1,"result":{}}"#));
    // Blank lines and CRLF line ends are skipped.
    let r = s.legacy(b"\n\r\n{\"id\":1,\"method\":\"info\",\"params\":{}}\r\n\n  \n{\"id\":2,\"method\":\"publish\",\"params\":{\"channel\":\"nohist:a\",\"data\":1}}\r\n");
    assert_eq!(r.status, 200);
    let replies = r.lines();
    assert_eq!(replies.len(), 2, "{}", r.text());
    assert_eq!(replies[0]["id"], 1);
    assert_eq!(replies[1], json!({"id": 2, "result": {}}));
}

#[test]
fn empty_body_is_400() {
    let s = Server::start(config());
    let r = s.legacy(b"");
    assert_eq!(r.status, 400);
    assert_eq!(r.text().trim_end(), "Bad Request");
    // The server is fine afterwards.
    let r = s.legacy(br#"{"method":"info","params":{}}"#);
    assert_eq!(r.status, 200);
}

#[test]
fn wrong_types_are_107_for_that_line() {
    let s = Server::start(config());
    let body = [
        r#"{"id":1,"method":"publish","params":{"channel":5,"data":1}}"#,
        r#"{"id":2,"method":"publish","params":[1]}"#,
        r#"{"id":3,"method":"publish","params":"x"}"#,
        r#"{"id":4,"method":"history","params":{"channel":"hist:w","limit":"ten"}}"#,
        r#"{"id":5,"method":"publish","params":{"channel":"hist:w","data":1,"skip_history":"no"}}"#,
        r#"{"id":6,"method":"publish","params":{"channel":"hist:w","data":1}}"#,
    ]
    .join("\n");
    let r = s.legacy(body.as_bytes());
    assert_eq!(r.status, 200, "{}", r.text());
    let replies = r.lines();
    assert_eq!(replies.len(), 6, "{}", r.text());
    for (i, reply) in replies[..5].iter().enumerate() {
        assert_eq!(reply, &json!({"id": i + 1, "error": error_obj(107)}), "line {}", i + 1);
    }
    assert_eq!(replies[5]["result"]["offset"], 1, "{}", r.text());
    // Envelopes of the wrong shape: the whole line is undecodable (no id to echo).
    let body = [
        r#"{"id":"x","method":"publish","params":{"channel":"hist:w","data":1}}"#,
        r#""str""#,
        r#"42"#,
        r#"{"id":-1,"method":"publish","params":{"channel":"hist:w","data":1}}"#,
        r#"{"id":7,"method":true,"params":{}}"#,
        r#"{"id":8,"method":"publish","params":{"channel":"hist:w","data":2}}"#,
    ]
    .join("\n");
    let r = s.legacy(body.as_bytes());
    assert_eq!(r.status, 200, "{}", r.text());
    let replies = r.lines();
    assert_eq!(replies.len(), 6, "{}", r.text());
    for (i, reply) in replies[..4].iter().enumerate() {
        assert_eq!(reply, &api_error(107), "line {}", i + 1);
    }
    assert_eq!(replies[4]["error"], error_obj(107), "method of the wrong type: {}", r.text());
    assert_eq!(replies[5]["result"]["offset"], 2, "{}", r.text());
}

/// A line holding a JSON array is not a command envelope: 107 for that line, and it must not
/// be read positionally as `[id, method, params]`.
#[test]
fn array_line_is_not_a_command() {
    let s = Server::start(config());
    let body = [
        r#"[1,2]"#,
        r#"[7,"publish",{"channel":"hist:arr","data":1}]"#,
        r#"{"id":8,"method":"publish","params":["hist:arr",{"x":1}]}"#,
        r#"{"id":9,"method":"history","params":{"channel":"hist:arr"}}"#,
    ]
    .join("\n");
    let r = s.legacy(body.as_bytes());
    assert_eq!(r.status, 200, "{}", r.text());
    let replies = r.lines();
    assert_eq!(replies.len(), 4, "{}", r.text());
    assert_eq!(replies[0], api_error(107), "{}", r.text());
    assert_eq!(replies[1], api_error(107), "{}", r.text());
    assert_eq!(replies[2], json!({"id": 8, "error": error_obj(107)}), "{}", r.text());
    assert_eq!(replies[3]["result"]["offset"], 0, "an array line ran a command: {}", r.text());
}

#[test]
fn pipeline_of_10000_in_order() {
    let s = Server::start(config());
    const N: u32 = 10_000;
    const CHANNELS: u32 = 7;
    let lines: Vec<String> =
        (1..=N).map(|id| publish_line(id, &format!("hist:p{}", id % CHANNELS), &format!("{{\"n\":{id}}}"))).collect();
    let mut c = s.connect();
    let mut w = c.writer();
    let body = lines_body(&lines);
    let writer = thread::spawn(move || w.write_all(&request("POST", "/api", &body, &[("X-API-Key", KEY)])));
    let mut stream = ReplyStream::start(&mut c);
    let mut last: Vec<(u64, String)> = vec![(0, String::new()); CHANNELS as usize];
    for id in 1..=N {
        let reply = stream.next_json().unwrap_or_else(|| panic!("stream ended after {} replies", id - 1));
        assert_eq!(reply["id"], id, "replies out of order: {reply}");
        let ch = (id % CHANNELS) as usize;
        let offset = reply["result"]["offset"].as_u64().unwrap_or_else(|| panic!("{reply}"));
        let epoch = reply["result"]["epoch"].as_str().unwrap().to_string();
        assert!(offset > last[ch].0, "offset not increasing in channel {ch}: {reply} after {}", last[ch].0);
        if last[ch].0 > 0 {
            assert_eq!(epoch, last[ch].1, "epoch changed in channel {ch}");
        }
        last[ch] = (offset, epoch);
    }
    assert!(stream.next_line().is_none(), "more replies than commands");
    writer.join().unwrap().unwrap();
    // Nothing was lost: every channel's top offset is its number of publishes.
    for ch in 0..CHANNELS {
        let count = (1..=N).filter(|id| id % CHANNELS == ch).count() as u64;
        let h = s.api("history", json!({"channel": format!("hist:p{ch}")}));
        assert_eq!(h["result"]["offset"], count, "channel {ch}");
        assert_eq!(last[ch as usize].0, count);
    }
}

#[test]
fn broken_json_line_in_the_middle() {
    let s = Server::start(config());
    const N: u32 = 10_000;
    let lines: Vec<String> = (1..=N)
        .map(|id| {
            if id == 5_000 {
                format!(r#"{{"id":{id},"method":"publish","params":{{"channel":"nohist:b","data":{{"#)
            } else {
                publish_line(id, "nohist:b", "1")
            }
        })
        .collect();
    let r = legacy_request(&s, lines_body(&lines), None);
    assert_eq!(r.status, 200);
    let text = r.text();
    let raw: Vec<&str> = text.split('\n').collect();
    assert_eq!(raw.len(), N as usize);
    for (i, line) in raw.iter().enumerate() {
        let id = i as u32 + 1;
        if id == 5_000 {
            assert_eq!(*line, r#"{"error":{"code":107,"message":"bad request"}}"#);
        } else {
            assert_eq!(*line, format!(r#"{{"id":{id},"result":{{}}}}"#));
        }
    }
}

#[test]
fn invalid_utf8_in_a_line() {
    let s = Server::start(config());
    let mut body = Vec::new();
    body.extend_from_slice(publish_line(1, "hist:u", "1").as_bytes());
    body.extend_from_slice(
        b"\n{\"id\":2,\"method\":\"publish\",\"params\":{\"channel\":\"hist:u\",\"data\":\"\xff\xfe\xc3\"}}\n",
    );
    body.extend_from_slice(b"{\"id\":3,\"method\":\"publish\",\"params\":{\"channel\":\"hist:\xe9\",\"data\":1}}\n");
    body.extend_from_slice(publish_line(4, "hist:u", "2").as_bytes());
    let r = s.legacy(&body);
    assert_eq!(r.status, 200);
    let replies = r.lines();
    assert_eq!(replies.len(), 4, "{}", r.text());
    assert_eq!(replies[0]["result"]["offset"], 1);
    for (i, reply) in replies[1..3].iter().enumerate() {
        assert_eq!(reply["error"], error_obj(107), "line {}: {reply}", i + 2);
        assert!(reply.get("id").is_none() || reply["id"] == i + 2, "{reply}");
    }
    assert_eq!(replies[3]["result"]["offset"], 2, "{}", r.text());
    let h = s.api("history", json!({"channel": "hist:u", "limit": -1}));
    assert_eq!(h["result"]["publications"].as_array().unwrap().len(), 2);
}

#[test]
fn command_size_limit() {
    let s = Server::start(config_with(json!({"http_api": {"max_command_size": 1024}})));
    let big = publish_line(2, "nohist:s", &format!("\"{}\"", "x".repeat(2000)));
    let fits = publish_line(4, "nohist:s", &format!("\"{}\"", "y".repeat(900)));
    assert!(fits.len() <= 1024);
    let lines = vec![
        publish_line(1, "nohist:s", "1"),
        big.clone(),
        publish_line(3, "nohist:s", "1"),
        fits,
        big.clone(),
        publish_line(6, "nohist:s", "1"),
    ];
    let want = [
        r#"{"id":1,"result":{}}"#,
        r#"{"error":{"code":107,"message":"bad request"}}"#,
        r#"{"id":3,"result":{}}"#,
        r#"{"id":4,"result":{}}"#,
        r#"{"error":{"code":107,"message":"bad request"}}"#,
        r#"{"id":6,"result":{}}"#,
    ]
    .join("\n");
    // Content-Length, and chunked with the long line split across many chunks.
    for sizes in [None, Some(&[100usize, 7, 333][..])] {
        let r = legacy_request(&s, lines_body(&lines), sizes);
        assert_eq!(r.status, 200, "{sizes:?}");
        assert_eq!(r.text(), want, "{sizes:?}");
    }
    // As the first line: the whole request is refused.
    let mut c = s.connect();
    let body = lines_body(&[big, publish_line(2, "nohist:s", "1")]);
    c.send(&request("POST", "/api", &body, &[("X-API-Key", KEY)]));
    let r = c.read_response().expect("413 response");
    assert_eq!(r.status, 413, "{}", r.text());
    assert!(r.closes(), "413 closes the connection: {:?}", r.headers);
    let mut s = s;
    s.assert_alive();
}

#[test]
fn chunked_body_same_replies_as_content_length() {
    let s = Server::start(config());
    // Commands with deterministic replies (no epochs).
    let mut lines = Vec::new();
    for i in 1..=400u32 {
        lines.push(match i % 6 {
            0 => publish_line(i, "nohist:c", &format!("{{\"i\":{i},\"s\":\"{}\"}}", "z".repeat(i as usize % 50))),
            1 => {
                format!(r#"{{"id":{i},"method":"presence_stats","params":{{"channel":"hist:c"}}}}"#)
            }
            2 => publish_line(i, "nope:c", "1"),
            3 => format!(r#"{{"id":{i},"method":"publish","params":{{"#),
            4 => format!(r#"{{"id":{i},"method":"history","params":{{"channel":"nohist:c"}}}}"#),
            _ => format!(r#"{{"id":{i},"method":"rpc","params":{{"method":"m"}}}}"#),
        });
    }
    let body = lines_body(&lines);
    let plain = legacy_request(&s, body.clone(), None);
    assert_eq!(plain.status, 200);
    assert_eq!(plain.lines().len(), 400);
    for sizes in [&[1usize][..], &[2, 3, 5, 7, 11, 13, 17, 19, 23], &[4096], &[61, 1, 127]] {
        let chunked = legacy_request(&s, body.clone(), Some(sizes));
        assert_eq!(chunked.status, 200, "{sizes:?}");
        assert_same_lines(&chunked.text(), &plain.text(), &format!("chunk sizes {sizes:?}"));
    }
}

#[test]
fn replies_start_before_the_body_ends() {
    let s = Server::start(config());
    let lines: Vec<String> = (1..=200).map(|id| publish_line(id, "hist:early", &id.to_string())).collect();
    let body = lines_body(&lines);
    let first_half_len: usize = lines[..100].iter().map(|l| l.len() + 1).sum();
    let mut c = s.connect();
    // A server that waits for the whole body fails this test after 10 s instead of hanging.
    c.stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut w = c.writer();
    let mut head = request("POST", "/api", &body, &[("X-API-Key", KEY)]);
    head.truncate(head.len() - body.len());
    w.write_all(&head).unwrap();
    w.write_all(&body[..first_half_len]).unwrap();
    let mut stream = ReplyStream::start(&mut c);
    let mut epoch = String::new();
    for id in 1..=99u64 {
        let reply = stream.next_json().expect("reply before the body ended");
        assert_eq!(reply["id"], id, "{reply}");
        assert_eq!(reply["result"]["offset"], id, "{reply}");
        epoch = reply["result"]["epoch"].as_str().unwrap().to_string();
    }
    // The 100th reply has arrived too (it is not followed by `\n` until the 101st).
    let hundredth = stream.wait_pending_json();
    assert_eq!(hundredth, json!({"id": 100, "result": {"offset": 100, "epoch": epoch}}));
    assert!(!stream.is_done());
    // Now the rest of the body.
    w.write_all(&body[first_half_len..]).unwrap();
    assert_eq!(stream.next_json().unwrap()["id"], 100);
    for id in 101..=200u64 {
        let reply = stream.next_json().expect("reply");
        assert_eq!(reply, json!({"id": id, "result": {"offset": id, "epoch": epoch}}));
    }
    assert!(stream.next_line().is_none());
    // The connection is still usable.
    c.send(&request(
        "POST",
        "/api",
        br#"{"id":1,"method":"presence_stats","params":{"channel":"hist:early"}}"#,
        &[("X-API-Key", KEY)],
    ));
    let r = c.read_response().unwrap();
    assert_eq!(r.text(), r#"{"id":1,"result":{"num_clients":0,"num_users":0}}"#);
}

/// One request of 1,000,000 publishes, generated while it is sent (chunked), answered in
/// order while a reader consumes the replies; the server's memory stays bounded.
///
/// Bound: the server keeps at most 4096 commands in flight and 1 MiB of unsent output per
/// connection, a 64 KiB read buffer, and 8 channels × 10 retained publications. Nothing of
/// the body or of the replies may accumulate, so RSS must stay near its idle value: peak RSS
/// must be below 200 MB and grow by less than 64 MB over the idle RSS (a leak of even 64 bytes
/// per command would exceed that).
#[test]
fn million_commands_in_one_request() {
    const N: u32 = 1_000_000;
    const CHANNELS: u32 = 8;
    let started = Instant::now();
    let s = Server::start(config());
    // Warm up so idle RSS includes the per-worker state touched by any request.
    s.api("publish", json!({"channel": "warm", "data": 1}));
    let idle_kb = s.rss_kb();
    assert!(idle_kb > 0, "cannot read /proc/{}/status", s.pid());

    let mut c = s.connect();
    let mut w = c.writer();
    let writer = thread::spawn(move || -> std::io::Result<()> {
        w.write_all(&chunked_head("/api", &[("X-API-Key", KEY)]))?;
        let mut buf: Vec<u8> = Vec::with_capacity(80 * 1024);
        for id in 1..=N {
            write!(
                buf,
                r#"{{"id":{id},"method":"publish","params":{{"channel":"big{}","data":{{"n":{id}}}}}}}"#,
                id % CHANNELS
            )?;
            buf.push(b'\n');
            if buf.len() >= 64 * 1024 || id == N {
                w.write_all(&chunk(&buf))?;
                buf.clear();
            }
        }
        w.write_all(LAST_CHUNK)
    });

    let pid = s.pid();
    let stop = Arc::new(AtomicBool::new(false));
    let sampler = {
        let stop = stop.clone();
        thread::spawn(move || {
            let mut samples = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                let kb = rss_kb(pid);
                if kb == 0 {
                    break; // the server is gone (test failed)
                }
                samples.push(kb);
                thread::sleep(Duration::from_millis(100));
            }
            samples
        })
    };

    let mut stream = ReplyStream::start(&mut c);
    let mut offsets = vec![0u64; CHANNELS as usize];
    let mut epochs = vec![String::new(); CHANNELS as usize];
    for id in 1..=N {
        let Some(line) = stream.next_line() else {
            // The server ended the response early: say how the request side fared.
            drop(stream);
            let _ = c.stream.shutdown(std::net::Shutdown::Both);
            let wrote = writer.join().unwrap();
            panic!("stream ended after {} replies; writer: {wrote:?}", id - 1);
        };
        let ch = (id % CHANNELS) as usize;
        offsets[ch] += 1;
        if epochs[ch].is_empty() {
            let v: Value = serde_json::from_slice(&line).unwrap();
            epochs[ch] = v["result"]["epoch"].as_str().unwrap_or_else(|| panic!("{v}")).to_string();
        }
        let want = format!(r#"{{"id":{id},"result":{{"offset":{},"epoch":"{}"}}}}"#, offsets[ch], epochs[ch]);
        if line != want.as_bytes() {
            panic!("reply {id}: got {:?}, want {want:?}", String::from_utf8_lossy(&line));
        }
    }
    assert!(stream.next_line().is_none(), "more replies than commands");
    let streamed = started.elapsed();
    writer.join().unwrap().expect("writing the request");
    stop.store(true, Ordering::Relaxed);
    let samples = sampler.join().unwrap();
    let after_kb = s.rss_kb();
    let peak_kb = samples.iter().copied().chain([after_kb]).max().unwrap();
    eprintln!(
        "1M commands: {:.1}s; RSS idle {} KiB, peak {} KiB, after {} KiB, {} samples",
        streamed.as_secs_f64(),
        idle_kb,
        peak_kb,
        after_kb,
        samples.len()
    );
    assert!(samples.len() >= 3, "too few RSS samples taken during the stream");
    assert!(peak_kb < 200 * 1024, "peak RSS {peak_kb} KiB ≥ 200 MB");
    assert!(peak_kb - idle_kb.min(peak_kb) < 64 * 1024, "RSS grew by {} KiB (idle {idle_kb} KiB)", peak_kb - idle_kb);
    for ch in 0..CHANNELS {
        let h = s.api("history", json!({"channel": format!("big{ch}"), "limit": -1}));
        assert_eq!(h["result"]["offset"], N as u64 / CHANNELS as u64, "channel big{ch}");
        assert_eq!(h["result"]["publications"].as_array().unwrap().len(), 10);
    }
    let mut s = s;
    s.assert_alive();
}

/// Lines that look like publishes to the quick channel scan but are not plain ones (a
/// `method` after `params`, of a single-channel command or of one that is not, a duplicate
/// key, an escaped channel name, an unknown namespace),
/// mixed with plain publishes over channels of both workers: each is answered as if it came
/// alone, and the commands of one channel run in the request's order whichever way they take.
#[test]
fn lines_the_quick_scan_misreads_are_answered_in_order() {
    misread_lines_in_order(2);
}

/// The same with one worker, where every line of the memory engine is read and run in place
/// (history, errors and publishes alike).
#[test]
fn lines_of_every_kind_run_in_place_in_order_on_one_worker() {
    misread_lines_in_order(1);
}

fn misread_lines_in_order(workers: u32) {
    let mut cfg = config();
    cfg["workers"] = json!(workers);
    let s = Server::start(cfg);
    const CHANNELS: usize = 8;
    let mut lines = Vec::new();
    let mut want = Vec::new();
    let mut count = [0u64; CHANNELS];
    let mut id = 0u32;
    for round in 0..200 {
        #[allow(clippy::needless_range_loop)]
        for ch in 0..CHANNELS {
            let name = format!("hist:q{ch}");
            id += 1;
            let line = match (round + ch) % 7 {
                0 | 1 => publish_line(id, &name, &format!(r#"{{"n":{id}}}"#)),
                // The same channel, escaped: the scan gives up, the general path takes it.
                2 => {
                    format!(r#"{{"id":{id},"method":"publish","params":{{"channel":"hist:\u0071{ch}","data":{id}}}}}"#)
                }
                3 => format!(r#"{{"id":{id},"params":{{"channel":"{name}","limit":0}},"method":"history"}}"#),
                4 => format!(r#"{{"id":{id},"params":{{"channel":"{name}","data":1,"data":2}}}}"#),
                5 => format!(r#"{{"id":{id},"params":{{"channel":"nope:{ch}","data":1}}}}"#),
                // Not a channel's command at all: whichever worker the scan sends it to runs it
                // the general way (on another worker, its reply joins the batch's late).
                _ => format!(r#"{{"id":{id},"params":{{"channel":"{name}"}},"method":"info"}}"#),
            };
            let reply = match (round + ch) % 7 {
                0..=2 => {
                    count[ch] += 1;
                    Some(count[ch])
                }
                _ => None,
            };
            want.push(((round + ch) % 7, reply, count[ch]));
            lines.push(line);
        }
    }
    let r = legacy_request(&s, lines_body(&lines), Some(&[4096, 777, 65536]));
    assert_eq!(r.status, 200);
    let text = r.text();
    let got: Vec<&str> = text.split('\n').collect();
    assert_eq!(got.len(), lines.len());
    let mut epochs: Vec<Option<String>> = vec![None; CHANNELS];
    for (i, (line, (kind, offset, top))) in got.iter().zip(&want).enumerate() {
        let id = i + 1;
        let ch = i % CHANNELS;
        let v: Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("reply {id} {line:?}: {e}"));
        assert_eq!(v["id"], id, "reply {id}: {line}");
        match kind {
            0..=2 => {
                assert_eq!(v["result"]["offset"], offset.unwrap(), "reply {id} (line {}): {line}", lines[i]);
                let epoch = v["result"]["epoch"].as_str().unwrap().to_string();
                assert_eq!(epochs[ch].get_or_insert_with(|| epoch.clone()), &epoch, "reply {id}");
            }
            3 => {
                assert_eq!(v["result"]["publications"], json!([]), "reply {id}: {line}");
                assert_eq!(v["result"]["offset"], *top, "history in order with the publishes, reply {id}: {line}");
            }
            4 => assert_eq!(v["error"]["code"], 107, "reply {id}: {line}"),
            5 => assert_eq!(v["error"]["code"], 102, "reply {id}: {line}"),
            _ => assert!(v["result"]["nodes"].is_array(), "reply {id}: {line}"),
        }
    }
}

/// On one worker every publish line runs in place, and one to a channel that keeps nothing
/// and has no subscriber is answered without building a publication: the replies are the
/// same, a subscriber that arrives later gets the publications that follow, in order, and a
/// channel with history still counts every line.
#[test]
fn publishes_run_in_place_reach_a_subscriber_that_arrives_later() {
    use crate::ws_client::{json_lines, Ws};
    let mut cfg = config_with(json!({"channel": {"without_namespace": {"history_size": 0, "history_ttl": "0s",
        "allow_subscribe_for_client": true}}}));
    cfg["workers"] = json!(1);
    const SECRET: &str = "legacy-in-place-secret";
    cfg["client"] = json!({"token": {"hmac_secret_key": SECRET}});
    let s = Server::start(cfg);
    let stream = |from: u32| -> Vec<Value> {
        let lines: Vec<String> = (from..from + 50)
            .flat_map(|i| {
                [publish_line(2 * i + 1, "live", &format!(r#"{{"n":{i}}}"#)), publish_line(2 * i + 2, "hist:h", "1")]
            })
            .collect();
        let r = legacy_request(&s, lines_body(&lines), Some(&[512, 4096]));
        assert_eq!(r.status, 200);
        r.lines()
    };
    let before = stream(0);
    for (k, v) in before.iter().enumerate() {
        if k % 2 == 0 {
            assert_eq!(v, &json!({"id": k + 1, "result": {}}), "nobody listens: {v}");
        } else {
            assert_eq!(v["result"]["offset"], k / 2 + 1, "history counts every line: {v}");
        }
    }
    let mut ws = Ws::open(s.addr());
    let exp = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() + 3600;
    ws.send_json(&json!({"id": 1, "connect": {"token": jwt(SECRET, json!({"sub": "u", "exp": exp}))}}));
    ws.send_json(&json!({"id": 2, "subscribe": {"channel": "live"}}));
    let mut subscribed = false;
    while !subscribed {
        let f = ws.frame().expect("subscribe reply");
        subscribed = json_lines(&f.payload).iter().any(|m| m["id"] == 2 && m["subscribe"].is_object());
    }
    let after = stream(50);
    assert_eq!(after.len(), 100);
    assert_eq!(after[0], json!({"id": 101, "result": {}}));
    assert_eq!(after[1]["result"]["offset"], 51);
    let mut got = Vec::new();
    while got.len() < 50 {
        let f = ws.frame().expect("publication");
        for m in json_lines(&f.payload) {
            if let Some(n) = m["push"]["pub"]["data"]["n"].as_u64() {
                got.push(n);
            }
        }
    }
    assert_eq!(got, (50..100).collect::<Vec<u64>>(), "every publication once, in order");
}

/// One streamed request of 1,000,000 publish lines (~75 MB) over 16 channels (spread over both workers),
/// its replies not read until the server has stopped taking the body in: the server reads
/// ahead only while the replies it owes stay bounded (1 MiB unsent, 1 MiB of lines in flight),
/// so the writer stalls well before the end and memory stays flat; once the client reads,
/// every reply arrives in order and every publication was made once.
#[test]
fn a_stream_whose_replies_are_not_read_is_backpressured() {
    const N: u32 = 1_000_000;
    const CHANNELS: u32 = 16;
    let s = Server::start(config());
    s.api("publish", json!({"channel": "warm", "data": 1}));
    let idle_kb = s.rss_kb();
    let mut c = s.connect();
    let mut w = c.writer();
    let written = Arc::new(AtomicUsize::new(0));
    let writer = {
        let written = written.clone();
        thread::spawn(move || -> std::io::Result<()> {
            w.write_all(&chunked_head("/api", &[("X-API-Key", KEY)]))?;
            let mut buf: Vec<u8> = Vec::with_capacity(80 * 1024);
            for id in 1..=N {
                write!(
                    buf,
                    r#"{{"id":{id},"method":"publish","params":{{"channel":"bp{}","data":{id}}}}}"#,
                    id % CHANNELS
                )?;
                buf.push(b'\n');
                if buf.len() >= 64 * 1024 || id == N {
                    w.write_all(&chunk(&buf))?;
                    written.fetch_add(buf.len(), Ordering::Release);
                    buf.clear();
                }
            }
            w.write_all(LAST_CHUNK)
        })
    };
    // Until the writer makes no progress for 500 ms (the server stopped reading; what it took
    // in by then is what the socket buffers of both directions hold plus its bounded backlog).
    let mut seen = usize::MAX;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        thread::sleep(Duration::from_millis(500));
        let now = written.load(Ordering::Acquire);
        if now == seen || Instant::now() > deadline {
            break;
        }
        seen = now;
    }
    let total = N as usize * 75;
    let held_kb = s.rss_kb();
    eprintln!("writer held after {seen} of ~{total} bytes; RSS idle {idle_kb} KiB, held {held_kb} KiB");
    assert!(seen < total / 2, "the server took in {seen} bytes of a body whose replies nobody read");
    assert!(held_kb < idle_kb + 64 * 1024, "RSS grew from {idle_kb} to {held_kb} KiB");
    // Others are served meanwhile.
    let r = s.api("publish", json!({"channel": "bp-other", "data": 1}));
    assert_eq!(r["result"]["offset"], 1, "{r}");
    // Now the client reads everything.
    let mut stream = ReplyStream::start(&mut c);
    let mut offsets = vec![0u64; CHANNELS as usize];
    for id in 1..=N {
        let line = stream.next_line().unwrap_or_else(|| panic!("stream ended after {} replies", id - 1));
        let v: Value = serde_json::from_slice(&line).unwrap_or_else(|e| panic!("reply {id}: {e}"));
        assert_eq!(v["id"], id, "reply {id}: {v}");
        let ch = (id % CHANNELS) as usize;
        offsets[ch] += 1;
        assert_eq!(v["result"]["offset"], offsets[ch], "reply {id}: {v}");
    }
    assert!(stream.next_line().is_none(), "more replies than commands");
    writer.join().unwrap().expect("writing the request");
    let mut s = s;
    s.assert_alive();
}
