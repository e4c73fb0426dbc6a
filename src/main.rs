//! The `shardcast` command: parse the command line, start the server, wait.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use shardcast::{Config, Server};

/// A thread-per-core WebSocket chat and broadcast server.
///
/// Rooms are URL paths: ws://HOST/ is the room "lobby", ws://HOST/<room> the room <room>.
/// A plain GET of the same paths serves the chat page; GET /health reports status as JSON.
#[derive(Debug, Parser)]
#[command(version)]
struct Cli {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
    /// Number of shards (worker threads) [default: number of cores].
    #[arg(long)]
    workers: Option<usize>,
    /// Do not pin shards to cores.
    #[arg(long)]
    no_pin: bool,
    /// Serve the chat page and assets from this folder instead of the embedded copy.
    #[arg(long, value_name = "DIR")]
    static_dir: Option<PathBuf>,
    /// Largest message a client may send, in bytes; larger ones are closed with 1009.
    #[arg(long, default_value_t = 64 * 1024, value_name = "BYTES")]
    max_message: usize,
    /// Most bytes queued for one client before it is closed as a slow consumer (1008).
    #[arg(long, default_value_t = 1024 * 1024, value_name = "BYTES")]
    max_buffered: usize,
    /// Seconds a client has to send its request head.
    #[arg(long, default_value_t = 10.0, value_name = "SECONDS")]
    handshake_timeout: f64,
    /// Seconds a closing connection has to finish the close handshake.
    #[arg(long, default_value_t = 5.0, value_name = "SECONDS")]
    close_timeout: f64,
    /// Log level (error, warn, info, debug, trace); RUST_LOG overrides it.
    #[arg(long, default_value = "info")]
    log_level: String,
}

impl Cli {
    fn into_config(self) -> anyhow::Result<Config> {
        let defaults = Config::default();
        Ok(Config {
            listen: self.listen,
            workers: self.workers.unwrap_or(defaults.workers),
            pin: !self.no_pin,
            static_dir: self.static_dir,
            max_message: self.max_message,
            max_buffered: self.max_buffered,
            handshake_timeout: seconds(self.handshake_timeout, "--handshake-timeout")?,
            close_timeout: seconds(self.close_timeout, "--close-timeout")?,
            ..defaults
        })
    }
}

fn seconds(value: f64, flag: &str) -> anyhow::Result<Duration> {
    Duration::try_from_secs_f64(value)
        .ok()
        .filter(|d| !d.is_zero())
        .with_context(|| format!("{flag} must be a positive number of seconds, got {value}"))
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or(&cli.log_level))
        .init();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("shardcast: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    let config = cli.into_config()?;
    let server = Server::start(config).context("cannot start")?;
    // Tests and scripts read the bound address (useful with port 0) from this line.
    println!("listening on {}", server.local_addr());
    server.wait()?;
    Ok(())
}
