//! The `sharded` model's reach: the mesh. Each shard owns its members outright; a room's
//! message reaches the other shards that have members there as one `Arc`-shared
//! [`ShardMsg::Broadcast`] each, and membership changes travel as [`ShardMsg::Presence`]
//! (the share, and the notice for their v1 members). Each shard delivers to its own.

use std::sync::Arc;

use crate::chat::{Outgoing, Post};
use crate::frame::SharedFrame;
use crate::ids::ShardId;
use crate::mesh::{MeshLinks, ShardMsg};
use crate::metrics::{Counter, Counters};
use crate::models::Reach;
use crate::room::{Room, RoomId, Share};
use crate::session::{Ctx, Session};
use crate::tls::Conn;

/// One shard's links to the others.
pub struct Mesh {
    me: ShardId,
    links: MeshLinks,
}

impl Mesh {
    /// Shard `me`'s reach over `links`.
    pub fn new(me: ShardId, links: MeshLinks) -> Self {
        Mesh { me, links }
    }
}

impl Reach for Mesh {
    type Cell = Session<Conn>;

    fn fan_out(&mut self, room: &RoomId, post: Post, local: &Room, _: &mut Ctx) -> Arc<Outgoing> {
        let out = Outgoing::new(post, local.needs());
        for remote in &local.remote {
            self.links.send(
                remote.shard,
                ShardMsg::Broadcast {
                    room: room.clone(),
                    post: out.clone(),
                },
            );
        }
        out
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

    fn end_turn(&mut self, counters: &mut Counters) -> bool {
        let waiting = self.links.flush();
        counters.add(
            Counter::MeshDropped,
            std::mem::take(&mut self.links.dropped),
        );
        waiting
    }
}
