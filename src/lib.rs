//! shardcast: a thread-per-core WebSocket chat and broadcast server.
//!
//! An acceptor thread deals connections round-robin to N shards. Each shard is one thread
//! pinned to a core with its own `mio::Poll`, a slab of sessions and its view of the rooms;
//! shards share no mutable state and talk only through bounded channels (the mesh). A message
//! is framed once into shared bytes and queued, by reference, for every member of its room on
//! every shard; each session's queue leaves in one vectored write per loop turn.
//!
//! See `docs/architecture.md` for the threads and data path, `docs/lifecycle.md` for the
//! session states and `docs/glossary.md` for the vocabulary.

pub mod acceptor;
pub mod api;
pub mod auth;
pub mod backoff;
pub mod chat;
pub mod client;
pub mod close;
pub mod cluster;
pub mod config;
pub mod control;
pub mod error;
pub mod frame;
pub mod history;
pub mod http;
pub mod human;
pub mod ids;
pub mod limits;
pub mod logging;
pub mod mesh;
pub mod metrics;
pub mod models;
pub mod names;
pub mod process_figures;
pub mod room;
pub mod roster;
pub mod server;
pub mod session;
pub mod shard;
pub mod stats;
pub mod tls;

pub use config::Config;
pub use error::{ConfigError, ServerError};
pub use server::{Server, ShutdownHandle};
