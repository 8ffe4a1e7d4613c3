//! Temporary directories, child processes with a log file, and bounded polling.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// How many bytes of a log [`Process::log_tail`] shows by default in panic messages.
const LOG_TAIL_BYTES: usize = 4000;

/// A uniquely named directory under [`std::env::temp_dir`], removed (recursively) on drop
/// unless the environment variable `DUPLEX_TESTKIT_KEEP` is set.
#[derive(Debug)]
pub struct TempDir {
    path: PathBuf,
}

impl TempDir {
    /// Creates `<temp>/duplex-testkit-<label>-<pid>-<counter>-<nanos>`.
    ///
    /// # Panics
    ///
    /// If the directory cannot be created.
    pub fn new(label: &str) -> TempDir {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let path = std::env::temp_dir().join(format!(
            "duplex-testkit-{label}-{}-{n}-{nanos}",
            std::process::id()
        ));
        std::fs::create_dir_all(&path)
            .unwrap_or_else(|e| panic!("cannot create temp dir {}: {e}", path.display()));
        TempDir { path }
    }

    /// The directory's absolute path.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if std::env::var_os("DUPLEX_TESTKIT_KEEP").is_some() {
            eprintln!("duplex-testkit: keeping {}", self.path.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.path);
        }
    }
}

/// A child process whose stdout and stderr go to a log file; killed (SIGKILL) and reaped on
/// drop.
#[derive(Debug)]
pub struct Process {
    name: String,
    child: Option<Child>,
    pid: u32,
    log: PathBuf,
}

impl Process {
    /// Spawns `command` with stdin closed and stdout+stderr appended to `log`. `name` labels
    /// the process in panic messages.
    ///
    /// # Panics
    ///
    /// If the log file cannot be opened or the program cannot be started.
    pub fn spawn(name: &str, mut command: Command, log: &Path) -> Process {
        let out = File::options()
            .create(true)
            .append(true)
            .open(log)
            .unwrap_or_else(|e| panic!("{name}: cannot open log file {}: {e}", log.display()));
        let err = out
            .try_clone()
            .unwrap_or_else(|e| panic!("{name}: cannot clone log file handle: {e}"));
        command
            .stdin(Stdio::null())
            .stdout(Stdio::from(out))
            .stderr(Stdio::from(err));
        let child = command
            .spawn()
            .unwrap_or_else(|e| panic!("{name}: cannot start {command:?}: {e}"));
        Process {
            name: name.to_owned(),
            pid: child.id(),
            child: Some(child),
            log: log.to_owned(),
        }
    }

    /// The label given at spawn.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The OS process id.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// The log file (stdout and stderr of the process).
    pub fn log_path(&self) -> &Path {
        &self.log
    }

    /// The whole log file (lossy UTF-8; empty if it cannot be read).
    pub fn log_text(&self) -> String {
        read_lossy(&self.log)
    }

    /// The last few kilobytes of the log, for panic messages.
    pub fn log_tail(&self) -> String {
        tail(&self.log_text(), LOG_TAIL_BYTES)
    }

    /// `Some(description)` if the process has exited (it is reaped), `None` while it runs.
    pub fn exit_status(&mut self) -> Option<String> {
        match self.child.as_mut() {
            None => Some("killed by the harness".to_owned()),
            Some(child) => match child.try_wait() {
                Ok(Some(status)) => Some(status.to_string()),
                Ok(None) => None,
                Err(e) => Some(format!("unknown (try_wait failed: {e})")),
            },
        }
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        self.exit_status().is_none()
    }

    /// Sends SIGKILL and waits for the process to be gone. Idempotent.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Polls `check` (bounded by `timeout`, every 50 ms) until it returns `Ok`; panics with
    /// `what`, the last observation and the log tail if the time runs out or the process exits.
    ///
    /// `check` returns `Ok(value)` when done, `Err(observation)` to keep waiting.
    pub fn wait_for<T>(
        &mut self,
        what: &str,
        timeout: Duration,
        mut check: impl FnMut() -> Result<T, String>,
    ) -> T {
        let mut exited = None;
        let mut observed = String::from("(none)");
        let result = poll_until(what, timeout, Duration::from_millis(50), || {
            if let Some(status) = self.exit_status() {
                exited = Some(status);
                return Some(None);
            }
            match check() {
                Ok(value) => Some(Some(value)),
                Err(observation) => {
                    observed = observation;
                    None
                }
            }
        });
        if let Ok(Some(value)) = result {
            return value;
        }
        let cause = match exited {
            Some(status) => format!("it exited ({status}) while waiting"),
            None => format!("gave up after {timeout:?}"),
        };
        panic!(
            "{}: waiting for {what}: {cause}; last observation: {observed}\n\
             ---- log {} (tail) ----\n{}",
            self.name,
            self.log.display(),
            self.log_tail()
        )
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Calls `f` every `interval` until it returns `Some(value)` or `timeout` has passed; the
/// number of attempts is also bounded (`timeout / interval + 2`). Returns `Err` with a message
/// naming `what` on time-out.
pub fn poll_until<T>(
    what: &str,
    timeout: Duration,
    interval: Duration,
    mut f: impl FnMut() -> Option<T>,
) -> Result<T, String> {
    let start = Instant::now();
    let interval = interval.max(Duration::from_millis(1));
    let max_attempts = timeout.as_millis() / interval.as_millis() + 2;
    let mut attempts = 0u128;
    loop {
        attempts += 1;
        if let Some(value) = f() {
            return Ok(value);
        }
        if start.elapsed() >= timeout || attempts >= max_attempts {
            return Err(format!(
                "timed out after {:?} ({attempts} attempts) waiting for {what}",
                start.elapsed()
            ));
        }
        std::thread::sleep(interval);
    }
}

pub(crate) fn read_lossy(path: &Path) -> String {
    std::fs::read(path)
        .map(|bytes| String::from_utf8_lossy(&bytes).into_owned())
        .unwrap_or_default()
}

pub(crate) fn tail(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_owned();
    }
    let mut start = text.len() - max;
    while !text.is_char_boundary(start) {
        start += 1;
    }
    format!("[...]{}", &text[start..])
}
