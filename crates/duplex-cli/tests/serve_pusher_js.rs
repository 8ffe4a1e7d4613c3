//! `duplex serve` against the real pusher-js 8 client, Laravel Echo 2 and the pusher 5 server
//! SDK (Node).
//!
//! Needs `node` (20.19+) and the pinned packages: run `tests/pusher/install.sh` once. Missing
//! either fails these tests (they never skip).

use std::path::PathBuf;
use std::process::Command;

#[test]
fn pusher_js_and_pusher_sdk_flows() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/pusher");
    assert!(
        dir.join("node_modules/pusher-js").is_dir() && dir.join("node_modules/pusher").is_dir(),
        "pusher-js / pusher not installed: run tests/pusher/install.sh (needs node and npm)"
    );
    let out = Command::new("node")
        .args(["--test-force-exit", "--test-reporter=spec", "run.mjs"])
        .current_dir(&dir)
        .env("DUPLEX_BIN", env!("CARGO_BIN_EXE_duplex"))
        .output()
        .unwrap_or_else(|e| panic!("running node (is Node 18+ installed?): {e}"));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    print!("{stdout}");
    eprint!("{stderr}");
    assert!(
        out.status.success(),
        "pusher-js / pusher SDK tests failed: {}",
        out.status
    );
    assert!(
        stdout.contains("fail 0") && !stdout.contains("pass 0"),
        "no node test ran or one failed"
    );
}

/// The `ℹ pass N` / `ℹ fail N` counts of node:test's spec reporter.
fn node_test_counts(stdout: &str) -> (u32, u32) {
    let count = |what: &str| {
        stdout
            .lines()
            .find_map(|l| l.strip_prefix(&format!("ℹ {what} ")))
            .and_then(|n| n.trim().parse().ok())
            .unwrap_or_else(|| panic!("no `{what}` count in the node --test output"))
    };
    (count("pass"), count("fail"))
}

#[test]
fn laravel_echo_flows() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/pusher");
    assert!(
        dir.join("node_modules/laravel-echo").is_dir()
            && dir.join("node_modules/pusher-js").is_dir(),
        "laravel-echo / pusher-js not installed: run tests/pusher/install.sh (needs node and npm)"
    );
    let started = std::time::Instant::now();
    let out = Command::new("node")
        .args(["--test-force-exit", "--test-reporter=spec", "echo.mjs"])
        .current_dir(&dir)
        .env("DUPLEX_BIN", env!("CARGO_BIN_EXE_duplex"))
        .output()
        .unwrap_or_else(|e| panic!("running node (is Node 20.19+ installed?): {e}"));
    let stdout = String::from_utf8_lossy(&out.stdout);
    print!("{stdout}");
    eprint!("{}", String::from_utf8_lossy(&out.stderr));
    eprintln!("laravel-echo tests took {:?}", started.elapsed());
    assert!(
        out.status.success(),
        "Laravel Echo tests failed: {}",
        out.status
    );
    let (pass, fail) = node_test_counts(&stdout);
    assert!(
        pass > 0 && fail == 0,
        "Laravel Echo: {pass} passed, {fail} failed"
    );
}

#[test]
fn demo_page_in_two_chromium_tabs() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/pusher");
    assert!(
        dir.join("node_modules/playwright-core").is_dir(),
        "playwright-core not installed: run tests/pusher/install.sh"
    );
    assert!(
        std::path::Path::new("/usr/bin/chromium").exists(),
        "/usr/bin/chromium missing: run tests/interop/install.sh (apt-get install chromium)"
    );
    let out = Command::new("node")
        .args([
            "--test-force-exit",
            "--test-reporter=spec",
            "demo_browser.mjs",
        ])
        .current_dir(&dir)
        .env("DUPLEX_BIN", env!("CARGO_BIN_EXE_duplex"))
        .output()
        .unwrap_or_else(|e| panic!("running node (is Node 18+ installed?): {e}"));
    let stdout = String::from_utf8_lossy(&out.stdout);
    print!("{stdout}");
    eprint!("{}", String::from_utf8_lossy(&out.stderr));
    assert!(
        out.status.success(),
        "demo page test failed: {}",
        out.status
    );
    assert!(
        stdout.contains("pass 1") && stdout.contains("fail 0"),
        "the demo test did not run"
    );
}

#[test]
fn demo_page_script_parses() {
    let js = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../web/app.js");
    let status = Command::new("node")
        .arg("--check")
        .arg(&js)
        .status()
        .unwrap_or_else(|e| panic!("running node (is Node 18+ installed?): {e}"));
    assert!(status.success(), "web/app.js does not parse");
}
