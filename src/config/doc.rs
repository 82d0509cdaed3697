//! What `gyre configdoc` and `gyre defaultenv` print: every option Gyre applies, taken from
//! the option tree the loader checks and converts against ([`Schema`]: names, types,
//! defaults), with the environment variable the loader reads for it and a description
//! ([`describe`]; a test fails when an option has none or a description names no option).
//! Centrifugo options Gyre does not support are left out of both lists; `configdoc` names them
//! in a section of their own.

use std::fmt::Write as _;

use serde_json::Value;

use super::doc_text::describe;
use super::load::centrifugo;
use super::schema::{env_name, is_duration, item_env_name, Schema, LISTS};
use super::{duration, Config};

/// The variable prefix `defaultenv` and `configdoc` write (`GYRE_` works too, and wins).
pub const ENV_PREFIX: &str = "CENTRIFUGO_";

/// An option's type, as the docs name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Bool,
    Int,
    Float,
    Str,
    Duration,
    /// A list of strings.
    List,
    /// A map of strings (`static_headers`).
    Map,
    /// An object of options.
    Section,
    /// A list of objects of options.
    Objects,
}

impl Kind {
    pub fn label(self) -> &'static str {
        match self {
            Kind::Bool => "bool",
            Kind::Int => "int",
            Kind::Float => "float",
            Kind::Str => "string",
            Kind::Duration => "duration",
            Kind::List => "[]string",
            Kind::Map => "map[string]string",
            Kind::Section => "object",
            Kind::Objects => "[]object",
        }
    }
}

/// One documented option (or section).
#[derive(Debug, Clone)]
pub struct Entry {
    /// Dotted path; items of a list as `[]` (`channel.namespaces[].presence`).
    pub path: String,
    /// 1 for a top-level option.
    pub level: usize,
    pub kind: Kind,
    pub default: Value,
    /// The variable that sets it, without prefix, with `<NAME>` for a list item's name.
    pub env: Option<String>,
    pub text: &'static str,
    pub children: Vec<Entry>,
}

/// Every option Gyre applies, as a tree in name order.
pub fn entries() -> Vec<Entry> {
    let schema = Schema::new();
    section(&schema.root, "", 1, &schema)
}

fn kind(path: &str, v: &Value, schema: &Schema) -> Kind {
    match v {
        Value::Bool(_) => Kind::Bool,
        Value::Number(n) if n.is_f64() => Kind::Float,
        Value::Number(_) => Kind::Int,
        Value::String(_) if is_duration(v) => Kind::Duration,
        Value::String(_) | Value::Null => Kind::Str,
        Value::Array(_) if schema.element(path).is_some() => Kind::Objects,
        Value::Array(_) => Kind::List,
        Value::Object(m) if m.is_empty() => Kind::Map,
        Value::Object(_) => Kind::Section,
    }
}

/// The variable (without prefix) of the option at `path`, if the loader reads one.
fn env_of(path: &str, kind: Kind) -> Option<String> {
    if kind == Kind::Section {
        return None;
    }
    for (var, list) in LISTS {
        if let Some(rest) = path.strip_prefix(list).and_then(|r| r.strip_prefix("[].")) {
            return (rest != "name" && !rest.contains("[]")).then(|| format!("{var}_<NAME>_{}", env_name(rest)));
        }
    }
    (!path.contains("[]")).then(|| env_name(path))
}

fn section(tree: &Value, path: &str, level: usize, schema: &Schema) -> Vec<Entry> {
    let Value::Object(map) = tree else { return Vec::new() };
    map.iter()
        .map(|(key, v)| {
            let p = if path.is_empty() { key.clone() } else { format!("{path}.{key}") };
            let kind = kind(&p, v, schema);
            let children = match kind {
                Kind::Section => section(v, &p, level + 1, schema),
                Kind::Objects => {
                    section(schema.element(&p).unwrap_or(&Value::Null), &format!("{p}[]"), level + 1, schema)
                }
                _ => Vec::new(),
            };
            let default = if kind == Kind::Section { Value::Null } else { v.clone() };
            Entry { env: env_of(&p, kind), text: describe(&p), path: p, level, kind, default, children }
        })
        .collect()
}

/// Centrifugo options Gyre does not support (sections, options, channel options).
pub fn unsupported() -> Vec<String> {
    let mut out: Vec<String> = centrifugo::SECTIONS.iter().chain(centrifugo::OPTIONS).map(|s| s.to_string()).collect();
    for o in centrifugo::CHANNEL_OPTIONS {
        out.push(format!("channel.without_namespace.{o}"));
        out.push(format!("channel.namespaces[].{o}"));
    }
    out
}

fn shown_default(e: &Entry) -> Option<String> {
    (e.kind != Kind::Section).then(|| serde_json::to_string(&e.default).unwrap_or_default())
}

fn md_entry(e: &Entry, section: &str, base_level: usize, out: &mut String) {
    if e.path.starts_with(section) {
        let header = "#".repeat((e.level + base_level).min(6));
        let mut ty = format!("Type: `{}`", e.kind.label());
        if let Some(d) = shown_default(e) {
            let _ = write!(ty, ". Default: `{d}`");
        }
        if let Some(env) = &e.env {
            let _ = write!(ty, "\n\nEnv: `{ENV_PREFIX}{env}`");
        }
        let _ = write!(out, "{header} `{}`\n\n{ty}\n\n{}\n\n", e.path, e.text);
    }
    for c in &e.children {
        md_entry(c, section, base_level, out);
    }
}

/// The Markdown document: every option whose path starts with `section` ("" = all), headers
/// `base_level` deeper than the options' own level; then the options not supported.
pub fn markdown(section: &str, base_level: usize) -> String {
    let mut out = String::new();
    for e in entries() {
        md_entry(&e, section, base_level, &mut out);
    }
    let gone: Vec<String> = unsupported().into_iter().filter(|p| p.starts_with(section)).collect();
    if !gone.is_empty() {
        let header = "#".repeat((1 + base_level).min(6));
        let _ = write!(
            out,
            "{header} Centrifugo options Gyre does not support\n\nA config or a variable that sets one of \
             these is reported at start-up (\"not supported by Gyre\") and otherwise ignored.\n\n"
        );
        for p in gone {
            let _ = writeln!(out, "- `{p}`");
        }
    }
    out
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

/// `code` spans of a description as HTML.
fn html_text(s: &str) -> String {
    let mut out = String::new();
    for (i, part) in escape(s).split('`').enumerate() {
        if i % 2 == 1 {
            let _ = write!(out, "<code>{part}</code>");
        } else {
            out.push_str(part);
        }
    }
    out
}

fn html_entry(e: &Entry, section: &str, out: &mut String) {
    if e.path.starts_with(section) {
        let (h, path) = ((e.level + 1).min(6), escape(&e.path));
        let _ = write!(out, "<section data-path=\"{path}\"><h{h} id=\"{path}\"><code>{path}</code></h{h}><p>");
        let _ = write!(out, "Type: <code>{}</code>", e.kind.label());
        if let Some(d) = shown_default(e) {
            let _ = write!(out, ". Default: <code>{}</code>", escape(&d));
        }
        if let Some(env) = &e.env {
            let _ = write!(out, "<br>Env: <code>{ENV_PREFIX}{}</code>", escape(env));
        }
        let _ = writeln!(out, "</p><p>{}</p></section>", html_text(e.text));
    }
    for c in &e.children {
        html_entry(c, section, out);
    }
}

/// The documentation of the options whose path starts with `section` as one HTML page, with
/// a filter by option name.
pub fn html(title: &str, section: &str) -> String {
    let mut body = String::new();
    for e in entries() {
        html_entry(&e, section, &mut body);
    }
    let gone: String = unsupported()
        .iter()
        .filter(|p| p.starts_with(section))
        .map(|p| format!("<li><code>{}</code></li>", escape(p)))
        .collect();
    format!(
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\"><title>{t}</title>\
         <style>body{{font-family:system-ui,sans-serif;max-width:960px;margin:2rem auto;padding:0 1rem;\
         line-height:1.5}}code{{background:#f3f3f3;padding:0 .25rem;border-radius:3px}}\
         section{{border-bottom:1px solid #eee}}h2,h3,h4,h5,h6{{margin:1rem 0 .25rem}}\
         input{{width:100%;font-size:1rem;padding:.5rem;position:sticky;top:0}}</style></head><body>\
         <h1>{t}</h1><input id=\"q\" placeholder=\"Filter options by name\" autofocus>\n{body}\
         <h2>Centrifugo options Gyre does not support</h2><p>A config or a variable that sets one of these \
         is reported at start-up and otherwise ignored.</p><ul>{gone}</ul>\
         <script>document.getElementById('q').addEventListener('input',e=>{{const q=e.target.value.toLowerCase();\
         for(const s of document.querySelectorAll('section'))s.hidden=!s.dataset.path.toLowerCase().includes(q);}});\
         </script></body></html>\n",
        t = escape(title)
    )
}

/// A value as `defaultenv` writes it: double-quoted (with `\`, `"` and `$` escaped as a
/// `.env` reader expects) for text, bare for numbers, booleans and durations.
fn quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '\\' | '"' | '$' => {
                out.push('\\');
                out.push(c);
            }
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn env_value(kind: Kind, v: &Value) -> String {
    match (kind, v) {
        (Kind::Str, Value::String(s)) => quote(s),
        (Kind::Duration, Value::String(s)) => s.clone(),
        (Kind::List, Value::Array(items)) => {
            let words: Vec<&str> = items.iter().filter_map(Value::as_str).collect();
            if words.len() == items.len() && words.iter().all(|w| !w.is_empty() && !w.contains(char::is_whitespace)) {
                quote(&words.join(" "))
            } else {
                quote(&v.to_string())
            }
        }
        (Kind::Map | Kind::Objects, _) => quote(&v.to_string()),
        (_, Value::String(s)) => quote(s),
        _ => v.to_string(),
    }
}

/// Whether a value a config file sets is not its type's zero value.
fn non_zero(kind: Kind, v: Option<&Value>) -> bool {
    match v {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(Value::Number(n)) => n.as_f64() != Some(0.0),
        Some(Value::String(s)) if kind == Kind::Duration => duration::parse(s).map_or(true, |d| !d.is_zero()),
        Some(Value::String(s)) => !s.is_empty(),
        Some(Value::Array(a)) => !a.is_empty(),
        Some(Value::Object(m)) => !m.is_empty(),
    }
}

fn get<'a>(v: &'a Value, path: &str) -> Option<&'a Value> {
    path.split('.').try_fold(v, |v, k| v.get(k))
}

/// The leaves of an entry tree (lists of objects are leaves too).
fn leaves<'a>(es: &'a [Entry], out: &mut Vec<&'a Entry>) {
    for e in es {
        if e.kind == Kind::Section {
            leaves(&e.children, out);
        } else {
            out.push(e);
        }
    }
}

/// The `CENTRIFUGO_<NAME>=<value>` lines of `gyre defaultenv`, sorted: every option Gyre
/// applies at its value in `config`, and the options of each namespace, proxy and RPC
/// namespace it has. With `file` (the options a base config file sets), only the options
/// that file sets to a non-zero value.
pub fn env_lines(config: &Config, file: Option<&Value>) -> Vec<String> {
    let tree = serde_json::to_value(config).unwrap_or_default();
    let all = entries();
    let mut top = Vec::new();
    leaves(&all, &mut top);
    let mut lines = Vec::new();
    for e in top {
        let Some(env) = &e.env else { continue };
        let Some(v) = get(&tree, &e.path) else { continue };
        if file.is_some_and(|f| !non_zero(e.kind, get(f, &e.path))) {
            continue;
        }
        let value = if LISTS.iter().any(|(_, l)| *l == e.path) {
            let names: Vec<&str> = v.as_array().into_iter().flatten().filter_map(|i| i["name"].as_str()).collect();
            quote(&names.join(" "))
        } else {
            env_value(e.kind, v)
        };
        lines.push(format!("{ENV_PREFIX}{env}={value}"));
    }
    for (var, list) in LISTS {
        let Some(item_entries) = all_children(&all, list) else { continue };
        let mut options = Vec::new();
        leaves(item_entries, &mut options);
        for item in get(&tree, list).and_then(Value::as_array).into_iter().flatten() {
            let name = item["name"].as_str().unwrap_or_default();
            let in_file =
                file.and_then(|f| get(f, list)?.as_array()?.iter().find(|i| i["name"].as_str() == Some(name)).cloned());
            for e in &options {
                let rest = &e.path[list.len() + 3..];
                if rest == "name" {
                    continue;
                }
                let Some(v) = get(item, rest) else { continue };
                if file.is_some() && !non_zero(e.kind, in_file.as_ref().and_then(|i| get(i, rest))) {
                    continue;
                }
                let value = env_value(e.kind, v);
                lines.push(format!("{ENV_PREFIX}{var}_{}_{}={value}", item_env_name(name), env_name(rest)));
            }
        }
    }
    lines.sort();
    lines
}

/// The item entries of the list at `path`.
fn all_children<'a>(es: &'a [Entry], path: &str) -> Option<&'a [Entry]> {
    for e in es {
        if e.path == path {
            return Some(&e.children);
        }
        if path.starts_with(&format!("{}.", e.path)) {
            return all_children(&e.children, path);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{load, LoadOptions};

    fn all(es: &[Entry], out: &mut Vec<Entry>) {
        for e in es {
            out.push(e.clone());
            all(&e.children, out);
        }
    }

    #[test]
    fn every_option_is_described_and_every_description_names_options() {
        let mut es = Vec::new();
        all(&entries(), &mut es);
        assert!(es.len() > 500, "{}", es.len());
        let missing: Vec<&str> = es.iter().filter(|e| e.text.is_empty()).map(|e| e.path.as_str()).collect();
        assert!(missing.is_empty(), "options without a description: {missing:?}");
        let paths: Vec<String> = es.iter().map(|e| super::super::doc_text::table_path(&e.path).into_owned()).collect();
        let unused: Vec<&str> = super::super::doc_text::keys()
            .filter(|k| !paths.iter().any(|p| p == k || p.strip_suffix(k).is_some_and(|p| p.ends_with('.'))))
            .collect();
        assert!(unused.is_empty(), "descriptions of no option: {unused:?}");
        for u in unsupported() {
            assert!(!es.iter().any(|e| e.path == u), "{u} is listed and unsupported");
        }
    }

    /// `defaultenv`'s lines, read as a `.env` file and loaded as the environment, give back
    /// the config they were written from, with no unknown variable.
    fn round_trip(config: &Config, file: Option<&Value>) -> (Vec<String>, Config) {
        let lines = env_lines(config, file);
        let path = std::env::temp_dir().join(format!("gyre-doc-{}-{}.env", std::process::id(), lines.len()));
        std::fs::write(&path, lines.join("\n")).unwrap();
        let env = crate::config::dotenv::read(&path).unwrap().unwrap();
        let _ = std::fs::remove_file(&path);
        let l = load(&LoadOptions { env, skip_secret_generation: true, ..Default::default() }).unwrap();
        assert!(l.warnings.is_empty(), "{:?}", l.warnings);
        (lines, l.config)
    }

    fn tree(c: &Config) -> Value {
        serde_json::to_value(c).unwrap()
    }

    #[test]
    fn defaultenv_lines_load_back() {
        let d = Config::default();
        let (lines, back) = round_trip(&d, None);
        assert_eq!(tree(&back), tree(&d));
        for want in [
            "CENTRIFUGO_HTTP_SERVER_PORT=8000",
            "CENTRIFUGO_CLIENT_PING_INTERVAL=25s",
            "CENTRIFUGO_ENGINE_REDIS_ADDRESS=\"redis://127.0.0.1:6379\"",
            "CENTRIFUGO_CHANNEL_PRIVATE_PREFIX=\"\\$\"",
            "CENTRIFUGO_CHANNEL_NAMESPACES=\"\"",
            "CENTRIFUGO_CLIENT_PROXY_CONNECT_HTTP_STATIC_HEADERS=\"{}\"",
            "CENTRIFUGO_GATEWAY_SERVERS=\"[]\"",
            "CENTRIFUGO_LOG_FILE=\"\"",
        ] {
            assert!(lines.iter().any(|l| l == want), "{want} in {lines:#?}");
        }
        let mut sorted = lines.clone();
        sorted.sort();
        assert_eq!(lines, sorted);
        assert!(!lines.iter().any(|l| l.contains("WEBTRANSPORT") || l.contains("MAP_BROKER_REDIS_ADDRESS")));
    }

    #[test]
    fn defaultenv_lines_of_a_base_config() {
        let path = std::env::temp_dir().join(format!("gyre-doc-base-{}.json", std::process::id()));
        let text = r#"{"port": "9000", "client": {"allowed_origins": ["http://a b", "*"], "token": {"hmac_secret_key": "s\"$x"}},
            "channel": {"namespaces": [{"name": "chat-1", "presence": true, "history_size": 5, "history_ttl": "10s"}]},
            "proxies": [{"name": "auth", "endpoint": "http://b/x", "http": {"static_headers": {"X-A": "1"}}}],
            "rpc": {"namespaces": [{"name": "rpc.ns", "proxy_enabled": false}]},
            "gateway": {"servers": [{"path": "/raw", "topic": "t"}]}}"#;
        std::fs::write(&path, text).unwrap();
        let l =
            load(&LoadOptions { config_path: Some(path.clone()), skip_secret_generation: true, ..Default::default() });
        let file = crate::config::load::file_options(&path);
        let _ = std::fs::remove_file(&path);
        let (l, file) = (l.unwrap(), file.unwrap());
        let (lines, back) = round_trip(&l.config, None);
        assert_eq!(tree(&back), tree(&l.config));
        assert!(lines.contains(&"CENTRIFUGO_CHANNEL_NAMESPACES_CHAT_1_PRESENCE=true".to_string()), "{lines:#?}");
        assert!(lines.contains(&"CENTRIFUGO_PROXIES_AUTH_TIMEOUT=1s".to_string()), "{lines:#?}");
        let (only, back) = round_trip(&l.config, Some(&file));
        assert_eq!(
            only,
            [
                "CENTRIFUGO_CHANNEL_NAMESPACES=\"chat-1\"",
                "CENTRIFUGO_CHANNEL_NAMESPACES_CHAT_1_HISTORY_SIZE=5",
                "CENTRIFUGO_CHANNEL_NAMESPACES_CHAT_1_HISTORY_TTL=10s",
                "CENTRIFUGO_CHANNEL_NAMESPACES_CHAT_1_PRESENCE=true",
                "CENTRIFUGO_CLIENT_ALLOWED_ORIGINS=\"[\\\"http://a b\\\",\\\"*\\\"]\"",
                "CENTRIFUGO_CLIENT_TOKEN_HMAC_SECRET_KEY=\"s\\\"\\$x\"",
                "CENTRIFUGO_GATEWAY_SERVERS=\"[{\\\"path\\\":\\\"/raw\\\",\\\"topic\\\":\\\"t\\\"}]\"",
                "CENTRIFUGO_HTTP_SERVER_PORT=9000",
                "CENTRIFUGO_PROXIES=\"auth\"",
                "CENTRIFUGO_PROXIES_AUTH_ENDPOINT=\"http://b/x\"",
                "CENTRIFUGO_PROXIES_AUTH_HTTP_STATIC_HEADERS=\"{\\\"X-A\\\":\\\"1\\\"}\"",
                "CENTRIFUGO_RPC_NAMESPACES=\"rpc.ns\"",
            ]
        );
        assert_eq!(back.client.token.hmac_secret_key, "s\"$x");
        assert_eq!(back.client.allowed_origins, ["http://a b", "*"]);
    }

    #[test]
    fn markdown_and_html() {
        let md = markdown("", 0);
        assert!(
            md.contains(
                "## `client.token.hmac_secret_key`\n\nType: `string`. Default: `\"\"`\n\n\
             Env: `CENTRIFUGO_CLIENT_TOKEN_HMAC_SECRET_KEY`\n\nSecret of HS256"
            ),
            "{md}"
        );
        assert!(md.contains("# `client`\n\nType: `object`\n\nClient connections"), "{md}");
        assert!(md.contains("Env: `CENTRIFUGO_CHANNEL_NAMESPACES_<NAME>_PRESENCE`"), "{md}");
        assert!(md.contains("### `channel.namespaces[].name`\n\nType: `string`. Default: `\"\"`\n\nName of"), "{md}");
        assert!(md.contains("- `webtransport`") && md.contains("- `channel.namespaces[].publication_data_format`"));
        let section = markdown("engine.redis", 2);
        assert!(section.starts_with("#### `engine.redis`\n"), "{section}");
        assert!(section.contains("##### `engine.redis.address`") && !section.contains("`engine.type`"));
        assert!(section.contains("- `engine.redis.client_name`") && !section.contains("`webtransport`"));
        let html = html("Gyre options", "");
        assert!(html.contains("<title>Gyre options</title>") && html.contains("id=\"client.token.hmac_secret_key\""));
        assert!(html.contains("<code>CENTRIFUGO_HTTP_SERVER_PORT</code>"));
    }
}
