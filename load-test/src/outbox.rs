//! A connection's outgoing bytes: one reusable buffer, written as far as the socket takes it.
//!
//! Frames are encoded straight into the buffer (no per-message allocation once it has grown
//! to its working size). Whatever the socket does not take waits for the next writable event.

use std::io::{self, Write};

use crate::frame::{ClientOpcode, MaskSource, push_client_frame};

#[derive(Debug)]
pub struct Outbox {
    buf: Vec<u8>,
    written: usize,
    masks: MaskSource,
}

impl Outbox {
    pub fn new(masks: MaskSource) -> Outbox {
        Outbox {
            buf: Vec::new(),
            written: 0,
            masks,
        }
    }

    /// Queues raw bytes (the upgrade request).
    pub fn push_raw(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// Queues one masked frame: `body` then `pad` padding bytes.
    pub fn push(&mut self, opcode: ClientOpcode, body: &[u8], pad: usize) {
        let mask = self.masks.next_mask();
        push_client_frame(&mut self.buf, opcode, mask, body, pad);
    }

    /// Bytes queued and not yet written.
    pub fn pending(&self) -> usize {
        self.buf.len() - self.written
    }

    /// Writes until everything is out (`Ok(true)`) or the socket is full (`Ok(false)`).
    pub fn flush(&mut self, sink: &mut impl Write) -> io::Result<bool> {
        while self.written < self.buf.len() {
            match sink.write(&self.buf[self.written..]) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => self.written += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        self.buf.clear();
        self.written = 0;
        Ok(true)
    }
}
