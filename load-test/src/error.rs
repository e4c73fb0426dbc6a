//! The library's error type: one enum, each variant named after the step that failed.
//!
//! Per-connection trouble (a refused connect, a rejected upgrade, a server close) is not an
//! error of the run: it is counted in the report. These variants end a whole run.

use std::io;
use std::path::PathBuf;

/// Why a run (or its setup, or writing its results) could not complete.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// A `--url` is malformed, not `ws://`, or not a loopback address: fix the argument.
    #[error("invalid URL {url:?}: {reason}")]
    BadUrl { url: String, reason: String },
    /// The options contradict each other or are out of range: fix the command line.
    #[error("invalid options: {0}")]
    InvalidOptions(String),
    /// A client thread could not create its poll, waker or timer (out of descriptors?).
    #[error("setting up client thread: {0}")]
    WorkerSetup(#[source] io::Error),
    /// A client thread's event loop failed (epoll itself, not a connection).
    #[error("client thread {thread} failed: {source}")]
    WorkerFailed {
        thread: usize,
        #[source]
        source: io::Error,
    },
    /// A client thread panicked: a bug in the load generator.
    #[error("client thread {0} panicked")]
    WorkerPanicked(usize),
    /// Not a single connection could be opened: is the server running at that address?
    #[error("no connection could be opened ({failed} failed; first failure: {first_failure})")]
    NoConnections { failed: u64, first_failure: String },
    /// Starting, reading or stopping the server under test (in `compare`).
    #[error("server {bin}: {reason}")]
    Server { bin: PathBuf, reason: String },
    /// Writing a report, a CSV or a plot.
    #[error("writing {what}: {source}")]
    Output {
        what: String,
        #[source]
        source: io::Error,
    },
    /// Drawing the SVG chart.
    #[error("drawing the plot {path}: {reason}")]
    Plot { path: PathBuf, reason: String },
}
