//! `bridge-sub`: the subscription connection, and what other nodes' envelopes mean here.
//!
//! It keeps two tables: this node's shares per room (forwarded by the publisher, used to
//! subscribe, to render messages for the right dialects and to count), and every other node's
//! shares (from their presence envelopes and heartbeats). A room's `others` — its members on
//! other nodes — goes to every local shard in a `ShardMsg::Cluster`, with the news (a member
//! joined or left, or only the count changed) when presence notices are on; each shard renders
//! the `join`, `leave` or `online` envelope for its v1 members with its own count.
//!
//! A node not heard from for [`NODE_EXPIRY`] leaves every count. When Redis goes away the
//! thread retries with backoff (capped at [`RECONNECT_CAP`]), keeps the local table current
//! meanwhile, and on return resubscribes, asks for an immediate heartbeat, and logs and
//! counts how long cross-node delivery was down.
//!
//! **The link is up** when this node's own heartbeat comes back through Redis after the
//! subscription was made: proof that both connections work end to end (its delay is the lag
//! metric). When the link goes down (the subscription fails, or falls silent) every other node
//! leaves the counts at once, since nothing this node hears of them is current any more, and
//! each room's shards are told with [`ClusterNews::LinkDown`] (v1 members get a
//! `cluster_down` notice with the count the node can vouch for); when it is back,
//! [`ClusterNews::LinkUp`] (`cluster_up`), and the heartbeats that follow restore the counts.
//!
//! **A heartbeat with this node's id from another process** (another instance token) is a
//! node-id clash: logged loudly, and the publisher is asked to renew the claim at once, which
//! settles who keeps the id ([`crate::cluster::claim`]). The process that loses it stands
//! aside: it drops every other node from the counts, tells its members, and receives nothing
//! more until it is restarted.
//!
//! **Redis as the sequencer** (history on; docs/cluster.md, "One order across nodes"): the
//! thread also follows rooms ([`Follows`]): it subscribes to a room's channel, then reads the
//! room with its own command connection and hands the room's sequencer (its home shard) what
//! Redis has, then every sequenced message in offset order; after a gap or a new epoch it
//! reads the room again. When it leaves a room, or its subscription is lost, it tells the
//! sequencer, whose history then answers no join until it is synced again.
//!
//! Bounds: this node's shares arrive through [`crate::cluster::shares`] (latest per (room,
//! shard), never full). What goes to the shards passes through their bounded inboxes and this
//! thread's [`MeshLinks`] backlog: past [`crate::mesh::MAX_BACKLOG`] waiting for one shard,
//! further messages for it are dropped and counted (`delivery_dropped`); count changes
//! (`ShardMsg::Cluster`) are never dropped, as presence between shards is not.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::Sender;
use tungstenite::{Bytes, Utf8Bytes};

use crate::backoff::Backoff;
use crate::chat::envelope::Change;
use crate::chat::post::Needs;
use crate::chat::{Body, Nick, Outgoing, Post};
use crate::cluster::follows::Follows;
use crate::cluster::link::Side;
use crate::cluster::sequencer::{self, Sequencing};
use crate::cluster::shares::{ShareReceiver, Stopped};
use crate::cluster::table::NodeTable;
use crate::cluster::wire::{self, Envelope, Instance, Member};
use crate::cluster::{
    ClusterNews, ClusterStats, HEARTBEAT, LocalShare, MemberChange, NODE_EXPIRY, Outbound,
    PRESENCE_CHANNEL, Questions, RECONNECT_CAP, ROOM_CHANNEL_PREFIX, RemoteMembers, connect, lock,
    reconnect_backoff, room_channel,
};
use crate::control::{Control, MemberInfo, Target};
use crate::ids::SessionId;
use crate::mesh::{MeshLinks, PeerHandle, ShardId, ShardMsg};
use crate::room::{RoomId, Share};

/// Silence on the subscription longer than this means Redis hangs: our own heartbeat should
/// have come back well within it.
const SILENCE_LIMIT: Duration = Duration::from_secs(5);

/// Another node, as last heard.
struct RemoteNode {
    last_seen: Instant,
    /// Room → (its shard → share).
    rooms: HashMap<RoomId, HashMap<u16, Share>>,
}

impl RemoteNode {
    fn total(&self, room: &RoomId) -> u64 {
        self.rooms
            .get(room)
            .map_or(0, |shards| shards.values().map(|s| s.total()).sum())
    }
}

/// The subscribing thread.
pub struct Subscriber {
    client: redis::Client,
    node: Arc<str>,
    /// This process's token, as its heartbeats carry it.
    instance: u64,
    presence: bool,
    /// History on: Redis numbers every room's messages, and this thread follows them
    /// ([`Follows`]).
    follows: Option<Follows>,
    mesh: MeshLinks,
    workers: usize,
    share_rx: ShareReceiver,
    publisher: Sender<Outbound>,
    stats: Arc<ClusterStats>,
    /// The server API's presence questions waiting for answers.
    questions: Questions,
    /// This node's members.
    local: NodeTable,
    remote: HashMap<String, RemoteNode>,
    /// The `others` count each room's shards were last told.
    told: HashMap<RoomId, u64>,
    subscribed: HashSet<RoomId>,
    backoff: Backoff,
    /// This node's heartbeat came back since the subscription was made.
    link_up: bool,
    /// Since when cross-node delivery is down (after a failure; `None` while up, and at start).
    down_since: Option<Instant>,
    /// Members were told of the link going down: tell them when it is back.
    announced_down: bool,
    /// A connection was lost before: the next one is a reconnection.
    lost_before: bool,
    /// Instance tokens of other processes seen using this node's id (each logged once).
    clashers: HashSet<u64>,
}

enum Exit {
    /// The connection failed (or never came up).
    Lost(redis::RedisError),
    /// Another process holds this node's id.
    Clash,
    /// Every shard is gone: the server is stopping.
    Stopped,
}

/// Most clashing instance tokens remembered (so each is logged once); past it, more are
/// still counted, and logged at debug.
const CLASHERS: usize = 64;

impl Subscriber {
    /// A subscriber that hands messages to `shards`.
    pub fn new(
        client: redis::Client,
        (node, instance): (Arc<str>, u64),
        (presence, sequencing): (bool, Option<Sequencing>),
        shards: Vec<PeerHandle>,
        share_rx: ShareReceiver,
        publisher: Sender<Outbound>,
        // What it shares with the rest of the node: the figures, the API's open questions.
        (stats, questions): (Arc<ClusterStats>, Questions),
    ) -> Self {
        let workers = shards.len();
        Subscriber {
            client,
            node,
            instance,
            presence,
            follows: sequencing.map(Follows::new),
            // An id beyond every shard's: every shard is a peer.
            mesh: MeshLinks::new(ShardId(usize::MAX), shards),
            workers,
            share_rx,
            publisher,
            stats,
            questions,
            local: NodeTable::new(workers),
            remote: HashMap::new(),
            told: HashMap::new(),
            subscribed: HashSet::new(),
            backoff: reconnect_backoff(),
            link_up: false,
            down_since: None,
            announced_down: false,
            lost_before: false,
            clashers: HashSet::new(),
        }
    }

    /// Runs until the server stops: connected, or waiting to reconnect.
    pub fn run(mut self) {
        loop {
            if self.stats.link.clash().is_some() {
                return self.stand_aside();
            }
            match self.connected() {
                Exit::Stopped => return,
                Exit::Clash => continue,
                Exit::Lost(e) => self.went_down(&e),
            }
            let delay = self.backoff.next_delay().unwrap_or(RECONNECT_CAP);
            if !self.wait(delay) {
                return;
            }
        }
    }

    /// The subscription failed: cross-node delivery is down until the link is proven again.
    fn went_down(&mut self, error: &redis::RedisError) {
        self.lost_before = true;
        self.stats.link.disconnected(Side::Subscribe, error);
        self.stats.link.set_up(false);
        if self.down_since.is_none() {
            tracing::warn!("redis: cross-node delivery down: {error}");
            self.down_since = Some(Instant::now());
        } else {
            tracing::debug!("redis: still down: {error}");
        }
        if self.link_up {
            self.link_up = false;
            self.announce_down();
        }
        self.unfollow_all();
    }

    /// Redis sequencing: nothing said in the rooms reaches this node now (the subscription is
    /// gone), so no room's history may answer joins until it is synced again.
    fn unfollow_all(&mut self) {
        let Some(follows) = &mut self.follows else {
            return;
        };
        for (room, _) in follows.at.drain() {
            let home = room.home(self.workers);
            self.mesh.send(home, ShardMsg::Unfollow { room });
        }
        self.flush_to_shards();
    }

    /// This node's heartbeat came back, `sent_micros` after the epoch: the link works.
    fn echoed(&mut self, sent_micros: u64) {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_micros() as u64);
        self.stats
            .echoed(Duration::from_micros(now.saturating_sub(sent_micros)));
        if self.link_up {
            return;
        }
        self.link_up = true;
        self.stats.link.set_up(true);
        match self.down_since.take() {
            Some(since) => {
                let down = since.elapsed();
                self.stats.outage_ended(down);
                tracing::info!(
                    "redis: cross-node delivery restored after {:.1} s",
                    down.as_secs_f64()
                );
            }
            None => tracing::info!("redis: node {} linked: cross-node delivery on", self.node),
        }
        if std::mem::take(&mut self.announced_down) {
            self.announce_up();
        }
    }

    /// Every other node leaves the counts (nothing heard of them is current now), and each
    /// room with members here hears that cross-node delivery stopped.
    fn announce_down(&mut self) {
        self.remote.clear();
        self.stats.set_nodes(0);
        self.stats.forget_peers();
        let rooms: HashSet<RoomId> = self
            .told
            .drain()
            .map(|(room, _)| room)
            .chain(self.local.rooms().cloned())
            .collect();
        for room in rooms {
            self.tell_shards(&room, 0, Some(ClusterNews::LinkDown));
        }
        self.announced_down = true;
        self.stats.link.set_cut_off(true);
        self.flush_to_shards();
    }

    /// Each room with members here hears that cross-node delivery is back (the counts follow
    /// with the other nodes' heartbeats).
    fn announce_up(&mut self) {
        self.stats.link.set_cut_off(false);
        let rooms: Vec<RoomId> = self.local.rooms().cloned().collect();
        for room in rooms {
            let others = self.others(&room);
            self.note_told(&room, others);
            self.tell_shards(&room, others, Some(ClusterNews::LinkUp));
        }
    }

    /// Another process holds this node's id: cross-node delivery stops here for good. The
    /// thread only keeps the local table until the server stops.
    fn stand_aside(mut self) {
        self.stats
            .link
            .disconnected(Side::Subscribe, &"stopped: node id clash");
        self.stats.link.set_up(false);
        self.link_up = false;
        self.announce_down();
        while self.wait(HEARTBEAT) {}
    }

    /// Waits `delay`, keeping the local table current and expiring silent nodes. False once
    /// the server is stopping.
    fn wait(&mut self, delay: Duration) -> bool {
        let until = Instant::now() + delay;
        loop {
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return true;
            }
            match self.share_rx.wait(left) {
                Ok(shares) => shares.into_iter().for_each(|s| self.apply_share(s)),
                Err(Stopped) => return false,
            }
            self.take_follow_requests();
            self.expire_nodes();
            self.flush_to_shards();
        }
    }

    /// One connection's life: subscribe, then take messages until it fails.
    fn connected(&mut self) -> Exit {
        let mut conn = match connect(&self.client, SILENCE_LIMIT) {
            Ok(conn) => conn,
            Err(e) => return Exit::Lost(e),
        };
        if let Some(follows) = &mut self.follows
            && let Err(e) = follows.connect(&self.client)
        {
            return Exit::Lost(e);
        }
        let mut pubsub = conn.as_pubsub();
        // Whatever was subscribed before is gone with the old connection (and with it what
        // followed rooms' histories knew is no longer current: those wanted are synced anew).
        self.subscribed.clear();
        self.unfollow_all();
        if let Err(e) = pubsub.subscribe(PRESENCE_CHANNEL) {
            return Exit::Lost(e);
        }
        if let Err(e) = self.sync_subscriptions(&mut pubsub) {
            return Exit::Lost(e);
        }
        self.stats.link.connected(Side::Subscribe, self.lost_before);
        self.backoff.reset();
        tracing::debug!("redis: node {} subscribed", self.node);
        // Let the others know of us (and we of them) without waiting for a tick; its echo
        // proves the link.
        self.heartbeat_now();
        loop {
            let msg = match pubsub.get_message() {
                Ok(msg) => msg,
                Err(e) => return Exit::Lost(e),
            };
            let payload = msg.get_payload_bytes();
            if payload.starts_with(sequencer::SEQUENCED) {
                if let Err(e) = self.on_sequenced(msg.get_channel_name(), payload) {
                    return Exit::Lost(e);
                }
            } else if !payload.starts_with(sequencer::WAKE) {
                self.handle(msg.get_channel_name(), payload);
            }
            if self.stats.link.clash().is_some() {
                return Exit::Clash;
            }
            match self.share_rx.try_take() {
                Ok(shares) => shares.into_iter().for_each(|s| self.apply_share(s)),
                Err(Stopped) => return Exit::Stopped,
            }
            self.take_follow_requests();
            if let Err(e) = self.sync_subscriptions(&mut pubsub) {
                return Exit::Lost(e);
            }
            if let Some(follows) = &mut self.follows
                && let Err(e) = follows.refresh(Instant::now())
            {
                return Exit::Lost(e);
            }
            self.expire_nodes();
            self.flush_to_shards();
        }
    }

    /// Asks the publisher for a heartbeat now. Never waits: with the publisher's queue full
    /// the request is dropped, and the regular heartbeat (within [`HEARTBEAT`]) does the same.
    fn heartbeat_now(&self) {
        let _ = self.publisher.try_send(Outbound::HeartbeatNow);
    }

    /// Hands what waits to the shards and wakes them; counts messages a full shard refused.
    fn flush_to_shards(&mut self) {
        self.mesh.flush();
        self.stats
            .delivery_dropped(std::mem::take(&mut self.mesh.dropped));
        // A count that had to wait still arrives (as an `online` notice); only its join or
        // leave line was lost, which is counted with the dropped deliveries.
        self.stats
            .delivery_dropped(std::mem::take(&mut self.mesh.notices_dropped));
    }

    /// Subscribes to rooms that gained local members (or, Redis sequencing, that a loop
    /// asked to follow) and leaves those that lost them all. With Redis sequencing, a room is
    /// read right after its subscription is made, and its sequencer told when it is left.
    fn sync_subscriptions(&mut self, pubsub: &mut redis::PubSub) -> redis::RedisResult<()> {
        if let Some(follows) = &mut self.follows {
            follows.expire_requests(Instant::now());
        }
        let requested = self.follows.iter().flat_map(Follows::requested);
        let wanted: Vec<RoomId> = self
            .local
            .rooms()
            .chain(requested)
            .filter(|room| !self.subscribed.contains(*room))
            .cloned()
            .collect::<HashSet<_>>()
            .into_iter()
            .collect();
        for room in &wanted {
            pubsub.subscribe(room_channel(room.as_str()))?;
            self.subscribed.insert(room.clone());
            // Subscribed first, then read: nothing published in between is missed (what
            // the read already has comes again live, and is skipped by its offset).
            self.sync_room(room)?;
        }
        if let Some(follows) = &mut self.follows {
            // Asked again while followed: its sequencer no longer trusts its history.
            let fresh: Vec<RoomId> = follows.fresh.drain().collect();
            for room in fresh {
                if self.subscribed.contains(&room) && !wanted.contains(&room) {
                    self.sync_room(&room)?;
                }
            }
        }
        let unwanted: Vec<RoomId> = self
            .subscribed
            .iter()
            .filter(|room| {
                !self.local.contains(room)
                    && !self
                        .follows
                        .as_ref()
                        .is_some_and(|f| f.requested().any(|r| r == *room))
            })
            .cloned()
            .collect();
        for room in unwanted {
            pubsub.unsubscribe(room_channel(room.as_str()))?;
            self.subscribed.remove(&room);
            if let Some(follows) = &mut self.follows {
                follows.at.remove(&room);
                let home = room.home(self.workers);
                self.mesh.send(home, ShardMsg::Unfollow { room });
            }
        }
        Ok(())
    }

    /// Takes the rooms loops asked to follow (Redis sequencing).
    fn take_follow_requests(&mut self) {
        if let Some(follows) = &mut self.follows {
            let now = Instant::now();
            for room in self.share_rx.take_follows() {
                follows.request(room, now);
            }
        }
    }

    /// Reads `room` from Redis and hands it to its sequencer (Redis sequencing; else
    /// nothing to do).
    fn sync_room(&mut self, room: &RoomId) -> redis::RedisResult<()> {
        let Some(follows) = &mut self.follows else {
            return Ok(());
        };
        let Some(batch) = follows.read(room)? else {
            return Ok(());
        };
        follows.at.insert(room.clone(), (batch.epoch, batch.offset));
        let home = room.home(self.workers);
        self.mesh.send(
            home,
            ShardMsg::Sequenced {
                room: room.clone(),
                batch: Box::new(batch),
            },
        );
        Ok(())
    }

    /// A message Redis numbered (its publish script) on `channel`: handed to the room's
    /// sequencer if it is the next; skipped if it was handed over already (by a read);
    /// after a gap or in another epoch, the room is read again instead.
    fn on_sequenced(&mut self, channel: &str, payload: &[u8]) -> redis::RedisResult<()> {
        let Some(room) = channel
            .strip_prefix(ROOM_CHANNEL_PREFIX)
            .and_then(RoomId::parse)
        else {
            return Ok(());
        };
        let (Some(follows), Some((epoch, offset, envelope))) =
            (&mut self.follows, sequencer::sequenced(payload))
        else {
            tracing::debug!("redis: ignoring a malformed message on {channel}");
            return Ok(());
        };
        let Some(&(at_epoch, at)) = follows.at.get(&room) else {
            return Ok(()); // not followed (any more)
        };
        self.stats.received();
        if epoch == at_epoch && offset <= at {
            return Ok(()); // the read that synced the room had it
        }
        if epoch != at_epoch || offset != at + 1 {
            tracing::debug!(
                room = room.as_str(),
                "redis: message {offset} after {at}: reading the room again"
            );
            return self.sync_room(&room);
        }
        let Some((node, post)) = sequencer::post(envelope) else {
            // Unreadable: the room is read again, whose sequencer then knows what it misses.
            return self.sync_room(&room);
        };
        if node != &*self.node {
            self.heard_from(node);
        }
        follows_at(&mut self.follows, &room, (epoch, offset));
        let home = room.home(self.workers);
        let batch = crate::history::Batch {
            epoch,
            offset,
            entries: vec![(offset, post)],
        };
        self.mesh.send(
            home,
            ShardMsg::Sequenced {
                room,
                batch: Box::new(batch),
            },
        );
        Ok(())
    }

    fn apply_share(&mut self, LocalShare { room, shard, share }: LocalShare) {
        self.local.set(&room, shard, share);
    }

    /// What one Redis message means here.
    fn handle(&mut self, channel: &str, payload: &[u8]) {
        let Some(envelope) = wire::decode(payload) else {
            tracing::debug!("redis: ignoring a malformed envelope on {channel}");
            return;
        };
        match envelope {
            Envelope::Heartbeat {
                node,
                instance: Some(Instance { token, sent_micros }),
                ..
            } if node == &*self.node && token == self.instance => self.echoed(sent_micros),
            Envelope::Heartbeat { node, instance, .. } if node == &*self.node => {
                self.another_instance(instance.map(|i| i.token));
            }
            Envelope::Message { node, .. }
            | Envelope::Presence { node, .. }
            | Envelope::Heartbeat { node, .. }
            | Envelope::Disconnect { node, .. }
            | Envelope::DisconnectUser { node, .. }
            | Envelope::Ask { node, .. }
            | Envelope::Answer { node, .. }
                if node == &*self.node => {} // our own echo (it woke us, which was the point)
            Envelope::Ask {
                node,
                request,
                room,
            } => {
                let Some(room) = RoomId::parse(room) else {
                    return;
                };
                let target: Arc<str> = Arc::from(node);
                // Each shard answers for its own members, straight to the publisher.
                self.mesh.send_to_others(|| {
                    ShardMsg::Control(Box::new(Control::PresenceFor {
                        room: room.clone(),
                        target: target.clone(),
                        request,
                    }))
                });
            }
            Envelope::Answer {
                node,
                target,
                request,
                shards,
                members,
                ..
            } => {
                if target != &*self.node {
                    return;
                }
                let questions = lock(&self.questions);
                let Some(waiting) = questions.get(&request) else {
                    return; // answered too late: the question is over
                };
                let members = members
                    .into_iter()
                    .map(|m| MemberInfo {
                        id: Arc::from(m.id),
                        nick: m.nick.and_then(Nick::parse),
                        v1: m.v1,
                        user: None,
                    })
                    .collect();
                let _ = waiting.try_send(RemoteMembers {
                    node: node.to_owned(),
                    shards,
                    members,
                });
            }
            Envelope::Disconnect {
                target,
                session,
                code,
                text,
                ..
            } => {
                if target == &*self.node
                    && let Some(id) = SessionId::parse(session)
                {
                    self.disconnect(Target::Session(id), code, text);
                }
            }
            Envelope::DisconnectUser {
                user, code, text, ..
            } => self.disconnect(Target::User(Arc::from(user)), code, text),
            Envelope::Message {
                node,
                sender,
                nick,
                user,
                binary,
                ts,
                payload,
            } => {
                let Some(room) = channel
                    .strip_prefix(ROOM_CHANNEL_PREFIX)
                    .and_then(RoomId::parse)
                else {
                    return;
                };
                if !self.subscribed.contains(&room) {
                    return; // sent before we unsubscribed
                }
                self.stats.received();
                self.heard_from(node);
                let body = if binary {
                    Body::Binary(Bytes::copy_from_slice(payload))
                } else {
                    // `decode` checked the UTF-8 already.
                    match String::from_utf8(payload.to_vec()) {
                        Ok(text) => Body::Text(Utf8Bytes::from(text)),
                        Err(_) => return,
                    }
                };
                let post = Post {
                    sender: Arc::from(sender),
                    nick: nick.and_then(Nick::parse),
                    user: user.map(Arc::from),
                    body,
                    ts,
                };
                if self.follows.is_some() {
                    // History on: only what Redis numbered has a place in the room's order
                    // (a node with history off sends these; all nodes must agree on it).
                    tracing::debug!("redis: ignoring an unnumbered message in {room:?}");
                    return;
                }
                let share = self.local.total(&room);
                let needs = Needs {
                    plain: share.plain > 0,
                    v1: share.v1 > 0,
                };
                let out = Outgoing::new(post, needs);
                for shard in 0..self.workers {
                    self.mesh.send(
                        ShardId(shard),
                        ShardMsg::Broadcast {
                            room: room.clone(),
                            post: out.clone(),
                        },
                    );
                }
            }
            Envelope::Presence {
                node,
                room,
                shard,
                share,
                member,
            } => {
                let Some(room) = RoomId::parse(room) else {
                    return;
                };
                self.stats.received();
                let remote = self.heard_from(node);
                let shards = remote.rooms.entry(room.clone()).or_default();
                if share.total() > 0 {
                    shards.insert(shard, share);
                } else {
                    shards.remove(&shard);
                    if shards.is_empty() {
                        remote.rooms.remove(&room);
                    }
                }
                self.tell_room(&room, member);
            }
            Envelope::Heartbeat { node, shares, .. } => {
                self.stats.received();
                self.stats.heartbeat_from(node);
                let mut rooms: HashMap<RoomId, HashMap<u16, Share>> = HashMap::new();
                for (room, shard, share) in shares {
                    if let Some(room) = RoomId::parse(room)
                        && share.total() > 0
                    {
                        rooms.entry(room).or_default().insert(shard, share);
                    }
                }
                let remote = self.heard_from(node);
                let old = std::mem::replace(&mut remote.rooms, rooms);
                let affected: HashSet<RoomId> = old
                    .into_keys()
                    .chain(remote.rooms.keys().cloned())
                    .collect();
                for room in affected {
                    self.tell_room(&room, None);
                }
            }
        }
    }

    /// Another process (with `token`; none from a node too old to send one) sent a heartbeat
    /// with this node's id. The publisher renews the claim at once: whichever process does
    /// not hold it stops.
    fn another_instance(&mut self, token: Option<u64>) {
        self.stats.clash_seen();
        let token = token.unwrap_or(0);
        if self.clashers.len() < CLASHERS && self.clashers.insert(token) {
            tracing::error!(
                "cluster: another process (instance {token:016x}) uses this node's id {:?}: \
                 the one that does not hold the id's claim in Redis stops its cross-node \
                 traffic. Give each node its own --node-id",
                &*self.node
            );
        } else {
            tracing::debug!(
                "cluster: instance {token:016x} still uses node id {}",
                self.node
            );
        }
        self.heartbeat_now();
    }

    /// Another node's server API asks to close `target` (a session of this node, or every
    /// session of a user): every shard closes what is theirs (nobody waits for answers).
    fn disconnect(&mut self, target: Target, code: u16, text: &str) {
        let text: Arc<str> = Arc::from(text);
        // Nobody reads the answers: the shards' `try_send` finds the channel closed.
        let (reply, _) = crossbeam_channel::bounded(0);
        self.mesh.send_to_others(|| {
            ShardMsg::Control(Box::new(Control::Disconnect {
                target: target.clone(),
                code,
                text: text.clone(),
                reply: reply.clone(),
            }))
        });
    }

    fn heard_from(&mut self, node: &str) -> &mut RemoteNode {
        if !self.remote.contains_key(node) {
            tracing::info!("cluster: node {node} appeared");
            self.heartbeat_now();
            self.stats.set_nodes(self.remote.len() + 1);
        }
        let remote = self.remote.entry(node.to_owned()).or_insert(RemoteNode {
            last_seen: Instant::now(),
            rooms: HashMap::new(),
        });
        remote.last_seen = Instant::now();
        remote
    }

    /// Takes nodes not heard from for [`NODE_EXPIRY`] out of every count.
    fn expire_nodes(&mut self) {
        let now = Instant::now();
        let silent: Vec<String> = self
            .remote
            .iter()
            .filter(|(_, n)| now.duration_since(n.last_seen) >= NODE_EXPIRY)
            .map(|(name, _)| name.clone())
            .collect();
        for name in silent {
            let Some(node) = self.remote.remove(&name) else {
                continue;
            };
            let members: u64 = node.rooms.keys().map(|r| node.total(r)).sum();
            tracing::warn!(
                "cluster: node {name} not heard from for {} s; its {members} member(s) leave \
                 the counts",
                NODE_EXPIRY.as_secs()
            );
            self.stats.set_nodes(self.remote.len());
            self.stats.forget_peer(&name);
            for room in node.rooms.keys() {
                self.tell_room(room, None);
            }
        }
    }

    /// Tells every local shard the room's new `others` count, with the notice for its v1
    /// members: `join`/`leave` for a known member, `online` when only the count changed.
    fn tell_room(&mut self, room: &RoomId, member: Option<Member<'_>>) {
        let others = self.others(room);
        let before = self.told.get(room).copied().unwrap_or(0);
        if others == before && member.is_none() {
            return;
        }
        self.note_told(room, others);
        let news = self.presence.then(|| match &member {
            Some(m) => ClusterNews::Member(MemberChange {
                change: m.change,
                id: Arc::from(m.id),
                nick: m.nick.and_then(Nick::parse),
                user: m.user.map(Arc::from),
            }),
            None => ClusterNews::Count,
        });
        self.tell_shards(room, others, news);
        if member.is_some_and(|m| m.change == Change::Join) {
            tracing::debug!("cluster: {room:?} has {others} member(s) on other nodes");
        }
    }
}

impl Subscriber {
    /// `room`'s members on other nodes, as last heard.
    fn others(&self, room: &RoomId) -> u64 {
        self.remote.values().map(|n| n.total(room)).sum()
    }

    /// Records the `others` count the room's shards are about to be told.
    fn note_told(&mut self, room: &RoomId, others: u64) {
        if others > 0 {
            self.told.insert(room.clone(), others);
        } else {
            self.told.remove(room);
        }
    }

    /// Tells every local shard `room`'s `others` count, with `news` for its v1 members.
    fn tell_shards(&mut self, room: &RoomId, others: u64, news: Option<ClusterNews>) {
        for shard in 0..self.workers {
            self.mesh.send(
                ShardId(shard),
                ShardMsg::Cluster {
                    room: room.clone(),
                    others,
                    news: news.clone(),
                },
            );
        }
    }
}

/// Records where `room` stands (Redis sequencing).
fn follows_at(follows: &mut Option<Follows>, room: &RoomId, at: (crate::history::Epoch, u64)) {
    if let Some(follows) = follows {
        follows.at.insert(room.clone(), at);
    }
}

// HEARTBEAT is referenced in docs; keep the silence limit meaningfully above it.
const _: () = assert!(SILENCE_LIMIT.as_secs() > 2 * HEARTBEAT.as_secs());

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chat::Dialect;
    use crate::chat::envelope::Change;
    use crate::cluster::wire::Member;
    use crossbeam_channel::Receiver as Inbox;

    struct Rig {
        sub: Subscriber,
        inboxes: Vec<Inbox<ShardMsg>>,
        /// What the subscriber asks of the publisher.
        publisher: Inbox<Outbound>,
        _polls: Vec<mio::Poll>,
    }

    /// This process's instance token in the tests.
    const ME: u64 = 7;

    /// A heartbeat's instance: another process's token, sent at `sent_micros`.
    fn at(sent_micros: u64) -> Instance {
        Instance {
            token: 99,
            sent_micros,
        }
    }

    fn now_micros() -> u64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_micros() as u64
    }

    fn rig(presence: bool) -> Rig {
        let mut polls = Vec::new();
        let mut handles = Vec::new();
        let mut inboxes = Vec::new();
        for _ in 0..2 {
            let poll = mio::Poll::new().unwrap();
            let waker = Arc::new(mio::Waker::new(poll.registry(), mio::Token(0)).unwrap());
            let (tx, rx) = crossbeam_channel::bounded(64);
            handles.push(PeerHandle { tx, waker });
            inboxes.push(rx);
            polls.push(poll);
        }
        let (_shares, share_rx) = crate::cluster::shares::handoff();
        let (publisher, publisher_rx) = crossbeam_channel::bounded(8);
        let sub = Subscriber::new(
            redis::Client::open("redis://127.0.0.1:1/").unwrap(),
            (Arc::from("me"), ME),
            (presence, None),
            handles,
            share_rx,
            publisher,
            (Arc::new(ClusterStats::default()), Questions::default()),
        );
        Rig {
            sub,
            inboxes,
            publisher: publisher_rx,
            _polls: polls,
        }
    }

    impl Rig {
        /// What each shard was sent (after the mesh flush).
        fn sent(&mut self) -> Vec<Vec<ShardMsg>> {
            self.sub.flush_to_shards();
            self.inboxes
                .iter()
                .map(|rx| rx.try_iter().collect())
                .collect()
        }

        fn local_member(&mut self, room: &RoomId, dialect: Dialect) {
            let share = match dialect {
                Dialect::Plain => Share { plain: 1, v1: 0 },
                Dialect::V1 => Share { plain: 0, v1: 1 },
            };
            self.sub.apply_share(LocalShare {
                room: room.clone(),
                shard: ShardId(0),
                share,
            });
            self.sub.subscribed.insert(room.clone());
        }
    }

    fn text(frame: &[u8]) -> &str {
        std::str::from_utf8(&frame[2..]).unwrap()
    }

    fn post(sender: &str, text: &str) -> Post {
        Post {
            sender: Arc::from(sender),
            nick: Nick::parse("bob"),
            user: None,
            body: Body::Text(text.into()),
            ts: 5,
        }
    }

    #[test]
    fn other_nodes_messages_reach_every_shard_rendered_once_and_echoes_do_not() {
        let mut rig = rig(true);
        let room = RoomId::parse("r").unwrap();
        let channel = room_channel("r");
        // Not subscribed yet (no local member): ignored.
        rig.sub.handle(
            &channel,
            &wire::message("other", &post("other.0.1", "early")),
        );
        assert!(rig.sent().iter().all(Vec::is_empty));
        rig.local_member(&room, Dialect::V1);
        rig.sub
            .handle(&channel, &wire::message("me", &post("me.0.1", "echo")));
        assert!(rig.sent().iter().all(Vec::is_empty), "own echo ignored");
        rig.sub
            .handle(&channel, &wire::message("other", &post("other.0.1", "hi")));
        let sent = rig.sent();
        let mut frames = Vec::new();
        for msgs in &sent {
            match msgs.as_slice() {
                [ShardMsg::Broadcast { room: r, post }] => {
                    assert_eq!(r, &room);
                    frames.push(post.frame(Dialect::V1));
                }
                other => panic!("expected one broadcast, got {other:?}"),
            }
        }
        assert_eq!(
            text(&frames[0]),
            r#"{"type":"message","id":"other.0.1","nick":"bob","text":"hi","ts":5}"#
        );
        assert!(
            Arc::ptr_eq(&frames[0], &frames[1]),
            "rendered once for all shards"
        );
        let mut metrics = String::new();
        rig.sub.stats.render(&mut metrics);
        assert!(
            metrics.contains("\nshardcast_cluster_received_total 1\n"),
            "{metrics}"
        );
    }

    /// Each shard's one `Cluster` message, as (others, the news in short).
    fn cluster_msgs(sent: Vec<Vec<ShardMsg>>) -> Vec<(u64, Option<String>)> {
        sent.into_iter()
            .map(|msgs| match msgs.as_slice() {
                [ShardMsg::Cluster { others, news, .. }] => {
                    let news = news.as_ref().map(|n| match n {
                        ClusterNews::Member(m) => format!(
                            "{:?} {} {}",
                            m.change,
                            m.id,
                            m.nick.as_ref().map_or("-", |n| n.as_str())
                        ),
                        ClusterNews::Count => "count".to_owned(),
                        ClusterNews::LinkDown => "down".to_owned(),
                        ClusterNews::LinkUp => "up".to_owned(),
                    });
                    (*others, news)
                }
                other => panic!("expected one cluster message, got {other:?}"),
            })
            .collect()
    }

    #[test]
    fn presence_heartbeats_and_expiry_become_counts_and_news() {
        let mut rig = rig(true);
        let room = RoomId::parse("r").unwrap();
        rig.local_member(&room, Dialect::V1);
        let join = Member {
            change: Change::Join,
            id: "n2.1.4",
            nick: Some("bob"),
            user: None,
        };
        let two = Share { plain: 1, v1: 1 };
        rig.sub.handle(
            PRESENCE_CHANNEL,
            &wire::presence("n2", "r", 1, two, Some(join)),
        );
        let joined = Some("Join n2.1.4 bob".to_owned());
        assert_eq!(cluster_msgs(rig.sent()), vec![(2, joined); 2]);
        // A heartbeat that agrees changes nothing; one that disagrees corrects the count.
        rig.sub.handle(
            PRESENCE_CHANNEL,
            &wire::heartbeat("n2", [("r", 1, two)].into_iter(), at(0)),
        );
        assert!(rig.sent().iter().all(Vec::is_empty));
        let five = Share { plain: 5, v1: 0 };
        rig.sub.handle(
            PRESENCE_CHANNEL,
            &wire::heartbeat("n2", [("r", 1, five)].into_iter(), at(0)),
        );
        let count = Some("count".to_owned());
        assert_eq!(cluster_msgs(rig.sent()), vec![(5, count.clone()); 2]);
        // Silent for NODE_EXPIRY: out of the counts.
        rig.sub.remote.get_mut("n2").unwrap().last_seen -= NODE_EXPIRY;
        rig.sub.expire_nodes();
        assert_eq!(cluster_msgs(rig.sent()), vec![(0, count); 2]);
        assert!(rig.sub.remote.is_empty());
    }

    #[test]
    fn with_presence_off_only_counts_travel() {
        let mut rig = rig(false);
        let room = RoomId::parse("r").unwrap();
        rig.local_member(&room, Dialect::V1);
        let one = Share { plain: 1, v1: 0 };
        let join = Member {
            change: Change::Join,
            id: "n2.0.1",
            nick: None,
            user: None,
        };
        rig.sub.handle(
            PRESENCE_CHANNEL,
            &wire::presence("n2", "r", 0, one, Some(join)),
        );
        assert_eq!(cluster_msgs(rig.sent()), vec![(1, None); 2]);
    }

    fn metric(rig: &Rig, name: &str) -> String {
        let mut text = String::new();
        rig.sub.stats.render(&mut text);
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ').map(str::to_owned))
            .unwrap_or_else(|| panic!("{name} missing from {text}"))
    }

    #[test]
    fn the_link_is_up_once_our_own_heartbeat_comes_back_and_its_delay_is_the_lag() {
        let mut rig = rig(true);
        assert!(!rig.sub.stats.link.is_up(), "subscribed is not yet linked");
        assert!(rig.sub.stats.link.degraded().is_some());
        let sent = now_micros() - 1500;
        let ours = Instance {
            token: ME,
            sent_micros: sent,
        };
        rig.sub.handle(
            PRESENCE_CHANNEL,
            &wire::heartbeat("me", std::iter::empty(), ours),
        );
        assert!(rig.sub.stats.link.is_up());
        assert_eq!(rig.sub.stats.link.degraded(), None);
        let lag: f64 = metric(&rig, "shardcast_cluster_heartbeat_lag_seconds")
            .parse()
            .unwrap();
        assert!((0.0015..5.0).contains(&lag), "lag {lag}");
        assert!(
            rig.sent().iter().all(Vec::is_empty),
            "an echo tells shards nothing"
        );
    }

    #[test]
    fn another_process_with_our_node_id_is_a_clash_and_the_claim_is_checked_at_once() {
        let mut rig = rig(true);
        let room = RoomId::parse("r").unwrap();
        rig.local_member(&room, Dialect::V1);
        let one = Share { plain: 0, v1: 1 };
        // Its heartbeat carries our id and a table: none of it is counted as another node.
        rig.sub.handle(
            PRESENCE_CHANNEL,
            &wire::heartbeat("me", [("r", 0, one)].into_iter(), at(now_micros())),
        );
        assert!(rig.sent().iter().all(Vec::is_empty));
        assert!(rig.sub.remote.is_empty());
        assert!(!rig.sub.stats.link.is_up(), "not our echo");
        assert!(matches!(
            rig.publisher.try_recv(),
            Ok(Outbound::HeartbeatNow)
        ));
        assert_eq!(
            metric(&rig, "shardcast_cluster_node_id_clashes_seen_total"),
            "1"
        );
        // An older node's heartbeat (no instance) with our id is another process too.
        let bytes = wire::heartbeat("me", std::iter::empty(), at(0));
        rig.sub.handle(PRESENCE_CHANNEL, &bytes[..bytes.len() - 16]);
        assert_eq!(
            metric(&rig, "shardcast_cluster_node_id_clashes_seen_total"),
            "2"
        );
    }

    #[test]
    fn a_lost_link_drops_other_nodes_from_the_counts_and_says_so_and_its_return_says_so() {
        let mut rig = rig(true);
        let room = RoomId::parse("r").unwrap();
        rig.local_member(&room, Dialect::V1);
        let ours = |sent_micros| Instance {
            token: ME,
            sent_micros,
        };
        rig.sub.handle(
            PRESENCE_CHANNEL,
            &wire::heartbeat("me", std::iter::empty(), ours(now_micros())),
        );
        let three = Share { plain: 1, v1: 2 };
        rig.sub.handle(
            PRESENCE_CHANNEL,
            &wire::heartbeat("n2", [("r", 0, three)].into_iter(), at(now_micros())),
        );
        assert_eq!(
            cluster_msgs(rig.sent()),
            vec![(3, Some("count".to_owned())); 2]
        );
        assert!(
            metric(
                &rig,
                "shardcast_cluster_peer_heartbeat_age_seconds{node=\"n2\"}"
            )
            .parse::<f64>()
            .is_ok()
        );
        let error = redis::RedisError::from(std::io::Error::from(std::io::ErrorKind::BrokenPipe));
        rig.sub.went_down(&error);
        assert_eq!(
            cluster_msgs(rig.sent()),
            vec![(0, Some("down".to_owned())); 2]
        );
        assert!(rig.sub.remote.is_empty());
        let degraded = rig.sub.stats.link.degraded().expect("degraded while down");
        assert!(
            degraded.reason.contains("cluster link down"),
            "{degraded:?}"
        );
        assert!(!degraded.take_out, "an outage does not take the node out");
        assert_eq!(metric(&rig, "shardcast_cluster_up"), "0");
        // Down again while down: nothing more to tell.
        rig.sub.went_down(&error);
        assert!(rig.sent().iter().all(Vec::is_empty));
        // Our heartbeat back: the link is up, and the room hears it.
        rig.sub.handle(
            PRESENCE_CHANNEL,
            &wire::heartbeat("me", std::iter::empty(), ours(now_micros())),
        );
        assert_eq!(
            cluster_msgs(rig.sent()),
            vec![(0, Some("up".to_owned())); 2]
        );
        assert_eq!(metric(&rig, "shardcast_cluster_outages_total"), "1");
        assert_eq!(rig.sub.stats.link.degraded(), None);
    }

    #[test]
    fn a_node_whose_id_was_taken_stands_aside_for_good() {
        let mut rig = rig(true);
        let room = RoomId::parse("r").unwrap();
        rig.local_member(&room, Dialect::V1);
        assert!(rig.sub.stats.link.clashed("node id clash: test".to_owned()));
        assert!(!rig.sub.stats.link.clashed("again".to_owned()), "once");
        let degraded = rig.sub.stats.link.degraded().unwrap();
        assert_eq!(degraded.reason, "node id clash: test");
        assert!(degraded.take_out, "only a restart mends it");
        rig.sub.link_up = true;
        rig.sub.announce_down();
        assert_eq!(
            cluster_msgs(rig.sent()),
            vec![(0, Some("down".to_owned())); 2]
        );
        assert_eq!(metric(&rig, "shardcast_cluster_node_id_clash"), "1");
    }

    /// The envelope the publisher makes of a queued presence change of node `node`.
    fn envelope(node: &str, item: Outbound) -> Vec<u8> {
        match item {
            Outbound::Presence {
                room,
                shard,
                share,
                member,
            } => crate::cluster::publisher::presence_envelope(
                node,
                &room,
                shard,
                share,
                member.as_deref(),
            ),
            other => panic!("expected presence, got {other:?}"),
        }
    }

    #[test]
    fn a_join_the_bridge_queue_had_no_room_for_reaches_other_nodes_as_a_count() {
        let mut rig = rig(true);
        let room = RoomId::parse("r").unwrap();
        rig.local_member(&room, Dialect::V1);
        // Shard 1 of node n2, whose queue to its publisher has room for one item.
        let (tx, queue) = crossbeam_channel::bounded(1);
        let mut n2 = crate::cluster::ClusterLink::new(
            tx,
            Arc::from("n2"),
            Arc::new(ClusterStats::default()),
            Questions::default(),
        );
        let join = |id: &str| {
            Some(MemberChange {
                change: Change::Join,
                id: Arc::from(id),
                nick: Nick::parse("bob"),
                user: None,
            })
        };
        n2.presence(&room, ShardId(1), Share { plain: 0, v1: 1 }, join("n2.1.1"));
        let sent = envelope("n2", queue.try_recv().unwrap());
        rig.sub.handle(PRESENCE_CHANNEL, &sent);
        let joined = Some("Join n2.1.1 bob".to_owned());
        assert_eq!(cluster_msgs(rig.sent()), vec![(1, joined); 2]);
        // The queue full: the next join waits, and is retried once there is room, as a count.
        n2.publish(&room, &post("n2.1.1", "fills the queue"));
        n2.presence(&room, ShardId(1), Share { plain: 0, v1: 2 }, join("n2.1.2"));
        assert!(n2.retry_pending(), "no room yet");
        assert!(matches!(queue.try_recv(), Ok(Outbound::Message { .. })));
        assert!(!n2.retry_pending(), "sent");
        let sent = envelope("n2", queue.try_recv().unwrap());
        rig.sub.handle(PRESENCE_CHANNEL, &sent);
        let count = Some("count".to_owned());
        assert_eq!(cluster_msgs(rig.sent()), vec![(2, count); 2]);
    }
}

#[cfg(test)]
mod follow_tests {
    use super::*;
    use crate::history::Epoch;
    use std::time::Duration;

    /// A subscriber with Redis sequencing, following room `r` at (epoch 7, offset 3), whose
    /// command connection is not there (a read fails).
    fn following() -> (
        Subscriber,
        Vec<crossbeam_channel::Receiver<ShardMsg>>,
        Vec<mio::Poll>,
    ) {
        let (mut handles, mut inboxes, mut polls) = (Vec::new(), Vec::new(), Vec::new());
        for _ in 0..2 {
            let poll = mio::Poll::new().unwrap();
            let waker = Arc::new(mio::Waker::new(poll.registry(), mio::Token(0)).unwrap());
            let (tx, rx) = crossbeam_channel::bounded(64);
            handles.push(PeerHandle { tx, waker });
            inboxes.push(rx);
            polls.push(poll);
        }
        let (_shares, share_rx) = crate::cluster::shares::handoff();
        let (publisher, _) = crossbeam_channel::bounded(8);
        let sequencing = Sequencing {
            size: 100,
            ttl: Duration::from_secs(300),
        };
        let mut sub = Subscriber::new(
            redis::Client::open("redis://127.0.0.1:1/").unwrap(),
            (Arc::from("me"), 7),
            (true, Some(sequencing)),
            handles,
            share_rx,
            publisher,
            (Arc::new(ClusterStats::default()), Questions::default()),
        );
        let room = RoomId::parse("r").unwrap();
        sub.subscribed.insert(room.clone());
        if let Some(follows) = &mut sub.follows {
            follows.at.insert(room, (Epoch(7), 3));
        }
        (sub, inboxes, polls)
    }

    fn sequenced(epoch: u64, offset: u64, text: &str) -> Vec<u8> {
        let post = Post {
            sender: Arc::from("other.0.1"),
            nick: None,
            user: None,
            body: Body::Text(text.into()),
            ts: 1,
        };
        let mut bytes = format!("S\x01{} {offset} ", Epoch(epoch)).into_bytes();
        bytes.extend_from_slice(&wire::message("other", &post));
        bytes
    }

    /// The offsets of the batches each shard was handed.
    fn handed(
        sub: &mut Subscriber,
        inboxes: &[crossbeam_channel::Receiver<ShardMsg>],
    ) -> Vec<Vec<u64>> {
        sub.flush_to_shards();
        inboxes
            .iter()
            .map(|rx| {
                rx.try_iter()
                    .map(|msg| match msg {
                        ShardMsg::Sequenced { batch, .. } => batch.offset,
                        other => panic!("expected a batch, got {other:?}"),
                    })
                    .collect()
            })
            .collect()
    }

    #[test]
    fn the_next_message_goes_to_the_rooms_home_and_what_the_read_had_is_skipped() {
        let (mut sub, inboxes, _polls) = following();
        let channel = room_channel("r");
        let home = RoomId::parse("r").unwrap().home(2).0;
        sub.on_sequenced(&channel, &sequenced(7, 3, "had")).unwrap();
        sub.on_sequenced(&channel, &sequenced(7, 4, "next"))
            .unwrap();
        sub.on_sequenced(&channel, &sequenced(7, 4, "again"))
            .unwrap();
        sub.on_sequenced(&channel, &sequenced(7, 5, "then"))
            .unwrap();
        let mut expected = vec![Vec::new(), Vec::new()];
        expected[home] = vec![4, 5];
        assert_eq!(handed(&mut sub, &inboxes), expected);
        // Not followed: nothing.
        sub.on_sequenced(&room_channel("elsewhere"), &sequenced(7, 1, "x"))
            .unwrap();
        assert_eq!(handed(&mut sub, &inboxes), vec![Vec::<u64>::new(); 2]);
    }

    #[test]
    fn a_gap_or_another_epoch_reads_the_room_again_and_never_hands_it_over_as_is() {
        for (epoch, offset) in [(7, 9), (8, 4)] {
            let (mut sub, inboxes, _polls) = following();
            let got = sub.on_sequenced(&room_channel("r"), &sequenced(epoch, offset, "x"));
            assert!(
                got.is_err(),
                "no command connection: the read fails, the link is remade"
            );
            assert_eq!(handed(&mut sub, &inboxes), vec![Vec::<u64>::new(); 2]);
        }
    }
}
