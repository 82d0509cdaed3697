//! Option names of Centrifugo 1.x, 2.x and 3.x that still mean something here, mapped onto
//! today's options with a deprecation warning that names the new option. `secret` signed v1 API
//! requests and (2.x) HS256 connection tokens, so it sets both `http_api.v1_secret` and, unless
//! the file sets it, `client.token.hmac_secret_key`.

use serde_json::{Map, Value};

/// Top-level old name → today's option path.
#[rustfmt::skip]
const TOP: &[(&str, &str)] = &[
    ("insecure_api",               "http_api.v1_insecure"),
    ("history_recover",            "channel.without_namespace.force_recovery"),
    ("recover",                    "channel.without_namespace.force_recovery"),
    ("insecure",                   "client.insecure"),
    ("insecure_admin",             "admin.insecure"),
    ("max_channel_length",         "channel.max_length"),
    ("private_channel_prefix",     "channel.private_prefix"),
    ("namespace_channel_boundary", "channel.namespace_boundary"),
    ("user_channel_boundary",      "channel.user_boundary"),
    ("user_channel_separator",     "channel.user_separator"),
    ("user_connection_limit",      "client.user_connection_limit"),
    // Centrifugo 3 (`sockjs: true` itself is taken below: `sockjs` is also today's section).
    ("sockjs_handler_prefix",      "sockjs.handler_prefix"),
    ("sockjs_heartbeat_delay",     "sockjs.heartbeat_delay"),
    ("sockjs_url",                 "sockjs.url"),
    ("use_unlimited_history_by_default", "client.use_unlimited_history_by_default"),
];

/// Old channel option names inside a namespace → today's name.
const NAMESPACE: &[(&str, &str)] = &[("history_recover", "force_recovery"), ("recover", "force_recovery")];

const SECRET_PATHS: [&str; 2] = ["http_api.v1_secret", "client.token.hmac_secret_key"];

fn deprecated(old: &str, new: &str) -> String {
    format!("option \"{old}\" is deprecated: use \"{new}\"")
}

/// Takes the old names out of a config file's top level: (path, value, old name) for each
/// option they set. Old names inside namespaces are renamed in place. A value of today's name
/// in the same file wins (the caller merges today's sections last).
pub(super) fn take(root: &mut Map<String, Value>, warnings: &mut Vec<String>) -> Vec<(String, Value, String)> {
    let mut out = Vec::new();
    if let Some(v) = root.remove("secret") {
        warnings.push(format!(
            "option \"secret\" is deprecated: use \"{}\" (signed v1 API requests) and \"{}\" (HS256 connection tokens)",
            SECRET_PATHS[0], SECRET_PATHS[1]
        ));
        let token_set = root
            .get("client")
            .and_then(|c| c.pointer("/token/hmac_secret_key"))
            .is_some_and(|k| k.as_str().is_some_and(|s| !s.is_empty()))
            || root.get("token_hmac_secret_key").is_some();
        out.push((SECRET_PATHS[0].to_owned(), v.clone(), "secret".to_owned()));
        if !token_set {
            out.push((SECRET_PATHS[1].to_owned(), v, "secret".to_owned()));
        }
    }
    if root.get("sockjs").is_some_and(|v| !v.is_object()) {
        if let Some(v) = root.remove("sockjs") {
            warnings.push(deprecated("sockjs", "sockjs.enabled"));
            out.push(("sockjs.enabled".to_owned(), v, "sockjs".to_owned()));
        }
    }
    for (old, new) in TOP {
        if let Some(v) = root.remove(*old) {
            warnings.push(deprecated(old, new));
            out.push(((*new).to_owned(), v, (*old).to_owned()));
        }
    }
    for key in ["namespaces", "channel"] {
        let list = match root.get_mut(key) {
            Some(Value::Array(a)) if key == "namespaces" => a,
            Some(Value::Object(c)) if key == "channel" => match c.get_mut("namespaces") {
                Some(Value::Array(a)) => a,
                _ => continue,
            },
            _ => continue,
        };
        for ns in list.iter_mut() {
            rename_in_namespace(ns, warnings);
        }
    }
    out
}

fn rename_in_namespace(ns: &mut Value, warnings: &mut Vec<String>) {
    let Value::Object(obj) = ns else { return };
    let name = obj.get("name").and_then(Value::as_str).unwrap_or("").to_owned();
    for (old, new) in NAMESPACE {
        if let Some(v) = obj.remove(*old) {
            warnings.push(format!("option \"{old}\" of namespace \"{name}\" is deprecated: use \"{new}\""));
            obj.entry(*new).or_insert(v);
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn old_names_map_with_a_warning_each() {
        let Value::Object(mut root) = json!({
            "secret": "s", "insecure_api": true, "recover": true,
            "namespaces": [{"name": "a", "history_recover": true}],
        }) else {
            unreachable!()
        };
        let mut warnings = Vec::new();
        let set = take(&mut root, &mut warnings);
        let paths: Vec<&str> = set.iter().map(|(p, _, _)| p.as_str()).collect();
        assert_eq!(
            paths,
            [
                "http_api.v1_secret",
                "client.token.hmac_secret_key",
                "http_api.v1_insecure",
                "channel.without_namespace.force_recovery"
            ]
        );
        assert_eq!(warnings.len(), 4, "{warnings:?}");
        assert!(warnings[1].contains("\"http_api.v1_insecure\""), "{warnings:?}");
        assert_eq!(root["namespaces"][0], json!({"name": "a", "force_recovery": true}));
    }

    #[test]
    fn centrifugo_3_sockjs_names() {
        let Value::Object(mut root) = json!({"sockjs": true, "sockjs_heartbeat_delay": 5}) else { unreachable!() };
        let mut warnings = Vec::new();
        let set = take(&mut root, &mut warnings);
        let paths: Vec<&str> = set.iter().map(|(p, _, _)| p.as_str()).collect();
        assert_eq!(paths, ["sockjs.enabled", "sockjs.heartbeat_delay"]);
        assert_eq!(warnings.len(), 2, "{warnings:?}");
        // Today's section is left alone.
        let Value::Object(mut root) = json!({"sockjs": {"enabled": true}}) else { unreachable!() };
        assert!(take(&mut root, &mut Vec::new()).is_empty());
        assert!(root.contains_key("sockjs"));
    }

    #[test]
    fn secret_leaves_an_explicit_token_key_alone() {
        let Value::Object(mut root) = json!({"secret": "s", "client": {"token": {"hmac_secret_key": "k"}}}) else {
            unreachable!()
        };
        let set = take(&mut root, &mut Vec::new());
        assert_eq!(set.len(), 1);
        assert_eq!(set[0].0, "http_api.v1_secret");
    }
}
