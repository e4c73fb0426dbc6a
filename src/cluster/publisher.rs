//! `bridge-pub`: publishes what the shards hand over, pipelined, and the node's heartbeat.
//!
//! The loop blocks on the shards' queue (or until the next heartbeat), then takes everything
//! that is waiting — up to [`BATCH`] — and sends it as one pipeline: one round trip however
//! many messages arrived during the previous one. While Redis is down it keeps draining the
//! queue (membership changes still update the table; messages are dropped and counted), so
//! the queue empties even then and the table stays exact for the heartbeat after recovery.
//! Shards never wait on it in any case: they only `try_send` ([`crate::cluster::ClusterLink`]).
//!
//! This node's shares go on to the subscriber through [`crate::cluster::shares`], which keeps
//! only the latest per (room, shard): the publisher never waits on the subscriber either.
//!
//! It also holds the node's id ([`crate::cluster::claim`]): on every fresh connection, before
//! anything is published, and before every heartbeat, it renews the claim. When another
//! process holds the id it stops for good: nothing more is published (messages are counted
//! as dropped), and the subscriber, seeing [`crate::cluster::link::Link::clash`], stops delivering.

use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};

use crate::backoff::Backoff;
use crate::cluster::claim::{Claim, Holder};
use crate::cluster::link::Side;
use crate::cluster::sequencer::{self, Script, Sequencing};
use crate::cluster::shares::ShareSender;
use crate::cluster::table::NodeTable;
use crate::cluster::wire::{self, Instance, Member};
use crate::cluster::{
    ApiMessage, ClusterStats, HEARTBEAT, IO_TIMEOUT, LocalShare, MemberChange, Outbound,
    PRESENCE_CHANNEL, RECONNECT_CAP, connect, reconnect_backoff, room_channel,
};
use crate::control::{Placed, Reply};
use crate::history::Epoch;
use crate::ids::ShardId;
use crate::room::{RoomId, Share};

/// Most envelopes in one pipeline.
pub const BATCH: usize = 1024;

/// The publishing thread.
pub struct Publisher {
    client: redis::Client,
    node: Arc<str>,
    /// This process's token, in every heartbeat.
    instance: u64,
    claim: Claim,
    /// A connection was lost before: the next one is a reconnection.
    lost_before: bool,
    rx: Receiver<Outbound>,
    share_tx: ShareSender,
    stats: Arc<ClusterStats>,
    /// This node's members.
    table: NodeTable,
    conn: Option<redis::Connection>,
    backoff: Backoff,
    /// While disconnected: when to try again.
    retry_at: Instant,
    next_heartbeat: Instant,
    /// History on: messages go through Redis's publish script, loaded on every connection.
    sequencing: Option<(Sequencing, Script)>,
    /// The server API's messages in the pipeline being made, in order: each is answered
    /// with its script's result (the pipeline's only results not ignored).
    answers: Vec<(usize, Sender<Reply>)>,
}

impl Publisher {
    /// A publisher for a node of `workers` shards.
    pub fn new(
        (client, claim): (redis::Client, Claim),
        (node, instance): (Arc<str>, u64),
        (workers, sequencing): (usize, Option<Sequencing>),
        rx: Receiver<Outbound>,
        share_tx: ShareSender,
        stats: Arc<ClusterStats>,
    ) -> Self {
        Publisher {
            client,
            node,
            instance,
            claim,
            lost_before: false,
            rx,
            share_tx,
            stats,
            table: NodeTable::new(workers),
            conn: None,
            backoff: reconnect_backoff(),
            retry_at: Instant::now(),
            next_heartbeat: Instant::now(),
            sequencing: sequencing.map(|s| (s, Script::new(sequencer::PUBLISH))),
            answers: Vec::new(),
        }
    }

    /// Runs until every shard is gone.
    pub fn run(mut self) {
        loop {
            let now = Instant::now();
            let wait = self.next_heartbeat.saturating_duration_since(now);
            let first = match self.rx.recv_timeout(wait) {
                Ok(item) => Some(item),
                Err(RecvTimeoutError::Timeout) => None,
                Err(RecvTimeoutError::Disconnected) => return,
            };
            let mut pipe = redis::pipe();
            let mut count = 0;
            let rx = self.rx.clone();
            for item in first.into_iter().chain(rx.try_iter().take(BATCH)) {
                count += self.add(item, &mut pipe);
            }
            let now = Instant::now();
            let heartbeat = now >= self.next_heartbeat;
            if heartbeat {
                self.next_heartbeat = now + HEARTBEAT;
            }
            if count > 0 || heartbeat {
                self.send(pipe, count, heartbeat);
            }
        }
    }

    /// The heartbeat envelope: the whole table, this process's token and the time.
    fn heartbeat(&self) -> Vec<u8> {
        let sent_micros = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_micros() as u64);
        let instance = Instance {
            token: self.instance,
            sent_micros,
        };
        wire::heartbeat(&self.node, self.table.rows().into_iter(), instance)
    }

    /// Adds one item to the pipeline; returns how many envelopes it added.
    fn add(&mut self, item: Outbound, pipe: &mut redis::Pipeline) -> u64 {
        match item {
            Outbound::Message { room, bytes } => {
                match &self.sequencing {
                    // Redis numbers it, keeps it and publishes it ([`sequencer::PUBLISH`]).
                    Some((seq, script)) => {
                        pipe.cmd("EVALSHA")
                            .arg(script.hash())
                            .arg(2)
                            .arg(sequencer::meta_key(&room))
                            .arg(sequencer::log_key(&room))
                            .arg(bytes)
                            .arg(sequencer::fresh_epoch())
                            .arg(seq.size)
                            .arg(seq.ttl_secs())
                            .arg(room_channel(room.as_str()))
                            .ignore();
                    }
                    None => {
                        pipe.cmd("PUBLISH")
                            .arg(room_channel(room.as_str()))
                            .arg(bytes)
                            .ignore();
                    }
                }
                1
            }
            Outbound::Api(message) => {
                let ApiMessage {
                    room,
                    bytes,
                    index,
                    reply,
                } = *message;
                let Some((seq, script)) = &self.sequencing else {
                    return 0; // only made with Redis sequencing
                };
                pipe.cmd("EVALSHA")
                    .arg(script.hash())
                    .arg(2)
                    .arg(sequencer::meta_key(&room))
                    .arg(sequencer::log_key(&room))
                    .arg(bytes)
                    .arg(sequencer::fresh_epoch())
                    .arg(seq.size)
                    .arg(seq.ttl_secs())
                    .arg(room_channel(room.as_str()));
                self.answers.push((index, reply));
                1
            }
            Outbound::Follow { room } => {
                self.share_tx.follow(room);
                // Its echo wakes the subscriber, which may be waiting on its subscription.
                let mut wake = sequencer::WAKE.to_vec();
                wake.extend_from_slice(self.node.as_bytes());
                pipe.cmd("PUBLISH").arg(PRESENCE_CHANNEL).arg(wake).ignore();
                1
            }
            Outbound::Presence {
                room,
                shard,
                share,
                member,
            } => {
                self.table.set(&room, shard, share);
                // The subscriber learns of it before the envelope (whose echo wakes it).
                self.share_tx.send(LocalShare {
                    room: room.clone(),
                    shard,
                    share,
                });
                let bytes = presence_envelope(&self.node, &room, shard, share, member.as_deref());
                pipe.cmd("PUBLISH")
                    .arg(PRESENCE_CHANNEL)
                    .arg(bytes)
                    .ignore();
                1
            }
            Outbound::HeartbeatNow => {
                self.next_heartbeat = Instant::now();
                0
            }
            Outbound::Control { bytes } => {
                pipe.cmd("PUBLISH")
                    .arg(PRESENCE_CHANNEL)
                    .arg(bytes)
                    .ignore();
                1
            }
        }
    }

    /// Sends the pipeline of `count` envelopes, and the heartbeat when `heartbeat` (or when the
    /// connection is fresh). Counts what could not be sent.
    fn send(&mut self, mut pipe: redis::Pipeline, mut count: u64, heartbeat: bool) {
        // After a clash, or once the server stopped (and gives up the claim), nothing goes out.
        let claimed = match self.stats.link.clash() {
            None if !self.stats.link.is_leaving() => self.claimed(heartbeat),
            _ => None,
        };
        // Answered only with Redis's place: an API message not sent is not answered (the API
        // says it timed out), never answered as sent.
        let answers = std::mem::take(&mut self.answers);
        let Some(fresh) = claimed else {
            self.stats.dropped(count + u64::from(heartbeat));
            return;
        };
        if heartbeat || fresh {
            // A fresh connection tells the others at once what they missed meanwhile.
            pipe.cmd("PUBLISH")
                .arg(PRESENCE_CHANNEL)
                .arg(self.heartbeat())
                .ignore();
            count += 1;
            self.next_heartbeat = Instant::now() + HEARTBEAT;
        }
        let Some(conn) = &mut self.conn else {
            return; // `claimed` just made sure of it
        };
        let mut sent = pipe.query::<Vec<redis::Value>>(conn);
        if let (Err(e), Some((_, script))) = (&sent, &mut self.sequencing)
            && Script::missing(e)
        {
            // Redis lost its scripts (SCRIPT FLUSH) before running any of this pipeline's:
            // nothing of it was published, so it is sent once more.
            tracing::info!("redis publisher: publish script missing; loading it again");
            sent = script.load(conn).and_then(|_| pipe.query(conn));
        }
        match sent {
            Ok(results) => {
                self.stats.published(count);
                for ((index, reply), result) in answers.into_iter().zip(results) {
                    let placed = placed(result);
                    let _ = reply.try_send(Reply::Published { index, placed });
                }
            }
            Err(e) => {
                self.stats.dropped(count);
                tracing::warn!("redis publisher: {e}; reconnecting");
                self.lost(&e);
            }
        }
    }

    /// Makes sure of a connection on which this process holds its node id: connecting (once
    /// the backoff allows) and claiming the id first if there is none, renewing the claim when
    /// `renew`. On a fresh connection nothing goes out before the claim: Redis may have
    /// restarted without it, or another process may hold it by now. `Some(fresh)` when ready;
    /// `None` while Redis is away, or once the id is lost.
    fn claimed(&mut self, renew: bool) -> Option<bool> {
        let fresh = self.conn.is_none();
        if fresh {
            if Instant::now() < self.retry_at {
                return None;
            }
            // A reply may take as long as a write.
            match connect(&self.client, IO_TIMEOUT) {
                Ok(conn) => self.conn = Some(conn),
                Err(e) => {
                    self.lost(&e);
                    return None;
                }
            }
        }
        let conn = self.conn.as_mut()?;
        if fresh || renew {
            match self.claim.renew(conn) {
                Ok(Holder::Us) => {}
                Ok(Holder::Other) => {
                    self.conn = None;
                    self.lose_node_id();
                    return None;
                }
                Err(e) => {
                    self.lost(&e);
                    return None;
                }
            }
        }
        if fresh && let Some((_, script)) = &mut self.sequencing {
            // Loaded on every connection: a restarted Redis has no scripts.
            if let Err(e) = script.load(conn) {
                self.lost(&e);
                return None;
            }
        }
        if fresh {
            tracing::info!("redis publisher connected");
            self.stats.link.connected(Side::Publish, self.lost_before);
            self.backoff.reset();
        }
        Some(fresh)
    }

    /// The connection failed (or could not be made): try again after the backoff.
    fn lost(&mut self, error: &redis::RedisError) {
        self.conn = None;
        self.lost_before = true;
        self.stats.link.disconnected(Side::Publish, error);
        self.retry_later(error);
    }

    /// Another process holds this node's id: stop publishing, for good, and say so loudly.
    fn lose_node_id(&mut self) {
        let why = format!(
            "node id clash: another live process holds node id {:?} (Redis key {}); this \
             process stopped all cross-node traffic. Give each node its own --node-id and \
             restart this one",
            &*self.node,
            crate::cluster::claim::key(&self.node)
        );
        if self.stats.link.clashed(why.clone()) {
            tracing::error!("{why}");
        }
        self.stats
            .link
            .disconnected(Side::Publish, &"stopped: node id clash");
    }

    fn retry_later(&mut self, error: &redis::RedisError) {
        let delay = self.backoff.next_delay().unwrap_or(RECONNECT_CAP);
        tracing::debug!("redis publisher: {error}; next attempt in {delay:?}");
        self.retry_at = Instant::now() + delay;
    }
}

/// Where the publish script placed a message: its `{epoch, offset}` answer.
fn placed(result: redis::Value) -> Option<Placed> {
    let redis::Value::Array(parts) = result else {
        return None;
    };
    let text = |v: &redis::Value| match v {
        redis::Value::BulkString(b) => std::str::from_utf8(b).ok().map(str::to_owned),
        redis::Value::Int(n) => Some(n.to_string()),
        _ => None,
    };
    let [epoch, offset] = parts.as_slice() else {
        return None;
    };
    Some(Placed {
        epoch: Epoch::parse(&text(epoch)?)?,
        offset: text(offset)?.parse().ok()?,
    })
}

/// The presence envelope for one shard's share of a room (the member who joined or left, if
/// known; without one, other nodes announce the change as a count).
pub fn presence_envelope(
    node: &str,
    room: &RoomId,
    shard: ShardId,
    share: Share,
    member: Option<&MemberChange>,
) -> Vec<u8> {
    let member = member.map(|m| Member {
        change: m.change,
        id: &m.id,
        nick: m.nick.as_ref().map(|n| n.as_str()),
        user: m.user.as_deref(),
    });
    wire::presence(node, room.as_str(), shard.0 as u16, share, member)
}
