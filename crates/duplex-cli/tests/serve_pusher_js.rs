//! `duplex serve` against the real pusher-js 8 client and pusher 5 server SDK (Node).
//!
//! Needs `node` (18+) and the pinned packages: run `tests/pusher/install.sh` once. Missing
//! either fails this test (it never skips).

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
