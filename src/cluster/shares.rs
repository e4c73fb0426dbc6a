//! The hand-off of this node's shares from `bridge-pub` to `bridge-sub`.
//!
//! The subscriber needs this node's membership (to subscribe, to render for the dialects
//! present, to count), but only the latest share of each (room, shard). So instead of a queue,
//! the publisher overwrites that pair's slot in a small map behind a mutex and rings a
//! one-slot bell; the subscriber takes the whole map when it hears the bell. The latest share of
//! a pair is never lost (it stays until taken), and the map holds at most one entry per
//! (room, shard) pair changed since the subscriber last took it. Only the two bridge threads
//! lock it, each for a map insert or swap; shard threads never touch it.
//!
//! The bell also says when the server is stopping: it disconnects when the publisher ends.
//!
//! With Redis as the sequencer, the same bell carries the rooms a loop asks the subscriber to
//! follow (joins wait for them to be synced): a set, so one entry per room however often it
//! is asked.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender, TryRecvError};

use crate::cluster::LocalShare;
use crate::ids::ShardId;
use crate::room::{RoomId, Share};

/// The latest share of each (room, shard) not yet taken by the subscriber.
type Latest = HashMap<(RoomId, ShardId), Share>;

/// The publisher's side.
pub struct ShareSender {
    latest: Arc<Mutex<Latest>>,
    follow: Arc<Mutex<HashSet<RoomId>>>,
    bell: Sender<()>,
}

/// The subscriber's side.
pub struct ShareReceiver {
    latest: Arc<Mutex<Latest>>,
    follow: Arc<Mutex<HashSet<RoomId>>>,
    bell: Receiver<()>,
}

/// The publisher is gone: the server is stopping.
#[derive(Debug, PartialEq, Eq)]
pub struct Stopped;

/// A connected pair.
pub fn handoff() -> (ShareSender, ShareReceiver) {
    let latest = Arc::new(Mutex::new(Latest::new()));
    let follow = Arc::new(Mutex::new(HashSet::new()));
    // One slot: a ring already waiting covers every share posted before it is heard.
    let (tx, rx) = crossbeam_channel::bounded(1);
    (
        ShareSender {
            latest: latest.clone(),
            follow: follow.clone(),
            bell: tx,
        },
        ShareReceiver {
            latest,
            follow,
            bell: rx,
        },
    )
}

/// Locks the map. A thread that panicked holding it left it whole (an insert or a swap), so
/// poisoning is ignored.
fn lock<T>(latest: &Mutex<T>) -> MutexGuard<'_, T> {
    latest.lock().unwrap_or_else(PoisonError::into_inner)
}

impl ShareSender {
    /// Posts `share`, replacing the pair's share not yet taken, and rings the bell.
    pub fn send(&self, LocalShare { room, shard, share }: LocalShare) {
        lock(&self.latest).insert((room, shard), share);
        // Full: a ring not yet heard, after which the subscriber takes this share too.
        // Disconnected: the subscriber is gone, nobody needs it.
        let _ = self.bell.try_send(());
    }

    /// Asks the subscriber to follow `room` and sync it, and rings the bell.
    pub fn follow(&self, room: RoomId) {
        lock(&self.follow).insert(room);
        let _ = self.bell.try_send(());
    }
}

impl ShareReceiver {
    /// Waits up to `timeout` for the bell and takes what was posted (nothing on a timeout).
    pub fn wait(&self, timeout: Duration) -> Result<Vec<LocalShare>, Stopped> {
        match self.bell.recv_timeout(timeout) {
            Ok(()) => Ok(self.take()),
            Err(RecvTimeoutError::Timeout) => Ok(Vec::new()),
            Err(RecvTimeoutError::Disconnected) => Err(Stopped),
        }
    }

    /// Takes what was posted if the bell rang, without waiting (and without locking if not).
    pub fn try_take(&self) -> Result<Vec<LocalShare>, Stopped> {
        match self.bell.try_recv() {
            Ok(()) => Ok(self.take()),
            Err(TryRecvError::Empty) => Ok(Vec::new()),
            Err(TryRecvError::Disconnected) => Err(Stopped),
        }
    }

    /// The rooms asked to be followed since the last call (taken whenever shares are: the
    /// same bell rings for both).
    pub fn take_follows(&self) -> Vec<RoomId> {
        std::mem::take(&mut *lock(&self.follow))
            .into_iter()
            .collect()
    }

    /// Empties the map. The bell was taken first, so a share posted after this takes rings
    /// again and is not missed.
    fn take(&self) -> Vec<LocalShare> {
        let taken = std::mem::take(&mut *lock(&self.latest));
        taken
            .into_iter()
            .map(|((room, shard), share)| LocalShare { room, shard, share })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn local(room: &str, shard: usize, plain: u32) -> LocalShare {
        LocalShare {
            room: RoomId::parse(room).unwrap(),
            shard: ShardId(shard),
            share: Share { plain, v1: 0 },
        }
    }

    fn sorted(mut shares: Vec<LocalShare>) -> Vec<(String, usize, u32)> {
        shares.sort_by(|a, b| (a.room.as_str(), a.shard).cmp(&(b.room.as_str(), b.shard)));
        shares
            .into_iter()
            .map(|s| (s.room.as_str().to_owned(), s.shard.0, s.share.plain))
            .collect()
    }

    #[test]
    fn the_latest_share_of_each_pair_wins_and_nothing_else_is_kept() {
        let (tx, rx) = handoff();
        assert_eq!(rx.try_take(), Ok(Vec::new()), "no ring, nothing taken");
        for plain in 1..=1000 {
            tx.send(local("a", 0, plain));
            tx.send(local("a", 1, plain * 2));
        }
        tx.send(local("b", 0, 0));
        assert_eq!(lock(&tx.latest).len(), 3, "one entry per (room, shard)");
        assert_eq!(
            sorted(rx.try_take().unwrap()),
            vec![
                ("a".to_owned(), 0, 1000),
                ("a".to_owned(), 1, 2000),
                ("b".to_owned(), 0, 0)
            ]
        );
        assert_eq!(rx.try_take(), Ok(Vec::new()), "taken once");
    }

    #[test]
    fn a_share_posted_after_a_take_rings_again() {
        let (tx, rx) = handoff();
        tx.send(local("a", 0, 1));
        assert_eq!(rx.wait(Duration::ZERO).unwrap().len(), 1);
        tx.send(local("a", 0, 2));
        assert_eq!(sorted(rx.try_take().unwrap()), vec![("a".to_owned(), 0, 2)]);
    }

    #[test]
    fn the_publisher_ending_stops_the_subscriber_after_the_last_share() {
        let (tx, rx) = handoff();
        tx.send(local("a", 0, 1));
        drop(tx);
        assert_eq!(
            rx.try_take().unwrap().len(),
            1,
            "what was posted still arrives"
        );
        assert_eq!(rx.try_take(), Err(Stopped));
        assert_eq!(rx.wait(Duration::ZERO), Err(Stopped));
    }
}
