//! The `duplex` command.

mod bench;
mod echo;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "duplex",
    version,
    about = "WebSocket tools: echo server, hub, client, load generator"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Echo every text and binary message back (for conformance tests and benchmarks).
    Echo(echo::EchoArgs),
    /// Load an echo server: closed-loop echoes/s or open-loop latency at a fixed rate.
    Bench(bench::BenchArgs),
}

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("DUPLEX_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    match cli.command {
        Command::Echo(args) => echo::run(args),
        Command::Bench(args) => bench::run(args),
    }
}
