//! Integration tests: the real `shardcast` binary, driven over loopback.
//!
//! One test binary (faster to build and link than one per file); one module per behaviour.

mod client;
mod http;
mod layers;
mod rate_limits;
mod rooms;
mod slow_consumer;
mod util;
