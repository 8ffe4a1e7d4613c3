//! The `duplex` command.

mod bench;
mod connect;
mod echo;
mod runtime;

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
    /// Pusher Channels compatible server (WebSocket + HTTP API on one port).
    Serve(duplex_server::ServeArgs),
    /// Load an echo server: closed-loop echoes/s or open-loop latency at a fixed rate.
    Bench(bench::BenchArgs),
    /// Interactive/scriptable client: stdin lines to messages, messages to stdout.
    Connect(connect::ConnectArgs),
}

fn main() {
    let cli = Cli::parse();
    let logs = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("DUPLEX_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr);
    match &cli.command {
        Command::Serve(args) if duplex_server::json_logs(args) => logs.json().init(),
        _ => logs.init(),
    }
    let result = match cli.command {
        Command::Echo(args) => echo::run(args),
        Command::Serve(args) => duplex_server::run(args),
        Command::Bench(args) => bench::run(args),
        Command::Connect(args) => connect::run(args),
    };
    if let Err(e) = result {
        // One line with the causes, never a backtrace: these errors are for operators.
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}
