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
//! One process per node id: a node claims its id in Redis before it joins, and renews the
//! claim with every heartbeat ([`claim`]); a node started with a live node's id is refused,
//! and a running one that finds its id taken stands aside.
//!
//! Without `--redis` none of this exists: shards hold `None` and the message path has no
//! cluster code beyond that one check.
//!
//! **Everything is bounded** (`docs/cluster.md`, "Bounds and overflow"): shards reach
//! `bridge-pub` through one bounded queue they only ever `try_send` to ([`ClusterLink`]; a
//! shard never waits on the bridge), `bridge-pub` hands this node's shares to `bridge-sub`
//! through a map holding one entry per (room, shard) ([`shares`]), and `bridge-sub` reaches the
//! shards through their bounded inboxes and the mesh backlog ([`crate::mesh`]).

pub mod claim;
pub mod follows;
pub mod link;
pub mod publisher;
pub mod sequencer;
pub mod shares;
pub mod stats;
pub mod subscriber;
pub mod table;
pub mod wire;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use crossbeam_channel::{Receiver, Sender, TrySendError};

use crate::backoff::{Backoff, random_seed};
pub use crate::chat::MemberChange;
use crate::chat::Post;
use crate::control::{MemberInfo, Reply};
use crate::error::ServerError;
use crate::ids::ShardId;
pub use crate::ids::valid_node_id;
pub use crate::mesh::ClusterNews;
use crate::mesh::PeerHandle;
use crate::room::{RoomId, Share};
pub use stats::ClusterStats;

/// How often a node publishes its whole membership table.
pub const HEARTBEAT: Duration = Duration::from_secs(2);

/// A node not heard from for this long is taken out of every count (three heartbeats).
pub const NODE_EXPIRY: Duration = Duration::from_secs(6);

/// A message is queued for the publisher only while fewer items than this wait; past it,
/// messages are dropped and counted.
pub const PUBLISH_QUEUE: usize = 64 * 1024;

/// Room in the publisher's queue beyond [`PUBLISH_QUEUE`] that only presence changes (and the
/// subscriber's heartbeat requests) can use: they get in even while messages are being dropped,
/// unless joins and leaves alone outrun the publisher by this much (then [`ClusterLink`] keeps
/// the latest share of each room and retries it).
pub const PRESENCE_RESERVE: usize = 16 * 1024;

/// Capacity of the queue from the shards to the publisher. Its slots are allocated up front
/// (about 56 bytes each, so about 4.6 MB).
pub const OUTBOUND_CAPACITY: usize = PUBLISH_QUEUE + PRESENCE_RESERVE;

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
        /// Who joined or left (boxed: most slots of the queue hold messages, and its slots are
        /// allocated up front at the size of the largest variant).
        member: Option<Box<MemberChange>>,
    },
    /// A message of the server API (Redis sequencing): published as a member's is, and
    /// Redis's place for it answered to the API (boxed: it is rare, the queue's slots small).
    Api(Box<ApiMessage>),
    /// Another node appeared: publish the heartbeat now rather than at the next tick.
    HeartbeatNow,
    /// A loop has joins waiting for `room` to be synced (Redis as the sequencer): the
    /// subscriber is to follow it and read its state.
    Follow {
        /// The room.
        room: RoomId,
    },
    /// Publish this server API envelope on the presence channel (a disconnect, a presence
    /// question or an answer: [`wire::disconnect`], [`wire::ask`], [`wire::answer`]).
    Control {
        /// The envelope.
        bytes: Vec<u8>,
    },
}

/// A server API message for Redis to number, and where to answer its place.
#[derive(Debug)]
pub struct ApiMessage {
    /// The room.
    pub room: RoomId,
    /// The envelope ([`wire::message`]).
    pub bytes: Vec<u8>,
    /// The API request's index (a broadcast publishes to several rooms).
    pub index: usize,
    /// Where the API waits: [`Reply::Published`] with Redis's epoch and offset.
    pub reply: Sender<Reply>,
}

/// One shard of another node answering this node's presence question (docs/api.md).
#[derive(Debug)]
pub struct RemoteMembers {
    /// The answering node.
    pub node: String,
    /// How many shards it has (each answers once).
    pub shards: u16,
    /// The shard's members of the room.
    pub members: Vec<MemberInfo>,
}

/// The server API's presence questions waiting for other nodes' answers, by request id:
/// shared by the API's threads (which ask) and `bridge-sub` (which hands the answers over).
/// Not on any loop's path.
pub type Questions = Arc<Mutex<HashMap<u64, Sender<RemoteMembers>>>>;

/// A presence question in flight; dropping it stops taking answers.
pub struct Question {
    /// The answers, as they come.
    pub answers: Receiver<RemoteMembers>,
    request: u64,
    questions: Questions,
}

impl Drop for Question {
    fn drop(&mut self) {
        lock(&self.questions).remove(&self.request);
    }
}

/// Most answers (one per shard of every other node) a question keeps before it is read.
const ANSWERS: usize = 4096;

/// What the publisher forwards to the subscriber: this node's shares, for routing and counts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalShare {
    /// The room.
    pub room: RoomId,
    /// The local shard.
    pub shard: ShardId,
    /// Its members there now.
    pub share: Share,
}

/// A loop thread's handle on the bridge. It never blocks: everything goes through
/// `try_send` on the bounded queue to `bridge-pub`.
///
/// Each loop thread owns its own clone, because the handle keeps per-thread state: the
/// presence changes the queue had no room for. Only the latest share of a room matters for
/// counts, so a change that cannot be queued waits as its room's *pending* share (replacing an
/// older one) and is retried every loop turn ([`ClusterLink::retry_pending`]); the member who
/// joined or left is forgotten, and other nodes hear of the change as a count (`online`)
/// instead of a `join`/`leave`. A clone starts with nothing pending.
pub struct ClusterLink {
    tx: Sender<Outbound>,
    node: Arc<str>,
    stats: Arc<ClusterStats>,
    questions: Questions,
    /// Latest share of each (room, shard) the queue had no room for: at most one entry per
    /// room this thread has members in, or has just emptied while the bridge believes it has.
    pending: HashMap<(RoomId, ShardId), Share>,
    /// The (room, shard) pairs whose last share the queue took was not zero. A change to zero
    /// of any other pair has nothing to tell (the bridge never heard of its members: their
    /// join was still pending), which is what bounds `pending` by the rooms with members.
    told: HashSet<(RoomId, ShardId)>,
}

impl Clone for ClusterLink {
    /// A handle for another loop thread: same queue, nothing pending.
    fn clone(&self) -> Self {
        ClusterLink::new(
            self.tx.clone(),
            self.node.clone(),
            self.stats.clone(),
            self.questions.clone(),
        )
    }
}

impl ClusterLink {
    pub(crate) fn new(
        tx: Sender<Outbound>,
        node: Arc<str>,
        stats: Arc<ClusterStats>,
        questions: Questions,
    ) -> Self {
        ClusterLink {
            tx,
            node,
            stats,
            questions,
            pending: HashMap::new(),
            told: HashSet::new(),
        }
    }

    /// Hands a message a local member sent to the publisher; dropped and counted when
    /// [`PUBLISH_QUEUE`] items already wait (the rest of the queue is kept for presence).
    pub fn publish(&self, room: &RoomId, post: &Post) {
        // Several threads may pass this check at once: messages can overshoot PUBLISH_QUEUE by
        // one per loop thread, within the reserve.
        if self.tx.len() >= PUBLISH_QUEUE {
            self.stats.dropped(1);
            return;
        }
        let bytes = wire::message(&self.node, post);
        let message = Outbound::Message {
            room: room.clone(),
            bytes,
        };
        // Full only once presence has taken the reserve as well; disconnected once the bridge
        // is gone (the server is stopping). Either way the message is lost, and counted.
        if self.tx.try_send(message).is_err() {
            self.stats.dropped(1);
        }
    }

    /// Whether messages can be ordered now: the link works end to end (the node's heartbeat
    /// came back through Redis, `shardcast_cluster_up`), the publisher holds a connection,
    /// and this process holds its node id. Checked per message, so that a sender learns at
    /// once that its message was not sent, rather than it being dropped in a failing pipeline.
    pub fn can_sequence(&self) -> bool {
        let link = &self.stats.link;
        link.is_up() && link.is_connected(link::Side::Publish) && link.clash().is_none()
    }

    /// Hands a message a local member sent to the publisher, which runs Redis's publish
    /// script on it (history on: Redis numbers it). False, counted as dropped, when it cannot
    /// be ordered now (Redis unreachable, the link not proven yet, or this process lost its
    /// node id), or the publisher's queue is full. The sender is then told, and nothing is delivered.
    pub fn sequence(&self, room: &RoomId, post: &Post) -> bool {
        if !self.can_sequence() {
            self.stats.dropped(1);
            return false;
        }
        if self.tx.len() >= PUBLISH_QUEUE {
            self.stats.dropped(1);
            return false;
        }
        let bytes = wire::message(&self.node, post);
        let message = Outbound::Message {
            room: room.clone(),
            bytes,
        };
        if self.tx.try_send(message).is_err() {
            self.stats.dropped(1);
            return false;
        }
        true
    }

    /// [`ClusterLink::sequence`] for a message of the server API: the publisher answers
    /// `reply` with Redis's place for it once the script ran (not at all if it could not).
    pub fn sequence_for_api(
        &self,
        room: &RoomId,
        post: &Post,
        index: usize,
        reply: Sender<Reply>,
    ) -> bool {
        if !self.can_sequence() {
            self.stats.dropped(1);
            return false;
        }
        let message = ApiMessage {
            room: room.clone(),
            bytes: wire::message(&self.node, post),
            index,
            reply,
        };
        if self.tx.try_send(Outbound::Api(Box::new(message))).is_err() {
            self.stats.dropped(1);
            return false;
        }
        true
    }

    /// Asks the bridge to follow `room` and sync it (joins wait for that). Best effort: a
    /// request the queue has no room for is asked again at the loop's next history sweep.
    pub fn follow(&self, room: &RoomId) {
        let _ = self.tx.try_send(Outbound::Follow { room: room.clone() });
    }

    /// The server API asks node `target` to close its session `session` (`"<worker>.<seq>"`)
    /// with `code` and `text`. False when the bridge's queue has no room (or it is gone).
    pub fn disconnect(&self, target: &str, session: &str, code: u16, text: &str) -> bool {
        let bytes = wire::disconnect(&self.node, target, session, code, text);
        self.tx.try_send(Outbound::Control { bytes }).is_ok()
    }

    /// The server API asks every other node to close every session of `user`. False when
    /// the bridge's queue has no room (or it is gone).
    pub fn disconnect_user(&self, user: &str, code: u16, text: &str) -> bool {
        let bytes = wire::disconnect_user(&self.node, user, code, text);
        self.tx.try_send(Outbound::Control { bytes }).is_ok()
    }

    /// The server API asks every other node for its members of `room`; `None` when the
    /// bridge's queue has no room (or it is gone).
    pub fn ask_presence(&self, room: &RoomId) -> Option<Question> {
        let request = random_seed();
        let (tx, answers) = crossbeam_channel::bounded(ANSWERS);
        lock(&self.questions).insert(request, tx);
        let question = Question {
            answers,
            request,
            questions: self.questions.clone(),
        };
        let bytes = wire::ask(&self.node, request, room.as_str());
        self.tx
            .try_send(Outbound::Control { bytes })
            .is_ok()
            .then_some(question)
    }

    /// Shard `shard` (of `shards`) answers node `target`'s presence question `request` with
    /// its `members` (best effort: with the bridge's queue full the answer is lost, and the
    /// asker says its answer is incomplete).
    pub fn answer_presence(
        &self,
        target: &str,
        request: u64,
        shards: (u16, u16),
        members: &[MemberInfo],
    ) {
        let listed = members.iter().map(|m| wire::Listed {
            id: &m.id,
            nick: m.nick.as_ref().map(|n| n.as_str()),
            v1: m.v1,
        });
        let bytes = wire::answer(&self.node, target, request, shards, listed);
        let _ = self.tx.try_send(Outbound::Control { bytes });
    }

    /// Other nodes heard from lately.
    pub fn nodes(&self) -> u64 {
        self.stats.nodes()
    }

    /// Whether this node's members were told that cross-node delivery stopped (and not yet
    /// that it resumed): a v1 member joining now is told as well, after its welcome.
    pub fn cut_off(&self) -> bool {
        self.stats.link.is_cut_off()
    }

    /// Tells the bridge that shard `shard` now has `share` members in `room`, after `member`
    /// joined or left. When the queue is full the share waits as the room's pending share (see
    /// the type's docs) and the member is forgotten; the change is counted as deferred.
    pub fn presence(
        &mut self,
        room: &RoomId,
        shard: ShardId,
        share: Share,
        member: Option<MemberChange>,
    ) {
        let key = (room.clone(), shard);
        // This share supersedes whatever was still waiting for the room.
        if !self.pending.is_empty() {
            self.pending.remove(&key);
        }
        if share.total() == 0 && !self.told.contains(&key) {
            return; // the join it undoes never reached the bridge either
        }
        let item = Outbound::Presence {
            room: room.clone(),
            shard,
            share,
            member: member.map(Box::new),
        };
        match self.tx.try_send(item) {
            Ok(()) => note_told(&mut self.told, key, share),
            Err(TrySendError::Full(_)) => {
                self.stats.presence_deferred(1);
                self.pending.insert(key, share);
            }
            // The bridge is gone: the server is stopping.
            Err(TrySendError::Disconnected(_)) => {}
        }
    }

    /// Offers the pending shares to the queue again; the loop calls it once per turn (one
    /// branch when nothing waits). Returns true while some still wait: nothing wakes the loop
    /// when the queue gets room, so it should poll again soon rather than sleep.
    #[must_use = "while true, the loop must poll again soon to retry"]
    pub fn retry_pending(&mut self) -> bool {
        if self.pending.is_empty() {
            return false;
        }
        let mut full = false;
        let (tx, told) = (&self.tx, &mut self.told);
        self.pending.retain(|(room, shard), share| {
            if full {
                return true;
            }
            let item = Outbound::Presence {
                room: room.clone(),
                shard: *shard,
                share: *share,
                member: None,
            };
            match tx.try_send(item) {
                Ok(()) => {
                    note_told(told, (room.clone(), *shard), *share);
                    false
                }
                Err(TrySendError::Full(_)) => {
                    full = true;
                    true
                }
                Err(TrySendError::Disconnected(_)) => false,
            }
        });
        !self.pending.is_empty()
    }
}

/// Locks the questions (a panic elsewhere while holding it leaves a map that is still whole).
pub(crate) fn lock(questions: &Questions) -> MutexGuard<'_, HashMap<u64, Sender<RemoteMembers>>> {
    questions
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Records the share of `key` the queue just took.
fn note_told(told: &mut HashSet<(RoomId, ShardId)>, key: (RoomId, ShardId), share: Share) {
    if share.total() > 0 {
        told.insert(key);
    } else {
        told.remove(&key);
    }
}

/// What a stopping node does last: give up its node id, so that a successor with the same id
/// starts at once instead of waiting for the claim to lapse.
pub struct Departure {
    client: redis::Client,
    claim: claim::Claim,
    stats: Arc<ClusterStats>,
}

impl Departure {
    /// Stops the publisher and deletes the claim if it is still this process's (best effort:
    /// with Redis away, the claim lapses within [`NODE_EXPIRY`]).
    pub fn leave(self) {
        self.stats.link.set_leaving();
        if self.stats.link.clash().is_some() {
            return; // the id is another process's
        }
        let released =
            connect(&self.client, IO_TIMEOUT).and_then(|mut conn| self.claim.release(&mut conn));
        match released {
            Ok(_) => tracing::debug!("node id released"),
            Err(e) => tracing::debug!("node id not released ({e}): it lapses within 6 s"),
        }
    }
}

/// Starts the bridge threads for a node of `workers` shards reached through `shards`; returns
/// the shards' handle, and what the server does when it stops.
pub fn start(
    url: &str,
    node: &str,
    presence: bool,
    sequencing: Option<sequencer::Sequencing>,
    shards: Vec<PeerHandle>,
    stats: Arc<ClusterStats>,
) -> Result<(ClusterLink, Departure), ServerError> {
    let client = redis::Client::open(url).map_err(|e| ServerError::Redis {
        url: redacted(url),
        reason: e.to_string(),
    })?;
    let node: Arc<str> = Arc::from(node);
    // Drawn once per process: tells this process's heartbeats from another's with its id.
    let instance = random_seed();
    let claim = claim::Claim::new(&node, instance);
    claim_at_start(&client, &claim, &node, url)?;
    // The publisher drains it at all times (Redis up or down); shards only try_send to it.
    let (tx, rx): (Sender<Outbound>, Receiver<Outbound>) =
        crossbeam_channel::bounded(OUTBOUND_CAPACITY);
    let (share_tx, share_rx) = shares::handoff();
    let questions = Questions::default();
    let departure = Departure {
        client: client.clone(),
        claim: claim.clone(),
        stats: stats.clone(),
    };
    let publisher = publisher::Publisher::new(
        (client.clone(), claim),
        (node.clone(), instance),
        (shards.len(), sequencing),
        rx,
        share_tx,
        stats.clone(),
    );
    let subscriber = subscriber::Subscriber::new(
        client,
        (node.clone(), instance),
        (presence, sequencing),
        shards,
        share_rx,
        tx.clone(),
        (stats.clone(), questions.clone()),
    );
    std::thread::Builder::new()
        .name("bridge-pub".into())
        .spawn(move || {
            let _span = tracing::info_span!("bridge", role = "pub").entered();
            publisher.run()
        })
        .map_err(ServerError::Bridge)?;
    std::thread::Builder::new()
        .name("bridge-sub".into())
        .spawn(move || {
            let _span = tracing::info_span!("bridge", role = "sub").entered();
            subscriber.run()
        })
        .map_err(ServerError::Bridge)?;
    Ok((ClusterLink::new(tx, node, stats, questions), departure))
}

/// Takes the node id's claim before the node joins: refused when a live process holds it.
/// With Redis unreachable the node starts anyway; its publisher takes the claim once Redis
/// answers (and stops cross-node traffic if the id is taken by then).
fn claim_at_start(
    client: &redis::Client,
    claim: &claim::Claim,
    node: &str,
    url: &str,
) -> Result<(), ServerError> {
    let taken = connect(client, IO_TIMEOUT)
        .map_err(claim::Refused::Redis)
        .and_then(|mut conn| claim.take_at_start(&mut conn));
    match taken {
        Ok(()) => Ok(()),
        Err(claim::Refused::Live) => Err(ServerError::NodeIdTaken {
            node: node.to_owned(),
            key: claim::key(node),
        }),
        Err(claim::Refused::Redis(e)) => {
            tracing::warn!(
                "cannot reach Redis at {} to claim node id {node:?} ({e}); starting anyway: \
                 the claim is taken once Redis answers",
                redacted(url)
            );
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chat::Body;
    use crate::chat::envelope::Change;

    /// A shard's link on a queue of the real capacity that nobody drains unless told.
    fn link() -> (ClusterLink, Receiver<Outbound>) {
        let (tx, rx) = crossbeam_channel::bounded(OUTBOUND_CAPACITY);
        let stats = Arc::new(ClusterStats::default());
        (
            ClusterLink::new(tx, Arc::from("me"), stats, Questions::default()),
            rx,
        )
    }

    /// Fills what is left of the queue (as the subscriber's heartbeat requests would).
    fn fill(link: &ClusterLink) {
        while link.tx.try_send(Outbound::HeartbeatNow).is_ok() {}
    }

    fn metric(link: &ClusterLink, name: &str) -> u64 {
        let mut text = String::new();
        link.stats.render(&mut text);
        let line = text
            .lines()
            .find(|l| l.split(' ').next() == Some(name))
            .unwrap_or_else(|| panic!("{name} missing from {text}"));
        line.rsplit(' ').next().unwrap().parse().unwrap()
    }

    fn post() -> Post {
        Post {
            sender: Arc::from("me.0.1"),
            nick: None,
            user: None,
            body: Body::Text("hi".into()),
            ts: 1,
        }
    }

    fn room(name: &str) -> RoomId {
        RoomId::parse(name).unwrap()
    }

    fn share(plain: u32) -> Share {
        Share { plain, v1: 0 }
    }

    fn joined(id: &str) -> Option<MemberChange> {
        Some(MemberChange {
            change: Change::Join,
            id: Arc::from(id),
            nick: None,
            user: None,
        })
    }

    /// What the publisher would find in the queue now: presence as (room, share, member id).
    fn queued(rx: &Receiver<Outbound>) -> Vec<(String, u32, Option<String>)> {
        let mut out: Vec<_> = rx
            .try_iter()
            .filter_map(|item| match item {
                Outbound::Presence {
                    room,
                    share,
                    member,
                    ..
                } => Some((
                    room.as_str().to_owned(),
                    share.plain,
                    member.map(|m| m.id.to_string()),
                )),
                _ => None,
            })
            .collect();
        out.sort();
        out
    }

    #[test]
    fn the_queue_is_bounded_and_presence_has_room_of_its_own() {
        // The reserve is a real share of the queue, and the queue's slots stay small.
        const { assert!(PRESENCE_RESERVE >= PUBLISH_QUEUE / 8) };
        assert!(std::mem::size_of::<Outbound>() <= 48);
        let (link, rx) = link();
        assert_eq!(rx.capacity(), Some(OUTBOUND_CAPACITY));
        let r = room("r");
        for _ in 0..PUBLISH_QUEUE + 10 {
            link.publish(&r, &post());
        }
        assert_eq!(rx.len(), PUBLISH_QUEUE, "messages stop at PUBLISH_QUEUE");
        assert_eq!(metric(&link, "shardcast_cluster_publish_dropped_total"), 10);
        // Presence still gets in while messages are being dropped.
        let mut link = link;
        link.presence(&r, ShardId(0), share(1), joined("me.0.1"));
        assert_eq!(rx.len(), PUBLISH_QUEUE + 1);
        assert!(!link.retry_pending());
        assert_eq!(
            metric(&link, "shardcast_cluster_presence_deferred_total"),
            0
        );
        // With the reserve gone too, messages are still dropped and counted, never waited for.
        fill(&link);
        rx.recv().unwrap();
        link.publish(&r, &post());
        assert_eq!(metric(&link, "shardcast_cluster_publish_dropped_total"), 11);
    }

    #[test]
    fn presence_without_room_waits_and_the_latest_share_of_a_room_wins() {
        let (mut link, rx) = link();
        fill(&link);
        let (a, b) = (room("a"), room("b"));
        link.presence(&a, ShardId(0), share(1), joined("me.0.1"));
        link.presence(&a, ShardId(0), share(2), joined("me.0.2"));
        link.presence(&b, ShardId(0), share(1), joined("me.0.3"));
        assert_eq!(
            metric(&link, "shardcast_cluster_presence_deferred_total"),
            3
        );
        assert_eq!(link.pending.len(), 2, "one pending share per room");
        assert!(link.retry_pending(), "still full: still pending");
        // One slot frees up: one room gets in, the other keeps waiting.
        assert!(matches!(rx.recv(), Ok(Outbound::HeartbeatNow)));
        assert!(link.retry_pending());
        assert_eq!(link.pending.len(), 1);
        assert!(matches!(rx.recv(), Ok(Outbound::HeartbeatNow)));
        assert!(!link.retry_pending(), "all sent");
        assert!(!link.retry_pending(), "and nothing left to send");
        assert_eq!(
            queued(&rx),
            vec![("a".to_owned(), 2, None), ("b".to_owned(), 1, None)],
            "the latest share of each room, its members forgotten (counts only)"
        );
        assert_eq!(link.told.len(), 2);
        let clone = link.clone();
        assert!(
            clone.pending.is_empty() && clone.told.is_empty(),
            "a clone, for another thread, starts with nothing of this one's"
        );
    }

    #[test]
    fn a_newer_share_replaces_the_pending_one_and_a_leave_undoing_a_pending_join_says_nothing() {
        let (mut link, rx) = link();
        let (a, b) = (room("a"), room("b"));
        link.presence(&a, ShardId(0), share(1), joined("me.0.1"));
        assert_eq!(
            queued(&rx),
            vec![("a".to_owned(), 1, Some("me.0.1".to_owned()))]
        );
        fill(&link);
        // a: told 1, then 2 pending, then 0 → 0 must still reach the bridge.
        link.presence(&a, ShardId(0), share(2), joined("me.0.2"));
        link.presence(&a, ShardId(0), Share::default(), None);
        // b: never told; its join waits, then its leave undoes it → nothing to say.
        link.presence(&b, ShardId(0), share(1), joined("me.0.3"));
        link.presence(&b, ShardId(0), Share::default(), None);
        assert_eq!(link.pending.len(), 1);
        rx.try_iter().for_each(drop);
        assert!(!link.retry_pending());
        assert_eq!(queued(&rx), vec![("a".to_owned(), 0, None)]);
        assert!(link.told.is_empty(), "the bridge now knows no member here");
        // With room, a newer share goes straight in and drops the pending one.
        fill(&link);
        link.presence(&a, ShardId(0), share(1), None);
        rx.try_iter().for_each(drop);
        link.presence(&a, ShardId(0), share(3), joined("me.0.4"));
        assert!(link.pending.is_empty());
        assert!(!link.retry_pending());
        assert_eq!(
            queued(&rx),
            vec![("a".to_owned(), 3, Some("me.0.4".to_owned()))]
        );
    }

    #[test]
    fn the_shard_never_waits_on_the_bridge() {
        let (mut link, rx) = link();
        fill(&link);
        let (done_tx, done_rx) = crossbeam_channel::bounded(1);
        // On another thread, so that a blocking send fails this test instead of hanging it.
        let shard = std::thread::spawn(move || {
            let r = room("r");
            for i in 0..1000 {
                link.publish(&r, &post());
                link.presence(&r, ShardId(0), share(i % 3), joined("me.0.1"));
                let _ = link.retry_pending();
            }
            let _ = done_tx.send(());
            link
        });
        done_rx
            .recv_timeout(Duration::from_secs(60))
            .expect("a full queue made the shard wait");
        let mut link = shard.join().unwrap();
        assert_eq!(
            metric(&link, "shardcast_cluster_publish_dropped_total"),
            1000
        );
        assert_eq!(rx.len(), OUTBOUND_CAPACITY, "nothing more got in");
        // The bridge gone (the server stopping): nothing waits, nothing piles up.
        drop(rx);
        link.publish(&room("r"), &post());
        link.presence(&room("s"), ShardId(0), share(1), None);
        assert!(!link.retry_pending(), "pending dropped with the bridge");
    }

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
