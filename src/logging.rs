//! Log output: `tracing` events and spans, written by `tracing-subscriber` to stderr.
//!
//! Each event-loop thread runs inside a span (`shard{id=2}`, `worker{id=0}`), so its lines
//! carry their context without hand-built prefixes; a session's debug lines add a
//! `session{id=… peer=… room=…}` span. Access lines (one per upgrade, one per close) go to the
//! target [`ACCESS`] at info level (docs/operations.md, "Logs").
//!
//! The filter is `RUST_LOG` when set, else `--log-level`. Nothing secret is logged: the Redis
//! URL is redacted before it reaches a line, and message contents never do.

use tracing_subscriber::EnvFilter;

/// The target of the access lines, so they can be filtered on their own
/// (`RUST_LOG=warn,shardcast::access=info`).
pub const ACCESS: &str = "shardcast::access";

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LogFormat {
    /// Human-readable lines (the default).
    #[default]
    Text,
    /// One JSON object per line: `timestamp`, `level`, `target`, `fields` and the spans.
    Json,
}

/// Installs the global subscriber: `RUST_LOG` if set, else `default_filter`. Records of the
/// `log` crate (rustls) are forwarded. Does nothing if a subscriber is installed already.
pub fn init(default_filter: &str, format: LogFormat) {
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(default_filter))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Text => builder.with_ansi(false).try_init(),
        LogFormat::Json => builder
            .json()
            .with_current_span(false)
            .with_span_list(true)
            .try_init(),
    };
}
