//! A `map` subscriber's state sync: subscribe with `type` 1 and phase 2, the later pages naming
//! the first page's `offset`/`epoch` and the previous page's `cursor`, until the last page's
//! reply makes the subscription live; every key received is checked off against the seeded
//! ones.

use std::cell::RefCell;

use serde::Deserialize;
use serde_json::json;

use crate::map::MapOpts;
use crate::payload::Track;
use crate::stats::Local;
use crate::target::ClientErr;
use crate::ws::{error_reply, WsClient};

/// The keys a subscriber received: one bit per seeded key.
pub struct KeySet {
    bits: Vec<u64>,
    pub distinct: usize,
    /// State entries of a key already received, and keys that were not seeded.
    pub repeated: u64,
    pub foreign: u64,
}

impl KeySet {
    pub fn new(keys: usize) -> KeySet {
        KeySet { bits: vec![0; keys.div_ceil(64)], distinct: 0, repeated: 0, foreign: 0 }
    }

    fn index(&self, key: &str) -> Option<usize> {
        let i: usize = key.strip_prefix('k')?.parse().ok()?;
        (i < self.bits.len() * 64 && key.len() == 1 + itoa::Buffer::new().format(i).len()).then_some(i)
    }

    /// Records a key; `state`: from a state page, where each key comes once.
    pub fn add(&mut self, key: &str, state: bool, seeded: usize) {
        let Some(i) = self.index(key).filter(|&i| i < seeded) else {
            self.foreign += 1;
            return;
        };
        let (w, b) = (i / 64, 1u64 << (i % 64));
        if self.bits[w] & b == 0 {
            self.bits[w] |= b;
            self.distinct += 1;
        } else if state {
            self.repeated += 1;
        }
    }
}

/// One reply to a state subscribe, as far as the sync reads it.
#[derive(Deserialize, Default)]
struct Envelope {
    #[serde(default)]
    id: u32,
    subscribe: Option<Page>,
    error: Option<ErrorBody>,
    push: Option<Push>,
}

#[derive(Deserialize)]
struct ErrorBody {
    #[serde(default)]
    code: u32,
    #[serde(default)]
    message: String,
}

#[derive(Deserialize)]
struct Push {
    disconnect: Option<Disconnect>,
}

#[derive(Deserialize)]
struct Disconnect {
    #[serde(default)]
    code: u16,
    #[serde(default)]
    reason: String,
}

#[derive(Deserialize, Default)]
struct Page {
    #[serde(default)]
    phase: i32,
    #[serde(default)]
    cursor: String,
    #[serde(default)]
    offset: u64,
    #[serde(default)]
    epoch: String,
    #[serde(default)]
    state: Vec<Entry>,
    #[serde(default)]
    publications: Vec<Entry>,
}

#[derive(Deserialize)]
struct Entry {
    #[serde(default)]
    key: String,
}

/// Reads one message of a frame: the reply to command `id` (`None`: something else).
fn page_of(line: &[u8], id: u32) -> Result<Option<Page>, ClientErr> {
    let e: Envelope = serde_json::from_slice(line)
        .map_err(|e| ClientErr::Io(format!("a reply that is not JSON ({e}): {}", snippet(line))))?;
    if let Some(d) = e.push.and_then(|p| p.disconnect) {
        return Err(ClientErr::Closed(d.code, d.reason));
    }
    if e.id != id {
        return Ok(None);
    }
    if let Some(err) = e.error {
        return Err(error_reply("subscribe", &format!("{} {}", err.code, err.message)));
    }
    e.subscribe.map(Some).ok_or_else(|| ClientErr::Io(format!("a subscribe reply without a result: {}", snippet(line))))
}

fn snippet(b: &[u8]) -> String {
    String::from_utf8_lossy(&b[..b.len().min(200)]).into_owned()
}

/// What one subscriber's sync came to.
pub struct Synced {
    pub pages: u64,
    pub keys: u64,
    pub set: KeySet,
}

/// Loads the state page by page until the reply that makes the subscription live. The frame
/// of that reply goes to `track`: the updates since the first page come in it, and pushes may
/// follow it there.
pub async fn sync(o: &MapOpts, local: &Local, c: &mut WsClient, track: &RefCell<Track>) -> Result<Synced, ClientErr> {
    let mut set = KeySet::new(o.keys);
    let (mut cursor, mut offset, mut epoch) = (String::new(), 0u64, String::new());
    let (mut pages, mut keys) = (0u64, 0u64);
    for id in 2u32.. {
        let mut sub = json!({"channel": o.channel, "type": 1, "phase": 2});
        if let Some(l) = o.page_size {
            sub["limit"] = json!(l);
        }
        if !cursor.is_empty() {
            (sub["cursor"], sub["offset"], sub["epoch"]) = (json!(cursor), json!(offset), json!(epoch));
        }
        c.send(json!({"id": id, "subscribe": sub}).to_string().as_bytes()).await?;
        let (page, frame) = loop {
            let Some(data) = c.next().await? else { continue };
            let mut found = None;
            for line in data.split(|&b| b == b'\n').filter(|l| !l.trim_ascii().is_empty()) {
                if line.trim_ascii() == b"{}" {
                    c.pong().await?;
                } else if found.is_none() {
                    found = page_of(line, id)?;
                }
            }
            if let Some(p) = found {
                break (p, data);
            }
        };
        pages += 1;
        keys += page.state.len() as u64;
        for e in &page.state {
            set.add(&e.key, true, o.keys);
        }
        if page.phase == 2 {
            if page.cursor.is_empty() {
                return Err(ClientErr::Io("a state page (phase 2) without a cursor".into()));
            }
            if epoch.is_empty() {
                (offset, epoch) = (page.offset, page.epoch);
            }
            cursor = page.cursor;
            continue;
        }
        keys += page.publications.len() as u64;
        for e in &page.publications {
            set.add(&e.key, false, o.keys);
        }
        local.deliver(&mut track.borrow_mut(), &frame);
        break;
    }
    Ok(Synced { pages, keys, set })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_set_counts_distinct_repeated_and_foreign() {
        let mut s = KeySet::new(100);
        for k in ["k0", "k99", "k5", "k5", "k100", "x1", "k05", "k"] {
            s.add(k, true, 100);
        }
        assert_eq!((s.distinct, s.repeated, s.foreign), (3, 1, 4));
        // A key again in the live reply's publications is an update, not a repeat.
        s.add("k0", false, 100);
        assert_eq!((s.distinct, s.repeated), (3, 1));
    }

    #[test]
    fn reads_state_pages_and_refusals() {
        let page = br#"{"id":3,"subscribe":{"type":1,"phase":2,"cursor":"k1","offset":7,"epoch":"e","state":[{"data":{"v":0},"offset":1,"key":"k0"},{"data":{"v":1},"offset":2,"key":"k1"}]}}"#;
        let p = page_of(page, 3).unwrap().unwrap();
        assert_eq!((p.phase, p.cursor.as_str(), p.offset, p.epoch.as_str(), p.state.len()), (2, "k1", 7, "e", 2));
        assert!(page_of(page, 4).unwrap().is_none(), "another command's reply");
        let live = br#"{"id":4,"subscribe":{"type":1,"recoverable":true,"offset":9,"publications":[{"data":{"t":1},"offset":8,"key":"k2"}]}}"#;
        let p = page_of(live, 4).unwrap().unwrap();
        assert_eq!((p.phase, p.publications.len()), (0, 1));
        let refused = br#"{"id":2,"error":{"code":107,"message":"bad request"}}"#;
        assert!(matches!(page_of(refused, 2), Err(ClientErr::Refused { code: 107, .. })));
        let gone = br#"{"push":{"disconnect":{"code":3001,"reason":"shutdown"}}}"#;
        assert!(matches!(page_of(gone, 2), Err(ClientErr::Closed(3001, r)) if r == "shutdown"));
    }
}
