//! The `sharded` model's reach: the mesh. Each shard owns its members outright; a room's
//! message reaches the other shards that have members there as one `Arc`-shared
//! [`ShardMsg::Broadcast`] each, and membership changes travel as [`ShardMsg::Presence`]
//! (the share, and the notice for their v1 members). Each shard delivers to its own.
//!
//! **One order per room** (history on): each room has a home shard ([`RoomId::home`]) that
//! numbers its messages and keeps its history. A member's message goes to the home as a
//! [`ShardMsg::Publish`] (or is numbered at once, on the home); the home sends it, numbered,
//! to every shard with members there, in the order it numbered them, and each delivers it in
//! that order. A member joining on another shard is placed by the home
//! ([`ShardMsg::Subscribe`] → [`ShardMsg::Joined`]): since the home's messages to a shard
//! travel in one FIFO channel, everything numbered after the place arrives after the answer,
//! and nothing before it reaches the member. The home counts those members per shard, so it
//! sends a room's messages exactly to the shards that must deliver them.
//!
//! In a cluster with history on, Redis numbers the messages: the home's history follows what
//! the bridge hands it ([`ShardMsg::Sequenced`], `crate::history::follow`), and joins wait
//! there, its own and other shards' alike, until the room is synced.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use crate::chat::{Outgoing, Post};
use crate::frame::SharedFrame;
use crate::history::{Ask, Batch, Epoch, History, Start, Waiter};
use crate::ids::{SessionKey, ShardId};
use crate::mesh::{MeshLinks, ShardMsg};
use crate::metrics::{Counter, Counters};
use crate::models::{Joiner, Placing, Reach, count_history};
use crate::room::{Room, RoomId, Share};
use crate::session::{Ctx, Session};
use crate::tls::Conn;

/// One shard's links to the others, and the rooms it is home of.
pub struct Mesh {
    me: ShardId,
    shards: usize,
    links: MeshLinks,
    /// The histories of the rooms whose home this shard is (`None`: history off).
    history: Option<History>,
    /// For each room whose home this is: the other shards with members there, and how many.
    subscribers: HashMap<RoomId, Vec<(ShardId, u32)>>,
    /// This shard's joins placed by a sync of their room (a cluster's follower history).
    ready: Vec<(RoomId, Waiter)>,
}

impl Mesh {
    /// Shard `me`'s reach over `links` to the other `shards - 1`, keeping `history` for the
    /// rooms whose home it is.
    pub fn new(me: ShardId, shards: usize, links: MeshLinks, history: Option<History>) -> Self {
        Mesh {
            me,
            shards,
            links,
            history,
            subscribers: HashMap::new(),
            ready: Vec::new(),
        }
    }

    /// Shard `from` gets `room`'s messages from now on (one more of its members is there).
    fn add_subscriber(&mut self, room: &RoomId, from: ShardId) {
        let shards = self.subscribers.entry(room.clone()).or_default();
        match shards.iter_mut().find(|(shard, _)| *shard == from) {
            Some((_, members)) => *members += 1,
            None => shards.push((from, 1)),
        }
    }

    /// Sends `msg` (made once per shard) to every other shard with members in `room`.
    fn send_to_subscribers(&mut self, room: &RoomId, msg: impl Fn() -> ShardMsg) {
        for &(shard, _) in self.subscribers.get(room).map_or(&[][..], Vec::as_slice) {
            self.links.send(shard, msg());
        }
    }

    /// Whether `room`'s messages are numbered elsewhere (history on, another home).
    fn sequenced_elsewhere(&self, room: &RoomId) -> bool {
        self.history.is_some() && room.home(self.shards) != self.me
    }
}

impl Reach for Mesh {
    type Cell = Session<Conn>;

    fn defer_join(&mut self, room: &RoomId, key: SessionKey, generation: u64, ask: &Ask) -> bool {
        if !self.sequenced_elsewhere(room) {
            // The home itself: a follower history not synced yet makes its own joins wait.
            let me = self.me;
            return match &mut self.history {
                Some(history) if !history.is_synced(room) => {
                    let ask = *ask;
                    history.wait(
                        room,
                        Waiter {
                            owner: me,
                            key,
                            generation,
                            ask,
                        },
                    );
                    true
                }
                _ => false,
            };
        }
        self.links.send(
            room.home(self.shards),
            ShardMsg::Subscribe {
                room: room.clone(),
                from: self.me,
                key,
                generation,
                ask: *ask,
            },
        );
        true
    }

    fn admit(
        &mut self,
        room: &RoomId,
        _: Joiner<()>,
        placing: Placing,
        local: &Room,
        now: Instant,
        welcome: impl FnOnce(u64, Option<&Start>),
    ) -> u64 {
        let online = local.online();
        let start = placing.start(room, self.history.as_mut(), now);
        welcome(online, start.as_ref());
        online
    }

    fn dismiss(&mut self, room: &RoomId, _: SessionKey, local: Option<&Room>, now: Instant) -> u64 {
        if self.sequenced_elsewhere(room) {
            let from = self.me;
            self.links.send(
                room.home(self.shards),
                ShardMsg::Unsubscribe {
                    room: room.clone(),
                    from,
                },
            );
        } else if let Some(history) = &mut self.history {
            history.leave(room, now);
        }
        local.map_or(0, Room::online)
    }

    fn fan_out(
        &mut self,
        room: &RoomId,
        post: Post,
        local: Option<&Room>,
        cx: &mut Ctx,
    ) -> Option<Arc<Outgoing>> {
        let needs = local.map(Room::needs).unwrap_or_default();
        let Some(history) = &mut self.history else {
            // History off: each shard delivers what reaches it as it comes.
            let out = Outgoing::new(post, needs);
            for remote in local.map_or(&[][..], |l| &l.remote) {
                self.links.send(
                    remote.shard,
                    ShardMsg::Broadcast {
                        room: room.clone(),
                        post: out.clone(),
                    },
                );
            }
            return Some(out);
        };
        let home = room.home(self.shards);
        if home != self.me {
            self.links.send(
                home,
                ShardMsg::Publish {
                    room: room.clone(),
                    post,
                },
            );
            return None;
        }
        let out = history.append(room, post, needs, cx.now);
        for &(shard, _) in self.subscribers.get(room).map_or(&[][..], Vec::as_slice) {
            self.links.send(
                shard,
                ShardMsg::Broadcast {
                    room: room.clone(),
                    post: out.clone(),
                },
            );
        }
        Some(out)
    }

    fn on_subscribe(
        &mut self,
        room: &RoomId,
        from: ShardId,
        key: SessionKey,
        generation: u64,
        ask: &Ask,
        now: Instant,
    ) {
        let Some(history) = &mut self.history else {
            debug_assert!(false, "a subscribe with history off");
            return;
        };
        if !history.is_synced(room) {
            // A follower history answers once Redis's state of the room is here.
            let ask = *ask;
            history.wait(
                room,
                Waiter {
                    owner: from,
                    key,
                    generation,
                    ask,
                },
            );
            return;
        }
        let start = history.join(room, ask, now);
        self.add_subscriber(room, from);
        self.links.send(
            from,
            ShardMsg::Joined {
                room: room.clone(),
                key,
                generation,
                start: Box::new(start),
            },
        );
    }

    fn on_unsubscribe(&mut self, room: &RoomId, from: ShardId, now: Instant) {
        if let Some(history) = &mut self.history {
            history.leave(room, now);
        }
        let Some(shards) = self.subscribers.get_mut(room) else {
            return;
        };
        if let Some(at) = shards.iter().position(|(shard, _)| *shard == from) {
            shards[at].1 -= 1;
            if shards[at].1 == 0 {
                shards.swap_remove(at);
            }
        }
        if shards.is_empty() {
            self.subscribers.remove(room);
        }
    }

    fn follow(
        &mut self,
        room: &RoomId,
        batch: Batch,
        local: Option<&Room>,
        cx: &mut Ctx,
    ) -> (Vec<Arc<Outgoing>>, bool) {
        let Some(history) = &mut self.history else {
            return (Vec::new(), false);
        };
        let needs = local.map(Room::needs).unwrap_or_default();
        let followed = history.follow(room, batch, needs, cx.now);
        // In this order on every shard's FIFO inbox: the live messages, the gap, then the
        // places of the joins that waited (each after everything its place covers).
        for out in &followed.live {
            self.send_to_subscribers(room, || ShardMsg::Broadcast {
                room: room.clone(),
                post: out.clone(),
            });
        }
        if followed.missed {
            self.send_to_subscribers(room, || ShardMsg::Missed { room: room.clone() });
        }
        for waiter in followed.ready {
            if waiter.owner == self.me {
                self.ready.push((room.clone(), waiter));
                continue;
            }
            let Some(history) = &mut self.history else {
                break;
            };
            let start = history.join(room, &waiter.ask, cx.now);
            self.add_subscriber(room, waiter.owner);
            self.links.send(
                waiter.owner,
                ShardMsg::Joined {
                    room: room.clone(),
                    key: waiter.key,
                    generation: waiter.generation,
                    start: Box::new(start),
                },
            );
        }
        (followed.live, followed.missed)
    }

    fn unfollow(&mut self, room: &RoomId) {
        if let Some(history) = &mut self.history {
            history.unfollow(room);
        }
    }

    fn take_ready(&mut self, into: &mut Vec<(RoomId, Waiter)>) {
        into.append(&mut self.ready);
    }

    fn take_to_sync(&mut self, into: &mut Vec<RoomId>) {
        if let Some(history) = &mut self.history {
            into.extend(history.take_to_sync());
        }
    }

    fn epoch(&self, room: &RoomId) -> Option<Epoch> {
        self.history.as_ref()?.epoch(room)
    }

    fn peek_history(&self, room: &RoomId, ask: &Ask, now: Instant) -> Option<Start> {
        self.history.as_ref()?.peek(room, ask, now)
    }

    fn sweep(&mut self, now: Instant) {
        if let Some(history) = &mut self.history {
            history.sweep(now);
        }
    }

    fn tell_presence(
        &mut self,
        room: &RoomId,
        share: Share,
        notice: Option<&SharedFrame>,
        _: &mut Ctx,
    ) {
        let from = self.me;
        self.links.send_to_others(|| ShardMsg::Presence {
            room: room.clone(),
            from,
            share,
            notice: notice.cloned(),
        });
    }

    fn send_now(&mut self) {
        // What is left (a full inbox) is retried at the end of the turn.
        self.links.flush();
    }

    fn end_turn(&mut self, counters: &mut Counters) -> bool {
        let waiting = self.links.flush();
        counters.add(
            Counter::MeshDropped,
            std::mem::take(&mut self.links.dropped),
        );
        if let Some(history) = &mut self.history {
            count_history(history, counters);
        }
        waiting
    }
}
