//! Log output: `tracing` events and spans, written by `tracing-subscriber` to stderr.
//!
//! Each event-loop thread runs inside a span (`shard{id=2}`, `worker{id=0}`), so its lines
//! carry their context without hand-built prefixes; a session's debug lines add a
//! `session{id=… peer=… room=…}` span. Access lines (one per upgrade, one per close) go to the
//! target [`ACCESS`] at info level (docs/operations.md, "Logs").
//!
//! The filter is `RUST_LOG` when set, else `--log-level`. Nothing secret is logged: the Redis
//! URL is redacted before it reaches a line, and message contents never do — nor, then, a
//! connection token in a `hello` (docs/auth.md). tungstenite writes whole frames and
//! messages at trace level, so those lines are dropped whatever the filter asks.

use tracing::Level;
use tracing::level_filters::LevelFilter;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::filter::filter_fn;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

/// The target of the access lines, so they can be filtered on their own
/// (`RUST_LOG=warn,shardcast::access=info`).
pub const ACCESS: &str = "shardcast::access";

/// tungstenite's trace lines print frames and messages (a `hello` with its token): they are
/// never written, whatever the filter (its other levels follow the filter).
const TUNGSTENITE: &str = "tungstenite";

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
    // The cap keeps the filter's hint, so `log` records above it stay one comparison away.
    let hint = filter.max_level_hint().unwrap_or(LevelFilter::TRACE);
    let no_frames = filter_fn(|meta| {
        !(*meta.level() == Level::TRACE && meta.target().starts_with(TUNGSTENITE))
    })
    .with_max_level_hint(hint);
    // A log line that cannot be written (whatever read stderr is gone) is dropped: the
    // default reports it with `eprintln!`, which panics on that same broken pipe and would
    // take down the thread that logged — the signal thread's "shutting down" included, which
    // left the server running for ever.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .log_internal_errors(false);
    let _ = match format {
        LogFormat::Text => builder.with_ansi(false).finish().with(no_frames).try_init(),
        LogFormat::Json => builder
            .json()
            .with_current_span(false)
            .with_span_list(true)
            .finish()
            .with(no_frames)
            .try_init(),
    };
}
