//! What can go wrong in the client, in two layers.
//!
//! [`ConnectError`] is one connection attempt failing: interactive mode shows it on that
//! connection and carries on; pipe mode retries it under `--reconnect` or exits with it.
//! [`ClientError`] ends a whole run (pipe or interactive) and becomes the exit status.
//!
//! The underlying `io::Error`s are part of each message rather than a `source()`: the binary
//! prints the whole chain, and they would be printed twice.

use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;

/// Why opening one WebSocket connection failed. Each variant names the step that failed.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// The host name did not resolve to any address: check the URL's host.
    #[error("cannot resolve {host}: {reason}")]
    Resolve {
        /// The host from the URL.
        host: String,
        /// What the resolver said.
        reason: String,
    },
    /// No resolved address accepted a TCP connection (refused, unreachable, timed out).
    #[error("cannot connect to {addr}: {error}")]
    Connect {
        /// The last address tried.
        addr: SocketAddr,
        /// What the OS said.
        error: io::Error,
    },
    /// The TLS handshake failed: usually an untrusted certificate (see `--ca`, `--insecure`)
    /// or a server that does not speak TLS on that port.
    #[error("TLS handshake with {host} failed: {error}")]
    Tls {
        /// The host the certificate was checked against.
        host: String,
        /// What rustls or the socket said.
        error: io::Error,
    },
    /// The server answered the upgrade request with an HTTP status other than 101
    /// (403 for a refused Origin, 404 for a bad path, 503 when full, ...).
    #[error("the server refused the WebSocket upgrade: HTTP {status} {reason}")]
    Refused {
        /// The status code.
        status: u16,
        /// The status's canonical reason phrase.
        reason: String,
    },
    /// A subprotocol was asked for and the server chose none (RFC 6455 lets a server ignore
    /// it; clients, browsers included, then fail the connection).
    #[error("the server accepted none of the subprotocols asked for ({0})")]
    NoSubprotocol(String),
    /// The server did not finish the step in time (`--connect-timeout`).
    #[error("{step} timed out")]
    Timeout {
        /// Which step: "TLS handshake" or "WebSocket handshake".
        step: &'static str,
    },
    /// The upgrade response was not a valid WebSocket handshake, or the request could not be
    /// built (a header tungstenite rejects).
    #[error("WebSocket handshake failed: {0}")]
    Handshake(String),
    /// The socket could not be switched to non-blocking mode after the handshake.
    #[error("cannot set up the socket: {0}")]
    Socket(io::Error),
}

/// Why a client run stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The URL is not a usable `ws://` or `wss://` URL.
    #[error("invalid URL {url:?}: {reason}")]
    Url {
        /// What was given.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A `--header` value is not `Name: value` with a valid name and value.
    #[error("invalid header {0:?}: expected 'Name: value'")]
    Header(String),
    /// A `--ca` file is unreadable or holds no certificate.
    #[error("cannot read the CA file {path:?}: {reason}")]
    CaFile {
        /// The file given.
        path: PathBuf,
        /// What went wrong.
        reason: String,
    },
    /// rustls refused the TLS configuration.
    #[error("cannot set up TLS: {0}")]
    TlsSetup(String),
    /// The first connection failed (pipe mode without `--reconnect`).
    #[error(transparent)]
    Connect(#[from] ConnectError),
    /// The connection broke without a close handshake (pipe mode without `--reconnect`).
    #[error("connection lost: {0}")]
    Lost(String),
    /// `--reconnect` used up `--max-retries` attempts; the last failure is attached.
    #[error("gave up after {attempts} reconnection attempts; last: {last}")]
    GaveUp {
        /// How many attempts were made.
        attempts: u32,
        /// The last failure.
        last: String,
    },
    /// A poll, waker, thread or the terminal could not be set up.
    #[error("cannot set up {what}: {error}")]
    Setup {
        /// What was being set up.
        what: &'static str,
        /// What the OS said.
        error: io::Error,
    },
    /// `--nick` breaks the `shardcast.v1` nickname rule: the server would refuse it.
    #[error("invalid --nick {nick:?}: {rule}")]
    BadNick {
        /// As given.
        nick: String,
        /// The rule it breaks.
        rule: &'static str,
    },
    /// The terminal (line editor) failed.
    #[error("terminal error: {0}")]
    Terminal(String),
}

impl ClientError {
    /// A [`ClientError::Setup`] for `what`.
    pub fn setup(what: &'static str) -> impl FnOnce(io::Error) -> ClientError {
        move |error| ClientError::Setup { what, error }
    }
}
