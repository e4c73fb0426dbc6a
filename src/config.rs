//! Validated server configuration.
//!
//! Every capacity and deadline the server enforces is a field here, with its default and the
//! reason for it. The CLI (`src/main.rs`) builds a [`Config`]; the library never reads
//! arguments or the environment itself.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use crate::error::ConfigError;

/// Everything the server needs to run.
#[derive(Debug, Clone)]
pub struct Config {
    /// Address the listener binds (default `127.0.0.1:8080`).
    pub listen: SocketAddr,
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
    /// Capacity of each shard's inbox for broadcasts from other shards. Default 16384.
    pub mesh_capacity: usize,
    /// Most messages one session may have processed per loop turn, so that one chatty peer
    /// cannot starve the others on its shard. Default 64.
    pub messages_per_turn: usize,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            workers: default_workers(),
            pin: true,
            static_dir: None,
            max_message: 64 * 1024,
            max_buffered: 1024 * 1024,
            max_request_head: 8 * 1024,
            max_headers: 64,
            handshake_timeout: Duration::from_secs(10),
            close_timeout: Duration::from_secs(5),
            mesh_capacity: 16 * 1024,
            messages_per_turn: 64,
        }
    }
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
        if self.mesh_capacity == 0 {
            return Err(ConfigError::Zero("mesh-capacity"));
        }
        if let Some(dir) = &self.static_dir
            && !dir.is_dir()
        {
            return Err(ConfigError::StaticDir(dir.clone()));
        }
        Ok(())
    }
}
