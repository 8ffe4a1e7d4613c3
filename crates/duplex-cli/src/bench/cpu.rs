//! CPU time of a process from `/proc/PID/stat` (utime + stime, in clock ticks).

use std::io;
use std::time::Duration;

/// User and system CPU time consumed by a process so far.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CpuTimes {
    pub user: Duration,
    pub system: Duration,
}

impl CpuTimes {
    pub fn total(self) -> Duration {
        self.user + self.system
    }

    /// What was consumed between `earlier` and `self`.
    pub fn since(self, earlier: CpuTimes) -> CpuTimes {
        CpuTimes {
            user: self.user.saturating_sub(earlier.user),
            system: self.system.saturating_sub(earlier.system),
        }
    }
}

/// This process's CPU time.
pub fn own() -> io::Result<CpuTimes> {
    read("/proc/self/stat")
}

/// Another process's CPU time.
pub fn of_pid(pid: u32) -> io::Result<CpuTimes> {
    read(&format!("/proc/{pid}/stat"))
}

fn read(path: &str) -> io::Result<CpuTimes> {
    let text = std::fs::read_to_string(path)?;
    parse_stat(&text, clock_ticks_per_second()).ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{path}: unexpected format"),
        )
    })
}

fn clock_ticks_per_second() -> u64 {
    // SAFETY: sysconf has no preconditions.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if ticks > 0 {
        ticks as u64
    } else {
        100
    }
}

/// Fields 14 (utime) and 15 (stime) of a `stat` line. Field 2, the command name in
/// parentheses, may itself hold spaces and parentheses, so counting starts after the last `)`.
fn parse_stat(text: &str, ticks_per_second: u64) -> Option<CpuTimes> {
    let after_name = &text[text.rfind(')')? + 1..];
    let mut fields = after_name.split_ascii_whitespace();
    // After the name: field 3 (state) is index 0, so field 14 is index 11.
    let utime: u64 = fields.nth(11)?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    let to_duration = |ticks: u64| {
        Duration::from_secs(ticks / ticks_per_second)
            + Duration::from_nanos((ticks % ticks_per_second) * 1_000_000_000 / ticks_per_second)
    };
    Some(CpuTimes {
        user: to_duration(utime),
        system: to_duration(stime),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_stat_with_awkward_name() {
        let line = "1234 (a b) c)) S 1 1234 1234 0 -1 4194560 100 0 0 0 250 37 0 0 20 0 1 0 5 0 0";
        let t = parse_stat(line, 100).unwrap();
        assert_eq!(t.user, Duration::from_millis(2500));
        assert_eq!(t.system, Duration::from_millis(370));
    }

    #[test]
    fn reads_own_stat() {
        let t = own().unwrap();
        assert!(t.total() < Duration::from_secs(3600));
    }
}
