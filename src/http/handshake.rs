//! Validating a WebSocket upgrade request (RFC 6455 §4.2.1) and writing the `101` answer.

use base64::Engine;
use tungstenite::handshake::derive_accept_key;

use crate::http::request::RequestHead;
use crate::http::{Response, SERVER_NAME, Status, error_response};

/// Why an upgrade request was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rejection {
    /// Not HTTP/1.1 or later.
    OldHttpVersion,
    /// No (or more than one) `Host` header.
    MissingHost,
    /// `Connection` does not list `upgrade`.
    NoConnectionUpgrade,
    /// `Sec-WebSocket-Key` is missing, repeated or not 16 bytes of base64.
    BadKey,
    /// `Sec-WebSocket-Version` is not 13.
    UnsupportedVersion,
}

impl Rejection {
    /// The HTTP answer for this refusal (the connection is closed after it).
    pub fn response(self) -> Response {
        match self {
            Rejection::UnsupportedVersion => {
                error_response(Status::UpgradeRequired, &[("Sec-WebSocket-Version", "13")])
            }
            _ => error_response(Status::BadRequest, &[]),
        }
    }
}

/// Checks an upgrade request and returns the `101 Switching Protocols` answer, naming
/// `subprotocol` when one was chosen.
pub fn accept(head: &RequestHead, subprotocol: Option<&str>) -> Result<Vec<u8>, Rejection> {
    if head.minor_version < 1 {
        return Err(Rejection::OldHttpVersion);
    }
    if head.host_count != 1 {
        return Err(Rejection::MissingHost);
    }
    if !head.connection_upgrade {
        return Err(Rejection::NoConnectionUpgrade);
    }
    if head.ws_version.as_deref() != Some("13") {
        return Err(Rejection::UnsupportedVersion);
    }
    let key = match (&head.ws_key, head.ws_key_count) {
        (Some(key), 1) if is_valid_key(key) => key,
        _ => return Err(Rejection::BadKey),
    };
    let accept = derive_accept_key(key.as_bytes());
    let protocol = match subprotocol {
        Some(name) => format!("Sec-WebSocket-Protocol: {name}\r\n"),
        None => String::new(),
    };
    Ok(format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Accept: {accept}\r\n{protocol}Server: {SERVER_NAME}\r\n\r\n"
    )
    .into_bytes())
}

/// A key is the base64 encoding of exactly 16 bytes.
fn is_valid_key(key: &str) -> bool {
    key.len() == 24
        && base64::engine::general_purpose::STANDARD
            .decode(key)
            .is_ok_and(|raw| raw.len() == 16)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn upgrade() -> RequestHead {
        RequestHead {
            method: Some(crate::http::request::Method::Get),
            target: "/".into(),
            minor_version: 1,
            host_count: 1,
            connection_upgrade: true,
            upgrade: Some("websocket".into()),
            ws_key: Some("dGhlIHNhbXBsZSBub25jZQ==".into()),
            ws_key_count: 1,
            ws_version: Some("13".into()),
            ..RequestHead::default()
        }
    }

    #[test]
    fn the_rfc_example_key_gets_the_rfc_accept_value() {
        let answer = String::from_utf8(accept(&upgrade(), None).unwrap()).unwrap();
        assert!(answer.starts_with("HTTP/1.1 101 "));
        assert!(answer.contains("Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"));
        assert!(!answer.contains("Sec-WebSocket-Protocol"));
        let answer = String::from_utf8(accept(&upgrade(), Some("shardcast.v1")).unwrap()).unwrap();
        assert!(answer.contains("\r\nSec-WebSocket-Protocol: shardcast.v1\r\n"));
    }

    #[test]
    fn each_defect_has_its_own_refusal() {
        type Spoil = fn(&mut RequestHead);
        let cases: Vec<(Spoil, Rejection)> = vec![
            (|h| h.minor_version = 0, Rejection::OldHttpVersion),
            (|h| h.host_count = 0, Rejection::MissingHost),
            (
                |h| h.connection_upgrade = false,
                Rejection::NoConnectionUpgrade,
            ),
            (
                |h| h.ws_version = Some("8".into()),
                Rejection::UnsupportedVersion,
            ),
            (|h| h.ws_version = None, Rejection::UnsupportedVersion),
            (|h| h.ws_key = None, Rejection::BadKey),
            (|h| h.ws_key = Some("c2hvcnQ=".into()), Rejection::BadKey),
            (
                |h| h.ws_key = Some("!!!!!!!!!!!!!!!!!!!!!!==".into()),
                Rejection::BadKey,
            ),
            (|h| h.ws_key_count = 2, Rejection::BadKey),
        ];
        for (spoil, expected) in cases {
            let mut head = upgrade();
            spoil(&mut head);
            assert_eq!(accept(&head, None), Err(expected));
        }
    }
}
