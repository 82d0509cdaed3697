//! Redis Sentinel: the address of a master by its name, asked of the shard's sentinels in
//! turn (`SENTINEL GET-MASTER-ADDR-BY-NAME`), over TLS with `engine.redis.sentinel_tls` and
//! authenticated with `sentinel_user`/`sentinel_password`, as Centrifugo does.

use std::net::ToSocketAddrs;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use monoio::io::{AsyncReadRent, AsyncWriteRent, AsyncWriteRentExt};

use super::resp::{self, Value};
use crate::config::redis::Sentinel;

/// Sends `cmds` on `s` and reads one reply per command (None: I/O failed or timed out).
async fn exchange<S: AsyncReadRent + AsyncWriteRent>(
    s: &mut S,
    cmds: &[Vec<Bytes>],
    limit: Duration,
) -> Option<Vec<Value>> {
    let mut out = BytesMut::new();
    for c in cmds {
        resp::encode(c, &mut out);
    }
    let (res, _) = s.write_all(out).await;
    res.ok()?;
    let mut buf = BytesMut::with_capacity(4096);
    let mut replies = Vec::new();
    while replies.len() < cmds.len() {
        match resp::decode(&mut buf) {
            Ok(Some(v)) => replies.push(v),
            Ok(None) => {
                if buf.capacity() - buf.len() < 1024 {
                    buf.reserve(4096);
                }
                let (res, b) = monoio::time::timeout(limit, crate::io::read_more(s, buf)).await.ok()?;
                buf = b;
                if !matches!(res, Ok(n) if n > 0) {
                    return None;
                }
            }
            Err(_) => return None,
        }
    }
    Some(replies)
}

/// Asks one sentinel; `Err` says why for the log.
async fn ask(sentinel: &(String, u16), s: &Sentinel, timeout: Duration) -> Result<(String, u16), String> {
    let addr = (sentinel.0.as_str(), sentinel.1)
        .to_socket_addrs()
        .ok()
        .and_then(|mut a| a.next())
        .ok_or_else(|| "cannot resolve".to_string())?;
    let tcp = monoio::time::timeout(timeout, monoio::net::TcpStream::connect(addr))
        .await
        .map_err(|_| "connect timed out".to_string())?
        .map_err(|e| e.to_string())?;
    let mut cmds: Vec<Vec<Bytes>> = Vec::new();
    if !s.password.is_empty() {
        let mut auth = vec![Bytes::from_static(b"AUTH")];
        if !s.user.is_empty() {
            auth.push(Bytes::from(s.user.clone()));
        }
        auth.push(Bytes::from(s.password.clone()));
        cmds.push(auth);
    }
    if !s.client_name.is_empty() {
        cmds.push(vec![
            Bytes::from_static(b"CLIENT"),
            Bytes::from_static(b"SETNAME"),
            Bytes::from(s.client_name.clone()),
        ]);
    }
    cmds.push(vec![
        Bytes::from_static(b"SENTINEL"),
        Bytes::from_static(b"GET-MASTER-ADDR-BY-NAME"),
        Bytes::from(s.master_name.clone()),
    ]);
    let replies = match &s.tls {
        None => {
            let mut tcp = tcp;
            exchange(&mut tcp, &cmds, timeout).await
        }
        Some(tls) => {
            let at = "engine.redis.sentinel_tls";
            let name = crate::config::tls::server_name(at, tls, &sentinel.0)?;
            let connector = monoio_rustls::TlsConnector::from(super::tls_connector(at, tls)?);
            let mut stream = monoio::time::timeout(timeout, connector.connect(name, tcp))
                .await
                .map_err(|_| "TLS handshake timed out".to_string())?
                .map_err(|e| format!("TLS handshake: {e}"))?;
            exchange(&mut stream, &cmds, timeout).await
        }
    }
    .ok_or_else(|| "no answer".to_string())?;
    for r in &replies {
        if let Value::Error(e) = r {
            return Err(String::from_utf8_lossy(e).into_owned());
        }
    }
    match replies.last() {
        Some(Value::Array(a)) if a.len() == 2 => {
            let host = a[0].bytes().map(|b| String::from_utf8_lossy(b).into_owned()).unwrap_or_default();
            let port = a[1].bytes().and_then(|b| std::str::from_utf8(b).ok()?.parse().ok());
            match port {
                Some(p) if !host.is_empty() => Ok((host, p)),
                _ => Err("a malformed master address".into()),
            }
        }
        Some(Value::Nil) | Some(Value::Array(_)) => Err(format!("no master named {:?}", s.master_name)),
        _ => Err("an unexpected reply".into()),
    }
}

/// The current address of the master, from the first sentinel that knows it.
pub async fn master(s: &Sentinel, timeout: Duration) -> Option<(String, u16)> {
    for sentinel in &s.addresses {
        match ask(sentinel, s, timeout).await {
            Ok(a) => return Some(a),
            Err(e) => {
                tracing::debug!(sentinel = %format!("{}:{}", sentinel.0, sentinel.1), error = %e, "sentinel did not give the master")
            }
        }
    }
    tracing::warn!(master = %s.master_name, "no sentinel gave the master's address");
    None
}
