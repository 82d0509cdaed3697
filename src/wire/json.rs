//! JSON writer primitives, written straight into a byte buffer: strings, integers, raw JSON
//! payloads (kept byte-for-byte), and the shapes the server API and the client protocol
//! share (error objects, stream positions, client info, tags, publications).

use crate::error::ApiError;
use crate::model::{ClientInfo, Payload, Publication, StreamPosition, Tags};

/// Writes a JSON string literal.
pub fn string(out: &mut Vec<u8>, s: &str) {
    // Most strings written here (channels, users, client ids, epochs) need no escape: they
    // are copied between quotes. Anything else goes through serde_json's escaper, correct
    // for every code point (its call costs more than the copy on short strings).
    if s.bytes().all(|c| c >= 0x20 && c != b'"' && c != b'\\') {
        out.reserve(s.len() + 2);
        out.push(b'"');
        out.extend_from_slice(s.as_bytes());
        out.push(b'"');
    } else {
        serde_json::to_writer(&mut *out, s).expect("writing to a Vec cannot fail");
    }
}

/// Writes an unsigned integer.
pub fn int(out: &mut Vec<u8>, n: u64) {
    out.extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
}

/// `{"code":N,"message":"..."}` (+ `"temporary":true` when set), as the client protocol
/// writes it.
pub fn error(out: &mut Vec<u8>, e: &ApiError) {
    out.extend_from_slice(b"{\"code\":");
    int(out, e.code as u64);
    out.extend_from_slice(b",\"message\":");
    string(out, e.message);
    if e.temporary {
        out.extend_from_slice(b",\"temporary\":true");
    }
    out.push(b'}');
}

/// Writes `"name":<payload>`: the bytes as they are, also for `b64data` payloads, as
/// Centrifugo's JSON API does (its publication `data` is a raw JSON field).
pub fn payload_field(out: &mut Vec<u8>, name: &str, p: &Payload) {
    out.push(b'"');
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(b"\":");
    raw_json(out, &p.bytes);
}

/// Appends raw JSON bytes. Line breaks become spaces: in valid JSON they can only be
/// insignificant whitespace, and left alone they would split a newline-delimited message
/// (legacy API replies, JSON client frames) in two. Centrifugo's encoder compacts raw JSON too.
pub fn raw_json(out: &mut Vec<u8>, b: &[u8]) {
    if memchr::memchr2(b'\n', b'\r', b).is_none() {
        out.extend_from_slice(b);
    } else {
        out.extend(b.iter().map(|&c| if c == b'\n' || c == b'\r' { b' ' } else { c }));
    }
}

/// `{"offset":N,"epoch":"E"}`.
pub fn position(out: &mut Vec<u8>, p: &StreamPosition) {
    out.extend_from_slice(b"{\"offset\":");
    int(out, p.offset);
    out.extend_from_slice(b",\"epoch\":");
    string(out, &p.epoch);
    out.push(b'}');
}

/// `ClientInfo` JSON: `user` and `client` always, infos when present.
pub fn client_info(out: &mut Vec<u8>, c: &ClientInfo) {
    out.extend_from_slice(b"{\"user\":");
    string(out, &c.user);
    out.extend_from_slice(b",\"client\":");
    string(out, &c.client);
    if let Some(i) = &c.conn_info {
        out.extend_from_slice(b",\"conn_info\":");
        raw_json(out, i);
    }
    if let Some(i) = &c.chan_info {
        out.extend_from_slice(b",\"chan_info\":");
        raw_json(out, i);
    }
    out.push(b'}');
}

/// `{"k":"v",...}` for publication tags.
pub fn tags(out: &mut Vec<u8>, t: &Tags) {
    out.push(b'{');
    for (i, (k, v)) in t.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        string(out, k);
        out.push(b':');
        string(out, v);
    }
    out.push(b'}');
}

/// A history publication: `{"data":..,"info":..?,"offset":N,"tags":{..}?}`.
pub fn publication(out: &mut Vec<u8>, p: &Publication) {
    out.push(b'{');
    // No data (a map removal, a presence key): the field is left out, as Centrifugo's encoder
    // leaves out empty bytes.
    let mut sep: &[u8] = b"";
    if !p.data.bytes.is_empty() {
        payload_field(out, "data", &p.data);
        sep = b",";
    }
    let mut field = |out: &mut Vec<u8>, name: &[u8]| {
        out.extend_from_slice(sep);
        out.extend_from_slice(name);
        sep = b",";
    };
    if let Some(info) = &p.info {
        field(out, b"\"info\":");
        client_info(out, info);
    }
    if p.offset > 0 {
        field(out, b"\"offset\":");
        int(out, p.offset);
    }
    if let Some(t) = &p.tags {
        field(out, b"\"tags\":");
        tags(out, t);
    }
    if let Some(k) = &p.key {
        field(out, b"\"key\":");
        string(out, k);
    }
    if p.removed {
        field(out, b"\"removed\":true");
    }
    out.push(b'}');
}

#[cfg(test)]
mod tests {
    /// The copy of plain strings writes what serde_json writes, and the rest still escapes.
    #[test]
    fn strings_are_written_as_serde_json_writes_them() {
        for s in [
            "",
            "room-42",
            "ns:chan#user,1",
            "q\"uote",
            "back\\slash",
            "tab\t",
            "nl\n",
            "\u{1}",
            "\u{7f}",
            "é日本🎉",
            "a/b",
        ] {
            let mut out = Vec::new();
            super::string(&mut out, s);
            assert_eq!(out, serde_json::to_vec(s).unwrap(), "{s:?}");
        }
    }
}
