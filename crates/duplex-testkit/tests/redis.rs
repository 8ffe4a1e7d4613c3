//! Starts a real redis-server and checks the harness around it.

use duplex_testkit::{free_port, port_accepts, require_tool, RedisServer};

#[test]
fn ping_set_get_and_restart_empty_on_the_same_port() {
    let mut redis = RedisServer::start();
    let port = redis.port();
    assert_eq!(redis.url(), format!("redis://127.0.0.1:{port}/0"));
    assert_eq!(redis.command(&["PING"]), "+PONG\r\n");
    assert_eq!(redis.command(&["SET", "k", "v"]), "+OK\r\n");
    assert_eq!(redis.command(&["GET", "k"]), "$1\r\nv\r\n");
    assert_eq!(redis.command(&["DBSIZE"]), ":1\r\n");
    assert!(redis.command(&["KEYS", "*"]).contains("\r\nk\r\n"));
    assert!(redis.command(&["CLIENT", "LIST"]).starts_with('$'));
    assert_eq!(
        redis.command(&["CONFIG", "GET", "save"]),
        "*2\r\n$4\r\nsave\r\n$0\r\n\r\n"
    );
    let old_pid = redis.pid();

    redis.restart_empty();
    assert_eq!(redis.port(), port, "restart keeps the port");
    assert_ne!(redis.pid(), old_pid, "restart makes a new process");
    assert_eq!(redis.command(&["DBSIZE"]), ":0\r\n", "restart starts empty");

    redis.kill();
    assert!(!port_accepts(port), "killed server still accepts");
    assert!(redis.try_command(&["PING"]).is_err());
    assert!(redis.log_text().contains("Ready to accept connections"));
}

#[test]
fn password_is_required_and_in_the_url() {
    let redis = RedisServer::start_with_password("s3cret");
    assert_eq!(
        redis.url(),
        format!("redis://:s3cret@127.0.0.1:{}/0", redis.port())
    );
    assert_eq!(redis.command(&["PING"]), "+PONG\r\n");
    let anonymous = duplex_testkit::resp_command(redis.port(), None, &["PING"])
        .expect("an error reply, not an I/O error");
    assert!(anonymous.starts_with("-NOAUTH"), "{anonymous:?}");
}

#[test]
fn drop_kills_and_removes_the_directory() {
    let redis = RedisServer::start();
    let (port, dir) = (redis.port(), redis.dir().to_owned());
    assert!(dir.is_dir());
    drop(redis);
    assert!(!port_accepts(port));
    assert!(!dir.exists() || std::env::var_os("DUPLEX_TESTKIT_KEEP").is_some());
}

#[test]
fn free_port_and_require_tool() {
    assert_ne!(free_port(), 0);
    assert!(require_tool("redis-server").is_absolute());
}

#[test]
#[should_panic(expected = "bash scripts/test.sh")]
fn missing_tool_panics_loudly() {
    require_tool("duplex-testkit-no-such-tool");
}
