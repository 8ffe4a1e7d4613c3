//! Waiting until a send time, precisely.
//!
//! tokio's timer has millisecond granularity: a sleep ends up to 1-2 ms after its deadline,
//! which an open-loop latency measured from the intended send time would count. On Linux a
//! `timerfd` per connection (a high-resolution timer, woken through the same epoll as the
//! sockets, no spinning) ends within microseconds; elsewhere, or when one cannot be created,
//! tokio's timer is used.

use std::pin::Pin;
use tokio::time::{Instant, Sleep};

pub enum Pacer {
    #[cfg(target_os = "linux")]
    TimerFd(tokio::io::unix::AsyncFd<std::os::fd::OwnedFd>),
    Tokio(Pin<Box<Sleep>>),
}

impl Pacer {
    pub fn new() -> Pacer {
        #[cfg(target_os = "linux")]
        if let Some(fd) = timerfd::create() {
            return Pacer::TimerFd(fd);
        }
        Pacer::Tokio(Box::pin(tokio::time::sleep_until(Instant::now())))
    }

    /// Whether the precise timer is in use.
    #[cfg_attr(not(test), allow(dead_code))]
    pub fn is_precise(&self) -> bool {
        !matches!(self, Pacer::Tokio(_))
    }

    /// Returns at `deadline` (at once if it passed).
    pub async fn sleep_until(&mut self, deadline: Instant) {
        let now = Instant::now();
        if deadline <= now {
            return;
        }
        match self {
            #[cfg(target_os = "linux")]
            Pacer::TimerFd(fd) => {
                if timerfd::wait(fd, deadline - now).await.is_err() {
                    // Not expected; fall back rather than fail the connection.
                    tokio::time::sleep_until(deadline).await;
                }
            }
            Pacer::Tokio(sleep) => {
                sleep.as_mut().reset(deadline);
                sleep.as_mut().await;
            }
        }
    }
}

#[cfg(target_os = "linux")]
mod timerfd {
    use std::io;
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
    use std::time::Duration;
    use tokio::io::unix::AsyncFd;
    use tokio::io::Interest;

    pub fn create() -> Option<AsyncFd<OwnedFd>> {
        // SAFETY: plain system call; a non-negative result is a descriptor we now own.
        let fd = unsafe {
            libc::timerfd_create(
                libc::CLOCK_MONOTONIC,
                libc::TFD_NONBLOCK | libc::TFD_CLOEXEC,
            )
        };
        if fd < 0 {
            return None;
        }
        // SAFETY: `fd` is a fresh descriptor owned by nobody else.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        // SAFETY: the AsyncFd owns the OwnedFd, which stays open and the same descriptor
        // until the AsyncFd is dropped.
        unsafe { AsyncFd::register_with_interest(fd, Interest::READABLE) }.ok()
    }

    /// Arms the timer `after` from now (one shot) and waits for it to expire.
    pub async fn wait(fd: &AsyncFd<OwnedFd>, after: Duration) -> io::Result<()> {
        let nanos = after.as_nanos().max(1);
        let spec = libc::itimerspec {
            it_interval: libc::timespec {
                tv_sec: 0,
                tv_nsec: 0,
            },
            it_value: libc::timespec {
                tv_sec: (nanos / 1_000_000_000) as libc::time_t,
                tv_nsec: (nanos % 1_000_000_000) as libc::c_long,
            },
        };
        // SAFETY: a valid timerfd and itimerspec; the old value is not wanted. Arming resets
        // any expiration not yet read.
        if unsafe { libc::timerfd_settime(fd.as_raw_fd(), 0, &spec, std::ptr::null_mut()) } != 0 {
            return Err(io::Error::last_os_error());
        }
        loop {
            let mut guard = fd.readable().await?;
            let read = guard.try_io(|fd| {
                let mut expirations = 0u64;
                // SAFETY: reads 8 bytes into a u64 from a timerfd.
                let n = unsafe {
                    libc::read(
                        fd.as_raw_fd(),
                        (&mut expirations as *mut u64).cast(),
                        std::mem::size_of::<u64>(),
                    )
                };
                if n < 0 {
                    Err(io::Error::last_os_error())
                } else {
                    Ok(())
                }
            });
            match read {
                Ok(result) => return result,
                // Stale readiness (not expired yet): wait again.
                Err(_would_block) => continue,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test(flavor = "current_thread")]
    async fn wakes_close_to_the_deadline() {
        let mut pacer = Pacer::new();
        #[cfg(target_os = "linux")]
        assert!(pacer.is_precise());
        let mut late = Duration::ZERO;
        for _ in 0..5 {
            let deadline = Instant::now() + Duration::from_micros(300);
            pacer.sleep_until(deadline).await;
            let now = Instant::now();
            assert!(now >= deadline);
            late = late.max(now - deadline);
        }
        // Behaviour, not speed: it returned, after each deadline; a loaded machine may be late.
        assert!(late < Duration::from_secs(5));
        // A past deadline returns at once.
        pacer
            .sleep_until(Instant::now() - Duration::from_millis(1))
            .await;
    }
}
