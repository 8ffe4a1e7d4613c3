//! The broker conformance suite that `MemoryBroker` passes, run against a real `redis-server`.

use std::sync::atomic::{AtomicU32, Ordering};

use duplex_redis::{RedisBroker, RedisConfig};
use duplex_testkit::RedisServer;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_broker_passes_the_conformance_suite() {
    let redis = RedisServer::start();
    let url = redis.url();
    let n = AtomicU32::new(0);
    // Each check gets a fresh broker; a prefix of its own gives it an empty cluster.
    let make = || {
        let mut cfg = RedisConfig::new(url.clone());
        cfg.prefix = format!("conformance{}", n.fetch_add(1, Ordering::Relaxed));
        tokio::task::block_in_place(|| {
            tokio::runtime::Handle::current()
                .block_on(RedisBroker::connect(cfg))
                .expect("broker connects")
        })
    };
    duplex_hub::broker::conformance::run_all(make).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_password_in_the_url_is_used() {
    let redis = RedisServer::start_with_password("s3cret");
    let broker = RedisBroker::connect(RedisConfig::new(redis.url()))
        .await
        .expect("connects with the password");
    assert_eq!(broker.node_id().len(), 16);
    let wrong = redis.url().replace("s3cret", "wrong");
    let e = RedisBroker::connect(RedisConfig::new(wrong))
        .await
        .err()
        .expect("refused")
        .to_string();
    assert!(e.contains(":***@"), "the password is redacted: {e}");
    assert!(!e.contains("wrong"), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_redis_fails_at_start_naming_the_url() {
    let port = duplex_testkit::free_port();
    let mut cfg = RedisConfig::new(format!("redis://127.0.0.1:{port}/0"));
    cfg.connect_timeout = std::time::Duration::from_secs(2);
    let e = RedisBroker::connect(cfg)
        .await
        .err()
        .expect("refused")
        .to_string();
    assert!(e.contains(&format!("127.0.0.1:{port}")), "{e}");
    assert!(e.contains("cannot reach Redis"), "{e}");
}
