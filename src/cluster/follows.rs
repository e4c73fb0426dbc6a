//! What `bridge-sub` keeps to follow rooms whose order Redis makes (`--redis` with history
//! on; [`crate::cluster::sequencer`]): its own command connection (a subscribed connection
//! can only receive), where each followed room stands, and the rooms loops asked it to sync.
//!
//! A room is **followed** while this node has members in it, or while a loop has joins
//! waiting for it (a *request*, kept [`REQUEST_GRACE`] so that the joins get admitted and
//! their presence arrives before the room could be left again). Following a room means:
//! subscribed to its channel, and its sequencer given a [`Batch`] read *after* the
//! subscription was made, then every message as it comes, in offset order. A message that
//! does not follow the last one handed over (a gap, another epoch) makes the thread read the
//! room again (the read script), which fills the gap or, if the stream no longer reaches
//! back, resets the room's history: the sequencer decides ([`crate::history::follow`]).
//!
//! Bounds: one position per followed room, one request per room.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use crate::cluster::sequencer::{self, Script, Sequencing};
use crate::cluster::{IO_TIMEOUT, connect};
use crate::history::{Batch, Epoch};
use crate::room::RoomId;

/// How long a room stays followed after a loop asked for it.
pub const REQUEST_GRACE: Duration = Duration::from_secs(3);

/// Longest wait between two renewals of the followed rooms' time to live in Redis.
const REFRESH_CAP: Duration = Duration::from_secs(60);

/// The subscriber's following of rooms (module docs).
pub struct Follows {
    seq: Sequencing,
    read: Script,
    conn: Option<redis::Connection>,
    /// The last epoch and offset handed to each followed room's sequencer.
    pub at: HashMap<RoomId, (Epoch, u64)>,
    /// Rooms loops asked to follow, and until when.
    requested: HashMap<RoomId, Instant>,
    /// Rooms asked for since the last pass: each is read again even if it is followed (its
    /// sequencer may have stopped trusting its history since).
    pub fresh: HashSet<RoomId>,
    next_refresh: Instant,
}

impl Follows {
    /// Nothing followed yet.
    pub fn new(seq: Sequencing) -> Follows {
        Follows {
            seq,
            read: Script::new(sequencer::READ),
            conn: None,
            at: HashMap::new(),
            requested: HashMap::new(),
            fresh: HashSet::new(),
            next_refresh: Instant::now(),
        }
    }

    /// Opens the command connection (with the subscription: one fails, both are remade).
    pub fn connect(&mut self, client: &redis::Client) -> redis::RedisResult<()> {
        self.conn = None;
        let mut conn = connect(client, IO_TIMEOUT)?;
        self.read.load(&mut conn)?;
        self.conn = Some(conn);
        Ok(())
    }

    /// Reads `room` as Redis has it now: its epoch (made if missing), offset and last
    /// messages. `None` when the answer is not the script's (logged).
    pub fn read(&mut self, room: &RoomId) -> redis::RedisResult<Option<Batch>> {
        let Some(conn) = self.conn.as_mut() else {
            return Err(std::io::Error::from(std::io::ErrorKind::NotConnected).into());
        };
        let mut cmd = redis::cmd("EVALSHA");
        cmd.arg(self.read.hash())
            .arg(2)
            .arg(sequencer::meta_key(room))
            .arg(sequencer::log_key(room))
            .arg(sequencer::fresh_epoch())
            .arg(self.seq.size)
            .arg(self.seq.ttl_secs());
        let value = match cmd.query::<redis::Value>(conn) {
            Err(e) if Script::missing(&e) => {
                self.read.load(conn)?;
                redis::cmd("EVALSHA")
                    .arg(self.read.hash())
                    .arg(2)
                    .arg(sequencer::meta_key(room))
                    .arg(sequencer::log_key(room))
                    .arg(sequencer::fresh_epoch())
                    .arg(self.seq.size)
                    .arg(self.seq.ttl_secs())
                    .query(conn)?
            }
            other => other?,
        };
        let batch = sequencer::batch(value);
        if batch.is_none() {
            tracing::warn!(room = room.as_str(), "redis: unreadable state of the room");
        }
        Ok(batch)
    }

    /// A loop asked to follow `room` at `now`.
    pub fn request(&mut self, room: RoomId, now: Instant) {
        self.requested.insert(room.clone(), now + REQUEST_GRACE);
        self.fresh.insert(room);
    }

    /// Rooms asked for lately (followed even without members here yet).
    pub fn requested(&self) -> impl Iterator<Item = &RoomId> {
        self.requested.keys()
    }

    /// Forgets requests older than [`REQUEST_GRACE`].
    pub fn expire_requests(&mut self, now: Instant) {
        self.requested.retain(|_, until| *until > now);
    }

    /// Renews the time to live of every followed room's keys when it is due (a third of
    /// [`Sequencing::followed_ttl`]; this thread wakes at least at every heartbeat): a room
    /// with members here keeps its order in Redis however quiet, as a room with members keeps
    /// its history on one node.
    pub fn refresh(&mut self, now: Instant) -> redis::RedisResult<()> {
        if now < self.next_refresh || self.at.is_empty() {
            return Ok(());
        }
        let ttl = self.seq.followed_ttl();
        self.next_refresh = now + (ttl / 3).clamp(Duration::from_secs(1), REFRESH_CAP);
        let Some(conn) = self.conn.as_mut() else {
            return Ok(());
        };
        let ttl = ttl.as_secs();
        let mut pipe = redis::pipe();
        for room in self.at.keys() {
            // Only existing keys: a missing meta stays missing, and the next message or read
            // starts a new epoch, as it must.
            pipe.cmd("EXPIRE")
                .arg(sequencer::meta_key(room))
                .arg(ttl)
                .ignore();
            pipe.cmd("EXPIRE")
                .arg(sequencer::log_key(room))
                .arg(ttl)
                .ignore();
        }
        pipe.exec(conn)
    }
}
