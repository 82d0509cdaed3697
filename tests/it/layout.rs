//! The source layout's rules (ARCHITECTURE.md, "Module map"): imports between folders of
//! `src/` point one way (no import loop spans two folders) and no file passes 800 lines, as
//! `scripts/imports.py` checks them.

use std::process::Command;

use crate::util::repo_root;

#[test]
fn imports_point_down_and_files_stay_small() {
    let out = Command::new("python3")
        .arg(repo_root().join("scripts/imports.py"))
        .output()
        .expect("run python3 scripts/imports.py");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "scripts/imports.py failed:\n{stdout}{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("no import loop across folders"), "unexpected output:\n{stdout}");
}
