//! shardcast-load: the load generator of shardcast, built like the server it drives.
//!
//! N client threads ([`worker`]) each own a `mio::Poll` and a slab of connections. A scenario
//! ([`scenario`]) builds a [`plan::Plan`] — every connection, its room and role — and the
//! [`engine`] runs it: connect everything, settle, publish on schedule (open loop: a message
//! carries its *scheduled* send time, so queueing shows up as latency), drain, close. Every
//! payload carries a [`token`] found anywhere in what the server delivers, so each recipient
//! measures latency (hdrhistogram, per thread, merged at the end) and keeps per-publisher
//! order ([`tracker`]) to count loss, duplicates and reordering. The receive path
//! ([`inbound`], [`frame`]) parses frames in place and allocates nothing per message.

pub mod alarm;
pub mod cli;
pub mod clock;
pub mod connection;
pub mod control;
pub mod engine;
pub mod error;
pub mod frame;
pub mod handshake;
pub mod inbound;
pub mod limits;
pub mod order;
pub mod outbox;
pub mod output;
pub mod plan;
pub mod plot;
pub mod probe;
pub mod progress;
pub mod report;
pub mod resume;
pub mod roundtrip;
pub mod scenario;
pub mod server_process;
pub mod sockstat;
pub mod stats;
pub mod target;
pub mod token;
pub mod tracker;
pub mod worker;

pub use error::LoadError;
pub use report::TrafficReport;
pub use scenario::{ScenarioReport, run_scenario};
