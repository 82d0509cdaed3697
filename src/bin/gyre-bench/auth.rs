//! How the tool's clients authenticate: a fixed connection token, a token minted per client
//! with an HMAC secret, or none (a connect proxy decides, or anonymous connects are allowed).

use clap::Args;
use serde_json::{Map, Value};

use crate::Fail;

/// The connection-token options, the same for every scenario that opens clients.
#[derive(Args, Debug, Clone, Default)]
pub struct ClientAuth {
    /// Connection token used by every client.
    #[arg(long)]
    pub token: Option<String>,
    /// Mint an HS256 connection token per client with this secret (user `<user>-<i>`).
    /// Neither this nor --token: clients connect without a token (a connect proxy decides, or
    /// anonymous connects are allowed).
    #[arg(long)]
    pub hmac_secret: Option<String>,
    /// User ID prefix for minted tokens.
    #[arg(long, default_value = "bench")]
    pub user: String,
}

impl ClientAuth {
    /// The options are usable together.
    pub fn check(&self) -> Result<(), Fail> {
        if self.token.is_some() && self.hmac_secret.is_some() {
            return Err(Fail::setup("--token and --hmac-secret exclude each other"));
        }
        Ok(())
    }

    /// Clients connect without a token.
    pub fn is_none(&self) -> bool {
        self.token.is_none() && self.hmac_secret.is_none()
    }

    /// How clients authenticate, for the run's table and JSON.
    pub fn describe(&self) -> &'static str {
        match (&self.token, &self.hmac_secret) {
            (Some(_), _) => "token",
            (None, Some(_)) => "minted tokens",
            (None, None) => "no token",
        }
    }

    /// The token of client `i` (empty: none); a minted one carries `claims` besides its user.
    pub fn token_for(&self, i: usize, claims: impl FnOnce() -> Map<String, Value>) -> Result<String, String> {
        match (&self.token, &self.hmac_secret) {
            (Some(t), _) => Ok(t.clone()),
            (None, Some(secret)) => {
                gyre::token::generate_connection_token(secret, &format!("{}-{i}", self.user), None, claims())
                    .map_err(|e| format!("cannot mint a token: {e}"))
            }
            (None, None) => Ok(String::new()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn auth(token: Option<&str>, secret: Option<&str>) -> ClientAuth {
        ClientAuth { token: token.map(Into::into), hmac_secret: secret.map(Into::into), user: "u".into() }
    }

    #[test]
    fn tokens_and_descriptions() {
        assert!(auth(Some("t"), Some("s")).check().is_err());
        assert_eq!(auth(Some("t"), None).token_for(3, Map::new).unwrap(), "t");
        assert_eq!(auth(None, None).token_for(3, Map::new).unwrap(), "");
        assert!(auth(None, None).is_none());
        let minted = auth(None, Some("s")).token_for(3, Map::new).unwrap();
        assert_eq!(minted.split('.').count(), 3, "a JWT: {minted}");
        assert_ne!(minted, auth(None, Some("s")).token_for(4, Map::new).unwrap(), "one per client");
        let described: Vec<_> =
            [auth(Some("t"), None), auth(None, Some("s")), auth(None, None)].iter().map(ClientAuth::describe).collect();
        assert_eq!(described, ["token", "minted tokens", "no token"]);
    }
}
