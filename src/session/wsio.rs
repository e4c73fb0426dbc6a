//! The stream tungstenite sees: reads come from bytes the shard already read from the socket,
//! writes go to the session's outbound queue.
//!
//! This keeps tungstenite away from the socket: the shard reads each socket once per readiness
//! into its own scratch buffer (so idle sessions hold no read buffer of their own), and control
//! frames tungstenite writes (pongs, close replies) join broadcast frames in one ordered queue
//! that leaves in one `writev` per loop turn.

use std::io::{self, Read, Write};

use crate::session::outbound::{Chunk, OutQueue};

/// Bytes on their way into tungstenite, and the queue its writes go to.
pub struct WsIo<'a> {
    input: &'a [u8],
    out: &'a mut OutQueue,
}

impl<'a> WsIo<'a> {
    /// An adapter over `input` writing into `out`.
    pub fn new(input: &'a [u8], out: &'a mut OutQueue) -> Self {
        WsIo { input, out }
    }

    /// The outbound queue tungstenite writes to.
    pub fn out(&mut self) -> &mut OutQueue {
        self.out
    }

    /// Input tungstenite has not taken yet.
    pub fn rest(&self) -> &'a [u8] {
        self.input
    }
}

impl Read for WsIo<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.input.is_empty() {
            // Not end of stream: there is just nothing more this turn.
            return Err(io::ErrorKind::WouldBlock.into());
        }
        let n = self.input.len().min(buf.len());
        buf[..n].copy_from_slice(&self.input[..n]);
        self.input = &self.input[n..];
        Ok(n)
    }
}

impl Write for WsIo<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.out.push(Chunk::Owned(buf.to_vec()));
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}
