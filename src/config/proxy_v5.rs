//! Centrifugo v5's proxy options, mapped onto the v6 ones (`config::proxy`):
//! * flat mode: one proxy per kind from `proxy_<kind>_endpoint` / `proxy_<kind>_timeout`, all
//!   sharing one set of options (`proxy_http_headers`, `proxy_grpc_tls`, ...). Connect and
//!   refresh are on when their endpoint is set; with `proxy_rpc_endpoint` every RPC method
//!   goes to the RPC proxy (namespace boundary "" so that `ns:method` does too);
//! * granular mode (`granular_proxy_mode: true`): the flat options are ignored; v5 `proxies`
//!   items become v6 ones, `connect_proxy_name` / `refresh_proxy_name` copy a named proxy into
//!   `client.proxy.*`, `rpc_proxy_name` / `rpc_namespaces` pick RPC proxies, and a channel
//!   namespace uses a proxy when its `proxy_<kind>` flag is on or its `<kind>_proxy_name` set.
//!
//! The channel namespace switches (`proxy_subscribe`, ...) are plain renames, in `env.rs`.

use serde_json::{Map, Value};

use super::set_path;

/// v5 kind → the v6 proxy object of its flat proxy.
const KINDS: [(&str, &str); 7] = [
    ("connect", "client.proxy.connect"),
    ("refresh", "client.proxy.refresh"),
    ("subscribe", "channel.proxy.subscribe"),
    ("publish", "channel.proxy.publish"),
    ("sub_refresh", "channel.proxy.sub_refresh"),
    ("rpc", "rpc.proxy"),
    ("subscribe_stream", "channel.proxy.subscribe_stream"),
];

/// Channel kinds a namespace turns on.
const CHANNEL_KINDS: [&str; 4] = ["subscribe", "publish", "sub_refresh", "subscribe_stream"];

/// Top-level v5 names that only mean something in granular mode.
const GRANULAR_ONLY: [&str; 4] = ["connect_proxy_name", "refresh_proxy_name", "rpc_proxy_name", "rpc_namespaces"];

/// PEM options of a v5 TLS object, each also as `<name>_file` and `<name>_b64`.
const PEMS: [&str; 4] = ["cert_pem", "key_pem", "server_ca_pem", "client_ca_pem"];
/// The other options of a TLS object.
const TLS_FLAGS: [&str; 3] = ["enabled", "insecure_skip_verify", "server_name"];

/// `key` is `pem`, `<pem>_file` or `<pem>_b64`.
fn pem_of(key: &str, pem: &str) -> bool {
    key.strip_prefix(pem).is_some_and(|s| s.is_empty() || s == "_file" || s == "_b64")
}

/// A v5 TLS object as a v6 one: of `<pem>_file`, `<pem>_b64` and `<pem>` the first non-empty
/// one (v5's order) becomes `<pem>`, which takes a path, base64 or PEM text alike.
fn tls(v: &Value) -> Value {
    let Value::Object(m) = v else { return v.clone() };
    let mut out = Map::new();
    for (k, x) in m {
        if !PEMS.iter().any(|p| pem_of(k, p)) {
            out.insert(k.clone(), x.clone());
        }
    }
    for pem in PEMS {
        let set = |k: &str| m.get(k).filter(|x| x.as_str().is_none_or(|s| !s.is_empty()));
        if let Some(x) = set(&format!("{pem}_file")).or_else(|| set(&format!("{pem}_b64"))).or_else(|| set(pem)) {
            out.insert(pem.into(), x.clone());
        }
    }
    Value::Object(out)
}

/// An option of a v5 proxy (a granular `proxies` item's name, or a flat shared option without
/// its `proxy_` prefix) → the options of the v6 proxy object it sets (relative paths).
fn item_option(name: &str, v: &Value) -> Option<Vec<(String, Value)>> {
    let one = |p: &str| Some(vec![(p.to_string(), v.clone())]);
    match name {
        "name" | "endpoint" | "timeout" | "grpc_metadata" | "binary_encoding" | "include_connection_meta" => one(name),
        // v5 also matched these names against the headers of headers emulation.
        "http_headers" => Some(vec![("http_headers".into(), v.clone()), ("emulated_headers".into(), v.clone())]),
        "static_http_headers" => one("http.static_headers"),
        "http_status_to_code_transforms" => one("http.status_to_code_transforms"),
        "grpc_credentials_key" => one("grpc.credentials_key"),
        "grpc_credentials_value" => one("grpc.credentials_value"),
        "grpc_compression" => one("grpc.compression"),
        "grpc_tls" => Some(vec![("grpc.tls".into(), tls(v))]),
        "grpc_cert_file" => {
            let mut out = vec![("grpc.tls.server_ca_pem".to_string(), v.clone())];
            if v.as_str().is_some_and(|s| !s.is_empty()) {
                out.push(("grpc.tls.enabled".into(), Value::Bool(true)));
            }
            Some(out)
        }
        _ => {
            // `grpc_tls_<option>`: one option of the TLS object (environment variables).
            let opt = name.strip_prefix("grpc_tls_")?;
            let key =
                PEMS.into_iter().find(|p| pem_of(opt, p)).or_else(|| TLS_FLAGS.into_iter().find(|f| *f == opt))?;
            Some(vec![(format!("grpc.tls.{key}"), v.clone())])
        }
    }
}

/// The v6 options (full paths) a v5 flat proxy option sets given its value; `None` when `key`
/// is not one.
pub(super) fn flat(key: &str, value: &Value) -> Option<Vec<(String, Value)>> {
    let rest = key.strip_prefix("proxy_")?;
    for (kind, base) in KINDS {
        let Some(what) = rest.strip_prefix(kind).and_then(|r| r.strip_prefix('_')) else { continue };
        let on = Value::Bool(value.as_str().is_some_and(|s| !s.is_empty()));
        let mut out = vec![(format!("{base}.{what}"), value.clone())];
        match (kind, what) {
            (_, "timeout") => {}
            ("connect" | "refresh", "endpoint") => out.push((format!("{base}.enabled"), on)),
            ("rpc", "endpoint") => {
                if on == Value::Bool(true) {
                    out.push(("rpc.namespace_boundary".into(), Value::from("")));
                }
                out.push(("rpc.without_namespace.proxy_enabled".into(), on));
            }
            (_, "endpoint") => {}
            _ => continue,
        }
        return Some(out);
    }
    let item = match rest {
        "http_status_code_transforms" => "http_status_to_code_transforms",
        "static_http_headers"
        | "http_headers"
        | "grpc_metadata"
        | "binary_encoding"
        | "include_connection_meta"
        | "grpc_cert_file"
        | "grpc_credentials_key"
        | "grpc_credentials_value"
        | "grpc_compression" => rest,
        _ if rest == "grpc_tls" || rest.starts_with("grpc_tls_") => rest,
        _ => return None,
    };
    let sub = item_option(item, value)?;
    Some(KINDS.iter().flat_map(|(_, base)| sub.iter().map(move |(p, v)| (format!("{base}.{p}"), v.clone()))).collect())
}

/// The v6 option whose type the value of v5 flat proxy option `key` has (to read it from an
/// environment variable).
pub(super) fn flat_type(key: &str) -> Option<String> {
    flat(key, &Value::from("x"))?.into_iter().next().map(|(p, _)| p)
}

/// A granular `proxies` item as a v6 one. Unknown names stay, to be reported.
fn v6_item(item: &Value) -> Value {
    let Value::Object(m) = item else { return item.clone() };
    let tls_on = m.get("grpc_tls").and_then(|t| t.get("enabled")).and_then(Value::as_bool) == Some(true);
    let mut out = Value::Object(Map::new());
    // The TLS object first; a CA file only when it is off (v5's precedence).
    let mut keys: Vec<&String> = m.keys().collect();
    keys.sort_by_key(|k| (k.as_str() != "grpc_tls", k.as_str()));
    for k in keys {
        if k == "grpc_cert_file" && tls_on {
            continue;
        }
        match item_option(k, &m[k.as_str()]) {
            Some(pairs) => pairs.into_iter().for_each(|(p, v)| set_path(&mut out, &p, v)),
            None => {
                if let Value::Object(o) = &mut out {
                    o.insert(k.clone(), m[k.as_str()].clone());
                }
            }
        }
    }
    out
}

fn name_of(v: Option<Value>, key: &str) -> Result<Option<String>, String> {
    match v {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s).filter(|s| !s.is_empty())),
        Some(v) => Err(format!("invalid value {v} for option \"{key}\": expected a proxy name")),
    }
}

/// Takes the v5 proxy options out of a config file's top level: (v6 path, value, v5 name) for
/// each v6 option they set. Granular mode also rewrites the v5 `proxies` and `namespaces` in
/// place. Options that have no effect in the file's mode are reported in `warnings`.
pub(super) fn take(
    root: &mut Map<String, Value>,
    warnings: &mut Vec<String>,
) -> Result<Vec<(String, Value, String)>, String> {
    let granular = match root.remove("granular_proxy_mode") {
        None => false,
        Some(Value::Bool(b)) => b,
        Some(v) => return Err(format!("invalid value {v} for option \"granular_proxy_mode\": expected true or false")),
    };
    let mut out = Vec::new();
    let mut flat_keys: Vec<String> = root.keys().filter(|k| flat(k, &Value::Null).is_some()).cloned().collect();
    // The TLS object before the CA file, which applies only when the object leaves TLS off.
    flat_keys.sort_by_key(|k| (k.as_str() != "proxy_grpc_tls", k.clone()));
    let tls_on = root.get("proxy_grpc_tls").and_then(|t| t.get("enabled")).and_then(Value::as_bool) == Some(true);
    for key in flat_keys {
        let value = root.remove(&key).unwrap_or(Value::Null);
        if granular {
            warnings.push(format!("option \"{key}\" has no effect with granular_proxy_mode (ignored)"));
        } else if key != "proxy_grpc_cert_file" || !tls_on {
            out.extend(flat(&key, &value).into_iter().flatten().map(|(p, v)| (p, v, key.clone())));
        }
    }
    if !granular {
        for key in GRANULAR_ONLY {
            if root.remove(key).is_some() {
                warnings.push(format!("option \"{key}\" has no effect without granular_proxy_mode (ignored)"));
            }
        }
        return Ok(out);
    }
    if let Some(Value::Array(list)) = root.get_mut("proxies") {
        list.iter_mut().for_each(|item| *item = v6_item(item));
    }
    let proxies = root.get("proxies").and_then(Value::as_array).cloned().unwrap_or_default();
    for (key, base) in [("connect_proxy_name", "client.proxy.connect"), ("refresh_proxy_name", "client.proxy.refresh")]
    {
        let Some(name) = name_of(root.remove(key), key)? else { continue };
        let found = proxies.iter().find(|p| p.get("name").and_then(Value::as_str) == Some(name.as_str()));
        let Some(Value::Object(p)) = found else {
            return Err(format!("option \"{key}\": no proxy named {name:?} in \"proxies\""));
        };
        let mut p = p.clone();
        p.remove("name");
        p.insert("enabled".into(), Value::Bool(true));
        out.push((base.into(), Value::Object(p), key.into()));
    }
    if let Some(name) = name_of(root.remove("rpc_proxy_name"), "rpc_proxy_name")? {
        let o = serde_json::json!({"proxy_enabled": true, "proxy_name": name});
        out.push(("rpc.without_namespace".into(), o, "rpc_proxy_name".into()));
    }
    if let Some(mut list) = root.remove("rpc_namespaces") {
        for ns in list.as_array_mut().into_iter().flatten() {
            if let Value::Object(ns) = ns {
                if let Some(name) = ns.remove("rpc_proxy_name") {
                    ns.insert("proxy_enabled".into(), Value::Bool(name.as_str().is_some_and(|s| !s.is_empty())));
                    ns.insert("proxy_name".into(), name);
                }
            }
        }
        out.push(("rpc.namespaces".into(), list, "rpc_namespaces".into()));
    }
    // A namespace uses a proxy when its flag is on or a proxy name is set.
    let named = |o: &Map<String, Value>, kind: &str| {
        o.get(&format!("{kind}_proxy_name")).and_then(Value::as_str).is_some_and(|s| !s.is_empty())
    };
    for kind in CHANNEL_KINDS {
        if named(root, kind) {
            if kind == "subscribe_stream" {
                root.remove("proxy_stream_subscribe");
            }
            root.insert(format!("proxy_{kind}"), Value::Bool(true));
        }
    }
    for ns in root.get_mut("namespaces").and_then(Value::as_array_mut).into_iter().flatten() {
        if let Value::Object(o) = ns {
            for kind in CHANNEL_KINDS {
                if named(o, kind) {
                    o.insert(format!("proxy_{kind}"), Value::Bool(true));
                }
            }
        }
    }
    Ok(out)
}
