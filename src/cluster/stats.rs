//! The bridge's figures, and the link's state ([`Link`]): written by its two threads (relaxed
//! atomics; a mutex only for the other nodes' heartbeat times, written once per heartbeat),
//! read by `/metrics` and `/health`. Nothing here is on a shard's path.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::cluster::link::{Link, Side};
use crate::metrics::single;

/// What the bridge counts.
#[derive(Debug, Default)]
pub struct ClusterStats {
    /// The link's state (for `/health`, the loops and these figures).
    pub link: Link,
    /// Publish-to-echo delay of this node's last heartbeat, in microseconds.
    lag_micros: AtomicU64,
    /// When each other node's last heartbeat arrived.
    peers: Mutex<BTreeMap<String, Instant>>,
    /// Heartbeats of another process using this node's id.
    clashes_seen: AtomicU64,
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

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding it leaves a value that is still whole.
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl ClusterStats {
    /// This node's own heartbeat came back `lag` after it was published.
    pub fn echoed(&self, lag: Duration) {
        self.lag_micros.store(lag.as_micros() as u64, Relaxed);
    }

    /// A heartbeat of node `node` arrived.
    pub fn heartbeat_from(&self, node: &str) {
        // Another node's bytes are input: only a valid id may become a label value.
        if !crate::ids::valid_node_id(node) {
            return;
        }
        let mut peers = lock(&self.peers);
        match peers.get_mut(node) {
            Some(at) => *at = Instant::now(),
            None => {
                peers.insert(node.to_owned(), Instant::now());
            }
        }
    }

    /// Node `node` left the counts (silent too long, or the link to it is down).
    pub fn forget_peer(&self, node: &str) {
        lock(&self.peers).remove(node);
    }

    /// Every other node left the counts (this node's link is down).
    pub fn forget_peers(&self) {
        lock(&self.peers).clear();
    }

    /// Another process sent a heartbeat with this node's id.
    pub fn clash_seen(&self) {
        self.clashes_seen.fetch_add(1, Relaxed);
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
            "1 while cross-node delivery works (this node's heartbeat comes back through Redis)",
            u8::from(self.link.is_up()).to_string(),
        );
        one(
            "shardcast_cluster_heartbeat_lag_seconds",
            "gauge",
            "Publish-to-receive delay of this node's last heartbeat, through Redis",
            format!("{:.6}", self.lag_micros.load(Relaxed) as f64 / 1e6),
        );
        one(
            "shardcast_cluster_node_id_clash",
            "gauge",
            "1 once another live process holds this node's id: cross-node traffic stopped",
            u8::from(self.link.clash().is_some()).to_string(),
        );
        one(
            "shardcast_cluster_node_id_clashes_seen_total",
            "counter",
            "Heartbeats of another process using this node's id",
            get(&self.clashes_seen),
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
        self.render_sides(out);
        self.render_peers(out);
    }

    fn render_sides(&self, out: &mut String) {
        let sides = [Side::Publish, Side::Subscribe];
        let _ = writeln!(
            out,
            "# HELP shardcast_cluster_link_up 1 while this connection to Redis is up\n\
             # TYPE shardcast_cluster_link_up gauge"
        );
        for side in sides {
            let up = self.link.is_connected(side);
            let _ = writeln!(
                out,
                "shardcast_cluster_link_up{{side=\"{}\"}} {}",
                side.label(),
                u8::from(up)
            );
        }
        let _ = writeln!(
            out,
            "# HELP shardcast_cluster_reconnects_total Connections to Redis made again after \
             one was lost\n# TYPE shardcast_cluster_reconnects_total counter"
        );
        for side in sides {
            let _ = writeln!(
                out,
                "shardcast_cluster_reconnects_total{{side=\"{}\"}} {}",
                side.label(),
                self.link.reconnects(side)
            );
        }
    }

    fn render_peers(&self, out: &mut String) {
        let _ = writeln!(
            out,
            "# HELP shardcast_cluster_peer_heartbeat_age_seconds Time since each other node's \
             last heartbeat (sent every 2 s)\n\
             # TYPE shardcast_cluster_peer_heartbeat_age_seconds gauge"
        );
        let now = Instant::now();
        for (node, at) in lock(&self.peers).iter() {
            // Node ids are [A-Za-z0-9_-] (checked on the way in): nothing to escape.
            let _ = writeln!(
                out,
                "shardcast_cluster_peer_heartbeat_age_seconds{{node=\"{node}\"}} {:.3}",
                now.duration_since(*at).as_secs_f64()
            );
        }
    }
}
