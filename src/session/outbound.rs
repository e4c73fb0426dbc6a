//! A session's outbound queue: the ordered bytes waiting for its socket.
//!
//! Chunks are either shared broadcast frames (`Arc`, one allocation for every recipient) or
//! small owned buffers (HTTP answers, pongs, close frames). [`OutQueue::write_to`] hands as many
//! chunks as fit in one `writev` to the socket and remembers how far a partial write got, so
//! nothing is sent twice and nothing is skipped.

use std::collections::VecDeque;
use std::io::{self, IoSlice, Write};

use crate::frame::SharedFrame;

/// Most chunks offered to one `writev` (Linux accepts up to 1024; 64 covers a loop turn's worth
/// of chat messages while keeping the slice array small on the stack).
const MAX_IOV: usize = 64;

/// One piece of queued output.
#[derive(Debug)]
pub enum Chunk {
    /// A broadcast frame shared with other recipients.
    Shared(SharedFrame),
    /// Bytes only this session sends.
    Owned(Vec<u8>),
}

impl Chunk {
    fn bytes(&self) -> &[u8] {
        match self {
            Chunk::Shared(frame) => frame,
            Chunk::Owned(bytes) => bytes,
        }
    }
}

/// How a write attempt ended.
#[derive(Debug, PartialEq, Eq)]
pub enum Flushed {
    /// Everything queued is on its way to the peer.
    All,
    /// The socket is full; wait for it to become writable.
    Blocked,
}

/// The bounded-by-policy queue (the session enforces the bound; the queue only counts).
#[derive(Debug, Default)]
pub struct OutQueue {
    chunks: VecDeque<Chunk>,
    /// Bytes of the front chunk already written.
    head_written: usize,
    /// Bytes queued and not yet written.
    queued: usize,
}

impl OutQueue {
    /// Bytes waiting to be written.
    pub fn queued_bytes(&self) -> usize {
        self.queued
    }

    /// True when nothing waits.
    pub fn is_empty(&self) -> bool {
        self.queued == 0
    }

    /// Appends a chunk (empty ones are ignored).
    pub fn push(&mut self, chunk: Chunk) {
        let len = chunk.bytes().len();
        if len > 0 {
            self.queued += len;
            self.chunks.push_back(chunk);
        }
    }

    /// Chunks the queue has room for without growing.
    #[cfg(test)]
    pub fn capacity(&self) -> usize {
        self.chunks.capacity()
    }

    /// Frees the queue's buffer if it is empty (it regrows on the next push).
    pub fn release_memory(&mut self) {
        if self.chunks.is_empty() {
            self.chunks = VecDeque::new();
        }
    }

    /// Drops everything not yet started, keeping a partly written front chunk so that the
    /// byte stream stays a sequence of whole frames. Used when a slow consumer is cut off.
    pub fn discard_unstarted(&mut self) {
        let keep = usize::from(self.head_written > 0);
        while self.chunks.len() > keep {
            if let Some(chunk) = self.chunks.pop_back() {
                self.queued -= chunk.bytes().len();
            }
        }
    }

    /// Writes queued chunks with vectored writes until the queue is empty or the socket
    /// would block. In the common case that is exactly one `writev`: a short write means the
    /// socket buffer is full, so we stop instead of asking again just to hear `WouldBlock`.
    /// Each write call is counted in `calls` (the caller's syscall counter: kept out of the
    /// queue, which every idle connection carries).
    pub fn write_to(&mut self, out: &mut impl Write, calls: &mut u64) -> io::Result<Flushed> {
        while !self.is_empty() {
            let mut slices = [IoSlice::new(&[]); MAX_IOV];
            let mut count = 0;
            let mut offered = 0;
            for (i, chunk) in self.chunks.iter().take(MAX_IOV).enumerate() {
                let bytes = if i == 0 {
                    &chunk.bytes()[self.head_written..]
                } else {
                    chunk.bytes()
                };
                slices[count] = IoSlice::new(bytes);
                count += 1;
                offered += bytes.len();
            }
            *calls += 1;
            let written = match out.write_vectored(&slices[..count]) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(Flushed::Blocked),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            self.consume(written);
            if written < offered {
                return Ok(if self.is_empty() {
                    Flushed::All
                } else {
                    Flushed::Blocked
                });
            }
        }
        Ok(Flushed::All)
    }

    fn consume(&mut self, mut written: usize) {
        self.queued -= written;
        while written > 0 {
            let Some(front) = self.chunks.front() else {
                debug_assert!(false, "wrote more than was queued");
                return;
            };
            let left = front.bytes().len() - self.head_written;
            if written >= left {
                written -= left;
                self.head_written = 0;
                self.chunks.pop_front();
            } else {
                self.head_written += written;
                written = 0;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    /// Accepts at most `per_call` bytes per write, and says WouldBlock every other call.
    struct Trickle {
        got: Vec<u8>,
        per_call: usize,
        block_next: bool,
        calls: usize,
    }

    impl Write for Trickle {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.calls += 1;
            self.block_next = !self.block_next;
            if !self.block_next {
                return Err(io::ErrorKind::WouldBlock.into());
            }
            let n = buf.len().min(self.per_call);
            self.got.extend_from_slice(&buf[..n]);
            Ok(n)
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn partial_writes_resume_where_they_stopped() {
        let shared: SharedFrame = Arc::from(&b"hello"[..]);
        let mut q = OutQueue::default();
        q.push(Chunk::Owned(b"ab".to_vec()));
        q.push(Chunk::Shared(shared.clone()));
        q.push(Chunk::Owned(Vec::new()));
        q.push(Chunk::Shared(shared));
        assert_eq!(q.queued_bytes(), 12);
        let mut sink = Trickle {
            got: Vec::new(),
            per_call: 3,
            block_next: false,
            calls: 0,
        };
        let mut turns = 0;
        while q.write_to(&mut sink, &mut 0).unwrap() == Flushed::Blocked {
            turns += 1;
            assert!(turns < 100);
        }
        assert_eq!(sink.got, b"abhellohello");
        assert!(q.is_empty());
    }

    #[test]
    fn one_writev_when_the_socket_takes_everything() {
        let mut q = OutQueue::default();
        for _ in 0..10 {
            q.push(Chunk::Owned(b"xy".to_vec()));
        }
        let mut sink = Vec::new();
        let mut calls = 0;
        assert_eq!(q.write_to(&mut sink, &mut calls).unwrap(), Flushed::All);
        assert_eq!(calls, 1);
        assert_eq!(sink.len(), 20);
    }

    #[test]
    fn discard_keeps_a_partly_written_frame() {
        let mut q = OutQueue::default();
        q.push(Chunk::Owned(b"abcdef".to_vec()));
        q.push(Chunk::Owned(b"ghi".to_vec()));
        q.consume(2);
        q.discard_unstarted();
        assert_eq!(q.queued_bytes(), 4);
        let mut sink = Vec::new();
        q.write_to(&mut sink, &mut 0).unwrap();
        assert_eq!(sink, b"cdef");
    }
}
