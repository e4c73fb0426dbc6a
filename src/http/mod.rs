//! Plain HTTP on the WebSocket port: the chat page, `/health`, and the answers to requests
//! that cannot be served (400, 404, 405, 426, 431).
//!
//! The session reads a request head ([`request::parse`]) and asks [`Site::dispatch`] what to do:
//! answer and keep the connection, answer and close, or upgrade to a WebSocket in a room.

pub mod assets;
pub mod handshake;
pub mod request;
pub mod route;

use std::sync::Arc;

use crate::room::RoomId;
use crate::stats::ServerStats;
use request::{Method, RequestHead};
use route::Route;

/// The statuses this server answers with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// 200.
    Ok,
    /// 400: the request is malformed.
    BadRequest,
    /// 403: the request is well formed but not allowed.
    Forbidden,
    /// 404: no such page, asset or room path.
    NotFound,
    /// 405: only GET (and HEAD) are served.
    MethodNotAllowed,
    /// 426: the WebSocket version is not 13.
    UpgradeRequired,
    /// 431: the request head is too large or has too many headers.
    HeadTooLarge,
    /// 500: the server could not read a file it should serve.
    InternalError,
    /// 503: the server will not take this connection now.
    Unavailable,
}

impl Status {
    /// Numeric code and reason phrase.
    pub fn line(self) -> (u16, &'static str) {
        match self {
            Status::Ok => (200, "OK"),
            Status::BadRequest => (400, "Bad Request"),
            Status::Forbidden => (403, "Forbidden"),
            Status::NotFound => (404, "Not Found"),
            Status::MethodNotAllowed => (405, "Method Not Allowed"),
            Status::UpgradeRequired => (426, "Upgrade Required"),
            Status::HeadTooLarge => (431, "Request Header Fields Too Large"),
            Status::InternalError => (500, "Internal Server Error"),
            Status::Unavailable => (503, "Service Unavailable"),
        }
    }
}

/// The `Server` header value.
pub const SERVER_NAME: &str = concat!("shardcast/", env!("CARGO_PKG_VERSION"));

/// A complete HTTP response, ready for the outbound queue.
#[derive(Debug)]
pub struct Response {
    /// Status line, headers and body.
    pub bytes: Vec<u8>,
    /// Whether the connection stays open for another request.
    pub keep_alive: bool,
}

/// Builds a response. `head_only` leaves the body out (for HEAD) but keeps its length.
pub fn respond(
    status: Status,
    content_type: &str,
    extra_headers: &[(&str, &str)],
    body: &[u8],
    keep_alive: bool,
    head_only: bool,
) -> Response {
    let (code, reason) = status.line();
    let mut bytes = Vec::with_capacity(160 + body.len());
    let connection = if keep_alive { "keep-alive" } else { "close" };
    bytes.extend_from_slice(
        format!(
            "HTTP/1.1 {code} {reason}\r\nServer: {SERVER_NAME}\r\nContent-Type: {content_type}\r\n\
             Content-Length: {}\r\nConnection: {connection}\r\n",
            body.len()
        )
        .as_bytes(),
    );
    for (name, value) in extra_headers {
        bytes.extend_from_slice(format!("{name}: {value}\r\n").as_bytes());
    }
    bytes.extend_from_slice(b"\r\n");
    if !head_only {
        bytes.extend_from_slice(body);
    }
    Response { bytes, keep_alive }
}

/// A short plain-text error answer; the connection is closed after it.
pub fn error_response(status: Status, extra_headers: &[(&str, &str)]) -> Response {
    let (code, reason) = status.line();
    let body = format!("{code} {reason}\n");
    respond(
        status,
        "text/plain; charset=utf-8",
        extra_headers,
        body.as_bytes(),
        false,
        false,
    )
}

/// What to do with a complete request.
#[derive(Debug)]
pub enum Dispatch {
    /// Send this answer (then keep or close the connection as it says).
    Answer(Response),
    /// Send this `101` and continue as a WebSocket member of `room`.
    Upgrade {
        /// The room the path names.
        room: RoomId,
        /// The `101 Switching Protocols` answer.
        response: Vec<u8>,
    },
}

/// Everything the HTTP side needs to answer: where assets come from and the live figures.
#[derive(Debug, Clone)]
pub struct Site {
    assets: assets::Assets,
    stats: Arc<ServerStats>,
}

impl Site {
    /// A site serving `assets` and reporting `stats`.
    pub fn new(assets: assets::Assets, stats: Arc<ServerStats>) -> Self {
        Site { assets, stats }
    }

    /// Decides the answer to one request.
    pub fn dispatch(&self, head: &RequestHead) -> Dispatch {
        let head_only = match head.method {
            Some(Method::Get) => false,
            Some(Method::Head) if !head.wants_websocket() => true,
            _ => {
                return Dispatch::Answer(error_response(
                    Status::MethodNotAllowed,
                    &[("Allow", "GET, HEAD")],
                ));
            }
        };
        // RFC 9112 §3.2: an HTTP/1.1 request without exactly one Host is a 400.
        let bad_host = head.host_count > 1 || (head.minor_version >= 1 && head.host_count == 0);
        if head.has_body || head.malformed || bad_host {
            return Dispatch::Answer(error_response(Status::BadRequest, &[]));
        }
        let route = route::route(head.path());
        if head.wants_websocket() {
            return match route {
                Route::Room(room) => match handshake::accept(head) {
                    Ok(response) => Dispatch::Upgrade { room, response },
                    Err(rejection) => Dispatch::Answer(rejection.response()),
                },
                _ => Dispatch::Answer(error_response(Status::NotFound, &[])),
            };
        }
        let keep_alive = head.keep_alive();
        Dispatch::Answer(match route {
            Route::Health => {
                let body = format!(
                    "{{\"status\":\"ok\",\"shards\":{},\"connections\":{}}}\n",
                    self.stats.shard_count(),
                    self.stats.connections()
                );
                respond(
                    Status::Ok,
                    "application/json",
                    &[("Cache-Control", "no-store")],
                    body.as_bytes(),
                    keep_alive,
                    head_only,
                )
            }
            Route::Room(_) => self.asset("/index.html", keep_alive, head_only),
            Route::Asset(path) => self.asset(path, keep_alive, head_only),
        })
    }

    fn asset(&self, path: &str, keep_alive: bool, head_only: bool) -> Response {
        match self.assets.get(path) {
            Ok(Some(file)) => respond(
                Status::Ok,
                file.content_type,
                &[("Cache-Control", "no-cache")],
                &file.body,
                keep_alive,
                head_only,
            ),
            // A missing asset does not spoil the connection.
            Ok(None) => {
                let body = b"404 Not Found\n";
                respond(
                    Status::NotFound,
                    "text/plain; charset=utf-8",
                    &[],
                    body,
                    keep_alive,
                    head_only,
                )
            }
            Err(err) => {
                log::warn!("cannot read asset {path}: {err}");
                error_response(Status::InternalError, &[])
            }
        }
    }
}
