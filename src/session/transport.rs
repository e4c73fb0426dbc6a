//! The byte stream under a session: a plain socket, TLS over a socket, or a test double.

use std::io::{self, Read, Write};

/// What a session needs from its connection beyond reading and writing.
///
/// Reads and writes are non-blocking (`WouldBlock` means "wait for readiness"). A transport
/// may hold output of its own (TLS records); the session keeps flushing until it has none.
pub trait Transport: Read + Write {
    /// Ends our direction of the stream (TLS: `close_notify`, then FIN once it is out), while
    /// the peer's bytes may still arrive.
    fn shutdown_write(&mut self) -> io::Result<()>;

    /// Bytes held by the transport itself that still must reach the socket.
    fn has_pending_output(&self) -> bool {
        false
    }

    /// Moves held bytes to the socket; `Ok(true)` once none are left.
    fn flush_pending(&mut self) -> io::Result<bool> {
        Ok(true)
    }
}

impl Transport for mio::net::TcpStream {
    fn shutdown_write(&mut self) -> io::Result<()> {
        self.shutdown(std::net::Shutdown::Write)
    }
}
