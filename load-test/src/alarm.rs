//! A worker's alarm clock: a `timerfd` registered with its `mio::Poll`.
//!
//! `Poll::poll`'s timeout has millisecond resolution (mio rounds up), which would add up to a
//! millisecond of scheduling error to every open-loop send, and that error is counted as
//! latency. A `timerfd` armed in absolute time wakes `epoll` within microseconds.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use mio::event::Source;
use mio::unix::SourceFd;
use mio::{Interest, Registry, Token};

use crate::clock::Clock;

/// A one-shot timer armed at absolute process times.
#[derive(Debug)]
pub struct Alarm {
    fd: OwnedFd,
    armed_at: Option<u64>,
}

impl Alarm {
    pub fn new() -> io::Result<Alarm> {
        // SAFETY: plain syscall; the result is checked before use.
        let fd = unsafe {
            libc::timerfd_create(
                libc::CLOCK_MONOTONIC,
                libc::TFD_NONBLOCK | libc::TFD_CLOEXEC,
            )
        };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` is a fresh descriptor that nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        Ok(Alarm { fd, armed_at: None })
    }

    /// Rings at process time `at_ns` (already past: rings at once). Re-arming to the same
    /// time is free, so callers may call this every loop turn.
    pub fn arm_at(&mut self, clock: &Clock, at_ns: u64) -> io::Result<()> {
        if self.armed_at == Some(at_ns) {
            return Ok(());
        }
        // An all-zero it_value would disarm the timer: absolute times are never zero.
        let abs = clock.to_monotonic_ns(at_ns).max(1);
        let spec = libc::itimerspec {
            it_interval: libc::timespec {
                tv_sec: 0,
                tv_nsec: 0,
            },
            it_value: libc::timespec {
                tv_sec: (abs / 1_000_000_000) as libc::time_t,
                tv_nsec: (abs % 1_000_000_000) as libc::c_long,
            },
        };
        // SAFETY: valid descriptor and itimerspec; old value not requested.
        let rc = unsafe {
            libc::timerfd_settime(
                self.fd.as_raw_fd(),
                libc::TFD_TIMER_ABSTIME,
                &spec,
                std::ptr::null_mut(),
            )
        };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        self.armed_at = Some(at_ns);
        Ok(())
    }

    /// Called after the alarm rang: consumes the expiry count so the next one is a new edge.
    pub fn acknowledge(&mut self) {
        let mut expirations = [0u8; 8];
        // SAFETY: reading 8 bytes into an 8-byte buffer; EAGAIN (not yet expired) is fine.
        unsafe {
            libc::read(
                self.fd.as_raw_fd(),
                expirations.as_mut_ptr().cast(),
                expirations.len(),
            )
        };
        self.armed_at = None;
    }
}

impl Source for Alarm {
    fn register(
        &mut self,
        registry: &Registry,
        token: Token,
        interests: Interest,
    ) -> io::Result<()> {
        SourceFd(&self.fd.as_raw_fd()).register(registry, token, interests)
    }

    fn reregister(
        &mut self,
        registry: &Registry,
        token: Token,
        interests: Interest,
    ) -> io::Result<()> {
        SourceFd(&self.fd.as_raw_fd()).reregister(registry, token, interests)
    }

    fn deregister(&mut self, registry: &Registry) -> io::Result<()> {
        SourceFd(&self.fd.as_raw_fd()).deregister(registry)
    }
}
