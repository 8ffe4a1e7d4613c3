//! The two tasks every node runs: the supervisor, which owns the pub/sub stream and
//! reconnects with capped, jittered backoff when the connection is lost, and the lease loop,
//! which renews this node's lease, re-registers its share when needed and sweeps dead nodes.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;

use super::shared::Shared;

/// Owns the pub/sub stream: dispatches messages, and on a lost connection reconnects with
/// capped exponential backoff (each wait jittered between half and all of the delay), logging
/// the loss and the recovery once each.
pub(super) async fn supervise(shared: Arc<Shared>, mut stream: redis::aio::PubSubStream) {
    loop {
        loop {
            tokio::select! {
                () = shared.cancel.cancelled() => return,
                () = shared.broken.notified() => break,
                msg = stream.next() => match msg {
                    Some(m) => shared.dispatch(&m),
                    None => break,
                },
            }
        }
        shared.disconnected();
        tracing::warn!(
            node = %shared.node_id,
            redis = %shared.shown_url,
            "lost the connection to Redis: not ready, reconnecting"
        );
        let lost_at = tokio::time::Instant::now();
        let mut backoff = Duration::from_millis(100);
        let mut attempts = 0u32;
        stream = loop {
            attempts += 1;
            let attempt = async {
                let conns = shared.open().await?;
                shared.install(conns).await
            };
            tokio::select! {
                () = shared.cancel.cancelled() => return,
                r = attempt => match r {
                    Ok(s) => break s,
                    Err(e) => tracing::debug!(attempts, "Redis reconnect failed: {e}"),
                },
            }
            let jitter = rand::random::<f64>();
            tokio::select! {
                () = shared.cancel.cancelled() => return,
                () = tokio::time::sleep(backoff.mul_f64(0.5 + jitter / 2.0)) => {}
            }
            backoff = (backoff * 2).min(shared.cfg.max_backoff);
        };
        // A call that failed on the old connection while this loop ran may have left a wake-up
        // behind: it must not tear down the new connection.
        let _ = tokio::time::timeout(Duration::ZERO, shared.broken.notified()).await;
        // Anything this node did while away reaches Redis now.
        shared.dirty.store(true, Relaxed);
        shared.connected_notify.notify_one();
        tracing::info!(
            node = %shared.node_id,
            attempts,
            down_ms = lost_at.elapsed().as_millis() as u64,
            "reconnected to Redis"
        );
    }
}

/// Renews the lease, re-registers when needed, sweeps dead nodes: every quarter of the node
/// timeout, and at once after a reconnection.
pub(super) async fn lease_loop(shared: Arc<Shared>) {
    let every = (shared.cfg.node_timeout / 4).max(Duration::from_millis(100));
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = shared.cancel.cancelled() => return,
            _ = tick.tick() => {}
            () = shared.connected_notify.notified() => {}
        }
        if !shared.connected.load(Relaxed) {
            continue;
        }
        match shared.sync_share().await {
            Ok(()) => {
                if shared.connected.load(Relaxed) && !shared.ready.swap(true, Relaxed) {
                    tracing::info!(node = %shared.node_id, "ready: this node's share is registered");
                }
            }
            Err(e) => {
                tracing::debug!("lease renewal or re-registration failed: {e}");
                continue;
            }
        }
        if let Err(e) = shared.sweep().await {
            tracing::debug!("sweep for dead nodes failed: {e}");
        }
    }
}
