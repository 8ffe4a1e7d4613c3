//! The live progress line on stderr (only when stderr is a terminal, never with `--quiet`).

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::time::Duration;

pub struct Progress {
    bar: ProgressBar,
    last_echoes: u64,
    last_at: Option<tokio::time::Instant>,
}

impl Progress {
    pub fn new(enabled: bool) -> Self {
        let bar = if enabled {
            // Hidden by indicatif itself when stderr is not a terminal.
            ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr())
        } else {
            ProgressBar::hidden()
        };
        bar.set_style(
            ProgressStyle::with_template("{spinner} {msg}")
                .unwrap_or_else(|_| ProgressStyle::default_spinner()),
        );
        Progress {
            bar,
            last_echoes: 0,
            last_at: None,
        }
    }

    pub fn connecting(&self, done: usize, total: usize, failed: usize) {
        self.bar.set_message(format!(
            "connecting {done}/{total}{}",
            if failed > 0 {
                format!(" ({failed} failed)")
            } else {
                String::new()
            }
        ));
        self.bar.tick();
    }

    /// `phase` is "warm-up" or "measuring"; `elapsed`/`total` within that phase.
    pub fn running(
        &mut self,
        phase: &str,
        elapsed: Duration,
        total: Duration,
        echoes: u64,
        errors: u64,
        active: usize,
    ) {
        let now = tokio::time::Instant::now();
        let rate = match self.last_at {
            Some(at) if now > at => {
                (echoes.saturating_sub(self.last_echoes)) as f64 / (now - at).as_secs_f64()
            }
            _ => 0.0,
        };
        self.last_echoes = echoes;
        self.last_at = Some(now);
        self.bar.set_message(format!(
            "{phase} {:.1}/{:.1} s | {rate:.0} echoes/s | {active} connections | {errors} errors",
            elapsed.as_secs_f64().min(total.as_secs_f64()),
            total.as_secs_f64()
        ));
        self.bar.tick();
    }

    pub fn message(&self, text: &str) {
        self.bar.set_message(text.to_owned());
        self.bar.tick();
    }

    pub fn finish(&self) {
        self.bar.finish_and_clear();
    }
}
