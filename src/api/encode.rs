//! JSON encoding of server API replies, written straight into a byte buffer.
//!
//! Field names and which fields are always present follow Centrifugo's JSON API exactly
//! (`history` always has `publications`, `epoch`, `offset`; `presence_stats` always has both
//! counts; `channels` always has `channels`). Raw payloads are written byte-for-byte.

use super::*;
use crate::wire::json::{client_info, error, int, position, publication, string};

/// The server API's error object: `{"code":N,"message":"..."}` (Centrifugo's API error has
/// no `temporary`, even for errors the client protocol marks temporary).
pub fn api_error(out: &mut Vec<u8>, e: &ApiError) {
    error(out, &ApiError { temporary: false, ..*e });
}

fn publish_result(out: &mut Vec<u8>, p: &Option<StreamPosition>) {
    match p {
        Some(pos) => position(out, pos),
        None => out.extend_from_slice(b"{}"),
    }
}

/// The result object of a successful command.
pub fn result(out: &mut Vec<u8>, r: &Res) {
    match r {
        Res::Empty => out.extend_from_slice(b"{}"),
        Res::Publish(p) => publish_result(out, p),
        Res::Broadcast(items) => {
            out.extend_from_slice(b"{\"responses\":[");
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                match item {
                    Ok(p) => {
                        out.extend_from_slice(b"{\"result\":");
                        publish_result(out, p);
                        out.push(b'}');
                    }
                    Err(e) => {
                        out.extend_from_slice(b"{\"error\":");
                        api_error(out, e);
                        out.push(b'}');
                    }
                }
            }
            out.extend_from_slice(b"]}");
        }
        Res::Presence(clients) => {
            out.extend_from_slice(b"{\"presence\":{");
            for (i, c) in clients.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                string(out, &c.client);
                out.push(b':');
                client_info(out, c);
            }
            out.extend_from_slice(b"}}");
        }
        Res::PresenceStats { num_clients, num_users } => {
            out.extend_from_slice(b"{\"num_clients\":");
            int(out, *num_clients);
            out.extend_from_slice(b",\"num_users\":");
            int(out, *num_users);
            out.push(b'}');
        }
        Res::History { publications, position } => {
            out.extend_from_slice(b"{\"publications\":[");
            for (i, p) in publications.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                publication(out, p);
            }
            out.extend_from_slice(b"],\"epoch\":");
            string(out, &position.epoch);
            out.extend_from_slice(b",\"offset\":");
            int(out, position.offset);
            out.push(b'}');
        }
        Res::MapState { entries, position, cursor } => {
            out.extend_from_slice(b"{\"entries\":[");
            for (i, p) in entries.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                publication(out, p);
            }
            out.extend_from_slice(b"],\"offset\":");
            int(out, position.offset);
            out.extend_from_slice(b",\"epoch\":");
            string(out, &position.epoch);
            if !cursor.is_empty() {
                out.extend_from_slice(b",\"cursor\":");
                string(out, cursor);
            }
            out.push(b'}');
        }
        Res::MapUpdate(u) => {
            // `{"offset":N,"epoch":"E"}`, with `suppressed` and `suppress_reason` when it changed
            // nothing (omitted otherwise, as Centrifugo's encoder omits false and empty).
            out.extend_from_slice(b"{\"offset\":");
            int(out, u.position.offset);
            out.extend_from_slice(b",\"epoch\":");
            string(out, &u.position.epoch);
            if let Some(why) = u.suppressed {
                out.extend_from_slice(b",\"suppressed\":true,\"suppress_reason\":");
                string(out, why);
            }
            out.push(b'}');
        }
        Res::MapStats(n) => {
            out.extend_from_slice(b"{\"num_keys\":");
            int(out, *n);
            out.push(b'}');
        }
        Res::Channels(list) => {
            out.extend_from_slice(b"{\"channels\":{");
            for (i, (name, n)) in list.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                string(out, name);
                out.extend_from_slice(b":{\"num_clients\":");
                int(out, *n);
                out.push(b'}');
            }
            out.extend_from_slice(b"}}");
        }
        Res::Info(nodes) => {
            out.extend_from_slice(b"{\"nodes\":[");
            for (i, n) in nodes.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                out.extend_from_slice(b"{\"uid\":");
                string(out, &n.uid);
                out.extend_from_slice(b",\"name\":");
                string(out, &n.name);
                out.extend_from_slice(b",\"version\":");
                string(out, &n.version);
                for (k, v) in [
                    ("num_clients", n.num_clients),
                    ("num_users", n.num_users),
                    ("num_channels", n.num_channels),
                    ("num_subs", n.num_subs),
                ] {
                    out.extend_from_slice(b",\"");
                    out.extend_from_slice(k.as_bytes());
                    out.extend_from_slice(b"\":");
                    int(out, v);
                }
                if n.uptime > 0 {
                    out.extend_from_slice(b",\"uptime\":");
                    int(out, n.uptime);
                }
                out.push(b'}');
            }
            out.extend_from_slice(b"]}");
        }
        Res::Batch(replies) => {
            out.extend_from_slice(b"{\"replies\":[");
            for (i, (m, r)) in replies.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                match (m, r) {
                    (Some(m), Ok(res)) => {
                        out.extend_from_slice(b"{\"");
                        out.extend_from_slice(m.name().as_bytes());
                        out.extend_from_slice(b"\":");
                        result(out, res);
                        out.push(b'}');
                    }
                    (_, Err(e)) => {
                        out.extend_from_slice(b"{\"error\":");
                        api_error(out, e);
                        out.push(b'}');
                    }
                    (None, Ok(_)) => out.extend_from_slice(b"{}"),
                }
            }
            out.extend_from_slice(b"]}");
        }
    }
}

/// New-style body: `{"result":..}` or `{"error":..}`.
pub fn reply(out: &mut Vec<u8>, r: &Reply) {
    match r {
        Ok(res) => {
            out.extend_from_slice(b"{\"result\":");
            result(out, res);
            out.push(b'}');
        }
        Err(e) => {
            out.extend_from_slice(b"{\"error\":");
            api_error(out, e);
            out.push(b'}');
        }
    }
}

/// Legacy line reply: like [`reply`] with `"id":N` first when `id` is non-zero.
pub fn legacy_reply(out: &mut Vec<u8>, id: u32, r: &Reply) {
    if id == 0 {
        return reply(out, r);
    }
    out.extend_from_slice(b"{\"id\":");
    int(out, id as u64);
    match r {
        Ok(res) => {
            out.extend_from_slice(b",\"result\":");
            result(out, res);
        }
        Err(e) => {
            out.extend_from_slice(b",\"error\":");
            api_error(out, e);
        }
    }
    out.push(b'}');
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(f: impl FnOnce(&mut Vec<u8>)) -> String {
        let mut v = Vec::new();
        f(&mut v);
        String::from_utf8(v).unwrap()
    }

    #[test]
    fn shapes() {
        assert_eq!(s(|o| reply(o, &Ok(Res::Publish(None)))), r#"{"result":{}}"#);
        let pos = StreamPosition { offset: 3, epoch: "ab".into() };
        assert_eq!(
            s(|o| legacy_reply(o, 7, &Ok(Res::Publish(Some(pos))))),
            r#"{"id":7,"result":{"offset":3,"epoch":"ab"}}"#
        );
        assert_eq!(
            s(|o| legacy_reply(o, 0, &Err(ApiError::BAD_REQUEST))),
            r#"{"error":{"code":107,"message":"bad request"}}"#
        );
        assert_eq!(
            s(|o| reply(
                o,
                &Ok(Res::Batch(vec![
                    (Some(Method::Publish), Ok(Res::Publish(None))),
                    (None, Err(ApiError::UNKNOWN_CHANNEL))
                ]))
            )),
            r#"{"result":{"replies":[{"publish":{}},{"error":{"code":102,"message":"unknown channel"}}]}}"#
        );
    }
}
