//! Public keys as Centrifugo reads them: PEM text for `rsa_public_key`/`ecdsa_public_key` (a
//! `PUBLIC KEY` block, PKIX, or a `CERTIFICATE` whose key is used), and JSON Web Keys from a
//! JWKS endpoint (`RSA`, `EC` on P-256/P-384, `OKP` Ed25519).

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use jsonwebtoken::{Algorithm, DecodingKey};
use rsa::pkcs1::DecodeRsaPublicKey as _;
use serde_json::Value;

/// An ECDSA key and the one algorithm its curve allows.
#[derive(Clone)]
pub struct EcKey {
    pub key: DecodingKey,
    pub alg: Algorithm,
}

/// The DER of the first PEM block of `text` (what Go's `pem.Decode` returns): label and body.
pub(crate) fn pem_block(text: &str) -> Result<(String, Vec<u8>), String> {
    let begin = text.find("-----BEGIN ").ok_or("key must be PEM encoded")?;
    let rest = &text[begin + 11..];
    let label_end = rest.find("-----").ok_or("key must be PEM encoded")?;
    let label = rest[..label_end].to_string();
    let body = &rest[label_end + 5..];
    let end_marker = format!("-----END {label}-----");
    let end = body.find(&end_marker).ok_or("key must be PEM encoded")?;
    let b64: String = body[..end].chars().filter(|c| !c.is_ascii_whitespace()).collect();
    let der = STANDARD.decode(b64).map_err(|_| "key must be PEM encoded")?;
    Ok((label, der))
}

/// A minimal DER reader: (tag, content, rest).
pub(crate) fn der_next(d: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, d) = d.split_first()?;
    let (&l0, mut d) = d.split_first()?;
    let len = if l0 < 0x80 {
        l0 as usize
    } else {
        let n = (l0 & 0x7f) as usize;
        if n == 0 || n > 4 || d.len() < n {
            return None;
        }
        let len = d[..n].iter().fold(0usize, |a, &b| (a << 8) | b as usize);
        d = &d[n..];
        len
    };
    (d.len() >= len).then(|| (tag, &d[..len], &d[len..]))
}

/// The SubjectPublicKeyInfo inside a DER certificate, or the DER itself when it is one.
fn spki(der: &[u8]) -> Result<Vec<u8>, String> {
    let bad = || "key is neither a PKIX public key nor a certificate".to_string();
    let (tag, outer, _) = der_next(der).ok_or_else(bad)?;
    if tag != 0x30 {
        return Err(bad());
    }
    let (tag, first, after) = der_next(outer).ok_or_else(bad)?;
    if tag != 0x30 {
        return Err(bad());
    }
    // A SubjectPublicKeyInfo is SEQUENCE { SEQUENCE algorithm, BIT STRING key }; a
    // certificate is SEQUENCE { SEQUENCE tbsCertificate, ... }.
    if der_next(after).is_some_and(|(t, _, _)| t == 0x03) {
        return Ok(der.to_vec());
    }
    // tbsCertificate: [0] version (optional), serial, signature alg, issuer, validity,
    // subject, subjectPublicKeyInfo.
    let mut fields = first;
    let mut items = Vec::new();
    while let Some((tag, _, rest)) = der_next(fields) {
        let len = fields.len() - rest.len();
        items.push((tag, &fields[..len]));
        fields = rest;
    }
    let skip = usize::from(items.first().is_some_and(|(t, _)| *t == 0xa0));
    items.get(skip + 5).filter(|(t, _)| *t == 0x30).map(|(_, d)| d.to_vec()).ok_or_else(bad)
}

const OID_RSA: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01];
const OID_EC: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01];
const OID_P256: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];
const OID_P384: &[u8] = &[0x2b, 0x81, 0x04, 0x00, 0x22];
const OID_P521: &[u8] = &[0x2b, 0x81, 0x04, 0x00, 0x23];

/// (algorithm OID, parameters OID if any, key bits) of a SubjectPublicKeyInfo.
type SpkiParts<'a> = (&'a [u8], Option<&'a [u8]>, &'a [u8]);

fn spki_parts(spki: &[u8]) -> Option<SpkiParts<'_>> {
    let (_, inner, _) = der_next(spki)?;
    let (_, alg, rest) = der_next(inner)?;
    let (tag, oid, params) = der_next(alg)?;
    if tag != 0x06 {
        return None;
    }
    let param = der_next(params).filter(|(t, _, _)| *t == 0x06).map(|(_, p, _)| p);
    let (tag, bits, _) = der_next(rest)?;
    if tag != 0x03 || bits.first() != Some(&0) {
        return None;
    }
    Some((oid, param, &bits[1..]))
}

/// `client.token.rsa_public_key`.
pub fn rsa_from_pem(text: &str) -> Result<DecodingKey, String> {
    let (_, der) = pem_block(text)?;
    let spki = spki(&der)?;
    let (oid, _, bits) = spki_parts(&spki).ok_or("key is not a valid public key")?;
    if oid != OID_RSA {
        return Err("key is not a valid RSA public key".into());
    }
    rsa::RsaPublicKey::from_pkcs1_der(bits).map_err(|e| format!("key is not a valid RSA public key: {e}"))?;
    Ok(DecodingKey::from_rsa_der(bits))
}

/// `client.token.ecdsa_public_key`: P-256 keys verify ES256, P-384 keys ES384. P-521 (ES512)
/// is refused: Gyre cannot verify it.
pub fn ec_from_pem(text: &str) -> Result<EcKey, String> {
    let (_, der) = pem_block(text)?;
    let spki = spki(&der)?;
    let (oid, curve, point) = spki_parts(&spki).ok_or("key is not a valid public key")?;
    if oid != OID_EC {
        return Err("key is not a valid ECDSA public key".into());
    }
    let alg = match curve {
        Some(c) if c == OID_P256 => Algorithm::ES256,
        Some(c) if c == OID_P384 => Algorithm::ES384,
        Some(c) if c == OID_P521 => return Err("P-521 (ES512) keys are not supported".into()),
        _ => return Err("unsupported ECDSA curve (P-256 and P-384 are supported)".into()),
    };
    let key = DecodingKey::from_ec_der(point);
    // The point must be on the curve: the verifier refuses to build otherwise.
    match jsonwebtoken::crypto::verify("AA", b"", &key, alg) {
        Err(e) if matches!(e.kind(), jsonwebtoken::errors::ErrorKind::InvalidEcdsaKey) => {
            Err("key is not a valid ECDSA public key".into())
        }
        _ => Ok(EcKey { key, alg }),
    }
}

/// A key of a JWKS, with what it allows.
#[derive(Clone)]
pub enum Jwk {
    /// The key's `alg` (RS256/384/512) when the set names it.
    Rsa(DecodingKey, Option<Algorithm>),
    /// The curve's algorithm; the key's `alg` when the set names it.
    Ec(DecodingKey, Algorithm, Option<Algorithm>),
    Ed(DecodingKey),
}

impl Jwk {
    /// The algorithm a token signed with `header_alg` is verified with, or why it cannot be.
    pub fn algorithm(&self, header_alg: Algorithm) -> Result<Algorithm, &'static str> {
        use Algorithm::*;
        let alg = match self {
            Jwk::Rsa(_, Some(a)) | Jwk::Ec(_, _, Some(a)) => *a,
            Jwk::Rsa(_, None) if matches!(header_alg, RS256 | RS384 | RS512) => header_alg,
            Jwk::Ec(_, _, None) if matches!(header_alg, ES256 | ES384) => header_alg,
            Jwk::Ed(_) => EdDSA,
            _ => return Err("unsupported JWT algorithm: no match in algorithms"),
        };
        if alg != header_alg {
            return Err("algorithm mismatch");
        }
        Ok(alg)
    }

    pub fn key(&self) -> &DecodingKey {
        match self {
            Jwk::Rsa(k, _) | Jwk::Ec(k, _, _) | Jwk::Ed(k) => k,
        }
    }
}

/// Reads one key of a JWKS document (its `kid` and the key), or says why it cannot be used
/// (another key type or curve, a malformed key).
pub fn jwk(v: &Value) -> Result<(String, Jwk), String> {
    let s = |k: &str| v.get(k).and_then(Value::as_str).unwrap_or("");
    let kid = s("kid").to_string();
    let alg = match s("alg") {
        "" => None,
        a => Some(a.parse::<Algorithm>().map_err(|_| format!("unsupported alg {a:?}"))?),
    };
    let need = |k: &str| {
        let x = s(k);
        if x.is_empty() {
            Err(format!("{k} missing"))
        } else {
            Ok(x)
        }
    };
    let key = match s("kty") {
        "RSA" => {
            if alg.is_some_and(|a| !matches!(a, Algorithm::RS256 | Algorithm::RS384 | Algorithm::RS512)) {
                return Err(format!("unsupported RSA alg {:?}", s("alg")));
            }
            let k = DecodingKey::from_rsa_components(need("n")?, need("e")?).map_err(|e| e.to_string())?;
            Jwk::Rsa(k, alg)
        }
        "EC" => {
            let curve = match s("crv") {
                "P-256" => Algorithm::ES256,
                "P-384" => Algorithm::ES384,
                c => return Err(format!("unsupported curve {c:?}")),
            };
            if alg.is_some_and(|a| !matches!(a, Algorithm::ES256 | Algorithm::ES384)) {
                return Err(format!("unsupported EC alg {:?}", s("alg")));
            }
            let k = DecodingKey::from_ec_components(need("x")?, need("y")?).map_err(|e| e.to_string())?;
            Jwk::Ec(k, curve, alg)
        }
        "OKP" => {
            if s("crv") != "Ed25519" {
                return Err(format!("unsupported curve {:?}", s("crv")));
            }
            Jwk::Ed(DecodingKey::from_ed_components(need("x")?).map_err(|e| e.to_string())?)
        }
        k => return Err(format!("unsupported key type {k:?}")),
    };
    Ok((kid, key))
}
