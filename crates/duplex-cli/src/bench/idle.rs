//! `duplex bench --idle`: open many plain connections, send nothing, hold them.
//!
//! For memory measurements (`bench/idle_rss.py`): once every connection attempt has finished
//! it prints one JSON line, `{"event":"established","connections":N,"failed":F}`, on stdout,
//! then holds the connections (answering pings) until `--duration` elapses, a SIGTERM or
//! SIGINT arrives, or stdin reaches end of file; then it closes them (closing handshake,
//! bounded by `--drain-timeout`) and exits 0 whatever failed: the caller decides what is enough.

use super::connect::{self, ConnectPlan};
use super::options::BenchArgs;
use super::progress::Progress;
use anyhow::bail;
use duplex::client::{ClientConfig, Target};
use duplex::WebSocket;
use std::io::Read;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::TcpStream;
use tokio::sync::{mpsc, watch, Semaphore};
use tokio::task::JoinSet;
use tokio::time::Instant;

/// Progress line refresh period.
const TICK: Duration = Duration::from_millis(250);
/// Slack on top of the close timeout before unfinished connections are aborted.
const ABORT_SLACK: Duration = Duration::from_secs(2);
/// Distinct error messages kept for the summary.
const ERROR_SAMPLES: usize = 5;

/// Shared by every connection task.
struct Shared {
    plan: ConnectPlan,
    /// Bounds the connection attempts in progress.
    slots: Semaphore,
    close_timeout: Duration,
    /// Connections that ended before we closed them (server closed, transport error).
    dropped: AtomicUsize,
    /// Connections whose closing handshake completed.
    closed_cleanly: AtomicUsize,
    errors: Mutex<Vec<String>>,
}

impl Shared {
    fn error(&self, message: String) {
        let mut samples = self.errors.lock().unwrap_or_else(|p| p.into_inner());
        if samples.len() < ERROR_SAMPLES && !samples.contains(&message) {
            samples.push(message);
        }
    }
}

/// Why the hold ended.
#[derive(Debug, Clone, Copy)]
enum Stop {
    Duration,
    Signal,
    StdinEof,
}

pub fn run(args: BenchArgs) -> anyhow::Result<()> {
    args.validate().map_err(anyhow::Error::msg)?;
    let runtime = crate::runtime::build(args.threads)?;
    let result = runtime.block_on(idle(&args));
    // The stdin watcher thread may still be blocked in read; it dies with the process.
    runtime.shutdown_timeout(Duration::from_millis(100));
    result
}

async fn idle(args: &BenchArgs) -> anyhow::Result<()> {
    if args
        .url
        .trim_start()
        .get(..4)
        .is_some_and(|s| s.eq_ignore_ascii_case("wss:"))
    {
        bail!("duplex bench supports ws:// URLs only");
    }
    let target = Target::parse(&args.url)?;
    let sources = args.source_addrs();
    let addr = connect::resolve(&target, &sources)
        .await
        .map_err(anyhow::Error::msg)?;
    if let Some(limit) = connect::raise_nofile_limit() {
        if (args.connections as u64) + 32 > limit {
            tracing::warn!(
                "open-files limit {limit} is too low for {} connections; some will fail",
                args.connections
            );
        }
    }
    let mut config = ClientConfig {
        handshake_timeout: args.connect_timeout,
        ..ClientConfig::default()
    };
    config.protocol.close_timeout = args.drain_timeout;
    let shared = Arc::new(Shared {
        plan: ConnectPlan {
            target,
            addr,
            config,
            sources,
            timeout: args.connect_timeout,
        },
        slots: Semaphore::new(args.connect_concurrency),
        close_timeout: args.drain_timeout,
        dropped: AtomicUsize::new(0),
        closed_cleanly: AtomicUsize::new(0),
        errors: Mutex::new(Vec::new()),
    });

    let stop_reason = stop_signals(args.duration)?;
    tokio::pin!(stop_reason);
    let (stop_tx, stop_rx) = watch::channel(false);
    let (attempted_tx, mut attempted_rx) = mpsc::unbounded_channel();
    let mut tasks = JoinSet::new();
    for index in 0..args.connections {
        tasks.spawn(hold(
            index,
            Arc::clone(&shared),
            stop_rx.clone(),
            attempted_tx.clone(),
        ));
    }
    drop(attempted_tx);

    let progress = Progress::new(!args.quiet && !args.json);
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let (mut attempted, mut opened) = (0usize, 0usize);
    let mut stopped: Option<Stop> = None;
    // Until every attempt has finished (each is bounded by the connect timeout); a stop
    // request makes the attempts not yet started give up at once.
    while attempted < args.connections {
        tokio::select! {
            r = attempted_rx.recv() => match r {
                Some(ok) => {
                    attempted += 1;
                    opened += usize::from(ok);
                }
                None => break,
            },
            _ = tick.tick() => progress.connecting(attempted, args.connections, attempted - opened),
            why = &mut stop_reason, if stopped.is_none() => {
                stopped = Some(why);
                let _ = stop_tx.send(true);
            }
        }
    }
    let failed = args.connections - opened;
    // Fixed key order (the measuring script's contract); both values are plain numbers.
    println!(r#"{{"event":"established","connections":{opened},"failed":{failed}}}"#);

    let why = match stopped {
        Some(why) => why,
        None => {
            progress.message(&format!(
                "holding {opened} idle connections ({failed} failed)"
            ));
            (&mut stop_reason).await
        }
    };
    let _ = stop_tx.send(true);
    progress.message("closing");
    let give_up = Instant::now() + 2 * args.drain_timeout + ABORT_SLACK;
    let finished = tokio::time::timeout_at(give_up, async {
        while tasks.join_next().await.is_some() {}
    })
    .await
    .is_ok();
    let aborted = tasks.len();
    if !finished {
        tasks.abort_all();
        while tasks.join_next().await.is_some() {}
    }
    progress.finish();
    if !args.quiet {
        let errors = shared.errors.lock().unwrap_or_else(|p| p.into_inner());
        eprintln!(
            "idle: {opened} of {} connections opened ({failed} failed), {} dropped while held, \
             {} closed cleanly, {aborted} aborted at the close timeout; stopped by {}",
            args.connections,
            shared.dropped.load(Relaxed),
            shared.closed_cleanly.load(Relaxed),
            match why {
                Stop::Duration => "--duration",
                Stop::Signal => "a signal",
                Stop::StdinEof => "end of stdin",
            },
        );
        for e in errors.iter() {
            eprintln!("  error: {e}");
        }
    }
    Ok(())
}

/// Resolves when the hold should end: `duration` elapsed, SIGTERM/SIGINT, or stdin at EOF.
fn stop_signals(duration: Duration) -> anyhow::Result<impl std::future::Future<Output = Stop>> {
    #[cfg(unix)]
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let (eof_tx, eof_rx) = tokio::sync::oneshot::channel::<()>();
    // A plain thread: tokio's stdin would hold the runtime's shutdown on a blocking read.
    std::thread::Builder::new()
        .name("stdin-watch".into())
        .spawn(move || {
            let mut stdin = std::io::stdin().lock();
            let mut buf = [0u8; 256];
            // Until EOF or an error (a closed or unreadable stdin ends the hold too).
            while let Ok(n) = stdin.read(&mut buf) {
                if n == 0 {
                    break;
                }
            }
            let _ = eof_tx.send(());
        })?;
    let deadline = Instant::now() + duration;
    Ok(async move {
        #[cfg(unix)]
        let term = term.recv();
        #[cfg(not(unix))]
        let term = std::future::pending::<Option<()>>();
        tokio::select! {
            _ = tokio::time::sleep_until(deadline) => Stop::Duration,
            _ = tokio::signal::ctrl_c() => Stop::Signal,
            _ = term => Stop::Signal,
            _ = eof_rx => Stop::StdinEof,
        }
    })
}

/// One connection: connect, report the attempt, idle until told to stop, close.
async fn hold(
    index: usize,
    shared: Arc<Shared>,
    mut stop: watch::Receiver<bool>,
    attempted: mpsc::UnboundedSender<bool>,
) {
    let attempt = async {
        let _slot = shared.slots.acquire().await;
        if *stop.borrow() {
            return Err("stopped before connecting".to_owned());
        }
        connect::connect(&shared.plan, shared.plan.source(index)).await
    };
    let mut ws = match attempt.await {
        Ok((ws, _)) => ws,
        Err(e) => {
            shared.error(format!("connect: {e}"));
            let _ = attempted.send(false);
            return;
        }
    };
    let _ = attempted.send(true);
    drop(attempted);
    loop {
        tokio::select! {
            _ = stop.wait_for(|s| *s) => break,
            event = ws.next_event() => match event {
                // Pings are answered by the driver; anything else is ignored.
                Some(Ok(_)) => continue,
                Some(Err(e)) => {
                    shared.dropped.fetch_add(1, Relaxed);
                    shared.error(format!("while idle: {e}"));
                    return;
                }
                None => {
                    shared.dropped.fetch_add(1, Relaxed);
                    shared.error(describe_close(&ws));
                    return;
                }
            }
        }
    }
    match connect::close(&mut ws, shared.close_timeout).await {
        Ok(()) => {
            shared.closed_cleanly.fetch_add(1, Relaxed);
        }
        Err(e) => shared.error(format!("close: {e}")),
    }
}

fn describe_close(ws: &WebSocket<TcpStream>) -> String {
    match ws.close_frame() {
        Some(f) => format!("server closed the connection ({})", f.code.0),
        None => "server closed the connection".to_owned(),
    }
}
