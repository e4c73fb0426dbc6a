//! One WebSocket client connection of the resume scenario: connect, upgrade, read frames,
//! send text, and end — politely (close frame) or abruptly (socket shut, no close frame).
//!
//! It is built from the engine's parts ([`dial`], [`Upgrade`], [`Outbox`],
//! [`parse_server_frame`]) but hands each data frame's payload to its owner instead of the
//! token scanner: a v1 subscriber must read the JSON around the token. Unlike the engine's
//! [`crate::connection::Connection`], a link is short-lived by design: the scenario drops and
//! replaces them all through the run.

use std::io::{self, Read};
use std::net::{IpAddr, Shutdown, SocketAddr};

use mio::net::TcpStream;
use mio::{Interest, Registry, Token};

use crate::connection::{READ_CHUNK, dial};
use crate::frame::{ClientOpcode, FrameError, FrameKind, MaskSource, parse_server_frame};
use crate::handshake::{HandshakeError, Upgrade};
use crate::outbox::Outbox;

/// Why a link ended (or never opened).
#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    #[error("connect: {0}")]
    Connect(#[source] io::Error),
    #[error("upgrade: {0}")]
    Upgrade(#[from] HandshakeError),
    /// The server closed the TCP connection without a close frame.
    #[error("server closed the connection without a close frame")]
    Eof,
    #[error("{0}")]
    Io(#[from] io::Error),
    #[error("protocol: {0}")]
    Protocol(#[from] FrameError),
    /// The server sent a close frame with this code (1013: missed messages, 1008: slow).
    #[error("server closed with code {0}")]
    ServerClosed(u16),
}

#[derive(Debug)]
enum Stage {
    /// TCP connect in progress; the upgrade request waits.
    Connecting(Box<Upgrade>),
    /// Request sent, waiting for the `101`.
    Upgrading(Box<Upgrade>),
    Open,
}

/// What servicing a ready link produced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// Still connecting or upgrading.
    Pending,
    /// The upgrade completed during this call (frames behind the `101` were delivered).
    Opened,
    Open,
}

#[derive(Debug)]
pub struct Link {
    stream: TcpStream,
    stage: Stage,
    outbox: Outbox,
    /// A partial frame (or, while upgrading, the partial response) from the last read.
    tail: Vec<u8>,
}

impl Link {
    /// Starts connecting to `addr`; the upgrade follows once TCP is up.
    pub fn dial(
        addr: SocketAddr,
        source: Option<IpAddr>,
        upgrade: Upgrade,
        masks: MaskSource,
    ) -> Result<Link, LinkError> {
        let stream = dial(addr, source).map_err(LinkError::Connect)?;
        Ok(Link {
            stream,
            stage: Stage::Connecting(Box::new(upgrade)),
            outbox: Outbox::new(masks),
            tail: Vec::new(),
        })
    }

    pub fn register(&mut self, registry: &Registry, token: Token) -> io::Result<()> {
        registry.register(
            &mut self.stream,
            token,
            Interest::READABLE | Interest::WRITABLE,
        )
    }

    pub fn is_open(&self) -> bool {
        matches!(self.stage, Stage::Open)
    }

    /// Services a readiness event: advances the connect and upgrade, reads every complete
    /// frame (answering pings), hands each data payload to `on_text`, and writes what is
    /// queued. An error means the link is over; the caller drops it.
    pub fn service(
        &mut self,
        scratch: &mut Vec<u8>,
        max_frame: u64,
        mut on_text: impl FnMut(&[u8]),
    ) -> Result<Status, LinkError> {
        if scratch.len() < READ_CHUNK {
            scratch.resize(READ_CHUNK, 0);
        }
        if let Stage::Connecting(_) = self.stage {
            if !self.connect_finished()? {
                return Ok(Status::Pending);
            }
            let Stage::Connecting(upgrade) = std::mem::replace(&mut self.stage, Stage::Open) else {
                return Ok(Status::Pending);
            };
            self.outbox.push_raw(&upgrade.request);
            self.stage = Stage::Upgrading(upgrade);
        }
        let mut status = Status::Open;
        if let Stage::Upgrading(_) = self.stage {
            self.outbox.flush(&mut self.stream)?;
            if !self.read_response(scratch)? {
                return Ok(Status::Pending);
            }
            status = Status::Opened;
        }
        self.read_frames(scratch, max_frame, &mut on_text)?;
        self.outbox.flush(&mut self.stream)?;
        Ok(status)
    }

    /// mio's recipe for a non-blocking connect: `take_error`, then `peer_addr`
    /// (NotConnected: not yet).
    fn connect_finished(&mut self) -> Result<bool, LinkError> {
        if let Some(e) = self.stream.take_error().map_err(LinkError::Connect)? {
            return Err(LinkError::Connect(e));
        }
        match self.stream.peer_addr() {
            Ok(_) => Ok(true),
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::NotConnected | io::ErrorKind::WouldBlock
                ) =>
            {
                Ok(false)
            }
            Err(e) => Err(LinkError::Connect(e)),
        }
    }

    /// Reads the upgrade response; `true` once it is complete and valid (the bytes behind it
    /// stay in `tail` as frames). `scratch` holds at least [`READ_CHUNK`] bytes.
    fn read_response(&mut self, scratch: &mut [u8]) -> Result<bool, LinkError> {
        loop {
            match self.stream.read(&mut scratch[..READ_CHUNK]) {
                Ok(0) => return Err(LinkError::Eof),
                Ok(n) => self.tail.extend_from_slice(&scratch[..n]),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(LinkError::Io(e)),
            }
            let Stage::Upgrading(upgrade) = &self.stage else {
                return Ok(true);
            };
            if let Some(head) = upgrade.check_response(&self.tail)? {
                self.tail.drain(..head);
                self.stage = Stage::Open;
                return Ok(true);
            }
        }
    }

    /// Reads until the socket is drained, handing complete data frames to `on_text`.
    fn read_frames(
        &mut self,
        scratch: &mut [u8],
        max_frame: u64,
        on_text: &mut impl FnMut(&[u8]),
    ) -> Result<(), LinkError> {
        // Frames that came with the 101 are handled before the first read.
        let mut filled = std::mem::take(&mut self.tail);
        loop {
            let used = self.consume(&filled, max_frame, on_text)?;
            filled.drain(..used);
            match self.stream.read(&mut scratch[..READ_CHUNK]) {
                Ok(0) => return Err(LinkError::Eof),
                Ok(n) => filled.extend_from_slice(&scratch[..n]),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    self.tail = filled;
                    return Ok(());
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(LinkError::Io(e)),
            }
        }
    }

    /// Handles the complete frames at the start of `buf`; returns the bytes used.
    fn consume(
        &mut self,
        buf: &[u8],
        max_frame: u64,
        on_text: &mut impl FnMut(&[u8]),
    ) -> Result<usize, LinkError> {
        let mut at = 0;
        while let Some(frame) = parse_server_frame(&buf[at..], max_frame)? {
            let payload = &buf[at + frame.payload_start..at + frame.payload_end];
            at += frame.payload_end;
            match frame.kind {
                FrameKind::Data => on_text(payload),
                // The server drops clients that ignore pings.
                FrameKind::Ping => self.outbox.push(ClientOpcode::Pong, payload, 0),
                FrameKind::Pong => {}
                FrameKind::Close => {
                    let code = match payload {
                        [hi, lo, ..] => u16::from_be_bytes([*hi, *lo]),
                        _ => 1005, // "no status received" (RFC 6455 7.4.1)
                    };
                    return Err(LinkError::ServerClosed(code));
                }
            }
        }
        Ok(at)
    }

    /// Queues one text message: `body` followed by `pad` padding bytes.
    pub fn queue_text(&mut self, body: &[u8], pad: usize) {
        self.outbox.push(ClientOpcode::Text, body, pad);
    }

    pub fn pending(&self) -> usize {
        self.outbox.pending()
    }

    /// Writes what is queued, as far as the socket takes it.
    pub fn flush(&mut self) -> Result<(), LinkError> {
        if self.is_open() {
            self.outbox.flush(&mut self.stream)?;
        }
        Ok(())
    }

    /// Queues a normal close (1000) and writes it; the server answers and closes.
    pub fn close(&mut self) -> Result<(), LinkError> {
        if self.is_open() {
            self.outbox
                .push(ClientOpcode::Close, &1000u16.to_be_bytes(), 0);
        }
        self.flush()
    }

    /// While closing: reads and discards until EOF. `true` once the server is gone.
    pub fn discard_input(&mut self, scratch: &mut [u8]) -> bool {
        loop {
            match self.stream.read(scratch) {
                Ok(0) => return true,
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return false,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return true,
            }
        }
    }

    /// Ends the link the way a crashed client or a pulled cable would: no close frame, the
    /// socket shut in both directions and closed (a reset if unread data remains).
    pub fn drop_abruptly(mut self, registry: &Registry) {
        let _ = registry.deregister(&mut self.stream);
        let _ = self.stream.shutdown(Shutdown::Both);
    }

    pub fn deregister(&mut self, registry: &Registry) {
        let _ = registry.deregister(&mut self.stream);
    }
}
