//! Starts a primary, a replica and three real redis-sentinels, kills the primary and checks the
//! sentinels fail over to the replica.

use std::time::{Duration, Instant};

use duplex_testkit::SentinelSet;

#[test]
fn failover_to_the_replica_after_the_primary_is_killed() {
    let started = Instant::now();
    let mut set = SentinelSet::start("duplexmaster");
    assert_eq!(set.master_name(), "duplexmaster");
    assert_eq!(set.sentinel_ports().len(), 3);
    assert_eq!(set.sentinel_urls().len(), 3);
    assert!(set.sentinel_urls()[0].starts_with("redis://127.0.0.1:"));
    assert_eq!(set.current_master_port(), Some(set.primary_port()));
    assert_eq!(set.primary().command(&["SET", "k", "v"]), "+OK\r\n");
    eprintln!("sentinel set ready after {:?}", started.elapsed());

    let killed = Instant::now();
    set.kill_primary();
    let new_port = set.wait_for_failover(Duration::from_secs(15));
    eprintln!("failover reported after {:?}", killed.elapsed());
    assert_eq!(new_port, set.replica_port());
    let role = set.replica().command(&["ROLE"]);
    assert!(role.contains("master"), "promoted replica's ROLE: {role:?}");
    assert_eq!(set.replica().command(&["GET", "k"]), "$1\r\nv\r\n");
}
