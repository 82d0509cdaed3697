//! TLS options as Centrifugo writes them everywhere (`http_server.tls`,
//! `http_server.internal_tls`, `grpc_api.tls`, `uni_grpc.tls`, a gRPC proxy's `grpc.tls`),
//! PEM values read as Centrifugo reads them (PEM text, base64 of PEM, or a file path), and
//! the rustls configuration of a listener built from them.
//!
//! Certificates are read once, when the configuration is loaded (Centrifugo reloads none
//! either); a listener whose certificate or key cannot be used stops the start-up and fails
//! `checkconfig`.

use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use serde::{Deserialize, Serialize};

/// v5 names of the listeners' TLS options (a file path or PEM under either spelling).
#[rustfmt::skip]
pub(crate) const V5_NAMES: &[(&str, &str)] = &[
    ("tls",                                   "http_server.tls.enabled"),
    ("tls_key",                               "http_server.tls.key_pem"),
    ("tls_cert",                              "http_server.tls.cert_pem"),
    ("tls_cert_pem",                          "http_server.tls.cert_pem"),
    ("tls_key_pem",                           "http_server.tls.key_pem"),
    ("tls_root_ca",                           "http_server.tls.server_ca_pem"),
    ("tls_root_ca_pem",                       "http_server.tls.server_ca_pem"),
    ("tls_client_ca",                         "http_server.tls.client_ca_pem"),
    ("tls_client_ca_pem",                     "http_server.tls.client_ca_pem"),
    ("tls_server_name",                       "http_server.tls.server_name"),
    ("tls_insecure_skip_verify",              "http_server.tls.insecure_skip_verify"),
    ("tls_external",                          "http_server.tls_external"),
    ("grpc_api_tls",                          "grpc_api.tls.enabled"),
    ("grpc_api_tls_key",                      "grpc_api.tls.key_pem"),
    ("grpc_api_tls_cert",                     "grpc_api.tls.cert_pem"),
    ("grpc_api_tls_cert_pem",                 "grpc_api.tls.cert_pem"),
    ("grpc_api_tls_key_pem",                  "grpc_api.tls.key_pem"),
    ("grpc_api_tls_root_ca",                  "grpc_api.tls.server_ca_pem"),
    ("grpc_api_tls_root_ca_pem",              "grpc_api.tls.server_ca_pem"),
    ("grpc_api_tls_client_ca",                "grpc_api.tls.client_ca_pem"),
    ("grpc_api_tls_client_ca_pem",            "grpc_api.tls.client_ca_pem"),
    ("grpc_api_tls_server_name",              "grpc_api.tls.server_name"),
    ("grpc_api_tls_insecure_skip_verify",     "grpc_api.tls.insecure_skip_verify"),
    ("uni_grpc_tls",                          "uni_grpc.tls.enabled"),
    ("uni_grpc_tls_key",                      "uni_grpc.tls.key_pem"),
    ("uni_grpc_tls_cert",                     "uni_grpc.tls.cert_pem"),
    ("uni_grpc_tls_cert_pem",                 "uni_grpc.tls.cert_pem"),
    ("uni_grpc_tls_key_pem",                  "uni_grpc.tls.key_pem"),
    ("uni_grpc_tls_root_ca",                  "uni_grpc.tls.server_ca_pem"),
    ("uni_grpc_tls_root_ca_pem",              "uni_grpc.tls.server_ca_pem"),
    ("uni_grpc_tls_client_ca",                "uni_grpc.tls.client_ca_pem"),
    ("uni_grpc_tls_client_ca_pem",            "uni_grpc.tls.client_ca_pem"),
    ("uni_grpc_tls_server_name",              "uni_grpc.tls.server_name"),
    ("uni_grpc_tls_insecure_skip_verify",     "uni_grpc.tls.insecure_skip_verify"),
];

/// One `tls` section.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(default)]
pub struct Tls {
    pub enabled: bool,
    /// Certificate and key: of the listener (server side) or of this server's connection to
    /// a backend (mutual TLS, client side). A file path, PEM text or base64 of PEM.
    pub cert_pem: String,
    pub key_pem: String,
    /// Client side: the CA that signs the backend's certificate (else the system roots).
    pub server_ca_pem: String,
    /// Server side: clients must present a certificate signed by this CA (mutual TLS).
    pub client_ca_pem: String,
    /// Client side only.
    pub insecure_skip_verify: bool,
    /// Client side: the name checked against the backend's certificate.
    pub server_name: String,
}

/// A PEM option's text: the option itself when it holds PEM, else the file it names, else
/// its base64 decoding. `at` names the section in errors, `kind` is what a `-----BEGIN ...`
/// line of it must name.
pub fn pem(at: &str, option: &str, value: &str, kind: &str) -> Result<String, String> {
    use base64::Engine as _;
    let is_pem = |s: &str| s.contains("-----BEGIN ") && s.contains(kind);
    if is_pem(value) {
        return Ok(value.to_string());
    }
    if let Ok(text) = std::fs::read_to_string(value) {
        return if is_pem(&text) {
            Ok(text)
        } else {
            Err(format!("{at}.{option}: the file {value:?} holds no PEM {kind}"))
        };
    }
    let compact: String = value.chars().filter(|c| !c.is_ascii_whitespace()).collect();
    match base64::engine::general_purpose::STANDARD
        .decode(compact.as_bytes())
        .ok()
        .and_then(|b| String::from_utf8(b).ok())
    {
        Some(text) if is_pem(&text) => Ok(text),
        _ => Err(format!("{at}.{option}: neither a readable file, PEM text nor base64 of PEM ({kind})")),
    }
}

/// The certificates of a PEM option.
fn certificates(at: &str, option: &str, value: &str) -> Result<Vec<CertificateDer<'static>>, String> {
    let text = pem(at, option, value, "CERTIFICATE")?;
    let certs = CertificateDer::pem_slice_iter(text.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("{at}.{option}: {e}"))?;
    if certs.is_empty() {
        return Err(format!("{at}.{option}: no certificate in it"));
    }
    Ok(certs)
}

/// The rustls configuration of a listener with the TLS options `t` of section `at`
/// (`http_server.tls`, ...): its certificate chain and key, TLS 1.2 and 1.3, HTTP/1.1 by
/// ALPN (`alpn`), and with `client_ca_pem` a client certificate required and verified.
pub fn server_config(at: &str, t: &Tls, alpn: &[&[u8]]) -> Result<Arc<rustls::ServerConfig>, String> {
    if t.cert_pem.is_empty() || t.key_pem.is_empty() {
        return Err(format!("{at}: cert_pem and key_pem are required when TLS is enabled"));
    }
    let chain = certificates(at, "cert_pem", &t.cert_pem)?;
    let key_text = pem(at, "key_pem", &t.key_pem, "PRIVATE KEY")?;
    let key = PrivateKeyDer::from_pem_slice(key_text.as_bytes()).map_err(|e| format!("{at}.key_pem: {e}"))?;
    // ring, as everywhere else in the binary (tonic, the JWKS fetcher); its lack of the
    // post-quantum key exchanges is why rustls marks this deprecated.
    #[allow(deprecated)]
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| format!("{at}: {e}"))?;
    let builder = if t.client_ca_pem.is_empty() {
        builder.with_no_client_auth()
    } else {
        let mut roots = rustls::RootCertStore::empty();
        for c in certificates(at, "client_ca_pem", &t.client_ca_pem)? {
            roots.add(c).map_err(|e| format!("{at}.client_ca_pem: {e}"))?;
        }
        let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
            .build()
            .map_err(|e| format!("{at}.client_ca_pem: {e}"))?;
        builder.with_client_cert_verifier(verifier)
    };
    let mut cfg = builder.with_single_cert(chain, key).map_err(|e| format!("{at}: cert_pem and key_pem: {e}"))?;
    cfg.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok(Arc::new(cfg))
}

/// Client-side options set in a listener's TLS section: they do nothing there (as in
/// Centrifugo), which is said at start-up.
pub fn server_side_warnings(at: &str, t: &Tls) -> Vec<String> {
    let mut w = Vec::new();
    if !t.enabled {
        return w;
    }
    for (name, set) in [
        ("server_ca_pem", !t.server_ca_pem.is_empty()),
        ("insecure_skip_verify", t.insecure_skip_verify),
        ("server_name", !t.server_name.is_empty()),
    ] {
        if set {
            w.push(format!("{at}.{name} has no effect on a listener (it is a client-side option)"));
        }
    }
    w
}

/// The listeners' TLS sections that are enabled, by name.
fn listener_sections(c: &super::Config) -> [(&'static str, &Tls); 4] {
    [
        ("http_server.tls", &c.http_server.tls),
        ("http_server.internal_tls", &c.http_server.internal_tls),
        ("grpc_api.tls", &c.grpc_api.tls),
        ("uni_grpc.tls", &c.uni_grpc.tls),
    ]
}

/// Every enabled listener TLS section must give a usable certificate and key (and client CA).
pub(super) fn validate(c: &super::Config) -> Result<(), String> {
    for (at, t) in listener_sections(c) {
        if t.enabled {
            server_config(at, t, &[])?;
        }
    }
    Ok(())
}

/// What start-up says about the listeners' TLS sections.
pub(super) fn warnings(c: &super::Config) -> Vec<String> {
    let mut w: Vec<String> = listener_sections(c).into_iter().flat_map(|(at, t)| server_side_warnings(at, t)).collect();
    let r = &c.engine.redis.tls;
    if c.engine.kind == "redis" && r.enabled && !r.client_ca_pem.is_empty() {
        w.push(
            "engine.redis.tls.client_ca_pem has no effect on a connection to Redis (it is a server-side option)".into(),
        );
    }
    w
}

/// The rustls configuration of a connection this server opens (to Redis) with the TLS
/// options `t` of section `at`: the server's certificate checked against `server_ca_pem` (else
/// the system's roots) unless `insecure_skip_verify`, and with `cert_pem`/`key_pem` a client
/// certificate (mutual TLS).
pub fn client_config(at: &str, t: &Tls) -> Result<Arc<rustls::ClientConfig>, String> {
    #[allow(deprecated)]
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| format!("{at}: {e}"))?;
    let builder = if t.insecure_skip_verify {
        builder.dangerous().with_custom_certificate_verifier(Arc::new(AnyServer(provider)))
    } else {
        let mut roots = rustls::RootCertStore::empty();
        if t.server_ca_pem.is_empty() {
            let found = rustls_native_certs::load_native_certs();
            for c in found.certs {
                let _ = roots.add(c);
            }
            if roots.is_empty() {
                return Err(format!("{at}: no system root certificates found: give server_ca_pem"));
            }
        } else {
            for c in certificates(at, "server_ca_pem", &t.server_ca_pem)? {
                roots.add(c).map_err(|e| format!("{at}.server_ca_pem: {e}"))?;
            }
        }
        builder.with_root_certificates(roots)
    };
    let cfg = match (t.cert_pem.is_empty(), t.key_pem.is_empty()) {
        (true, true) => builder.with_no_client_auth(),
        (false, false) => {
            let chain = certificates(at, "cert_pem", &t.cert_pem)?;
            let key_text = pem(at, "key_pem", &t.key_pem, "PRIVATE KEY")?;
            let key = PrivateKeyDer::from_pem_slice(key_text.as_bytes()).map_err(|e| format!("{at}.key_pem: {e}"))?;
            builder.with_client_auth_cert(chain, key).map_err(|e| format!("{at}: cert_pem and key_pem: {e}"))?
        }
        _ => return Err(format!("{at}: cert_pem and key_pem go together (a client certificate)")),
    };
    Ok(Arc::new(cfg))
}

/// The name a client connection checks the server's certificate against: `server_name`,
/// else the host it connects to.
pub fn server_name(at: &str, t: &Tls, host: &str) -> Result<rustls::pki_types::ServerName<'static>, String> {
    let name = if t.server_name.is_empty() { host } else { t.server_name.as_str() };
    rustls::pki_types::ServerName::try_from(name.to_string()).map_err(|e| format!("{at}.server_name: {name:?}: {e}"))
}

/// `insecure_skip_verify`: any certificate is accepted (its signatures over the handshake
/// are still checked).
#[derive(Debug)]
struct AnyServer(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for AnyServer {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &rustls::pki_types::ServerName<'_>,
        _ocsp_response: &[u8],
        _now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
