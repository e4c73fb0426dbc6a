//! Errors that stop the server from starting or running.
//!
//! Per-session failures never become one of these: a session's problems end that session
//! (see `session::CloseReason`) and never escape its shard.

use std::io;
use std::path::PathBuf;

/// A configuration that cannot work.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The worker count is outside 1..=1024.
    #[error("--workers must be between 1 and 1024, got {0}")]
    Workers(usize),
    /// A limit that must be positive is zero.
    #[error("--{0} must be greater than zero")]
    Zero(&'static str),
    /// A limit is below the smallest useful value.
    #[error("--{0} must be at least {1}")]
    TooSmall(&'static str, usize),
    /// A limit is outside its range.
    #[error("--{0} must be between {1} and {2}")]
    Range(&'static str, usize, usize),
    /// `--max-buffered` cannot hold one message of `--max-message` bytes.
    #[error(
        "--max-buffered ({max_buffered}) must exceed --max-message ({max_message}) by at least \
         14 bytes (one frame header)"
    )]
    BufferBelowMessage {
        /// The queue bound asked for.
        max_buffered: usize,
        /// The message bound asked for.
        max_message: usize,
    },
    /// `--static-dir` does not name a folder.
    #[error("--static-dir {0:?} is not a directory")]
    StaticDir(PathBuf),
    /// `--node-id` breaks the rule.
    #[error("--node-id must be 1-32 of A-Z a-z 0-9 - _, got {0:?}")]
    NodeId(String),
    /// `--api-listen` without a key: the API would refuse every request.
    #[error("--api-listen needs a key: --api-key-file FILE or SHARDCAST_API_KEY")]
    ApiListenWithoutKey,
    /// `--auth optional|required` without a key to check tokens with.
    #[error("--auth optional|required needs --token-secret-file or --token-public-key")]
    AuthWithoutKey,
    /// A token key while `--auth` is off.
    #[error("a token key (--token-secret-file, --token-public-key) needs --auth optional|required")]
    TokenKeyWithoutAuth,
}

/// The TLS certificate or key cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// The certificate file is unreadable or holds no certificate.
    #[error("cannot read the certificate {0:?}: {1}")]
    Certificate(PathBuf, String),
    /// The key file is unreadable or holds no private key.
    #[error("cannot read the private key {0:?}: {1}")]
    Key(PathBuf, String),
    /// rustls refused the pair (e.g. the key does not match the certificate).
    #[error("cannot set up TLS: {0}")]
    Setup(String),
}

/// The token key file cannot be used (docs/auth.md, "Keys").
#[derive(Debug, thiserror::Error)]
pub enum TokenKeyError {
    /// The file cannot be read.
    #[error("cannot read the token key {0:?}: {1}")]
    Read(PathBuf, io::Error),
    /// The secret is too short to resist guessing.
    #[error("the token secret {0:?} has {1} bytes: HS256 needs at least 32")]
    ShortSecret(PathBuf, usize),
    /// The file holds no PEM block, or one this server cannot use.
    #[error("the token public key {0:?} is not usable: {1}")]
    PublicKey(PathBuf, String),
}

/// A failure while starting or running the server, named after the step that failed.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// The configuration is invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The TLS files cannot be used.
    #[error(transparent)]
    Tls(#[from] TlsError),
    /// The token key cannot be used.
    #[error(transparent)]
    TokenKey(#[from] TokenKeyError),
    /// The listening socket could not be created, bound or put into listening state. The
    /// message says what to do about the usual causes, once (the OS error is part of the
    /// message, not a separate cause, so that `{:#}` does not repeat it).
    #[error("cannot listen on {addr}: {}", listen_advice(cause))]
    Listen {
        /// The address asked for.
        addr: std::net::SocketAddr,
        /// What the OS said.
        cause: io::Error,
    },
    /// A shard's poll, waker or thread could not be created.
    #[error("cannot start shard {shard}: {source}")]
    Shard {
        /// Which shard.
        shard: usize,
        /// What the OS said.
        source: io::Error,
    },
    /// A thread could not be started.
    #[error("cannot start thread {name}: {source}")]
    Spawn {
        /// The thread's name.
        name: String,
        /// What the OS said.
        source: io::Error,
    },
    /// The acceptor thread could not be started.
    #[error("cannot start the acceptor: {0}")]
    Acceptor(io::Error),
    /// The `--redis` URL is not one the redis client accepts.
    #[error("invalid --redis URL {url}: {reason}")]
    Redis {
        /// The URL given.
        url: String,
        /// What the client said.
        reason: String,
    },
    /// The server API's listener or threads could not be started.
    #[error("cannot start the server API: {0}")]
    Api(io::Error),
    /// The thread answering `who` could not be started.
    #[error("cannot start the roster thread: {0}")]
    Roster(io::Error),
    /// A bridge thread could not be started.
    #[error("cannot start the Redis bridge: {0}")]
    Bridge(io::Error),
    /// Another live process of the cluster holds this node's id (docs/cluster.md).
    #[error(
        "node id {node:?} is already in use by a live node of this cluster (its claim, Redis \
         key {key}, is being renewed): give this node its own --node-id, or stop the other \
         node first"
    )]
    NodeIdTaken {
        /// The node id.
        node: String,
        /// The Redis key holding the claim.
        key: String,
    },
    /// A shard or the acceptor stopped with an I/O error.
    #[error("{name} stopped: {source}")]
    Thread {
        /// The thread's name.
        name: String,
        /// What failed.
        source: io::Error,
    },
    /// A thread panicked; its name says which.
    #[error("thread {0} panicked")]
    ThreadPanicked(String),
}

/// What a failed listen means, and what to do about it.
fn listen_advice(cause: &io::Error) -> String {
    match cause.kind() {
        io::ErrorKind::AddrInUse => "the address is already in use (another server listens \
            there): stop it, or choose another address with --listen"
            .to_owned(),
        io::ErrorKind::PermissionDenied => "permission denied (ports below 1024 need \
            privileges): choose a port from 1024 up with --listen"
            .to_owned(),
        io::ErrorKind::AddrNotAvailable => "this machine has no such address: use one of its \
            own, or 0.0.0.0 for all of them"
            .to_owned(),
        _ => cause.to_string(),
    }
}

#[cfg(test)]
mod listen_tests {
    use super::*;

    #[test]
    fn a_busy_port_is_explained_once() {
        let e = ServerError::Listen {
            addr: "127.0.0.1:8080".parse().unwrap(),
            cause: io::Error::from(io::ErrorKind::AddrInUse),
        };
        let text = format!("{:#}", anyhow::Error::from(e));
        assert_eq!(
            text,
            "cannot listen on 127.0.0.1:8080: the address is already in use (another server \
             listens there): stop it, or choose another address with --listen"
        );
    }
}
