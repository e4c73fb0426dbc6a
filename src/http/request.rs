//! Reading an HTTP/1.1 request head with `httparse`.
//!
//! Only what the server acts on is kept ([`RequestHead`]); the raw head stays in the
//! session's buffer until the request is answered.

use crate::http::Status;

/// The request method, as far as routing cares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Method {
    /// `GET`.
    Get,
    /// `HEAD`: a GET whose answer has no body.
    Head,
    /// Anything else (answered 405).
    Other(String),
}

/// A credential from a request (the `Authorization: Bearer` token). Its `Debug` never shows
/// it, so that it cannot reach a log line.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Bearer(pub String);

impl std::fmt::Debug for Bearer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Bearer({} bytes)", self.0.len())
    }
}

/// The parts of a request head the server acts on. Its `Debug` redacts the `token` query
/// parameter (docs/auth.md: tokens never reach a log line).
#[derive(Clone, Default)]
pub struct RequestHead {
    /// The method (`None` only in `Default`).
    pub method: Option<Method>,
    /// The request target as sent (path and query).
    pub target: String,
    /// Minor HTTP version: 0 for HTTP/1.0, 1 for HTTP/1.1.
    pub minor_version: u8,
    /// Number of `Host` headers.
    pub host_count: usize,
    /// `Connection` lists `close`.
    pub connection_close: bool,
    /// `Connection` lists `keep-alive`.
    pub connection_keep_alive: bool,
    /// `Connection` lists `upgrade`.
    pub connection_upgrade: bool,
    /// The `Upgrade` header, if any.
    pub upgrade: Option<String>,
    /// `Sec-WebSocket-Key`, if exactly one was sent.
    pub ws_key: Option<String>,
    /// Number of `Sec-WebSocket-Key` headers.
    pub ws_key_count: usize,
    /// `Sec-WebSocket-Version`, if any.
    pub ws_version: Option<String>,
    /// `Origin`, if any.
    pub origin: Option<String>,
    /// The values of every `Sec-WebSocket-Protocol` header (each a comma-separated list).
    pub ws_protocols: Vec<String>,
    /// The request announces a body (`Content-Length` > 0 or `Transfer-Encoding`).
    pub has_body: bool,
    /// A header value was not valid for its header (e.g. a non-numeric Content-Length).
    pub malformed: bool,
    /// `Content-Length`, if sent (and numeric).
    pub content_length: Option<u64>,
    /// A `Transfer-Encoding` header was sent (the server API takes `Content-Length` only).
    pub transfer_encoding: bool,
    /// `Authorization`, if sent (the server API's key).
    pub authorization: Option<String>,
    /// The token of an `Authorization: Bearer <token>` header (other schemes are ignored).
    pub bearer: Option<Bearer>,
}

impl std::fmt::Debug for RequestHead {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RequestHead")
            .field("method", &self.method)
            .field("target", &self.redacted_target())
            .field("minor_version", &self.minor_version)
            .field("upgrade", &self.upgrade)
            .field("origin", &self.origin)
            .field("ws_protocols", &self.ws_protocols)
            .field("bearer", &self.bearer)
            .finish_non_exhaustive()
    }
}

/// The path part of a request target (before any `?`).
fn target_path(target: &str) -> &str {
    target.split('?').next().unwrap_or("")
}

/// The value of a request target's query parameter `name` (percent-decoded, `+` as space).
fn target_query_param(target: &str, name: &str) -> Option<String> {
    let (_, query) = target.split_once('?')?;
    form_urlencoded::parse(query.as_bytes())
        .find(|(key, _)| key == name)
        .map(|(_, value)| value.into_owned())
}

impl RequestHead {
    /// The path part of the target (before any `?`).
    pub fn path(&self) -> &str {
        target_path(&self.target)
    }

    /// The value of query parameter `name` (percent-decoded, `+` as space), if present.
    pub fn query_param(&self, name: &str) -> Option<String> {
        target_query_param(&self.target, name)
    }

    /// The connection token (docs/auth.md): the `Authorization: Bearer` header's, else the
    /// `token` query parameter's.
    pub fn token(&self) -> Option<String> {
        match &self.bearer {
            Some(Bearer(token)) => Some(token.clone()),
            None => self.query_param("token"),
        }
    }

    /// The target with the value of any `token` query parameter replaced, for a log line.
    pub fn redacted_target(&self) -> String {
        let Some((path, query)) = self.target.split_once('?') else {
            return self.target.clone();
        };
        let query: Vec<&str> = query
            .split('&')
            .map(|pair| {
                if pair.split('=').next() == Some("token") {
                    "token=<redacted>"
                } else {
                    pair
                }
            })
            .collect();
        format!("{path}?{}", query.join("&"))
    }

    /// Whether the connection may serve another request after this one.
    pub fn keep_alive(&self) -> bool {
        if self.minor_version >= 1 {
            !self.connection_close
        } else {
            self.connection_keep_alive && !self.connection_close
        }
    }

    /// The method as sent (`GET`, `POST`, ...).
    pub fn method_name(&self) -> &str {
        match &self.method {
            Some(Method::Get) => "GET",
            Some(Method::Head) => "HEAD",
            Some(Method::Other(name)) => name,
            None => "",
        }
    }

    /// The client asks for a WebSocket upgrade (it sent `Upgrade: websocket`).
    pub fn wants_websocket(&self) -> bool {
        self.upgrade
            .as_deref()
            .is_some_and(|u| has_token(u, "websocket"))
    }
}

/// A request with its body, as the server API takes it (`crate::api`).
#[derive(Debug, Clone, Default)]
pub struct FullRequest {
    /// The method as sent.
    pub method: String,
    /// The request target (path and query).
    pub target: String,
    /// The `Authorization` header.
    pub authorization: Option<String>,
    /// The body (`Content-Length` bytes).
    pub body: Vec<u8>,
}

impl FullRequest {
    /// The request of `head`, its body still to come.
    pub fn of(head: &RequestHead) -> FullRequest {
        FullRequest {
            method: head.method_name().to_owned(),
            target: head.target.clone(),
            authorization: head.authorization.clone(),
            body: Vec::new(),
        }
    }

    /// The path part of the target (before any `?`).
    pub fn path(&self) -> &str {
        target_path(&self.target)
    }

    /// The value of query parameter `name` (percent-decoded, `+` as space), if present.
    pub fn query_param(&self, name: &str) -> Option<String> {
        target_query_param(&self.target, name)
    }
}

/// What a look at the bytes so far found.
// A return value that lives on the stack for one match, never stored: boxing the head would
// only add an allocation per request.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub enum Parsed {
    /// The head is not complete yet.
    Partial,
    /// A complete head of `len` bytes (boxed: the head is large, the other answers tiny).
    Complete(Box<RequestHead>, usize),
    /// The bytes can never become an acceptable head: answer with this status and close.
    Reject(Status),
}

/// Parses the head at the start of `buf`, enforcing the size and header-count limits.
pub fn parse(buf: &[u8], max_head: usize, max_headers: usize) -> Parsed {
    // httparse needs the header array up front; 128 bounds the stack use, and
    // `max_headers` (validated by `Config::validate` to be ≤ this) is the configured limit.
    const HEADER_SLOTS: usize = 128;
    let mut slots = [httparse::EMPTY_HEADER; HEADER_SLOTS];
    let slots = &mut slots[..max_headers.min(HEADER_SLOTS)];
    let mut req = httparse::Request::new(slots);
    match req.parse(buf) {
        Ok(httparse::Status::Partial) => {
            if buf.len() >= max_head {
                Parsed::Reject(Status::HeadTooLarge)
            } else {
                Parsed::Partial
            }
        }
        Ok(httparse::Status::Complete(len)) if len > max_head => {
            Parsed::Reject(Status::HeadTooLarge)
        }
        Ok(httparse::Status::Complete(len)) => Parsed::Complete(Box::new(summarize(&req)), len),
        Err(httparse::Error::TooManyHeaders) => Parsed::Reject(Status::HeadTooLarge),
        Err(_) => Parsed::Reject(Status::BadRequest),
    }
}

fn summarize(req: &httparse::Request) -> RequestHead {
    let method = match req.method.unwrap_or("") {
        "GET" => Method::Get,
        "HEAD" => Method::Head,
        other => Method::Other(other.to_owned()),
    };
    let mut head = RequestHead {
        method: Some(method),
        target: req.path.unwrap_or("").to_owned(),
        minor_version: req.version.unwrap_or(1),
        ..RequestHead::default()
    };
    for h in req.headers.iter() {
        let value = std::str::from_utf8(h.value).ok().map(str::trim);
        let name = h.name;
        if name.eq_ignore_ascii_case("host") {
            head.host_count += 1;
        } else if name.eq_ignore_ascii_case("connection") {
            let v = value.unwrap_or("");
            head.connection_close |= has_token(v, "close");
            head.connection_keep_alive |= has_token(v, "keep-alive");
            head.connection_upgrade |= has_token(v, "upgrade");
        } else if name.eq_ignore_ascii_case("upgrade") {
            head.upgrade = value.map(str::to_owned);
        } else if name.eq_ignore_ascii_case("sec-websocket-key") {
            head.ws_key_count += 1;
            head.ws_key = value.map(str::to_owned);
        } else if name.eq_ignore_ascii_case("sec-websocket-version") {
            head.ws_version = value.map(str::to_owned);
        } else if name.eq_ignore_ascii_case("sec-websocket-protocol") {
            head.ws_protocols.extend(value.map(str::to_owned));
        } else if name.eq_ignore_ascii_case("origin") {
            head.origin = value.map(str::to_owned);
        } else if name.eq_ignore_ascii_case("content-length") {
            match value.and_then(|v| v.parse::<u64>().ok()) {
                // Two different lengths: no telling where the body ends (RFC 9112 §6.3).
                Some(n) if head.content_length.is_some_and(|m| m != n) => head.malformed = true,
                Some(n) => {
                    head.has_body |= n > 0;
                    head.content_length = Some(n);
                }
                None => head.malformed = true,
            }
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            head.has_body = true;
            head.transfer_encoding = true;
        } else if name.eq_ignore_ascii_case("authorization") {
            head.authorization = value.map(str::to_owned);
            head.bearer = value.and_then(bearer_token).map(|t| Bearer(t.to_owned()));
        }
    }
    head
}

/// The token of an `Authorization` value of the `Bearer` scheme (case-insensitive, RFC 6750).
fn bearer_token(value: &str) -> Option<&str> {
    let (scheme, token) = value.split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

/// Whether a comma-separated header value lists `token` (case-insensitive).
pub fn has_token(value: &str, token: &str) -> bool {
    value
        .split(',')
        .any(|t| t.trim().eq_ignore_ascii_case(token))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn complete(raw: &str) -> RequestHead {
        match parse(raw.as_bytes(), 8192, 64) {
            Parsed::Complete(head, len) => {
                assert_eq!(len, raw.len());
                *head
            }
            other => panic!("expected a complete head, got {other:?}"),
        }
    }

    #[test]
    fn reads_the_upgrade_headers() {
        let head = complete(
            "GET /room-1?x=1 HTTP/1.1\r\nHost: a\r\nConnection: keep-alive, Upgrade\r\n\
             Upgrade: WebSocket\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
             Sec-WebSocket-Version: 13\r\n\r\n",
        );
        assert_eq!(head.method, Some(Method::Get));
        assert_eq!(head.path(), "/room-1");
        assert!(head.connection_upgrade && head.wants_websocket());
        assert_eq!(head.ws_key.as_deref(), Some("dGhlIHNhbXBsZSBub25jZQ=="));
        assert_eq!(head.ws_version.as_deref(), Some("13"));
        assert!(head.keep_alive());
        assert!(head.ws_protocols.is_empty());
    }

    #[test]
    fn reads_subprotocols_and_query_parameters() {
        let head = complete(
            "GET /a?x=1&nick=Jos%C3%A9+R HTTP/1.1\r\nSec-WebSocket-Protocol: chat, shardcast.v1\r\n\
             Sec-WebSocket-Protocol: other\r\n\r\n",
        );
        assert_eq!(head.ws_protocols, vec!["chat, shardcast.v1", "other"]);
        assert_eq!(head.query_param("nick").as_deref(), Some("José R"));
        assert_eq!(head.query_param("x").as_deref(), Some("1"));
        assert_eq!(head.query_param("y"), None);
        assert_eq!(
            complete("GET /a HTTP/1.1\r\n\r\n").query_param("nick"),
            None
        );
    }

    #[test]
    fn tokens_come_from_the_bearer_header_or_the_query_and_never_show_in_debug() {
        let head = complete("GET /a?nick=x&token=sEcReT.b.c HTTP/1.1\r\n\r\n");
        assert_eq!(head.token().as_deref(), Some("sEcReT.b.c"));
        assert_eq!(head.redacted_target(), "/a?nick=x&token=<redacted>");
        assert!(!format!("{head:?}").contains("sEcReT"));
        let head =
            complete("GET /a?token=q HTTP/1.1\r\nAuthorization: bearer  hEaDeR.x.y \r\n\r\n");
        assert_eq!(head.token().as_deref(), Some("hEaDeR.x.y"));
        assert!(!format!("{head:?}").contains("hEaDeR"));
        let head = complete("GET /a HTTP/1.1\r\nAuthorization: Basic YTpi\r\n\r\n");
        assert_eq!(head.token(), None);
    }

    #[test]
    fn keep_alive_follows_the_version_defaults() {
        assert!(!complete("GET / HTTP/1.0\r\n\r\n").keep_alive());
        assert!(complete("GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n").keep_alive());
        assert!(!complete("GET / HTTP/1.1\r\nConnection: close\r\n\r\n").keep_alive());
    }

    #[test]
    fn reads_what_the_server_api_needs() {
        let head = complete(
            "POST /api/publish?x=1 HTTP/1.1\r\nHost: a\r\nAuthorization: apikey s3cret \r\n\
             Content-Length: 12\r\n\r\n",
        );
        assert_eq!(head.method_name(), "POST");
        assert_eq!(head.content_length, Some(12));
        assert!(head.has_body && !head.transfer_encoding && !head.malformed);
        let request = FullRequest::of(&head);
        assert_eq!(request.authorization.as_deref(), Some("apikey s3cret"));
        assert_eq!(request.path(), "/api/publish");
        assert_eq!(request.query_param("x").as_deref(), Some("1"));
        let two = complete("POST / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n");
        assert!(two.malformed, "two lengths");
        let chunked = complete("POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n");
        assert!(chunked.transfer_encoding && chunked.content_length.is_none());
    }

    #[test]
    fn limits_and_garbage_are_rejected() {
        assert!(matches!(
            parse(b"GET / HTTP/1.1\r\n", 8192, 64),
            Parsed::Partial
        ));
        let big = format!("GET / HTTP/1.1\r\nX: {}\r\n", "a".repeat(9000));
        assert!(matches!(
            parse(big.as_bytes(), 8192, 64),
            Parsed::Reject(Status::HeadTooLarge)
        ));
        let many: String = (0..70).map(|i| format!("X{i}: y\r\n")).collect();
        let many = format!("GET / HTTP/1.1\r\n{many}\r\n");
        assert!(matches!(
            parse(many.as_bytes(), 8192, 64),
            Parsed::Reject(Status::HeadTooLarge)
        ));
        assert!(matches!(
            parse(b"\x01\x02 garbage\r\n\r\n", 8192, 64),
            Parsed::Reject(Status::BadRequest)
        ));
    }
}
