//! The `gyre` command line: runs the server (root command or `serve`) and offers Centrifugo's
//! helper commands (`genconfig`, `defaultconfig`, `defaultenv`, `configdoc`, `checkconfig`,
//! `gentoken`, `gensubtoken`, `checktoken`, `checksubtoken`, `version`) and `api`, a console
//! client of the server API. Owns start-up logging
//! and the operator-facing messages; the server itself is `gyre::server::run`.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use clap::{Args, Parser, Subcommand};
use serde_json::{json, Map, Value};

use gyre::config::{load, Config, LoadOptions, Loaded};
use gyre::token;

#[path = "gyre/api.rs"]
mod api;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const DEFAULT_CONFIG: &str = "config.json";

#[derive(Parser)]
#[command(name = "gyre", about = "Gyre: a Centrifugo-compatible real-time messaging server")]
#[command(version = concat!("v", env!("CARGO_PKG_VERSION"), " (Centrifugo-compatible, OSS)"))]
#[command(args_conflicts_with_subcommands = true)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    serve: ServeArgs,
}

#[derive(Subcommand)]
enum Command {
    /// Run the server (same as no subcommand).
    Serve(ServeArgs),
    /// Write a minimal config with random secrets; never overwrites.
    Genconfig {
        #[arg(short = 'c', long = "config", default_value = DEFAULT_CONFIG)]
        config: PathBuf,
    },
    /// Write the full config with every option at its default (over a base config with -b);
    /// never overwrites. With --dry-run print it instead.
    Defaultconfig {
        #[arg(short = 'c', long = "config", default_value = DEFAULT_CONFIG)]
        config: PathBuf,
        /// Config whose values replace the defaults.
        #[arg(short = 'b', long = "base")]
        base: Option<PathBuf>,
        /// Print the config instead of writing it.
        #[arg(short = 'd', long = "dry-run")]
        dry_run: bool,
    },
    /// Load and validate a config, printing warnings and errors.
    Checkconfig {
        #[arg(short = 'c', long = "config", default_value = DEFAULT_CONFIG)]
        config: PathBuf,
        /// Fail on unknown options (as Centrifugo's `checkconfig --strict`); options of
        /// Centrifugo that Gyre does not implement stay warnings.
        #[arg(short = 's', long = "strict")]
        strict: bool,
    },
    /// Print every option Gyre applies as CENTRIFUGO_* variables with their defaults (or the
    /// values of a base config with -b).
    Defaultenv {
        /// Config whose values replace the defaults.
        #[arg(short = 'b', long = "base")]
        base: Option<PathBuf>,
        /// Only the variables of options the base config sets to a non-zero value.
        #[arg(long = "base-non-zero-only")]
        base_non_zero_only: bool,
    },
    /// Show the documentation of every option: served as a web page on --port, or printed as
    /// Markdown with -m.
    Configdoc {
        /// Print Markdown to stdout.
        #[arg(short = 'm', long = "markdown")]
        markdown: bool,
        /// Only the options whose name starts with this (a top-level section: `client`).
        #[arg(short = 's', long = "section", default_value = "")]
        section: String,
        /// Port of the web page.
        #[arg(short = 'p', long = "port", default_value_t = 6060)]
        port: u16,
        /// Added to the Markdown header level of each option.
        #[arg(short = 'l', long = "base-level", default_value_t = 0)]
        base_level: usize,
    },
    /// Generate an HS256 connection token signed with client.token.hmac_secret_key.
    Gentoken {
        #[command(flatten)]
        token: TokenArgs,
    },
    /// Generate an HS256 subscription token for a channel.
    Gensubtoken {
        #[command(flatten)]
        token: TokenArgs,
        /// Channel the token grants.
        #[arg(short = 's', long = "channel")]
        channel: String,
    },
    /// Verify a connection token and print its claims.
    Checktoken {
        #[arg(short = 'c', long = "config")]
        config: Option<PathBuf>,
        token: String,
    },
    /// Verify a subscription token and print its claims.
    Checksubtoken {
        #[arg(short = 'c', long = "config")]
        config: Option<PathBuf>,
        token: String,
    },
    /// Send server API commands to Gyre or Centrifugo (profiles in ~/.centrc, as `cent`'s
    /// console): `gyre api PROFILE METHOD --params JSON`, or many commands from stdin.
    Api(api::ApiArgs),
    /// Print the version.
    Version,
}

#[derive(Args)]
struct TokenArgs {
    /// Config file (default: config.json when present).
    #[arg(short = 'c', long = "config")]
    config: Option<PathBuf>,
    /// User ID (`sub` claim); empty for an anonymous token.
    #[arg(short = 'u', long = "user", default_value = "")]
    user: String,
    /// Lifetime in seconds; -1 for a token without expiration.
    #[arg(short = 't', long = "ttl", default_value_t = 604800, allow_negative_numbers = true)]
    ttl: i64,
    /// Print only the token.
    #[arg(short = 'q', long = "quiet")]
    quiet: bool,
}

/// Server flags; each maps onto a v6 option path (v5 spellings kept as the primary names).
#[derive(Args, Default, Clone)]
struct ServeArgs {
    /// Config file (JSON, TOML or YAML; default: config.json when present).
    #[arg(short = 'c', long = "config", value_name = "FILE")]
    config: Option<PathBuf>,
    /// HTTP port (http_server.port).
    #[arg(short = 'p', long = "port", visible_alias = "http_server.port")]
    port: Option<u16>,
    /// Listen address; empty = all interfaces (http_server.address).
    #[arg(short = 'a', long = "address", visible_alias = "http_server.address")]
    address: Option<String>,
    /// Port of the internal endpoints: API, admin, /metrics, /health (http_server.internal_port).
    #[arg(long = "internal_port", visible_alias = "http_server.internal_port", value_name = "PORT")]
    internal_port: Option<u16>,
    /// Address of the internal endpoints; empty = the listen address (http_server.internal_address).
    #[arg(long = "internal_address", visible_alias = "http_server.internal_address")]
    internal_address: Option<String>,
    /// Serve the HTTP API on the external port even with an internal port set.
    #[arg(long = "api_external", visible_alias = "http_api.external", num_args = 0..=1, require_equals = true, default_missing_value = "true")]
    api_external: Option<bool>,
    /// Serve the admin interface on the external port even with an internal port set.
    #[arg(long = "admin_external", visible_alias = "admin.external", num_args = 0..=1, require_equals = true, default_missing_value = "true")]
    admin_external: Option<bool>,
    /// Serve the HTTP API without an API key.
    #[arg(long = "api_insecure", visible_alias = "http_api.insecure", num_args = 0..=1, require_equals = true, default_missing_value = "true")]
    api_insecure: Option<bool>,
    /// trace | debug | info | warn | error | fatal | none
    #[arg(long = "log_level", visible_alias = "log.level")]
    log_level: Option<String>,
    /// Append logs (JSON lines) to this file instead of stdout/stderr (log.file).
    #[arg(long = "log_file", visible_alias = "log.file", value_name = "FILE")]
    log_file: Option<String>,
    /// Worker threads (event loops); 0 = one per CPU core.
    #[arg(long = "workers")]
    workers: Option<usize>,
    /// Enable the admin endpoints.
    #[arg(long = "admin", visible_alias = "admin.enabled", num_args = 0..=1, require_equals = true, default_missing_value = "true")]
    admin: Option<bool>,
    /// Admin endpoints without password/secret.
    #[arg(long = "admin_insecure", visible_alias = "admin.insecure", num_args = 0..=1, require_equals = true, default_missing_value = "true")]
    admin_insecure: Option<bool>,
    /// Clients connect without tokens and get all channel permissions (development only).
    #[arg(long = "client_insecure", visible_alias = "client.insecure", num_args = 0..=1, require_equals = true, default_missing_value = "true")]
    client_insecure: Option<bool>,
    /// Expose /metrics.
    #[arg(long = "prometheus", visible_alias = "prometheus.enabled", num_args = 0..=1, require_equals = true, default_missing_value = "true")]
    prometheus: Option<bool>,
    /// Expose /health.
    #[arg(long = "health", visible_alias = "health.enabled", num_args = 0..=1, require_equals = true, default_missing_value = "true")]
    health: Option<bool>,
    /// memory | redis
    #[arg(long = "engine", visible_alias = "engine.type")]
    engine: Option<String>,
    /// Serve the gRPC server API.
    #[arg(long = "grpc_api", visible_alias = "grpc_api.enabled", num_args = 0..=1, require_equals = true, default_missing_value = "true")]
    grpc_api: Option<bool>,
    /// Port of the gRPC server API (10000).
    #[arg(long = "grpc_api_port", visible_alias = "grpc_api.port")]
    grpc_api_port: Option<u16>,
    /// Serve SSE with bidirectional emulation.
    #[arg(long = "sse", visible_alias = "sse.enabled", num_args = 0..=1, require_equals = true, default_missing_value = "true")]
    sse: Option<bool>,
    /// Serve HTTP-streaming with bidirectional emulation.
    #[arg(long = "http_stream", visible_alias = "http_stream.enabled", num_args = 0..=1, require_equals = true, default_missing_value = "true")]
    http_stream: Option<bool>,
    /// Serve the unidirectional WebSocket.
    #[arg(long = "uni_websocket", visible_alias = "uni_websocket.enabled", num_args = 0..=1, require_equals = true, default_missing_value = "true")]
    uni_websocket: Option<bool>,
    /// Serve unidirectional SSE.
    #[arg(long = "uni_sse", visible_alias = "uni_sse.enabled", num_args = 0..=1, require_equals = true, default_missing_value = "true")]
    uni_sse: Option<bool>,
    /// Serve the unidirectional HTTP stream.
    #[arg(long = "uni_http_stream", visible_alias = "uni_http_stream.enabled", num_args = 0..=1, require_equals = true, default_missing_value = "true")]
    uni_http_stream: Option<bool>,
    /// Serve the unidirectional gRPC stream.
    #[arg(long = "uni_grpc", visible_alias = "uni_grpc.enabled", num_args = 0..=1, require_equals = true, default_missing_value = "true")]
    uni_grpc: Option<bool>,
    /// Port of the unidirectional gRPC stream (11000).
    #[arg(long = "uni_grpc_port", visible_alias = "uni_grpc.port")]
    uni_grpc_port: Option<u16>,
}

impl ServeArgs {
    fn flags(&self) -> Vec<(String, Value)> {
        let mut f: Vec<(String, Value)> = Vec::new();
        let mut put = |path: &str, v: Option<Value>| {
            if let Some(v) = v {
                f.push((path.to_owned(), v));
            }
        };
        put("http_server.port", self.port.map(Value::from));
        put("http_server.address", self.address.clone().map(Value::from));
        put("http_server.internal_port", self.internal_port.map(|p| Value::from(p.to_string())));
        put("http_server.internal_address", self.internal_address.clone().map(Value::from));
        put("http_api.external", self.api_external.map(Value::from));
        put("admin.external", self.admin_external.map(Value::from));
        put("http_api.insecure", self.api_insecure.map(Value::from));
        put("log.level", self.log_level.clone().map(Value::from));
        put("log.file", self.log_file.clone().map(Value::from));
        put("workers", self.workers.map(Value::from));
        put("admin.enabled", self.admin.map(Value::from));
        put("admin.insecure", self.admin_insecure.map(Value::from));
        put("client.insecure", self.client_insecure.map(Value::from));
        put("prometheus.enabled", self.prometheus.map(Value::from));
        put("health.enabled", self.health.map(Value::from));
        put("engine.type", self.engine.clone().map(Value::from));
        put("grpc_api.enabled", self.grpc_api.map(Value::from));
        put("grpc_api.port", self.grpc_api_port.map(Value::from));
        put("sse.enabled", self.sse.map(Value::from));
        put("http_stream.enabled", self.http_stream.map(Value::from));
        put("uni_websocket.enabled", self.uni_websocket.map(Value::from));
        put("uni_sse.enabled", self.uni_sse.map(Value::from));
        put("uni_http_stream.enabled", self.uni_http_stream.map(Value::from));
        put("uni_grpc.enabled", self.uni_grpc.map(Value::from));
        put("uni_grpc.port", self.uni_grpc_port.map(Value::from));
        f
    }
}

fn process_env() -> Vec<(String, String)> {
    std::env::vars_os().filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?))).collect()
}

/// An explicit path must exist (load reports it); otherwise `config.json` when present.
fn config_path(explicit: Option<PathBuf>) -> Option<PathBuf> {
    explicit.or_else(|| Path::new(DEFAULT_CONFIG).is_file().then(|| PathBuf::from(DEFAULT_CONFIG)))
}

fn load_for_tools(config: Option<PathBuf>) -> Result<Loaded> {
    let opts = LoadOptions {
        config_path: config_path(config),
        env: process_env(),
        skip_secret_generation: true,
        ..Default::default()
    };
    load_checked(&opts).map_err(|e| anyhow!("{e}"))
}

/// [`load`], then the token options checked as the workers will build them.
fn load_checked(opts: &LoadOptions) -> std::result::Result<Loaded, String> {
    let loaded = load(opts).map_err(|e| e.to_string())?;
    token::check_config(&loaded.config).map_err(|e| format!("invalid configuration: {e}"))?;
    Ok(loaded)
}

fn serve(args: ServeArgs) -> ExitCode {
    // As Centrifugo: `.env` of the working directory, under the variables already set.
    let dotenv = match gyre::config::dotenv::load(Path::new(".env")) {
        Ok(d) => d,
        Err(e) => {
            eprintln!("gyre: {e}");
            return ExitCode::FAILURE;
        }
    };
    let opts = LoadOptions {
        config_path: config_path(args.config.clone()),
        flags: args.flags(),
        env: process_env(),
        ..Default::default()
    };
    let loaded = match load_checked(&opts) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("gyre: {e}");
            return ExitCode::FAILURE;
        }
    };
    let logging = match gyre::logging::init(&loaded.config.log.level, &loaded.config.log.file) {
        Ok(on) => on,
        Err(e) => {
            eprintln!("gyre: {e}");
            return ExitCode::FAILURE;
        }
    };
    tracing::info!("starting Gyre v{}", env!("CARGO_PKG_VERSION"));
    match &loaded.path {
        Some(p) => {
            let path = std::path::absolute(p).unwrap_or_else(|_| p.clone());
            tracing::info!(path = %path.display(), "using config file")
        }
        None => tracing::warn!("no config file ({DEFAULT_CONFIG} not found): using defaults and environment"),
    }
    if dotenv.is_some() {
        tracing::info!("environment variables have been loaded from .env file");
    }
    for w in &loaded.warnings {
        tracing::warn!("{w}");
    }
    announce_generated(&loaded);
    let generated = loaded.generated.clone();
    let running = config_tree(&loaded.config, &generated);
    let pid_file = loaded.config.pid_file.clone();
    if !pid_file.is_empty() {
        if let Err(e) = std::fs::write(&pid_file, format!("{}\n", std::process::id())) {
            let msg = format!("pid_file: cannot write {pid_file}: {e}");
            if logging {
                tracing::error!("{msg}");
            } else {
                eprintln!("gyre: {msg}");
            }
            return ExitCode::FAILURE;
        }
    }
    let start_secret = loaded.config.client.token.hmac_secret_key.clone();
    let result = gyre::server::run(loaded.config, || reread(&opts, &running, &generated, &start_secret));
    if !pid_file.is_empty() {
        let _ = std::fs::remove_file(&pid_file);
    }
    if let Err(e) = result {
        if logging {
            tracing::error!("{e}");
        } else {
            eprintln!("gyre: {e}");
        }
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}

/// The effective config as a tree, without the secrets generated for this run.
fn config_tree(config: &Config, generated: &[&str]) -> Value {
    let mut tree = serde_json::to_value(config).unwrap_or_default();
    for path in generated {
        if let Some((section, key)) = path.rsplit_once('.') {
            let pointer = format!("/{}", section.replace('.', "/"));
            if let Some(Value::Object(m)) = tree.pointer_mut(&pointer) {
                m.remove(key);
            }
        }
    }
    tree
}

/// What a SIGHUP puts in effect (as Centrifugo): the channel options and the token settings.
const RELOADED: [&str; 4] =
    ["channel", "client.token", "client.subscription_token", "client.insecure_skip_token_signature_verify"];

/// On SIGHUP: reads the config as a restart would; logs why when it does not load, and which
/// of its changed options wait for a restart (by name, never their values). A token secret
/// generated at start-up stays in use while the file still sets none.
fn reread(opts: &LoadOptions, running: &Value, generated: &[&str], start_secret: &str) -> Option<Config> {
    let opts = LoadOptions { env: process_env(), skip_secret_generation: true, ..opts.clone() };
    match load(&opts) {
        Err(e) => {
            tracing::error!("error reading config: {e}");
            None
        }
        Ok(mut loaded) => {
            let t = &mut loaded.config.client.token;
            if generated.contains(&"client.token.hmac_secret_key")
                && t.hmac_secret_key.is_empty()
                && !t.has_public_keys()
            {
                t.hmac_secret_key = start_secret.to_string();
            }
            let mut changed = Vec::new();
            diff(running, &config_tree(&loaded.config, generated), String::new(), &mut changed);
            changed.retain(|p| !RELOADED.iter().any(|r| p == r || p.starts_with(&format!("{r}."))));
            if !changed.is_empty() {
                tracing::warn!("options changed since start (applied on restart): {}", changed.join(", "));
            }
            Some(loaded.config)
        }
    }
}

/// The paths where `a` and `b` differ (objects compared key by key, anything else whole).
fn diff(a: &Value, b: &Value, path: String, out: &mut Vec<String>) {
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            let keys: std::collections::BTreeSet<&String> = x.keys().chain(y.keys()).collect();
            for k in keys {
                let p = if path.is_empty() { k.clone() } else { format!("{path}.{k}") };
                diff(x.get(k).unwrap_or(&Value::Null), y.get(k).unwrap_or(&Value::Null), p, out);
            }
        }
        _ if a != b => out.push(path),
        _ => {}
    }
}

/// Generated secrets live only as long as this process, so the operator must see them.
fn announce_generated(loaded: &Loaded) {
    let c = &loaded.config;
    if loaded.generated.contains(&"http_api.key") {
        let host = match c.http_server.address.as_str() {
            "" | "0.0.0.0" | "::" | "[::]" => "localhost",
            a => a,
        };
        let port = match c.http_server.internal() {
            Some(p) if !c.http_api.external => p,
            _ => c.http_server.port,
        };
        let url = format!("http://{host}:{port}{}/publish", c.http_api.handler_prefix.trim_end_matches('/'));
        tracing::warn!("http_api.key is not set: generated a random API key for this run");
        tracing::warn!("API key: {}", c.http_api.key);
        tracing::warn!(
            "try: curl -X POST -H \"X-API-Key: {}\" -d '{{\"channel\":\"test\",\"data\":{{\"hello\":\"world\"}}}}' {url}",
            c.http_api.key
        );
    }
    if loaded.generated.contains(&"client.token.hmac_secret_key") {
        tracing::warn!("client.token.hmac_secret_key is not set: generated a random one for this run");
        tracing::warn!("token HMAC secret: {}", c.client.token.hmac_secret_key);
    }
    if c.client.insecure_skip_token_signature_verify {
        tracing::warn!("INSECURE skip token signature verify enabled, make sure you understand risks");
    }
    if loaded.generated_secrets {
        tracing::warn!("run `gyre genconfig` to create a config with persistent secrets");
    }
}

fn genconfig(path: &Path) -> Result<()> {
    let secret = || uuid::Uuid::new_v4().to_string();
    let value = json!({
        "client": {"token": {"hmac_secret_key": secret()}, "allowed_origins": []},
        "admin": {"enabled": false, "password": secret(), "secret": secret()},
        "http_api": {"key": secret()},
    });
    let text = render(&value, path)?;
    let mut file = std::fs::OpenOptions::new().write(true).create_new(true).open(path).map_err(|e| {
        if e.kind() == std::io::ErrorKind::AlreadyExists {
            anyhow!("{} already exists, not overwriting", path.display())
        } else {
            anyhow!("creating {}: {e}", path.display())
        }
    })?;
    file.write_all(text.as_bytes()).with_context(|| format!("writing {}", path.display()))?;
    drop(file);
    let check = LoadOptions { config_path: Some(path.to_owned()), skip_secret_generation: true, ..Default::default() };
    if let Err(e) = load(&check) {
        let _ = std::fs::remove_file(path);
        bail!("generated config does not load: {e}");
    }
    println!("config written to {}", path.display());
    Ok(())
}

/// A config as text in the format of `path`'s extension.
fn render(value: &Value, path: &Path) -> Result<String> {
    let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("").to_ascii_lowercase();
    Ok(match ext.as_str() {
        "json" => serde_json::to_string_pretty(value)? + "\n",
        "toml" => toml::to_string_pretty(value)?,
        "yaml" | "yml" => serde_norway::to_string(value)?,
        _ => bail!("unsupported config format {ext:?} for {} (use .json, .toml, .yaml or .yml)", path.display()),
    })
}

fn defaultconfig(path: &Path, base: Option<PathBuf>, dry_run: bool) -> Result<()> {
    if !dry_run && path.exists() {
        bail!("{} already exists, not overwriting", path.display());
    }
    let opts =
        LoadOptions { config_path: base, env: process_env(), skip_secret_generation: true, ..Default::default() };
    let loaded = load(&opts).map_err(|e| anyhow!("{e}"))?;
    for w in &loaded.warnings {
        eprintln!("warning: {w}");
    }
    let text = render(&serde_json::to_value(&loaded.config)?, path)?;
    if dry_run {
        print!("{text}");
        return Ok(());
    }
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
        .with_context(|| format!("creating {}", path.display()))?;
    file.write_all(text.as_bytes()).with_context(|| format!("writing {}", path.display()))?;
    println!("config written to {}", path.display());
    Ok(())
}

fn checkconfig(path: PathBuf, strict: bool) -> Result<()> {
    let loaded = load_for_tools(Some(path.clone()))?;
    for w in &loaded.warnings {
        eprintln!("warning: {w}");
    }
    // The loader's words for an option it does not know, in the file or the environment.
    let unknown: Vec<&String> = loaded
        .warnings
        .iter()
        .filter(|w| w.starts_with("unknown option ") || w.starts_with("unknown environment "))
        .collect();
    if strict && !unknown.is_empty() {
        return Err(anyhow!("{} unknown option(s) in strict mode", unknown.len()));
    }
    println!("config {} is valid", path.display());
    Ok(())
}

fn defaultenv(base: Option<PathBuf>, non_zero_only: bool) -> Result<()> {
    use gyre::config::doc;
    if non_zero_only && base.is_none() {
        bail!("--base-non-zero-only needs a base config (-b)");
    }
    let opts = LoadOptions {
        config_path: base.clone(),
        env: process_env(),
        skip_secret_generation: true,
        ..Default::default()
    };
    let loaded = load_checked(&opts).map_err(|e| anyhow!("{e}"))?;
    for w in &loaded.warnings {
        eprintln!("warning: {w}");
    }
    let file = match base.filter(|_| non_zero_only) {
        Some(p) => Some(gyre::config::load::file_options(&p).map_err(|e| anyhow!("{e}"))?),
        None => None,
    };
    let mut text = String::from(
        "# The options Gyre applies; a GYRE_ variable wins over its CENTRIFUGO_ twin.\n\
         # Centrifugo options Gyre does not support are left out (gyre configdoc lists them).\n",
    );
    for line in doc::env_lines(&loaded.config, file.as_ref()) {
        text.push_str(&line);
        text.push('\n');
    }
    print_out(&text)
}

/// Writes `text` to stdout; a reader that went away (`| head`) is no error.
fn print_out(text: &str) -> Result<()> {
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|_| out.flush()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(e.into()),
        _ => Ok(()),
    }
}

fn configdoc(markdown: bool, section: &str, port: u16, base_level: usize) -> Result<()> {
    use std::io::Read;
    if markdown {
        return print_out(&gyre::config::doc::markdown(section, base_level));
    }
    let page = gyre::config::doc::html(&format!("Gyre v{} configuration", env!("CARGO_PKG_VERSION")), section);
    let listener =
        std::net::TcpListener::bind(("0.0.0.0", port)).with_context(|| format!("listening on port {port}"))?;
    let url = format!("http://localhost:{}", listener.local_addr()?.port());
    println!("configuration documentation on {url} (Ctrl+C to stop)");
    let _ = std::io::stdout().flush();
    let opener = if cfg!(target_os = "macos") { Some("open") } else { None };
    let graphical = std::env::var_os("DISPLAY").is_some() || std::env::var_os("WAYLAND_DISPLAY").is_some();
    if let Some(cmd) = opener.or(graphical.then_some("xdg-open")) {
        if let Err(e) = std::process::Command::new(cmd).arg(&url).stdout(std::process::Stdio::null()).spawn() {
            println!("Failed to open browser automatically: {e}, see {url}");
        }
    }
    for conn in listener.incoming() {
        let Ok(mut s) = conn else { continue };
        let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
        let mut head = Vec::new();
        let mut buf = [0u8; 4096];
        while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 16384 {
            match s.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => head.extend_from_slice(&buf[..n]),
            }
        }
        let (status, body) =
            if head.starts_with(b"GET ") { ("200 OK", page.as_str()) } else { ("405 Method Not Allowed", "") };
        let _ = write!(
            s,
            "HTTP/1.1 {status}\r\nContent-Type: text/html; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
    }
    Ok(())
}

/// Go's `time.Duration.String()` for whole seconds (`168h0m0s`, `1m30s`, `5s`).
fn go_duration(secs: u64) -> String {
    let (h, m, s) = (secs / 3600, secs % 3600 / 60, secs % 60);
    if h > 0 {
        format!("{h}h{m}m{s}s")
    } else if m > 0 {
        format!("{m}m{s}s")
    } else {
        format!("{s}s")
    }
}

fn print_token(token: &str, what: &str, args: &TokenArgs) {
    if args.quiet {
        print!("{token}");
        let _ = std::io::stdout().flush();
        return;
    }
    let user = if args.user.is_empty() { "anonymous user".to_owned() } else { format!("user \"{}\"", args.user) };
    let exp = if args.ttl >= 0 {
        format!("with expiration TTL {}", go_duration(args.ttl as u64))
    } else {
        "without expiration".to_owned()
    };
    println!("HMAC SHA-256 {what} for {user} {exp}:\n{token}");
}

fn ttl(args: &TokenArgs) -> Option<Duration> {
    // Centrifugo writes `exp` only for a positive TTL.
    (args.ttl > 0).then(|| Duration::from_secs(args.ttl as u64))
}

fn token_secret(c: &Config) -> Result<&str> {
    let secret = c.client.token.hmac_secret_key.as_str();
    if secret.is_empty() {
        bail!("no HMAC secret key set (client.token.hmac_secret_key)");
    }
    Ok(secret)
}

fn subscription_secret(c: &Config) -> Result<&str> {
    let sub = &c.client.subscription_token;
    if !sub.enabled {
        return token_secret(c);
    }
    if sub.token.hmac_secret_key.is_empty() {
        bail!("no HMAC secret key set (client.subscription_token.hmac_secret_key)");
    }
    Ok(&sub.token.hmac_secret_key)
}

fn gentoken(args: TokenArgs) -> Result<()> {
    let loaded = load_for_tools(args.config.clone())?;
    let c = &loaded.config;
    let mut extra = Map::new();
    let claim = &c.client.token.user_id_claim;
    if !claim.is_empty() {
        extra.insert(claim.clone(), Value::from(args.user.as_str()));
    }
    let t = token::generate_connection_token(token_secret(c)?, &args.user, ttl(&args), extra)
        .map_err(|e| anyhow!("{e}"))?;
    print_token(&t, "JWT", &args);
    Ok(())
}

fn gensubtoken(args: TokenArgs, channel: &str) -> Result<()> {
    if channel.is_empty() {
        bail!("channel is required (-s)");
    }
    let loaded = load_for_tools(args.config.clone())?;
    let secret = subscription_secret(&loaded.config)?;
    let t = token::generate_subscription_token(secret, &args.user, channel, ttl(&args)).map_err(|e| anyhow!("{e}"))?;
    print_token(&t, "subscription JWT", &args);
    Ok(())
}

fn checktoken(config: Option<PathBuf>, jwt: &str, subscription: bool) -> Result<()> {
    let loaded = load_for_tools(config)?;
    let c = &loaded.config;
    let (options, at) = if subscription && c.client.subscription_token.enabled {
        (&c.client.subscription_token.token, "client.subscription_token")
    } else {
        (&c.client.token, "client.token")
    };
    if !options.has_public_keys() {
        // Only HMAC: say so when no secret is set.
        if subscription {
            subscription_secret(c)?;
        } else {
            token_secret(c)?;
        }
    }
    let skip = c.client.insecure_skip_token_signature_verify;
    let verifier = token::Verifier::from_config(options, skip, at).map_err(|e| anyhow!("{e}"))?;
    let claims = verifier.verify_blocking(jwt.trim()).map_err(|e| anyhow!("{e}"))?;
    let channel = claims.get("channel").and_then(Value::as_str).unwrap_or("");
    if subscription && channel.is_empty() {
        bail!("invalid subscription token: no channel claim");
    }
    if !subscription && claims.contains_key("channel") {
        bail!("invalid connection token: channel claim is not allowed");
    }
    let claim = if options.user_id_claim.is_empty() { "sub" } else { options.user_id_claim.as_str() };
    let user = claims.get(claim).and_then(Value::as_str).unwrap_or("");
    let who = if user.is_empty() { "anonymous user".to_owned() } else { format!("user \"{user}\"") };
    if subscription {
        println!("valid subscription token for {who} and channel \"{channel}\"");
    } else {
        println!("valid token for {who}");
    }
    println!("payload: {}", Value::Object(claims));
    Ok(())
}

fn run_tool(r: Result<()>) -> ExitCode {
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        None => serve(cli.serve),
        Some(Command::Serve(args)) => serve(args),
        Some(Command::Genconfig { config }) => run_tool(genconfig(&config)),
        Some(Command::Defaultconfig { config, base, dry_run }) => run_tool(defaultconfig(&config, base, dry_run)),
        Some(Command::Checkconfig { config, strict }) => run_tool(checkconfig(config, strict)),
        Some(Command::Defaultenv { base, base_non_zero_only }) => run_tool(defaultenv(base, base_non_zero_only)),
        Some(Command::Configdoc { markdown, section, port, base_level }) => {
            run_tool(configdoc(markdown, &section, port, base_level))
        }
        Some(Command::Gentoken { token }) => run_tool(gentoken(token)),
        Some(Command::Gensubtoken { token, channel }) => run_tool(gensubtoken(token, &channel)),
        Some(Command::Checktoken { config, token }) => run_tool(checktoken(config, &token, false)),
        Some(Command::Checksubtoken { config, token }) => run_tool(checktoken(config, &token, true)),
        Some(Command::Api(args)) => api::run(args),
        Some(Command::Version) => {
            println!("Gyre v{} (Centrifugo-compatible, OSS)", env!("CARGO_PKG_VERSION"));
            ExitCode::SUCCESS
        }
    }
}
