//! Figures other threads may read, and the few facts every shard must agree on.
//!
//! One slot per shard, written only by its shard: gauges on connection changes, counters once
//! per loop turn (relaxed stores, no read-modify-write). Two server-wide values are shared:
//! the count of admitted WebSocket sessions (checked against `max_connections` once per
//! upgrade, never per message) and the draining flag set on shutdown.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};

use crate::cluster::ClusterStats;
use crate::metrics::Census;
use crate::metrics::{AcceptFigures, COUNTERS, Counters, ShardSnapshot};

/// One shard's published figures.
#[derive(Debug)]
pub struct ShardStats {
    connections: AtomicU64,
    websockets: AtomicU64,
    rooms: AtomicU64,
    largest_room: AtomicU64,
    counters: [AtomicU64; COUNTERS],
}

impl Default for ShardStats {
    fn default() -> Self {
        ShardStats {
            connections: AtomicU64::new(0),
            websockets: AtomicU64::new(0),
            rooms: AtomicU64::new(0),
            largest_room: AtomicU64::new(0),
            counters: std::array::from_fn(|_| AtomicU64::new(0)),
        }
    }
}

impl ShardStats {
    /// Publishes the shard's open connection and WebSocket session counts.
    pub fn set_connections(&self, connections: usize, websockets: usize) {
        self.connections
            .store(connections as u64, Ordering::Relaxed);
        self.websockets.store(websockets as u64, Ordering::Relaxed);
    }

    /// Publishes the rooms the shard accounts for ([`crate::models::Reach::census`]).
    pub fn set_census(&self, census: Census) {
        self.rooms.store(census.rooms, Ordering::Relaxed);
        self.largest_room.store(census.largest, Ordering::Relaxed);
    }

    /// Publishes the shard's counters.
    pub fn publish(&self, counters: &Counters) {
        for (slot, value) in self.counters.iter().zip(counters.0.iter()) {
            slot.store(*value, Ordering::Relaxed);
        }
    }

    fn snapshot(&self) -> ShardSnapshot {
        let mut counters = Counters::default();
        for (value, slot) in counters.0.iter_mut().zip(self.counters.iter()) {
            *value = slot.load(Ordering::Relaxed);
        }
        ShardSnapshot {
            connections: self.connections.load(Ordering::Relaxed),
            websockets: self.websockets.load(Ordering::Relaxed),
            census: Census {
                rooms: self.rooms.load(Ordering::Relaxed),
                largest: self.largest_room.load(Ordering::Relaxed),
            },
            counters,
        }
    }
}

/// Every shard's figures, and the server-wide admission state.
#[derive(Debug)]
pub struct ServerStats {
    shards: Vec<ShardStats>,
    admitted: AtomicUsize,
    draining: AtomicBool,
    per_ip_refused: AtomicU64,
    rate_refused: AtomicU64,
    rate_addresses: AtomicU64,
    /// The Redis bridge's figures, when this node is a cluster member.
    cluster: Option<Arc<ClusterStats>>,
}

impl ServerStats {
    /// Zeroed figures for `shards` shards.
    pub fn new(shards: usize) -> Self {
        ServerStats {
            shards: (0..shards).map(|_| ShardStats::default()).collect(),
            admitted: AtomicUsize::new(0),
            draining: AtomicBool::new(false),
            per_ip_refused: AtomicU64::new(0),
            rate_refused: AtomicU64::new(0),
            rate_addresses: AtomicU64::new(0),
            cluster: None,
        }
    }

    /// Zeroed figures for `shards` shards of a cluster member, with the bridge's `cluster`.
    pub fn with_cluster(shards: usize, cluster: Arc<ClusterStats>) -> Self {
        ServerStats {
            cluster: Some(cluster),
            ..ServerStats::new(shards)
        }
    }

    /// The bridge's figures, in a cluster.
    pub fn cluster(&self) -> Option<&ClusterStats> {
        self.cluster.as_deref()
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
    pub fn connections(&self) -> u64 {
        self.shards
            .iter()
            .map(|s| s.connections.load(Ordering::Relaxed))
            .sum()
    }

    /// Every shard's published figures.
    pub fn snapshot(&self) -> Vec<ShardSnapshot> {
        self.shards.iter().map(ShardStats::snapshot).collect()
    }

    /// Counts a connection refused at accept by the per-address limit.
    pub fn count_per_ip_refusal(&self) {
        self.per_ip_refused.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a connection refused at accept by the per-address connection rate.
    pub fn count_rate_refusal(&self) {
        self.rate_refused.fetch_add(1, Ordering::Relaxed);
    }

    /// Publishes how many addresses the connection rate limit tracks.
    pub fn set_rate_addresses(&self, tracked: usize) {
        self.rate_addresses.store(tracked as u64, Ordering::Relaxed);
    }

    /// What the accepting thread counted: refusals, and the addresses it tracks.
    pub fn accept_figures(&self) -> AcceptFigures {
        AcceptFigures {
            per_ip_refused: self.per_ip_refused.load(Ordering::Relaxed),
            rate_refused: self.rate_refused.load(Ordering::Relaxed),
            rate_addresses: self.rate_addresses.load(Ordering::Relaxed),
        }
    }

    /// Takes one of `max` WebSocket places; false when all are taken.
    pub fn try_admit(&self, max: usize) -> bool {
        self.admitted
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < max).then_some(n + 1)
            })
            .is_ok()
    }

    /// Gives back a place taken by [`ServerStats::try_admit`].
    pub fn release(&self) {
        self.admitted.fetch_sub(1, Ordering::AcqRel);
    }

    /// Marks the server as shutting down: no new upgrades.
    pub fn start_draining(&self) {
        self.draining.store(true, Ordering::Release);
    }

    /// Whether the server is shutting down.
    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Acquire)
    }
}
