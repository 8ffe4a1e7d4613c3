//! The tokio runtime the subcommands run on.

/// A runtime with `threads` workers: 1 gives a single-threaded runtime (pinnable to one core
/// with taskset, what benchmarks want), 0 one worker per core.
pub fn build(threads: usize) -> std::io::Result<tokio::runtime::Runtime> {
    if threads == 1 {
        return tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build();
    }
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    if threads > 1 {
        builder.worker_threads(threads);
    }
    builder.enable_all().build()
}
