//! One live process per node id: the claim each node holds in Redis.
//!
//! Two processes with one `--node-id` would split every room they share: their session ids
//! collide, and each drops the other's messages as its own echo. So a node holds its id as the
//! key `shardcast:node:<id>`, whose value is its process's random instance token, with a time to
//! live of [`NODE_EXPIRY`]. `bridge-pub` renews it before every heartbeat (every [`HEARTBEAT`])
//! and before anything else on a fresh connection, with one script that takes the key when it is
//! free and renews it when it is ours ([`Claim::renew`]).
//!
//! * **At start** ([`Claim::take_at_start`]) a node that finds its id held watches the key for a
//!   while: renewed (its time to live grew, or another token took it) means a live holder, and
//!   the node refuses to start; expired means the holder is gone (a crash: its claim lapses
//!   with the same 6 s after which other nodes drop it from the counts), and the node takes it.
//! * **While running**, a renewal that finds another token in the key (this node was cut off
//!   from Redis for longer than the expiry, and another process took the id meanwhile; or it
//!   started while Redis was unreachable) means this process is the one in the way: it stops
//!   its cross-node traffic for good ([`crate::cluster::link::Link::clashed`]).
//!
//! The holder of the key always wins, so two processes never both stop, nor both go on. A node
//! that shuts down gracefully deletes its claim ([`Claim::release`]) once its shards are done,
//! so that it can be restarted at once; a crashed one's lapses.

use std::time::{Duration, Instant};

use crate::cluster::{HEARTBEAT, NODE_EXPIRY};

/// The key holding node `node`'s claim.
pub fn key(node: &str) -> String {
    format!("shardcast:node:{node}")
}

/// Takes the key when it is free or ours, renewing its time to live; says 1 when ours now,
/// 0 when another token holds it.
const RENEW: &str = r"
local holder = redis.call('GET', KEYS[1])
if holder == false or holder == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 1
end
return 0
";

/// Deletes the key if it is ours; says 1 when it was.
const RELEASE: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
";

/// How often a starting node looks at a claim held by another token.
const WATCH_EVERY: Duration = Duration::from_millis(100);

/// The longest a starting node watches another token's claim: a dead holder's claim expires
/// within [`NODE_EXPIRY`]; a live one is renewed within [`HEARTBEAT`].
pub const WATCH_LIMIT: Duration = NODE_EXPIRY.saturating_add(HEARTBEAT);

/// Whose the claim is after a renewal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Holder {
    /// This process holds the node id.
    Us,
    /// Another process does.
    Other,
}

/// Why a node cannot take its id at start.
#[derive(Debug)]
pub enum Refused {
    /// A live process holds it (its claim was renewed while we watched).
    Live,
    /// Redis could not be asked.
    Redis(redis::RedisError),
}

/// This process's claim on its node id.
#[derive(Clone)]
pub struct Claim {
    key: String,
    token: String,
}

/// The key as seen once: its holder's token and its time to live in ms (`PTTL`: -2 once gone,
/// -1 with no expiry).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seen {
    /// The token holding it, if any.
    pub holder: Option<String>,
    /// Its time to live.
    pub ttl_ms: i64,
}

/// Whether the claim seen `before` and `now` was renewed (or taken by another token) in
/// between: a sign that its holder is alive. A time to live only shrinks unless renewed.
pub fn renewed(before: &Seen, now: &Seen) -> bool {
    now.holder.is_some() && (now.holder != before.holder || now.ttl_ms > before.ttl_ms)
}

impl Claim {
    /// The claim of node `node` for the process with `instance` as its token.
    pub fn new(node: &str, instance: u64) -> Self {
        Claim {
            key: key(node),
            token: format!("{instance:016x}"),
        }
    }

    /// Takes the claim when it is free, renews it when it is ours.
    pub fn renew(&self, conn: &mut redis::Connection) -> redis::RedisResult<Holder> {
        // Plain EVAL: a few hundred bytes every heartbeat, and nothing to reload after a
        // Redis restart (as EVALSHA would need).
        let ours: i64 = redis::cmd("EVAL")
            .arg(RENEW)
            .arg(1)
            .arg(&self.key)
            .arg(&self.token)
            .arg(NODE_EXPIRY.as_millis() as u64)
            .query(conn)?;
        Ok(if ours == 1 { Holder::Us } else { Holder::Other })
    }

    /// Lets go of the claim if it is still ours (a stopping node: its id is free at once for
    /// its successor). True when it was ours.
    pub fn release(&self, conn: &mut redis::Connection) -> redis::RedisResult<bool> {
        let released: i64 = redis::cmd("EVAL")
            .arg(RELEASE)
            .arg(1)
            .arg(&self.key)
            .arg(&self.token)
            .query(conn)?;
        Ok(released == 1)
    }

    fn look(&self, conn: &mut redis::Connection) -> redis::RedisResult<Seen> {
        let (holder, ttl_ms): (Option<String>, i64) =
            redis::pipe().get(&self.key).pttl(&self.key).query(conn)?;
        Ok(Seen { holder, ttl_ms })
    }

    /// Takes the claim before the node joins: at once when the id is free; after watching the
    /// key for up to [`WATCH_LIMIT`] when another process holds it, refused if that process
    /// renews it meanwhile (or if it never expires).
    pub fn take_at_start(&self, conn: &mut redis::Connection) -> Result<(), Refused> {
        let deadline = Instant::now() + WATCH_LIMIT;
        let mut last: Option<Seen> = None;
        loop {
            if self.renew(conn).map_err(Refused::Redis)? == Holder::Us {
                return Ok(());
            }
            let seen = self.look(conn).map_err(Refused::Redis)?;
            match &last {
                Some(before) if renewed(before, &seen) => return Err(Refused::Live),
                None => tracing::info!(
                    "node id claim {} is held by another process: watching it for up to {} s \
                     (a live node renews it every {} s; a stopped one's lapses within {} s)",
                    self.key,
                    WATCH_LIMIT.as_secs(),
                    HEARTBEAT.as_secs(),
                    NODE_EXPIRY.as_secs()
                ),
                Some(_) => {}
            }
            if Instant::now() >= deadline {
                return Err(Refused::Live);
            }
            last = Some(seen);
            std::thread::sleep(WATCH_EVERY);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seen(holder: Option<&str>, ttl_ms: i64) -> Seen {
        Seen {
            holder: holder.map(str::to_owned),
            ttl_ms,
        }
    }

    #[test]
    fn a_renewed_or_retaken_claim_means_a_live_holder_and_a_lapsing_one_does_not() {
        let before = seen(Some("a1"), 4_000);
        assert!(!renewed(&before, &seen(Some("a1"), 3_900)), "only lapsing");
        assert!(renewed(&before, &seen(Some("a1"), 6_000)), "renewed");
        assert!(
            renewed(&before, &seen(Some("b2"), 5_000)),
            "another process took it"
        );
        assert!(!renewed(&before, &seen(None, -2)), "gone: free to take");
        // A key without expiry never lapses: only the watch limit ends the wait.
        let forever = seen(Some("a1"), -1);
        assert!(!renewed(&forever, &forever));
    }

    #[test]
    fn the_watch_outlasts_both_a_renewal_and_an_expiry() {
        const { assert!(WATCH_LIMIT.as_millis() > NODE_EXPIRY.as_millis()) };
        const { assert!(WATCH_LIMIT.as_millis() > HEARTBEAT.as_millis()) };
        assert_eq!(key("a"), "shardcast:node:a");
        assert_eq!(Claim::new("a", 0xab).token, "00000000000000ab");
    }
}
