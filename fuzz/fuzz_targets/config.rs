//! Config loading (`gyre::config::load::load`): a config file in JSON, TOML or YAML plus
//! `CENTRIFUGO_*` / `GYRE_*` environment variables, and Go-style durations.
//!
//! - Loading never panics: it gives a config or an error.
//! - A config that loaded, written back as JSON (its own serialization, v6 names), loads
//!   again to the same config (what `genconfig` / `checkconfig` rely on), and writing it
//!   again changes nothing.
//! - A duration that parses formats back to a string that parses to the same duration, to
//!   the microsecond (durations are summed in `f64` seconds). Above 100 years (no sensible
//!   setting) only the absence of panics is checked: there `f64` no longer holds whole
//!   seconds exactly.
//!
//! Input: 1 byte choosing the file format, then the file text; after a `\0`, environment
//! lines `NAME=value` (`\n`-separated; names get the `CENTRIFUGO_` prefix unless they carry
//! one).

#![no_main]

use std::path::PathBuf;
use std::time::Duration;

use gyre::config::duration;
use gyre::config::load::{load, LoadOptions};
use libfuzzer_sys::fuzz_target;

/// A per-process file name in a RAM-backed directory when there is one.
fn path(ext: &str) -> PathBuf {
    let dir = if std::path::Path::new("/dev/shm").is_dir() { PathBuf::from("/dev/shm") } else { std::env::temp_dir() };
    dir.join(format!("gyre-fuzz-config-{}.{ext}", std::process::id()))
}

fn load_text(
    ext: &str,
    text: &[u8],
    env: Vec<(String, String)>,
) -> Result<gyre::config::load::Loaded, gyre::error::Error> {
    let p = path(ext);
    std::fs::write(&p, text).expect("write the config file");
    load(&LoadOptions { config_path: Some(p), flags: Vec::new(), env, skip_secret_generation: true })
}

fuzz_target!(|data: &[u8]| {
    let Some((&kind, rest)) = data.split_first() else { return };
    let ext = ["json", "toml", "yaml", "yml"][kind as usize % 4];
    let (file, env_text) = match rest.iter().position(|&b| b == 0) {
        Some(i) => (&rest[..i], &rest[i + 1..]),
        None => (rest, &[][..]),
    };
    let env: Vec<(String, String)> = String::from_utf8_lossy(env_text)
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| {
            let k = if k.starts_with("CENTRIFUGO_") || k.starts_with("GYRE_") {
                k.to_owned()
            } else {
                format!("CENTRIFUGO_{k}")
            };
            (k, v.to_owned())
        })
        .collect();

    // Durations on their own: the file text as one duration string.
    if let Ok(s) = std::str::from_utf8(file) {
        if let Ok(d) = duration::parse(s) {
            let f = duration::format(&d);
            let back = duration::parse(&f).unwrap_or_else(|e| panic!("{s:?} -> {d:?} -> {f:?} does not parse: {e}"));
            if d < CENTURY {
                let diff = if back > d { back - d } else { d - back };
                assert!(diff <= Duration::from_micros(1), "{s:?} -> {d:?} -> {f:?} -> {back:?}");
            }
        }
    }

    let Ok(loaded) = load_text(ext, file, env) else { return };
    let first = serde_json::to_value(&loaded.config).expect("a loaded config serializes");
    let again = load_text("json", &serde_json::to_vec(&first).expect("to JSON"), Vec::new())
        .unwrap_or_else(|e| panic!("a loaded config written back as JSON does not load: {e}\n{first}"));
    let second = serde_json::to_value(&again.config).expect("serializes");
    assert!(again.warnings.is_empty(), "warnings for a config's own serialization: {:?}", again.warnings);
    if !has_huge_duration(&first) {
        assert_eq!(first, second, "config changed when written back and loaded again");
    }
    let third = load_text("json", &serde_json::to_vec(&second).expect("to JSON"), Vec::new())
        .unwrap_or_else(|e| panic!("a config written back twice does not load: {e}\n{second}"));
    assert_eq!(second, serde_json::to_value(&third.config).expect("serializes"), "not stable after one round trip");
});

const CENTURY: Duration = Duration::from_secs(100 * 365 * 24 * 3600);

/// Whether any string in the tree is a duration of more than a century.
fn has_huge_duration(v: &serde_json::Value) -> bool {
    match v {
        serde_json::Value::String(s) => duration::parse(s).is_ok_and(|d| d >= CENTURY),
        serde_json::Value::Array(a) => a.iter().any(has_huge_duration),
        serde_json::Value::Object(o) => o.values().any(has_huge_duration),
        _ => false,
    }
}
