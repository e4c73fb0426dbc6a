//! How to open a connection and how to keep it: everything the command line decides.

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use tungstenite::http::{HeaderName, HeaderValue};

use super::error::ClientError;

/// Options for opening connections (the same for every connection of a run, except that
/// interactive `connect URL PROTOCOL` overrides the subprotocol).
#[derive(Debug, Clone)]
pub struct ConnectOptions {
    /// Extra request headers (`--header`), sent in order. One naming a header the handshake
    /// sets itself (`Host`, `Sec-WebSocket-Key`, ...) replaces it.
    pub headers: Vec<Header>,
    /// The `Origin` header (`--origin`); none by default, like other non-browser clients.
    pub origin: Option<String>,
    /// The subprotocol to ask for (`Sec-WebSocket-Protocol`).
    pub subprotocol: Option<String>,
    /// TLS client configuration for `wss` URLs (see [`super::tls::client_config`]).
    pub tls: Arc<rustls::ClientConfig>,
    /// Deadline for each step of opening: TCP connect, TLS handshake, HTTP upgrade.
    pub connect_timeout: Duration,
}

/// How an open connection is kept.
#[derive(Debug, Clone, Copy)]
pub struct LinkSettings {
    /// Send a ping this often (`--ping-interval`); a peer that sends nothing back before the
    /// next one is due is taken for dead. `None`: no pings (the server pings us anyway).
    pub ping_interval: Option<Duration>,
    /// After a close frame was sent or received, the time the close handshake has to finish
    /// before the socket is dropped anyway.
    pub close_timeout: Duration,
}

impl LinkSettings {
    /// Close handshakes normally finish in one round trip; this bounds a silent peer.
    pub const DEFAULT_CLOSE_TIMEOUT: Duration = Duration::from_secs(3);
}

impl Default for LinkSettings {
    fn default() -> Self {
        LinkSettings {
            ping_interval: None,
            close_timeout: Self::DEFAULT_CLOSE_TIMEOUT,
        }
    }
}

/// One `Name: value` request header, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    /// The name (case-insensitive).
    pub name: HeaderName,
    /// The value, surrounding spaces removed.
    pub value: HeaderValue,
}

impl FromStr for Header {
    type Err = ClientError;

    fn from_str(s: &str) -> Result<Header, ClientError> {
        let bad = || ClientError::Header(s.to_string());
        let (name, value) = s.split_once(':').ok_or_else(bad)?;
        Ok(Header {
            name: HeaderName::from_bytes(name.trim().as_bytes()).map_err(|_| bad())?,
            value: HeaderValue::from_str(value.trim()).map_err(|_| bad())?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_parse_name_and_trimmed_value() {
        let h: Header = "X-Token:  abc def ".parse().unwrap();
        assert_eq!(h.name.as_str(), "x-token");
        assert_eq!(h.value, "abc def");
        let empty: Header = "X-Empty:".parse().unwrap();
        assert_eq!(empty.value, "");
    }

    #[test]
    fn malformed_headers_are_refused() {
        for bad in ["no colon", ": value", "bad name: v", "X: line\nbreak"] {
            assert!(bad.parse::<Header>().is_err(), "{bad:?}");
        }
    }
}
