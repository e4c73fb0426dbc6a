//! Fan-out and presence: how the loop joins members to rooms, announces them, delivers a
//! room's messages to its own members, and settles departures — in every model. What the
//! other threads' members get goes through the model's [`Reach`].
//!
//! Each rendering of a message is encoded once (by the reach, [`Outgoing`]) and queued by
//! reference for every local member of its dialect. A member that stops taking messages —
//! closing, cut off as a slow consumer, gone — leaves its room through the departure list,
//! a work list rather than recursion, since a leave notice can cut off further members.

use std::sync::Arc;

use crate::chat::envelope::{self, Change, ErrorCode, Notice, WelcomeStart};
use crate::chat::{Dialect, MemberChange, Outgoing, Post};
use crate::close::CloseReason;
use crate::control::Placed;
use crate::frame::SharedFrame;
use crate::history::{Ask, Start};
use crate::ids::SessionKey;
use crate::mesh::{ClusterNews, ShardMsg};
use crate::metrics::Counter;
use crate::models::{Joiner, Placing, Reach};
use crate::room::{RoomId, Share};
use crate::session::Delivery;
use crate::shard::Shard;

impl<R: Reach> Shard<R> {
    /// Session `key` joins `room`, asking `ask` of its history: placed and welcomed now,
    /// or, when the room's sequencer is another thread, once it has placed it.
    pub(super) fn join(&mut self, key: SessionKey, room: RoomId, ask: Ask) {
        let Some(generation) = self.table.generation(key) else {
            return;
        };
        let ask = self.cap_history(key, ask);
        if !self.reach.defer_join(&room, key, generation, &ask) {
            self.admit(key, room, Placing::Here(&ask));
        }
    }

    /// Caps what `key` asks of the history at `--history-size`; a v1 client asking more is
    /// told so (it gets all there is).
    fn cap_history(&mut self, key: SessionKey, mut ask: Ask) -> Ask {
        let size = u32::try_from(self.common.config.history_size).unwrap_or(u32::MAX);
        if ask.history <= size {
            return ask;
        }
        ask.history = size;
        let told = self.common.config.history_on()
            && self.table.with(key, |s| {
                let v1 = s.dialect() == Dialect::V1;
                if v1 {
                    s.push_own(envelope::error(ErrorCode::HistoryLimit));
                }
                v1
            }) == Some(true);
        if told {
            self.counters.bump(Counter::EnvelopeErrors);
            self.table.list_for_flush(key);
        }
        ask
    }

    /// Session `key` becomes a member of `room`: it is welcomed (v1) at its place in the
    /// room's history (`placed` by another thread, or found by the reach now) and gets what
    /// it asked to have replayed; the others are told.
    fn admit(&mut self, key: SessionKey, room: RoomId, placing: Placing) {
        let (Some(generation), Some(handle)) = (self.table.generation(key), self.table.handle(key))
        else {
            return;
        };
        let Some(dialect) = self.table.with(key, |s| s.dialect()) else {
            return;
        };
        let slot = self.rooms.join(&room, dialect, key);
        self.table.set_room_slot(key, Some(slot));
        let placed_at = match &placing {
            Placing::Placed(start) => Some(start.offset),
            Placing::Here(_) => None,
        };
        let resumed = match &placing {
            Placing::Placed(_) => false,
            Placing::Here(ask) => ask.since.is_some(),
        };
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
        let names = self.common.site.names();
        // In a cluster cut off from the other nodes, a v1 joiner learns it with the others.
        let cut_off = self.cluster.as_ref().is_some_and(|c| c.cut_off());
        let online = self
            .reach
            .admit(&room, joiner, placing, local, self.now, |online, start| {
                table.with(key, |s| {
                    if dialect == Dialect::V1 {
                        let id = s.id_text(config);
                        let who = envelope::Who {
                            id: &id,
                            nick: s.nick().map(|n| n.as_str()),
                            user: s.user(),
                        };
                        let epoch = start.map(|st| st.epoch.to_string());
                        let place = WelcomeStart {
                            epoch: epoch.as_deref(),
                            offset: start.map(|st| st.offset),
                            replay: start.map(|st| st.replay.len() as u64),
                            // History off: a resume cannot be vouched for.
                            recovered: start.map_or(resumed.then_some(false), |st| st.recovered),
                        };
                        let reclaim = s
                            .nick()
                            .map(|nick| names.reclaim_token(&room, nick, s.id()));
                        s.push_own(envelope::welcome(
                            who,
                            room.as_str(),
                            online,
                            place,
                            config.max_message,
                            reclaim.as_deref(),
                        ));
                    }
                    for out in start.map_or(&[][..], |st| &st.replay) {
                        s.push_own(out.replay_frame(dialect));
                    }
                    if cut_off && dialect == Dialect::V1 {
                        s.push_own(envelope::notice(Notice::ClusterDown, online));
                    }
                });
                table.list_for_flush(key);
            });
        if let Some(offset) = placed_at
            && self.rooms.started(&room, offset)
        {
            self.missed_messages(&room, Some(key));
        }
        self.announce(&room, Change::Join, key, online);
    }

    /// The room's home placed session `key` (of `generation`) in `room`: it is admitted if it
    /// still waits for that; otherwise the home is told it is not there after all.
    fn on_joined(&mut self, key: SessionKey, generation: u64, room: RoomId, start: Start) {
        let waiting = self.table.is_current(key, generation)
            && self.table.room_slot(key).is_none()
            && self
                .table
                .with(key, |s| s.receives() && s.room() == Some(&room))
                == Some(true);
        if waiting {
            self.admit(key, room, Placing::Placed(start));
        } else {
            self.reach.dismiss(&room, key, None, self.now);
        }
    }

    /// This shard's members of `room` (but `except`) missed some of its messages: the mesh
    /// dropped them. They are closed (1013), never left with a silent gap; a v1 client
    /// resumes with `since` and gets them from the history.
    fn missed_messages(&mut self, room: &RoomId, except: Option<SessionKey>) {
        let Some(entry) = self.rooms.get(room) else {
            return;
        };
        let members: Vec<SessionKey> = entry
            .plain
            .iter()
            .chain(&entry.v1)
            .copied()
            .filter(|&key| Some(key) != except)
            .collect();
        tracing::warn!(
            room = room.as_str(),
            members = members.len(),
            "this shard missed messages of the room: closing its members here (1013) to resume"
        );
        let mut cx = self.common.ctx(self.now, &mut self.counters);
        for key in members {
            self.table
                .with(key, |s| s.close_for(CloseReason::MissedMessages, &mut cx));
            self.table.list_for_flush(key);
            self.departures.push(key);
            self.table.arm(key);
        }
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
        self.release_name(key);
        self.table.set_room_slot(key, None);
        if let Some(moved) = self.rooms.leave(&room, dialect, slot) {
            self.table.set_room_slot(moved, Some(slot));
        }
        let online = self
            .reach
            .dismiss(&room, key, self.rooms.get(&room), self.now);
        self.announce(&room, Change::Leave, key, online);
    }

    /// Session `key` no longer holds its nickname in its room (`crate::names`): it left,
    /// or it ends without having been admitted. Releasing twice changes nothing.
    pub(super) fn release_name(&mut self, key: SessionKey) {
        let names = self.common.site.names();
        self.table.with(key, |s| {
            if let (Some(room), Some(nick)) = (s.room(), s.nick()) {
                names.release(room, nick, s.id());
            }
        });
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
                user: s.user_arc(),
            })
        } else {
            None
        };
        let notice = member.as_ref().filter(|_| wants_notice).map(|m| {
            self.counters.bump(Counter::PresenceNotices);
            envelope::presence(change, m.who(), online)
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
            ClusterNews::Member(m) => envelope::presence(m.change, m.who(), online),
            ClusterNews::Count => envelope::online(online),
            ClusterNews::LinkDown => envelope::notice(Notice::ClusterDown, online),
            ClusterNews::LinkUp => envelope::notice(Notice::ClusterUp, online),
        };
        self.counters.bump(Counter::PresenceNotices);
        self.push_to_members(room, Dialect::V1, &notice, None);
    }

    /// Sends `post` from session `from` to its room (and, in a cluster, to other nodes).
    /// The sender is a member, or one whose place the room's home is deciding: its message
    /// is numbered after that place, so it gets it back like every member. It may be closing
    /// by now (a close frame read right after the message): the message came first, so it
    /// goes. (A session makes no messages once it closes, and none before it may join.)
    pub(super) fn fan_out(&mut self, from: SessionKey, post: Post) {
        let Some(Some(room)) = self.table.with(from, |s| s.room().cloned()) else {
            return;
        };
        if let Some(cluster) = &self.cluster {
            if self.common.config.history_on() {
                // Redis numbers it (docs/cluster.md): every member, the sender included,
                // gets it as it comes back from Redis, in the room's one order.
                if !cluster.sequence(&room, &post) {
                    self.unavailable(from);
                }
                return;
            }
            cluster.publish(&room, &post);
        }
        self.publish(&room, post);
    }

    /// `from`'s message could not be handed to Redis (unreachable, or the bridge's queue
    /// full): it was not sent. A v1 sender is told; a plain one cannot be (it was counted).
    fn unavailable(&mut self, from: SessionKey) {
        let told = self.table.with(from, |s| {
            let v1 = s.dialect() == Dialect::V1;
            if v1 {
                s.push_own(envelope::error(ErrorCode::Unavailable));
            }
            v1
        });
        if told == Some(true) {
            self.counters.bump(Counter::EnvelopeErrors);
            self.table.list_for_flush(from);
        }
    }

    /// Redis's state of `room` (a cluster's follower history, this thread its sequencer):
    /// live messages reach this thread's members in order, members that missed some are
    /// closed to resume, and joins that waited for the sync are admitted.
    fn follow(&mut self, room: &RoomId, batch: crate::history::Batch) {
        let mut cx = self.common.ctx(self.now, &mut self.counters);
        let (live, missed) = self
            .reach
            .follow(room, batch, self.rooms.get(room), &mut cx);
        if missed {
            self.missed_messages(room, None);
        }
        for out in &live {
            self.deliver_local(room, out);
        }
        self.list_queued();
        self.admit_ready();
    }

    /// Admits this thread's joins whose room was synced (each still waiting), and asks the
    /// bridge to sync the rooms joins wait for.
    pub(super) fn admit_ready(&mut self) {
        let mut ready = Vec::new();
        self.reach.take_ready(&mut ready);
        for (room, waiter) in ready {
            let (key, generation) = (waiter.key, waiter.generation);
            let waiting = self.table.is_current(key, generation)
                && self.table.room_slot(key).is_none()
                && self
                    .table
                    .with(key, |s| s.receives() && s.room() == Some(&room))
                    == Some(true);
            if waiting {
                self.admit(key, room, Placing::Here(&waiter.ask));
            }
        }
        let mut to_sync = Vec::new();
        self.reach.take_to_sync(&mut to_sync);
        if let Some(cluster) = &self.cluster {
            for room in to_sync {
                cluster.follow(&room);
            }
        }
    }

    /// Sends `post` to `room`'s members everywhere through the reach (which numbers it, or
    /// hands it to the room's home), and queues it for this thread's own when it is theirs
    /// now.
    fn publish(&mut self, room: &RoomId, post: Post) {
        let mut cx = self.common.ctx(self.now, &mut self.counters);
        let out = self
            .reach
            .fan_out(room, post, self.rooms.get(room), &mut cx);
        if let Some(out) = out {
            self.deliver_local(room, &out);
        }
        self.list_queued();
    }

    /// [`Shard::publish`] for a message of the server API, answering where the room's
    /// sequencer (this thread, as the API chose it) placed it, with history on.
    pub(super) fn publish_placed(&mut self, room: &RoomId, post: Post) -> Option<Placed> {
        let mut cx = self.common.ctx(self.now, &mut self.counters);
        let (out, placed) = self
            .reach
            .fan_out_placed(room, post, self.rooms.get(room), &mut cx);
        if let Some(out) = out {
            self.deliver_local(room, &out);
        }
        self.list_queued();
        placed
    }

    /// Lists for the flush this thread's sessions that the reach queued a message for.
    pub(super) fn list_queued(&mut self) {
        self.reach.take_queued(&mut self.queued);
        if !self.queued.is_empty() {
            self.coalesce.delivered(self.queued.len() as u64);
            for key in self.queued.drain(..) {
                self.table.list_for_flush(key);
            }
        }
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
            ShardMsg::Broadcast { room, post } => {
                if post.offset > 0 && self.rooms.advance(&room, post.offset) {
                    self.missed_messages(&room, None);
                }
                self.deliver_local(&room, &post);
            }
            ShardMsg::Publish { room, post } => self.publish(&room, post),
            ShardMsg::Subscribe {
                room,
                from,
                key,
                generation,
                ask,
            } => self
                .reach
                .on_subscribe(&room, from, key, generation, &ask, self.now),
            ShardMsg::Unsubscribe { room, from } => {
                self.reach.on_unsubscribe(&room, from, self.now);
            }
            ShardMsg::Joined {
                room,
                key,
                generation,
                start,
            } => self.on_joined(key, generation, room, *start),
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
            ShardMsg::Sequenced { room, batch } => self.follow(&room, *batch),
            ShardMsg::Unfollow { room } => self.reach.unfollow(&room),
            ShardMsg::Missed { room } => self.missed_messages(&room, None),
            ShardMsg::Cluster { room, others, news } => {
                self.rooms.set_others(&room, others);
                if let Some(news) = news {
                    self.tell_cluster_news(&room, news);
                }
            }
            ShardMsg::Control(control) => self.on_control(*control),
        }
    }
}
