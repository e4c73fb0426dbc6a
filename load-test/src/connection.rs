//! One client connection: TCP connect → WebSocket upgrade → open → closed.
//!
//! A connection owns its socket, the partial frame left over from its last read, its outbox
//! and its recipient trackers. Reads go through the thread's scratch buffer so that an idle
//! connection holds no read buffer at all.

use std::io::{self, Read};
use std::net::{IpAddr, SocketAddr};
use std::os::fd::AsRawFd;

use mio::net::TcpStream;
use socket2::{Domain, Protocol, Socket, Type};

use crate::clock::Clock;
use crate::frame::ClientOpcode;
use crate::handshake::{HandshakeError, Upgrade};
use crate::inbound::{Inbound, Recipient, Verdict};
use crate::outbox::Outbox;
use crate::token::{MAX_TOKEN_LEN, Token};

/// Bytes asked of the kernel per read: large, so a backlog drains in few syscalls.
pub const READ_CHUNK: usize = 128 * 1024;

/// Most bytes a publisher may have queued; beyond it messages are skipped (and counted)
/// rather than buffered without bound while the server does not read.
pub const MAX_OUTBOX: usize = 16 * 1024 * 1024;

#[derive(Debug)]
pub enum State {
    /// TCP connect in progress.
    Connecting,
    /// Upgrade request sent (or being sent), waiting for the `101`.
    Upgrading(Box<Upgrade>),
    Open,
    /// The server sent a close frame; our reply is queued; waiting for EOF.
    Closing,
    Closed,
}

/// Why a connection did not open, or ended.
#[derive(Debug, thiserror::Error)]
pub enum ConnError {
    #[error("connect: {0}")]
    Connect(#[source] io::Error),
    #[error("upgrade: {0}")]
    Upgrade(#[from] HandshakeError),
    #[error("server closed the connection")]
    Eof,
    #[error("{0}")]
    Io(#[from] io::Error),
}

/// A publisher's progress.
#[derive(Debug, Clone, Copy)]
pub struct Publishing {
    pub publisher: u32,
    pub next_seq: u64,
    /// Messages not sent because the outbox was full.
    pub skipped: u64,
}

#[derive(Debug)]
pub struct Connection {
    /// Index into the plan's connections.
    pub spec: usize,
    pub stream: TcpStream,
    pub state: State,
    pub connect_started_ns: u64,
    pub recipient: Recipient,
    pub outbox: Outbox,
    pub publishing: Option<Publishing>,
    /// A partial frame (or, while upgrading, the partial response) from the last read.
    tail: Vec<u8>,
}

/// Result of servicing a readable connection.
#[derive(Debug)]
pub enum Readable {
    /// Read everything available; still open.
    Drained,
    /// The server sent a close frame with this code.
    ServerClosed(u16),
    Failed(ConnError),
    Protocol(crate::frame::FrameError),
}

/// Starts a non-blocking connect to `addr` from `source` (port chosen at connect time).
pub fn dial(addr: SocketAddr, source: Option<IpAddr>) -> io::Result<TcpStream> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_nonblocking(true)?;
    // Small messages must leave at once, not wait for Nagle's coalescing.
    socket.set_tcp_nodelay(true)?;
    if let Some(ip) = source {
        bind_without_port(&socket)?;
        socket.bind(&SocketAddr::new(ip, 0).into())?;
    }
    match socket.connect(&addr.into()) {
        Ok(()) => {}
        Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => {}
        Err(e) => return Err(e),
    }
    Ok(TcpStream::from_std(socket.into()))
}

/// IP_BIND_ADDRESS_NO_PORT: binding only the address defers the port choice to connect(),
/// where the kernel needs the 4-tuple, not the port alone, to be unique. Without it every
/// bound socket reserves a port of its own and 28k connections exhaust the source address.
fn bind_without_port(socket: &Socket) -> io::Result<()> {
    let on: libc::c_int = 1;
    // SAFETY: valid descriptor, option value is a c_int of the stated size.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::IPPROTO_IP,
            libc::IP_BIND_ADDRESS_NO_PORT,
            (&on as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

impl Connection {
    pub fn new(
        spec: usize,
        stream: TcpStream,
        now_ns: u64,
        recipient: Recipient,
        outbox: Outbox,
        publishing: Option<Publishing>,
    ) -> Connection {
        Connection {
            spec,
            stream,
            state: State::Connecting,
            connect_started_ns: now_ns,
            recipient,
            outbox,
            publishing,
            tail: Vec::new(),
        }
    }

    pub fn is_open(&self) -> bool {
        matches!(self.state, State::Open)
    }

    /// While connecting: `Ok(true)` once the TCP connection is established (mio's recipe:
    /// check `take_error`, then `peer_addr`; NotConnected means "not yet").
    pub fn connect_finished(&mut self) -> Result<bool, ConnError> {
        if let Some(e) = self.stream.take_error().map_err(ConnError::Connect)? {
            return Err(ConnError::Connect(e));
        }
        match self.stream.peer_addr() {
            Ok(_) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::NotConnected => Ok(false),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(false),
            Err(e) => Err(ConnError::Connect(e)),
        }
    }

    /// Queues and starts writing the upgrade request.
    pub fn start_upgrade(&mut self, upgrade: Upgrade) -> Result<(), ConnError> {
        self.outbox.push_raw(&upgrade.request);
        self.state = State::Upgrading(Box::new(upgrade));
        self.outbox.flush(&mut self.stream)?;
        Ok(())
    }

    /// While upgrading: reads the response. `Ok(true)` once open (any frames that came with
    /// the response are processed right away).
    pub fn continue_upgrade(
        &mut self,
        scratch: &mut [u8],
        inbound: &mut Inbound,
        clock: &Clock,
    ) -> Result<bool, ConnError> {
        self.outbox.flush(&mut self.stream)?;
        loop {
            match self.stream.read(scratch) {
                Ok(0) => return Err(ConnError::Eof),
                Ok(n) => self.tail.extend_from_slice(&scratch[..n]),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(ConnError::Io(e)),
            }
            let State::Upgrading(upgrade) = &self.state else {
                return Ok(true);
            };
            if let Some(head) = upgrade.check_response(&self.tail)? {
                self.tail.drain(..head);
                self.state = State::Open;
                let leftover = std::mem::take(&mut self.tail);
                let (used, verdict) = inbound.consume(
                    &leftover,
                    &mut self.recipient,
                    &mut self.outbox,
                    clock.now_ns(),
                );
                self.tail.extend_from_slice(&leftover[used..]);
                if verdict != Verdict::KeepOpen {
                    // Frames right after the 101 closed the connection: leave the rest
                    // (and the EOF) to the next readable event.
                    self.state = State::Closing;
                }
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// Reads until the socket is drained, feeding complete frames to `inbound`.
    pub fn receive(
        &mut self,
        scratch: &mut Vec<u8>,
        inbound: &mut Inbound,
        clock: &Clock,
    ) -> Readable {
        loop {
            let kept = self.tail.len();
            if scratch.len() < kept + READ_CHUNK {
                scratch.resize(kept + READ_CHUNK, 0);
            }
            scratch[..kept].copy_from_slice(&self.tail);
            let room = scratch.len() - kept;
            let n = match self.stream.read(&mut scratch[kept..]) {
                Ok(0) => return Readable::Failed(ConnError::Eof),
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Readable::Drained,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Readable::Failed(ConnError::Io(e)),
            };
            // One timestamp per read: every frame in it arrived by now.
            let now = clock.now_ns();
            let filled = kept + n;
            let (used, verdict) = inbound.consume(
                &scratch[..filled],
                &mut self.recipient,
                &mut self.outbox,
                now,
            );
            self.tail.clear();
            self.tail.extend_from_slice(&scratch[used..filled]);
            match verdict {
                Verdict::KeepOpen => {}
                Verdict::ServerClosed(code) => {
                    self.state = State::Closing;
                    return Readable::ServerClosed(code);
                }
                Verdict::Protocol(e) => return Readable::Protocol(e),
            }
            // A short read means the kernel's queue was empty: edge-triggered epoll reports
            // any later arrival as a new event, so the extra read that would only return
            // WouldBlock is skipped (it would double the syscalls per delivery).
            if n < room {
                return Readable::Drained;
            }
        }
    }

    /// While closing: reads and discards until EOF. `true` once the peer is gone.
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

    /// Queues this publisher's next message, stamped `sent_ns`, padded to `size` bytes.
    /// Returns its sequence number, or `None` if it was skipped because the outbox is full.
    pub fn queue_next_message(&mut self, sent_ns: u64, size: usize) -> Option<u64> {
        let publishing = self.publishing.as_mut()?;
        if self.outbox.pending() > MAX_OUTBOX {
            publishing.skipped += 1;
            return None;
        }
        let seq = publishing.next_seq;
        publishing.next_seq += 1;
        let mut token = [0u8; MAX_TOKEN_LEN];
        let len = Token {
            publisher: publishing.publisher,
            seq,
            sent_ns,
        }
        .encode(&mut token);
        self.outbox
            .push(ClientOpcode::Text, &token[..len], size.saturating_sub(len));
        Some(seq)
    }

    /// Queues one flooder's message: `size` bytes of text without a token. False when the
    /// server has stopped reading (the outbox is full), and nothing was queued.
    pub fn queue_filler(&mut self, size: usize) -> bool {
        if self.outbox.pending() > MAX_OUTBOX {
            return false;
        }
        let body = b"flood ";
        self.outbox
            .push(ClientOpcode::Text, body, size.saturating_sub(body.len()));
        true
    }

    /// Queues a normal close (1000).
    pub fn queue_close(&mut self) {
        self.outbox
            .push(ClientOpcode::Close, &1000u16.to_be_bytes(), 0);
    }

    pub fn flush(&mut self) -> io::Result<bool> {
        self.outbox.flush(&mut self.stream)
    }
}
