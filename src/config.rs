//! Validated server configuration.
//!
//! Every capacity and deadline the server enforces is a field here, with its default and the
//! reason for it. The CLI (`src/main.rs`) builds a [`Config`]; the library never reads
//! arguments or the environment itself.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use crate::error::ConfigError;

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
            allowed_origins: Vec::new(),
            tls: None,
            coalesce: Duration::from_millis(10),
            mesh_capacity: 16 * 1024,
            messages_per_turn: 64,
            presence: true,
            node_id: None,
            redis: None,
            history_size: 100,
            history_ttl: Duration::from_secs(300),
            history_memory: 64 * 1024 * 1024,
            auth: AuthMode::Off,
            token_key: None,
        }
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
        if self.mesh_capacity == 0 {
            return Err(ConfigError::Zero("mesh-capacity"));
        }
        if let Some(dir) = &self.static_dir
            && !dir.is_dir()
        {
            return Err(ConfigError::StaticDir(dir.clone()));
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
