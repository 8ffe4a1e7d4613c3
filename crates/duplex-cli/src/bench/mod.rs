//! `duplex bench`: a load generator for WebSocket echo servers, and a fan-out benchmark for
//! Pusher-protocol servers (`duplex serve`).
//!
//! A run connects every connection first (bounded attempts, bounded concurrency), then
//! starts the load on all of them at once: a warm-up, excluded from every figure, then the
//! measured window. At its end connections stop sending, wait (bounded) for outstanding
//! echoes and close with a closing handshake. Errors are counted by kind and reported.
//!
//! Each way of applying load is its own module, with the same signature
//! (`run(connection, &ConnCtx) -> ConnOutcome`): [`raw_loop`] (closed loop on the raw TCP
//! stream after the handshake, so that the client costs less per echo than the server),
//! [`closed_loop`] (closed loop through `duplex::WebSocket`, for `--deflate`, whose
//! compression needs the codec), [`open_loop`] and [`fanout`] (whose connections only
//! receive, from a publisher task of their own).

mod closed_loop;
mod connect;
mod context;
mod cpu;
mod fanout;
mod idle;
mod open_loop;
mod options;
mod pacer;
mod payload;
mod progress;
mod raw_loop;
mod report;
mod stats;

pub use options::BenchArgs;

use anyhow::{bail, Context as _};
use context::{ConnCtx, RunShared};
use duplex::client::{ClientConfig, Target};
use duplex::Message;
use options::Mode;
use progress::Progress;
use report::{per_second, round3, Latency, Report};
use stats::{ConnOutcome, ErrorKind, Recorder, Totals};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{mpsc, watch, Semaphore};
use tokio::task::JoinSet;
use tokio::time::Instant;

/// Progress line refresh period.
const TICK: Duration = Duration::from_millis(250);
/// Slack on top of the drain and close timeouts before unfinished connections are aborted.
const ABORT_SLACK: Duration = Duration::from_secs(2);

pub fn run(args: BenchArgs) -> anyhow::Result<()> {
    if args.idle {
        return idle::run(args);
    }
    args.validate().map_err(anyhow::Error::msg)?;
    let runtime = crate::runtime::build(args.threads)?;
    let report = runtime.block_on(bench(&args))?;
    runtime.shutdown_timeout(Duration::from_millis(100));
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        print!("{}", report.human());
    }
    if report.connections.established == 0 {
        bail!("no connection could be established");
    }
    Ok(())
}

async fn bench(args: &BenchArgs) -> anyhow::Result<Report> {
    let sources = args.source_addrs();
    // The first hub is the plan's; more only in fan-out mode (checked by the options).
    let mut hubs = Vec::new();
    for url in args.hub_urls() {
        if url.get(..4).is_some_and(|s| s.eq_ignore_ascii_case("wss:")) {
            bail!("duplex bench supports ws:// URLs only");
        }
        let mut target = Target::parse(&url)?;
        if args.mode == Mode::Fanout && target.path_and_query == "/" {
            target.path_and_query = fanout::subscriber_path(&args.fanout.app_key);
        }
        let addr = connect::resolve(&target, &sources)
            .await
            .map_err(anyhow::Error::msg)?;
        hubs.push((target, addr));
    }
    let Some((target, addr)) = hubs.first().cloned() else {
        bail!("no URL");
    };
    for pid in args.server_pids.iter().chain(&args.fanout.redis_pid) {
        cpu::of_pid(*pid).with_context(|| format!("cannot read the CPU time of pid {pid}"))?;
    }
    if let Some(limit) = connect::raise_nofile_limit() {
        // Open loop: a timer descriptor per connection too.
        let per_connection = if args.mode == Mode::Open { 2 } else { 1 };
        if (args.connections as u64) * per_connection + 32 > limit {
            tracing::warn!(
                "open-files limit {limit} is too low for {} connections; some will fail",
                args.connections
            );
        }
    }

    let mut config = ClientConfig::default();
    config.deflate.enabled = args.deflate;
    config.handshake_timeout = args.connect_timeout;
    config.protocol.close_timeout = args.drain_timeout;
    config.protocol.max_message_size = config.protocol.max_message_size.max(args.payload_size);
    config.protocol.max_frame_size = config.protocol.max_frame_size.max(args.payload_size);
    let shards = match args.threads {
        1 => 1,
        0 => 2 * std::thread::available_parallelism().map_or(1, |n| n.get()),
        n => 2 * n,
    };
    let fanout = (args.mode == Mode::Fanout).then(|| {
        let f = &args.fanout;
        let publish = fanout::Publish {
            targets: hubs
                .iter()
                .map(|(t, addr)| fanout::PublishTarget {
                    addr: *addr,
                    host_header: t.host_header.clone(),
                })
                .collect(),
            round_robin: f.publish_round_robin,
            app_id: f.app_id.clone(),
            app_key: f.app_key.clone(),
            app_secret: f.app_secret.clone(),
        };
        let other_hubs = hubs[1..]
            .iter()
            .map(|(t, addr)| connect::ConnectPlan {
                target: t.clone(),
                addr: *addr,
                config: config.clone(),
                sources: sources.clone(),
                timeout: args.connect_timeout,
            })
            .collect();
        fanout::Shared::new(
            publish,
            f.channel.clone(),
            target.path_and_query.clone(),
            args.hub_urls(),
            other_hubs,
            args.payload_size,
            args.rate.unwrap_or(1.0),
            args.fanout_events(),
        )
    });
    let shared = Arc::new(RunShared {
        plan: connect::ConnectPlan {
            target,
            addr,
            config,
            sources,
            timeout: args.connect_timeout,
        },
        mode: args.mode,
        message: make_message(args.payload_size, args.sends_text(), args.payload),
        rate: args.rate.unwrap_or(0.0),
        connections: args.connections,
        warmup: args.warmup,
        duration: args.duration,
        drain_timeout: args.drain_timeout,
        stop: Default::default(),
        live: Default::default(),
        recorder: Recorder::new(shards),
        errors: Default::default(),
        connect_times: Mutex::new(stats::new_histogram()),
        connect_slots: Semaphore::new(args.connect_concurrency),
        fanout,
    });

    let (start_tx, start_rx) = watch::channel(None);
    let (connected_tx, mut connected_rx) = mpsc::unbounded_channel();
    let mut tasks = JoinSet::new();
    for index in 0..args.connections {
        tasks.spawn(connection_task(
            index,
            Arc::clone(&shared),
            start_rx.clone(),
            connected_tx.clone(),
        ));
    }
    drop(connected_tx);
    if shared.fanout.is_some() {
        tasks.spawn(fanout::publisher(Arc::clone(&shared), start_rx.clone()));
    }

    let mut progress = Progress::new(!args.quiet);
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);
    let mut interrupted = false;

    // Connect every connection.
    let (mut attempted, mut refused) = (0, 0);
    while attempted < args.connections {
        tokio::select! {
            r = connected_rx.recv() => match r {
                Some(ok) => {
                    attempted += 1;
                    refused += usize::from(!ok);
                }
                None => break,
            },
            _ = tick.tick() => progress.connecting(attempted, args.connections, refused),
            _ = &mut ctrl_c, if !interrupted => {
                interrupted = true;
                shared.stop.store(true, Relaxed);
                break;
            }
        }
    }

    // Load: warm-up, then the measured window.
    let start = Instant::now();
    let window_start = start + args.warmup;
    let end = window_start + args.duration;
    let _ = start_tx.send(Some(start));
    let warm = tokio::time::sleep_until(window_start);
    let finish = tokio::time::sleep_until(end);
    tokio::pin!(warm, finish);
    let mut window_begun = None;
    // Without a connection there is nothing to measure.
    let idle = shared.live.connected.load(Relaxed) == 0;
    while !interrupted && !idle {
        tokio::select! {
            biased;
            _ = &mut warm, if window_begun.is_none() => {
                window_begun = Some(CpuSample::take(args));
            }
            _ = &mut finish => break,
            _ = &mut ctrl_c => interrupted = true,
            _ = tick.tick() => {
                let now = Instant::now();
                let (phase, elapsed, total) = if now < window_start {
                    ("warm-up", now - start, args.warmup)
                } else {
                    ("measuring", now - window_start, args.duration)
                };
                progress.running(
                    phase,
                    elapsed,
                    total,
                    shared.live.echoes.load(Relaxed),
                    shared.live.errors.load(Relaxed),
                    shared.live.active.load(Relaxed),
                );
            }
        }
    }
    let window_ended = CpuSample::take(args);
    let window = match (&window_begun, interrupted) {
        (None, _) => Duration::ZERO,
        (Some(_), false) => args.duration,
        (Some(b), true) => window_ended.at.saturating_duration_since(b.at),
    };
    if interrupted {
        // Connections stop sending now, and stop counting.
        shared.stop.store(true, Relaxed);
    }

    // Drain outstanding echoes and close; abort what is still running after the timeouts,
    // or at a second Ctrl-C.
    progress.message("waiting for outstanding echoes and closing");
    let mut totals = Totals::default();
    let give_up = Instant::now().max(end) + 2 * args.drain_timeout + ABORT_SLACK;
    let finished = {
        let collect = async {
            while let Some(joined) = tasks.join_next().await {
                match joined {
                    Ok(outcome) => totals.add(&outcome),
                    Err(e) => {
                        let mut lost = ConnOutcome::default();
                        lost.error(
                            &shared.live,
                            &shared.errors,
                            ErrorKind::Io,
                            1,
                            &format!("connection task failed: {e}"),
                        );
                        totals.add(&lost);
                    }
                }
            }
        };
        tokio::select! {
            r = tokio::time::timeout_at(give_up, collect) => r.is_ok(),
            _ = tokio::signal::ctrl_c() => false,
        }
    };
    if !finished {
        let mut lost = ConnOutcome::default();
        lost.error(
            &shared.live,
            &shared.errors,
            ErrorKind::Io,
            tasks.len() as u64,
            "connection still running after the drain and close timeouts: aborted",
        );
        totals.add(&lost);
        tasks.abort_all();
        while tasks.join_next().await.is_some() {}
    }
    progress.finish();

    let process_cpu = cpu::own().unwrap_or_default();
    Ok(build_report(
        args,
        &shared,
        &totals,
        window,
        interrupted,
        window_begun.as_ref(),
        &window_ended,
        process_cpu,
    ))
}

/// One connection: connect, wait for the common start, run the mode, close.
async fn connection_task(
    index: usize,
    shared: Arc<RunShared>,
    mut start_rx: watch::Receiver<Option<Instant>>,
    connected: mpsc::UnboundedSender<bool>,
) -> ConnOutcome {
    let mut out = ConnOutcome::default();
    let attempt = async {
        let _slot = shared.connect_slots.acquire().await;
        if shared.stop.load(Relaxed) {
            return None;
        }
        let began = Instant::now();
        let source = shared.plan.source(index);
        let result = match &shared.fanout {
            Some(f) => fanout::connect_and_subscribe(&shared.plan, index, source, f)
                .await
                .map(|(ws, deflate)| (Established::Ws(ws), deflate)),
            None if uses_raw_engine(&shared) => connect::connect_raw(&shared.plan, source)
                .await
                .map(|raw| (Established::Raw(raw), false)),
            None => connect::connect(&shared.plan, source)
                .await
                .map(|(ws, deflate)| (Established::Ws(ws), deflate)),
        };
        if result.is_ok() {
            let ns = u64::try_from(began.elapsed().as_nanos()).unwrap_or(u64::MAX);
            shared
                .connect_times
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .saturating_record(ns.max(1));
        }
        Some(result)
    };
    let ws = match attempt.await {
        None => {
            let _ = connected.send(false);
            return out;
        }
        Some(Err(e)) => {
            out.error(&shared.live, &shared.errors, ErrorKind::Connect, 1, &e);
            let _ = connected.send(false);
            return out;
        }
        Some(Ok((ws, deflate))) => {
            shared.live.connected.fetch_add(1, Relaxed);
            let _ = connected.send(true);
            out.deflate = deflate;
            ws
        }
    };
    drop(connected);
    let start = match start_rx.wait_for(Option::is_some).await {
        Ok(start) => *start,
        Err(_) => None,
    };
    let Some(start) = start else {
        return ConnOutcome {
            connected: true,
            ..out
        };
    };
    let window_start = start + shared.warmup;
    let end = window_start + shared.duration;
    let ctx = ConnCtx {
        index,
        run: &shared,
        start,
        window_start,
        end,
        hard_deadline: end + shared.drain_timeout,
    };
    shared.live.active.fetch_add(1, Relaxed);
    let result = match (shared.mode, ws) {
        (_, Established::Raw(raw)) => raw_loop::run(raw, &ctx).await,
        (Mode::Closed, Established::Ws(ws)) => closed_loop::run(ws, &ctx).await,
        (Mode::Open, Established::Ws(ws)) => open_loop::run(ws, &ctx).await,
        (Mode::Fanout, Established::Ws(ws)) => fanout::run(ws, &ctx).await,
    };
    shared.live.active.fetch_sub(1, Relaxed);
    ConnOutcome {
        connected: true,
        deflate: out.deflate,
        ..result
    }
}

/// A connection ready for load: through the WebSocket layer, or raw for [`raw_loop`].
// One per connection task, moved once: the size difference costs nothing.
#[allow(clippy::large_enum_variant)]
enum Established {
    Ws(duplex::WebSocket<tokio::net::TcpStream>),
    Raw(connect::RawConn),
}

/// Closed loop without permessage-deflate runs on the raw stream ([`raw_loop`]); deflate
/// needs the WebSocket layer's codec ([`closed_loop`]).
fn uses_raw_engine(shared: &RunShared) -> bool {
    shared.mode == Mode::Closed && !shared.plan.config.deflate.enabled
}

/// CPU times of this process (and the servers', and Redis's) at one instant.
struct CpuSample {
    at: Instant,
    client: Option<cpu::CpuTimes>,
    /// One per `--server-pid`, in order.
    servers: Vec<Option<cpu::CpuTimes>>,
    redis: Option<cpu::CpuTimes>,
}

impl CpuSample {
    fn take(args: &BenchArgs) -> CpuSample {
        CpuSample {
            at: Instant::now(),
            client: cpu::own().ok(),
            servers: args
                .server_pids
                .iter()
                .map(|pid| cpu::of_pid(*pid).ok())
                .collect(),
            redis: args.fanout.redis_pid.and_then(|pid| cpu::of_pid(pid).ok()),
        }
    }
}

/// The payload: random bytes, or random alphanumerics for text (deterministic).
fn make_message(size: usize, text: bool, content: options::Payload) -> Message {
    if content == options::Payload::Json {
        return Message::from(payload::json_text(size));
    }
    let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    if text {
        const ALNUM: &[u8] = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
        let s: String = (0..size)
            .map(|_| ALNUM[(next() % ALNUM.len() as u64) as usize] as char)
            .collect();
        Message::from(s)
    } else {
        let bytes: Vec<u8> = (0..size).map(|_| (next() >> 24) as u8).collect();
        Message::from(bytes)
    }
}

#[allow(clippy::too_many_arguments)]
fn build_report(
    args: &BenchArgs,
    shared: &RunShared,
    totals: &Totals,
    window: Duration,
    interrupted: bool,
    window_begun: Option<&CpuSample>,
    window_ended: &CpuSample,
    process_cpu: cpu::CpuTimes,
) -> Report {
    let window_s = window.as_secs_f64();
    let per_echo_us = |cpu: Duration| {
        (totals.echoes > 0).then(|| round3(cpu.as_secs_f64() * 1e6 / totals.echoes as f64))
    };
    let sampled_wall = window_begun
        .map(|b| {
            window_ended
                .at
                .saturating_duration_since(b.at)
                .as_secs_f64()
        })
        .unwrap_or(0.0);
    let client_delta = window_begun
        .and_then(|b| Some(window_ended.client?.since(b.client?)))
        .unwrap_or_default();
    // Every PID's delta, or none if one of them could not be read.
    let per_pid: Option<Vec<(u32, cpu::CpuTimes)>> = args
        .server_pids
        .iter()
        .enumerate()
        .map(|(i, pid)| {
            let before = (*window_begun?.servers.get(i)?)?;
            let after = (*window_ended.servers.get(i)?)?;
            Some((*pid, after.since(before)))
        })
        .collect();
    let server_cpu = per_pid.filter(|p| !p.is_empty()).map(|per_pid| {
        let sum = per_pid
            .iter()
            .fold(cpu::CpuTimes::default(), |a, (_, d)| cpu::CpuTimes {
                user: a.user + d.user,
                system: a.system + d.system,
            });
        let process = |pid: u32, d: cpu::CpuTimes| report::ProcessCpu {
            pid,
            user_s: round3(d.user.as_secs_f64()),
            system_s: round3(d.system.as_secs_f64()),
            total_s: round3(d.total().as_secs_f64()),
            utilization: per_second(d.total().as_secs_f64(), sampled_wall),
            us_per_echo: per_echo_us(d.total()),
        };
        let total = process(per_pid[0].0, sum);
        report::ServerCpu {
            pid: total.pid,
            pids: args.server_pids.clone(),
            user_s: total.user_s,
            system_s: total.system_s,
            total_s: total.total_s,
            utilization: total.utilization,
            us_per_echo: total.us_per_echo,
            per_pid: if per_pid.len() > 1 {
                per_pid.iter().map(|(pid, d)| process(*pid, *d)).collect()
            } else {
                Vec::new()
            },
        }
    });
    if !args.server_pids.is_empty() && server_cpu.is_none() && window_begun.is_some() {
        tracing::warn!("a server's CPU time could not be read at the end of the window");
    }
    let redis_cpu = args.fanout.redis_pid.and_then(|pid| {
        let delta = window_ended.redis?.since(window_begun?.redis?);
        let total = delta.total().as_secs_f64();
        Some(report::RedisCpu {
            pid,
            user_s: round3(delta.user.as_secs_f64()),
            system_s: round3(delta.system.as_secs_f64()),
            total_s: round3(total),
            utilization: per_second(total, sampled_wall),
            us_per_event: (totals.sent > 0).then(|| round3(total * 1e6 / totals.sent as f64)),
            us_per_delivery: per_echo_us(delta.total()),
        })
    });
    let latency = shared.recorder.merged();
    let connect_times = shared
        .connect_times
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clone();
    let e = &totals.errors;
    Report {
        tool: "duplex bench",
        version: env!("CARGO_PKG_VERSION"),
        mode: args.mode.name(),
        options: report::Options {
            url: args.url.clone(),
            connections: args.connections,
            payload_size: args.payload_size,
            message_type: if args.sends_text() || args.mode == Mode::Fanout {
                "text"
            } else {
                "binary"
            },
            payload: match args.payload {
                options::Payload::Random => "random",
                options::Payload::Json => "json",
            },
            deflate: args.deflate,
            duration_s: args.duration.as_secs_f64(),
            warmup_s: args.warmup.as_secs_f64(),
            rate_per_connection: args.rate,
            sources: shared.plan.sources.iter().map(|a| a.to_string()).collect(),
            threads: args.threads,
            connect_timeout_s: args.connect_timeout.as_secs_f64(),
            connect_concurrency: args.connect_concurrency,
            drain_timeout_s: args.drain_timeout.as_secs_f64(),
            server_pid: args.server_pid(),
            server_pids: args.server_pids.clone(),
            redis_pid: args.fanout.redis_pid,
        },
        connections: report::Connections {
            requested: args.connections,
            established: totals.established,
            deflate_negotiated: totals.deflate,
            failed_during_run: totals.failed,
            closed_cleanly: totals.closed_cleanly,
        },
        window_s: round3(window_s),
        stopped_early: interrupted,
        messages: report::Messages {
            payload_bytes: args.payload_size,
            scheduled: (args.mode != Mode::Closed).then_some(totals.scheduled),
            sent: totals.sent,
            echoes: totals.echoes,
        },
        rates: report::Rates {
            target_per_s: args.rate.map(|r| round3(r * totals.established as f64)),
            sent_per_s: per_second(totals.sent as f64, window_s),
            echoes_per_s: per_second(totals.echoes as f64, window_s),
            payload_mib_per_s: per_second(
                totals.echoes as f64 * args.payload_size as f64 / (1 << 20) as f64,
                window_s,
            ),
        },
        latency_us: Latency::from_histogram(&latency.latency, 1e3),
        service_latency_us: (args.mode != Mode::Closed)
            .then(|| Latency::from_histogram(&latency.service, 1e3)),
        send_lag_us: (args.mode != Mode::Closed)
            .then(|| Latency::from_histogram(&latency.send_lag, 1e3)),
        connect_ms: Latency::from_histogram(&connect_times, 1e6),
        errors: report::Errors {
            total: e.total(),
            connect: e.connect,
            io: e.io,
            mismatch: e.mismatch,
            unanswered: e.unanswered,
            close: e.close,
            samples: shared.errors.samples(),
        },
        client_cpu: report::ClientCpu {
            user_s: round3(client_delta.user.as_secs_f64()),
            system_s: round3(client_delta.system.as_secs_f64()),
            total_s: round3(client_delta.total().as_secs_f64()),
            wall_s: round3(sampled_wall),
            utilization: per_second(client_delta.total().as_secs_f64(), sampled_wall),
            us_per_echo: per_echo_us(client_delta.total()),
            process_total_s: round3(process_cpu.total().as_secs_f64()),
        },
        server_cpu,
        redis_cpu,
        fanout: shared
            .fanout
            .as_ref()
            .map(|f| fanout::report(f, totals, args.rate.unwrap_or(0.0), window_s)),
    }
}
