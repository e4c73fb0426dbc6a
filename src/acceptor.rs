//! The acceptor: one thread that accepts connections and deals them to shards round-robin.
//!
//! Hand-off is a bounded channel per shard plus that shard's waker. The send blocks when a
//! shard's channel is full, which pushes back into the kernel's listen backlog instead of
//! queueing sockets without bound.
//!
//! When accept fails for lack of descriptors (EMFILE/ENFILE) or memory, the acceptor sleeps
//! briefly instead of retrying at once: the pending connection stays in the backlog, and a
//! tight retry loop would burn a core while fixing nothing.

use std::io;
use std::net::{TcpListener, TcpStream};
use std::sync::Arc;
use std::time::Duration;

use crossbeam_channel::Sender;
use mio::Waker;

/// Pause after accept fails for lack of resources.
const RESOURCE_BACKOFF: Duration = Duration::from_millis(100);

/// A shard as the acceptor sees it.
pub struct ShardDoor {
    /// Where its new connections go.
    pub tx: Sender<TcpStream>,
    /// How to wake it.
    pub waker: Arc<Waker>,
}

/// Accepts until the listener fails for good or every shard is gone.
pub fn run(listener: TcpListener, doors: Vec<ShardDoor>) -> io::Result<()> {
    let mut next = 0;
    loop {
        let stream = match listener.accept() {
            Ok((stream, _peer)) => stream,
            Err(e) => match e.raw_os_error() {
                Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM) => {
                    log::warn!("accept: {e}; pausing {RESOURCE_BACKOFF:?}");
                    std::thread::sleep(RESOURCE_BACKOFF);
                    continue;
                }
                // The peer gave up between SYN and accept, or a signal arrived: not our problem.
                Some(libc::ECONNABORTED | libc::EINTR | libc::EPROTO | libc::EPERM) => continue,
                _ => return Err(e),
            },
        };
        if let Err(e) = prepare(&stream) {
            log::debug!("dropping a connection that cannot be set up: {e}");
            continue;
        }
        let door = &doors[next];
        next = (next + 1) % doors.len();
        if door.tx.send(stream).is_err() {
            return Ok(()); // the shard has stopped: the server is going down
        }
        // A failed wake means the shard's poll is gone; the send above would have failed too.
        let _ = door.waker.wake();
    }
}

/// Non-blocking for mio, and no Nagle delay: chat messages are small and latency matters.
fn prepare(stream: &TcpStream) -> io::Result<()> {
    stream.set_nonblocking(true)?;
    stream.set_nodelay(true)
}
