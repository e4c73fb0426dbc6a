//! The client side of the WebSocket opening handshake, done with tungstenite's pieces.
//!
//! tungstenite builds the request (`generate_request`) and parses the response
//! (`Response::try_parse`), but the load generator drives the bytes itself: tungstenite's
//! handshake machine would keep any frames that arrive right behind the `101` inside a
//! `WebSocket` it owns, and the hot path parses frames from its own buffer instead.

use tungstenite::client::IntoClientRequest;
use tungstenite::handshake::client::{Response, generate_request};
use tungstenite::handshake::derive_accept_key;
use tungstenite::handshake::machine::TryParse;
use tungstenite::http::{HeaderValue, StatusCode};

/// Response heads longer than this are refused rather than buffered without bound.
pub const MAX_RESPONSE_HEAD: usize = 16 * 1024;

/// Why an upgrade failed: the connection is counted as a failed connect.
#[derive(Debug, thiserror::Error)]
pub enum HandshakeError {
    #[error("could not build the upgrade request: {0}")]
    Request(#[source] tungstenite::Error),
    #[error("malformed upgrade response: {0}")]
    Response(#[source] tungstenite::Error),
    #[error("upgrade refused with HTTP {0}")]
    Refused(u16),
    #[error("upgrade response lacks `{0}`")]
    MissingHeader(&'static str),
    #[error("Sec-WebSocket-Accept does not match the key")]
    WrongAccept,
    #[error("upgrade response head exceeds {MAX_RESPONSE_HEAD} bytes")]
    HeadTooLong,
    /// The server upgraded without the subprotocol asked for: it would speak another dialect.
    #[error("the server did not accept subprotocol {0}")]
    SubprotocolRefused(String),
}

/// An upgrade request ready to send, and what its answer must say.
#[derive(Debug)]
pub struct Upgrade {
    pub request: Vec<u8>,
    expected_accept: String,
    /// The subprotocol asked for, which the `101` must name.
    subprotocol: Option<String>,
}

impl Upgrade {
    /// Builds `GET <path>` for `ws://<authority><path>` (the path may carry a query).
    pub fn new(authority: &str, path: &str) -> Result<Upgrade, HandshakeError> {
        Upgrade::with_subprotocol(authority, path, None)
    }

    /// Like [`Upgrade::new`], asking for `subprotocol` (`Sec-WebSocket-Protocol`), e.g.
    /// `shardcast.v1`.
    pub fn with_subprotocol(
        authority: &str,
        path: &str,
        subprotocol: Option<&str>,
    ) -> Result<Upgrade, HandshakeError> {
        let mut request = format!("ws://{authority}{path}")
            .into_client_request()
            .map_err(HandshakeError::Request)?;
        if let Some(name) = subprotocol {
            let value = HeaderValue::from_str(name)
                .map_err(|e| HandshakeError::Request(tungstenite::Error::HttpFormat(e.into())))?;
            request
                .headers_mut()
                .insert("Sec-WebSocket-Protocol", value);
        }
        let (request, key) = generate_request(request).map_err(HandshakeError::Request)?;
        Ok(Upgrade {
            request,
            expected_accept: derive_accept_key(key.as_bytes()),
            subprotocol: subprotocol.map(str::to_string),
        })
    }

    /// Checks the response head at the start of `received`: `Ok(None)` while incomplete,
    /// otherwise the head's length (bytes after it are already WebSocket frames).
    pub fn check_response(&self, received: &[u8]) -> Result<Option<usize>, HandshakeError> {
        let Some((head_len, response)) =
            Response::try_parse(received).map_err(HandshakeError::Response)?
        else {
            if received.len() > MAX_RESPONSE_HEAD {
                return Err(HandshakeError::HeadTooLong);
            }
            return Ok(None);
        };
        if response.status() != StatusCode::SWITCHING_PROTOCOLS {
            return Err(HandshakeError::Refused(response.status().as_u16()));
        }
        let header = |name: &'static str| {
            response
                .headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .ok_or(HandshakeError::MissingHeader(name))
        };
        if !header("Upgrade")?.eq_ignore_ascii_case("websocket") {
            return Err(HandshakeError::MissingHeader("Upgrade: websocket"));
        }
        if !header("Connection")?
            .split(',')
            .any(|t| t.trim().eq_ignore_ascii_case("upgrade"))
        {
            return Err(HandshakeError::MissingHeader("Connection: upgrade"));
        }
        if header("Sec-WebSocket-Accept")? != self.expected_accept {
            return Err(HandshakeError::WrongAccept);
        }
        if let Some(asked) = &self.subprotocol {
            let chosen = response
                .headers()
                .get("Sec-WebSocket-Protocol")
                .and_then(|v| v.to_str().ok());
            if chosen.map(str::trim) != Some(asked.as_str()) {
                return Err(HandshakeError::SubprotocolRefused(asked.clone()));
            }
        }
        Ok(Some(head_len))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key_of(request: &[u8]) -> String {
        let text = String::from_utf8_lossy(request);
        text.lines()
            .find_map(|l| l.strip_prefix("Sec-WebSocket-Key: "))
            .unwrap()
            .trim()
            .to_string()
    }

    #[test]
    fn accepts_a_valid_101_and_keeps_trailing_frames() {
        let upgrade = Upgrade::new("127.0.0.1:9", "/room").unwrap();
        let text = String::from_utf8_lossy(&upgrade.request).to_string();
        assert!(text.starts_with("GET /room HTTP/1.1\r\n"), "{text}");
        let accept = derive_accept_key(key_of(&upgrade.request).as_bytes());
        let response = format!(
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\n\r\n"
        );
        let mut wire = response.into_bytes();
        wire.extend_from_slice(b"\x81\x00");
        let head = upgrade.check_response(&wire).unwrap().unwrap();
        assert_eq!(&wire[head..], b"\x81\x00");
        assert!(upgrade.check_response(&wire[..20]).unwrap().is_none());
    }

    #[test]
    fn asks_for_a_subprotocol_and_insists_on_it() {
        let upgrade = Upgrade::with_subprotocol(
            "127.0.0.1:9",
            "/r?nick=a&since=00ff:3",
            Some("shardcast.v1"),
        )
        .unwrap();
        let text = String::from_utf8_lossy(&upgrade.request).to_string();
        assert!(
            text.starts_with("GET /r?nick=a&since=00ff:3 HTTP/1.1\r\n"),
            "{text}"
        );
        assert!(
            text.contains("Sec-WebSocket-Protocol: shardcast.v1\r\n"),
            "{text}"
        );
        let accept = derive_accept_key(key_of(&upgrade.request).as_bytes());
        let plain = format!(
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\n\r\n"
        );
        assert!(matches!(
            upgrade.check_response(plain.as_bytes()),
            Err(HandshakeError::SubprotocolRefused(_))
        ));
        let v1 = plain.replace(
            "\r\n\r\n",
            "\r\nSec-WebSocket-Protocol: shardcast.v1\r\n\r\n",
        );
        assert!(upgrade.check_response(v1.as_bytes()).unwrap().is_some());
    }

    #[test]
    fn refusals_are_reported() {
        let upgrade = Upgrade::new("127.0.0.1:9", "/").unwrap();
        let err = upgrade
            .check_response(b"HTTP/1.1 503 Service Unavailable\r\n\r\n")
            .unwrap_err();
        assert!(matches!(err, HandshakeError::Refused(503)));
        let wrong = b"HTTP/1.1 101 OK\r\nUpgrade: websocket\r\nConnection: upgrade\r\nSec-WebSocket-Accept: nope\r\n\r\n";
        assert!(matches!(
            upgrade.check_response(wrong),
            Err(HandshakeError::WrongAccept)
        ));
    }
}
