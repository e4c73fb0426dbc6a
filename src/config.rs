//! Validated server configuration.
//!
//! Every capacity and deadline the server enforces is a field here, with its default and the
//! reason for it. The CLI (`src/main.rs`) builds a [`Config`]; the library never reads
//! arguments or the environment itself.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use crate::error::ConfigError;
use crate::limits::Rate;

/// How the server spreads work over threads (compare them with the load generator).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Model {
    /// One thread and one event loop do everything, accepting included (`--workers` is
    /// ignored): Beast's chat server on one `io_context` and one thread.
    Single,
    /// N threads over one registry of rooms and sessions guarded by locks; the thread that
    /// reads a message writes it to every member itself: Beast's `chat-multi`.
    Shared,
    /// An acceptor and N shards that share nothing and pass messages: the default.
    #[default]
    Sharded,
}

/// When big-room output waits for the coalescing window (`src/shard/coalesce.rs`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CoalesceRule {
    /// Only while writing every delivery at once would take a quarter of the thread's time.
    #[default]
    Adaptive,
    /// Always (the rule before adaptive coalescing; kept for comparison).
    Fixed,
}

/// Whether WebSocket upgrades carry signed connection tokens (docs/auth.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AuthMode {
    /// Tokens are ignored: every client is anonymous (the default, the demo mode).
    #[default]
    Off,
    /// A token is checked when a client brings one; a client without one is anonymous.
    Optional,
    /// Every client needs a valid token (a `shardcast.v1` client may bring it in its `hello`).
    Required,
}

/// Where the key that checks token signatures comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenKeyFile {
    /// A shared secret (HS256): the file's bytes, less trailing line ends.
    Secret(PathBuf),
    /// A PEM public key: RSA (RS256), P-256 (ES256), P-384 (ES384) or Ed25519 (EdDSA).
    PublicKey(PathBuf),
}

/// Everything the server needs to run.
#[derive(Debug, Clone)]
pub struct Config {
    /// Address the listener binds (default `127.0.0.1:8080`).
    pub listen: SocketAddr,
    /// The threading model (default: sharded).
    pub model: Model,
    /// Number of shards (worker threads); default: one per available core.
    pub workers: usize,
    /// Pin shard `k` to core `k` (default on). Off is useful when sharing the machine.
    pub pin: bool,
    /// Serve the chat page and assets from this folder instead of the embedded copy.
    pub static_dir: Option<PathBuf>,
    /// Largest WebSocket message (after reassembly) a client may send; larger ones are
    /// answered with close code 1009. Default 64 KiB: chat-sized.
    pub max_message: usize,
    /// Largest number of bytes that may wait in one session's outbound queue. A session that
    /// exceeds it is a slow consumer and is closed (code 1008). Default 1 MiB.
    pub max_buffered: usize,
    /// `SO_SNDBUF` of accepted sockets (`--socket-send-buffer`; the kernel doubles it for its
    /// bookkeeping and stops autotuning it). `None`: the kernel's autotuning, up to
    /// `net.ipv4.tcp_wmem`'s maximum. It bounds the kernel memory a stalled reader can pin
    /// besides `max_buffered` in the server.
    pub socket_send_buffer: Option<usize>,
    /// Largest HTTP request head (request line + headers); larger heads get 431. Default 8 KiB.
    pub max_request_head: usize,
    /// Most header lines in one request head; more get 431. Default 64.
    pub max_headers: usize,
    /// Time a client has to send a complete request head. Default 10 s.
    pub handshake_timeout: Duration,
    /// Time a closing session has to finish the close handshake (or drain after an HTTP
    /// error) before its TCP connection is dropped. Default 5 s.
    pub close_timeout: Duration,
    /// Interval between server pings on an open WebSocket; `None` disables pings. Default 30 s.
    pub ping_interval: Option<Duration>,
    /// After a ping, the time the peer has to send anything (a pong or any frame) before the
    /// connection is dropped as dead. Default 10 s.
    pub pong_timeout: Duration,
    /// Close (1000 "idle timeout") a WebSocket that has sent no message for this long; `None`
    /// (the default) never does. Pongs keep a connection alive but do not count as messages.
    pub idle_timeout: Option<Duration>,
    /// On shutdown, the time sessions have to finish their close handshakes before the
    /// process exits anyway. Default 5 s.
    pub drain_timeout: Duration,
    /// Most open WebSocket sessions over all shards; further upgrades get 503. Default: sized
    /// from the descriptor limit (see [`default_max_connections`]).
    pub max_connections: usize,
    /// Most connections from one IP address at once; further ones are refused with 503 at
    /// accept. `None` (the default): no per-address limit.
    pub max_connections_per_ip: Option<usize>,
    /// Most new connections per second from one address, on average, and how many more may
    /// come at once (`--max-connection-rate-per-ip`, `--connection-rate-burst`); further ones
    /// are refused with 429 and `Retry-After` at accept. `None` (the default): no limit.
    /// Checked once per accepted connection, by the accepting thread alone.
    pub max_connection_rate_per_ip: Option<Rate>,
    /// Most data messages one connection may send per second, on average, and how many more
    /// at once (`--max-publish-rate`, `--publish-burst`). The excess is dropped (a
    /// `shardcast.v1` client gets a `rate_limited` error for each); a connection that keeps
    /// sending at more than ten times the rate is closed with 1008 "rate limit"
    /// (`limits::PublishMeter`). `None` (the default): no limit, and one branch per message.
    pub max_publish_rate: Option<Rate>,
    /// Origins allowed to upgrade (exact, case-insensitive, e.g. `https://chat.example`), or
    /// `*`. Empty (the default): any origin. Requests without `Origin` (non-browser clients)
    /// are always allowed: the check exists to stop other sites' pages, and browsers always
    /// send it.
    pub allowed_origins: Vec<String>,
    /// PEM certificate chain and private key: serve HTTPS and wss instead of plain text.
    pub tls: Option<TlsFiles>,
    /// Coalescing window for big-room broadcasts: when the output waiting on a shard comes from
    /// broadcasts reaching 64 or more of its members on average, the shard flushes at most
    /// once per window, so that several broadcasts leave in one `writev` per socket. Output for
    /// smaller rooms is never delayed. Zero flushes at the end of every loop turn. Default
    /// 10 ms: it only delays a flush when big-room broadcasts come faster than that, and there
    /// it cut the CPU per delivery by a quarter and the p99 latency by a third
    /// (docs/benchmarks.md).
    pub coalesce: Duration,
    /// When big-room output waits for the window: only while writing every delivery at once
    /// would take a quarter of the thread (adaptive, the default), or always (fixed).
    pub coalesce_rule: CoalesceRule,
    /// Capacity of each shard's inbox for broadcasts from other shards. Default 16384.
    pub mesh_capacity: usize,
    /// Most messages one session may have processed per loop turn, so that one chatty peer
    /// cannot starve the others on its shard. Default 64.
    pub messages_per_turn: usize,
    /// Send `join`/`leave` notices to v1 members (docs/protocol.md). Off (`--no-presence`)
    /// for large broadcast rooms, where every arrival would cost a frame to each v1 member;
    /// online counts are kept either way.
    pub presence: bool,
    /// This node's name in a cluster (`--node-id`): it prefixes session ids, so that they stay
    /// unique across nodes. `None` when running alone.
    pub node_id: Option<String>,
    /// The Redis server that makes this node a cluster member (`--redis`); `None` runs alone.
    pub redis: Option<String>,
    /// Messages each room keeps for history and resume (`--history-size`). Zero turns room
    /// offsets, history and the one order per room off (docs/architecture.md). Default 100.
    pub history_size: usize,
    /// How long a room's history outlives its last message (`--history-ttl`). Default 300 s.
    pub history_ttl: Duration,
    /// Bytes all rooms' histories may hold together (`--history-memory`); the least recently
    /// used give way past it. Default 64 MiB.
    pub history_memory: usize,
    /// The server API's key (`--api-key-file` or `SHARDCAST_API_KEY`); `None` (the default):
    /// no API, `/api/` is 404 (docs/api.md).
    pub api_key: Option<ApiKey>,
    /// Serve the API only on this address (`--api-listen`, a private one), not under `/api/`
    /// on the main port. `None` (the default): under `/api/` on the main port.
    pub api_listen: Option<SocketAddr>,
    /// Whether upgrades carry signed tokens (`--auth`, docs/auth.md). Default off.
    pub auth: AuthMode,
    /// The key tokens are checked with (`--token-secret-file`, `--token-public-key`);
    /// needed, and only allowed, when `auth` is not off. Loaded once, at startup.
    pub token_key: Option<TokenKeyFile>,
}

impl Config {
    /// Whether rooms number their messages, keep history and have one order.
    pub fn history_on(&self) -> bool {
        self.history_size > 0
    }

    /// Whether `/api/` is served on the main port (a key, and no `--api-listen`).
    pub fn api_on_main_port(&self) -> bool {
        self.api_key.is_some() && self.api_listen.is_none()
    }
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            model: Model::Sharded,
            workers: default_workers(),
            pin: true,
            static_dir: None,
            max_message: 64 * 1024,
            max_buffered: 1024 * 1024,
            socket_send_buffer: None,
            max_request_head: 8 * 1024,
            max_headers: 64,
            handshake_timeout: Duration::from_secs(10),
            close_timeout: Duration::from_secs(5),
            ping_interval: Some(Duration::from_secs(30)),
            pong_timeout: Duration::from_secs(10),
            idle_timeout: None,
            drain_timeout: Duration::from_secs(5),
            max_connections: default_max_connections(),
            max_connections_per_ip: None,
            max_connection_rate_per_ip: None,
            max_publish_rate: None,
            allowed_origins: Vec::new(),
            tls: None,
            coalesce: Duration::from_millis(10),
            coalesce_rule: CoalesceRule::default(),
            mesh_capacity: 16 * 1024,
            messages_per_turn: 64,
            presence: true,
            node_id: None,
            redis: None,
            history_size: 100,
            history_ttl: Duration::from_secs(300),
            history_memory: 64 * 1024 * 1024,
            api_key: None,
            api_listen: None,
            auth: AuthMode::Off,
            token_key: None,
        }
    }
}

/// The server API's secret key. Its `Debug` never shows it (configurations get logged).
#[derive(Clone, PartialEq, Eq)]
pub struct ApiKey(String);

impl ApiKey {
    /// The key, trimmed of surrounding white space (a key file's last newline); `None` when
    /// nothing is left.
    pub fn new(text: &str) -> Option<ApiKey> {
        let key = text.trim();
        (!key.is_empty()).then(|| ApiKey(key.to_owned()))
    }

    /// The key's bytes, for the constant-time comparison.
    pub fn as_bytes(&self) -> &[u8] {
        self.0.as_bytes()
    }
}

impl std::fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ApiKey(<redacted>)")
    }
}

/// Certificate and key files for TLS.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    /// PEM file with the certificate chain, leaf first.
    pub cert: PathBuf,
    /// PEM file with the private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
}

/// The highest `--max-publish-rate` and `--max-connection-rate-per-ip` (per second): beyond
/// it a limit limits nothing.
pub const MAX_RATE: u32 = 100_000;

/// The largest burst of either rate.
pub const MAX_BURST: u32 = 1_000_000;

/// Descriptors kept back from `max_connections` for the listener, the polls, wakers, log
/// and static files, and connections that are still in their HTTP phase.
const RESERVED_DESCRIPTORS: usize = 256;

/// The descriptor limit (soft `RLIMIT_NOFILE`, after [`raise_fd_limit`]) less a reserve.
pub fn default_max_connections() -> usize {
    let soft = fd_limits().map_or(1024, |(soft, _)| soft);
    usize::try_from(soft)
        .unwrap_or(usize::MAX)
        .saturating_sub(RESERVED_DESCRIPTORS)
        .max(1)
}

fn fd_limits() -> Option<(libc::rlim_t, libc::rlim_t)> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct we own and reads nothing else.
    let ok = unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } == 0;
    ok.then_some((lim.rlim_cur, lim.rlim_max))
}

/// Raises the soft descriptor limit to the hard limit (a server holding many sockets needs it;
/// the default soft limit of 1024 is for interactive shells). Returns the limit now in force.
pub fn raise_fd_limit() -> Option<u64> {
    let (soft, hard) = fd_limits()?;
    if soft < hard {
        let lim = libc::rlimit {
            rlim_cur: hard as libc::rlim_t,
            rlim_max: hard as libc::rlim_t,
        };
        // SAFETY: setrlimit only reads the struct we pass.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lim) } != 0 {
            return Some(soft);
        }
    }
    fd_limits().map(|(soft, _)| soft)
}

/// One shard per core the process may run on.
pub fn default_workers() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

impl Config {
    /// Checks the relations between fields that the types cannot express.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.workers == 0 || self.workers > 1024 {
            return Err(ConfigError::Workers(self.workers));
        }
        if self.max_message == 0 {
            return Err(ConfigError::Zero("max-message"));
        }
        if self.max_buffered == 0 {
            return Err(ConfigError::Zero("max-buffered"));
        }
        // A queue that cannot hold one largest message would cut off every member of a room
        // the moment anyone sent one.
        if self.max_buffered < self.max_message + 14 {
            return Err(ConfigError::BufferBelowMessage {
                max_buffered: self.max_buffered,
                max_message: self.max_message,
            });
        }
        if self.max_request_head < 256 {
            return Err(ConfigError::TooSmall("max-request-head", 256));
        }
        if !(1..=128).contains(&self.max_headers) {
            return Err(ConfigError::Range("max-headers", 1, 128));
        }
        if self.messages_per_turn == 0 {
            return Err(ConfigError::Zero("messages-per-turn"));
        }
        if self.max_connections == 0 {
            return Err(ConfigError::Zero("max-connections"));
        }
        if self.max_connections_per_ip == Some(0) {
            return Err(ConfigError::Zero("max-connections-per-ip"));
        }
        for (rate, flag, burst_flag) in [
            (
                self.max_connection_rate_per_ip,
                "max-connection-rate-per-ip",
                "connection-rate-burst",
            ),
            (self.max_publish_rate, "max-publish-rate", "publish-burst"),
        ] {
            // The buckets count in f32, exact for whole tokens up to 2^24: these bounds keep
            // the largest (the flood bucket, 50 x the rate) well under it.
            if let Some(rate) = rate {
                if !(1..=MAX_RATE).contains(&rate.per_second) {
                    return Err(ConfigError::Range(flag, 1, MAX_RATE as usize));
                }
                if rate.burst > MAX_BURST {
                    return Err(ConfigError::Range(burst_flag, 0, MAX_BURST as usize));
                }
            }
        }
        if self.mesh_capacity == 0 {
            return Err(ConfigError::Zero("mesh-capacity"));
        }
        if let Some(dir) = &self.static_dir
            && !dir.is_dir()
        {
            return Err(ConfigError::StaticDir(dir.clone()));
        }
        if self.api_listen.is_some() && self.api_key.is_none() {
            return Err(ConfigError::ApiListenWithoutKey);
        }
        if let Some(id) = &self.node_id
            && !crate::ids::valid_node_id(id)
        {
            return Err(ConfigError::NodeId(id.clone()));
        }
        match (self.auth, &self.token_key) {
            (AuthMode::Off, Some(_)) => return Err(ConfigError::TokenKeyWithoutAuth),
            (AuthMode::Optional | AuthMode::Required, None) => {
                return Err(ConfigError::AuthWithoutKey);
            }
            _ => {}
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_must_be_positive_and_bounded() {
        let with = |rate| Config {
            max_publish_rate: Some(rate),
            ..Config::default()
        };
        assert!(with(Rate::new(1, Some(0))).validate().is_ok());
        assert!(
            with(Rate::new(MAX_RATE, Some(MAX_BURST)))
                .validate()
                .is_ok()
        );
        for bad in [Rate::new(0, None), Rate::new(MAX_RATE + 1, None)] {
            assert!(matches!(
                with(bad).validate(),
                Err(ConfigError::Range("max-publish-rate", ..))
            ));
        }
        let config = Config {
            max_connection_rate_per_ip: Some(Rate::new(1, Some(MAX_BURST + 1))),
            ..Config::default()
        };
        assert!(matches!(
            config.validate(),
            Err(ConfigError::Range("connection-rate-burst", ..))
        ));
    }
}
