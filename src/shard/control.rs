//! The server API's side of the loop (docs/api.md): requests a session read on the main port
//! go to the API service, and the service's [`Control`]s are answered from the loop's own
//! books — its sessions, its rooms, and (through the reach) the histories it keeps. Nothing
//! here runs unless the API is used: the message path never passes through it.

use crate::chat::Dialect;
use crate::control::{Control, MemberInfo, Reply, RoomCount, Target, Who};
use crate::http::request::FullRequest;
use crate::http::{Status, json_error};
use crate::ids::SessionKey;
use crate::models::Reach;
use crate::room::RoomId;
use crate::shard::Shard;

impl<R: Reach> Shard<R> {
    /// Session `key` read a server API request: it goes to the API service, whose answer
    /// comes back as a [`Control::Answer`]. If the service cannot take it now, 503 at once.
    pub(super) fn api_request(&mut self, key: SessionKey, request: Box<FullRequest>) {
        let Some(generation) = self.table.generation(key) else {
            return;
        };
        let taken = match &self.common.api {
            Some(api) => api.submit(request, self.id, key, generation),
            None => false,
        };
        if !taken {
            let busy = json_error(
                Status::Unavailable,
                &[("Retry-After", "1")],
                "the server API is busy",
            );
            self.answer_api(key, generation, busy.bytes);
        }
    }

    /// Sends session `key` (if it is still the one that asked) its API answer.
    fn answer_api(&mut self, key: SessionKey, generation: u64, response: Vec<u8>) {
        if !self.table.is_current(key, generation) {
            return; // it went away meanwhile
        }
        let mut cx = self.common.ctx(self.now, &mut self.counters);
        self.table.with(key, |s| s.api_answer(response, &mut cx));
        self.table.list_for_flush(key);
        self.table.arm(key);
    }

    /// Acts on a request of the API service. A reply nobody waits for any more is dropped.
    pub(super) fn on_control(&mut self, control: Control) {
        match control {
            Control::Publish {
                room,
                post,
                index,
                reply,
            } => {
                if let Some(cluster) = &self.cluster {
                    if self.common.config.history_on() {
                        // Redis numbers it: the publisher answers with its place (docs/api.md).
                        // One Redis could not take is not answered (the API says it timed out).
                        cluster.sequence_for_api(&room, &post, index, reply);
                        return;
                    }
                    cluster.publish(&room, &post);
                }
                let placed = self.publish_placed(&room, post);
                let _ = reply.try_send(Reply::Published { index, placed });
            }
            Control::Rooms { reply } => {
                let _ = reply.try_send(Reply::Rooms(self.room_counts()));
            }
            Control::Presence { room, limit, reply } => {
                let (members, total) = self.members(&room, limit);
                let _ = reply.try_send(Reply::Members { members, total });
            }
            Control::PresenceFor {
                room,
                target,
                request,
            } => {
                let (members, _) = self.members(&room, None);
                let shards = (self.id.0 as u16, self.common.config.workers as u16);
                if let Some(cluster) = &self.cluster {
                    cluster.answer_presence(&target, request, shards, &members);
                }
            }
            Control::History { room, ask, reply } => {
                let history = self.reach.peek_history(&room, &ask, self.now);
                let _ = reply.try_send(Reply::History(history));
            }
            Control::Disconnect {
                target,
                code,
                text,
                reply,
            } => {
                let closed = self.disconnect(&target, code, &text);
                let _ = reply.try_send(Reply::Disconnected(closed));
            }
            Control::Roster {
                key,
                generation,
                frame,
            } => self.answer_who(key, generation, frame),
            Control::Answer {
                key,
                generation,
                response,
            } => self.answer_api(key, generation, response),
        }
    }

    /// This loop's members of each room it knows, with the cluster's count of others.
    fn room_counts(&self) -> Vec<RoomCount> {
        self.rooms
            .iter()
            .map(|(room, entry)| RoomCount {
                room: room.clone(),
                here: (entry.plain.len() + entry.v1.len()) as u64,
                others: entry.others,
            })
            .filter(|count| count.here + count.others > 0)
            .collect()
    }

    /// This loop's members of `room` (at most `limit`, v1 members first), and how many it has.
    fn members(&mut self, room: &RoomId, limit: Option<usize>) -> (Vec<MemberInfo>, u64) {
        let Some(entry) = self.rooms.get(room) else {
            return (Vec::new(), 0);
        };
        let total = (entry.plain.len() + entry.v1.len()) as u64;
        let keys: Vec<SessionKey> = entry
            .v1
            .iter()
            .chain(&entry.plain)
            .take(limit.unwrap_or(usize::MAX))
            .copied()
            .collect();
        let config = &self.common.config;
        let members = keys
            .into_iter()
            .filter_map(|key| {
                self.table.with(key, |s| MemberInfo {
                    id: s.id_text(config),
                    nick: s.nick().cloned(),
                    v1: s.dialect() == Dialect::V1,
                    user: s.user_arc(),
                })
            })
            .collect();
        (members, total)
    }

    /// Closes every open WebSocket of this loop that `target` names, with `code` and `text`;
    /// returns how many. They leave their rooms at once (the others are told).
    pub(super) fn disconnect(&mut self, target: &Target, code: u16, text: &str) -> u64 {
        let mut closed = 0;
        for key in self.table.keys() {
            let mut cx = self.common.ctx(self.now, &mut self.counters);
            let done = self.table.with(key, |s| {
                let who = Who {
                    id: s.id(),
                    user: s.user(),
                };
                s.room().is_some() && target.matches(&who) && s.disconnect(code, text, &mut cx)
            });
            if done == Some(true) {
                closed += 1;
                self.table.list_for_flush(key);
                self.departures.push(key);
                self.table.arm(key);
            }
        }
        self.settle_departures();
        closed
    }
}
