//! The state of a cluster node's link to the other nodes, through Redis: set by the bridge
//! threads, read by `/health` (degraded, and why), by the loops (a v1 member joining while
//! the node is cut off is told so) and by `/metrics`. Relaxed atomics; a mutex only for the
//! last error (written once per failure), a `OnceLock` for a node-id clash (set once, for
//! good). Nothing here is on the message path.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Mutex, MutexGuard, OnceLock};

/// Which of the bridge's two connections to Redis.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// `bridge-pub`'s.
    Publish,
    /// `bridge-sub`'s.
    Subscribe,
}

impl Side {
    /// The `side` label value of the link metrics.
    pub fn label(self) -> &'static str {
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

/// The link's state.
#[derive(Debug, Default)]
pub struct Link {
    /// Cross-node delivery works end to end: this node's own heartbeat came back through Redis
    /// since its subscription was last (re)made.
    up: AtomicBool,
    /// Each connection to Redis is up (publish, subscribe).
    connected: [AtomicBool; 2],
    /// Successful connections after a lost one (publish, subscribe).
    reconnects: [AtomicU64; 2],
    /// The last error either connection met, for `/health` while down.
    last_error: Mutex<Option<String>>,
    /// Set, once and for good, when another process holds this node's id.
    clash: OnceLock<String>,
    /// Members were told cross-node delivery stopped (`cluster_down`), and not yet that it
    /// resumed: a member joining now is told too.
    cut_off: AtomicBool,
    /// The server stopped: the node id is being given up, the publisher must not renew it.
    leaving: AtomicBool,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding it leaves a value that is still whole.
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Link {
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

    /// Whether `side`'s connection is up.
    pub fn is_connected(&self, side: Side) -> bool {
        self.connected[side as usize].load(Relaxed)
    }

    /// How often `side` connected again after losing its connection.
    pub fn reconnects(&self, side: Side) -> u64 {
        self.reconnects[side as usize].load(Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn health_says_why_and_only_a_clash_takes_the_node_out() {
        let link = Link::default();
        let starting = link.degraded().expect("not linked before the first echo");
        assert!(
            starting.reason.contains("connecting to Redis"),
            "{starting:?}"
        );
        link.set_up(true);
        assert_eq!(link.degraded(), None);
        link.set_up(false);
        link.disconnected(Side::Subscribe, &"Connection refused");
        let down = link.degraded().unwrap();
        assert!(
            down.reason
                .starts_with("cluster link down (subscribe connection: Connection refused)"),
            "{down:?}"
        );
        assert!(
            !down.take_out,
            "an outage keeps the node in: every node has it"
        );
        assert!(link.clashed("node id clash: x".to_owned()));
        link.set_up(true);
        let clash = link.degraded().unwrap();
        assert_eq!(
            clash.reason, "node id clash: x",
            "a clash outranks the link being up"
        );
        assert!(clash.take_out);
    }

    #[test]
    fn reconnections_count_only_after_a_loss() {
        let link = Link::default();
        link.connected(Side::Publish, false);
        assert!(link.is_connected(Side::Publish) && !link.is_connected(Side::Subscribe));
        link.disconnected(Side::Publish, &"gone");
        link.connected(Side::Publish, true);
        assert_eq!(
            (
                link.reconnects(Side::Publish),
                link.reconnects(Side::Subscribe)
            ),
            (1, 0)
        );
    }
}
