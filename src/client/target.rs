//! The server to connect to: a validated `ws://` or `wss://` URL.
//!
//! Parsed with the `http` crate's [`Uri`] that tungstenite already uses (the `url` crate would
//! add an IDNA stack to the server's build for nothing a WebSocket client needs).

use std::fmt;

use tungstenite::http::Uri;

use super::error::ClientError;

/// A WebSocket URL known to have a scheme we speak, a host and a port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// The URL, with `/` as path when none was given.
    uri: Uri,
    /// `wss`: TLS.
    secure: bool,
    /// The host, without the brackets of an IPv6 literal.
    host: String,
    /// The port, or the scheme's default (80, 443).
    port: u16,
}

impl Target {
    /// Parses and checks `url`.
    pub fn parse(url: &str) -> Result<Target, ClientError> {
        let invalid = |reason: &str| ClientError::Url {
            url: url.to_string(),
            reason: reason.to_string(),
        };
        if !url.contains("://") {
            return Err(invalid(
                "it needs a scheme: ws://HOST/ROOM or wss://HOST/ROOM",
            ));
        }
        let uri: Uri = url.trim().parse().map_err(|e| invalid(&format!("{e}")))?;
        let secure = match uri.scheme_str() {
            Some("ws") => false,
            Some("wss") => true,
            Some(other) => return Err(invalid(&format!("scheme {other:?} is not ws or wss"))),
            None => return Err(invalid("it has no scheme")),
        };
        let authority = uri.authority().ok_or_else(|| invalid("it has no host"))?;
        let host = authority
            .host()
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string();
        if host.is_empty() {
            return Err(invalid("it has no host"));
        }
        // Read the port from the text: `Authority::port` silently drops one above 65535.
        let host_and_port = authority.as_str().rsplit('@').next().unwrap_or_default();
        let port = match host_and_port.strip_prefix(authority.host()) {
            None | Some("") => {
                if secure {
                    443
                } else {
                    80
                }
            }
            Some(colon_port) => colon_port
                .strip_prefix(':')
                .and_then(|p| p.parse::<u16>().ok())
                .filter(|p| *p != 0)
                .ok_or_else(|| invalid("the port is not a number from 1 to 65535"))?,
        };
        // The request line needs a path: `ws://host` means `ws://host/`.
        let path = uri.path_and_query().map_or("/", |p| p.as_str());
        let path = if path.is_empty() { "/" } else { path };
        let scheme = if secure { "wss" } else { "ws" };
        let uri: Uri = format!("{scheme}://{authority}{path}")
            .parse()
            .map_err(|e| invalid(&format!("{e}")))?;
        Ok(Target {
            uri,
            secure,
            host,
            port,
        })
    }

    /// The full URL (what the handshake request is built from).
    pub fn uri(&self) -> &Uri {
        &self.uri
    }

    /// `wss`: the connection runs over TLS.
    pub fn is_secure(&self) -> bool {
        self.secure
    }

    /// The host to resolve and to check the certificate against.
    pub fn host(&self) -> &str {
        &self.host
    }

    /// The TCP port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// This URL with the query parameter `name` set to `value` (any earlier `name=` removed,
    /// the other parameters kept in order). `value` goes in as it is: give it URL-safe.
    pub fn with_query_param(&self, name: &str, value: &str) -> Target {
        let path = self.uri.path();
        let mut query: Vec<&str> = self
            .uri
            .query()
            .unwrap_or_default()
            .split('&')
            .filter(|p| !p.is_empty() && p.split('=').next() != Some(name))
            .collect();
        let param = format!("{name}={value}");
        query.push(&param);
        let authority = self.uri.authority().map_or("", |a| a.as_str());
        let scheme = if self.secure { "wss" } else { "ws" };
        let url = format!("{scheme}://{authority}{path}?{}", query.join("&"));
        // Built from a valid URL and a safe parameter, so it parses; if not, keep this one.
        Target::parse(&url).unwrap_or_else(|e| {
            tracing::debug!("cannot set {name} in {self}: {e}");
            self.clone()
        })
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.uri)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_fill_in_the_port_and_path() {
        let t = Target::parse("ws://example.com").unwrap();
        assert_eq!(
            (t.host(), t.port(), t.is_secure()),
            ("example.com", 80, false)
        );
        assert_eq!(t.to_string(), "ws://example.com/");
        let t = Target::parse("wss://example.com/room?x=1").unwrap();
        assert_eq!((t.port(), t.is_secure()), (443, true));
        assert_eq!(t.uri().path_and_query().unwrap().as_str(), "/room?x=1");
    }

    #[test]
    fn ipv6_literals_lose_their_brackets_for_dialing() {
        let t = Target::parse("ws://user@[::1]:9001/general").unwrap();
        assert_eq!((t.host(), t.port()), ("::1", 9001));
        assert_eq!(t.to_string(), "ws://user@[::1]:9001/general");
        let t = Target::parse("wss://[::1]/").unwrap();
        assert_eq!((t.host(), t.port()), ("::1", 443));
    }

    #[test]
    fn a_query_parameter_is_added_or_replaced() {
        let t = Target::parse("ws://user@[::1]:9001/general?nick=ann&since=x:1&history=5").unwrap();
        assert_eq!(
            t.with_query_param("since", "ab:2").to_string(),
            "ws://user@[::1]:9001/general?nick=ann&history=5&since=ab:2"
        );
        let t = Target::parse("wss://example.com").unwrap();
        assert_eq!(
            t.with_query_param("since", "ab:2").to_string(),
            "wss://example.com/?since=ab:2"
        );
        // A parameter whose name only starts the same is another one.
        let t = Target::parse("ws://h/r?sinceX=1").unwrap();
        assert_eq!(
            t.with_query_param("since", "3").to_string(),
            "ws://h/r?sinceX=1&since=3"
        );
    }

    #[test]
    fn unusable_urls_say_why() {
        for (url, why) in [
            ("http://example.com/", "is not ws or wss"),
            ("example.com/room", "needs a scheme"),
            ("ws://:80/", "no host"),
            ("ws://host:0/", "port"),
            ("ws://host:99999/", "port"),
            ("ws://host:/", "port"),
            ("ws://a b/", ""),
            ("", ""),
        ] {
            match Target::parse(url) {
                Err(ClientError::Url { reason, .. }) => {
                    assert!(reason.contains(why), "{url}: {reason}")
                }
                other => panic!("{url}: {other:?}"),
            }
        }
    }
}
