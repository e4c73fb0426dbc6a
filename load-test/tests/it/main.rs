//! Integration tests of shardcast-load: one test binary, one file per behaviour.
//!
//! `self_check` and `scenarios` drive the real shardcast release binary (SHARDCAST_BIN, or
//! ../target/release/shardcast, built on demand); `relay` drives a tiny in-process WebSocket
//! relay that drops, duplicates, reorders and wraps messages on purpose; `resume` also drives
//! `history_relay`, which keeps (or breaks, on purpose) the history contract of shardcast.v1.

mod history_relay;
mod hot_path;
mod relay;
mod resume;
mod scenarios;
mod self_check;
mod util;
