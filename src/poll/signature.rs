//! Track signatures: the application backend signs the keys a user may track in a shared
//! poll channel as `iat:exp:hex`, the hex HMAC-SHA256 (with `shared_poll.hmac_secret_key`)
//! of `iat NUL exp NUL user NUL channel NUL hex(sha256(keys joined by NUL))`, as Centrifugo
//! verifies them.

use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

use crate::config::shared_poll::SharedPoll;

/// Seconds a signature is still accepted after its `exp`.
pub const GRACE_SECONDS: i64 = 5;

/// Why a batch's signature is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// Not signed by a configured key (103 permission denied).
    Invalid,
    /// Past its `exp` and the grace (109 token expired).
    Expired,
}

/// (`iat`, `exp`) of a signature; (0, 0) when malformed.
pub fn timestamps(sig: &str) -> (i64, i64) {
    let mut parts = sig.splitn(3, ':');
    match (parts.next().map(str::parse::<i64>), parts.next().map(str::parse::<i64>), parts.next()) {
        (Some(Ok(iat)), Some(Ok(exp)), Some(_)) => (iat, exp),
        _ => (0, 0),
    }
}

/// Whether `sig` signs `keys` of `channel` for `user` with `secret`.
pub fn signed_with(secret: &str, channel: &str, sig: &str, keys: &[&str], user: &str) -> bool {
    let mut parts = sig.splitn(3, ':');
    let (Some(iat), Some(exp), Some(mac_hex)) = (parts.next(), parts.next(), parts.next()) else { return false };
    let Ok(mac_bytes) = hex_decode(mac_hex) else { return false };
    let keys_hash = Sha256::digest(keys.join("\0").as_bytes());
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(secret.as_bytes()) else { return false };
    for part in [iat.as_bytes(), b"\0", exp.as_bytes(), b"\0", user.as_bytes(), b"\0", channel.as_bytes(), b"\0"] {
        mac.update(part);
    }
    mac.update(hex(&keys_hash).as_bytes());
    mac.verify_slice(&mac_bytes).is_ok()
}

/// Checks one batch's signature against the current key, then the previous one (unless the
/// signature was issued after `hmac_previous_secret_key_valid_until`); returns its `exp`.
pub fn verify(cfg: &SharedPoll, channel: &str, sig: &str, keys: &[&str], user: &str, now: i64) -> Result<i64, Refused> {
    let mut ok = signed_with(&cfg.hmac_secret_key, channel, sig, keys, user);
    if !ok && !cfg.hmac_previous_secret_key.is_empty() {
        let (iat, _) = timestamps(sig);
        let until = cfg.hmac_previous_secret_key_valid_until;
        if until > 0 && iat > until {
            return Err(Refused::Invalid);
        }
        ok = signed_with(&cfg.hmac_previous_secret_key, channel, sig, keys, user);
    }
    if !ok {
        return Err(Refused::Invalid);
    }
    let (_, exp) = timestamps(sig);
    if exp > 0 && exp + GRACE_SECONDS < now {
        return Err(Refused::Expired);
    }
    Ok(exp)
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn hex_decode(s: &str) -> Result<Vec<u8>, ()> {
    if !s.len().is_multiple_of(2) {
        return Err(());
    }
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(s.get(i..i + 2).ok_or(())?, 16).map_err(|_| ())).collect()
}

/// Signs `keys` as the application backend would (tests, the load tool, examples).
pub fn sign(secret: &str, channel: &str, keys: &[&str], user: &str, iat: i64, exp: i64) -> String {
    let keys_hash = Sha256::digest(keys.join("\0").as_bytes());
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("any key length");
    let payload = format!("{iat}\0{exp}\0{user}\0{channel}\0{}", hex(&keys_hash));
    mac.update(payload.as_bytes());
    format!("{iat}:{exp}:{}", hex(&mac.finalize().into_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signs_and_verifies() {
        let cfg = SharedPoll { hmac_secret_key: "secret".into(), ..Default::default() };
        let sig = sign("secret", "prices:eu", &["a", "b:c"], "alice", 100, 200);
        assert_eq!(timestamps(&sig), (100, 200));
        assert_eq!(verify(&cfg, "prices:eu", &sig, &["a", "b:c"], "alice", 150), Ok(200));
        assert_eq!(verify(&cfg, "prices:eu", &sig, &["a", "b:c"], "alice", 205), Ok(200), "within the grace");
        assert_eq!(verify(&cfg, "prices:eu", &sig, &["a", "b:c"], "alice", 206), Err(Refused::Expired));
        assert_eq!(verify(&cfg, "prices:eu", &sig, &["a"], "alice", 150), Err(Refused::Invalid));
        assert_eq!(verify(&cfg, "prices:eu", &sig, &["a", "b:c"], "bob", 150), Err(Refused::Invalid));
        assert_eq!(verify(&cfg, "prices", &sig, &["a", "b:c"], "alice", 150), Err(Refused::Invalid));
        assert_eq!(verify(&cfg, "prices:eu", "x", &["a"], "alice", 150), Err(Refused::Invalid));
        // Fields are NUL-separated: a colon moved between user and channel is another tuple.
        let moved = sign("secret", "eu", &["a"], "alice:prices", 100, 200);
        assert_eq!(verify(&cfg, "prices:eu", &moved, &["a"], "alice", 150), Err(Refused::Invalid));
        // Never-expiring signature.
        let forever = sign("secret", "c", &["k"], "", 100, 0);
        assert_eq!(verify(&cfg, "c", &forever, &["k"], "", i64::MAX / 2), Ok(0));
    }

    #[test]
    fn previous_key_until_its_deadline() {
        let cfg = SharedPoll {
            hmac_secret_key: "new".into(),
            hmac_previous_secret_key: "old".into(),
            hmac_previous_secret_key_valid_until: 150,
            ..Default::default()
        };
        let before = sign("old", "c", &["k"], "u", 140, 0);
        assert_eq!(verify(&cfg, "c", &before, &["k"], "u", 1000), Ok(0));
        let after = sign("old", "c", &["k"], "u", 160, 0);
        assert_eq!(verify(&cfg, "c", &after, &["k"], "u", 1000), Err(Refused::Invalid));
    }

    /// A vector computed independently: python3 -c "import hmac,hashlib;
    /// k=hashlib.sha256(b'k1\0k2').hexdigest();
    /// print(hmac.new(b's', b'1\0' + b'2\0u\0ch\0' + k.encode(), hashlib.sha256).hexdigest())"
    #[test]
    fn known_vector() {
        let sig = sign("s", "ch", &["k1", "k2"], "u", 1, 2);
        assert_eq!(sig, format!("1:2:{}", KNOWN));
    }

    const KNOWN: &str = "f00c8b1c84baf4488a2c5e106427f809c8f45747f5ddc0cbd712bf6b605c1ce1";
}
