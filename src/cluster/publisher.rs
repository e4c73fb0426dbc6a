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

use std::sync::Arc;
use std::time::Instant;

use crossbeam_channel::{Receiver, RecvTimeoutError};

use crate::backoff::Backoff;
use crate::cluster::shares::ShareSender;
use crate::cluster::table::NodeTable;
use crate::cluster::wire::{self, Member};
use crate::cluster::{
    ClusterStats, HEARTBEAT, IO_TIMEOUT, LocalShare, MemberChange, Outbound, PRESENCE_CHANNEL,
    RECONNECT_CAP, connect, reconnect_backoff, room_channel,
};
use crate::ids::ShardId;
use crate::room::{RoomId, Share};

/// Most envelopes in one pipeline.
pub const BATCH: usize = 1024;

/// The publishing thread.
pub struct Publisher {
    client: redis::Client,
    node: Arc<str>,
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
}

impl Publisher {
    /// A publisher for a node of `workers` shards.
    pub fn new(
        client: redis::Client,
        node: Arc<str>,
        workers: usize,
        rx: Receiver<Outbound>,
        share_tx: ShareSender,
        stats: Arc<ClusterStats>,
    ) -> Self {
        Publisher {
            client,
            node,
            rx,
            share_tx,
            stats,
            table: NodeTable::new(workers),
            conn: None,
            backoff: reconnect_backoff(),
            retry_at: Instant::now(),
            next_heartbeat: Instant::now(),
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
            if now >= self.next_heartbeat {
                self.next_heartbeat = now + HEARTBEAT;
                let rows = self.table.rows();
                pipe.cmd("PUBLISH")
                    .arg(PRESENCE_CHANNEL)
                    .arg(wire::heartbeat(&self.node, rows.into_iter()))
                    .ignore();
                count += 1;
            }
            if count > 0 {
                self.send(&pipe, count);
            }
        }
    }

    /// Adds one item to the pipeline; returns how many envelopes it added.
    fn add(&mut self, item: Outbound, pipe: &mut redis::Pipeline) -> u64 {
        match item {
            Outbound::Message { room, bytes } => {
                pipe.cmd("PUBLISH")
                    .arg(room_channel(room.as_str()))
                    .arg(bytes)
                    .ignore();
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

    /// Sends the pipeline, connecting first if need be; counts what could not be sent.
    fn send(&mut self, pipe: &redis::Pipeline, count: u64) {
        if self.conn.is_none() && Instant::now() >= self.retry_at {
            // A reply may take as long as a write.
            match connect(&self.client, IO_TIMEOUT) {
                Ok(conn) => {
                    tracing::info!("redis publisher connected");
                    self.conn = Some(conn);
                    self.backoff.reset();
                }
                Err(e) => {
                    self.retry_later(&e);
                }
            }
        }
        let Some(conn) = &mut self.conn else {
            self.stats.dropped(count);
            return;
        };
        match pipe.exec(conn) {
            Ok(()) => self.stats.published(count),
            Err(e) => {
                self.conn = None;
                self.stats.dropped(count);
                tracing::warn!("redis publisher: {e}; reconnecting");
                self.retry_later(&e);
            }
        }
    }

    fn retry_later(&mut self, error: &redis::RedisError) {
        let delay = self.backoff.next_delay().unwrap_or(RECONNECT_CAP);
        tracing::debug!("redis publisher: {error}; next attempt in {delay:?}");
        self.retry_at = Instant::now() + delay;
    }
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
