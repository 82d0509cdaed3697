//! What the README tells a newcomer to run, run as written.
//!
//! * The quick start ("A first client, end to end" in README.md): its `config.json`, the
//!   commands of its shell block and its `client.js` are read out of the README's code
//!   blocks, so the test breaks when the README changes without it. The only edits: the
//!   port (8000 → a free one, in `client.js`, the `curl` line and the server's
//!   `CENTRIFUGO_HTTP_SERVER_PORT`), `cargo run --release [-q] --` → the built binary, and
//!   `npm install centrifuge ws` → `NODE_PATH=tests/js/node_modules`.
//! * `examples/browser.html` in Chromium (`tests/js/example_browser.js`): a token from
//!   `gyre gentoken`, the page's form filled in, a publication through the server API listed
//!   on the page.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{channel, Receiver};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::admin::browser_ready;
use crate::util::*;

/// A child process (and its process group) killed on drop.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        // SAFETY: kill(2) on the group this test created; no memory is involved.
        unsafe { libc::kill(-(self.0.id() as i32), libc::SIGKILL) };
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A directory of its own under the system's temporary one, removed on drop.
struct Scratch(PathBuf);

impl Scratch {
    fn new(name: &str) -> Scratch {
        let dir = std::env::temp_dir().join(format!("gyre-it-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create temp dir");
        Scratch(dir)
    }

    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// `cmd` without the caller's proxy settings (loopback must stay direct) and `CENTRIFUGO_*` /
/// `GYRE_*` variables (the server would read them).
fn clean(mut cmd: Command) -> Command {
    for (k, _) in std::env::vars_os() {
        let k = k.to_string_lossy().into_owned();
        if k.starts_with("CENTRIFUGO_") || k.starts_with("GYRE_") || k.to_ascii_lowercase().ends_with("_proxy") {
            cmd.env_remove(k);
        }
    }
    cmd
}

fn spawn_grouped(cmd: Command) -> Proc {
    use std::os::unix::process::CommandExt;
    Proc(clean(cmd).process_group(0).spawn().expect("spawn"))
}

/// The text of the first fenced block tagged `lang` after `from` in `text`; `(block, rest)`.
fn code_block<'a>(text: &'a str, lang: &str) -> (&'a str, &'a str) {
    let open = format!("```{lang}\n");
    let start = text.find(&open).unwrap_or_else(|| panic!("no ```{lang} block")) + open.len();
    let len = text[start..].find("```\n").unwrap_or_else(|| panic!("unclosed ```{lang} block"));
    (&text[start..start + len], &text[start + len..])
}

/// The shell block's commands: continuation lines joined, `# comments` apart.
fn commands(sh: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut comments = String::new();
    for line in sh.lines() {
        let (code, comment) = match line.find("  #") {
            Some(i) => (line[..i].trim_end(), line[i..].trim_start_matches([' ', '#'])),
            None => (line.trim_end(), ""),
        };
        comments.push_str(comment);
        if let Some(code) = code.strip_suffix('\\') {
            cur.push_str(code.trim_end());
            cur.push(' ');
            continue;
        }
        cur.push_str(code.trim_start());
        out.push((std::mem::take(&mut cur), std::mem::take(&mut comments)));
    }
    out
}

/// Text lines a child writes to stdout.
fn lines_of(child: &mut Child) -> Receiver<String> {
    let stdout = child.stdout.take().expect("piped stdout");
    let (tx, rx) = channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

fn wait_for_port(port: u16, server: &mut Proc, log: &Path) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        let exited = server.0.try_wait().ok().flatten();
        if exited.is_some() || Instant::now() > deadline {
            panic!(
                "the server did not listen on {port} ({exited:?}):\n{}",
                std::fs::read_to_string(log).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn node_ready(test: &str) -> bool {
    let root = repo_root();
    if !Command::new("node").arg("--version").output().is_ok_and(|o| o.status.success()) {
        return unavailable(test, "`node` is not on PATH", "apt-get install nodejs");
    }
    if !Command::new("curl").arg("--version").output().is_ok_and(|o| o.status.success()) {
        return unavailable(test, "`curl` is not on PATH", "apt-get install curl");
    }
    if !root.join("tests/js/node_modules/centrifuge/package.json").exists()
        || !root.join("tests/js/node_modules/ws/package.json").exists()
    {
        return unavailable(test, "tests/js/node_modules lacks centrifuge or ws", "npm ci --prefix tests/js");
    }
    true
}

#[test]
fn readme_quick_start_runs_as_written() {
    let test = "readme_quick_start_runs_as_written";
    if !node_ready(test) {
        return;
    }
    let readme = std::fs::read_to_string(repo_root().join("README.md")).expect("README.md");
    let at = readme.find("A first client, end to end.").expect("the README's quick start");
    let (config, rest) = code_block(&readme[at..], "json");
    let (sh, rest) = code_block(rest, "sh");
    let (client, _) = code_block(rest, "js");
    assert!(client.starts_with("// client.js\n"), "the js block is client.js:\n{client}");

    let cmds = commands(sh);
    let [(server, _), (gentoken, _), (node, _), (curl, promise)] = &cmds[..] else {
        panic!("four commands expected in the quick start's shell block: {cmds:#?}")
    };
    let expected =
        promise.split("client.js prints ").nth(1).unwrap_or_else(|| panic!("what client.js prints: {promise:?}"));
    assert_eq!(expected, "{ text: 'hi' }");

    let port = free_port();
    let local = |s: &str| {
        assert!(s.contains("localhost:8000"), "{s}");
        s.replace("localhost:8000", &format!("localhost:{port}"))
    };
    let dir = Scratch::new("quick-start");
    std::fs::write(dir.path().join("config.json"), config).unwrap();
    std::fs::write(dir.path().join("client.js"), local(client)).unwrap();
    let bin = server_binary().display().to_string();
    let cargo = |s: &str| {
        let s = s.replace("cargo run --release -q --", &bin).replace("cargo run --release --", &bin);
        assert!(s.starts_with(&bin) || s.contains(&format!("$({bin} ")), "a `cargo run` command: {s}");
        s
    };

    // The server, in the foreground of its own terminal in the README.
    let log = dir.path().join("server.log");
    let mut cmd = Command::new("bash");
    cmd.args(["-c", &format!("exec {}", cargo(server))])
        .current_dir(dir.path())
        .env("CENTRIFUGO_HTTP_SERVER_PORT", port.to_string())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap());
    let mut server = spawn_grouped(cmd);
    wait_for_port(port, &mut server, &log);

    // TOKEN=$(... gentoken ...)
    let out = clean(Command::new("bash"))
        .args(["-c", &format!("{}\nprintf %s \"$TOKEN\"", cargo(gentoken))])
        .current_dir(dir.path())
        .output()
        .expect("gentoken");
    let token = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(out.status.success() && token.split('.').count() == 3, "gentoken: {out:?}");

    // npm install centrifuge ws && TOKEN=$TOKEN node client.js
    let node = node.strip_prefix("npm install centrifuge ws && ").unwrap_or_else(|| panic!("{node}"));
    let mut cmd = Command::new("bash");
    cmd.args(["-c", node])
        .current_dir(dir.path())
        .env("TOKEN", &token)
        .env("NODE_PATH", repo_root().join("tests/js/node_modules"))
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    let mut client = spawn_grouped(cmd);
    let printed = lines_of(&mut client.0);

    // The client is subscribed once the channel has a subscriber (then the publication
    // cannot arrive before it).
    let key = serde_json::from_str::<Value>(config).unwrap()["http_api"]["key"].as_str().unwrap().to_string();
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let mut c = Conn::new(addr);
        c.send(&request("POST", "/api/channels", b"{}", &[("X-API-Key", &key)]));
        let r = c.read_response().expect("channels");
        if r.json()["result"]["channels"]["news"].is_object() {
            break;
        }
        assert!(Instant::now() < deadline, "client.js did not subscribe: {}", r.text());
        std::thread::sleep(Duration::from_millis(100));
    }

    let out = clean(Command::new("bash")).args(["-c", &local(curl)]).current_dir(dir.path()).output().expect("curl");
    assert!(out.status.success(), "curl: {out:?}");
    let reply: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|_| panic!("curl printed {out:?}"));
    assert!(reply.get("error").is_none(), "{reply}");

    let line = printed.recv_timeout(Duration::from_secs(20)).expect("client.js printed nothing");
    assert_eq!(line, expected);
}

#[test]
fn browser_example_lists_a_publication() {
    let test = "browser_example_lists_a_publication";
    let Some(chromium) = browser_ready(test) else { return };
    let page_port = free_port();
    let secret = "browser-example-secret";
    let client = json!({
        "token": {"hmac_secret_key": secret},
        "allowed_origins": [format!("http://127.0.0.1:{page_port}")],
    });
    let channel = json!({"without_namespace": {"allow_subscribe_for_client": true}});
    let s = Server::start(config_with(json!({"client": client.clone(), "channel": channel})));

    let dir = Scratch::new("browser-example");
    let cfg = dir.path().join("config.json");
    std::fs::write(&cfg, json!({"client": client}).to_string()).unwrap();
    let out = clean(Command::new(server_binary()))
        .args(["gentoken", "-c", cfg.to_str().unwrap(), "-u", "alice", "-q"])
        .output()
        .expect("gyre gentoken");
    assert!(out.status.success(), "gentoken: {out:?}");
    let token = String::from_utf8_lossy(&out.stdout).trim().to_string();

    let shot = repo_root().join("target/example-screenshots/browser.png");
    let _ = std::fs::remove_file(&shot);
    let mut cmd = Command::new("node");
    cmd.arg(repo_root().join("tests/js/example_browser.js"))
        .env("WS_URL", format!("ws://127.0.0.1:{}/connection/websocket", s.port))
        .env("CLIENT_TOKEN", &token)
        .env("CHANNEL", "news")
        .env("PAGE_PORT", page_port.to_string())
        .env("SCREENSHOT", &shot)
        .env("CHROMIUM", chromium);
    let mut p = LineProc::spawn("example_browser.js", cmd);
    let sd = p.wait("the page subscribed", |e| e["ev"] == "subscribed");
    assert_eq!(sd["state"], "Subscribed to news.", "{sd}");
    let r = s.api("publish", json!({"channel": "news", "data": {"text": "hi from the API"}}));
    assert!(r.get("error").is_none(), "{r}");
    let pb = p.wait("the publication on the page", |e| e["ev"] == "publication");
    let items = pb["items"].as_array().expect("items");
    assert_eq!(items.len(), 1, "{pb}");
    assert!(items[0].as_str().is_some_and(|t| t.contains(r#"{"text":"hi from the API"}"#)), "{pb}");
    assert!(std::fs::metadata(&shot).is_ok_and(|m| m.len() > 1000), "screenshot {}", shot.display());
}
