//! `--api-listen ADDR`: the server API on an address of its own (docs/operations.md
//! recommends a private one). A small blocking HTTP/1.1 server: the `api-listen` thread
//! accepts (its own `mio::Poll`, so that a shutdown wakes it), and each connection gets a
//! short-lived thread (`api-conn`) that reads one request — head within the configured
//! limits, body within [`crate::http::API_BODY_LIMIT`], all of it within
//! `--handshake-timeout` — answers it and closes. At most [`MAX_CONNECTIONS`] at once; more
//! are answered 503 at once.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token, Waker};

use super::{Service, Started};
use crate::config::Config;
use crate::error::ServerError;
use crate::http::request::{self, FullRequest, Parsed};
use crate::http::{Dispatch, Response, Status, api_request, json_error};
use crate::stats::ServerStats;

/// Most API connections served at once.
pub const MAX_CONNECTIONS: usize = 16;

const LISTENER: Token = Token(0);
const WAKER: Token = Token(1);

/// Binds `addr` and starts the `api-listen` thread.
pub fn start(
    addr: SocketAddr,
    service: Arc<Service>,
    config: Arc<Config>,
    stats: Arc<ServerStats>,
) -> Result<Started, ServerError> {
    let listen_error = |cause| ServerError::Listen { addr, cause };
    let listener = TcpListener::bind(addr).map_err(listen_error)?;
    listener.set_nonblocking(true).map_err(listen_error)?;
    let local_addr = listener.local_addr().map_err(listen_error)?;
    let poll = Poll::new().map_err(ServerError::Api)?;
    let waker = Arc::new(Waker::new(poll.registry(), WAKER).map_err(ServerError::Api)?);
    let fd = listener.as_raw_fd();
    poll.registry()
        .register(&mut SourceFd(&fd), LISTENER, Interest::READABLE)
        .map_err(ServerError::Api)?;
    let thread = std::thread::Builder::new()
        .name("api-listen".into())
        .spawn(move || run(poll, &listener, &service, &config, &stats))
        .map_err(ServerError::Api)?;
    tracing::info!("server API listening on {local_addr}");
    Ok(Started {
        door: None,
        threads: vec![thread],
        waker: Some(waker),
        local_addr: Some(local_addr),
    })
}

fn run(
    mut poll: Poll,
    listener: &TcpListener,
    service: &Arc<Service>,
    config: &Arc<Config>,
    stats: &ServerStats,
) -> io::Result<()> {
    let busy = Arc::new(AtomicUsize::new(0));
    let mut events = Events::with_capacity(16);
    loop {
        match poll.poll(&mut events, None) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
        if stats.is_draining() {
            return Ok(());
        }
        loop {
            match listener.accept() {
                Ok((stream, _)) => take(stream, service, config, &busy),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    // Out of descriptors, or a connection aborted early: readiness is
                    // edge-triggered, so try again after a pause rather than wait for it.
                    tracing::warn!("server API: accept failed: {e}");
                    std::thread::sleep(std::time::Duration::from_millis(100));
                    if stats.is_draining() {
                        return Ok(());
                    }
                }
            }
        }
    }
}

/// Serves `stream` on a thread of its own, or answers 503 if too many are being served.
fn take(stream: TcpStream, service: &Arc<Service>, config: &Arc<Config>, busy: &Arc<AtomicUsize>) {
    if busy.fetch_add(1, Ordering::AcqRel) >= MAX_CONNECTIONS {
        busy.fetch_sub(1, Ordering::AcqRel);
        let response = json_error(
            Status::Unavailable,
            &[("Retry-After", "1")],
            "too many server API connections",
        );
        let _ = stream.set_nonblocking(false);
        let _ = (&stream).write_all(&response.bytes);
        return;
    }
    let (service, config, left) = (service.clone(), config.clone(), busy.clone());
    let spawned = std::thread::Builder::new()
        .name("api-conn".into())
        .spawn(move || {
            serve(stream, &service, &config);
            left.fetch_sub(1, Ordering::AcqRel);
        });
    if let Err(e) = spawned {
        busy.fetch_sub(1, Ordering::AcqRel);
        tracing::warn!("server API: cannot start a connection thread: {e}");
    }
}

/// Reads one request, answers it, closes.
fn serve(mut stream: TcpStream, service: &Service, config: &Config) {
    let deadline = Instant::now() + config.handshake_timeout;
    let _ = stream.set_nonblocking(false);
    let _ = stream.set_nodelay(true);
    let _ = stream.set_write_timeout(Some(config.handshake_timeout));
    let response = match read_request(&mut stream, config, deadline) {
        Ok(request) => service.handle(&request),
        Err(Some(response)) => response,
        Err(None) => return,
    };
    let _ = stream.write_all(&response.bytes);
    let _ = stream.flush();
    // As the main port's `Discard`: end our side, then read until the client ends its own
    // (or the deadline), so that input still in flight (the rest of a refused body) does not
    // make the kernel answer with a reset that could destroy the answer.
    let _ = stream.shutdown(std::net::Shutdown::Write);
    let mut drained = 0;
    while drained < DRAIN_LIMIT {
        match read_some(&mut stream, &mut Vec::new(), deadline) {
            Ok(n) => drained += n,
            Err(_) => return,
        }
    }
}

/// Most bytes read and thrown away after an answer.
const DRAIN_LIMIT: usize = 1024 * 1024;

/// One request with its body; `Err(Some(answer))` for a request refused before its body
/// (400, 413, 431), `Err(None)` for a connection that ended or ran out of time.
fn read_request(
    stream: &mut TcpStream,
    config: &Config,
    deadline: Instant,
) -> Result<FullRequest, Option<Response>> {
    let mut buf = Vec::with_capacity(1024);
    let (head, len) = loop {
        match request::parse(&buf, config.max_request_head, config.max_headers) {
            Parsed::Complete(head, len) => break (head, len),
            Parsed::Reject(status) => {
                return Err(Some(json_error(status, &[], "bad request head")));
            }
            Parsed::Partial => {
                read_some(stream, &mut buf, deadline)?;
            }
        }
    };
    let (mut request, body_len) = match api_request(&head) {
        Dispatch::Api { request, body_len } => (request, body_len),
        Dispatch::Answer(response) => return Err(Some(response)),
        Dispatch::Upgrade { .. } => return Err(None),
    };
    let mut body = buf.split_off(len);
    while body.len() < body_len {
        read_some(stream, &mut body, deadline)?;
    }
    // Bytes past the body (a pipelined request) are not served: the connection closes.
    body.truncate(body_len);
    request.body = body;
    Ok(*request)
}

/// Reads what comes before `deadline` onto `buf` (how many bytes); `Err(None)` on EOF, error
/// or time out.
fn read_some(
    stream: &mut TcpStream,
    buf: &mut Vec<u8>,
    deadline: Instant,
) -> Result<usize, Option<Response>> {
    let left = deadline.saturating_duration_since(Instant::now());
    if left.is_zero() || stream.set_read_timeout(Some(left)).is_err() {
        return Err(None);
    }
    let mut chunk = [0u8; 4096];
    loop {
        match stream.read(&mut chunk) {
            Ok(0) => return Err(None),
            Ok(n) => {
                buf.extend_from_slice(&chunk[..n]);
                return Ok(n);
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return Err(None),
        }
    }
}
