//! Open loop: each connection sends at a fixed rate whatever the echoes do, and each latency
//! is measured from the message's *intended* send time. A sender that falls behind (slow
//! server, full socket) sends late messages back to back, and their wait counts in their
//! latency, so coordinated omission is not hidden. Messages due in the window that were never
//! sent or never echoed by the drain deadline are counted as unanswered.
//!
//! Sends are paced with a high-resolution timer ([`Pacer`]); what lag remains is reported
//! (`send_lag_us`), as is the latency from the actual send (`service_latency_us`).
//!
//! The connection is split: a writer paces the sends while a reader takes the echoes, both in
//! the connection's one task. Echoes come back in order on a connection, so the reader
//! matches each to the oldest intended time outstanding.

use super::context::ConnCtx;
use super::pacer::Pacer;
use super::stats::{ConnOutcome, ErrorKind};
use duplex::{CloseCode, WebSocket};
use std::collections::VecDeque;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::time::Instant;

/// Sends in a row, when behind schedule, before letting the reader run.
const BURST: u32 = 16;

pub async fn run(ws: WebSocket<TcpStream>, ctx: &ConnCtx<'_>) -> ConnOutcome {
    let interval = Duration::from_secs_f64(1.0 / ctx.run.rate);
    // Spread the connections' sends evenly over one interval.
    let first = ctx.start + interval.mul_f64(ctx.index as f64 / ctx.run.connections.max(1) as f64);
    let (mut reader, mut writer) = ws.into_split();
    // The writer hands each message's intended and actual send times to the reader before
    // sending it.
    let (intended_tx, mut intended_rx) = mpsc::unbounded_channel::<(Instant, Instant)>();
    let message = &ctx.run.message;

    let writer_side = async {
        let mut out = ConnOutcome::default();
        let mut next = first;
        let mut pacer = Pacer::new();
        let deadline = tokio::time::sleep_until(ctx.hard_deadline);
        tokio::pin!(deadline);
        let mut in_a_row = 0;
        // Counts the messages due in the window from `from` on, never sent, as unanswered.
        let give_up = |out: &mut ConnOutcome, from: Instant, why: &str| {
            let unsent = due_from(from, interval, ctx.window_start, ctx.end);
            out.scheduled += unsent;
            ctx.error(out, ErrorKind::Unanswered, unsent, why);
            out.failed = true;
        };
        while next < ctx.end && !ctx.stopped() {
            if next > Instant::now() {
                pacer.sleep_until(next).await;
                in_a_row = 0;
            } else {
                // Behind schedule: send at once, letting the reader in now and then.
                in_a_row += 1;
                if in_a_row % BURST == 0 {
                    tokio::task::yield_now().await;
                }
                if Instant::now() >= ctx.hard_deadline {
                    give_up(
                        &mut out,
                        next,
                        "sender still behind schedule at the drain deadline",
                    );
                    break;
                }
            }
            if intended_tx.send((next, Instant::now())).is_err() {
                // The reader failed (and reported why).
                give_up(&mut out, next, "not sent: the connection failed");
                break;
            }
            if ctx.in_window(next) {
                out.scheduled += 1;
            }
            let sent = tokio::select! {
                biased;
                r = writer.send(message.clone()) => r,
                _ = &mut deadline => {
                    // This message is outstanding: the reader counts it.
                    give_up(&mut out, next + interval, "send blocked until the drain deadline");
                    break;
                }
            };
            if let Err(e) = sent {
                ctx.error(&mut out, ErrorKind::Io, 1, &format!("send: {e}"));
                give_up(&mut out, next + interval, "not sent: the connection failed");
                break;
            }
            if ctx.in_window(Instant::now()) {
                out.sent += 1;
            }
            next += interval;
        }
        drop(intended_tx);
        (out, writer)
    };

    let reader_side = async {
        let mut out = ConnOutcome::default();
        let mut outstanding: VecDeque<(Instant, Instant)> = VecDeque::new();
        let mut writer_done = false;
        let deadline = tokio::time::sleep_until(ctx.hard_deadline);
        tokio::pin!(deadline);
        while !(writer_done && outstanding.is_empty()) {
            tokio::select! {
                biased;
                // First take every intended time queued, so an echo always finds its own.
                t = intended_rx.recv(), if !writer_done => match t {
                    Some(t) => outstanding.push_back(t),
                    None => writer_done = true,
                },
                echo = reader.recv() => {
                    let now = Instant::now();
                    match echo {
                        Some(Ok(echo)) => {
                            let Some((intended, actual)) = outstanding.pop_front() else {
                                ctx.error(&mut out, ErrorKind::Mismatch, 1, "echo with no message in flight");
                                continue;
                            };
                            if echo != *message {
                                ctx.error(&mut out, ErrorKind::Mismatch, 1,
                                    &format!("echo of {} bytes differs from the message sent", echo.len()));
                            }
                            ctx.run.live.echoes.fetch_add(1, Relaxed);
                            if ctx.in_window(intended) {
                                ctx.record_open(
                                    now.saturating_duration_since(intended),
                                    now.saturating_duration_since(actual),
                                    actual.saturating_duration_since(intended),
                                );
                            }
                            if ctx.in_window(now) && !ctx.stopped() {
                                out.echoes += 1;
                            }
                        }
                        Some(Err(e)) => {
                            ctx.error(&mut out, ErrorKind::Io, 1, &format!("receive: {e}"));
                            out.failed = true;
                            break;
                        }
                        None => {
                            let why = match reader.close_frame() {
                                Some(f) => format!("server closed the connection ({})", f.code.0),
                                None => "server closed the connection".to_owned(),
                            };
                            ctx.error(&mut out, ErrorKind::Io, 1, &why);
                            out.failed = true;
                            break;
                        }
                    }
                }
                _ = &mut deadline => {
                    out.failed = true;
                    break;
                }
            }
        }
        if out.failed {
            // Whatever was due in the window and is still outstanding got no echo.
            intended_rx.close();
            while let Ok(t) = intended_rx.try_recv() {
                outstanding.push_back(t);
            }
            let lost = outstanding
                .iter()
                .filter(|(t, _)| ctx.in_window(*t))
                .count() as u64;
            ctx.error(
                &mut out,
                ErrorKind::Unanswered,
                lost,
                "no echo before the drain deadline",
            );
        }
        (out, reader)
    };

    let ((mut out, mut writer), (read_out, mut reader)) = tokio::join!(writer_side, reader_side);
    out.echoes += read_out.echoes;
    out.errors.add(&read_out.errors);
    out.failed |= read_out.failed;
    if !out.failed {
        let closing = async {
            writer.close(CloseCode::NORMAL, "").await?;
            while let Some(event) = reader.next_event().await {
                event?;
            }
            Ok::<_, duplex::Error>(())
        };
        match tokio::time::timeout(ctx.run.drain_timeout, closing).await {
            Ok(Ok(())) => out.closed_cleanly = true,
            Ok(Err(e)) => ctx.error(&mut out, ErrorKind::Close, 1, &e.to_string()),
            Err(_) => ctx.error(
                &mut out,
                ErrorKind::Close,
                1,
                &format!(
                    "closing handshake not done within {:?}",
                    ctx.run.drain_timeout
                ),
            ),
        }
    }
    out
}

/// How many of the send times `first + k * interval` (k >= 0) fall in `[from, to)`.
fn due_from(first: Instant, interval: Duration, from: Instant, to: Instant) -> u64 {
    let step = interval.as_secs_f64();
    // Index of the first send time at or after `t`.
    let index_at = |t: Instant| -> f64 {
        if t <= first {
            0.0
        } else {
            ((t - first).as_secs_f64() / step).ceil()
        }
    };
    (index_at(to) - index_at(from)).max(0.0) as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_send_times_due_in_a_window() {
        let t = Instant::now();
        let ms = Duration::from_millis;
        // Sends at t, t+10, t+20, ..; the window [t+15, t+45) holds t+20, t+30, t+40.
        assert_eq!(due_from(t, ms(10), t + ms(15), t + ms(45)), 3);
        // The window started before: t .. t+40.
        assert_eq!(due_from(t, ms(10), t - ms(100), t + ms(45)), 5);
        // The window ends at a send time: excluded.
        assert_eq!(due_from(t, ms(10), t, t + ms(40)), 4);
        // Nothing left.
        assert_eq!(due_from(t, ms(10), t - ms(100), t), 0);
        assert_eq!(due_from(t, ms(10), t + ms(50), t + ms(45)), 0);
    }
}
