//! The hot path of the legacy stream, read by hand: a publish line of the usual shape
//! (`{"id":N,"method":"publish","params":{"channel":"..","data":..,"skip_history":B}}`, keys in
//! any order) is read in one pass over its bytes, with no allocation and no serde machinery.
//!
//! Two readers:
//! * [`route`] finds the channel of a line that looks like a publish, without validating the
//!   rest (strings and brackets are skipped, not checked). The reading worker uses it to send
//!   the raw line to the channel's owner, which reads it properly.
//! * [`publish`] reads a publish line completely and strictly (JSON grammar, UTF-8, nesting).
//!
//! Both give up (`None`) on anything unusual — other methods, other keys of `params`, escapes
//! in the channel, a method given as a number, duplicate keys, deep nesting — and the caller
//! then takes the general decoder ([`super::parse::decode_line`]). The contract, checked by the
//! tests against the general decoder on generated and mutated lines: whenever [`publish`]
//! answers, the general decoder gives the same command.
//!
//! Why by hand: the general decoder (serde_json with borrowed raw values) costs ~390 ns for a
//! 150-byte line, most of it in serde's visitor machinery; simd-json builds a tape of the
//! whole line first and has no raw-value support (`data` must stay byte for byte). This reader
//! is the one place where those costs dominate (`benches/api_parse.rs`, `api_decode`).

/// Deepest nesting of `data` this reader follows (the general decoder allows 128 levels for
/// the whole line, envelope included; past this the line takes the general decoder).
const MAX_DEPTH: u32 = 100;

/// A publish line read by [`publish`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Publish<'a> {
    /// The line's `id` (0 when absent).
    pub id: u32,
    pub channel: &'a str,
    /// The `data` value exactly as it appears in the line.
    pub data: &'a [u8],
    pub skip_history: bool,
}

impl Publish<'_> {
    /// The command (the channel and `data` copied out of the line).
    pub fn to_publish(&self) -> crate::model::Publish {
        crate::model::Publish {
            channel: self.channel.into(),
            data: crate::model::Payload { bytes: bytes::Bytes::copy_from_slice(self.data), binary: false },
            skip_history: self.skip_history,
            tags: None,
            idempotency_key: None,
            delta: false,
            version: 0,
            version_epoch: "".into(),
            info: None,
        }
    }
}

/// Skips whitespace from `i`. Compact JSON has none: a byte above the space is the next token
/// (every JSON token starts above it), checked first without a loop.
#[inline(always)]
fn ws(b: &[u8], i: usize) -> usize {
    match b.get(i) {
        Some(&c) if c > b' ' => i,
        _ => ws_run(b, i),
    }
}

fn ws_run(b: &[u8], mut i: usize) -> usize {
    while i < b.len() && matches!(b[i], b' ' | b'\t' | b'\n' | b'\r') {
        i += 1;
    }
    i
}

/// The index of the first byte at or after `j` that is a quote, a backslash, a control
/// character or not ASCII (`b.len()` when none): eight bytes at a time.
#[inline]
fn string_stop(b: &[u8], mut j: usize) -> usize {
    const LO: u64 = 0x0101_0101_0101_0101;
    const HI: u64 = 0x8080_8080_8080_8080;
    while j + 8 <= b.len() {
        let x = u64::from_le_bytes(b[j..j + 8].try_into().expect("eight bytes"));
        let quote = x ^ (LO * b'"' as u64);
        let slash = x ^ (LO * b'\\' as u64);
        // A zero byte in `quote`/`slash`, or a byte below 0x20 in `x`.
        let hit =
            (quote.wrapping_sub(LO) & !quote) | (slash.wrapping_sub(LO) & !slash) | (x.wrapping_sub(LO * 0x20) & !x);
        let hit = (hit | x) & HI;
        if hit != 0 {
            return j + (hit.trailing_zeros() / 8) as usize;
        }
        j += 8;
    }
    while j < b.len() && !matches!(b[j], b'"' | b'\\' | 0..=0x1f | 0x80..) {
        j += 1;
    }
    j
}

/// A string starting at `i` (the opening quote) without escapes or control characters:
/// its contents and the index after the closing quote. `None` for anything else.
#[inline]
fn plain_string(b: &[u8], i: usize) -> Option<(&str, usize)> {
    if b.get(i) != Some(&b'"') {
        return None;
    }
    let start = i + 1;
    let mut j = start;
    loop {
        j = string_stop(b, j);
        match *b.get(j)? {
            b'"' => {
                let s = &b[start..j];
                debug_assert!(std::str::from_utf8(s).is_ok());
                // SAFETY: every byte of `s` was checked on the way: `string_stop` passes
                // ASCII bytes only, and each run of other bytes passed `utf8_run`, which
                // validates it as UTF-8 and ends it at an ASCII byte (so runs hold whole
                // characters). A second validation cost ~7% of reading a publish line.
                return Some((unsafe { std::str::from_utf8_unchecked(s) }, j + 1));
            }
            0x80.. => j = utf8_run(b, j)?,
            _ => return None,
        }
    }
}

/// Validates the run of non-ASCII bytes starting at `j` as UTF-8 (a run of whole characters
/// always ends at an ASCII byte); the index after it.
#[cold]
#[inline(never)]
fn utf8_run(b: &[u8], j: usize) -> Option<usize> {
    let k = b[j..].iter().position(|c| c.is_ascii()).map_or(b.len(), |k| j + k);
    std::str::from_utf8(&b[j..k]).ok().map(|_| k)
}

/// A strictly valid JSON string starting at `i`; the index after it. Escapes other than the
/// single-character ones (`\uXXXX`) give up, leaving surrogate rules to the general decoder.
#[inline(always)]
fn string(b: &[u8], i: usize) -> Option<usize> {
    let mut j = i + 1;
    loop {
        // The common case: a run of plain bytes.
        j = string_stop(b, j);
        match *b.get(j)? {
            b'"' => return Some(j + 1),
            b'\\' => match b.get(j + 1)? {
                b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't' => j += 2,
                _ => return None,
            },
            0x80.. => j = utf8_run(b, j)?,
            _ => return None,
        }
    }
}

fn digits(b: &[u8], mut i: usize) -> usize {
    while i < b.len() && b[i].is_ascii_digit() {
        i += 1;
    }
    i
}

/// A JSON number starting at `i`; the index after it.
fn number(b: &[u8], mut i: usize) -> Option<usize> {
    if b.get(i) == Some(&b'-') {
        i += 1;
    }
    match b.get(i)? {
        b'0' => i += 1,
        b'1'..=b'9' => i = digits(b, i + 1),
        _ => return None,
    }
    if b.get(i) == Some(&b'.') {
        let j = digits(b, i + 1);
        if j == i + 1 {
            return None;
        }
        i = j;
    }
    if matches!(b.get(i), Some(b'e' | b'E')) {
        i += 1;
        if matches!(b.get(i), Some(b'+' | b'-')) {
            i += 1;
        }
        let j = digits(b, i);
        if j == i {
            return None;
        }
        i = j;
    }
    Some(i)
}

/// [`value`], with strings and numbers (most members of a payload) read without a call.
#[inline(always)]
fn member(b: &[u8], i: usize, depth: u32) -> Option<usize> {
    match *b.get(i)? {
        b'"' => string(b, i),
        b'-' | b'0'..=b'9' => number(b, i),
        _ => value(b, i, depth),
    }
}

/// A strictly valid JSON value starting at `i` (no leading whitespace); the index after it.
fn value(b: &[u8], i: usize, depth: u32) -> Option<usize> {
    match *b.get(i)? {
        b'"' => string(b, i),
        b'{' => {
            if depth >= MAX_DEPTH {
                return None;
            }
            let mut j = ws(b, i + 1);
            if b.get(j) == Some(&b'}') {
                return Some(j + 1);
            }
            loop {
                if b.get(j) != Some(&b'"') {
                    return None;
                }
                j = ws(b, string(b, j)?);
                if b.get(j) != Some(&b':') {
                    return None;
                }
                j = ws(b, member(b, ws(b, j + 1), depth + 1)?);
                match b.get(j)? {
                    b',' => j = ws(b, j + 1),
                    b'}' => return Some(j + 1),
                    _ => return None,
                }
            }
        }
        b'[' => {
            if depth >= MAX_DEPTH {
                return None;
            }
            let mut j = ws(b, i + 1);
            if b.get(j) == Some(&b']') {
                return Some(j + 1);
            }
            loop {
                j = ws(b, member(b, j, depth + 1)?);
                match b.get(j)? {
                    b',' => j = ws(b, j + 1),
                    b']' => return Some(j + 1),
                    _ => return None,
                }
            }
        }
        b't' => b[i..].starts_with(b"true").then_some(i + 4),
        b'f' => b[i..].starts_with(b"false").then_some(i + 5),
        b'n' => b[i..].starts_with(b"null").then_some(i + 4),
        b'-' | b'0'..=b'9' => number(b, i),
        _ => None,
    }
}

/// Skips a value starting at `i` without validating it: strings to their closing quote,
/// containers to their matching bracket. The index after it.
fn skip(b: &[u8], i: usize) -> Option<usize> {
    match *b.get(i)? {
        b'"' => {
            let mut j = i + 1;
            loop {
                let k = memchr::memchr2(b'"', b'\\', b.get(j..)?)?;
                j += k;
                if b[j] == b'"' {
                    return Some(j + 1);
                }
                j += 2;
            }
        }
        b'{' | b'[' => {
            let mut depth = 0u32;
            let mut j = i;
            loop {
                match *b.get(j)? {
                    b'"' => {
                        j = skip(b, j)?;
                        continue;
                    }
                    b'{' | b'[' => depth += 1,
                    b'}' | b']' => {
                        depth -= 1;
                        if depth == 0 {
                            return Some(j + 1);
                        }
                    }
                    _ => {}
                }
                j += 1;
            }
        }
        _ => {
            let k = b[i..].iter().position(|&c| matches!(c, b',' | b'}' | b']' | b' ' | b'\t' | b'\r' | b'\n'));
            Some(k.map_or(b.len(), |k| i + k))
        }
    }
}

/// The `id` value: a plain non-negative integer that fits `u32`, or `null` (0).
fn id(b: &[u8], i: usize) -> Option<(u32, usize)> {
    if b[i..].starts_with(b"null") {
        return Some((0, i + 4));
    }
    let end = digits(b, i);
    if end == i || (b[i] == b'0' && end > i + 1) || end - i > 10 {
        return None;
    }
    if matches!(b.get(end), Some(b'.' | b'e' | b'E')) {
        return None;
    }
    let n: u64 = b[i..end].iter().fold(0, |n, d| n * 10 + (d - b'0') as u64);
    Some((u32::try_from(n).ok()?, end))
}

/// Reads the members of an object starting at `i` (`{`), calling `member(key, value_at)` for
/// each; `member` returns the index after the value, or `None` to give up. The index after
/// the object.
fn object(b: &[u8], i: usize, mut member: impl FnMut(&[u8], usize) -> Option<usize>) -> Option<usize> {
    if b.get(i) != Some(&b'{') {
        return None;
    }
    let mut j = ws(b, i + 1);
    if b.get(j) == Some(&b'}') {
        return Some(j + 1);
    }
    loop {
        let (key, after) = plain_string(b, j)?;
        j = ws(b, after);
        if b.get(j) != Some(&b':') {
            return None;
        }
        j = ws(b, member(key.as_bytes(), ws(b, j + 1))?);
        match b.get(j)? {
            b',' => j = ws(b, j + 1),
            b'}' => return Some(j + 1),
            _ => return None,
        }
    }
}

/// Reads a publish line strictly; `None` when the general decoder must read it (see the
/// module docs). `line` has no surrounding whitespace.
pub fn publish(line: &[u8]) -> Option<Publish<'_>> {
    // Bytes that are not ASCII are valid only inside strings, where they are checked as
    // UTF-8 (the general decoder requires it of the parts it keeps).
    let b = line;
    let (mut id_seen, mut method_seen, mut params_seen) = (false, false, false);
    let mut out = Publish { id: 0, channel: "", data: b"", skip_history: false };
    let end = object(b, 0, |key, at| match key {
        b"id" if !id_seen => {
            id_seen = true;
            let (n, end) = id(b, at)?;
            out.id = n;
            Some(end)
        }
        b"method" if !method_seen => {
            method_seen = true;
            let (m, end) = plain_string(b, at)?;
            (m == "publish").then_some(end)
        }
        b"params" if !params_seen => {
            params_seen = true;
            params(b, at, 3, &mut out)
        }
        // Keys the general decoder ignores: skipped, but validated as it does.
        b"id" | b"method" | b"params" => None,
        _ => value(b, at, 2),
    })?;
    (end == b.len() && params_seen).then_some(out)
}

/// The `params` object of a publish at `i` (`channel`, `data`, `skip_history`, nothing else),
/// read strictly into `out` (`data` at nesting `depth`); the index after it.
fn params<'a>(b: &'a [u8], i: usize, depth: u32, out: &mut Publish<'a>) -> Option<usize> {
    let (mut channel_seen, mut data_seen, mut skip_seen) = (false, false, false);
    let end = object(b, i, |key, at| match key {
        b"channel" if !channel_seen => {
            channel_seen = true;
            let (c, end) = plain_string(b, at)?;
            out.channel = c;
            Some(end)
        }
        b"data" if !data_seen => {
            data_seen = true;
            let end = value(b, at, depth)?;
            out.data = &b[at..end];
            Some(end)
        }
        b"skip_history" if !skip_seen => {
            skip_seen = true;
            let (v, end) = boolean(b, at)?;
            out.skip_history = v;
            Some(end)
        }
        _ => None,
    })?;
    // A channel, and data that is not `null` (which the general decoder reads as absent):
    // anything else is an error the general decoder words.
    (!out.channel.is_empty() && !out.data.is_empty() && out.data != b"null").then_some(end)
}

/// The body of a `batch` whose commands are all publishes of the usual shape
/// (`{"commands":[{"publish":{"channel":"..","data":..}},...],"parallel":B}`, keys in any
/// order, `params` as [`publish`] reads them), read strictly; `None` when the general decoder
/// must read it. The publishes' `id` is 0.
pub fn batch(body: &[u8]) -> Option<(Vec<Publish<'_>>, bool)> {
    let b = body;
    let (mut commands, mut parallel) = (None, None);
    let end = object(b, ws(b, 0), |key, at| match key {
        b"commands" if commands.is_none() => {
            let mut list = Vec::new();
            let end = array(b, at, |at| {
                let mut p = Publish { id: 0, channel: "", data: b"", skip_history: false };
                let mut seen = false;
                let end = object(b, at, |key, at| match key {
                    b"publish" if !seen => {
                        seen = true;
                        params(b, at, 4, &mut p)
                    }
                    _ => None,
                })?;
                list.push(p);
                seen.then_some(end)
            })?;
            commands = Some(list);
            Some(end)
        }
        b"parallel" if parallel.is_none() => {
            let (v, end) = boolean(b, at)?;
            parallel = Some(v);
            Some(end)
        }
        b"commands" | b"parallel" => None,
        _ => value(b, at, 1),
    })?;
    (ws(b, end) == b.len()).then_some(())?;
    Some((commands?, parallel.unwrap_or(false)))
}

/// Reads the elements of an array starting at `i` (`[`), calling `element(value_at)` for each;
/// the index after the array.
fn array(b: &[u8], i: usize, mut element: impl FnMut(usize) -> Option<usize>) -> Option<usize> {
    if b.get(i) != Some(&b'[') {
        return None;
    }
    let mut j = ws(b, i + 1);
    if b.get(j) == Some(&b']') {
        return Some(j + 1);
    }
    loop {
        j = ws(b, element(j)?);
        match b.get(j)? {
            b',' => j = ws(b, j + 1),
            b']' => return Some(j + 1),
            _ => return None,
        }
    }
}

/// `true` or `false` at `i`; the value and the index after it.
fn boolean(b: &[u8], i: usize) -> Option<(bool, usize)> {
    if b[i..].starts_with(b"true") {
        Some((true, i + 4))
    } else if b[i..].starts_with(b"false") {
        Some((false, i + 5))
    } else {
        None
    }
}

/// The channel of a line that looks like a publish (`method` "publish" or absent, `params`
/// with a plain `channel` string), found without validating the line. The line may still be
/// malformed: whoever executes it reads it with [`publish`] or the general decoder.
pub fn route(line: &[u8]) -> Option<&str> {
    let b = line;
    if b.first() != Some(&b'{') {
        return None;
    }
    let mut j = ws(b, 1);
    loop {
        let (key, after) = plain_string(b, j)?;
        j = ws(b, after);
        if b.get(j) != Some(&b':') {
            return None;
        }
        j = ws(b, j + 1);
        match key.as_bytes() {
            b"method" => {
                let (m, end) = plain_string(b, j)?;
                if m != "publish" {
                    return None;
                }
                j = end;
            }
            b"params" => return channel_in(b, j),
            _ => j = skip(b, j)?,
        }
        j = ws(b, j);
        match b.get(j)? {
            b',' => j = ws(b, j + 1),
            _ => return None,
        }
    }
}

/// The `channel` member of the params object at `i`, found without reading past it (and so
/// without seeing a `method` that may follow `params`: the executing worker reads the line).
fn channel_in(b: &[u8], i: usize) -> Option<&str> {
    if b.get(i) != Some(&b'{') {
        return None;
    }
    let mut j = ws(b, i + 1);
    loop {
        let (key, after) = plain_string(b, j)?;
        j = ws(b, after);
        if b.get(j) != Some(&b':') {
            return None;
        }
        j = ws(b, j + 1);
        if key == "channel" {
            let (c, _) = plain_string(b, j)?;
            return Some(c).filter(|c| !c.is_empty());
        }
        j = ws(b, skip(b, j)?);
        match b.get(j)? {
            b',' => j = ws(b, j + 1),
            _ => return None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::parse::decode_line_general as decode_line;
    use crate::api::Command;

    const LINE: &[u8] = br#"{"id":7,"method":"publish","params":{"channel":"room-42","data":{"user":"alice","text":"hello, world","ts":1700000000123,"seq":17,"tags":["a","b"]}}}"#;

    /// The contract: whenever the fast reader answers, the general decoder agrees.
    fn agrees(line: &[u8]) -> bool {
        let Some(f) = publish(line) else { return false };
        let l = decode_line(line);
        assert_eq!(l.id, f.id, "id of {}", String::from_utf8_lossy(line));
        match l.command {
            Ok(Command::Publish(p)) => {
                assert_eq!(&*p.channel, f.channel, "{}", String::from_utf8_lossy(line));
                assert_eq!(&p.data.bytes[..], f.data, "{}", String::from_utf8_lossy(line));
                assert!(!p.data.binary);
                assert_eq!(p.skip_history, f.skip_history);
                assert!(p.tags.is_none() && p.idempotency_key.is_none() && !p.delta && p.version == 0);
            }
            other => panic!("fast reader accepted {} but the decoder gave {other:?}", String::from_utf8_lossy(line)),
        }
        true
    }

    #[test]
    fn reads_the_usual_shapes() {
        assert!(agrees(LINE));
        assert!(agrees(br#"{"method":"publish","params":{"channel":"a","data":1}}"#));
        assert!(agrees(br#"{"params":{"data":"x","channel":"a"},"id":4294967295}"#));
        assert!(agrees(br#"{ "id" : 1 , "method" : "publish" , "params" : { "channel" : "a:b" , "data" : [ 1 , -2.5e+3 , true , null , { } , [ ] ] , "skip_history" : true } }"#));
        assert!(agrees(br#"{"params":{"channel":"a","data":"esc \" \\ \/ \n \t"},"x":{"y":[1,2]}}"#));
        assert!(agrees("{\"params\":{\"channel\":\"ü\",\"data\":\"日本\"}}".as_bytes()));
        let f = publish(LINE).unwrap();
        assert_eq!((f.id, f.channel), (7, "room-42"));
        assert_eq!(route(LINE), Some("room-42"));
    }

    #[test]
    fn gives_up_on_what_the_general_decoder_reads() {
        for l in [
            &br#"{"method":"PUBLISH","params":{"channel":"a","data":1}}"#[..],
            br#"{"method":0,"params":{"channel":"a","data":1}}"#,
            br#"{"method":"broadcast","params":{"channels":["a"],"data":1}}"#,
            br#"{"params":{"channel":"a\u0062","data":1}}"#,
            br#"{"params":{"channel":"a","data":"\u00e9"}}"#,
            br#"{"params":{"channel":"a","data":null}}"#,
            br#"{"params":{"channel":"","data":1}}"#,
            br#"{"params":{"channel":"a"}}"#,
            br#"{"params":{"channel":"a","data":1,"tags":{"k":"v"}}}"#,
            br#"{"params":{"channel":"a","data":1,"data":2}}"#,
            br#"{"id":1,"id":2,"params":{"channel":"a","data":1}}"#,
            br#"{"id":-1,"params":{"channel":"a","data":1}}"#,
            br#"{"id":1.0,"params":{"channel":"a","data":1}}"#,
            br#"{"id":4294967296,"params":{"channel":"a","data":1}}"#,
            br#"{"id":01,"params":{"channel":"a","data":1}}"#,
            br#"{"params":{"channel":"a","data":01}}"#,
            br#"{"params":{"channel":"a","data":1.}}"#,
            br#"{"params":{"channel":"a","data":{"a":1,}}}"#,
            br#"{"params":{"channel":"a","data":[1 2]}}"#,
            br#"{"params":{"channel":"a","data":tru}}"#,
            br#"{"params":{"channel":"a","data":1}} x"#,
            br#"{"params":{"channel":"a","data":1}"#,
            br#"{"params":null}"#,
            br#"[{"params":{"channel":"a","data":1}}]"#,
            b"{\"params\":{\"channel\":\"a\",\"data\":\"\x01\"}}",
            b"{\"params\":{\"channel\":\"a\",\"data\":\"\xff\"}}",
            b"{\"params\":{\"channel\":\"a\",\"data\":\"\xc3\"}}",
            b"{\"params\":{\"channel\":\"a\xc3\",\"data\":1}}",
            b"{\"params\":{\"channel\":\"a\",\"data\":[1,\xc3\xa9]}}",
            b"{\"params\":{\"channel\":\"a\",\"data\":1},\"\xed\xa0\x80\":1}",
        ] {
            assert_eq!(publish(l), None, "{}", String::from_utf8_lossy(l));
        }
        let deep = format!(r#"{{"params":{{"channel":"a","data":{}1{}}}}}"#, "[".repeat(120), "]".repeat(120));
        assert_eq!(publish(deep.as_bytes()), None);
        assert_eq!(route(br#"{"method":"history","params":{"channel":"a"}}"#), None);
        assert_eq!(route(br#"{"params":{"channel":"a\"b","data":1}}"#), None);
    }

    /// The contract for `batch`: whenever it answers, the general decoder reads the same
    /// publishes.
    fn batch_agrees(body: &[u8]) -> bool {
        let Some((publishes, parallel)) = batch(body) else { return false };
        let text = String::from_utf8_lossy(body);
        match crate::api::parse::decode_batch_general(body) {
            Ok(Command::Batch(b)) => {
                assert_eq!(b.parallel, parallel, "{text}");
                assert_eq!(b.commands.len(), publishes.len(), "{text}");
                for (c, f) in b.commands.iter().zip(&publishes) {
                    let Ok(Command::Publish(p)) = c else { panic!("{text}: the decoder gave {c:?}") };
                    assert_eq!((&*p.channel, &p.data.bytes[..], p.skip_history), (f.channel, f.data, f.skip_history));
                    assert!(!p.data.binary && p.tags.is_none() && p.idempotency_key.is_none() && !p.delta);
                }
            }
            other => panic!("fast reader accepted {text} but the decoder gave {other:?}"),
        }
        true
    }

    const BATCH: &[u8] = br#"{"commands":[{"publish":{"channel":"a","data":{"x":1}}},{"publish":{"data":"s","channel":"b:c","skip_history":true}}],"parallel":true}"#;

    #[test]
    fn reads_batches_of_publishes() {
        assert!(batch_agrees(BATCH));
        assert!(batch_agrees(br#"{"commands":[]}"#));
        // What the Python `cent` client (5.x) sends for `batch()`.
        let cent = br#"{"commands": [{"publish": {"channel": "a", "data": {"x": 1}}}, {"publish": {"channel": "b", "data": {"y": 2}}}], "parallel": false}"#;
        assert!(batch_agrees(cent));
        assert!(batch_agrees(br#" { "parallel" : false , "x" : [1] , "commands" : [ { "publish" : { "channel" : "a" , "data" : 1 } } ] } "#));
        assert!(batch_agrees(b"{\"commands\":[{\"publish\":{\"channel\":\"a\",\"data\":[1]}}]}\n"));
        let (p, parallel) = batch(BATCH).unwrap();
        assert!(parallel);
        assert_eq!(p.iter().map(|p| (p.channel, p.skip_history)).collect::<Vec<_>>(), [("a", false), ("b:c", true)]);
        for b in [
            &br#"{"parallel":true}"#[..],
            br#"{"commands":[{"publish":{"channel":"a","data":1}},{"history":{"channel":"a"}}]}"#,
            br#"{"commands":[{"publish":{"channel":"a","data":1},"x":1}]}"#,
            br#"{"commands":[{"publish":null,"broadcast":{"channels":["a"],"data":1}}]}"#,
            br#"{"commands":[{"publish":{"channel":"a","data":1,"tags":{}}}]}"#,
            br#"{"commands":[{"publish":{"channel":"a","data":null}}]}"#,
            br#"{"commands":[null]}"#,
            br#"{"commands":[{"publish":{"channel":"a","data":1}}],"commands":[]}"#,
            br#"{"commands":[{"publish":{"channel":"a","data":1}}],"parallel":1}"#,
            br#"{"commands":[{"publish":{"channel":"a","data":1}},]}"#,
            br#"{"commands":[{"publish":{"channel":"a","data":1}}]} x"#,
            br#"{"commands":[{"publish":{"channel":"a","data":1}}]"#,
            br#"{"commands":[{"publish":{"channel":"a","data":1,"skip_history":"#,
            br#"{"commands":[{"publish":{"channel":"a","data":1,"skip_history":tr"#,
        ] {
            assert_eq!(batch(b).map(|(p, _)| p.len()), None, "{}", String::from_utf8_lossy(b));
        }
    }

    /// A line cut anywhere never panics either reader.
    #[test]
    fn cut_lines_and_batches_are_refused() {
        let line = br#"{"id":1,"method":"publish","params":{"channel":"a","data":[1,{"b":"c"}],"skip_history":true}}"#;
        for end in 0..line.len() {
            assert_eq!(publish(&line[..end]), None);
            let _ = route(&line[..end]);
        }
        for end in 0..BATCH.len() {
            assert_eq!(batch(&BATCH[..end]).map(|(p, _)| p.len()), None);
        }
    }

    /// Mutations of valid lines and batch bodies (bytes replaced, dropped, doubled; pieces
    /// spliced in): the fast readers either give up or agree with the general decoder, and
    /// `route` never panics.
    #[test]
    fn mutated_lines_never_disagree() {
        let seeds: Vec<&[u8]> = vec![
            LINE,
            br#"{"params":{"channel":"c","data":[1,{"a":"b\n"},-0.5E-2],"skip_history":false},"method":"publish"}"#,
            br#"{"id":12,"params":{"data":{"x":{"y":[true,false,null]}},"channel":"ns:chan#1"},"extra":[{"z":"\\"}]}"#,
        ];
        let pieces: &[&[u8]] =
            &[b"\"", b"\\", b"{", b"}", b"[", b"]", b",", b":", b" ", b"0", b"-", b"e", b"null", b"\xc3", b"\x00"];
        let mut rng: u64 = 0x9e3779b97f4a7c15;
        let mut next = || {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            rng
        };
        // One to three mutations of `seed`.
        let mut mutate = |seed: &[u8]| {
            let mut l = seed.to_vec();
            for _ in 0..1 + next() % 3 {
                let at = (next() as usize) % l.len();
                match next() % 4 {
                    0 => l[at] = pieces[next() as usize % pieces.len()][0],
                    1 => {
                        l.remove(at);
                    }
                    2 => {
                        let c = l[at];
                        l.insert(at, c);
                    }
                    _ => {
                        let p = pieces[next() as usize % pieces.len()];
                        l.splice(at..at, p.iter().copied());
                    }
                }
                if l.is_empty() {
                    l.push(b'{');
                }
            }
            l
        };
        let mut accepted = 0;
        for round in 0..60_000 {
            let l = mutate(seeds[round % seeds.len()]);
            let _ = route(&l);
            accepted += agrees(&l) as usize;
        }
        // Some mutations keep the line valid (spaces, digits inside data): both paths ran.
        assert!(accepted > 100, "{accepted}");
        let mut accepted = 0;
        for _ in 0..30_000 {
            accepted += batch_agrees(&mutate(BATCH)) as usize;
        }
        assert!(accepted > 100, "{accepted}");
    }
}
