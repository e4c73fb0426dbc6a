//! The bridge's figures and the state of its link to Redis: written by its two threads
//! (relaxed atomics; a mutex only for what changes once per heartbeat or outage), read by
//! `/metrics` and `/health`. Nothing here is on a shard's path.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use crate::metrics::single;

/// Which of the bridge's two connections to Redis.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// `bridge-pub`'s.
    Publish,
    /// `bridge-sub`'s.
    Subscribe,
}

impl Side {
    fn label(self) -> &'static str {
        match self {
            Side::Publish => "publish",
            Side::Subscribe => "subscribe",
        }
    }
}

/// Why a node is `degraded` (its `/health`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Degraded {
    /// For people: what is wrong and what it means.
    pub reason: String,
    /// Whether the node should be taken out of the load balancer (it will not recover by
    /// itself, and other nodes can serve its clients better): answered `503`, else `200`.
    pub take_out: bool,
}

/// What the bridge counts.
#[derive(Debug, Default)]
pub struct ClusterStats {
    /// Cross-node delivery works end to end: this node's own heartbeat came back through Redis
    /// since its subscription was last (re)made.
    up: AtomicBool,
    /// Each connection to Redis is up (publish, subscribe).
    connected: [AtomicBool; 2],
    /// Successful connections after a lost one (publish, subscribe).
    reconnects: [AtomicU64; 2],
    /// The last error either connection met, for `/health` while down.
    last_error: Mutex<Option<String>>,
    /// Publish-to-echo delay of this node's last heartbeat, in microseconds.
    lag_micros: AtomicU64,
    /// When each other node's last heartbeat arrived.
    peers: Mutex<BTreeMap<String, Instant>>,
    /// Set, once and for good, when another process holds this node's id.
    clash: OnceLock<String>,
    /// Heartbeats of another process using this node's id.
    clashes_seen: AtomicU64,
    /// Members were told cross-node delivery stopped (`cluster_down`), and not yet that it
    /// resumed: a member joining now is told too.
    cut_off: AtomicBool,
    /// The server stopped: the node id is being given up, the publisher must not renew it.
    leaving: AtomicBool,
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
    /// Cross-node delivery works end to end (this node's heartbeat came back), or not.
    pub fn set_up(&self, up: bool) {
        self.up.store(up, Relaxed);
    }

    /// Whether cross-node delivery works now.
    pub fn is_up(&self) -> bool {
        self.up.load(Relaxed)
    }

    /// The server stopped: the publisher publishes (and renews) nothing more.
    pub fn set_leaving(&self) {
        self.leaving.store(true, Relaxed);
    }

    /// Whether the server stopped.
    pub fn is_leaving(&self) -> bool {
        self.leaving.load(Relaxed)
    }

    /// Members were told that cross-node delivery stopped (true) or resumed (false).
    pub fn set_cut_off(&self, cut_off: bool) {
        self.cut_off.store(cut_off, Relaxed);
    }

    /// Whether members were told that cross-node delivery stopped, and not yet that it
    /// resumed.
    pub fn is_cut_off(&self) -> bool {
        self.cut_off.load(Relaxed)
    }

    /// `side`'s connection came up; `again` when it replaces a lost one.
    pub fn connected(&self, side: Side, again: bool) {
        self.connected[side as usize].store(true, Relaxed);
        if again {
            self.reconnects[side as usize].fetch_add(1, Relaxed);
        }
    }

    /// `side`'s connection failed with `error` (or could not be made).
    pub fn disconnected(&self, side: Side, error: &dyn std::fmt::Display) {
        self.connected[side as usize].store(false, Relaxed);
        *lock(&self.last_error) = Some(format!("{} connection: {error}", side.label()));
    }

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

    /// This process lost its node id to another (`why`): it stops cross-node traffic for good.
    /// True the first time.
    pub fn clashed(&self, why: String) -> bool {
        self.clash.set(why).is_ok()
    }

    /// Why this process stopped cross-node traffic, if it did.
    pub fn clash(&self) -> Option<&str> {
        self.clash.get().map(String::as_str)
    }

    /// Why the node is degraded, or `None` while cross-node delivery works.
    pub fn degraded(&self) -> Option<Degraded> {
        if let Some(why) = self.clash() {
            return Some(Degraded {
                reason: why.to_owned(),
                take_out: true,
            });
        }
        if self.is_up() {
            return None;
        }
        let detail = lock(&self.last_error)
            .clone()
            .unwrap_or_else(|| "connecting to Redis".to_owned());
        Some(Degraded {
            reason: format!(
                "cluster link down ({detail}): messages do not reach other nodes; local rooms \
                 work"
            ),
            take_out: false,
        })
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
            u8::from(self.is_up()).to_string(),
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
            u8::from(self.clash().is_some()).to_string(),
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
            let up = self.connected[side as usize].load(Relaxed);
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
                self.reconnects[side as usize].load(Relaxed)
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
