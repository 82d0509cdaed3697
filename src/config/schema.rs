//! The option tree Gyre knows: the default [`Config`] serialized, plus the option tree of an
//! element of each array of objects. The loader checks keys and converts values against it,
//! and `defaultenv`/`configdoc` ([`super::doc`]) list it, so all three name the same options.
//! Also the rule that turns an option path into an environment variable name.

use serde_json::Value;

use super::proxy::{NamedProxy, RpcNamespace, StatusTransform};
use super::{CodeToDisconnectTransform, CodeToHttpTransform, Config, GatewayServer, GatewayUser, Namespace};

/// Lists of named objects: variable (without prefix) → path. Their items' options are set by
/// `<LIST>_<NAME>_<OPTION>`.
pub(crate) const LISTS: [(&str, &str); 3] =
    [("CHANNEL_NAMESPACES", "channel.namespaces"), ("PROXIES", "proxies"), ("RPC_NAMESPACES", "rpc.namespaces")];

/// The known option tree (defaults serialized).
pub(crate) struct Schema {
    pub root: Value,
    pub namespace: Value,
    /// Other arrays of objects: path → an element's option tree.
    arrays: [(&'static str, Value); 4],
    /// Arrays of objects found under several paths, by the array's key (and its parent's).
    status_transform: Value,
    http_transform: Value,
    disconnect_transform: Value,
}

fn tree(v: Result<Value, serde_json::Error>) -> Value {
    v.unwrap_or(Value::Null)
}

impl Schema {
    pub fn new() -> Schema {
        Schema {
            root: tree(serde_json::to_value(Config::default())),
            namespace: tree(serde_json::to_value(Namespace::default())),
            arrays: [
                ("gateway.servers", tree(serde_json::to_value(GatewayServer::default()))),
                ("gateway.users", tree(serde_json::to_value(GatewayUser::default()))),
                ("proxies", tree(serde_json::to_value(NamedProxy::default()))),
                ("rpc.namespaces", tree(serde_json::to_value(RpcNamespace::default()))),
            ],
            status_transform: tree(serde_json::to_value(StatusTransform::default())),
            http_transform: tree(serde_json::to_value(CodeToHttpTransform::default())),
            disconnect_transform: tree(serde_json::to_value(CodeToDisconnectTransform::default())),
        }
    }

    /// The option tree of an element of the array at `path` (dotted; items of outer arrays
    /// as `[i]` or `[]`), for arrays of objects.
    pub fn element(&self, path: &str) -> Option<&Value> {
        if path == "channel.namespaces" {
            return Some(&self.namespace);
        }
        if let Some((_, v)) = self.arrays.iter().find(|(p, _)| *p == path) {
            return Some(v);
        }
        let (parent, key) = path.rsplit_once('.')?;
        match key {
            "status_to_code_transforms" => Some(&self.status_transform),
            "transforms" if parent.ends_with("connect_code_to_http_response") => Some(&self.http_transform),
            "transforms" if parent.ends_with("connect_code_to_unidirectional_disconnect") => {
                Some(&self.disconnect_transform)
            }
            _ => None,
        }
    }
}

/// `a.b` under `path`.
pub(crate) fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_owned()
    } else {
        format!("{path}.{key}")
    }
}

/// `client.token.hmac_secret_key` → `CLIENT_TOKEN_HMAC_SECRET_KEY` (the variable without its
/// `CENTRIFUGO_`/`GYRE_` prefix).
pub(crate) fn env_name(path: &str) -> String {
    path.replace('.', "_").to_ascii_uppercase()
}

/// `my.ns-1` → `MY_NS_1`, as the name of a list item appears inside a variable name.
pub(crate) fn item_env_name(name: &str) -> String {
    name.to_ascii_uppercase().replace(['.', '-'], "_")
}

/// The dotted paths of the leaves under `v` (empty objects and arrays are leaves).
pub(crate) fn leaf_paths(v: &Value, path: String, out: &mut Vec<String>) {
    match v {
        Value::Object(m) if !m.is_empty() => {
            for (k, v) in m {
                leaf_paths(v, join(&path, k), out);
            }
        }
        _ => out.push(path),
    }
}

/// Whether a string option is a duration (its default is written with a unit: `"25s"`, `"0s"`).
pub(crate) fn is_duration(default: &Value) -> bool {
    default.as_str().is_some_and(|s| s.bytes().any(|b| b.is_ascii_alphabetic()) && super::duration::parse(s).is_ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn elements_and_names() {
        let s = Schema::new();
        assert!(s.element("channel.namespaces").unwrap().get("presence").is_some());
        assert!(s.element("proxies").unwrap().get("endpoint").is_some());
        assert!(s.element("proxies[2].http.status_to_code_transforms").unwrap().get("to_error").is_some());
        assert!(s.element("uni_sse.connect_code_to_http_response.transforms").unwrap().get("to").is_some());
        let d = s.element("client.connect_code_to_unidirectional_disconnect.transforms").unwrap();
        assert!(d.pointer("/to/reason").is_some());
        assert!(s.element("client.allowed_origins").is_none() && s.element("transforms").is_none());
        assert_eq!(env_name("client.token.hmac_secret_key"), "CLIENT_TOKEN_HMAC_SECRET_KEY");
        assert_eq!(item_env_name("my.ns-1"), "MY_NS_1");
        assert!(is_duration(&Value::from("0s")) && is_duration(&Value::from("720h")));
        assert!(!is_duration(&Value::from("")) && !is_duration(&Value::from("default")));
        assert!(!is_duration(&Value::from("0")) && !is_duration(&Value::from(5)));
    }
}
