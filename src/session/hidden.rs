//! Hidden sessions: connections the server makes for its own use (the admin page's live tail)
//! that the application must not see. A hidden session receives what it subscribes to, but
//! it is kept out of presence, emits no join or leave, and is not counted in `info`'s
//! `num_clients`/`num_users` (nor in the metrics made from them).
//!
//! A connection token makes its session hidden with the claim [`CLAIM`], whose value is an
//! HMAC-SHA256 of a fixed label keyed with the connection token secret ([`mark`]). Only the
//! server mints it (`POST /admin/tail`, behind the admin login); the token's signature alone
//! is not enough, so a token an application signed with whatever claims its users chose
//! cannot carry it by accident, and a wrong value is ignored (the session is then ordinary).

use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use serde_json::{Map, Value};
use sha2::Sha256;

/// The connection token claim that makes a session hidden.
pub const CLAIM: &str = "gyre_hidden";

const LABEL: &[u8] = b"gyre hidden session";

fn hmac(secret: &str) -> Hmac<Sha256> {
    let mut m = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC takes any key length");
    m.update(LABEL);
    m
}

/// The value of [`CLAIM`] for tokens signed with `secret` (`client.token.hmac_secret_key`).
pub fn mark(secret: &str) -> String {
    B64.encode(hmac(secret).finalize().into_bytes())
}

/// True when verified token `claims` carry the right [`CLAIM`] for `secret` (compared in
/// constant time).
pub(super) fn is_marked(secret: &str, claims: &Map<String, Value>) -> bool {
    let Some(Value::String(v)) = claims.get(CLAIM) else { return false };
    let Ok(sig) = B64.decode(v) else { return false };
    !secret.is_empty() && hmac(secret).verify_slice(&sig).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_mark_of_the_secret_hides() {
        let claims = |v: &str| Map::from_iter([(CLAIM.to_string(), Value::from(v))]);
        assert!(is_marked("s3cret", &claims(&mark("s3cret"))));
        assert!(!is_marked("s3cret", &claims(&mark("other"))));
        assert!(!is_marked("s3cret", &claims("true")));
        assert!(!is_marked("s3cret", &claims("")));
        assert!(!is_marked("", &claims(&mark(""))));
        assert!(!is_marked("s3cret", &Map::from_iter([(CLAIM.to_string(), Value::Bool(true))])));
        assert!(!is_marked("s3cret", &Map::new()));
    }
}
