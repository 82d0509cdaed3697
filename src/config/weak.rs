//! Weakly typed values, converted to the type of the option before the tree is deserialized,
//! as Centrifugo's loader takes them (viper with mapstructure's `WeaklyTypedInput`): in a
//! config file or a variable, `"port": "8000"`, `"insecure": "true"` or `1`, `"key": 123`,
//! `"allowed_origins": "*"` all mean what they say. The option's type is its default's
//! ([`Schema`]), so every option, of every section, namespace and proxy, gets the same rules:
//!
//! - to a boolean: a string of Go's `strconv.ParseBool` (`1`, `t`, `true`, `0`, `f`, `false`,
//!   any case; empty is false), a number (non-zero is true);
//! - to an integer: a string in base 10 (or `0x`/`0o`/`0b`; empty is 0), a boolean (1/0), a
//!   float without a fraction (Centrifugo truncates `1.5`; here it stays an error);
//! - to a string: a number in base 10, a boolean as `1`/`0` (durations take numbers as they
//!   are: [`super::duration`]);
//! - to a list: a single value becomes a list of one; its items are strings;
//! - to a map of strings: a JSON object in a string; numbers and booleans become strings;
//! - an empty list and an empty object stand for each other; `null` leaves the default.
//!
//! A value that does not convert is left as it is, so the error names the option and value.

use serde_json::{Map, Number, Value};

use super::schema::{is_duration, join, Schema};

/// Converts the values of `tree` (v6 layout) to their options' types where they convert.
pub(super) fn coerce(tree: &mut Value, schema: &Schema) {
    section(tree, &schema.root, "", schema);
}

fn section(v: &mut Value, known: &Value, path: &str, schema: &Schema) {
    let (Value::Object(map), Value::Object(known)) = (v, known) else { return };
    map.retain(|k, v| !(v.is_null() && known.contains_key(k)));
    for (key, value) in map.iter_mut() {
        let Some(k) = known.get(key) else { continue };
        let p = join(path, key);
        match schema.element(&p) {
            Some(element) => {
                to_list(value);
                for item in value.as_array_mut().into_iter().flatten() {
                    section(item, element, &format!("{p}[]"), schema);
                }
            }
            None => option(value, k, &p, schema),
        }
    }
}

/// One option (or section) whose default is `k`.
fn option(v: &mut Value, k: &Value, path: &str, schema: &Schema) {
    match k {
        Value::Bool(_) => {
            if let Some(b) = to_bool(v) {
                *v = Value::Bool(b);
            }
        }
        Value::Number(n) if n.is_f64() => {
            if let Some(f) = v.as_str().and_then(|s| s.trim().parse::<f64>().ok()).and_then(Number::from_f64) {
                *v = Value::Number(f);
            }
        }
        Value::Number(_) => {
            if let Some(n) = to_int(v) {
                *v = n;
            }
        }
        Value::String(_) if is_duration(k) => {}
        Value::String(_) => {
            if let Some(s) = to_string(v) {
                *v = Value::String(s);
            }
        }
        Value::Array(_) => {
            to_list(v);
            for item in v.as_array_mut().into_iter().flatten() {
                if let Some(s) = to_string(item) {
                    *item = Value::String(s);
                }
            }
        }
        // A map of strings (`static_headers`).
        Value::Object(m) if m.is_empty() => {
            if let Some(Ok(Value::Object(parsed))) = v.as_str().map(serde_json::from_str::<Value>) {
                *v = Value::Object(parsed);
            }
            empty_list_is_object(v);
            for item in v.as_object_mut().into_iter().flat_map(|m| m.values_mut()) {
                if let Some(s) = to_string(item) {
                    *item = Value::String(s);
                }
            }
        }
        Value::Object(_) => {
            empty_list_is_object(v);
            section(v, k, path, schema);
        }
        Value::Null => {}
    }
}

fn empty_list_is_object(v: &mut Value) {
    if v.as_array().is_some_and(Vec::is_empty) {
        *v = Value::Object(Map::new());
    }
}

/// A single value becomes a list of one; an empty object an empty list.
fn to_list(v: &mut Value) {
    match v {
        Value::Array(_) => {}
        Value::Object(m) if m.is_empty() => *v = Value::Array(Vec::new()),
        _ => *v = Value::Array(vec![v.take()]),
    }
}

/// Go's `strconv.ParseBool` set, any case.
pub(super) fn parse_bool(raw: &str) -> Option<bool> {
    match raw.trim().to_ascii_lowercase().as_str() {
        "1" | "t" | "true" => Some(true),
        "0" | "f" | "false" => Some(false),
        _ => None,
    }
}

fn to_bool(v: &Value) -> Option<bool> {
    match v {
        Value::String(s) if s.trim().is_empty() => Some(false),
        Value::String(s) => parse_bool(s),
        Value::Number(n) => n.as_f64().map(|f| f != 0.0),
        _ => None,
    }
}

/// An integer in base 10, or with a `0x`, `0o` or `0b` prefix; a sign may lead.
pub(super) fn parse_int(raw: &str) -> Option<Value> {
    let t = raw.trim();
    let (negative, digits) = match t.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, t.strip_prefix('+').unwrap_or(t)),
    };
    let lower = digits.to_ascii_lowercase();
    let (radix, digits) = [("0x", 16), ("0o", 8), ("0b", 2)]
        .iter()
        .find_map(|(p, r)| lower.strip_prefix(p).map(|d| (*r, d)))
        .unwrap_or((10, lower.as_str()));
    if digits.is_empty() || digits.starts_with(['+', '-']) {
        return None;
    }
    let n = u64::from_str_radix(digits, radix).ok()?;
    if negative {
        i64::try_from(n).ok().map(|n| Value::from(-n)).or_else(|| (n == 1 << 63).then(|| Value::from(i64::MIN)))
    } else {
        Some(Value::from(n))
    }
}

fn to_int(v: &Value) -> Option<Value> {
    match v {
        Value::String(s) if s.trim().is_empty() => Some(Value::from(0)),
        Value::String(s) => parse_int(s),
        Value::Bool(b) => Some(Value::from(*b as u8)),
        Value::Number(n) => match n.as_f64() {
            Some(f) if n.is_f64() && f.fract() == 0.0 && f.abs() < 9.0e15 => Some(Value::from(f as i64)),
            _ => None,
        },
        _ => None,
    }
}

fn to_string(v: &Value) -> Option<String> {
    match v {
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(if *b { "1" } else { "0" }.to_owned()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn coerced(v: Value) -> Value {
        let mut v = v;
        coerce(&mut v, &Schema::new());
        v
    }

    #[test]
    fn scalars_take_the_option_type() {
        let v = coerced(json!({
            "http_server": {"port": "8001", "internal_port": 9000, "max_head_size": 1024.0},
            "client": {"insecure": "TRUE", "allow_anonymous_connect_without_token": 1,
                       "disallow_anonymous_connection_tokens": "", "channel_limit": "0x10",
                       "user_connection_limit": true, "allowed_origins": "*",
                       "ping_interval": 10, "pong_timeout": "5s",
                       "token": {"hmac_secret_key": 123, "hmac_previous_secret_key_valid_until": "-5"}},
            "http_api": {"key": true, "insecure": "f", "max_body_size": ""},
            "engine": {"redis": {"address": ["a:1", 6379], "db": "2"}},
            "websocket": {"compression_level": "-2"},
        }));
        assert_eq!(
            v,
            json!({
                "http_server": {"port": 8001, "internal_port": "9000", "max_head_size": 1024},
                "client": {"insecure": true, "allow_anonymous_connect_without_token": true,
                           "disallow_anonymous_connection_tokens": false, "channel_limit": 16,
                           "user_connection_limit": 1, "allowed_origins": ["*"],
                           "ping_interval": 10, "pong_timeout": "5s",
                           "token": {"hmac_secret_key": "123", "hmac_previous_secret_key_valid_until": -5}},
                "http_api": {"key": "1", "insecure": false, "max_body_size": 0},
                "engine": {"redis": {"address": ["a:1", "6379"], "db": 2}},
                "websocket": {"compression_level": -2},
            })
        );
    }

    #[test]
    fn lists_maps_and_items() {
        let v = coerced(json!({
            "channel": {"namespaces": {"name": "chat", "presence": "1", "history_size": "10"},
                        "without_namespace": {"allowed_delta_types": "fossil"}, "proxy": []},
            "proxies": [{"name": "p", "timeout": 3, "http": {"static_headers": "{\"X-A\": 1}",
                         "status_to_code_transforms": [{"status_code": "404", "to_error": {"temporary": "t"}}]}}],
            "client": {"proxy": {"connect": {"http": {"static_headers": [], "tls": {"enabled": "1"}}}},
                       "token": null, "allowed_origins": {}},
            "uni_sse": {"connect_code_to_http_response": {"transforms": {"code": "3501", "to": {"status_code": "403"}}}},
            "unknown": null,
        }));
        assert_eq!(
            v,
            json!({
                "channel": {"namespaces": [{"name": "chat", "presence": true, "history_size": 10}],
                            "without_namespace": {"allowed_delta_types": ["fossil"]}, "proxy": {}},
                "proxies": [{"name": "p", "timeout": 3, "http": {"static_headers": {"X-A": "1"},
                             "status_to_code_transforms": [{"status_code": 404, "to_error": {"temporary": true}}]}}],
                "client": {"proxy": {"connect": {"http": {"static_headers": {}, "tls": {"enabled": true}}}},
                           "allowed_origins": []},
                "uni_sse": {"connect_code_to_http_response": {"transforms": [{"code": 3501, "to": {"status_code": 403}}]}},
                "unknown": null,
            })
        );
    }

    /// Through the loader: a file's values (v5 names too) and a variable's.
    #[test]
    fn loaded_from_file_and_environment() {
        let path = std::env::temp_dir().join(format!("gyre-weak-{}.yaml", std::process::id()));
        let yaml = "port: '8001'\nclient_insecure: 'true'\napi_key: 123\nallowed_origins: '*'\n\
                    client:\n  channel_limit: '7'\nnamespaces:\n  - name: chat\n    presence: 1\n";
        std::fs::write(&path, yaml).unwrap();
        let opts = crate::config::LoadOptions {
            config_path: Some(path.clone()),
            env: vec![("CENTRIFUGO_CLIENT_USER_CONNECTION_LIMIT".into(), "0x20".into())],
            ..Default::default()
        };
        let l = crate::config::load(&opts);
        let _ = std::fs::remove_file(&path);
        let l = l.unwrap();
        assert!(l.warnings.is_empty(), "{:?}", l.warnings);
        let c = &l.config;
        assert_eq!((c.http_server.port, c.client.insecure, c.http_api.key.as_str()), (8001, true, "123"));
        assert_eq!(c.client.allowed_origins, ["*"]);
        assert_eq!((c.client.channel_limit, c.client.user_connection_limit), (7, 32));
        assert!(c.channel.namespaces[0].options.presence);
    }

    #[test]
    fn what_does_not_convert_stays() {
        let v = json!({
            "http_server": {"port": "80x"}, "client": {"insecure": "yes", "channel_limit": 1.5,
            "ping_interval": true, "token": {"hmac_secret_key": {"a": 1}}}, "workers": [1],
        });
        assert_eq!(
            coerced(v.clone()),
            json!({
                "http_server": {"port": "80x"}, "client": {"insecure": "yes", "channel_limit": 1.5,
                "ping_interval": true, "token": {"hmac_secret_key": {"a": 1}}}, "workers": [1],
            })
        );
        assert_eq!(parse_int("-0x10"), Some(json!(-16)));
        assert_eq!(parse_int("0b101"), Some(json!(5)));
        assert_eq!(parse_int("18446744073709551615"), Some(json!(u64::MAX)));
        assert_eq!(parse_int("-9223372036854775808"), Some(json!(i64::MIN)));
        for bad in ["", "0x", "--1", "+-1", "1e3", "١"] {
            assert_eq!(parse_int(bad), None, "{bad}");
        }
    }
}
