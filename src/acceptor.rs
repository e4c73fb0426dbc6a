//! The acceptor: one thread that accepts connections and deals them to shards round-robin.
//!
//! Hand-off is a bounded channel per shard plus that shard's waker. A full channel is skipped
//! for the next shard; when every channel is full the acceptor waits, which pushes back into
//! the kernel's listen backlog instead of queueing sockets without bound.
//!
//! When accept fails for lack of descriptors (EMFILE/ENFILE) or memory, the acceptor stops
//! asking for [`RESOURCE_BACKOFF`] instead of retrying at once: the pending connections stay
//! in the backlog, and a tight retry loop would burn a core while fixing nothing. It keeps the
//! listener and resumes by itself once descriptors are free again.
//!
//! Before the hand-off, the per-address limits: the connection rate (`429` with
//! `Retry-After`), then the open connections (`503`). Both answers are written at once, best
//! effort, before anything is read, and the connection is closed.
//!
//! On shutdown (the draining flag plus a wake) it closes the listener and returns.

use std::io;
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::os::fd::OwnedFd;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{SendTimeoutError, Sender, TrySendError};
use mio::net::TcpListener;
use mio::{Events, Interest, Poll, Token, Waker};

use crate::http::{Status, error_response};
use crate::limits::{ConnectionRate, PerIpLimit, RetryAfter};
use crate::stats::ServerStats;

/// A connection handed from the acceptor to an event loop.
pub struct Handoff {
    /// The accepted socket.
    pub stream: TcpStream,
    /// The peer's address.
    pub peer: SocketAddr,
    /// Set when the per-address limit holds a place for this connection.
    pub counted_ip: Option<IpAddr>,
}

/// Pause after accept fails for lack of resources.
pub const RESOURCE_BACKOFF: Duration = Duration::from_millis(100);

/// How long one wait for a full shard lasts before the draining flag is checked again.
const HANDOFF_WAIT: Duration = Duration::from_millis(100);

const LISTENER: Token = Token(0);
/// The acceptor's waker token.
pub const ACCEPTOR_WAKER: Token = Token(1);

/// A shard as the acceptor sees it.
pub struct ShardDoor {
    /// Where its new connections go.
    pub tx: Sender<Handoff>,
    /// How to wake it.
    pub waker: Arc<Waker>,
}

/// The acceptor's state.
pub struct Acceptor {
    /// Its poll (the waker is registered as [`ACCEPTOR_WAKER`]).
    pub poll: Poll,
    /// The listening socket.
    pub listener: TcpListener,
    /// One door per shard.
    pub doors: Vec<ShardDoor>,
    /// The draining flag and the refusal counter.
    pub stats: Arc<ServerStats>,
    /// The per-address limit, when configured.
    pub per_ip: Option<Arc<PerIpLimit>>,
    /// The per-address connection rate, when configured (this thread's alone).
    pub rate: Option<ConnectionRate>,
}

impl Acceptor {
    /// Accepts until shutdown or until every shard is gone.
    pub fn run(mut self) -> io::Result<()> {
        let _span = tracing::info_span!("acceptor").entered();
        self.poll
            .registry()
            .register(&mut self.listener, LISTENER, Interest::READABLE)?;
        let mut events = Events::with_capacity(8);
        let mut next = 0;
        let mut paused_until: Option<Instant> = None;
        loop {
            let timeout = paused_until.map(|t| t.saturating_duration_since(Instant::now()));
            match self.poll.poll(&mut events, timeout) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
            if self.stats.is_draining() {
                tracing::info!("no longer accepting");
                return Ok(());
            }
            // New connections wake the poll during a pause too: keep pausing regardless.
            if paused_until.is_some_and(|t| Instant::now() < t) {
                continue;
            }
            // Taken out for the round: the hand-off borrows the rest of `self`.
            let mut rate = self.rate.take();
            let outcome = accept_ready(
                &self.listener,
                self.per_ip.as_deref(),
                rate.as_mut(),
                Instant::now(),
                &self.stats,
                |handoff| self.hand_off(handoff, &mut next).is_ok(),
            );
            self.rate = rate;
            let outcome = outcome?;
            match outcome {
                Accepted::Drained => paused_until = None,
                Accepted::Backoff => paused_until = Some(Instant::now() + RESOURCE_BACKOFF),
                Accepted::Stopped => return Ok(()),
            }
        }
    }

    /// Gives the connection to the next shard with room, waiting if all are full.
    fn hand_off(&self, mut handoff: Handoff, next: &mut usize) -> Result<(), Stop> {
        let shards = self.doors.len();
        for _ in 0..shards {
            let door = &self.doors[*next];
            *next = (*next + 1) % shards;
            match door.tx.try_send(handoff) {
                Ok(()) => {
                    let _ = door.waker.wake();
                    return Ok(());
                }
                Err(TrySendError::Full(back)) => handoff = back,
                Err(TrySendError::Disconnected(_)) => return Err(Stop),
            }
        }
        let door = &self.doors[*next];
        *next = (*next + 1) % shards;
        loop {
            match door.tx.send_timeout(handoff, HANDOFF_WAIT) {
                Ok(()) => {
                    let _ = door.waker.wake();
                    return Ok(());
                }
                Err(SendTimeoutError::Timeout(back)) if !self.stats.is_draining() => handoff = back,
                Err(_) => return Err(Stop),
            }
        }
    }
}

/// The server is stopping: stop handing off.
struct Stop;

/// How a round of accepting ended.
#[derive(Debug, PartialEq, Eq)]
pub enum Accepted {
    /// The backlog is empty: wait for the next readiness event.
    Drained,
    /// Out of descriptors or memory: try again after [`RESOURCE_BACKOFF`].
    Backoff,
    /// The taker refused a connection: the server is stopping.
    Stopped,
}

/// Accepts every pending connection (the listener is edge-triggered) and gives each to
/// `take`, after the per-address limits: the connection `rate` first (a refused attempt takes
/// no open place), then `per_ip`; `now` is the round's time (one reading of the clock, not
/// one per connection). Errors other than the retryable ones are returned.
pub fn accept_ready(
    listener: &TcpListener,
    per_ip: Option<&PerIpLimit>,
    mut rate: Option<&mut ConnectionRate>,
    now: Instant,
    stats: &ServerStats,
    mut take: impl FnMut(Handoff) -> bool,
) -> io::Result<Accepted> {
    loop {
        let (stream, peer) = match listener.accept() {
            Ok(accepted) => accepted,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(Accepted::Drained),
            Err(e) => match e.raw_os_error() {
                Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM) => {
                    tracing::warn!("accept: {e}; pausing {RESOURCE_BACKOFF:?}");
                    return Ok(Accepted::Backoff);
                }
                // The peer gave up between SYN and accept, or a signal arrived.
                Some(libc::ECONNABORTED | libc::EINTR | libc::EPROTO | libc::EPERM) => continue,
                _ => return Err(e),
            },
        };
        // mio hands out non-blocking sockets; chat messages are small, so no Nagle.
        let stream = TcpStream::from(OwnedFd::from(stream));
        let _ = stream.set_nodelay(true);
        if let Some(rate) = rate.as_deref_mut() {
            let admitted = rate.try_admit(peer.ip(), now);
            stats.set_rate_addresses(rate.tracked());
            if let Err(RetryAfter(seconds)) = admitted {
                refuse(stream, Status::TooManyRequests, seconds);
                stats.count_rate_refusal();
                continue;
            }
        }
        let counted_ip = match per_ip {
            None => None,
            Some(limit) if limit.try_acquire(peer.ip()) => Some(peer.ip()),
            Some(_) => {
                refuse(stream, Status::Unavailable, 5);
                stats.count_per_ip_refusal();
                continue;
            }
        };
        if !take(Handoff {
            stream,
            peer,
            counted_ip,
        }) {
            return Ok(Accepted::Stopped);
        }
    }
}

/// Best effort (one non-blocking write): tell an over-limit client why and when to try again
/// (`Retry-After`, in seconds), then close.
fn refuse(mut stream: TcpStream, status: Status, retry_after: u32) {
    use std::io::Write;
    let seconds = retry_after.to_string();
    let answer = error_response(status, &[("Retry-After", &seconds)]);
    let _ = stream.write_all(&answer.bytes);
}
