//! `POST /api/`: the signed v1 server API of Centrifugo 1.x (see [`crate::api::v1`]), served
//! when `http_api.v1_secret` or `http_api.v1_insecure` is set.
//!
//! As Centrifugo 1.x: a JSON body (`Content-Type: application/json`) carries its signature in
//! `X-API-Sign`; any other body is a form with `data` and `sign` fields. The signature is the
//! hex HMAC-SHA256 of the data with the secret. No signature or no data: 400; a wrong
//! signature: 401; a body that is not v1 commands: 400; else 200 with one reply per command,
//! in order. Commands run one after the other.

use std::time::{SystemTime, UNIX_EPOCH};

use hmac::{Hmac, Mac};
use monoio::io::AsyncReadRent;
use sha2::Sha256;

use super::serve::{Conn, Reader, Stop};
use crate::api::v1::{self, Op};
use crate::api::Command;
use crate::exec;
use crate::wire::http::{self as codec, percent_decode, Head};

/// The hex HMAC-SHA256 of `data` with `secret`, as `cent` computes it.
pub fn sign(secret: &str, data: &[u8]) -> String {
    let mut m = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC takes any key length");
    m.update(data);
    m.finalize().into_bytes().iter().map(|b| format!("{b:02x}")).collect()
}

fn sign_ok(secret: &str, data: &[u8], given: &[u8]) -> bool {
    given.len() == 64 && super::constant_eq(sign(secret, data).as_bytes(), given)
}

/// A form field of an `application/x-www-form-urlencoded` body.
fn form_field(body: &[u8], name: &str) -> Option<Vec<u8>> {
    body.split(|&b| b == b'&').find_map(|pair| {
        let (k, v) = match pair.iter().position(|&b| b == b'=') {
            Some(i) => (&pair[..i], &pair[i + 1..]),
            None => (pair, &b""[..]),
        };
        let plus = |s: &[u8]| String::from_utf8_lossy(s).replace('+', " ");
        (percent_decode(&plus(k)) == name).then(|| percent_decode(&plus(v)).into_bytes())
    })
}

impl Conn {
    /// Answers one v1 API request.
    pub(super) async fn v1_api<R: AsyncReadRent>(&self, head: Head, r: &mut Reader<R>) -> Option<Stop> {
        let body = match self.read_body(&head, r).await {
            Ok(b) => b,
            Err(stop) => return Some(stop),
        };
        let api = &self.w.cfg.http_api;
        let json = head
            .header("content-type")
            .is_some_and(|v| v.len() >= 16 && v[..16].eq_ignore_ascii_case(b"application/json"));
        let (data, given) = if json {
            (body.to_vec(), head.header("x-api-sign").map(<[u8]>::to_vec).unwrap_or_default())
        } else {
            (form_field(&body, "data").unwrap_or_default(), form_field(&body, "sign").unwrap_or_default())
        };
        let refuse = |status: u16, why: &str| {
            tracing::info!(path = %head.path, remote = %self.remote(), "v1 API request refused: {why}");
            self.out.push_raw(codec::response(
                status,
                "text/plain; charset=utf-8",
                codec::reason(status).as_bytes(),
                head.keep_alive,
            ));
            (!head.keep_alive).then_some(Stop::Close)
        };
        if !api.v1_insecure {
            if given.is_empty() {
                return refuse(400, "no sign");
            }
            if data.is_empty() {
                return refuse(400, "no data");
            }
            if !sign_ok(&api.v1_secret, &data, &given) {
                return refuse(401, "invalid sign");
            }
        } else if data.is_empty() {
            return refuse(400, "no data");
        }
        let commands = match v1::decode(&data) {
            Ok(c) => c,
            Err(e) => return refuse(400, &e.0),
        };
        let now = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
        let mut out = Vec::with_capacity(64 * commands.len() + 2);
        out.push(b'[');
        for (i, cmd) in commands.iter().enumerate() {
            let reply = match &cmd.op {
                Op::Run(c) => exec::run(self.w.clone(), c.clone()).await,
                Op::Refused(e) => Err(*e),
                Op::Stats | Op::Node => exec::run(self.w.clone(), Command::Info).await,
            };
            if i > 0 {
                out.push(b',');
            }
            v1::encode_reply(&mut out, cmd, &reply, now, &self.w.node.uid);
        }
        out.push(b']');
        self.out.push_raw(codec::response(200, "application/json", &out, head.keep_alive));
        (!head.keep_alive).then_some(Stop::Close)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signs_as_cent_does() {
        // hmac.new(b"secret", b"[]", sha256).hexdigest()
        assert_eq!(sign("secret", b"[]"), "53364a07fcc563e712f42cfc9de1e28e1e2d39f236cee430f112203e557aea3f");
        assert!(sign_ok("secret", b"[]", sign("secret", b"[]").as_bytes()));
        assert!(!sign_ok("other", b"[]", sign("secret", b"[]").as_bytes()));
    }

    #[test]
    fn reads_form_fields() {
        let body = b"sign=abc&data=%5B%7B%22method%22%3A+%22stats%22%7D%5D";
        assert_eq!(form_field(body, "sign").unwrap(), b"abc");
        assert_eq!(form_field(body, "data").unwrap(), br#"[{"method": "stats"}]"#);
        assert!(form_field(body, "x").is_none());
    }
}
