//! Closed loop: one message in flight per connection. Send, wait for the whole echo, send
//! again — the method of the public fastwebsockets / tokio-websockets / uWebSockets echo
//! benchmarks. Throughput is echoes per second; latency is the round trip of each echo.

use super::connect;
use super::context::ConnCtx;
use super::stats::{ConnOutcome, ErrorKind};
use duplex::WebSocket;
use std::sync::atomic::Ordering::Relaxed;
use tokio::net::TcpStream;
use tokio::time::Instant;

pub async fn run(mut ws: WebSocket<TcpStream>, ctx: &ConnCtx<'_>) -> ConnOutcome {
    let mut out = ConnOutcome::default();
    let message = &ctx.run.message;
    let deadline = tokio::time::sleep_until(ctx.hard_deadline);
    tokio::pin!(deadline);
    loop {
        let t0 = Instant::now();
        if t0 >= ctx.end || ctx.stopped() {
            break;
        }
        let sent = tokio::select! {
            biased;
            r = ws.send(message.clone()) => r,
            _ = &mut deadline => {
                ctx.error(&mut out, ErrorKind::Unanswered, 1, "send blocked until the drain deadline");
                out.failed = true;
                break;
            }
        };
        if let Err(e) = sent {
            ctx.error(&mut out, ErrorKind::Io, 1, &format!("send: {e}"));
            out.failed = true;
            break;
        }
        if ctx.in_window(t0) {
            out.sent += 1;
        }
        let echo = tokio::select! {
            biased;
            r = ws.recv() => r,
            _ = &mut deadline => {
                ctx.error(&mut out, ErrorKind::Unanswered, 1, "no echo before the drain deadline");
                out.failed = true;
                break;
            }
        };
        let t1 = Instant::now();
        match echo {
            Some(Ok(echo)) => {
                if echo != *message {
                    ctx.error(
                        &mut out,
                        ErrorKind::Mismatch,
                        1,
                        &format!("echo of {} bytes differs from the message sent", echo.len()),
                    );
                }
            }
            Some(Err(e)) => {
                ctx.error(&mut out, ErrorKind::Io, 1, &format!("receive: {e}"));
                out.failed = true;
                break;
            }
            None => {
                let why = match ws.close_frame() {
                    Some(f) => format!("server closed the connection ({})", f.code.0),
                    None => "server closed the connection".to_owned(),
                };
                ctx.error(&mut out, ErrorKind::Io, 1, &why);
                out.failed = true;
                break;
            }
        }
        ctx.run.live.echoes.fetch_add(1, Relaxed);
        if ctx.in_window(t1) && !ctx.stopped() {
            out.echoes += 1;
            ctx.record(t1 - t0);
        }
    }
    if !out.failed {
        match connect::close(&mut ws, ctx.run.drain_timeout).await {
            Ok(()) => out.closed_cleanly = true,
            Err(e) => ctx.error(&mut out, ErrorKind::Close, 1, &e),
        }
    }
    out
}
