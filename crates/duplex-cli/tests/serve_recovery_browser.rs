//! Channel history recovery in a real Chromium (tests/pusher/recovery_browser.mjs): pusher-js
//! 8.4.0 with `/js/duplex-recovery.js` against `duplex serve --config` with history on for
//! `chat-*` and `presence-chat-*` (recovered, and too much missed), and the demo page on that
//! hub (too much missed: its notice) and on the built-in defaults (recovered); plus the add-on
//! being served without the demo.
//!
//! Needs `node`, the pinned packages (`tests/pusher/install.sh`) and /usr/bin/chromium
//! (`tests/interop/install.sh`). Missing any of them fails these tests (they never skip).

mod serve_support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use serve_support::{Server, APP_ID, KEY, SECRET};

fn config(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("duplex-recovery-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("duplex.toml");
    std::fs::write(
        &file,
        format!(
            r#"
            [[apps]]
            id = "{APP_ID}"
            key = "{KEY}"
            secret = "{SECRET}"
            enable_client_events = true
            client_event_rate = 100
            history = {{ channels = ["chat-*", "presence-chat-*"], size = 10, ttl = 600 }}
            "#
        ),
    )
    .unwrap();
    file
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
fn recovery_in_chromium_with_pusher_js_and_the_demo() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/pusher");
    assert!(
        dir.join("node_modules/playwright-core").is_dir()
            && dir.join("node_modules/pusher-js").is_dir()
            && dir.join("node_modules/pusher").is_dir(),
        "playwright-core / pusher-js / pusher not installed: run tests/pusher/install.sh"
    );
    assert!(
        std::path::Path::new("/usr/bin/chromium").exists(),
        "/usr/bin/chromium missing: run tests/interop/install.sh (apt-get install chromium)"
    );
    let file = config("browser");
    let server = Server::start(&["--config", file.to_str().unwrap()]);
    // The demo on the built-in defaults: its app keeps a history for `presence-chat-*`.
    let demo = Server::start(&["--enable-client-events"]);
    let out = Command::new("node")
        .args([
            "--test-force-exit",
            "--test-reporter=spec",
            "--test-timeout=120000",
            "recovery_browser.mjs",
        ])
        .current_dir(&dir)
        .env("DUPLEX_HUB", &server.addr)
        .env("DUPLEX_DEMO_HUB", &demo.addr)
        .output()
        .unwrap_or_else(|e| panic!("running node (is Node 20+ installed?): {e}"));
    let stdout = String::from_utf8_lossy(&out.stdout);
    print!("{stdout}");
    eprint!("{}", String::from_utf8_lossy(&out.stderr));
    assert!(
        out.status.success(),
        "recovery tests failed: {}",
        out.status
    );
    let (pass, fail) = node_test_counts(&stdout);
    assert!(
        pass == 6 && fail == 0,
        "recovery in Chromium: {pass} passed, {fail} failed"
    );
}

#[test]
fn recovery_addon_is_served_without_the_demo() {
    let server = Server::start(&["--no-demo"]);
    let mut s = TcpStream::connect(&server.addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        s,
        "GET /js/duplex-recovery.js HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
        server.addr
    )
    .unwrap();
    let mut raw = String::new();
    s.read_to_string(&mut raw).unwrap();
    let (head, body) = raw.split_once("\r\n\r\n").unwrap();
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(
        head.to_ascii_lowercase()
            .contains("content-type: text/javascript"),
        "{head}"
    );
    assert!(body.contains("DuplexRecovery.attach") || body.contains("attach: attach"));
    // The demo itself is off.
    let (status, _) = serve_support::http(&server.addr, "GET", "/app.js", "");
    assert_eq!(status, 404);
}
