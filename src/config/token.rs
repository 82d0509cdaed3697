//! `client.token` and `client.subscription_token`: how connection and subscription tokens are
//! verified (see [`crate::token::Verifier`]).

use serde::{Deserialize, Serialize};

/// How tokens are verified (`client.token`, and `client.subscription_token` when enabled);
/// see [`crate::token::Verifier`].
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Token {
    /// HS256/HS384/HS512.
    pub hmac_secret_key: String,
    /// Also accepted for HMAC tokens (key rotation), until
    /// `hmac_previous_secret_key_valid_until` (Unix seconds; 0 = no limit).
    pub hmac_previous_secret_key: String,
    pub hmac_previous_secret_key_valid_until: i64,
    /// PEM (`PUBLIC KEY` or `CERTIFICATE`): RS256/RS384/RS512.
    pub rsa_public_key: String,
    /// PEM (`PUBLIC KEY` or `CERTIFICATE`), P-256 (ES256) or P-384 (ES384).
    pub ecdsa_public_key: String,
    /// JWKS URL (http or https), possibly a template with `{{name}}` placeholders filled from
    /// the named groups of `issuer_regex`/`audience_regex`. When set, the keys above are not
    /// used.
    pub jwks_public_endpoint: String,
    pub audience: String,
    pub audience_regex: String,
    pub issuer: String,
    pub issuer_regex: String,
    pub user_id_claim: String,
    pub insecure_skip_jwks_endpoint_safety_check: bool,
}

impl Token {
    /// What can be checked without building the keys (`crate::token::check_config` parses the
    /// keys and checks the JWKS endpoint); `at` is the section's path, for errors.
    pub(super) fn validate(&self, at: &str) -> Result<(), String> {
        let claim = &self.user_id_claim;
        if !claim.is_empty() && !claim.bytes().all(|b| b.is_ascii_alphabetic() || b == b'_') {
            return Err(format!("{at}.user_id_claim: invalid claim name {claim:?} (must match ^[a-zA-Z_]+$)"));
        }
        if !self.audience.is_empty() && !self.audience_regex.is_empty() {
            return Err(format!(
                "{at}.audience_regex: can not use both audience and audience_regex, configure only one of them"
            ));
        }
        if !self.issuer.is_empty() && !self.issuer_regex.is_empty() {
            return Err(format!(
                "{at}.issuer_regex: can not use both issuer and issuer_regex, configure only one of them"
            ));
        }
        for (name, pattern) in [("audience_regex", &self.audience_regex), ("issuer_regex", &self.issuer_regex)] {
            super::ChannelRegex::new(pattern).map_err(|e| format!("{at}.{name}: {e}"))?;
        }
        Ok(())
    }

    /// Some key other than the HMAC secret is configured.
    pub fn has_public_keys(&self) -> bool {
        !self.rsa_public_key.is_empty() || !self.ecdsa_public_key.is_empty() || !self.jwks_public_endpoint.is_empty()
    }
}

/// With `enabled`, subscription tokens are verified with these options instead of
/// `client.token`'s.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct SubscriptionToken {
    pub enabled: bool,
    #[serde(flatten)]
    pub token: Token,
}
