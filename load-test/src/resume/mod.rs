//! The resume scenario: `shardcast.v1` subscribers drop abruptly at random moments and resume
//! with `since=EPOCH:OFFSET`, while publishers keep sending; every subscriber's offsets, over
//! all of its connections, show what was lost or duplicated across the reconnects.
//!
//! It has its own small event loop (one thread, one `mio::Poll`) rather than the engine's:
//! the engine opens every connection once and keeps it, and its receive path only scans for
//! tokens, while here connections come and go all through the run and every frame is a JSON
//! envelope to read. The parts are the engine's: [`crate::connection::dial`],
//! [`crate::handshake::Upgrade`], [`crate::outbox::Outbox`], the frame parser, the token and
//! the alarm.
//!
//! A run's phases: `connect (every subscriber welcomed) → settle → publish (drops and
//! reconnects) → drain (every subscriber back and caught up) → close`. Each phase has a
//! deadline, so the run ends by itself.
//!
//! - `run`: the run in progress — its phases, one loop turn, its connections;
//! - [`subscriber`]: the resume recipe and the catch-up clock of one subscriber;
//! - [`offsets`]: its books of offsets (duplicates, holes), across connections and epochs;
//! - [`tokens`]: its books of tokens, which tell what offsets cannot across epochs;
//! - [`envelope`]: the server envelopes it reads;
//! - [`link`]: one connection, ended politely or abruptly;
//! - [`publisher`]: the open-loop schedule of a plain or v1 publisher;
//! - [`drops`]: when subscribers drop;
//! - [`report`]: the figures and the exactness check.

pub mod drops;
pub mod envelope;
pub mod link;
pub mod offsets;
pub mod publisher;
pub mod report;
mod run;
pub mod subscriber;
pub mod tokens;

use std::io;

use mio::Events;

use crate::error::LoadError;
use crate::limits::{SPARE_FDS, raise_fd_limit};
use crate::plan::Timing;
use crate::probe::ServerProbe;
use crate::target::{SourceIps, Target};

use publisher::Dialect;
use report::ResumeReport;
use run::{EVENTS_CAPACITY, Run};

/// The subprotocol every subscriber asks for (and v1 publishers).
pub const SUBPROTOCOL: &str = "shardcast.v1";

/// Everything a resume run needs, validated by the scenario.
#[derive(Debug, Clone)]
pub struct ResumeOptions {
    pub label: String,
    /// Subscribers and publishers are spread round-robin over these.
    pub targets: Vec<Target>,
    pub subscribers: usize,
    pub publishers: usize,
    pub publisher_dialect: Dialect,
    /// Total messages per second over all publishers.
    pub rate: f64,
    pub size: usize,
    /// Mean time between two drops of one subscriber.
    pub drop_every_ns: u64,
    /// Pause between a drop (or a server close) and the reconnect.
    pub reconnect_after_ns: u64,
    /// `history=N` asked on every reconnect (0: not asked).
    pub history: u64,
    pub seed: u64,
    pub timing: Timing,
    pub source_ips: SourceIps,
    pub max_frame: u64,
    pub server: Option<ServerProbe>,
    pub progress: bool,
}

/// Runs the scenario to its end: every phase has a deadline.
pub fn run(opts: ResumeOptions) -> Result<ResumeReport, LoadError> {
    let connections = (opts.subscribers + opts.publishers) as u64;
    let fd_limit = raise_fd_limit();
    if connections + SPARE_FDS > fd_limit {
        return Err(LoadError::InvalidOptions(format!(
            "{connections} connections need more descriptors than this process may open ({fd_limit})"
        )));
    }
    let mut run = Run::new(opts).map_err(LoadError::WorkerSetup)?;
    let mut events = Events::with_capacity(EVENTS_CAPACITY);
    run.connect(&mut events).map_err(worker_failed)?;
    if let Some(error) = run.nobody_joined() {
        return Err(error);
    }
    run.settle(&mut events).map_err(worker_failed)?;
    run.publish(&mut events).map_err(worker_failed)?;
    run.drain(&mut events).map_err(worker_failed)?;
    run.close(&mut events).map_err(worker_failed)?;
    Ok(run.report())
}

fn worker_failed(source: io::Error) -> LoadError {
    LoadError::WorkerFailed { thread: 0, source }
}
