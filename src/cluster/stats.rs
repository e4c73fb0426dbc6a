//! The bridge's figures: written by its two threads with relaxed atomics, read by `/metrics`.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use crate::metrics::single;

/// What the bridge counts.
#[derive(Debug, Default)]
pub struct ClusterStats {
    up: AtomicBool,
    outages: AtomicU64,
    down_millis: AtomicU64,
    published: AtomicU64,
    publish_round_trips: AtomicU64,
    publish_dropped: AtomicU64,
    presence_deferred: AtomicU64,
    received: AtomicU64,
    delivery_dropped: AtomicU64,
    nodes: AtomicU64,
}

impl ClusterStats {
    /// The subscription connection is up (cross-node delivery works) or not.
    pub fn set_up(&self, up: bool) {
        self.up.store(up, Relaxed);
    }

    /// Whether cross-node delivery works now.
    pub fn is_up(&self) -> bool {
        self.up.load(Relaxed)
    }

    /// An outage ended after `down`.
    pub fn outage_ended(&self, down: Duration) {
        self.outages.fetch_add(1, Relaxed);
        self.down_millis.fetch_add(down.as_millis() as u64, Relaxed);
    }

    /// `messages` were published in one pipelined round trip.
    pub fn published(&self, messages: u64) {
        self.published.fetch_add(messages, Relaxed);
        self.publish_round_trips.fetch_add(1, Relaxed);
    }

    /// `messages` could not be published (Redis down, or the queue to the bridge full).
    pub fn dropped(&self, messages: u64) {
        self.publish_dropped.fetch_add(messages, Relaxed);
    }

    /// `changes` of a shard's membership found the queue to the publisher full: they wait as
    /// their room's latest share, retried every loop turn, and reach other nodes as a count
    /// (`online`) instead of a `join`/`leave`.
    pub fn presence_deferred(&self, changes: u64) {
        self.presence_deferred.fetch_add(changes, Relaxed);
    }

    /// A Redis message from another node was taken in.
    pub fn received(&self) {
        self.received.fetch_add(1, Relaxed);
    }

    /// `messages` from other nodes were dropped: a shard's inbox and backlog were full.
    pub fn delivery_dropped(&self, messages: u64) {
        self.delivery_dropped.fetch_add(messages, Relaxed);
    }

    /// Other nodes heard from lately.
    pub fn nodes(&self) -> u64 {
        self.nodes.load(Relaxed)
    }

    /// Other nodes currently heard from.
    pub fn set_nodes(&self, nodes: usize) {
        self.nodes.store(nodes as u64, Relaxed);
    }

    /// Appends the Prometheus families.
    pub fn render(&self, out: &mut String) {
        let mut one = |name: &str, kind: &str, help: &str, value: String| {
            single(out, name, kind, help, value);
        };
        let get = |a: &AtomicU64| a.load(Relaxed).to_string();
        one(
            "shardcast_cluster_up",
            "gauge",
            "1 while the Redis subscription works (cross-node delivery is on)",
            u8::from(self.is_up()).to_string(),
        );
        one(
            "shardcast_cluster_outages_total",
            "counter",
            "Redis outages that ended (cross-node delivery restored)",
            get(&self.outages),
        );
        one(
            "shardcast_cluster_down_seconds_total",
            "counter",
            "Seconds cross-node delivery was down, over ended outages",
            format!("{:.3}", self.down_millis.load(Relaxed) as f64 / 1000.0),
        );
        one(
            "shardcast_cluster_published_total",
            "counter",
            "Envelopes published to Redis (messages, presence, heartbeats)",
            get(&self.published),
        );
        one(
            "shardcast_cluster_publish_round_trips_total",
            "counter",
            "Pipelined PUBLISH batches (one round trip each)",
            get(&self.publish_round_trips),
        );
        one(
            "shardcast_cluster_publish_dropped_total",
            "counter",
            "Envelopes not published: Redis down, or the bridge queue full (messages)",
            get(&self.publish_dropped),
        );
        one(
            "shardcast_cluster_presence_deferred_total",
            "counter",
            "Membership changes the bridge queue had no room for: retried as the room's latest \
             count, sent as online instead of join/leave",
            get(&self.presence_deferred),
        );
        one(
            "shardcast_cluster_received_total",
            "counter",
            "Envelopes received from other nodes",
            get(&self.received),
        );
        one(
            "shardcast_cluster_delivery_dropped_total",
            "counter",
            "Messages from other nodes dropped because a shard's inbox and backlog were full",
            get(&self.delivery_dropped),
        );
        one(
            "shardcast_cluster_nodes",
            "gauge",
            "Other nodes heard from within the expiry time",
            get(&self.nodes),
        );
    }
}
