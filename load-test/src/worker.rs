//! A client thread: one `mio::Poll`, a slab of connections, and the thread's statistics.
//!
//! Like a shard of the server, a worker shares nothing on its hot path: it owns its sockets,
//! trackers and histograms, and only reads the run's phase and adds batched totals to the
//! shared [`RunControl`]. Each loop turn reads like the phases of the run:
//! `follow phase → start connects → poll → dispatch events → publish due messages →
//! flush → share progress`.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};
use std::io;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use hdrhistogram::Histogram;
use mio::event::Event;
use mio::{Events, Interest, Poll, Token};
use slab::Slab;

use crate::alarm::Alarm;
use crate::clock::Clock;
use crate::connection::{ConnError, Connection, Publishing, READ_CHUNK, Readable, State, dial};
use crate::control::{Phase, RunControl, Schedule};
use crate::frame::MaskSource;
use crate::handshake::Upgrade;
use crate::inbound::{Inbound, Recipient};
use crate::order::MemberOrder;
use crate::outbox::Outbox;
use crate::plan::{Plan, Role};
use crate::roundtrip::RoundTripBoard;
use crate::stats::{Endings, FloodStats, ReceiveStats, new_histogram};
use crate::tracker::SeqTracker;

/// The token of the waker the coordinator (and the round-trip board) use to wake a worker.
pub const WAKER: Token = Token(usize::MAX);
/// The token of the worker's alarm (see [`crate::alarm`]).
const ALARM: Token = Token(usize::MAX - 1);

const EVENTS_CAPACITY: usize = 1024;
/// Most messages sent per loop turn, so a publisher catching up cannot starve receiving.
const SENDS_PER_TURN: usize = 4096;
/// The longest a worker sleeps without an event: it re-reads the phase at least this often.
const IDLE_POLL: Duration = Duration::from_millis(100);
/// How long closing connections may take to say goodbye at the end of a run.
const CLOSE_GRACE: Duration = Duration::from_secs(1);

/// Everything a worker needs, built by the engine (the poll is created there so the engine
/// can hold the waker before the thread starts).
pub struct WorkerSetup {
    pub poll: Poll,
    pub plan: Arc<Plan>,
    pub control: Arc<RunControl>,
    pub board: Option<Arc<RoundTripBoard>>,
    /// Plan indices of this worker's connections.
    pub assigned: Vec<usize>,
    /// Most connects this worker has in progress at once.
    pub max_connecting: usize,
}

/// What a worker hands back at the end of the run.
#[derive(Debug)]
pub struct WorkerReport {
    pub receive: ReceiveStats,
    pub latency: Histogram<u64>,
    /// Connect + upgrade time of each opened connection (ns).
    pub connect: Histogram<u64>,
    /// How late open-loop messages left compared with their schedule (ns).
    pub send_lag: Histogram<u64>,
    pub opened: u64,
    pub failed: u64,
    pub first_failure: Option<String>,
    pub endings: Endings,
    pub first_connect_ns: Option<u64>,
    pub last_open_ns: Option<u64>,
    pub sent: u64,
    pub skipped: u64,
    pub open_holes: u64,
    /// The order books of every member still open when the run ended.
    pub members: Vec<MemberOrder>,
    pub flood: FloodStats,
}

/// Connection accounting, apart from the receive statistics in [`Inbound`].
struct Tally {
    connect: Histogram<u64>,
    send_lag: Histogram<u64>,
    opened: u64,
    failed: u64,
    first_failure: Option<String>,
    endings: Endings,
    first_connect_ns: Option<u64>,
    last_open_ns: Option<u64>,
    sent: u64,
    skipped: u64,
    open_holes: u64,
    /// (publisher, messages sent) of publishers whose connection is gone.
    finished_publishers: Vec<(u32, u64)>,
    members: Vec<MemberOrder>,
    flood: FloodStats,
}

pub struct Worker {
    poll: Poll,
    alarm: Alarm,
    clock: Clock,
    plan: Arc<Plan>,
    control: Arc<RunControl>,
    board: Option<Arc<RoundTripBoard>>,
    conns: Slab<Connection>,
    to_connect: VecDeque<usize>,
    connecting: usize,
    max_connecting: usize,
    /// Read buffer shared by all connections (only partial frames stay with a connection).
    scratch: Vec<u8>,
    inbound: Inbound,
    /// The flooders' receive side: frames are parsed (pings answered, closes seen) but
    /// nothing they receive counts.
    flood_inbound: Inbound,
    /// Open-loop publishers and flooders by next due time: (due ns, slab key).
    due: BinaryHeap<Reverse<(u64, usize)>>,
    closed_loop: Vec<usize>,
    /// Connections with queued output this turn.
    dirty: Vec<usize>,
    phase: Phase,
    schedule: Option<Schedule>,
    publishing_done: bool,
    /// Sends were left due at the end of the turn: poll without sleeping.
    behind: bool,
    shared_delivered: u64,
    tally: Tally,
}

impl Worker {
    pub fn new(setup: WorkerSetup) -> io::Result<Worker> {
        let mut alarm = Alarm::new()?;
        setup
            .poll
            .registry()
            .register(&mut alarm, ALARM, Interest::READABLE)?;
        let inbound = Inbound::new(setup.plan.max_frame, setup.board.clone());
        Ok(Worker {
            poll: setup.poll,
            alarm,
            clock: Clock::process(),
            conns: Slab::with_capacity(setup.assigned.len()),
            to_connect: setup.assigned.into(),
            connecting: 0,
            max_connecting: setup.max_connecting.max(1),
            scratch: vec![0; READ_CHUNK],
            inbound,
            flood_inbound: Inbound::new(setup.plan.max_frame, None),
            due: BinaryHeap::new(),
            closed_loop: Vec::new(),
            dirty: Vec::new(),
            phase: Phase::Connecting,
            schedule: None,
            publishing_done: false,
            behind: false,
            shared_delivered: 0,
            tally: Tally {
                connect: new_histogram(),
                send_lag: new_histogram(),
                opened: 0,
                failed: 0,
                first_failure: None,
                endings: Endings::default(),
                first_connect_ns: None,
                last_open_ns: None,
                sent: 0,
                skipped: 0,
                open_holes: 0,
                finished_publishers: Vec::new(),
                members: Vec::new(),
                flood: FloodStats::default(),
            },
            plan: setup.plan,
            control: setup.control,
            board: setup.board,
        })
    }

    /// Runs the worker until the coordinator finishes the run.
    pub fn run(mut self) -> io::Result<WorkerReport> {
        reduce_timer_slack();
        let mut events = Events::with_capacity(EVENTS_CAPACITY);
        loop {
            self.follow_phase();
            if self.phase == Phase::Finishing {
                break;
            }
            self.start_connects();
            let timeout = self.arm_alarm()?;
            match self.poll.poll(&mut events, Some(timeout)) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
            for event in events.iter() {
                match event.token() {
                    WAKER => {}
                    ALARM => self.alarm.acknowledge(),
                    Token(key) => self.on_connection_event(key, event),
                }
            }
            self.publish();
            self.flush_dirty();
            self.share_progress();
        }
        self.keep_member_orders();
        self.close_all(&mut events)?;
        Ok(self.into_report())
    }

    fn follow_phase(&mut self) {
        let remote = self.control.phase();
        if remote >= Phase::Running && self.phase == Phase::Connecting {
            self.begin_traffic();
            self.phase = Phase::Running;
        }
        if remote == Phase::Finishing {
            self.phase = Phase::Finishing;
        }
    }

    /// Traffic starts: give up on connections not open yet, count room members, and put
    /// every publisher on the schedule.
    fn begin_traffic(&mut self) {
        let now = self.clock.now_ns();
        let schedule = self.control.schedule().unwrap_or(Schedule {
            start_ns: now,
            measure_start_ns: now,
            measure_end_ns: now,
        });
        self.schedule = Some(schedule);
        self.inbound
            .set_window(schedule.measure_start_ns, schedule.measure_end_ns);

        let never_started = self.to_connect.len() as u64;
        self.to_connect.clear();
        if never_started > 0 {
            self.count_failure(never_started, "not started before the connect timeout");
        }
        let unfinished: Vec<usize> = self
            .conns
            .iter()
            .filter(|(_, c)| !c.is_open())
            .map(|(key, _)| key)
            .collect();
        for key in unfinished {
            let was_connecting = matches!(
                self.conns[key].state,
                State::Connecting | State::Upgrading(_)
            );
            self.remove(key);
            if was_connecting {
                self.count_failure(1, "not open before the connect timeout");
            }
        }
        self.connecting = 0;

        let mut members = vec![0u64; self.plan.rooms.len()];
        for (key, conn) in &self.conns {
            let spec = self.plan.connections[conn.spec];
            if spec.role.is_member() {
                members[spec.room as usize] += 1;
            }
            match spec.role {
                Role::Subscriber => {}
                Role::OpenLoop { offset_ns, .. } | Role::Flooder { offset_ns, .. } => {
                    let first = schedule.start_ns + offset_ns;
                    if first < schedule.measure_end_ns {
                        self.due.push(Reverse((first, key)));
                    }
                }
                Role::ClosedLoop { .. } => self.closed_loop.push(key),
            }
        }
        for (room, n) in members.into_iter().enumerate() {
            self.control.room_members[room].fetch_add(n, Ordering::AcqRel);
        }
        self.control.workers_started.fetch_add(1, Ordering::AcqRel);
    }

    fn start_connects(&mut self) {
        if self.phase != Phase::Connecting {
            return;
        }
        while self.connecting < self.max_connecting {
            let Some(index) = self.to_connect.pop_front() else {
                break;
            };
            self.start_connect(index);
        }
    }

    fn start_connect(&mut self, index: usize) {
        let spec = self.plan.connections[index];
        let target = &self.plan.targets[spec.target as usize];
        let source = self.plan.source_ips.for_connection(index, &target.addr);
        let now = self.clock.now_ns();
        self.tally.first_connect_ns.get_or_insert(now);
        let mut stream = match dial(target.addr, source) {
            Ok(stream) => stream,
            Err(e) => return self.count_failure(1, &ConnError::Connect(e).to_string()),
        };
        let entry = self.conns.vacant_entry();
        let key = entry.key();
        if let Err(e) = self.poll.registry().register(
            &mut stream,
            Token(key),
            Interest::READABLE | Interest::WRITABLE,
        ) {
            return self.count_failure(1, &format!("register: {e}"));
        }
        let room = self.plan.rooms[spec.room as usize];
        // A flooder tracks nothing: what it receives is not counted.
        let tracked = if spec.role.is_member() {
            room.publishers as usize
        } else {
            0
        };
        let recipient = Recipient {
            first_publisher: room.first_publisher,
            trackers: vec![SeqTracker::default(); tracked].into(),
            ..Recipient::default()
        };
        let publishing = spec.role.publisher().map(|publisher| Publishing {
            publisher,
            next_seq: 0,
            skipped: 0,
        });
        let outbox = Outbox::new(MaskSource::new(now ^ (index as u64) << 20));
        entry.insert(Connection::new(
            index, stream, now, recipient, outbox, publishing,
        ));
        self.connecting += 1;
    }

    fn on_connection_event(&mut self, key: usize, event: &Event) {
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        match conn.state {
            State::Connecting => self.on_connecting(key),
            State::Upgrading(_) => self.on_upgrading(key),
            State::Open => {
                if event.is_readable() || event.is_read_closed() || event.is_error() {
                    self.on_readable(key);
                }
                if let Some(conn) = self.conns.get(key)
                    && conn.outbox.pending() > 0
                {
                    self.dirty.push(key);
                }
            }
            State::Closing => {
                let scratch = &mut self.scratch[..READ_CHUNK];
                if self.conns[key].discard_input(scratch) {
                    self.remove(key);
                } else {
                    self.dirty.push(key);
                }
            }
            State::Closed => {}
        }
    }

    fn on_connecting(&mut self, key: usize) {
        let conn = &mut self.conns[key];
        let result = conn.connect_finished().and_then(|established| {
            if !established {
                return Ok(false);
            }
            let target = &self.plan.targets[self.plan.connections[conn.spec].target as usize];
            let upgrade = Upgrade::new(&target.authority, &target.path)?;
            conn.start_upgrade(upgrade)?;
            Ok(true)
        });
        match result {
            Ok(_) => {}
            Err(e) => self.fail_connect(key, e),
        }
    }

    fn on_upgrading(&mut self, key: usize) {
        let conn = &mut self.conns[key];
        let inbound = match self.plan.connections[conn.spec].role {
            Role::Flooder { .. } => &mut self.flood_inbound,
            _ => &mut self.inbound,
        };
        match conn.continue_upgrade(&mut self.scratch[..READ_CHUNK], inbound, &self.clock) {
            Ok(false) => {}
            Ok(true) => {
                let now = self.clock.now_ns();
                self.tally
                    .connect
                    .saturating_record(now.saturating_sub(conn.connect_started_ns).max(1));
                self.tally.opened += 1;
                self.tally.last_open_ns = Some(now);
                self.connecting -= 1;
                self.control.opened.fetch_add(1, Ordering::AcqRel);
                if conn.is_open() {
                    // More frames may sit in the socket: edge-triggered, so read them now.
                    self.on_readable(key);
                }
            }
            Err(e) => self.fail_connect(key, e),
        }
    }

    fn on_readable(&mut self, key: usize) {
        let conn = &mut self.conns[key];
        let flooder = matches!(self.plan.connections[conn.spec].role, Role::Flooder { .. });
        let inbound = if flooder {
            &mut self.flood_inbound
        } else {
            &mut self.inbound
        };
        let readable = conn.receive(&mut self.scratch, inbound, &self.clock);
        // A flooder's end is what it is there to see: kept apart from everyone else's.
        let endings = if flooder {
            &mut self.tally.flood.endings
        } else {
            &mut self.tally.endings
        };
        match readable {
            Readable::Drained => {}
            Readable::ServerClosed(code) => {
                *endings.server_close_codes.entry(code).or_default() += 1;
                self.dirty.push(key);
            }
            Readable::Failed(_) => {
                endings.dropped += 1;
                self.remove(key);
            }
            Readable::Protocol(_) => {
                endings.protocol_errors += 1;
                self.remove(key);
            }
        }
    }

    /// Sends every open-loop message that is due (up to the turn's budget) and keeps the
    /// closed-loop publishers' broadcasts in flight.
    fn publish(&mut self) {
        let (Phase::Running, Some(schedule)) = (self.phase, self.schedule) else {
            return;
        };
        if self.publishing_done {
            return;
        }
        let now = self.clock.now_ns();
        let size = self.plan.payload_size;
        let mut budget = SENDS_PER_TURN;
        self.behind = false;
        while let Some(&Reverse((due, key))) = self.due.peek() {
            if due > now {
                break;
            }
            if budget == 0 {
                self.behind = true;
                break;
            }
            budget -= 1;
            self.due.pop();
            let Some(conn) = self.conns.get_mut(key).filter(|c| c.is_open()) else {
                continue;
            };
            let interval_ns = match self.plan.connections[conn.spec].role {
                Role::OpenLoop { interval_ns, .. } => {
                    // Stamped with the scheduled time, not `now`: lateness is part of the
                    // latency.
                    if conn.queue_next_message(due, size).is_some() {
                        self.tally.sent += 1;
                        self.tally.send_lag.saturating_record(now - due + 1);
                        self.dirty.push(key);
                    }
                    interval_ns
                }
                Role::Flooder { interval_ns, .. } => {
                    if conn.queue_filler(size) {
                        self.tally.flood.sent += 1;
                        self.dirty.push(key);
                    } else {
                        self.tally.flood.skipped += 1;
                    }
                    interval_ns
                }
                Role::Subscriber | Role::ClosedLoop { .. } => continue,
            };
            let next = due + interval_ns;
            if next < schedule.measure_end_ns {
                self.due.push(Reverse((next, key)));
            }
        }

        if (schedule.start_ns..schedule.measure_end_ns).contains(&now)
            && let Some(board) = &self.board
        {
            for &key in &self.closed_loop {
                let Some(conn) = self.conns.get_mut(key).filter(|c| c.is_open()) else {
                    continue;
                };
                while let Some(seq) = conn.publishing.map(|p| p.next_seq) {
                    if !board.launch(seq, now) {
                        break;
                    }
                    if conn.queue_next_message(now, size).is_none() {
                        board.cancel(seq);
                        break;
                    }
                    self.tally.sent += 1;
                    self.dirty.push(key);
                }
            }
        }

        if self.due.is_empty() && (self.closed_loop.is_empty() || now >= schedule.measure_end_ns) {
            self.finish_publishing();
        }
    }

    /// Every publisher of this worker has sent its last message: hand in the counts.
    fn finish_publishing(&mut self) {
        self.publishing_done = true;
        let mut sent = std::mem::take(&mut self.tally.finished_publishers);
        for (_, conn) in &self.conns {
            if let Some(p) = conn.publishing {
                sent.push((p.publisher, p.next_seq));
            }
        }
        for (publisher, n) in sent {
            self.control.sent[publisher as usize].fetch_add(n, Ordering::AcqRel);
        }
        self.control.publishing_done.fetch_add(1, Ordering::AcqRel);
    }

    fn flush_dirty(&mut self) {
        let mut dirty = std::mem::take(&mut self.dirty);
        for key in dirty.drain(..) {
            let Some(conn) = self.conns.get_mut(key) else {
                continue;
            };
            if let Err(_e) = conn.flush() {
                match self.plan.connections[conn.spec].role {
                    Role::Flooder { .. } => self.tally.flood.endings.dropped += 1,
                    _ => self.tally.endings.dropped += 1,
                }
                self.remove(key);
            }
        }
        self.dirty = dirty;
    }

    fn share_progress(&mut self) {
        let delivered = self.inbound.stats.delivered;
        if delivered > self.shared_delivered {
            self.control
                .delivered
                .fetch_add(delivered - self.shared_delivered, Ordering::AcqRel);
            self.shared_delivered = delivered;
        }
    }

    /// Sets the alarm for the next due send and returns how long poll may sleep.
    fn arm_alarm(&mut self) -> io::Result<Duration> {
        if self.behind {
            return Ok(Duration::ZERO);
        }
        let next = match self.schedule {
            Some(s) if self.phase == Phase::Running && !self.publishing_done => {
                let mut at = s.measure_end_ns;
                if let Some(Reverse((due, _))) = self.due.peek() {
                    at = at.min(*due);
                }
                if !self.closed_loop.is_empty() && self.clock.now_ns() < s.start_ns {
                    at = at.min(s.start_ns);
                }
                Some(at)
            }
            _ => None,
        };
        if let Some(at) = next {
            self.alarm.arm_at(&self.clock, at)?;
        }
        Ok(IDLE_POLL)
    }

    /// Keeps the order books of the members still open: connections open only now were
    /// open since traffic started (late ones were dropped then), so these were connected
    /// throughout.
    fn keep_member_orders(&mut self) {
        let plan = &self.plan;
        self.tally.members = self
            .conns
            .iter()
            .filter(|(_, c)| c.is_open() && plan.connections[c.spec].role.is_member())
            .map(|(_, c)| MemberOrder {
                room: plan.connections[c.spec].room,
                print: c.recipient.order,
                duplicates: c.recipient.duplicates,
            })
            .collect();
    }

    /// Closes every connection politely (close frame, wait for the server's EOF), bounded by
    /// [`CLOSE_GRACE`]; what remains is dropped.
    fn close_all(&mut self, events: &mut Events) -> io::Result<()> {
        let keys: Vec<usize> = self.conns.iter().map(|(key, _)| key).collect();
        for key in keys {
            let conn = &mut self.conns[key];
            match conn.state {
                State::Open => {
                    conn.queue_close();
                    conn.state = State::Closing;
                    if conn.flush().is_err() {
                        self.remove(key);
                    }
                }
                State::Closing => {
                    if conn.flush().is_err() {
                        self.remove(key);
                    }
                }
                _ => self.remove(key),
            }
        }
        let deadline = std::time::Instant::now() + CLOSE_GRACE;
        while !self.conns.is_empty() {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            if left.is_zero() {
                break;
            }
            match self.poll.poll(events, Some(left.min(IDLE_POLL))) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
            for event in events.iter() {
                if let Token(key) = event.token()
                    && key < ALARM.0
                    && let Some(conn) = self.conns.get_mut(key)
                {
                    let _ = conn.flush();
                    if conn.discard_input(&mut self.scratch[..READ_CHUNK]) {
                        self.remove(key);
                    }
                }
            }
        }
        let keys: Vec<usize> = self.conns.iter().map(|(key, _)| key).collect();
        for key in keys {
            self.remove(key);
        }
        Ok(())
    }

    fn fail_connect(&mut self, key: usize, error: ConnError) {
        self.remove(key);
        self.connecting = self.connecting.saturating_sub(1);
        self.count_failure(1, &error.to_string());
    }

    fn count_failure(&mut self, n: u64, reason: &str) {
        self.tally.failed += n;
        self.control.failed.fetch_add(n, Ordering::AcqRel);
        if self.tally.first_failure.is_none() {
            self.tally.first_failure = Some(reason.to_string());
        }
    }

    /// Drops a connection, keeping what it contributes to the report.
    fn remove(&mut self, key: usize) {
        let Some(mut conn) = self.conns.try_remove(key) else {
            return;
        };
        let _ = self.poll.registry().deregister(&mut conn.stream);
        self.tally.open_holes += conn.recipient.open_holes();
        if let Some(p) = conn.publishing {
            self.tally.skipped += p.skipped;
            if !self.publishing_done {
                self.tally
                    .finished_publishers
                    .push((p.publisher, p.next_seq));
            }
        }
    }

    fn into_report(self) -> WorkerReport {
        let skipped_open: u64 = self
            .conns
            .iter()
            .filter_map(|(_, c)| c.publishing.map(|p| p.skipped))
            .sum();
        WorkerReport {
            receive: self.inbound.stats,
            latency: self.inbound.latency,
            connect: self.tally.connect,
            send_lag: self.tally.send_lag,
            opened: self.tally.opened,
            failed: self.tally.failed,
            first_failure: self.tally.first_failure,
            endings: self.tally.endings,
            first_connect_ns: self.tally.first_connect_ns,
            last_open_ns: self.tally.last_open_ns,
            sent: self.tally.sent,
            skipped: self.tally.skipped + skipped_open,
            open_holes: self.tally.open_holes,
            members: self.tally.members,
            flood: self.tally.flood,
        }
    }
}

/// The kernel may delay a sleeping thread's wake-up by its timer slack (50 µs by default) to
/// batch wake-ups; that delay would be measured as send lag and latency. 1 µs instead.
fn reduce_timer_slack() {
    // SAFETY: PR_SET_TIMERSLACK takes one integer argument and affects only this thread.
    unsafe { libc::prctl(libc::PR_SET_TIMERSLACK, 1 as libc::c_ulong) };
}
