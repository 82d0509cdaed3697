//! The poll loop of a shared poll channel and its backend calls: every `refresh_interval`
//! the channel's tracked keys are sent to the backend (`channel.proxy.shared_poll_refresh` or
//! the namespace's named proxy) in batches of `refresh_batch_size`, spread over the interval;
//! keys tracked without data at hand are polled at once. The body is Centrifugo's:
//! `{"channel","items":[{"key","version"}]}` answered by
//! `{"result":{"items":[{"key","data","version","removed"}],"epoch"}}`; over gRPC the
//! `SharedPollRefresh` method of the proxy service, with the same fields.

use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use serde::Deserialize;
use serde_json::value::RawValue;

use super::{apply, backend, cycle_keys, hub, take_notified, Item};
use crate::proxy::grpc::{self, pb};
use crate::proxy::{CallError, Headers, Proxy};
use crate::runtime::worker::Worker;

/// The poll loop of channel state `gen` (ends with the state).
pub async fn run(w: Rc<Worker>, channel: Arc<str>, gen: u64) {
    let mut next = Instant::now() + interval_of(&w, &channel, gen).unwrap_or(Duration::from_secs(10));
    loop {
        monoio::time::sleep(next.saturating_duration_since(Instant::now())).await;
        let started = Instant::now();
        let Some((chunks, interval)) = cycle_keys(&w, &channel, gen) else { return };
        next = started + interval;
        // Batches go out spread over the interval, each on its own.
        let spread = if chunks.len() > 1 { interval / chunks.len() as u32 } else { Duration::ZERO };
        for (i, chunk) in chunks.into_iter().enumerate() {
            if i > 0 && !spread.is_zero() {
                monoio::time::sleep(spread).await;
            }
            monoio::spawn(poll(w.clone(), channel.clone(), gen, chunk));
        }
    }
}

fn interval_of(w: &Worker, channel: &str, gen: u64) -> Option<Duration> {
    hub(w).chans.borrow().get(channel).filter(|c| c.gen == gen).map(|c| c.opts.refresh_interval())
}

/// Polls the keys queued for an immediate poll (after the current loop turn, so a track
/// request's keys go in one call).
pub async fn notified(w: Rc<Worker>, channel: Arc<str>, gen: u64) {
    monoio::time::sleep(Duration::from_millis(1)).await;
    let Some(chunks) = take_notified(&w, &channel, gen) else { return };
    for chunk in chunks {
        monoio::spawn(poll(w.clone(), channel.clone(), gen, chunk));
    }
}

/// One backend call for `items` (key, version) of channel state `gen`, and its answer
/// applied. A failed call is logged and counted; the keys are polled again next cycle.
async fn poll(w: Rc<Worker>, channel: Arc<str>, gen: u64, items: Vec<(Arc<str>, u64)>) {
    if items.is_empty() {
        return;
    }
    let Some(proxy) = backend(&w, &channel, gen) else { return };
    let Some(proxy) = proxy else {
        tracing::warn!(%channel, "shared poll channel without a refresh proxy");
        return;
    };
    let limit = per_worker_limit(&w);
    let h = hub(&w);
    while limit > 0 && h.in_flight.get() >= limit {
        monoio::time::sleep(Duration::from_millis(2)).await;
    }
    h.in_flight.set(h.in_flight.get() + 1);
    let r = call(&w, &proxy, &channel, &items).await;
    h.in_flight.set(h.in_flight.get() - 1);
    // (A failed call is logged and counted by `measured`.)
    if let Ok((epoch, items)) = r {
        apply(&w, &channel, gen, &epoch, items);
    }
}

/// `shared_poll.concurrency_limit` shared out among the workers (0: no limit).
fn per_worker_limit(w: &Worker) -> usize {
    let limit = w.cfg.shared_poll.concurrency_limit;
    if limit == 0 {
        0
    } else {
        limit.div_ceil(w.workers.max(1))
    }
}

/// Calls the backend (HTTP or gRPC) and decodes the answer: (epoch, items).
async fn call(
    w: &Rc<Worker>,
    proxy: &Arc<Proxy>,
    channel: &str,
    items: &[(Arc<str>, u64)],
) -> Result<(String, Vec<Item>), CallError> {
    if proxy.is_grpc() {
        let msg = grpc_request(channel, items);
        return crate::proxy::measured(proxy, async {
            let r = crate::proxy::on_grpc_thread(w, proxy, |done| grpc::shared_poll_refresh(proxy, msg, done)).await;
            grpc_decode(r?)
        })
        .await;
    }
    let body = encode(channel, items);
    let headers: Headers = proxy.conf.http.static_headers.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    crate::proxy::measured(proxy, async {
        let a = crate::proxy::post(w, proxy, &headers, &body).await?;
        if a.status == 200 {
            decode(&a.body)
        } else {
            Err(CallError::Status(a.status))
        }
    })
    .await
}

/// `{"channel":"c","items":[{"key":"k","version":3},{"key":"j"}]}` (zero versions left out).
pub fn encode(channel: &str, items: &[(Arc<str>, u64)]) -> Vec<u8> {
    let mut out = Vec::with_capacity(32 + items.len() * 24);
    out.extend_from_slice(b"{\"channel\":");
    crate::wire::json::string(&mut out, channel);
    out.extend_from_slice(b",\"items\":[");
    for (i, (key, version)) in items.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(b"{\"key\":");
        crate::wire::json::string(&mut out, key);
        if *version > 0 {
            out.extend_from_slice(b",\"version\":");
            out.extend_from_slice(version.to_string().as_bytes());
        }
        out.push(b'}');
    }
    out.extend_from_slice(b"]}");
    out
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct Answer<'a> {
    #[serde(borrow)]
    result: Option<ResultJ<'a>>,
    error: Option<ErrorJ>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct ResultJ<'a> {
    #[serde(borrow)]
    items: Vec<ItemJ<'a>>,
    epoch: String,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct ItemJ<'a> {
    key: String,
    #[serde(borrow)]
    data: Option<&'a RawValue>,
    version: u64,
    removed: bool,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct ErrorJ {
    code: u32,
    message: String,
}

/// The backend's answer: (epoch, items), or the error it answered with.
pub fn decode(body: &[u8]) -> Result<(String, Vec<Item>), CallError> {
    let a: Answer = serde_json::from_slice(body).map_err(|e| CallError::Decode(e.to_string()))?;
    if let Some(e) = a.error {
        return Err(CallError::Decode(format!("backend error {}: {}", e.code, e.message)));
    }
    let Some(r) = a.result else { return Ok((String::new(), Vec::new())) };
    let items = r
        .items
        .into_iter()
        .filter(|i| !i.key.is_empty())
        .map(|i| Item {
            key: i.key,
            data: i.data.map(|d| Bytes::copy_from_slice(d.get().as_bytes())),
            version: i.version,
            removed: i.removed,
        })
        .collect();
    Ok((r.epoch, items))
}

/// The gRPC request of `items` (key, version).
fn grpc_request(channel: &str, items: &[(Arc<str>, u64)]) -> pb::SharedPollRefreshRequest {
    let items =
        items.iter().map(|(key, version)| pb::SharedPollRefreshItem { key: key.to_string(), version: *version });
    pb::SharedPollRefreshRequest { channel: channel.to_string(), items: items.collect() }
}

/// The gRPC answer as [`decode`] reads a JSON one (empty `data` is none).
fn grpc_decode(r: pb::SharedPollRefreshResponse) -> Result<(String, Vec<Item>), CallError> {
    if let Some(e) = r.error {
        return Err(CallError::Decode(format!("backend error {}: {}", e.code, e.message)));
    }
    let Some(r) = r.result else { return Ok((String::new(), Vec::new())) };
    let items = r
        .items
        .into_iter()
        .filter(|i| !i.key.is_empty())
        .map(|i| Item {
            key: i.key,
            data: (!i.data.is_empty()).then_some(i.data),
            version: i.version,
            removed: i.removed,
        })
        .collect();
    Ok((r.epoch, items))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_body() {
        let items = vec![(Arc::from("a"), 0), (Arc::from("b\""), 7)];
        assert_eq!(
            String::from_utf8(encode("prices", &items)).unwrap(),
            r#"{"channel":"prices","items":[{"key":"a"},{"key":"b\"","version":7}]}"#
        );
    }

    #[test]
    fn answers() {
        let (epoch, items) = decode(
            br#"{"result":{"items":[{"key":"a","data":{"p":1},"version":3},{"key":"b","removed":true},{"data":1}],"epoch":"e1"}}"#,
        )
        .unwrap();
        assert_eq!(epoch, "e1");
        assert_eq!(items.len(), 2, "an item without key is dropped");
        assert_eq!(
            (items[0].key.as_str(), items[0].data.as_deref(), items[0].version),
            ("a", Some(&b"{\"p\":1}"[..]), 3)
        );
        assert!(items[1].removed && items[1].data.is_none());
        assert!(decode(br#"{"result":{}}"#).unwrap().1.is_empty());
        assert!(decode(br#"{}"#).unwrap().1.is_empty());
        assert!(decode(br#"{"error":{"code":1000,"message":"down"}}"#).is_err());
        assert!(decode(b"not json").is_err());
    }

    #[test]
    fn grpc_answers() {
        let req = grpc_request("prices", &[(Arc::from("a"), 0), (Arc::from("b"), 7)]);
        assert_eq!((req.channel.as_str(), req.items.len(), req.items[1].version), ("prices", 2, 7));
        let item = |key: &str, data: &'static [u8], version, removed| pb::SharedPollRefreshResultItem {
            key: key.into(),
            data: Bytes::from_static(data),
            version,
            removed,
            prev_data: Bytes::new(),
        };
        let result = pb::SharedPollRefreshResult {
            items: vec![item("a", b"{\"p\":1}", 3, false), item("b", b"", 0, true), item("", b"1", 1, false)],
            epoch: "e1".into(),
        };
        let (epoch, items) = grpc_decode(pb::SharedPollRefreshResponse { result: Some(result), error: None }).unwrap();
        assert_eq!(epoch, "e1");
        assert_eq!(items.len(), 2, "an item without key is dropped");
        assert_eq!((items[0].data.as_deref(), items[0].version), (Some(&b"{\"p\":1}"[..]), 3));
        assert!(items[1].removed && items[1].data.is_none());
        assert!(grpc_decode(pb::SharedPollRefreshResponse::default()).unwrap().1.is_empty());
        let e = pb::Error { code: 1000, message: "down".into(), temporary: false };
        assert!(grpc_decode(pb::SharedPollRefreshResponse { result: None, error: Some(e) }).is_err());
    }
}
