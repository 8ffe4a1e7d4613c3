//! `duplex bench` against `duplex echo`, through the built binary: the JSON report is one
//! object whose figures are consistent. These tests assert behaviour, never speed.

use serde_json::Value;
use std::io::Read;
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_duplex");

mod serve_support;
use serve_support::Server as HubServer;

/// A `duplex serve` on a free loopback port with its default app.
fn hub_server() -> HubServer {
    HubServer::start(&["--no-demo"])
}

/// A `duplex echo` process, killed on drop.
struct EchoServer {
    child: Child,
    port: u16,
}

impl Drop for EchoServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl EchoServer {
    fn url(&self) -> String {
        format!("ws://127.0.0.1:{}/", self.port)
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

fn echo_server(deflate: bool) -> EchoServer {
    // The port may be taken between choosing and binding it: then try another.
    for _ in 0..5 {
        let port = free_port();
        let mut cmd = Command::new(BIN);
        cmd.args(["echo", "--listen", &format!("127.0.0.1:{port}")]);
        if deflate {
            cmd.arg("--deflate");
        }
        let child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start duplex echo");
        let mut server = EchoServer { child, port };
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return server;
            }
            if let Ok(Some(_)) = server.child.try_wait() {
                break;
            }
            sleep(Duration::from_millis(20));
        }
    }
    panic!("duplex echo did not start listening");
}

/// Runs `duplex bench ARGS --json --quiet`; returns the exit status, the parsed stdout and
/// stderr.
fn bench(args: &[&str]) -> (ExitStatus, Value, String) {
    let mut child = Command::new(BIN)
        .arg("bench")
        .args(args)
        .args(["--json", "--quiet"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start duplex bench");
    let mut stdout = child.stdout.take().expect("stdout");
    let mut stderr = child.stderr.take().expect("stderr");
    let out_reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stdout.read_to_string(&mut s);
        s
    });
    let err_reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s);
        s
    });
    // The bench bounds its own run; this only keeps a broken one from hanging the suite.
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for duplex bench") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("duplex bench did not finish within 60 s");
        }
        sleep(Duration::from_millis(50));
    };
    let out = out_reader.join().expect("stdout reader");
    let err = err_reader.join().expect("stderr reader");
    let json = serde_json::from_str(&out)
        .unwrap_or_else(|e| panic!("stdout is not one JSON object ({e}):\n{out}\nstderr:\n{err}"));
    (status, json, err)
}

fn num(v: &Value, path: &[&str]) -> f64 {
    let mut at = v;
    for key in path {
        at = &at[*key];
    }
    at.as_f64()
        .unwrap_or_else(|| panic!("{} is not a number in {v}", path.join(".")))
}

fn assert_ordered(latency: &Value) {
    let keys = ["min", "p50", "p90", "p99", "p99_9", "max"];
    let values: Vec<f64> = keys.iter().map(|k| num(latency, &[k])).collect();
    assert!(values[0] > 0.0, "latencies are positive: {latency}");
    assert!(
        values.windows(2).all(|w| w[0] <= w[1]),
        "percentiles ordered: {latency}"
    );
    assert!(num(latency, &["mean"]) <= values[5], "{latency}");
}

#[test]
fn closed_loop_reports_echoes_and_cpu() {
    let server = echo_server(false);
    let pid = server.child.id().to_string();
    let url = server.url();
    let (status, report, stderr) = bench(&[
        &url,
        "--connections",
        "4",
        "--duration",
        "2s",
        "--warmup",
        "500ms",
        "--source",
        "127.0.0.1,127.0.0.2",
        "--server-pid",
        &pid,
    ]);
    assert!(status.success(), "{status}: {stderr}");
    assert_eq!(report["tool"], "duplex bench");
    assert_eq!(report["mode"], "closed-loop");
    assert_eq!(report["options"]["connections"], 4);
    assert_eq!(report["options"]["payload_size"], 64);
    assert_eq!(report["options"]["url"], url.as_str());
    assert_eq!(report["connections"]["established"], 4, "{report}");
    assert_eq!(report["connections"]["closed_cleanly"], 4, "{report}");
    assert_eq!(num(&report, &["errors", "total"]), 0.0, "{report}");
    let echoes = num(&report, &["messages", "echoes"]);
    assert!(echoes > 0.0, "{report}");
    assert!(num(&report, &["rates", "echoes_per_s"]) > 0.0);
    assert_eq!(num(&report, &["window_s"]), 2.0);
    // Every echo of the window has its round trip in the histogram.
    assert_eq!(num(&report, &["latency_us", "count"]), echoes, "{report}");
    assert_ordered(&report["latency_us"]);
    assert_eq!(num(&report, &["connect_ms", "count"]), 4.0);
    assert!(report["messages"]["scheduled"].is_null());
    assert!(report["send_lag_us"].is_null());
    assert!(num(&report, &["client_cpu", "wall_s"]) > 0.0);
    assert!(num(&report, &["client_cpu", "process_total_s"]) >= 0.0);
    assert_eq!(
        num(&report, &["server_cpu", "pid"]),
        f64::from(server.child.id())
    );
    assert!(num(&report, &["server_cpu", "total_s"]) >= 0.0);
}

#[test]
fn open_loop_with_deflate_measures_every_scheduled_message() {
    let server = echo_server(true);
    let (status, report, stderr) = bench(&[
        &server.url(),
        "--mode",
        "open",
        "--rate",
        "100",
        "--connections",
        "4",
        "--deflate",
        "--text",
        "--payload-size",
        "512",
        "--duration",
        "2s",
        "--warmup",
        "500ms",
    ]);
    assert!(status.success(), "{status}: {stderr}");
    assert_eq!(report["mode"], "open-loop");
    assert_eq!(report["options"]["deflate"], true);
    assert_eq!(report["options"]["message_type"], "text");
    assert_eq!(report["connections"]["established"], 4, "{report}");
    assert_eq!(report["connections"]["deflate_negotiated"], 4, "{report}");
    assert_eq!(report["connections"]["closed_cleanly"], 4, "{report}");
    assert_eq!(num(&report, &["errors", "total"]), 0.0, "{report}");
    assert_eq!(num(&report, &["rates", "target_per_s"]), 400.0);
    let scheduled = num(&report, &["messages", "scheduled"]);
    assert!(scheduled > 0.0, "{report}");
    assert!(num(&report, &["messages", "echoes"]) > 0.0, "{report}");
    // No error, so every message due in the window was echoed and measured.
    assert_eq!(
        num(&report, &["latency_us", "count"]),
        scheduled,
        "{report}"
    );
    assert_ordered(&report["latency_us"]);
    assert_ordered(&report["service_latency_us"]);
    assert_eq!(num(&report, &["send_lag_us", "count"]), scheduled);
    // Measured from the intended send time, latency is never below the actual round trip.
    assert!(num(&report, &["latency_us", "max"]) >= num(&report, &["service_latency_us", "max"]));
}

#[test]
fn unreachable_server_is_reported_not_a_panic() {
    let port = free_port(); // Nothing listens there.
    let url = format!("ws://127.0.0.1:{port}/");
    let (status, report, stderr) = bench(&[
        &url,
        "--connections",
        "3",
        "--duration",
        "1s",
        "--connect-timeout",
        "2s",
    ]);
    assert!(!status.success());
    assert!(stderr.contains("no connection"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert_eq!(report["connections"]["established"], 0);
    assert_eq!(num(&report, &["errors", "connect"]), 3.0, "{report}");
    assert_eq!(num(&report, &["errors", "total"]), 3.0, "{report}");
    assert_eq!(num(&report, &["messages", "echoes"]), 0.0);
}

#[test]
fn inconsistent_options_are_refused() {
    let out = Command::new(BIN)
        .args(["bench", "ws://127.0.0.1:9/", "--mode", "open", "--json"])
        .output()
        .expect("run duplex bench");
    assert!(!out.status.success());
    assert!(out.stdout.is_empty());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--rate"));
}

#[test]
fn fanout_delivers_every_event_to_every_subscriber() {
    let server = hub_server();
    let pid = server.child.id().to_string();
    let url = format!("ws://{}", server.addr);
    let (status, report, stderr) = bench(&[
        &url,
        "--mode",
        "fanout",
        "--rate",
        "20",
        "--connections",
        "20",
        "--payload-size",
        "100",
        "--channel",
        "fan-test",
        "--duration",
        "2s",
        "--warmup",
        "500ms",
        "--server-pid",
        &pid,
    ]);
    assert!(status.success(), "{status}: {stderr}");
    assert_eq!(report["mode"], "fan-out");
    assert_eq!(report["connections"]["established"], 20, "{report}");
    assert_eq!(report["connections"]["closed_cleanly"], 20, "{report}");
    assert_eq!(num(&report, &["errors", "total"]), 0.0, "{report}");
    let f = &report["fanout"];
    assert_eq!(f["channel"], "fan-test");
    assert_eq!(f["subscribers"], 20);
    assert_eq!(f["data_bytes"], 100);
    assert_eq!(
        f["rest_url"],
        format!("http://{}/apps/app-id/events", server.addr).as_str()
    );
    assert!(f["ws_path"]
        .as_str()
        .is_some_and(|p| p.starts_with("/app/app-key?protocol=7&")));
    // 20 events/s over a 2 s window: 40 due (the pacer starts at the warm-up's start, so
    // the window holds exactly 40 send times).
    let published = num(f, &["events_published"]);
    assert_eq!(num(f, &["events_scheduled"]), 40.0, "{report}");
    assert_eq!(published, 40.0, "{report}");
    assert_eq!(num(f, &["events_failed"]), 0.0, "{report}");
    let expected = num(f, &["deliveries_expected"]);
    assert_eq!(expected, published * 20.0);
    assert_eq!(num(f, &["deliveries_received"]), expected, "{report}");
    for k in ["missing", "duplicates", "out_of_order"] {
        assert_eq!(num(f, &[k]), 0.0, "{k}: {report}");
    }
    assert_eq!(num(&report, &["messages", "echoes"]), expected);
    assert_eq!(num(&report, &["rates", "target_per_s"]), 400.0);
    // Every delivery of the window has its latency, every event its send lag.
    assert_eq!(num(&report, &["latency_us", "count"]), expected, "{report}");
    assert_eq!(num(&report, &["service_latency_us", "count"]), expected);
    assert_eq!(num(&report, &["send_lag_us", "count"]), published);
    assert_ordered(&report["latency_us"]);
    assert_ordered(&report["service_latency_us"]);
    assert!(num(&report, &["latency_us", "max"]) >= num(&report, &["service_latency_us", "max"]));
    assert!(num(f, &["publish_ms", "count"]) >= published);
    assert!(num(f, &["deliveries_per_s"]) > 0.0);
    assert_eq!(
        num(&report, &["server_cpu", "pid"]),
        f64::from(server.child.id())
    );
}

#[test]
fn fanout_with_a_wrong_secret_reports_failed_publishes() {
    let server = hub_server();
    let url = format!("ws://{}", server.addr);
    let (status, report, stderr) = bench(&[
        &url,
        "--mode",
        "fanout",
        "--rate",
        "10",
        "--connections",
        "3",
        "--app-secret",
        "not-the-secret",
        "--duration",
        "1s",
        "--warmup",
        "0s",
    ]);
    // Subscribing needs no secret: the connections work, the publishing does not.
    assert!(status.success(), "{status}: {stderr}");
    assert_eq!(report["connections"]["established"], 3, "{report}");
    let f = &report["fanout"];
    assert_eq!(num(f, &["events_scheduled"]), 10.0, "{report}");
    assert_eq!(num(f, &["events_published"]), 0.0, "{report}");
    assert_eq!(num(f, &["events_failed"]), 10.0, "{report}");
    assert_eq!(num(f, &["deliveries_received"]), 0.0, "{report}");
    assert_eq!(num(&report, &["errors", "io"]), 10.0, "{report}");
    let samples = report["errors"]["samples"].to_string();
    assert!(samples.contains("HTTP 401"), "{samples}");
}

#[test]
fn fanout_refuses_private_channels_and_needs_a_rate() {
    for (args, want) in [
        (vec!["--mode", "fanout"], "--rate"),
        (
            vec!["--mode", "fanout", "--rate", "1", "--channel", "private-x"],
            "public channel",
        ),
    ] {
        let out = Command::new(BIN)
            .args(["bench", "ws://127.0.0.1:9/", "--json"])
            .args(&args)
            .output()
            .expect("run duplex bench");
        assert!(!out.status.success());
        assert!(out.stdout.is_empty());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(want), "{args:?}: {err}");
    }
}

#[test]
fn json_payload_is_sent_as_text_and_echoed_through_deflate() {
    let server = echo_server(true);
    let (status, report, stderr) = bench(&[
        &server.url(),
        "--connections",
        "3",
        "--payload",
        "json",
        "--deflate",
        "--payload-size",
        "1024",
        "--duration",
        "1s",
        "--warmup",
        "200ms",
    ]);
    assert!(status.success(), "{status}: {stderr}");
    assert_eq!(report["options"]["payload"], "json", "{report}");
    // JSON is text, without --text.
    assert_eq!(report["options"]["message_type"], "text", "{report}");
    assert_eq!(report["options"]["payload_size"], 1024);
    assert_eq!(report["connections"]["deflate_negotiated"], 3, "{report}");
    // Every echo is compared with what was sent: no mismatch, no other error.
    assert_eq!(num(&report, &["errors", "total"]), 0.0, "{report}");
    assert!(num(&report, &["messages", "echoes"]) > 0.0, "{report}");
}

/// A server, in this process, that sends a ping before every echo and corrupts every other
/// echo (first byte flipped). Returns its URL and the count of pongs with the ping's payload.
fn pinging_corrupting_server() -> (String, std::sync::Arc<std::sync::atomic::AtomicU64>) {
    use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
    use std::sync::Arc;
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind a loopback port");
    listener
        .set_nonblocking(true)
        .expect("nonblocking listener");
    let url = format!("ws://{}/", listener.local_addr().expect("local address"));
    let pongs = Arc::new(AtomicU64::new(0));
    let counted = Arc::clone(&pongs);
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("test runtime");
        rt.block_on(async move {
            let listener = tokio::net::TcpListener::from_std(listener).expect("tokio listener");
            // One connection is all the test opens; the test process ends the thread.
            let (stream, _) = listener.accept().await.expect("accept");
            let config = duplex::server::ServerConfig::default();
            let mut ws = duplex::server::accept(stream, &config)
                .await
                .expect("handshake");
            let mut n = 0u64;
            while let Some(Ok(event)) = ws.next_event().await {
                match event {
                    duplex::Event::Message(m) => {
                        n += 1;
                        ws.send_ping(&b"are you there"[..]).await.expect("ping");
                        let mut bytes = m.as_bytes().to_vec();
                        if n.is_multiple_of(2) {
                            bytes[0] ^= 0xff;
                        }
                        ws.send(duplex::Message::from(bytes)).await.expect("echo");
                    }
                    duplex::Event::Pong(p) if &p[..] == b"are you there" => {
                        counted.fetch_add(1, Relaxed);
                    }
                    _ => {}
                }
            }
        });
    });
    (url, pongs)
}

#[test]
fn closed_loop_answers_pings_and_counts_wrong_echoes() {
    use std::sync::atomic::Ordering::Relaxed;
    let (url, pongs) = pinging_corrupting_server();
    let (status, report, stderr) = bench(&[
        &url,
        "--connections",
        "1",
        "--duration",
        "1s",
        "--warmup",
        "200ms",
    ]);
    assert!(status.success(), "{status}: {stderr}");
    let echoes = num(&report, &["messages", "echoes"]);
    let mismatch = num(&report, &["errors", "mismatch"]);
    assert!(echoes >= 10.0, "{report}");
    // Every other echo is wrong: each is counted (warm-up ones too: errors are counted for the
    // whole run, echoes in the window), and the loop goes on.
    assert!(
        mismatch >= echoes / 2.0 - 2.0 && mismatch <= 0.75 * echoes,
        "{mismatch} mismatches for {echoes} echoes: {report}"
    );
    assert_eq!(num(&report, &["errors", "io"]), 0.0, "{report}");
    assert_eq!(report["connections"]["closed_cleanly"], 1, "{report}");
    // Every ping was answered with its payload (the last pong may still be in flight).
    assert!(pongs.load(Relaxed) as f64 >= echoes, "{report}");
}

/// `calls` of `cmdstat_publish` in `INFO commandstats` (0 before the first PUBLISH).
fn redis_publish_calls(redis: &duplex_testkit::RedisServer) -> u64 {
    let info = redis.command(&["INFO", "commandstats"]);
    info.lines()
        .find_map(|l| l.strip_prefix("cmdstat_publish:calls="))
        .and_then(|rest| rest.split(',').next())
        .map_or(0, |n| n.parse().expect("a number of calls"))
}

#[test]
fn fanout_spreads_subscribers_over_cluster_nodes() {
    let redis = duplex_testkit::RedisServer::start();
    let redis_url = redis.url();
    let nodes = [
        HubServer::start(&["--no-demo", "--redis", &redis_url]),
        HubServer::start(&["--no-demo", "--redis", &redis_url]),
    ];
    let urls: Vec<String> = nodes.iter().map(|n| format!("ws://{}", n.addr)).collect();
    let pids: Vec<String> = nodes.iter().map(|n| n.child.id().to_string()).collect();
    let redis_pid = redis.pid().to_string();
    let publishes_before = redis_publish_calls(&redis);
    let (status, report, stderr) = bench(&[
        &urls[0],
        "--url",
        &urls[1],
        "--publish-round-robin",
        "--mode",
        "fanout",
        "--rate",
        "20",
        "--connections",
        "21",
        "--payload-size",
        "100",
        "--channel",
        "fan-cluster",
        "--duration",
        "2s",
        "--warmup",
        "500ms",
        "--server-pid",
        &pids[0],
        "--server-pid",
        &pids[1],
        "--redis-pid",
        &redis_pid,
    ]);
    assert!(status.success(), "{status}: {stderr}");
    assert_eq!(report["connections"]["established"], 21, "{report}");
    assert_eq!(num(&report, &["errors", "total"]), 0.0, "{report}");
    let f = &report["fanout"];
    assert_eq!(f["publish_round_robin"], true);
    // Round robin: subscribers 0, 2, .. 20 on the first node, 1, 3, .. 19 on the second.
    let hubs = f["hubs"].as_array().expect("hubs");
    assert_eq!(hubs.len(), 2, "{report}");
    for (hub, (url, want)) in hubs.iter().zip(urls.iter().zip([11, 10])) {
        assert_eq!(hub["url"], url.as_str());
        assert_eq!(hub["subscribers"], want, "{report}");
    }
    assert_eq!(
        hubs[1]["rest_url"],
        format!("http://{}/apps/app-id/events", nodes[1].addr).as_str()
    );
    // Every event, published on either node, reached every subscriber of both, in order.
    let published = num(f, &["events_published"]);
    assert_eq!(published, 40.0, "{report}");
    assert_eq!(
        num(f, &["deliveries_received"]),
        published * 21.0,
        "{report}"
    );
    for k in ["missing", "duplicates", "out_of_order"] {
        assert_eq!(num(f, &[k]), 0.0, "{k}: {report}");
    }
    // CPU summed over both nodes, each reported; Redis's per event.
    let cpu = &report["server_cpu"];
    let listed: Vec<u64> = cpu["pids"]
        .as_array()
        .expect("pids")
        .iter()
        .map(|p| p.as_u64().unwrap())
        .collect();
    let want: Vec<u64> = nodes.iter().map(|n| u64::from(n.child.id())).collect();
    assert_eq!(listed, want);
    let per_pid = cpu["per_pid"].as_array().expect("per_pid");
    assert_eq!(per_pid.len(), 2, "{report}");
    let sum: f64 = per_pid.iter().map(|p| num(p, &["total_s"])).sum();
    assert!((sum - num(cpu, &["total_s"])).abs() < 0.01, "{report}");
    assert_eq!(num(&report, &["redis_cpu", "pid"]), f64::from(redis.pid()));
    assert!(report["redis_cpu"]["us_per_event"].is_number(), "{report}");
    // Each event crossed Redis as one PUBLISH, whichever node took it and however many
    // subscribers it had (warm-up events included).
    let accepted = num(f, &["publish_ms", "count"]) as u64;
    assert_eq!(
        redis_publish_calls(&redis) - publishes_before,
        accepted,
        "{report}"
    );
}
