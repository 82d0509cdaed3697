//! The official Python `cent` client (installed by `.ci/run` into `target/pyenv`) against a
//! running server: `tests/python/test_cent.py`.

use std::process::Command;

use crate::util::*;

#[test]
fn python_cent_client() {
    let python = repo_root().join("target/pyenv/bin/python");
    if !python.exists() {
        if std::env::var_os("CI").is_some() {
            panic!("{} is missing and CI is set: run `bash .ci/run` (it installs the cent client)", python.display());
        }
        eprintln!(
            "SKIPPED python_cent_client: {} not found; create it with `bash .ci/run` \
             (or `python3 -m venv target/pyenv && target/pyenv/bin/pip install cent==5.2.0`)",
            python.display()
        );
        return;
    }
    let s = Server::start(config());
    let script = repo_root().join("tests/python/test_cent.py");
    let out = Command::new(&python)
        .arg(&script)
        .arg(s.url("/api"))
        .arg(KEY)
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .output()
        .expect("run the cent script");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "test_cent.py failed ({}):\n--- stdout\n{stdout}\n--- stderr\n{stderr}", out.status);
    assert!(stdout.contains("checks passed"), "unexpected output:\n{stdout}\n{stderr}");
    eprintln!("{}", stdout.trim_end());
}
