//! Who is here: the answer to a v1 client's `who` (docs/protocol.md, "Who is here").
//!
//! A room's members live on every event loop of the node (and, in a cluster, on other nodes),
//! and no loop may wait for the others. So a loop hands each `who` to this module's thread
//! (`roster`) through a bounded [`RosterDoor`], and goes on. The thread asks every loop for
//! its members with the server API's own presence request ([`Control::Presence`], bounded by
//! [`LISTED`]) and, in a cluster, the other nodes through the Redis bridge (the API's
//! presence question, [`crate::api::gather_nodes`]); it renders one `members` envelope and
//! sends it back to the asking loop ([`Control::Roster`]), which queues it for the session.
//!
//! Nothing here is on the message path. Its cost is bounded three ways: a session may ask at
//! most once per [`crate::shard`]'s `WHO_INTERVAL`, at most [`QUEUE`] questions wait (past it
//! a `who` is answered `busy` at once), and one thread answers them one at a time.

use std::cmp::Ordering;
use std::io;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Instant;

use crossbeam_channel::{Receiver, Sender};

use crate::chat::envelope::{self, Listed};
use crate::cluster::ClusterLink;
use crate::control::{API_TIMEOUT, Control, MemberInfo, Reply, Target};
use crate::error::ServerError;
use crate::frame::SharedFrame;
use crate::ids::{SessionId, SessionKey, ShardId};
use crate::mesh::{PeerHandle, ShardMsg};
use crate::room::RoomId;

/// Most members a `members` envelope lists (its `total` counts them all).
pub const LISTED: usize = 1000;

/// Questions that may wait for the `roster` thread; past it a `who` is answered `busy`.
const QUEUE: usize = 64;

/// One `who`: the room, and the session that asked.
#[derive(Debug)]
pub struct WhoJob {
    /// The room.
    pub room: RoomId,
    /// The asking session's loop.
    pub shard: ShardId,
    /// The session.
    pub key: SessionKey,
    /// Its generation (a newer session in the slot is not it).
    pub generation: u64,
}

/// How a loop hands the `roster` thread a `who` (held by every loop).
#[derive(Clone, Debug)]
pub struct RosterDoor {
    tx: Sender<Job>,
}

/// What the roster thread does.
#[derive(Debug)]
enum Job {
    /// Answer a `who`.
    Who(WhoJob),
    /// Close this session of the node: its nickname was taken back by a new connection of
    /// the same client (a reclaim token, `crate::names`), on whichever loop that landed.
    Replace(SessionId),
}

/// The close frame's text for a session whose nickname a new connection took back.
pub const REPLACED: &str = "replaced by a new connection";

impl RosterDoor {
    /// Hands over `job`; false when too many wait (the caller answers `busy`).
    pub fn submit(&self, job: WhoJob) -> bool {
        self.tx.try_send(Job::Who(job)).is_ok()
    }

    /// Has session `old` closed (1000, [`REPLACED`]); false when too many jobs wait (it is
    /// then closed when its liveness deadline finds it gone, as before reclaims existed).
    pub fn replace(&self, old: SessionId) -> bool {
        self.tx.try_send(Job::Replace(old)).is_ok()
    }
}

/// Starts the `roster` thread over `loops` (one handle per event loop, in order) and, in a
/// cluster, the Redis bridge. It ends once every loop (every [`RosterDoor`]) is gone.
pub fn start(
    loops: Vec<PeerHandle>,
    cluster: Option<ClusterLink>,
) -> Result<(RosterDoor, JoinHandle<io::Result<()>>), ServerError> {
    let (tx, rx) = crossbeam_channel::bounded(QUEUE);
    let thread = std::thread::Builder::new()
        .name("roster".into())
        .spawn(move || serve(&loops, cluster.as_ref(), &rx))
        .map_err(ServerError::Roster)?;
    Ok((RosterDoor { tx }, thread))
}

fn serve(
    loops: &[PeerHandle],
    cluster: Option<&ClusterLink>,
    jobs: &Receiver<Job>,
) -> io::Result<()> {
    for job in jobs {
        let job = match job {
            Job::Who(job) => job,
            Job::Replace(old) => {
                replace(loops, old);
                continue;
            }
        };
        let frame = answer(loops, cluster, &job.room);
        let control = Control::Roster {
            key: job.key,
            generation: job.generation,
            frame,
        };
        if let Some(peer) = loops.get(job.shard.0) {
            // Not delivered (the loop is gone, or its inbox stayed full): nobody is told.
            let sent = peer
                .tx
                .send_timeout(ShardMsg::Control(Box::new(control)), API_TIMEOUT);
            if sent.is_ok() {
                let _ = peer.waker.wake();
            }
        }
    }
    Ok(())
}

/// Asks the loop of session `old` to close it as replaced (nobody waits for the answer).
fn replace(loops: &[PeerHandle], old: SessionId) {
    let Some(peer) = loops.get(usize::from(old.worker)) else {
        return;
    };
    let (reply, _) = crossbeam_channel::bounded(1);
    let control = Control::Disconnect {
        target: Target::Session(old),
        code: 1000,
        text: Arc::from(REPLACED),
        reply,
    };
    if peer
        .tx
        .send_timeout(ShardMsg::Control(Box::new(control)), API_TIMEOUT)
        .is_ok()
    {
        let _ = peer.waker.wake();
    }
}

/// The `members` envelope for `room`: every loop's members (and other nodes', in a
/// cluster), the first [`LISTED`] in [`listing_order`], and the total.
fn answer(loops: &[PeerHandle], cluster: Option<&ClusterLink>, room: &RoomId) -> SharedFrame {
    // Asked first, so that the other nodes work while the loops here do.
    let question = cluster.map(|c| (c.ask_presence(room), c.nodes()));
    let deadline = Instant::now() + API_TIMEOUT;
    let (reply, replies) = crossbeam_channel::bounded(loops.len());
    let mut asked = 0;
    for peer in loops {
        let control = Control::Presence {
            room: room.clone(),
            limit: Some(LISTED),
            reply: reply.clone(),
        };
        let wait = deadline.saturating_duration_since(Instant::now());
        if peer
            .tx
            .send_timeout(ShardMsg::Control(Box::new(control)), wait)
            .is_ok()
        {
            let _ = peer.waker.wake();
            asked += 1;
        }
    }
    drop(reply);
    let (mut members, mut total) = (Vec::new(), 0);
    let mut answered = 0;
    while answered < asked {
        match replies.recv_deadline(deadline) {
            Ok(Reply::Members {
                members: theirs,
                total: count,
            }) => {
                members.extend(theirs);
                total += count;
                answered += 1;
            }
            Ok(_) => answered += 1,
            Err(_) => break,
        }
    }
    // A loop that did not answer makes the list incomplete, like a node that did not.
    let mut complete = answered == loops.len();
    if let Some((question, nodes)) = question {
        let before = members.len();
        complete &= match question {
            Some(question) => crate::api::gather_nodes(&question, nodes, &mut members),
            None => false,
        };
        total += (members.len() - before) as u64;
    }
    members.sort_by(listing_order);
    members.truncate(LISTED);
    let listed: Vec<Listed> = members
        .iter()
        .map(|m| Listed {
            id: &m.id,
            nick: m.nick.as_ref().map(|n| n.as_str()),
            user: m.user.as_deref(),
        })
        .collect();
    // `complete` is reported where something can be missing for a reason the client cannot
    // see: in a cluster, or when a loop here did not answer in time.
    let report = (cluster.is_some() || !complete).then_some(complete);
    envelope::members(room.as_str(), &listed, total, report)
}

/// Members with a nickname first, by nickname (lowercased, then as written), then by id.
fn listing_order(a: &MemberInfo, b: &MemberInfo) -> Ordering {
    let name = |m: &MemberInfo| m.nick.as_ref().map(|n| n.as_str().to_lowercase());
    match (name(a), name(b)) {
        (Some(x), Some(y)) => x.cmp(&y).then_with(|| {
            a.nick
                .as_ref()
                .map(|n| n.as_str())
                .cmp(&b.nick.as_ref().map(|n| n.as_str()))
        }),
        (Some(_), None) => Ordering::Less,
        (None, Some(_)) => Ordering::Greater,
        (None, None) => Ordering::Equal,
    }
    .then_with(|| a.id.cmp(&b.id))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chat::Nick;
    use std::sync::Arc;

    fn member(id: &str, nick: Option<&str>) -> MemberInfo {
        MemberInfo {
            id: Arc::from(id),
            nick: nick.and_then(Nick::parse),
            v1: nick.is_some(),
            user: None,
        }
    }

    #[test]
    fn named_members_come_first_by_name_then_plain_ones_by_id() {
        let mut members = [
            member("0.9", None),
            member("1.1", Some("bob")),
            member("0.2", Some("Ann")),
            member("0.3", None),
            member("1.4", Some("ann2")),
        ];
        members.sort_by(listing_order);
        let ids: Vec<&str> = members.iter().map(|m| &*m.id).collect();
        assert_eq!(ids, ["0.2", "1.4", "1.1", "0.3", "0.9"]);
    }

    #[test]
    fn the_answer_lists_the_loops_members_and_counts_them_all() {
        // One loop that answers like a shard: 1,200 members of which it lists the limit.
        let poll = mio::Poll::new().unwrap();
        let waker = Arc::new(mio::Waker::new(poll.registry(), mio::Token(0)).unwrap());
        let (tx, inbox) = crossbeam_channel::bounded(4);
        let loops = vec![PeerHandle { tx, waker }];
        let shard = std::thread::spawn(move || {
            let ShardMsg::Control(control) = inbox.recv().unwrap() else {
                panic!("a presence request");
            };
            let Control::Presence { limit, reply, .. } = *control else {
                panic!("a presence request");
            };
            let members = (0..limit.unwrap())
                .map(|i| member(&format!("0.{i}"), Some(&format!("n{i:04}"))))
                .collect();
            reply
                .send(Reply::Members {
                    members,
                    total: 1200,
                })
                .unwrap();
        });
        let frame = answer(&loops, None, &RoomId::parse("r").unwrap());
        shard.join().unwrap();
        let json: serde_json::Value = serde_json::from_slice(&frame[4..]).unwrap();
        assert_eq!(json["type"], "members");
        assert_eq!(json["total"], 1200);
        assert_eq!(json["truncated"], true);
        assert_eq!(json["members"].as_array().unwrap().len(), LISTED);
        assert_eq!(json["members"][0]["nick"], "n0000");
        assert!(json.get("complete").is_none(), "every loop answered");
    }
}
