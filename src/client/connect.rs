//! Opening a connection: resolve, TCP connect, TLS, HTTP upgrade. Blocking, each step
//! bounded by `connect_timeout`; the result is a non-blocking WebSocket ready for the pump.

use std::io;
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::time::Duration;

use rustls::pki_types::ServerName;
use rustls::{ClientConnection, StreamOwned};
use tungstenite::client::IntoClientRequest;
use tungstenite::error::{ProtocolError, SubProtocolError};
use tungstenite::handshake::HandshakeError;
use tungstenite::handshake::client::{Request, Response};
use tungstenite::http::{HeaderName, HeaderValue, header};
use tungstenite::protocol::WebSocketConfig;
use tungstenite::{Error as WsError, WebSocket};

use super::error::ConnectError;
use super::options::ConnectOptions;
use super::stream::Stream;
use super::target::Target;

/// Most bytes tungstenite may hold unsent for one connection; past it, the pump stops taking
/// requests until the socket drains (and pipe mode stops reading stdin).
const MAX_WRITE_BUFFER: usize = 4 * 1024 * 1024;

/// An open WebSocket and what its handshake told.
#[derive(Debug)]
pub struct Opened {
    /// The connection, in non-blocking mode.
    pub ws: WebSocket<Stream>,
    /// Facts from the handshake.
    pub handshake: Handshake,
}

/// What the server's `101 Switching Protocols` answer said.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Handshake {
    /// The address connected to.
    pub peer: Option<SocketAddr>,
    /// The `Server` header.
    pub server: Option<String>,
    /// The subprotocol the server chose (`Sec-WebSocket-Protocol`).
    pub subprotocol: Option<String>,
}

/// Opens a WebSocket to `target`.
pub fn open(target: &Target, options: &ConnectOptions) -> Result<Opened, ConnectError> {
    let timeout = options.connect_timeout;
    let socket = dial(target, timeout)?;
    let peer = socket.peer_addr().ok();
    // Blocking with timeouts for the handshake: a timeout surfaces as WouldBlock/TimedOut.
    socket
        .set_read_timeout(Some(timeout))
        .and_then(|()| socket.set_write_timeout(Some(timeout)))
        .and_then(|()| socket.set_nodelay(true))
        .map_err(ConnectError::Socket)?;
    let stream = if target.is_secure() {
        Stream::Tls(Box::new(tls_handshake(socket, target, options)?))
    } else {
        Stream::Plain(socket)
    };
    let request = request(target, options)?;
    let config = WebSocketConfig::default().max_write_buffer_size(MAX_WRITE_BUFFER);
    let (ws, response) = tungstenite::client::client_with_config(request, stream, Some(config))
        .map_err(|e| handshake_error(e, options))?;
    let socket = ws.get_ref().socket();
    socket
        .set_read_timeout(None)
        .and_then(|()| socket.set_write_timeout(None))
        .and_then(|()| socket.set_nonblocking(true))
        .map_err(ConnectError::Socket)?;
    Ok(Opened {
        ws,
        handshake: Handshake {
            peer,
            server: header_text(&response, header::SERVER),
            subprotocol: header_text(&response, header::SEC_WEBSOCKET_PROTOCOL),
        },
    })
}

/// Connects to the first resolved address that accepts.
fn dial(target: &Target, timeout: Duration) -> Result<TcpStream, ConnectError> {
    let resolve_error = |reason: String| ConnectError::Resolve {
        host: target.host().to_string(),
        reason,
    };
    let addrs = (target.host(), target.port())
        .to_socket_addrs()
        .map_err(|e| resolve_error(e.to_string()))?;
    let mut last = None;
    for addr in addrs {
        match TcpStream::connect_timeout(&addr, timeout) {
            Ok(socket) => return Ok(socket),
            Err(error) => last = Some(ConnectError::Connect { addr, error }),
        }
    }
    Err(last.unwrap_or_else(|| resolve_error("no address found".into())))
}

/// Runs the TLS handshake to completion now, so that certificate problems get their own
/// message instead of surfacing as an I/O error in the HTTP upgrade.
fn tls_handshake(
    mut socket: TcpStream,
    target: &Target,
    options: &ConnectOptions,
) -> Result<StreamOwned<ClientConnection, TcpStream>, ConnectError> {
    let fail = |error: io::Error| ConnectError::Tls {
        host: target.host().to_string(),
        error,
    };
    let name = ServerName::try_from(target.host().to_string())
        .map_err(|e| fail(io::Error::new(io::ErrorKind::InvalidInput, e)))?;
    let mut conn =
        ClientConnection::new(options.tls.clone(), name).map_err(|e| fail(io::Error::other(e)))?;
    while conn.is_handshaking() {
        match conn.complete_io(&mut socket) {
            Ok(_) => {}
            Err(e) if is_timeout(&e) => {
                return Err(ConnectError::Timeout {
                    step: "TLS handshake",
                });
            }
            Err(e) => return Err(fail(e)),
        }
    }
    Ok(StreamOwned::new(conn, socket))
}

/// The upgrade request: the URL, then `--origin`, `--subprotocol` and `--header`s.
fn request(target: &Target, options: &ConnectOptions) -> Result<Request, ConnectError> {
    let mut request = target
        .uri()
        .into_client_request()
        .map_err(|e| ConnectError::Handshake(e.to_string()))?;
    let headers = request.headers_mut();
    let value = |v: &str| {
        HeaderValue::from_str(v)
            .map_err(|_| ConnectError::Handshake(format!("bad header value {v:?}")))
    };
    if let Some(origin) = &options.origin {
        headers.insert(header::ORIGIN, value(origin)?);
    }
    if let Some(protocol) = &options.subprotocol {
        headers.insert(header::SEC_WEBSOCKET_PROTOCOL, value(protocol)?);
    }
    for h in &options.headers {
        // The handshake's own headers may appear only once: a user's one replaces ours.
        if replaces_ours(&h.name) {
            headers.insert(h.name.clone(), h.value.clone());
        } else {
            headers.append(h.name.clone(), h.value.clone());
        }
    }
    Ok(request)
}

/// Headers tungstenite writes itself and refuses to see twice.
fn replaces_ours(name: &HeaderName) -> bool {
    [
        header::HOST,
        header::CONNECTION,
        header::UPGRADE,
        header::SEC_WEBSOCKET_VERSION,
        header::SEC_WEBSOCKET_KEY,
        header::ORIGIN,
        header::SEC_WEBSOCKET_PROTOCOL,
    ]
    .contains(name)
}

/// Names the way a handshake failed.
fn handshake_error(
    error: HandshakeError<tungstenite::ClientHandshake<Stream>>,
    options: &ConnectOptions,
) -> ConnectError {
    let error = match error {
        // Only a would-block read interrupts a blocking handshake: the read timeout fired.
        HandshakeError::Interrupted(_) => {
            return ConnectError::Timeout {
                step: "WebSocket handshake",
            };
        }
        HandshakeError::Failure(e) => e,
    };
    match error {
        WsError::Http(response) => ConnectError::Refused {
            status: response.status().as_u16(),
            reason: response
                .status()
                .canonical_reason()
                .unwrap_or("")
                .to_string(),
        },
        WsError::Protocol(ProtocolError::SecWebSocketSubProtocolError(
            SubProtocolError::NoSubProtocol,
        )) => ConnectError::NoSubprotocol(options.subprotocol.clone().unwrap_or_default()),
        WsError::Io(e) if is_timeout(&e) => ConnectError::Timeout {
            step: "WebSocket handshake",
        },
        other => ConnectError::Handshake(other.to_string()),
    }
}

fn is_timeout(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
    )
}

fn header_text(response: &Response, name: HeaderName) -> Option<String> {
    response
        .headers()
        .get(name)
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
}
