//! Plain HTTP on the WebSocket port: the chat page, `/health`, and the answers to requests
//! that cannot be served (400, 401, 403, 404, 405, 426, 431).
//!
//! The session reads a request head ([`request::parse`]) and asks [`Site::dispatch`] what to do:
//! answer and keep the connection, answer and close, or upgrade to a WebSocket in a room.

pub mod assets;
pub mod bad_room;
pub mod handshake;
pub mod request;
pub mod route;

use std::sync::Arc;

use crate::auth::{Identity, Refusal, Verifier};
use crate::chat::{Dialect, SUBPROTOCOL};
use crate::config::{AuthMode, Config};
use crate::history::{Ask, Since};
use crate::metrics::{self, Counter, Counters};
use crate::names::NameClaims;
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
    /// 401: the server API's key, or the upgrade's token (docs/auth.md), is missing or
    /// wrong.
    Unauthorized,
    /// 403: the request is well formed but not allowed.
    Forbidden,
    /// 404: no such page, asset or room path.
    NotFound,
    /// 405: only GET (and HEAD) are served.
    MethodNotAllowed,
    /// 413: a server API request's body is over [`API_BODY_LIMIT`].
    PayloadTooLarge,
    /// 426: the WebSocket version is not 13.
    UpgradeRequired,
    /// 429: too many new connections from one address (`--max-connection-rate-per-ip`).
    TooManyRequests,
    /// 431: the request head is too large or has too many headers.
    HeadTooLarge,
    /// 500: the server could not read a file it should serve.
    InternalError,
    /// 503: the server will not take this connection now.
    Unavailable,
    /// 504: the server API's request was not done in time.
    GatewayTimeout,
}

impl Status {
    /// Numeric code and reason phrase.
    pub fn line(self) -> (u16, &'static str) {
        match self {
            Status::Ok => (200, "OK"),
            Status::BadRequest => (400, "Bad Request"),
            Status::Unauthorized => (401, "Unauthorized"),
            Status::Forbidden => (403, "Forbidden"),
            Status::NotFound => (404, "Not Found"),
            Status::MethodNotAllowed => (405, "Method Not Allowed"),
            Status::PayloadTooLarge => (413, "Content Too Large"),
            Status::UpgradeRequired => (426, "Upgrade Required"),
            Status::TooManyRequests => (429, "Too Many Requests"),
            Status::HeadTooLarge => (431, "Request Header Fields Too Large"),
            Status::InternalError => (500, "Internal Server Error"),
            Status::Unavailable => (503, "Service Unavailable"),
            Status::GatewayTimeout => (504, "Gateway Timeout"),
        }
    }
}

/// Largest body a server API request may have (docs/api.md); a larger one is answered 413.
pub const API_BODY_LIMIT: usize = 64 * 1024;

/// The `Server` header value.
pub const SERVER_NAME: &str = concat!("shardcast/", env!("CARGO_PKG_VERSION"));

/// A complete HTTP response, ready for the outbound queue.
#[derive(Debug)]
pub struct Response {
    /// The status it carries.
    pub status: Status,
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
    Response {
        status,
        bytes,
        keep_alive,
    }
}

/// A short plain-text error answer; the connection is closed after it.
pub fn error_response(status: Status, extra_headers: &[(&str, &str)]) -> Response {
    explained_error(status, extra_headers, "")
}

/// An error answer whose body also says why (`why`, one line; empty: the status alone).
pub fn explained_error(status: Status, extra_headers: &[(&str, &str)], why: &str) -> Response {
    let (code, reason) = status.line();
    let body = if why.is_empty() {
        format!("{code} {reason}\n")
    } else {
        format!("{code} {reason}: {why}\n")
    };
    respond(
        status,
        "text/plain; charset=utf-8",
        extra_headers,
        body.as_bytes(),
        false,
        false,
    )
}

/// A server API error answer: `{"error":"<why>"}` (one line); the connection is closed after
/// it.
pub fn json_error(status: Status, extra_headers: &[(&str, &str)], why: &str) -> Response {
    let mut body = serde_json::json!({ "error": why }).to_string();
    body.push('\n');
    respond(
        status,
        "application/json",
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
        /// The dialect negotiated with `Sec-WebSocket-Protocol`.
        dialect: Dialect,
        /// The `?nick=` query parameter, unvalidated (v1 only).
        nick: Option<String>,
        /// The `?reclaim=` query parameter: a token to take the nickname back from this
        /// client's earlier connection (v1 only; `crate::names`).
        reclaim: Option<String>,
        /// What `?history=` and `?since=` ask of the room's history (`history` not capped yet).
        ask: Ask,
        /// The `101 Switching Protocols` answer.
        response: Vec<u8>,
        /// Who the upgrade's valid token says the client is (docs/auth.md); `None`: no token.
        identity: Option<Box<Identity>>,
    },
    /// A server API request (`/api/` on the main port): read `body_len` bytes of body into
    /// `request`, then hand it to the API service and wait for its answer.
    Api {
        /// The request, its body still empty.
        request: Box<request::FullRequest>,
        /// The body's length (at most [`API_BODY_LIMIT`]).
        body_len: usize,
    },
}

/// Everything the HTTP side needs to answer: where assets come from, the admission policy and
/// the live figures.
#[derive(Debug, Clone)]
pub struct Site {
    assets: assets::Assets,
    config: Arc<Config>,
    stats: Arc<ServerStats>,
    /// Checks connection tokens; `None` with `--auth off`.
    verifier: Option<Arc<Verifier>>,
    /// The nicknames held in each room, shared by every event loop (admission of a name).
    names: Arc<NameClaims>,
}

impl Site {
    /// A site serving `assets` under `config`, reporting `stats`.
    pub fn new(assets: assets::Assets, config: Arc<Config>, stats: Arc<ServerStats>) -> Self {
        Site {
            assets,
            config,
            stats,
            verifier: None,
            names: Arc::default(),
        }
    }

    /// The nicknames held in each room (`crate::names`).
    pub fn names(&self) -> &NameClaims {
        &self.names
    }

    /// The same site, checking connection tokens with `verifier` (docs/auth.md).
    pub fn with_verifier(mut self, verifier: Option<Arc<Verifier>>) -> Self {
        self.verifier = verifier;
        self
    }

    /// What checks connection tokens (`None` with `--auth off`).
    pub fn verifier(&self) -> Option<&Verifier> {
        self.verifier.as_deref()
    }

    /// Decides the answer to one request, and counts it.
    ///
    /// An admitted upgrade holds one of `max_connections` places; the session gives it back
    /// through [`Site::release`] when it ends.
    pub fn dispatch(&self, head: &RequestHead, counters: &mut Counters) -> Dispatch {
        let upgrade = head.wants_websocket();
        let dispatch = self.decide(head, counters);
        let status = match &dispatch {
            Dispatch::Upgrade { .. } => {
                counters.bump(Counter::HandshakeOk);
                return dispatch;
            }
            // The API answers later; it keeps no count of its own yet.
            Dispatch::Api { .. } => return dispatch,
            Dispatch::Answer(response) => response.status,
        };
        counters.bump(if upgrade {
            match status {
                Status::Forbidden => Counter::HandshakeForbidden,
                Status::Unauthorized => Counter::HandshakeUnauthorized,
                Status::NotFound => Counter::HandshakeNotFound,
                Status::MethodNotAllowed => Counter::HandshakeMethod,
                Status::UpgradeRequired => Counter::HandshakeVersion,
                Status::Unavailable => Counter::HandshakeUnavailable,
                _ => Counter::HandshakeBadRequest,
            }
        } else {
            http_counter(status)
        });
        dispatch
    }

    /// Gives back the place an upgrade took.
    pub fn release(&self) {
        self.stats.release();
    }

    fn decide(&self, head: &RequestHead, counters: &mut Counters) -> Dispatch {
        if route::is_api(head.path()) {
            // Reserved for the server API: 404 whatever the method when it is not served
            // here (no key, or `--api-listen`).
            return if self.config.api_on_main_port() {
                api_request(head)
            } else {
                Dispatch::Answer(error_response(Status::NotFound, &[]))
            };
        }
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
            let Route::Room(room) = route else {
                return Dispatch::Answer(error_response(Status::NotFound, &[]));
            };
            let dialect = Dialect::negotiate(head.ws_protocols.iter().map(String::as_str));
            let ask = match history_query(head, dialect) {
                Ok(ask) => ask,
                Err(why) => {
                    return Dispatch::Answer(explained_error(Status::BadRequest, &[], why));
                }
            };
            let subprotocol = (dialect == Dialect::V1).then_some(SUBPROTOCOL);
            let response = match handshake::accept(head, subprotocol) {
                Ok(response) => response,
                Err(rejection) => return Dispatch::Answer(rejection.response()),
            };
            if !self.origin_allowed(head.origin.as_deref()) {
                return Dispatch::Answer(error_response(Status::Forbidden, &[]));
            }
            let identity = match self.check_token(head, dialect, &room) {
                Ok(identity) => identity,
                Err(refusal) => {
                    counters.bump(refusal.counter());
                    return Dispatch::Answer(refused(refusal));
                }
            };
            if self.stats.is_draining() || !self.stats.try_admit(self.config.max_connections) {
                return Dispatch::Answer(error_response(
                    Status::Unavailable,
                    &[("Retry-After", "5")],
                ));
            }
            let (nick, reclaim) = match dialect {
                Dialect::V1 => (head.query_param("nick"), head.query_param("reclaim")),
                Dialect::Plain => (None, None),
            };
            if identity.is_some() {
                counters.bump(Counter::TokenOk);
            }
            return Dispatch::Upgrade {
                room,
                dialect,
                nick,
                reclaim,
                ask,
                response,
                identity,
            };
        }
        // While draining, answer and close so that clients move to another server.
        let keep_alive = head.keep_alive() && !self.stats.is_draining();
        Dispatch::Answer(match route {
            Route::Health => self.health(keep_alive, head_only),
            Route::Metrics => respond(
                Status::Ok,
                "text/plain; version=0.0.4; charset=utf-8",
                &[("Cache-Control", "no-store")],
                self.metrics_text().as_bytes(),
                keep_alive,
                head_only,
            ),
            Route::Room(_) => self.asset("/index.html", keep_alive, head_only),
            Route::Asset(path) => self.asset(path, keep_alive, head_only),
        })
    }

    /// Checks the upgrade's token, if tokens are on (docs/auth.md): a valid one that allows
    /// `room` gives its identity; none is fine with `--auth optional`, and with `required`
    /// for a `shardcast.v1` client, which must then bring one in its `hello`.
    fn check_token(
        &self,
        head: &RequestHead,
        dialect: Dialect,
        room: &RoomId,
    ) -> Result<Option<Box<Identity>>, Refusal> {
        let Some(verifier) = &self.verifier else {
            return Ok(None);
        };
        match head.token() {
            Some(token) => {
                let identity = verifier.verify(&token)?;
                if !identity.allows(room) {
                    return Err(Refusal::Room);
                }
                Ok(Some(Box::new(identity)))
            }
            None if verifier.mode() == AuthMode::Required && dialect == Dialect::Plain => {
                Err(Refusal::Missing)
            }
            None => Ok(None),
        }
    }

    /// `/health`: `ok`; `degraded` with a `reason` when a cluster member's cross-node
    /// delivery is down (200: its local rooms work; 503 when its node id is taken, which only
    /// a restart mends: docs/operations.md); `draining` (503) during shutdown. The connection
    /// asking is not among the `connections` it reports.
    fn health(&self, keep_alive: bool, head_only: bool) -> Response {
        let degraded = self
            .stats
            .cluster()
            .and_then(|cluster| cluster.link.degraded());
        let (status, word) = match &degraded {
            _ if self.stats.is_draining() => (Status::Unavailable, "draining"),
            Some(d) if d.take_out => (Status::Unavailable, "degraded"),
            Some(_) => (Status::Ok, "degraded"),
            None => (Status::Ok, "ok"),
        };
        // A JSON string (serializing a &str cannot fail).
        let reason = degraded
            .map(|d| {
                format!(
                    ",\"reason\":{}",
                    serde_json::to_string(&d.reason).unwrap_or_default()
                )
            })
            .unwrap_or_default();
        let body = format!(
            "{{\"status\":\"{word}\"{reason},\"shards\":{},\"connections\":{}}}\n",
            self.stats.shard_count(),
            // The asking connection is open, and counted by its shard when it was adopted.
            self.stats.connections().saturating_sub(1)
        );
        respond(
            status,
            "application/json",
            &[("Cache-Control", "no-store")],
            body.as_bytes(),
            keep_alive,
            head_only,
        )
    }

    /// The Prometheus text: every shard's figures, and the bridge's in a cluster.
    fn metrics_text(&self) -> String {
        let mut text = metrics::render(&self.stats.snapshot(), &self.stats.accept_figures());
        if let Some(cluster) = self.stats.cluster() {
            cluster.render(&mut text);
        }
        crate::process_figures::render(&mut text);
        text
    }

    /// With no allow-list, or no `Origin` (not a browser), any origin; else an exact
    /// (case-insensitive) match or `*`.
    fn origin_allowed(&self, origin: Option<&str>) -> bool {
        let allowed = &self.config.allowed_origins;
        match origin {
            _ if allowed.is_empty() => true,
            None => true,
            Some(origin) => allowed
                .iter()
                .any(|a| a == "*" || a.eq_ignore_ascii_case(origin)),
        }
    }

    fn asset(&self, path: &str, keep_alive: bool, head_only: bool) -> Response {
        match self.assets.get(path) {
            Ok(Some(file)) => respond(
                Status::Ok,
                file.content_type,
                &[("Cache-Control", assets::cache_control(path))],
                &file.body,
                keep_alive,
                head_only,
            ),
            // A missing asset does not spoil the connection.
            Ok(None) => {
                if let Some(name) = bad_room::meant_as_room(path) {
                    // Meant as a room, with a bad name: say what a room name may be. 404, not
                    // 400: the request is well formed, there is just no page at that path.
                    return respond(
                        Status::NotFound,
                        "text/html; charset=utf-8",
                        &[("Cache-Control", "no-cache")],
                        bad_room::page(&name).as_bytes(),
                        keep_alive,
                        head_only,
                    );
                }
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
                tracing::warn!("cannot read asset {path}: {err}");
                error_response(Status::InternalError, &[])
            }
        }
    }
}

/// A server API request (on the main port or `--api-listen`): its body must come with a
/// `Content-Length` of at most [`API_BODY_LIMIT`] (docs/api.md, "Errors").
pub fn api_request(head: &RequestHead) -> Dispatch {
    let bad_host = head.host_count > 1 || (head.minor_version >= 1 && head.host_count == 0);
    let refusal = if head.transfer_encoding {
        Some((
            Status::BadRequest,
            "send the body with Content-Length (no Transfer-Encoding)",
        ))
    } else if head.malformed || bad_host {
        Some((Status::BadRequest, "malformed request head"))
    } else {
        None
    };
    if let Some((status, why)) = refusal {
        return Dispatch::Answer(json_error(status, &[], why));
    }
    let body_len = head.content_length.unwrap_or(0);
    match usize::try_from(body_len) {
        Ok(body_len) if body_len <= API_BODY_LIMIT => Dispatch::Api {
            request: Box::new(request::FullRequest::of(head)),
            body_len,
        },
        _ => Dispatch::Answer(json_error(
            Status::PayloadTooLarge,
            &[],
            &format!("the body is over {API_BODY_LIMIT} bytes"),
        )),
    }
}

/// The answer to an upgrade whose token was refused: 401 (with `WWW-Authenticate`), or 403
/// for a room the token does not allow; the body says why in one line.
fn refused(refusal: Refusal) -> Response {
    if refusal.unauthorized() {
        explained_error(
            Status::Unauthorized,
            &[("WWW-Authenticate", "Bearer")],
            refusal.text(),
        )
    } else {
        explained_error(Status::Forbidden, &[], refusal.text())
    }
}

/// The plain-HTTP counter for `status`.
pub fn http_counter(status: Status) -> Counter {
    match status {
        Status::Ok => Counter::Http200,
        Status::NotFound => Counter::Http404,
        Status::MethodNotAllowed => Counter::Http405,
        Status::HeadTooLarge => Counter::Http431,
        Status::InternalError => Counter::Http500,
        Status::Unavailable => Counter::Http503,
        _ => Counter::Http400,
    }
}

/// Reads `?history=N` and (v1 only) `?since=EPOCH:OFFSET`; a malformed value is the
/// reason for a 400.
fn history_query(head: &RequestHead, dialect: Dialect) -> Result<Ask, &'static str> {
    let history = match head.query_param("history") {
        None => 0,
        // A huge number is only a big ask: it is capped later, like any over the limit.
        Some(n) => n
            .parse::<u64>()
            .map(|n| n.min(u64::from(u32::MAX)) as u32)
            .map_err(|_| "history must be a whole number")?,
    };
    let since = match (dialect, head.query_param("since")) {
        (Dialect::V1, Some(text)) => Some(
            Since::parse(&text).ok_or("since must be EPOCH:OFFSET (16 hex digits, a number)")?,
        ),
        _ => None,
    };
    Ok(Ask { history, since })
}
