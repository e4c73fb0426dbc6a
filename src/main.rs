//! The `shardcast` command: parse the command line, start the server, wait for it or a signal.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use shardcast::config::{
    ApiKey, AuthMode, CoalesceRule, Model, TlsFiles, TokenKeyFile, default_max_connections,
    raise_fd_limit,
};
use shardcast::limits::Rate;
use shardcast::logging::{self, LogFormat};
use shardcast::{Config, Server, client};
use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook::iterator::Signals;

/// A thread-per-core WebSocket chat and broadcast server.
///
/// Rooms are URL paths: ws://HOST/ is the room "lobby", ws://HOST/<room> the room <room>.
/// A plain GET of the same paths serves the chat page; GET /health reports status as JSON and
/// GET /metrics in the Prometheus text format. SIGINT or SIGTERM shut down gracefully (every
/// client gets close 1001); a second signal exits at once.
///
/// `shardcast client` is a WebSocket client for trying it (see `shardcast client --help`).
#[derive(Debug, Parser)]
#[command(
    version = concat!(env!("CARGO_PKG_VERSION"), " (", env!("SHARDCAST_GIT_REVISION"), ")"),
    args_conflicts_with_subcommands = true
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Subcommand>,
    // Without a subcommand, `shardcast` runs the server with these.
    #[command(flatten)]
    server: ServerArgs,
}

#[derive(Debug, clap::Subcommand)]
enum Subcommand {
    Client(ClientArgs),
}

/// The server's options.
#[derive(Debug, clap::Args)]
struct ServerArgs {
    /// Address to listen on: IP:PORT, HOST:PORT (resolved once, at start) or a bare PORT
    /// (on 127.0.0.1).
    #[arg(long, default_value = "127.0.0.1:8080", value_parser = listen_address)]
    listen: SocketAddr,
    /// Threading model: sharded (acceptor + shared-nothing shards), shared (threads over one
    /// locked registry) or single (one thread does everything).
    #[arg(long, value_enum, default_value_t = ModelArg::Sharded)]
    model: ModelArg,
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
    /// SO_SNDBUF of accepted sockets, in bytes (the kernel doubles it and stops autotuning
    /// it); bounds the kernel memory a stalled reader pins. Default: the kernel's autotuning.
    #[arg(long, value_name = "BYTES")]
    socket_send_buffer: Option<usize>,
    /// Most open WebSocket sessions; more upgrades get 503 [default: descriptor limit - 256].
    #[arg(long, value_name = "N")]
    max_connections: Option<usize>,
    /// Most connections from one IP address; more are refused with 503 [default: no limit].
    #[arg(long, value_name = "N")]
    max_connections_per_ip: Option<usize>,
    /// New connections per second from one IP address; more are refused with 429 and
    /// Retry-After [default: no limit].
    #[arg(long, value_name = "N")]
    max_connection_rate_per_ip: Option<u32>,
    /// New connections one address may open at once beyond --max-connection-rate-per-ip
    /// [default: the rate].
    #[arg(long, value_name = "N", requires = "max_connection_rate_per_ip")]
    connection_rate_burst: Option<u32>,
    /// Messages per second one connection may send; more are dropped, and one that keeps
    /// sending ten times as many is closed (1008) [default: no limit].
    #[arg(long, value_name = "N")]
    max_publish_rate: Option<u32>,
    /// Messages a connection may send at once beyond --max-publish-rate [default: the rate].
    #[arg(long, value_name = "N", requires = "max_publish_rate")]
    publish_burst: Option<u32>,
    /// Largest HTTP request head in bytes; larger ones get 431.
    #[arg(long, default_value_t = 8 * 1024, value_name = "BYTES")]
    max_request_head: usize,
    /// Most header lines in a request head (1-128); more get 431.
    #[arg(long, default_value_t = 64, value_name = "N")]
    max_headers: usize,
    /// Seconds a client has to send its request head.
    #[arg(long, default_value_t = 10.0, value_name = "SECONDS")]
    handshake_timeout: f64,
    /// Seconds between server pings on a quiet WebSocket (0 disables pings).
    #[arg(long, default_value_t = 30.0, value_name = "SECONDS")]
    ping_interval: f64,
    /// Seconds a client has to send anything after a ping before it is dropped.
    #[arg(long, default_value_t = 10.0, value_name = "SECONDS")]
    pong_timeout: f64,
    /// Close (1000) a WebSocket that sends no message for this many seconds [default: never].
    #[arg(long, value_name = "SECONDS")]
    idle_timeout: Option<f64>,
    /// Seconds a closing connection has to finish the close handshake.
    #[arg(long, default_value_t = 5.0, value_name = "SECONDS")]
    close_timeout: f64,
    /// Seconds a shutdown waits for clients to finish closing before exiting anyway.
    #[arg(long, default_value_t = 5.0, value_name = "SECONDS")]
    drain_timeout: f64,
    /// Broadcasts to big rooms (64+ members on a shard) leave at most once per this many
    /// microseconds, coalescing messages into fewer writes per socket (0: every loop turn).
    #[arg(long, default_value_t = 10_000, value_name = "MICROSECONDS")]
    coalesce_us: u64,
    /// When big-room broadcasts wait for the coalescing window: adaptive (only while writing
    /// every delivery at once would take a quarter of a shard's time) or fixed (always).
    #[arg(long, value_enum, default_value_t = CoalesceRuleArg::Adaptive, value_name = "RULE")]
    coalesce_rule: CoalesceRuleArg,
    /// Messages each room keeps for history and resume; 0 turns room offsets, history and the
    /// one order per room off (each sender's order still holds).
    #[arg(long, default_value_t = 100, value_name = "N")]
    history_size: usize,
    /// Seconds a room's history outlives its last message (or its last member's leave).
    #[arg(long, default_value_t = 300.0, value_name = "SECONDS")]
    history_ttl: f64,
    /// Bytes all rooms' histories may hold together; least recently used rooms give way first.
    #[arg(long, default_value_t = 64 * 1024 * 1024, value_name = "BYTES")]
    history_memory: usize,
    /// Origin allowed to open a WebSocket (repeatable; exact, or *) [default: any origin].
    #[arg(long = "allowed-origin", value_name = "ORIGIN")]
    allowed_origins: Vec<String>,
    /// PEM certificate chain: serve HTTPS and wss (needs --tls-key).
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// PEM private key for --tls-cert.
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Join a cluster through this Redis server (e.g. redis://127.0.0.1:6379): rooms span
    /// every node using the same Redis [default: run alone].
    #[arg(long, value_name = "URL")]
    redis: Option<String>,
    /// This node's name in the cluster (1-32 of A-Z a-z 0-9 - _), its own: the id of a live
    /// node is refused [default: random, logged].
    #[arg(long, value_name = "ID", requires = "redis")]
    node_id: Option<String>,
    /// Serve the server API (docs/api.md) only on this address, a private one, and not
    /// under /api/ on the main port [default: under /api/ on the main port, when a key is set].
    #[arg(long, value_name = "ADDR", value_parser = listen_address)]
    api_listen: Option<SocketAddr>,
    /// File holding the server API's key (or set SHARDCAST_API_KEY); without a key the API is
    /// off and /api/ is 404.
    #[arg(long, value_name = "FILE")]
    api_key_file: Option<PathBuf>,
    /// Send no join/leave notices to shardcast.v1 clients (for large broadcast rooms); online
    /// counts are still kept.
    #[arg(long)]
    no_presence: bool,
    /// Signed connection tokens (docs/auth.md): off (everyone is anonymous), optional (a
    /// token is checked when one comes) or required (no valid token, no WebSocket: 401).
    #[arg(long, value_enum, default_value_t = AuthArg::Off)]
    auth: AuthArg,
    /// File with the HS256 secret tokens are signed with (at least 32 bytes).
    #[arg(long, value_name = "FILE", conflicts_with = "token_public_key")]
    token_secret_file: Option<PathBuf>,
    /// PEM public key tokens are checked with; its type picks the algorithm: RSA (RS256),
    /// P-256 (ES256), P-384 (ES384) or Ed25519 (EdDSA).
    #[arg(long, value_name = "FILE")]
    token_public_key: Option<PathBuf>,
    /// Log level (error, warn, info, debug, trace); RUST_LOG overrides it.
    #[arg(long, default_value = "info")]
    log_level: String,
    /// Log line format: `text`, or `json` (one object per line with time, level, target and
    /// fields).
    #[arg(long, value_enum, default_value = "text")]
    log_format: LogFormatArg,
}

/// `--log-format` values.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum LogFormatArg {
    Text,
    Json,
}

impl From<LogFormatArg> for LogFormat {
    fn from(format: LogFormatArg) -> Self {
        match format {
            LogFormatArg::Text => LogFormat::Text,
            LogFormatArg::Json => LogFormat::Json,
        }
    }
}

/// `--auth` values.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum AuthArg {
    Off,
    Optional,
    Required,
}

impl From<AuthArg> for AuthMode {
    fn from(mode: AuthArg) -> AuthMode {
        match mode {
            AuthArg::Off => AuthMode::Off,
            AuthArg::Optional => AuthMode::Optional,
            AuthArg::Required => AuthMode::Required,
        }
    }
}

/// `--coalesce-rule` values.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum CoalesceRuleArg {
    Adaptive,
    Fixed,
}

impl From<CoalesceRuleArg> for CoalesceRule {
    fn from(rule: CoalesceRuleArg) -> CoalesceRule {
        match rule {
            CoalesceRuleArg::Adaptive => CoalesceRule::Adaptive,
            CoalesceRuleArg::Fixed => CoalesceRule::Fixed,
        }
    }
}

/// `--model` values.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum ModelArg {
    Sharded,
    Shared,
    Single,
}

impl From<ModelArg> for Model {
    fn from(m: ModelArg) -> Model {
        match m {
            ModelArg::Sharded => Model::Sharded,
            ModelArg::Shared => Model::Shared,
            ModelArg::Single => Model::Single,
        }
    }
}

impl ServerArgs {
    fn into_config(self) -> anyhow::Result<Config> {
        let defaults = Config::default();
        let ping_interval = self.ping_interval;
        Ok(Config {
            listen: self.listen,
            model: self.model.into(),
            // The single model has one thread; only an explicit --workers is worth a note.
            workers: match (self.workers, self.model) {
                (Some(n), _) => n,
                (None, ModelArg::Single) => 1,
                (None, _) => defaults.workers,
            },
            pin: !self.no_pin,
            static_dir: self.static_dir,
            max_message: self.max_message,
            max_buffered: self.max_buffered,
            socket_send_buffer: self.socket_send_buffer,
            max_connections: self.max_connections.unwrap_or_else(default_max_connections),
            max_connections_per_ip: self.max_connections_per_ip,
            max_connection_rate_per_ip: self
                .max_connection_rate_per_ip
                .map(|n| Rate::new(n, self.connection_rate_burst)),
            max_publish_rate: self
                .max_publish_rate
                .map(|n| Rate::new(n, self.publish_burst)),
            max_request_head: self.max_request_head,
            max_headers: self.max_headers,
            handshake_timeout: seconds(self.handshake_timeout, "--handshake-timeout")?,
            ping_interval: if ping_interval == 0.0 {
                None
            } else {
                Some(seconds(ping_interval, "--ping-interval")?)
            },
            pong_timeout: seconds(self.pong_timeout, "--pong-timeout")?,
            idle_timeout: self
                .idle_timeout
                .map(|s| seconds(s, "--idle-timeout"))
                .transpose()?,
            close_timeout: seconds(self.close_timeout, "--close-timeout")?,
            drain_timeout: seconds(self.drain_timeout, "--drain-timeout")?,
            allowed_origins: self.allowed_origins,
            coalesce: Duration::from_micros(self.coalesce_us),
            coalesce_rule: self.coalesce_rule.into(),
            history_size: self.history_size,
            history_ttl: seconds(self.history_ttl, "--history-ttl")?,
            history_memory: self.history_memory,
            presence: !self.no_presence,
            node_id: match (&self.redis, self.node_id) {
                (Some(_), None) => Some(shardcast::cluster::random_node_id()),
                (_, id) => id,
            },
            redis: self.redis,
            api_key: api_key(self.api_key_file.as_deref())?,
            api_listen: self.api_listen,
            tls: match (self.tls_cert, self.tls_key) {
                (Some(cert), Some(key)) => Some(TlsFiles { cert, key }),
                _ => None,
            },
            auth: self.auth.into(),
            token_key: match (self.token_secret_file, self.token_public_key) {
                (Some(secret), _) => Some(TokenKeyFile::Secret(secret)),
                (None, Some(public)) => Some(TokenKeyFile::PublicKey(public)),
                (None, None) => None,
            },
            ..defaults
        })
    }
}

/// The server API's key: from `--api-key-file`, or `SHARDCAST_API_KEY` (never a flag's value,
/// which any user could read in the process list). Both at once is refused.
fn api_key(file: Option<&std::path::Path>) -> anyhow::Result<Option<ApiKey>> {
    let from_env = std::env::var_os(API_KEY_ENV);
    let text = match (file, from_env) {
        (Some(_), Some(_)) => {
            anyhow::bail!("give the API key once: --api-key-file or {API_KEY_ENV}, not both")
        }
        (Some(path), None) => std::fs::read_to_string(path)
            .with_context(|| format!("cannot read --api-key-file {}", path.display()))?,
        (None, Some(value)) => value
            .into_string()
            .map_err(|_| anyhow::anyhow!("{API_KEY_ENV} is not UTF-8"))?,
        (None, None) => return Ok(None),
    };
    ApiKey::new(&text)
        .map(Some)
        .with_context(|| "the API key is empty".to_string())
}

/// The environment variable that may hold the server API's key.
const API_KEY_ENV: &str = "SHARDCAST_API_KEY";

fn seconds(value: f64, flag: &str) -> anyhow::Result<Duration> {
    Duration::try_from_secs_f64(value)
        .ok()
        .filter(|d| !d.is_zero())
        .with_context(|| format!("{flag} must be a positive number of seconds, got {value}"))
}

/// Connect to a WebSocket server: chat in a room, pipe lines through it, or explore it.
///
/// With --nick and a URL: chat mode. The client speaks shardcast.v1 and joins as NICK; typed
/// lines are sent as messages and the room is shown as `ann: hello`, `* bob joined, 3
/// online`, ... Commands start with `/` (/help, /quit); `//` sends a leading `/`. In a
/// terminal it is a prompt; with stdin or stdout redirected, stdin lines are typed lines and
/// stdout gets one rendered line per message (progress notes on stderr).
///
/// With a URL and no --nick (or with --raw): raw pipe mode, like websocat: each stdin line is
/// sent as a message and each message received is printed as it came (v1 envelopes as JSON).
///
/// Without URL: interactive mode, a prompt driving several connections at once (/connect,
/// /send, /close, /show, /list, /help, /quit; a line without `/` goes to the last connection).
///
/// A run exits when input ends (after a clean close) or the server closes, and with status 1
/// when the connection fails (or, with --reconnect --max-retries N, when retries run out).
#[derive(Debug, clap::Args)]
struct ClientArgs {
    /// ws:// or wss:// URL of a room, e.g. ws://127.0.0.1:8080/general.
    url: Option<String>,
    /// Chat as NICK: speak shardcast.v1, send hello with this nickname (again on every
    /// reconnection), send lines as messages and show the room as lines for people.
    #[arg(long, requires = "url", conflicts_with = "subprotocol")]
    nick: Option<String>,
    /// With --nick: the room's last N messages when joining, shown as `[history] ann: ...`.
    #[arg(long, value_name = "N", requires = "nick")]
    history: Option<u32>,
    /// Print messages as they come (shardcast.v1 envelopes as JSON) and send stdin lines as
    /// they are; with --nick the client still sends the hello.
    #[arg(long, requires = "url")]
    raw: bool,
    /// Extra request header, e.g. 'Authorization: Bearer x' (repeatable).
    #[arg(long = "header", short = 'H', value_name = "NAME: VALUE")]
    headers: Vec<String>,
    /// Origin header to send.
    #[arg(long)]
    origin: Option<String>,
    /// Subprotocol to ask for (Sec-WebSocket-Protocol); the server must accept it. --nick
    /// asks for shardcast.v1 itself.
    #[arg(long, value_name = "PROTOCOL")]
    subprotocol: Option<String>,
    /// Also trust the certificates in this PEM file for wss (a CA or a self-signed server
    /// certificate; repeatable). Mozilla's roots are always trusted.
    #[arg(long = "ca", value_name = "FILE")]
    ca_files: Vec<PathBuf>,
    /// Accept any wss server certificate. For testing only.
    #[arg(long, short = 'k', conflicts_with = "ca_files")]
    insecure: bool,
    /// Seconds each step of connecting (TCP, TLS, HTTP upgrade) may take.
    #[arg(long, default_value_t = 10.0, value_name = "SECONDS")]
    connect_timeout: f64,
    /// Send a ping this often; a server silent until the next one counts as dropped.
    #[arg(long, value_name = "SECONDS")]
    ping_interval: Option<f64>,
    /// Raw pipe mode: send lines as binary messages instead of text.
    #[arg(long, requires = "url", conflicts_with = "nick")]
    binary: bool,
    /// Reconnect after a failure or drop, for as long as it takes (see --max-retries), with
    /// exponential backoff and jitter (0.5 s doubling to at most 30 s). Speaking shardcast.v1
    /// (--nick, or --subprotocol shardcast.v1) it resumes the room (`since`): no message
    /// printed twice, and a "some messages may be missing" line if the server could not
    /// resume (after a restart).
    #[arg(long, requires = "url")]
    reconnect: bool,
    /// Give up after N reconnection attempts in a row (default: never).
    #[arg(long, value_name = "N", requires = "reconnect")]
    max_retries: Option<u32>,
    /// Log level (error, warn, info, debug, trace); RUST_LOG overrides it.
    #[arg(long, default_value = "warn")]
    log_level: String,
}

impl ClientArgs {
    fn run(self) -> anyhow::Result<()> {
        let trust = if self.insecure {
            client::Trust::Insecure
        } else {
            client::Trust::Verify {
                extra_roots: self.ca_files,
            }
        };
        let options = client::ConnectOptions {
            headers: self
                .headers
                .iter()
                .map(|h| h.parse())
                .collect::<Result<_, _>>()?,
            origin: self.origin,
            subprotocol: self.subprotocol,
            tls: client::tls::client_config(&trust)?,
            connect_timeout: seconds(self.connect_timeout, "--connect-timeout")?,
        };
        let link = client::LinkSettings {
            ping_interval: self
                .ping_interval
                .map(|s| seconds(s, "--ping-interval"))
                .transpose()?,
            ..client::LinkSettings::default()
        };
        match self.url {
            None => client::interactive::run(options, link)?,
            Some(url) => {
                let target = client::Target::parse(&url)?;
                let pipe = client::PipeOptions {
                    binary: self.binary,
                    reconnect: self.reconnect.then_some(match self.max_retries {
                        Some(n) => client::Retries::AtMost(n),
                        None => client::Retries::Forever,
                    }),
                    nick: self.nick,
                    history: self.history,
                    raw: self.raw,
                };
                client::pipe::run(&target, &options, link, pipe)?;
            }
        }
        Ok(())
    }
}

/// A listening address as people write it: `IP:PORT`, `HOST:PORT` (the first IPv4 address
/// the name resolves to, else the first), or a bare `PORT` on 127.0.0.1, like the default.
fn listen_address(text: &str) -> Result<SocketAddr, String> {
    if let Ok(addr) = text.parse::<SocketAddr>() {
        return Ok(addr);
    }
    if let Ok(port) = text.parse::<u16>() {
        return Ok(SocketAddr::from(([127, 0, 0, 1], port)));
    }
    let usage = "use PORT, IP:PORT or HOST:PORT (e.g. 8080, 0.0.0.0:8080, localhost:8080)";
    if !text.contains(':') {
        return Err(format!("no port in {text:?}: {usage}"));
    }
    let found: Vec<SocketAddr> = std::net::ToSocketAddrs::to_socket_addrs(text)
        .map_err(|e| format!("cannot resolve {text:?} ({e}): {usage}"))?
        .collect();
    found
        .iter()
        .find(|a| a.is_ipv4())
        .or(found.first())
        .copied()
        .ok_or_else(|| format!("{text:?} resolves to no address: {usage}"))
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let (log_level, format, prefix) = match &cli.command {
        None => (
            cli.server.log_level.as_str(),
            cli.server.log_format.into(),
            "shardcast",
        ),
        Some(Subcommand::Client(args)) => {
            (args.log_level.as_str(), LogFormat::Text, "shardcast client")
        }
    };
    logging::init(log_level, format);
    let outcome = match cli.command {
        None => run(cli.server),
        Some(Subcommand::Client(args)) => args.run(),
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{prefix}: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: ServerArgs) -> anyhow::Result<()> {
    // Before the config: the default connection limit is sized from the raised limit.
    match raise_fd_limit() {
        Some(limit) => tracing::debug!("descriptor limit (RLIMIT_NOFILE): {limit}"),
        None => tracing::warn!("cannot read the descriptor limit"),
    }
    let config = cli.into_config()?;
    let mut signals = Signals::new([SIGINT, SIGTERM]).context("cannot install signal handlers")?;
    let server = Server::start(config).context("cannot start")?;
    // Tests and scripts read the bound address (useful with port 0) from this line.
    println!("listening on {}", server.local_addr());
    if let Some(addr) = server.api_addr() {
        // The second line, with --api-listen (port 0 picks a free port).
        println!("api listening on {addr}");
    }
    let stop = server.shutdown_handle();
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            if let Some(signal) = signals.forever().next() {
                tracing::info!("signal {signal}: shutting down (a second signal exits at once)");
                stop.shutdown();
            }
            if let Some(signal) = signals.forever().next() {
                tracing::warn!("signal {signal} again: exiting now");
                std::process::exit(1);
            }
        })
        .context("cannot start the signal thread")?;
    server.wait()?;
    tracing::info!("shardcast stopped");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listen_addresses_are_read_as_people_write_them() {
        let at = |text: &str| listen_address(text).map(|a| a.to_string());
        assert_eq!(at("9605").as_deref(), Ok("127.0.0.1:9605"));
        assert_eq!(at("0.0.0.0:9605").as_deref(), Ok("0.0.0.0:9605"));
        assert_eq!(at("[::1]:9605").as_deref(), Ok("[::1]:9605"));
        let local = listen_address("localhost:9605").unwrap();
        assert!(local.ip().is_loopback() && local.port() == 9605, "{local}");
        assert!(at("localhost").unwrap_err().contains("no port"));
        assert!(at("99999").is_err());
    }
}
