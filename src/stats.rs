//! Live figures other threads may read: one slot per shard, written only by its shard.
//!
//! Written on connection changes only (never per message), so a relaxed atomic store costs
//! nothing measurable and needs no lock.

use std::sync::atomic::{AtomicUsize, Ordering};

/// One shard's published figures.
#[derive(Debug, Default)]
pub struct ShardStats {
    connections: AtomicUsize,
}

impl ShardStats {
    /// Publishes the shard's open connection count.
    pub fn set_connections(&self, n: usize) {
        self.connections.store(n, Ordering::Relaxed);
    }
}

/// Every shard's figures.
#[derive(Debug)]
pub struct ServerStats {
    shards: Vec<ShardStats>,
}

impl ServerStats {
    /// Zeroed figures for `shards` shards.
    pub fn new(shards: usize) -> Self {
        ServerStats {
            shards: (0..shards).map(|_| ShardStats::default()).collect(),
        }
    }

    /// Number of shards.
    pub fn shard_count(&self) -> usize {
        self.shards.len()
    }

    /// Shard `i`'s slot.
    pub fn shard(&self, i: usize) -> &ShardStats {
        &self.shards[i]
    }

    /// Open connections over all shards.
    pub fn connections(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.connections.load(Ordering::Relaxed))
            .sum()
    }
}
