//! A number for this node that no other live node sharing the Redis holds (0-1023): claimed
//! as `<prefix>.gyre.node_number.<n>` with `SET NX` and a TTL, renewed while the node runs.
//! Gateway client ids carry it (`crate::gateway`), so two nodes never mint the same id. A node
//! that loses its claim (Redis lost the key, or it was unreachable for longer than the TTL)
//! claims a number again.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;

use super::conn::Conn;
use super::resp::Value;

/// Numbers a node can hold.
pub const COUNT: u64 = 1024;
/// Not claimed (yet).
pub const NONE: u64 = u64::MAX;
/// How long a claim lives without renewal.
const TTL: Duration = Duration::from_secs(30);
/// How often it is renewed.
const RENEW: Duration = Duration::from_secs(5);

fn key(prefix: &str, n: u64) -> Bytes {
    Bytes::from(format!("{prefix}.gyre.node_number.{n}"))
}

async fn call(conn: &Conn, args: Vec<Bytes>) -> Option<Value> {
    let (done, reply) = crate::notify::oneshot();
    conn.request(&args, Box::new(done));
    reply.await.ok()
}

/// Claims a number and keeps it (in `out`) for as long as the task runs. `start` is where
/// the search begins (a hash of the node's id, so nodes rarely contend for the same number).
pub async fn keep(conn: &Conn, prefix: &str, uid: &str, start: u64, out: &AtomicU64) {
    let ttl_ms = Bytes::from(TTL.as_millis().to_string());
    let uid = Bytes::from(uid.to_string());
    loop {
        let held = out.load(Ordering::Relaxed);
        if held != NONE {
            // Renew while it is still ours.
            let k = key(prefix, held);
            match call(conn, vec![Bytes::from_static(b"GET"), k.clone()]).await {
                Some(Value::Bulk(v)) if v == uid => {
                    let set = vec![Bytes::from_static(b"PEXPIRE"), k, ttl_ms.clone()];
                    let _ = call(conn, set).await;
                }
                // Unreachable: keep the number for now and try again.
                None => {}
                Some(_) => {
                    tracing::warn!(number = held, "this node's number was lost: claiming one again");
                    out.store(NONE, Ordering::Relaxed);
                    continue;
                }
            }
            monoio::time::sleep(RENEW).await;
            continue;
        }
        let mut claimed = false;
        for i in 0..COUNT {
            let n = (start + i) % COUNT;
            let set = vec![
                Bytes::from_static(b"SET"),
                key(prefix, n),
                uid.clone(),
                Bytes::from_static(b"NX"),
                Bytes::from_static(b"PX"),
                ttl_ms.clone(),
            ];
            match call(conn, set).await {
                Some(Value::Simple(s)) if s.as_ref() == b"OK" => {
                    out.store(n, Ordering::Relaxed);
                    tracing::info!(number = n, "node number claimed");
                    claimed = true;
                    break;
                }
                // Taken: the next one.
                Some(_) => {}
                // Unreachable: try again later.
                None => break,
            }
        }
        if !claimed {
            monoio::time::sleep(Duration::from_millis(500)).await;
        }
    }
}
