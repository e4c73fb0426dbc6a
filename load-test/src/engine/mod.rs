//! Runs a [`Plan`]: starts the client threads, moves them through the phases, and merges
//! their reports into a [`TrafficReport`].
//!
//! The coordinating (calling) thread does no I/O with the server: it watches the shared
//! counters, samples the server's CPU and memory at the phase boundaries, and draws progress.
//! A run reads like its phases: `connect → settle → traffic → drain → finish → report`.

mod merge;

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::thread::{self, JoinHandle};
use std::time::Duration;

use mio::{Poll, Waker};

use crate::clock::Clock;
use crate::control::{RunControl, Schedule};
use crate::error::LoadError;
use crate::limits::{SPARE_FDS, raise_fd_limit};
use crate::order;
use crate::plan::{Plan, Role};
use crate::probe::{ServerProbe, Usage, own_cpu_secs};
use crate::progress::Progress;
use crate::report::TrafficReport;
use crate::roundtrip::RoundTripBoard;
use crate::sockstat;
use crate::worker::{WAKER, Worker, WorkerReport, WorkerSetup};

use merge::{Merged, Samples};

/// How often the coordinator looks at the counters.
const TICK: Duration = Duration::from_millis(20);
/// Traffic starts this long after the phase switch, so every worker has scheduled it.
const START_MARGIN_NS: u64 = 100_000_000;
/// Extra time publishers get after the window to hand in their counts.
const PUBLISH_GRACE_NS: u64 = 5_000_000_000;

/// How a run is observed.
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// The server to sample (CPU, RSS), if known.
    pub server: Option<ServerProbe>,
    /// Draw progress bars (when stderr is a terminal).
    pub progress: bool,
}

/// Runs `plan` to the end and reports what happened.
pub fn run_plan(plan: Plan, options: &RunOptions) -> Result<TrafficReport, LoadError> {
    check_descriptors(&plan)?;
    let mut run = Coordinator::start(plan, options)?;
    if !run.connect() {
        let reports = run.finish()?;
        return Err(LoadError::NoConnections {
            failed: reports.iter().map(|r| r.failed).sum(),
            first_failure: reports
                .iter()
                .find_map(|r| r.first_failure.clone())
                .unwrap_or_else(|| "none recorded".into()),
        });
    }
    run.settle();
    run.traffic();
    run.drain();
    let reports = run.finish()?;
    Ok(run.report(&reports))
}

fn check_descriptors(plan: &Plan) -> Result<(), LoadError> {
    let total = plan.connections.len();
    if total == 0 {
        return Err(LoadError::InvalidOptions(
            "the plan has no connections".into(),
        ));
    }
    let fd_limit = raise_fd_limit();
    if total as u64 + SPARE_FDS > fd_limit {
        return Err(LoadError::InvalidOptions(format!(
            "{total} connections need more descriptors than this process may open ({fd_limit}); \
             raise the hard limit (ulimit -Hn) or use fewer connections"
        )));
    }
    Ok(())
}

type WorkerHandle = JoinHandle<std::io::Result<WorkerReport>>;

/// The coordinating thread's view of a run in progress.
struct Coordinator {
    plan: Arc<Plan>,
    probe: Option<ServerProbe>,
    progress: bool,
    clock: Clock,
    control: Arc<RunControl>,
    board: Option<Arc<RoundTripBoard>>,
    threads: usize,
    handles: Vec<WorkerHandle>,
    wakers: Vec<Arc<Waker>>,
    schedule: Option<Schedule>,
    samples: Samples,
    drained: bool,
    expected: u64,
}

impl Coordinator {
    /// Spawns the workers; they start connecting at once.
    fn start(plan: Plan, options: &RunOptions) -> Result<Coordinator, LoadError> {
        let threads = plan.threads.clamp(1, plan.connections.len());
        let plan = Arc::new(plan);
        let control = Arc::new(RunControl::new(plan.rooms.len(), plan.publisher_count()));
        let board = closed_loop_board(&plan);
        let mut run = Coordinator {
            probe: options.server,
            progress: options.progress,
            clock: Clock::process(),
            threads,
            handles: Vec::with_capacity(threads),
            wakers: Vec::with_capacity(threads),
            schedule: None,
            samples: Samples::default(),
            drained: false,
            expected: 0,
            plan,
            control,
            board,
        };
        run.samples.before_connect = run.sample();
        run.samples.kernel_before_connect = sockstat::read();
        run.spawn_workers()?;
        Ok(run)
    }

    fn spawn_workers(&mut self) -> Result<(), LoadError> {
        let total = self.plan.connections.len();
        let sender = self
            .plan
            .connections
            .iter()
            .position(|c| matches!(c.role, Role::ClosedLoop { .. }));
        let max_connecting = self.plan.connect_concurrency.div_ceil(self.threads);
        for id in 0..self.threads {
            let poll = Poll::new().map_err(LoadError::WorkerSetup)?;
            let waker =
                Arc::new(Waker::new(poll.registry(), WAKER).map_err(LoadError::WorkerSetup)?);
            if let (Some(board), Some(sender)) = (&self.board, sender)
                && sender % self.threads == id
            {
                board.set_sender_waker(waker.clone());
            }
            let setup = WorkerSetup {
                poll,
                plan: self.plan.clone(),
                control: self.control.clone(),
                board: self.board.clone(),
                // Round-robin, so publishers (listed first by every scenario) spread out.
                assigned: (id..total).step_by(self.threads).collect(),
                max_connecting,
            };
            let handle = thread::Builder::new()
                .name(format!("client-{id}"))
                .spawn(move || Worker::new(setup)?.run())
                .map_err(LoadError::WorkerSetup)?;
            self.handles.push(handle);
            self.wakers.push(waker);
        }
        Ok(())
    }

    /// Waits until every connection is open or failed, or the connect timeout. `false` if
    /// not a single connection opened.
    fn connect(&mut self) -> bool {
        let total = self.plan.connections.len() as u64;
        let progress = Progress::new(self.progress, total, "connecting");
        let deadline = self.clock.now_ns() + self.plan.timing.connect_timeout_ns;
        loop {
            let opened = self.control.opened.load(Ordering::Acquire);
            let failed = self.control.failed.load(Ordering::Acquire);
            progress.set(opened + failed, format!("{failed} failed"));
            if opened + failed >= total
                || self.clock.now_ns() >= deadline
                || self.any_worker_ended()
            {
                break;
            }
            thread::sleep(TICK);
        }
        progress.finish();
        self.control.opened.load(Ordering::Acquire) > 0
    }

    /// Lets room joins propagate before the first message.
    fn settle(&mut self) {
        thread::sleep(Duration::from_nanos(self.plan.timing.settle_ns));
        self.samples.after_connect = self.sample();
        self.samples.kernel_after_connect = sockstat::read();
    }

    /// Starts traffic and waits out the warm-up and the measured window, sampling CPU at both
    /// ends of the window.
    fn traffic(&mut self) {
        let start_ns = self.clock.now_ns() + START_MARGIN_NS;
        let timing = self.plan.timing;
        let schedule = Schedule {
            start_ns,
            measure_start_ns: start_ns + timing.warmup_ns,
            measure_end_ns: start_ns + timing.warmup_ns + timing.duration_ns,
        };
        self.schedule = Some(schedule);
        self.control.start_running(schedule);
        self.wake_all();
        while self.control.workers_started.load(Ordering::Acquire) < self.threads
            && !self.any_worker_ended()
        {
            thread::sleep(Duration::from_millis(1));
        }
        if let Some(board) = &self.board {
            // Every worker has counted its members: a broadcast is complete when all have it.
            board.set_members(self.room_members());
        }

        let progress = Progress::new(
            self.progress,
            (schedule.measure_end_ns - start_ns) / 1_000_000,
            "running ms",
        );
        let mut window_start = None;
        while self.clock.now_ns() < schedule.measure_end_ns && !self.any_worker_ended() {
            let now = self.clock.now_ns();
            if window_start.is_none() && now >= schedule.measure_start_ns {
                window_start = Some((self.sample(), own_cpu_secs()));
            }
            let delivered = self.control.delivered.load(Ordering::Acquire);
            progress.set(
                now.saturating_sub(start_ns) / 1_000_000,
                format!("{delivered} deliveries"),
            );
            let next = if window_start.is_none() {
                schedule.measure_start_ns
            } else {
                schedule.measure_end_ns
            };
            thread::sleep(Duration::from_nanos(next.saturating_sub(now)).min(TICK * 5));
        }
        let (server_start, client_start) =
            window_start.unwrap_or_else(|| (self.sample(), own_cpu_secs()));
        self.samples.window_start = server_start;
        self.samples.window_end = self.sample();
        self.samples.client_cpu_secs = own_cpu_secs() - client_start;
        progress.finish();
    }

    /// Publishers hand in their counts; then waits for what is still on its way, until every
    /// expected delivery has arrived or the drain timeout.
    fn drain(&mut self) {
        let publish_deadline = self.clock.now_ns() + PUBLISH_GRACE_NS;
        while !self.all_published()
            && self.clock.now_ns() < publish_deadline
            && !self.any_worker_ended()
        {
            thread::sleep(Duration::from_millis(1));
        }
        let publisher_rooms = self.plan.publisher_rooms();
        let deadline = self.clock.now_ns() + self.plan.timing.drain_ns;
        self.drained = loop {
            let expected = self.control.expected_deliveries(&publisher_rooms);
            let delivered = self.control.delivered.load(Ordering::Acquire);
            let round_trips_done = self.board.as_ref().is_none_or(|b| b.in_flight() == 0);
            if self.all_published() && delivered >= expected && round_trips_done {
                break true;
            }
            if self.clock.now_ns() >= deadline || self.any_worker_ended() {
                break false;
            }
            thread::sleep(Duration::from_millis(2));
        };
        if let Some(board) = &self.board {
            board.finish(self.clock.now_ns());
        }
        self.expected = self.control.expected_deliveries(&publisher_rooms);
    }

    /// Tells the workers to close everything and collects their reports.
    fn finish(&mut self) -> Result<Vec<WorkerReport>, LoadError> {
        self.control.finish();
        self.wake_all();
        let mut reports = Vec::with_capacity(self.handles.len());
        let mut first_error = None;
        for (thread, handle) in self.handles.drain(..).enumerate() {
            match handle.join() {
                Ok(Ok(report)) => reports.push(report),
                Ok(Err(source)) => {
                    first_error.get_or_insert(LoadError::WorkerFailed { thread, source });
                }
                Err(_) => {
                    first_error.get_or_insert(LoadError::WorkerPanicked(thread));
                }
            }
        }
        self.samples.end = self.sample();
        match first_error {
            Some(e) => Err(e),
            None => Ok(reports),
        }
    }

    fn report(&self, reports: &[WorkerReport]) -> TrafficReport {
        let mut merged = Merged::default();
        for report in reports {
            merged.add(report);
        }
        // Without publishers (idle) there is no order to compare.
        let order = (self.plan.publisher_count() > 0)
            .then(|| order::compare(&merged.members, &self.room_sent(), self.room_members()));
        let mut report = merged.into_report(
            &self.plan,
            self.expected,
            self.drained,
            self.probe,
            &self.samples,
            self.board.as_deref(),
        );
        report.order = order;
        report
    }

    fn sample(&self) -> Option<Usage> {
        self.probe.and_then(|p| p.sample())
    }

    fn wake_all(&self) {
        for waker in &self.wakers {
            // A failed wake costs at most one idle poll interval of the worker.
            let _ = waker.wake();
        }
    }

    fn any_worker_ended(&self) -> bool {
        self.handles.iter().any(|h| h.is_finished())
    }

    fn all_published(&self) -> bool {
        self.control.publishing_done.load(Ordering::Acquire) >= self.threads
    }

    /// Messages sent into each room, by all of its publishers.
    fn room_sent(&self) -> Vec<u64> {
        let mut sent = vec![0; self.plan.rooms.len()];
        for (publisher, &room) in self.plan.publisher_rooms().iter().enumerate() {
            if let (Some(total), Some(n)) = (
                sent.get_mut(room as usize),
                self.control.sent.get(publisher),
            ) {
                *total += n.load(Ordering::Acquire);
            }
        }
        sent
    }

    fn room_members(&self) -> u64 {
        self.control
            .room_members
            .iter()
            .map(|m| m.load(Ordering::Acquire))
            .sum()
    }
}

/// The knee scenario's board, if the plan has a closed-loop publisher.
fn closed_loop_board(plan: &Plan) -> Option<Arc<RoundTripBoard>> {
    plan.connections.iter().find_map(|c| match c.role {
        Role::ClosedLoop {
            publisher,
            in_flight,
        } => Some(Arc::new(RoundTripBoard::new(publisher, in_flight))),
        _ => None,
    })
}
