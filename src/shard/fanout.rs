//! Fan-out and presence: how the loop joins members to rooms, announces them, delivers a
//! room's messages to its own members, and settles departures — in every model. What the
//! other threads' members get goes through the model's [`Reach`].
//!
//! Each rendering of a message is encoded once (by the reach, [`Outgoing`]) and queued by
//! reference for every local member of its dialect. A member that stops taking messages —
//! closing, cut off as a slow consumer, gone — leaves its room through the departure list,
//! a work list rather than recursion, since a leave notice can cut off further members.

use std::sync::Arc;

use crate::chat::envelope::{self, Change};
use crate::chat::{Dialect, MemberChange, Outgoing, Post};
use crate::frame::SharedFrame;
use crate::ids::SessionKey;
use crate::mesh::{ClusterNews, ShardMsg};
use crate::metrics::Counter;
use crate::models::{Joiner, Reach};
use crate::room::{RoomId, Share};
use crate::session::Delivery;
use crate::shard::Shard;

impl<R: Reach> Shard<R> {
    /// Session `key` becomes a member of `room`: it is welcomed (v1), the others are told.
    pub(super) fn join(&mut self, key: SessionKey, room: RoomId) {
        let (Some(generation), Some(handle)) = (self.table.generation(key), self.table.handle(key))
        else {
            return;
        };
        let Some(dialect) = self.table.with(key, |s| s.dialect()) else {
            return;
        };
        let slot = self.rooms.join(&room, dialect, key);
        self.table.set_room_slot(key, Some(slot));
        let joiner = Joiner {
            key,
            generation,
            v1: dialect == Dialect::V1,
            handle,
        };
        let Some(local) = self.rooms.get(&room) else {
            return;
        };
        let (table, config) = (&mut self.table, &self.common.config);
        let online = self.reach.admit(&room, joiner, local, |online| {
            if dialect == Dialect::V1 {
                table.with(key, |s| {
                    let id = s.id_text(config);
                    let nick = s.nick().map_or("", |n| n.as_str());
                    s.push_own(envelope::welcome(&id, room.as_str(), nick, online));
                });
                table.list_for_flush(key);
            }
        });
        self.announce(&room, Change::Join, key, online);
    }

    /// Members that stopped taking messages leave their rooms (which may cut off others as
    /// slow consumers, who then leave in turn).
    pub(super) fn settle_departures(&mut self) {
        while let Some(key) = self.departures.pop() {
            let member = self.table.room_slot(key).is_some();
            if member && self.table.with(key, |s| !s.receives()) == Some(true) {
                self.depart(key);
            }
        }
    }

    /// Session `key` leaves its room; the others are told.
    pub(super) fn depart(&mut self, key: SessionKey) {
        let Some(slot) = self.table.room_slot(key) else {
            return;
        };
        let Some((Some(room), dialect)) =
            self.table.with(key, |s| (s.room().cloned(), s.dialect()))
        else {
            return;
        };
        self.table.set_room_slot(key, None);
        if let Some(moved) = self.rooms.leave(&room, dialect, slot) {
            self.table.set_room_slot(moved, Some(slot));
        }
        let online = self.reach.dismiss(&room, key, self.rooms.get(&room));
        self.announce(&room, Change::Leave, key, online);
    }

    /// Tells the room (v1 members other than `key` get a notice, unless presence is off or
    /// the server is shutting down), the other threads (through the reach, with this
    /// thread's new share) and the bridge that `key` joined or left.
    fn announce(&mut self, room: &RoomId, change: Change, key: SessionKey, online: u64) {
        let local = self.rooms.get(room);
        let share = local.map_or_else(Share::default, |r| r.local_share());
        let v1_anywhere = self.reach.needs(room, local).v1;
        let wants_notice = self.common.config.presence && self.drain_until.is_none() && v1_anywhere;
        // Only made when someone will hear of it: most sessions never need their id text.
        let config = &self.common.config;
        let member = if wants_notice || self.cluster.is_some() {
            self.table.with(key, |s| MemberChange {
                change,
                id: s.id_text(config),
                nick: s.nick().cloned(),
            })
        } else {
            None
        };
        let notice = member.as_ref().filter(|_| wants_notice).map(|m| {
            self.counters.bump(Counter::PresenceNotices);
            let nick = m.nick.as_ref().map(|n| n.as_str());
            envelope::presence(change, &m.id, nick, online)
        });
        if let Some(cluster) = &mut self.cluster {
            cluster.presence(room, self.id, share, member);
        }
        if let Some(notice) = &notice {
            self.push_to_members(room, Dialect::V1, notice, Some(key));
        }
        let mut cx = self.common.ctx(self.now, &mut self.counters);
        self.reach
            .tell_presence(room, share, notice.as_ref(), &mut cx);
    }

    /// Renders a change on other nodes for this thread's v1 members of `room` (with its
    /// own `online`, which counts its newest members) and queues it.
    fn tell_cluster_news(&mut self, room: &RoomId, news: ClusterNews) {
        let local = match self.rooms.get(room) {
            Some(entry) if !entry.v1.is_empty() && self.drain_until.is_none() => entry,
            _ => return,
        };
        let online = self.reach.online(room, Some(local));
        let notice = match news {
            ClusterNews::Member(m) => {
                envelope::presence(m.change, &m.id, m.nick.as_ref().map(|n| n.as_str()), online)
            }
            ClusterNews::Count => envelope::online(online),
        };
        self.counters.bump(Counter::PresenceNotices);
        self.push_to_members(room, Dialect::V1, &notice, None);
    }

    /// Sends `post` from session `from` to its room: the reach encodes it and sends it to
    /// the members of other threads, the bridge to other nodes, and this thread queues it
    /// for its own.
    pub(super) fn fan_out(&mut self, from: SessionKey, post: Post) {
        if self.table.room_slot(from).is_none() {
            return;
        }
        let Some(Some(room)) = self.table.with(from, |s| s.room().cloned()) else {
            return;
        };
        let Some(local) = self.rooms.get(&room) else {
            return;
        };
        let mut cx = self.common.ctx(self.now, &mut self.counters);
        let out = self.reach.fan_out(&room, post, local, &mut cx);
        if let Some(cluster) = &self.cluster {
            cluster.publish(&room, &out.post);
        }
        self.deliver_local(&room, &out);
    }

    /// Queues `out` for this thread's members of `room`, each in its dialect.
    pub(super) fn deliver_local(&mut self, room: &RoomId, out: &Arc<Outgoing>) {
        let Some(entry) = self.rooms.get(room) else {
            return;
        };
        let plain = (!entry.plain.is_empty()).then(|| out.frame(Dialect::Plain));
        let v1 = (!entry.v1.is_empty()).then(|| out.frame(Dialect::V1));
        let mut delivered = 0;
        if let Some(frame) = plain {
            delivered += self.push_to_members(room, Dialect::Plain, &frame, None);
        }
        if let Some(frame) = v1 {
            delivered += self.push_to_members(room, Dialect::V1, &frame, None);
        }
        self.counters.add(Counter::Deliveries, delivered);
        self.coalesce.delivered(delivered);
    }

    /// Queues `frame` for this thread's `dialect` members of `room` (but `except`); returns
    /// how many took it. Members cut off as slow consumers are listed for departure.
    fn push_to_members(
        &mut self,
        room: &RoomId,
        dialect: Dialect,
        frame: &SharedFrame,
        except: Option<SessionKey>,
    ) -> u64 {
        let Some(entry) = self.rooms.get(room) else {
            return 0;
        };
        let members = match dialect {
            Dialect::Plain => &entry.plain,
            Dialect::V1 => &entry.v1,
        };
        let mut cx = self.common.ctx(self.now, &mut self.counters);
        let mut delivered = 0;
        for &key in members {
            if Some(key) == except {
                continue;
            }
            let Some(delivery) = self.table.offer(key, frame, &mut cx) else {
                debug_assert!(false, "room member {key} has no session");
                continue;
            };
            match delivery {
                Delivery::Queued => delivered += 1,
                Delivery::Refused => {}
                Delivery::SlowConsumer | Delivery::Failed => {
                    if delivery == Delivery::SlowConsumer {
                        tracing::debug!(key = %key, "closed as a slow consumer");
                    }
                    self.departures.push(key);
                    self.table.arm(key);
                }
            }
        }
        delivered
    }

    /// Acts on a message from another shard or from the bridge.
    pub(super) fn on_shard_msg(&mut self, msg: ShardMsg) {
        match msg {
            ShardMsg::Broadcast { room, post } => self.deliver_local(&room, &post),
            ShardMsg::Presence {
                room,
                from,
                share,
                notice,
            } => {
                self.rooms.set_remote_share(&room, from, share);
                if let Some(notice) = notice {
                    self.push_to_members(&room, Dialect::V1, &notice, None);
                }
            }
            ShardMsg::Cluster { room, others, news } => {
                self.rooms.set_others(&room, others);
                if let Some(news) = news {
                    self.tell_cluster_news(&room, news);
                }
            }
        }
    }
}
