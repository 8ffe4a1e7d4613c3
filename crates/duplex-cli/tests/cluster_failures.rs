//! `duplex serve --redis` when Redis fails: down, restarted with empty data, failed over by
//! Sentinel, unreachable at start. Real processes only.

mod cluster_support;
mod serve_support;

use std::time::Duration;

use cluster_support::*;
use duplex_testkit::{RedisServer, SentinelSet};
use serde_json::{json, Value};
use serve_support::*;

/// Until every node answers `/ready` with `status`.
async fn all_ready(c: &Cluster, nodes: &[usize], status: u16, limit: Duration) {
    let addrs: Vec<String> = nodes.iter().map(|&i| c.addr(i)).collect();
    eventually(&format!("/ready = {status} on every node"), limit, || {
        let addrs = addrs.clone();
        async move {
            let all = tokio::task::spawn_blocking(move || {
                addrs.iter().all(|a| ready_status(a) == status)
            })
            .await
            .expect("join");
            all.then_some(())
        }
    })
    .await;
}

/// Publishes through `from` until a subscriber elsewhere gets it (Redis may still be coming
/// back); returns the messages seen on the way.
async fn first_event_across(addr: &str, sub: &mut Ws, tag: &str) -> Value {
    let (status, body) = trigger(addr, "news", "after", json!({ "tag": tag })).await;
    assert_eq!(status, 200, "{body}");
    let m = next_json(sub).await;
    assert_eq!(m["event"], "after", "{m}");
    assert_eq!(m["data"]["tag"], tag);
    m
}

#[tokio::test]
async fn redis_restarted_empty_while_clients_stay_connected() {
    let mut redis = RedisServer::start();
    let c = Cluster::start(&redis.url(), 2, &["--node-timeout", "3"]);
    let (mut s0, id0) = established(&c.url(0)).await;
    subscribe_public(&mut s0, "news").await;
    join_presence(&mut s0, &id0, "presence-room", "a").await;
    let (mut s1, id1) = established(&c.url(1)).await;
    subscribe_public(&mut s1, "news").await;
    join_presence(&mut s1, &id1, "presence-room", "b").await;
    next_event_named(
        &mut s0,
        "pusher_internal:member_added",
        Duration::from_secs(5),
    )
    .await;

    redis.kill();
    all_ready(&c, &[0, 1], 503, Duration::from_secs(5)).await;
    // A publish is refused with a clear 503, never reported as a success.
    let (status, body) = trigger(&c.addr(0), "news", "lost?", json!({})).await;
    assert_eq!(status, 503, "{body}");
    let err: Value = serde_json::from_str(&body).expect("JSON error body");
    assert!(
        err["error"].as_str().is_some_and(|e| e.contains("retry")),
        "{body}"
    );
    // Local connections stay up and served.
    send_json(&mut s0, json!({"event":"pusher:ping","data":{}})).await;
    assert_eq!(next_json(&mut s0).await["event"], "pusher:pong");
    tokio::time::sleep(Duration::from_secs(2)).await;

    redis.restart_empty();
    all_ready(&c, &[0, 1], 200, Duration::from_secs(10)).await;
    // Both directions, on the same sockets: nobody reconnected.
    first_event_across(&c.addr(1), &mut s0, "1→0").await;
    assert_eq!(next_json(&mut s1).await["data"]["tag"], "1→0");
    first_event_across(&c.addr(0), &mut s1, "0→1").await;
    assert_eq!(next_json(&mut s0).await["data"]["tag"], "0→1");

    // The cluster's state came back from the nodes, silently.
    let (_, info) = api_get(
        &c.addr(1),
        &format!("/apps/{APP_ID}/channels/presence-room"),
        &[("info", "user_count,subscription_count")],
    )
    .await;
    assert_eq!(info["user_count"], 2, "{info}");
    assert_eq!(info["subscription_count"], 2, "{info}");
    let (_, news) = api_get(
        &c.addr(0),
        &format!("/apps/{APP_ID}/channels/news"),
        &[("info", "subscription_count")],
    )
    .await;
    assert_eq!(news["subscription_count"], 2, "{news}");
    let extra = collect_for(&mut s0, Duration::from_millis(500)).await;
    assert!(
        extra.is_empty(),
        "no member events from re-registration: {extra:?}"
    );

    // The logs say it once per outage, not per message or attempt.
    for i in 0..2 {
        let log = c.log(i);
        assert_eq!(
            log.matches("lost the connection to Redis").count(),
            1,
            "{log}"
        );
        assert_eq!(log.matches("reconnected to Redis").count(), 1, "{log}");
    }
}

#[tokio::test]
async fn users_who_left_while_redis_was_unreachable_are_removed_once_it_is_back() {
    let redis = RedisServer::start();
    let c = Cluster::start(&redis.url(), 2, &["--node-timeout", "8"]);
    let (mut watcher, wid) = established(&c.url(0)).await;
    join_presence(&mut watcher, &wid, "presence-room", "watcher").await;
    let (mut leaver, lid) = established(&c.url(1)).await;
    join_presence(&mut leaver, &lid, "presence-room", "leaver").await;
    next_event_named(
        &mut watcher,
        "pusher_internal:member_added",
        Duration::from_secs(5),
    )
    .await;

    // Redis stops answering (kept data; shorter than the node timeout, so nobody is reaped)
    // while the user leaves: node 1 cannot tell the cluster then.
    redis.command(&["CLIENT", "PAUSE", "3500", "ALL"]);
    drop(leaver);
    // Once Redis answers again, node 1 finds what went away meanwhile and announces it.
    let m = next_event_named(
        &mut watcher,
        "pusher_internal:member_removed",
        Duration::from_secs(15),
    )
    .await;
    assert_eq!(m["data"]["user_id"], "leaver");
    all_ready(&c, &[0, 1], 200, Duration::from_secs(10)).await;
    let (_, info) = api_get(
        &c.addr(0),
        &format!("/apps/{APP_ID}/channels/presence-room"),
        &[("info", "user_count")],
    )
    .await;
    assert_eq!(info["user_count"], 1, "{info}");
    let again = collect_for(&mut watcher, Duration::from_secs(1)).await;
    assert!(again.is_empty(), "announced once: {again:?}");
}

#[tokio::test]
async fn redis_unreachable_at_start_is_a_clear_error_and_a_non_zero_exit() {
    let port = duplex_testkit::free_port();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_duplex"))
        .args([
            "serve",
            "--port",
            "0",
            "--redis",
            &format!("redis://:pw@127.0.0.1:{port}/0"),
        ])
        .env_remove("RUST_BACKTRACE")
        .output()
        .expect("run duplex serve");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!(
            "cannot reach Redis at redis://:***@127.0.0.1:{port}/0"
        )),
        "{err}"
    );
    assert!(!err.contains("pw@"), "the password is not printed: {err}");
    assert!(
        err.lines().count() <= 3,
        "a short error, no backtrace: {err}"
    );
}

#[tokio::test]
async fn publishing_resumes_after_a_sentinel_failover() {
    let mut sentinels = SentinelSet::start("duplex-primary");
    let hosts: Vec<String> = sentinels
        .sentinel_ports()
        .iter()
        .map(|p| format!("127.0.0.1:{p}"))
        .collect();
    let url = format!("redis+sentinel://{}/duplex-primary/0", hosts.join(","));
    let c = Cluster::start(&url, 2, &["--node-timeout", "5"]);
    let (mut s0, _) = established(&c.url(0)).await;
    subscribe_public(&mut s0, "news").await;
    let (mut s1, _) = established(&c.url(1)).await;
    subscribe_public(&mut s1, "news").await;
    first_event_across(&c.addr(1), &mut s0, "before").await;
    next_json(&mut s1).await;

    let old = sentinels.primary_port();
    sentinels.kill_primary();
    let new = sentinels.wait_for_failover(Duration::from_secs(20));
    assert_ne!(new, old);
    all_ready(&c, &[0, 1], 200, Duration::from_secs(20)).await;
    first_event_across(&c.addr(1), &mut s0, "after failover 1→0").await;
    next_json(&mut s1).await;
    first_event_across(&c.addr(0), &mut s1, "after failover 0→1").await;
    let (_, news) = api_get(
        &c.addr(0),
        &format!("/apps/{APP_ID}/channels/news"),
        &[("info", "subscription_count")],
    )
    .await;
    assert_eq!(news["subscription_count"], 2, "{news}");
}

#[tokio::test]
async fn rediss_with_a_private_ca_and_a_password() {
    use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
    let dir = duplex_testkit::TempDir::new("rediss");
    let mut ca = CertificateParams::new(Vec::<String>::new()).expect("params");
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = CertifiedIssuer::self_signed(ca, KeyPair::generate().expect("key")).expect("ca");
    let key = KeyPair::generate().expect("key");
    let leaf = CertificateParams::new(vec!["localhost".to_string()])
        .expect("params")
        .signed_by(&key, &ca)
        .expect("leaf");
    let (cert, keyf, caf) = (
        dir.path().join("redis.pem"),
        dir.path().join("redis.key"),
        dir.path().join("ca.pem"),
    );
    std::fs::write(&cert, leaf.pem()).expect("write");
    std::fs::write(&keyf, key.serialize_pem()).expect("write");
    std::fs::write(&caf, ca.pem()).expect("write");
    let tls_port = duplex_testkit::free_port().to_string();
    let _redis = RedisServer::start_with_password_and_args(
        "tls-pw",
        &[
            "--tls-port",
            &tls_port,
            "--tls-cert-file",
            cert.to_str().expect("utf-8"),
            "--tls-key-file",
            keyf.to_str().expect("utf-8"),
            "--tls-ca-cert-file",
            caf.to_str().expect("utf-8"),
            "--tls-auth-clients",
            "no",
        ],
    );
    let url = format!("rediss://:tls-pw@localhost:{tls_port}/0");
    let c = Cluster::start(&url, 2, &["--redis-ca", caf.to_str().expect("utf-8")]);
    let (mut s0, _) = established(&c.url(0)).await;
    subscribe_public(&mut s0, "news").await;
    first_event_across(&c.addr(1), &mut s0, "over TLS").await;

    // Without the CA the certificate is not trusted: a clear error at start.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_duplex"))
        .args(["serve", "--port", "0", "--redis", &url])
        .env_remove("RUST_BACKTRACE")
        .output()
        .expect("run duplex serve");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("cannot reach Redis at rediss://:***@localhost"),
        "{err}"
    );
}
