//! A resume run in progress: its phases (`connect → settle → publish → drain → close`), one
//! loop turn (poll, service, then send, drop and reconnect what is due), and its
//! connections (dialed, ended, resumed).

use std::collections::BTreeMap;
use std::io;
use std::time::Duration;

use mio::{Events, Interest, Poll, Token};

use crate::alarm::Alarm;
use crate::clock::{Clock, ns_to_secs};
use crate::connection::MAX_OUTBOX;
use crate::error::LoadError;
use crate::frame::MaskSource;
use crate::handshake::Upgrade;
use crate::progress::Progress;
use crate::stats::Quantiles;
use crate::token::TokenScanner;

use super::drops::DropClock;
use super::link::{Link, LinkError, Status};
use super::offsets;
use super::publisher::{Dialect, Schedule};
use super::report::{ResumeReport, ResumeServer};
use super::subscriber::{Subscriber, Tally};
use super::{ResumeOptions, SUBPROTOCOL};

/// The alarm's token; subscribers are `Token(i)`, publishers `Token(subscribers + k)`.
const ALARM: Token = Token(usize::MAX - 1);
pub(super) const EVENTS_CAPACITY: usize = 1024;
/// The longest the loop sleeps without an event (it re-checks its deadlines this often).
const IDLE_POLL: Duration = Duration::from_millis(50);
/// Most messages queued per loop turn, so catching up on sends cannot starve receiving.
const SENDS_PER_TURN: usize = 4096;
/// How long the polite close at the end may take.
const CLOSE_GRACE_NS: u64 = 1_000_000_000;

/// The run's phases, in order (each ends by a deadline at the latest).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Phase {
    /// Everything dialed; a subscriber that ends now is left out of the run, not resumed.
    Connecting,
    /// Joins propagate; reconnects (after a server close) already resume.
    Settling,
    /// Publishers send; subscribers drop and resume.
    Publishing,
    /// No more sends or drops; resumes go on until everyone has the room's last message.
    Draining,
    /// Close frames out; nothing is resumed any more.
    Closing,
}

/// A subscriber, its current connection, and its timers.
struct SubSlot {
    sub: Subscriber,
    link: Option<Link>,
    /// Index into the targets: where the current (or last) connection went. Each reconnect
    /// moves on to the next one, so that with several nodes a resume lands on another node,
    /// as it usually does behind a load balancer.
    target: usize,
    /// Failed to join at the start: left out of the run.
    active: bool,
    next_drop_ns: Option<u64>,
    reconnect_at_ns: Option<u64>,
}

/// A publisher and its connection (never resumed: a publisher that loses it stops).
struct PubSlot {
    schedule: Schedule,
    link: Option<Link>,
}

/// Connection accounting, apart from the subscribers' [`Tally`].
#[derive(Debug, Default)]
struct Counts {
    opened: u64,
    connect_failures: u64,
    first_failure: Option<String>,
    sent: u64,
    send_skipped: u64,
    drops: u64,
    reconnects: u64,
    /// Reconnects dialed to another server address than the connection before.
    reconnects_to_another_node: u64,
    reconnect_failures: u64,
    server_close_codes: BTreeMap<u16, u64>,
    server_dropped: u64,
}

pub(super) struct Run {
    opts: ResumeOptions,
    poll: Poll,
    alarm: Alarm,
    clock: Clock,
    phase: Phase,
    subs: Vec<SubSlot>,
    pubs: Vec<PubSlot>,
    scratch: Vec<u8>,
    /// A publisher's next message body.
    body: Vec<u8>,
    scanner: TokenScanner,
    tally: Tally,
    counts: Counts,
    drop_clock: DropClock,
    /// Connections dialed so far (seeds each one's masks).
    dials: u64,
    /// Publishing from `.0` until `.1`.
    window: (u64, u64),
    /// The room's last offset in each epoch subscribers are in, known when the drain ends.
    final_offsets: BTreeMap<Option<String>, u64>,
    behind_at_end: u64,
    tail_missing: u64,
    server_cpu: (Option<f64>, Option<f64>),
}

impl Run {
    pub(super) fn new(opts: ResumeOptions) -> io::Result<Run> {
        let poll = Poll::new()?;
        let mut alarm = Alarm::new()?;
        poll.registry()
            .register(&mut alarm, ALARM, Interest::READABLE)?;
        let clock = Clock::process();
        let publishers = opts.publishers as u64;
        // Each publisher sends every P/R seconds, their phases staggered so that the room
        // sees one message every 1/R seconds.
        let interval_ns = ((publishers as f64 * 1e9 / opts.rate) as u64).max(1);
        let pubs = (0..publishers)
            .map(|k| PubSlot {
                schedule: Schedule {
                    publisher: k as u32,
                    next_due_ns: k * interval_ns / publishers.max(1),
                    interval_ns,
                    next_seq: 0,
                },
                link: None,
            })
            .collect();
        let subs = (0..opts.subscribers)
            .map(|i| SubSlot {
                sub: Subscriber::new(i, opts.publishers),
                link: None,
                target: i % opts.targets.len(),
                active: true,
                next_drop_ns: None,
                reconnect_at_ns: None,
            })
            .collect();
        Ok(Run {
            drop_clock: DropClock::new(opts.seed, opts.drop_every_ns),
            dials: 0,
            opts,
            poll,
            alarm,
            clock,
            phase: Phase::Connecting,
            subs,
            pubs,
            scratch: vec![0; crate::connection::READ_CHUNK],
            body: Vec::new(),
            scanner: TokenScanner::default(),
            tally: Tally::default(),
            counts: Counts::default(),
            window: (u64::MAX, u64::MAX),
            final_offsets: BTreeMap::new(),
            behind_at_end: 0,
            tail_missing: 0,
            server_cpu: (None, None),
        })
    }

    // ----- phases -------------------------------------------------------------------------

    /// Dials everything; done when every subscriber is welcomed and every publisher open (or
    /// failed), or at the connect timeout (the rest count as failed).
    pub(super) fn connect(&mut self, events: &mut Events) -> io::Result<()> {
        let now = self.clock.now_ns();
        for i in 0..self.subs.len() {
            self.dial_subscriber(i, now);
        }
        for k in 0..self.pubs.len() {
            self.dial_publisher(k);
        }
        let deadline = now + self.opts.timing.connect_timeout_ns;
        while !self.all_joined() && self.clock.now_ns() < deadline {
            self.turn(events, Some(deadline))?;
        }
        for i in 0..self.subs.len() {
            if self.subs[i].active && !self.subs[i].sub.is_live() {
                self.end_subscriber(i, None, "not welcomed before the connect timeout");
            }
        }
        for k in 0..self.pubs.len() {
            if self.pubs[k].link.as_ref().is_some_and(|l| !l.is_open()) {
                self.end_publisher(k, "not open before the connect timeout");
            }
        }
        Ok(())
    }

    /// The run's error when not a single subscriber joined.
    pub(super) fn nobody_joined(&self) -> Option<LoadError> {
        if self.subs.iter().any(|s| s.active) {
            return None;
        }
        Some(LoadError::NoConnections {
            failed: self.counts.connect_failures,
            first_failure: self
                .counts
                .first_failure
                .clone()
                .unwrap_or_else(|| "none recorded".into()),
        })
    }

    fn all_joined(&self) -> bool {
        self.subs.iter().all(|s| !s.active || s.sub.is_live())
            && self
                .pubs
                .iter()
                .all(|p| p.link.as_ref().is_none_or(Link::is_open))
    }

    pub(super) fn settle(&mut self, events: &mut Events) -> io::Result<()> {
        self.phase = Phase::Settling;
        let until = self.clock.now_ns() + self.opts.timing.settle_ns;
        while self.clock.now_ns() < until {
            self.turn(events, Some(until))?;
        }
        Ok(())
    }

    /// Publishes for the warm-up and the measured window; subscribers drop and resume.
    pub(super) fn publish(&mut self, events: &mut Events) -> io::Result<()> {
        let start = self.clock.now_ns();
        let timing = self.opts.timing;
        let end = start + timing.warmup_ns + timing.duration_ns;
        self.window = (start, end);
        self.tally.measure_from_ns = start + timing.warmup_ns;
        for slot in &mut self.pubs {
            slot.schedule.next_due_ns += start;
        }
        for slot in self.subs.iter_mut().filter(|s| s.active) {
            slot.next_drop_ns = Some(start + self.drop_clock.next_gap_ns());
        }
        self.server_cpu.0 = self.sample_cpu();
        self.phase = Phase::Publishing;
        let progress = Progress::new(self.opts.progress, (end - start) / 1_000_000, "running ms");
        while self.clock.now_ns() < end {
            self.turn(events, Some(end))?;
            progress.set(
                self.clock.now_ns().saturating_sub(start) / 1_000_000,
                format!("{} drops", self.counts.drops),
            );
        }
        progress.finish();
        // Messages due before the end that the last turn did not reach leave now.
        self.send_due(end);
        self.server_cpu.1 = self.sample_cpu();
        Ok(())
    }

    /// No more drops: waits until every subscriber is back and has the room's last message,
    /// or the drain timeout.
    pub(super) fn drain(&mut self, events: &mut Events) -> io::Result<()> {
        self.phase = Phase::Draining;
        let deadline = self.clock.now_ns() + self.opts.timing.drain_ns;
        loop {
            self.final_offsets =
                room_last_offsets(self.subs.iter().map(|s| &s.sub), self.counts.sent);
            if self.behind() == 0 || self.clock.now_ns() >= deadline {
                break;
            }
            self.turn(events, Some(deadline))?;
        }
        self.behind_at_end = self.behind();
        self.tail_missing = self
            .subs
            .iter()
            .filter(|s| s.active)
            .map(|s| {
                let last_offset = self.final_offset_of(&s.sub);
                last_offset.saturating_sub(s.sub.last().unwrap_or(last_offset))
            })
            .sum();
        Ok(())
    }

    /// Says goodbye: a close frame on every open link, then waits (bounded) for the server
    /// to close.
    pub(super) fn close(&mut self, events: &mut Events) -> io::Result<()> {
        self.phase = Phase::Closing;
        let mut closing: Vec<(Token, Link)> = Vec::new();
        let offset = self.subs.len();
        let subs = self
            .subs
            .iter_mut()
            .enumerate()
            .map(|(i, s)| (i, &mut s.link));
        let pubs = self
            .pubs
            .iter_mut()
            .enumerate()
            .map(|(k, p)| (offset + k, &mut p.link));
        for (i, link) in subs.chain(pubs) {
            if let Some(mut link) = link.take() {
                if link.is_open() && link.close().is_ok() {
                    closing.push((Token(i), link));
                } else {
                    link.deregister(self.poll.registry());
                }
            }
        }
        let deadline = self.clock.now_ns() + CLOSE_GRACE_NS;
        while !closing.is_empty() && self.clock.now_ns() < deadline {
            match self.poll.poll(events, Some(IDLE_POLL)) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
            for event in events.iter() {
                if let Some(at) = closing.iter().position(|(t, _)| *t == event.token())
                    && closing[at].1.discard_input(&mut self.scratch)
                {
                    let (_, mut link) = closing.swap_remove(at);
                    link.deregister(self.poll.registry());
                }
            }
        }
        for (_, mut link) in closing {
            link.deregister(self.poll.registry());
        }
        Ok(())
    }

    // ----- one loop turn ------------------------------------------------------------------

    /// Polls until the next timer (or `deadline`), services what is ready, then sends due
    /// messages, drops due subscribers and dials due reconnects.
    fn turn(&mut self, events: &mut Events, deadline: Option<u64>) -> io::Result<()> {
        let wake = match (self.next_timer(), deadline) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        if let Some(at) = wake {
            self.alarm.arm_at(&self.clock, at)?;
        }
        match self.poll.poll(events, Some(IDLE_POLL)) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => return Ok(()),
            Err(e) => return Err(e),
        }
        let subscribers = self.subs.len();
        for event in events.iter() {
            match event.token() {
                ALARM => self.alarm.acknowledge(),
                Token(i) if i < subscribers => self.service_subscriber(i),
                Token(i) => self.service_publisher(i - subscribers),
            }
        }
        let now = self.clock.now_ns();
        if self.phase == Phase::Publishing {
            self.send_due(now);
            self.drop_due(now);
        }
        if matches!(
            self.phase,
            Phase::Settling | Phase::Publishing | Phase::Draining
        ) {
            self.reconnect_due(now);
        }
        Ok(())
    }

    /// The earliest send, drop or reconnect still to come.
    fn next_timer(&self) -> Option<u64> {
        let mut next = None::<u64>;
        let mut consider = |at: Option<u64>| {
            if let Some(at) = at {
                next = Some(next.map_or(at, |n| n.min(at)));
            }
        };
        if self.phase == Phase::Publishing {
            for slot in &self.pubs {
                consider(Some(slot.schedule.next_due_ns));
            }
            for slot in &self.subs {
                consider(slot.next_drop_ns);
            }
        }
        for slot in &self.subs {
            consider(slot.reconnect_at_ns);
        }
        next
    }

    fn service_subscriber(&mut self, i: usize) {
        let now = self.clock.now_ns();
        let Run {
            subs,
            scratch,
            tally,
            scanner,
            opts,
            ..
        } = self;
        let slot = &mut subs[i];
        let Some(link) = slot.link.as_mut() else {
            return;
        };
        let sub = &mut slot.sub;
        let result = link.service(scratch, opts.max_frame, |payload| {
            sub.on_text(payload, now, tally, scanner)
        });
        match result {
            Ok(Status::Opened) if self.phase == Phase::Connecting => self.counts.opened += 1,
            Ok(_) => {}
            Err(e) => self.end_subscriber(i, Some(e), ""),
        }
    }

    fn service_publisher(&mut self, k: usize) {
        let Some(slot) = self.pubs.get_mut(k) else {
            return;
        };
        let Some(link) = slot.link.as_mut() else {
            return;
        };
        // What publishers receive (their room's messages) is read and passed over.
        match link.service(&mut self.scratch, self.opts.max_frame, |_| {}) {
            Ok(Status::Opened) => self.counts.opened += 1,
            Ok(_) => {}
            Err(e) => self.end_publisher(k, &e.to_string()),
        }
    }

    /// Queues every message due by `now` (within the turn's budget) and writes them.
    fn send_due(&mut self, now: u64) {
        let end = self.window.1;
        let mut budget = SENDS_PER_TURN;
        for k in 0..self.pubs.len() {
            let slot = &mut self.pubs[k];
            let mut failed = None;
            while budget > 0 && slot.schedule.next_due_ns <= now.min(end.saturating_sub(1)) {
                budget -= 1;
                match slot.link.as_mut() {
                    Some(link) if link.is_open() && link.pending() <= MAX_OUTBOX => {
                        let dialect = self.opts.publisher_dialect;
                        if let Some(pad) = slot.schedule.next_message(
                            now,
                            end,
                            self.opts.size,
                            dialect,
                            &mut self.body,
                        ) {
                            link.queue_text(&self.body, pad);
                            self.counts.sent += 1;
                        }
                    }
                    _ => {
                        slot.schedule.skip();
                        self.counts.send_skipped += 1;
                    }
                }
            }
            if let Some(link) = slot.link.as_mut()
                && let Err(e) = link.flush()
            {
                failed = Some(e.to_string());
            }
            if let Some(reason) = failed {
                self.end_publisher(k, &reason);
            }
        }
    }

    /// Drops, abruptly, every subscriber whose moment has come.
    fn drop_due(&mut self, now: u64) {
        for slot in &mut self.subs {
            if !slot.active || slot.next_drop_ns.is_none_or(|at| at > now) {
                continue;
            }
            slot.next_drop_ns = None;
            if let Some(link) = slot.link.take() {
                link.drop_abruptly(self.poll.registry());
                slot.sub.away(&mut self.tally);
                self.counts.drops += 1;
                slot.reconnect_at_ns = Some(now + self.opts.reconnect_after_ns);
            }
        }
    }

    fn reconnect_due(&mut self, now: u64) {
        for i in 0..self.subs.len() {
            let slot = &self.subs[i];
            if slot.active
                && slot.link.is_none()
                && slot.reconnect_at_ns.is_some_and(|at| at <= now)
            {
                self.subs[i].reconnect_at_ns = None;
                self.counts.reconnects += 1;
                self.move_to_next_target(i);
                self.dial_subscriber(i, now);
                if self.phase == Phase::Publishing {
                    let gap = self.drop_clock.next_gap_ns();
                    self.subs[i].next_drop_ns = Some(now + gap);
                }
            }
        }
    }

    // ----- connections --------------------------------------------------------------------

    /// Points subscriber `i` at the next target (round-robin), counting a change of node.
    fn move_to_next_target(&mut self, i: usize) {
        let targets = &self.opts.targets;
        let slot = &mut self.subs[i];
        let next = (slot.target + 1) % targets.len();
        if targets[next].addr != targets[slot.target].addr {
            self.counts.reconnects_to_another_node += 1;
        }
        slot.target = next;
    }

    /// Masks for the next connection: any unpredictable-enough value does (RFC 6455 masks
    /// protect proxies, not secrets).
    fn next_masks(&mut self) -> MaskSource {
        self.dials += 1;
        MaskSource::new(self.clock.now_ns() ^ (self.dials << 32))
    }

    fn dial_subscriber(&mut self, i: usize, now: u64) {
        let slot = &mut self.subs[i];
        let path = with_query(
            &self.opts.targets[slot.target].path,
            &slot.sub.query(self.opts.history),
        );
        slot.sub.dialing(now);
        let target = slot.target;
        match self.open_link(target, &path, Some(SUBPROTOCOL), i) {
            Ok(link) => self.subs[i].link = Some(link),
            Err(e) => self.end_subscriber(i, Some(e), ""),
        }
    }

    fn dial_publisher(&mut self, k: usize) {
        let target = k % self.opts.targets.len();
        let base = &self.opts.targets[target].path;
        let (path, subprotocol) = match self.opts.publisher_dialect {
            Dialect::Plain => (base.clone(), None),
            Dialect::V1 => (
                with_query(base, &format!("nick=publisher{k}")),
                Some(SUBPROTOCOL),
            ),
        };
        match self.open_link(target, &path, subprotocol, self.subs.len() + k) {
            Ok(link) => self.pubs[k].link = Some(link),
            Err(e) => self.end_publisher(k, &e.to_string()),
        }
    }

    /// Dials `path` on target `target`, registered as `Token(index)`.
    fn open_link(
        &mut self,
        target: usize,
        path: &str,
        subprotocol: Option<&str>,
        index: usize,
    ) -> Result<Link, LinkError> {
        let masks = self.next_masks();
        let target = &self.opts.targets[target];
        let source = self.opts.source_ips.for_connection(index, &target.addr);
        let upgrade = Upgrade::with_subprotocol(&target.authority, path, subprotocol)?;
        let mut link = Link::dial(target.addr, source, upgrade, masks)?;
        link.register(self.poll.registry(), Token(index))?;
        Ok(link)
    }

    /// A subscriber's connection ended (`error`), or never joined in time (`reason`). At the
    /// start that leaves the subscriber out of the run; later it reconnects after the delay.
    fn end_subscriber(&mut self, i: usize, error: Option<LinkError>, reason: &str) {
        let slot = &mut self.subs[i];
        if let Some(mut link) = slot.link.take() {
            link.deregister(self.poll.registry());
        }
        slot.sub.away(&mut self.tally);
        let reason = error.as_ref().map_or(reason.to_string(), |e| e.to_string());
        if self.phase == Phase::Connecting {
            slot.active = false;
            self.counts.connect_failures += 1;
            self.counts.first_failure.get_or_insert(reason);
            return;
        }
        match error {
            Some(LinkError::ServerClosed(code)) => {
                *self.counts.server_close_codes.entry(code).or_default() += 1
            }
            Some(LinkError::Connect(_) | LinkError::Upgrade(_)) => {
                self.counts.reconnect_failures += 1;
                self.counts.first_failure.get_or_insert(reason);
            }
            _ => self.counts.server_dropped += 1,
        }
        if self.phase < Phase::Closing {
            slot.reconnect_at_ns = Some(self.clock.now_ns() + self.opts.reconnect_after_ns);
        }
    }

    /// A publisher's connection is gone for the rest of the run: its later messages are
    /// counted as skipped.
    fn end_publisher(&mut self, k: usize, reason: &str) {
        if let Some(mut link) = self.pubs[k].link.take() {
            link.deregister(self.poll.registry());
        }
        if self.phase == Phase::Connecting {
            self.counts.connect_failures += 1;
        } else {
            self.counts.server_dropped += 1;
        }
        self.counts
            .first_failure
            .get_or_insert_with(|| format!("publisher: {reason}"));
    }

    // ----- the end ------------------------------------------------------------------------

    /// The room's last offset in the epoch `sub` is in.
    fn final_offset_of(&self, sub: &Subscriber) -> u64 {
        let epoch = sub.epoch().map(str::to_string);
        self.final_offsets.get(&epoch).copied().unwrap_or(0)
    }

    /// Subscribers not yet back, live and at the room's last offset.
    fn behind(&self) -> u64 {
        self.subs
            .iter()
            .filter(|s| s.active)
            .filter(|s| {
                s.link.as_ref().is_none_or(|l| !l.is_open())
                    || !s.sub.is_live()
                    || s.sub.last().unwrap_or(0) < self.final_offset_of(&s.sub)
            })
            .count() as u64
    }

    fn sample_cpu(&self) -> Option<f64> {
        self.opts
            .server
            .and_then(|p| p.sample())
            .map(|u| u.cpu_secs)
    }

    pub(super) fn report(&self) -> ResumeReport {
        let mut totals = offsets::OffsetTotals::default();
        let (mut missed, mut received_twice, mut foreign_tokens) = (0, 0, 0);
        for slot in self.subs.iter().filter(|s| s.active) {
            let t = slot.sub.totals();
            totals.unique += t.unique;
            totals.duplicates += t.duplicates;
            totals.lost += t.lost;
            totals.early += t.early;
            totals.out_of_range += t.out_of_range;
            // Every subscriber joined before the first send: every message sent was its due.
            let tokens = slot.sub.tokens();
            missed += self.counts.sent.saturating_sub(tokens.distinct);
            received_twice += tokens.again;
            foreign_tokens += tokens.out_of_range;
        }
        let tally = &self.tally;
        let counts = &self.counts;
        let server = self.opts.server.map(|probe| {
            let end = probe.sample();
            ResumeServer {
                pid: probe.pid,
                cpu_secs: match self.server_cpu {
                    (Some(a), Some(b)) => b - a,
                    _ => 0.0,
                },
                rss_end: end.map_or(0, |u| u.rss_bytes),
            }
        });
        ResumeReport {
            label: self.opts.label.clone(),
            subscribers: self.subs.len() as u64,
            publishers: self.pubs.len() as u64,
            opened: counts.opened,
            connect_failures: counts.connect_failures,
            first_failure: counts.first_failure.clone(),
            publish_secs: ns_to_secs(self.window.1.saturating_sub(self.window.0)),
            sent: counts.sent,
            send_skipped: counts.send_skipped,
            drops: counts.drops,
            server_close_codes: counts.server_close_codes.clone(),
            server_dropped: counts.server_dropped,
            reconnects: counts.reconnects,
            reconnects_to_another_node: counts.reconnects_to_another_node,
            reconnects_unwelcomed: tally.unwelcomed,
            reconnect_failures: counts.reconnect_failures,
            recovered: tally.recovered,
            not_recovered: tally.not_recovered,
            unanswered: tally.unanswered,
            catch_up_ms: Quantiles::of(&tally.catch_up),
            catch_ups_interrupted: tally.catch_ups_interrupted,
            short_replays: tally.short_replays,
            delivered: totals.unique,
            replayed: tally.replayed,
            live: tally.live,
            duplicates: totals.duplicates,
            lost: totals.lost,
            missed,
            received_twice,
            tail_missing: self.tail_missing,
            behind_at_end: self.behind_at_end,
            final_offset: self.final_offsets.values().copied().max().unwrap_or(0),
            drained: self.behind_at_end == 0,
            latency_ms: Quantiles::of(&tally.latency),
            unparsable: tally.unparsable,
            messages_without_offset: tally.messages_without_offset,
            welcomes_without_offset: tally.welcomes_without_offset,
            early_offsets: totals.early,
            out_of_range_offsets: totals.out_of_range,
            foreign: tally.foreign + foreign_tokens,
            error_codes: tally.errors.clone(),
            server,
        }
    }
}

/// The room's last offset in each epoch a subscriber is in: the room's offset at the start
/// (the first welcomes in that epoch) plus the `sent` messages, or the highest offset a
/// subscriber saw there if that is more (somebody else published). One server, or nodes
/// sharing one sequencer, make one epoch; nodes numbering a room each on their own make one
/// per node. An epoch nobody started in (reached by reconnects only) goes by what was seen
/// in it; subscribers without an epoch, by the messages sent.
fn room_last_offsets<'a>(
    subs: impl Iterator<Item = &'a Subscriber> + Clone,
    sent: u64,
) -> BTreeMap<Option<String>, u64> {
    let mut last: BTreeMap<Option<String>, u64> = BTreeMap::new();
    for (epoch, offset) in subs.clone().filter_map(Subscriber::start) {
        let at = last.entry(Some(epoch.to_string())).or_default();
        *at = (*at).max(offset + sent);
    }
    for sub in subs {
        let floor = if sub.epoch().is_none() { sent } else { 0 };
        let at = last.entry(sub.epoch().map(str::to_string)).or_default();
        *at = (*at).max(floor).max(sub.last().unwrap_or(0));
    }
    last
}

/// `path` with `query` appended (the URL may already carry a query of its own).
fn with_query(path: &str, query: &str) -> String {
    let separator = if path.contains('?') { '&' } else { '?' };
    format!("{path}{separator}{query}")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A subscriber welcomed in `epoch` at `offset`, then given the messages `more`.
    fn welcomed(epoch: &str, offset: u64, more: &[u64]) -> Subscriber {
        let (mut sub, mut tally, scanner) = (
            Subscriber::new(0, 1),
            Tally::default(),
            TokenScanner::default(),
        );
        sub.dialing(0);
        let welcome =
            format!(r#"{{"type":"welcome","epoch":"{epoch}","offset":{offset},"replay":0}}"#);
        sub.on_text(welcome.as_bytes(), 1, &mut tally, &scanner);
        for m in more {
            let message = format!(
                r#"{{"type":"message","text":"SCL1:0:{m}:1;","offset":{m},"history":false}}"#
            );
            sub.on_text(message.as_bytes(), 2, &mut tally, &scanner);
        }
        sub
    }

    #[test]
    fn each_epoch_has_its_own_last_offset() {
        // Two nodes numbering the room each on its own: A was at 10 when the run began, B at 3.
        let on_a = welcomed("00000000000000aa", 10, &[11, 12]);
        let on_b = welcomed("00000000000000bb", 3, &[4]);
        // Published to by somebody else too: seen beyond start + sent.
        let ahead_on_b = welcomed("00000000000000bb", 3, &[9, 10]);
        // Started on A, resumed (unrecovered) on a node C nobody started on: C goes by what
        // was seen there.
        let mut moved = welcomed("00000000000000aa", 10, &[]);
        let (mut tally, scanner) = (Tally::default(), TokenScanner::default());
        moved.dialing(3);
        let on_c = r#"{"type":"welcome","epoch":"00000000000000cc","offset":6,"replay":0,"recovered":false}"#;
        moved.on_text(on_c.as_bytes(), 4, &mut tally, &scanner);
        let subs = [on_a, on_b, ahead_on_b, moved];
        let last = room_last_offsets(subs.iter(), 5);
        assert_eq!(last[&Some("00000000000000aa".to_string())], 15);
        assert_eq!(last[&Some("00000000000000bb".to_string())], 10);
        assert_eq!(last[&Some("00000000000000cc".to_string())], 6);
        assert_eq!(last.len(), 3);
    }

    #[test]
    fn one_epoch_is_the_room_start_plus_what_was_sent() {
        let subs = [
            welcomed("00000000000000aa", 7, &[8]),
            welcomed("00000000000000aa", 7, &[]),
        ];
        let last = room_last_offsets(subs.iter(), 20);
        assert_eq!(
            last.into_iter().collect::<Vec<_>>(),
            [(Some("00000000000000aa".into()), 27)]
        );
    }

    #[test]
    fn without_an_epoch_the_messages_sent_count() {
        let sub = Subscriber::new(0, 1);
        let last = room_last_offsets(std::iter::once(&sub), 4);
        assert_eq!(last.into_iter().collect::<Vec<_>>(), [(None, 4)]);
    }
}
