//! Multi-node rooms over Redis pub/sub (`--redis URL`; `docs/cluster.md`).
//!
//! Each node runs a **bridge** of two threads beside its shards, on the synchronous `redis`
//! crate (no async runtime):
//!
//! * `bridge-pub` ([`publisher`]) takes what the shards hand it — messages local members
//!   sent, changes in the shards' membership — and publishes them, pipelining whatever
//!   accumulated during the previous round trip into one `PUBLISH` batch. It keeps this node's
//!   membership table and publishes it as a heartbeat every [`HEARTBEAT`].
//! * `bridge-sub` ([`subscriber`]) holds the subscription connection: `shardcast:presence`
//!   always, `shardcast:room:<name>` while the node has members in the room. Messages from
//!   other nodes are rendered once and handed to the local shards like any cross-shard
//!   broadcast; presence from other nodes becomes each room's `others` count (members on
//!   other nodes) and join/leave notices. A node ignores its own envelopes.
//!
//! Two threads because a subscribed Redis connection can do nothing but receive: publishing
//! needs a second connection, and a thread blocked on the subscription must not delay
//! publishes. The subscriber is woken by what arrives — including this node's own presence
//! envelopes, which it ignores except for applying the membership changes the publisher
//! forwarded just before publishing them — and at least every heartbeat.
//!
//! Without `--redis` none of this exists: shards hold `None` and the message path has no
//! cluster code beyond that one check.

pub mod publisher;
pub mod stats;
pub mod subscriber;
pub mod table;
pub mod wire;

use std::sync::Arc;
use std::time::Duration;

use crossbeam_channel::{Receiver, Sender};

use crate::backoff::{Backoff, random_seed};
pub use crate::chat::MemberChange;
use crate::chat::Post;
use crate::error::ServerError;
use crate::ids::ShardId;
pub use crate::mesh::ClusterNews;
use crate::mesh::PeerHandle;
use crate::room::{RoomId, Share};
pub use stats::ClusterStats;

/// How often a node publishes its whole membership table.
pub const HEARTBEAT: Duration = Duration::from_secs(2);

/// A node not heard from for this long is taken out of every count (three heartbeats).
pub const NODE_EXPIRY: Duration = Duration::from_secs(6);

/// Most messages waiting for the publisher; past it, messages are dropped and counted
/// (membership changes never are: losing one would leave counts wrong).
pub const PUBLISH_QUEUE: usize = 64 * 1024;

/// Connecting to Redis, and writing to it, may take this long before Redis counts as gone.
pub const IO_TIMEOUT: Duration = Duration::from_secs(2);

/// Reconnection delays to Redis: from this, doubling, with jitter…
pub const RECONNECT_FIRST: Duration = Duration::from_millis(100);
/// …to at most this (the bound on how late cross-node delivery resumes after Redis returns).
pub const RECONNECT_CAP: Duration = Duration::from_secs(2);

/// The channel carrying presence and heartbeats of every node.
pub const PRESENCE_CHANNEL: &str = "shardcast:presence";

/// The channel of a room is this prefix and the room's name.
pub const ROOM_CHANNEL_PREFIX: &str = "shardcast:room:";

/// The channel of room `room`.
pub fn room_channel(room: &str) -> String {
    format!("{ROOM_CHANNEL_PREFIX}{room}")
}

/// `url` fit for a log line: a password in it is replaced by `***`.
pub fn redacted(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let authority_end = rest.find('/').unwrap_or(rest.len());
    match rest[..authority_end].rsplit_once('@') {
        Some((userinfo, host)) => {
            let user = userinfo.split_once(':').map_or(userinfo, |(user, _)| user);
            let masked = if userinfo.contains(':') {
                format!("{user}:***")
            } else {
                "***".to_owned()
            };
            format!("{scheme}://{masked}@{host}{}", &rest[authority_end..])
        }
        None => url.to_owned(),
    }
}

/// A valid node id: 1–32 of `A-Z a-z 0-9 - _` (it prefixes session ids seen by clients).
pub fn valid_node_id(id: &str) -> bool {
    (1..=32).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// A random node id: 8 hex digits.
pub fn random_node_id() -> String {
    format!("{:08x}", crate::backoff::random_seed() as u32)
}

/// How the bridge threads wait between attempts to reach Redis: randomly seeded, so that
/// nodes dropped together by one Redis restart do not return in step.
fn reconnect_backoff() -> Backoff {
    Backoff::with(RECONNECT_FIRST, RECONNECT_CAP, u32::MAX, random_seed())
}

/// Opens a connection to Redis for a bridge thread: connecting and writing may each take
/// `IO_TIMEOUT` (a hung server must not stall the bridge for ever), a read `read_timeout`.
fn connect(
    client: &redis::Client,
    read_timeout: Duration,
) -> redis::RedisResult<redis::Connection> {
    let conn = client.get_connection_with_timeout(IO_TIMEOUT)?;
    conn.set_read_timeout(Some(read_timeout))?;
    conn.set_write_timeout(Some(IO_TIMEOUT))?;
    Ok(conn)
}

/// What shards hand to the publisher.
#[derive(Debug)]
pub enum Outbound {
    /// Publish this message envelope on the room's channel.
    Message {
        /// The room.
        room: RoomId,
        /// The envelope ([`wire::message`]).
        bytes: Vec<u8>,
    },
    /// Shard `shard` now has `share` members in `room` (after `member` joined or left).
    Presence {
        /// The room.
        room: RoomId,
        /// The shard.
        shard: ShardId,
        /// Its members there now.
        share: Share,
        /// Who joined or left.
        member: Option<MemberChange>,
    },
    /// Another node appeared: publish the heartbeat now rather than at the next tick.
    HeartbeatNow,
}

/// What the publisher forwards to the subscriber: this node's shares, for routing and counts.
#[derive(Debug)]
pub struct LocalShare {
    /// The room.
    pub room: RoomId,
    /// The local shard.
    pub shard: ShardId,
    /// Its members there now.
    pub share: Share,
}

/// A shard's handle on the bridge.
#[derive(Clone)]
pub struct ClusterLink {
    tx: Sender<Outbound>,
    node: Arc<str>,
    stats: Arc<ClusterStats>,
}

impl ClusterLink {
    /// Hands a message a local member sent to the publisher (dropped and counted when the
    /// publisher is [`PUBLISH_QUEUE`] behind).
    pub fn publish(&self, room: &RoomId, post: &Post) {
        if self.tx.len() >= PUBLISH_QUEUE {
            self.stats.dropped(1);
            return;
        }
        let bytes = wire::message(&self.node, post);
        if self
            .tx
            .send(Outbound::Message {
                room: room.clone(),
                bytes,
            })
            .is_err()
        {
            self.stats.dropped(1);
        }
    }

    /// Tells the bridge that shard `shard` now has `share` members in `room`.
    pub fn presence(
        &self,
        room: &RoomId,
        shard: ShardId,
        share: Share,
        member: Option<MemberChange>,
    ) {
        // Never dropped: the publisher drains its queue even while Redis is down.
        let _ = self.tx.send(Outbound::Presence {
            room: room.clone(),
            shard,
            share,
            member,
        });
    }
}

/// Starts the bridge threads for a node of `workers` shards reached through `shards`; returns
/// the shards' handle.
pub fn start(
    url: &str,
    node: &str,
    presence: bool,
    shards: Vec<PeerHandle>,
    stats: Arc<ClusterStats>,
) -> Result<ClusterLink, ServerError> {
    let client = redis::Client::open(url).map_err(|e| ServerError::Redis {
        url: redacted(url),
        reason: e.to_string(),
    })?;
    let node: Arc<str> = Arc::from(node);
    // Unbounded on purpose: the publisher drains it at all times (Redis up or down), and
    // message entries are bounded by PUBLISH_QUEUE at the sender.
    let (tx, rx): (Sender<Outbound>, Receiver<Outbound>) = crossbeam_channel::unbounded();
    let (share_tx, share_rx) = crossbeam_channel::unbounded();
    let publisher = publisher::Publisher::new(
        client.clone(),
        node.clone(),
        shards.len(),
        rx,
        share_tx,
        stats.clone(),
    );
    let subscriber = subscriber::Subscriber::new(
        client,
        node.clone(),
        presence,
        shards,
        share_rx,
        tx.clone(),
        stats.clone(),
    );
    std::thread::Builder::new()
        .name("bridge-pub".into())
        .spawn(move || publisher.run())
        .map_err(ServerError::Bridge)?;
    std::thread::Builder::new()
        .name("bridge-sub".into())
        .spawn(move || subscriber.run())
        .map_err(ServerError::Bridge)?;
    Ok(ClusterLink { tx, node, stats })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_never_reach_the_log() {
        assert_eq!(redacted("redis://127.0.0.1:6379"), "redis://127.0.0.1:6379");
        assert_eq!(
            redacted("redis://:s3cret@10.0.0.5:6379/2"),
            "redis://:***@10.0.0.5:6379/2"
        );
        assert_eq!(
            redacted("redis://app:s3cret@host:6379"),
            "redis://app:***@host:6379"
        );
        assert_eq!(redacted("redis://token@host"), "redis://***@host");
        assert_eq!(redacted("not a url"), "not a url");
    }

    #[test]
    fn node_ids_follow_the_documented_rule() {
        assert!(valid_node_id("a") && valid_node_id("node-1_B") && valid_node_id(&"x".repeat(32)));
        assert!(!valid_node_id("") && !valid_node_id(&"x".repeat(33)) && !valid_node_id("a.b"));
        assert!(valid_node_id(&random_node_id()));
    }
}
