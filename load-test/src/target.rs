//! Where connections go (`ws://` URLs on loopback) and where they come from (127.0.0.x).
//!
//! Only loopback targets are accepted: this tool generates enough traffic to hurt a real
//! network, and the environments it runs in allow load only on the local machine.

use std::net::{IpAddr, Ipv4Addr, SocketAddr, ToSocketAddrs};

use crate::error::LoadError;

/// One server endpoint and the room (URL path) to join there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub addr: SocketAddr,
    /// `host:port` as given, for the Host header.
    pub authority: String,
    /// Starts with `/`; `/` is the server's lobby.
    pub path: String,
}

impl Target {
    /// Parses `ws://host[:port][/path]` and resolves it; the host must be loopback.
    pub fn parse(url: &str) -> Result<Target, LoadError> {
        let bad = |reason: &str| LoadError::BadUrl {
            url: url.to_string(),
            reason: reason.to_string(),
        };
        let rest = url
            .strip_prefix("ws://")
            .ok_or_else(|| bad("only ws:// URLs are supported"))?;
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        };
        if authority.is_empty() {
            return Err(bad("no host"));
        }
        let with_port = if authority.ends_with(']') || !authority.contains(':') {
            format!("{authority}:80")
        } else {
            authority.to_string()
        };
        let addr = with_port
            .to_socket_addrs()
            .map_err(|e| bad(&format!("cannot resolve: {e}")))?
            .next()
            .ok_or_else(|| bad("host resolves to no address"))?;
        if !addr.ip().is_loopback() {
            return Err(bad(
                "not a loopback address (load goes to this machine only)",
            ));
        }
        Ok(Target {
            addr,
            authority: authority.to_string(),
            path: path.to_string(),
        })
    }

    /// The same server, another room.
    pub fn with_room(&self, room: &str) -> Target {
        let room = room.trim_start_matches('/');
        Target {
            path: format!("/{room}"),
            ..self.clone()
        }
    }

    pub fn url(&self) -> String {
        format!("ws://{}{}", self.authority, self.path)
    }
}

/// Spreads source addresses over 127.0.0.1..=127.0.0.K, so the number of connections to one
/// server port is not capped by one source address's ~28k ephemeral ports.
#[derive(Debug, Clone, Copy)]
pub struct SourceIps {
    count: u8,
}

impl SourceIps {
    pub fn new(count: usize) -> Result<SourceIps, LoadError> {
        match u8::try_from(count) {
            Ok(count @ 1..=254) => Ok(SourceIps { count }),
            _ => Err(LoadError::InvalidOptions(format!(
                "--source-ips must be 1..=254, got {count}"
            ))),
        }
    }

    /// The default for `connections`: one address per thousand connections (at most 64).
    /// Far fewer would do for port space alone (~28k ports each), but a new connection whose
    /// 4-tuple matches one of the server's TIME_WAIT sockets from an earlier run waits for a
    /// SYN retransmit (1 s): spreading sources makes such collisions rare.
    pub fn enough_for(connections: usize) -> SourceIps {
        SourceIps {
            count: connections.div_ceil(1000).clamp(1, 64) as u8,
        }
    }

    pub fn count(&self) -> usize {
        usize::from(self.count)
    }

    /// The source address of connection `index` to `target` (`None`: let the kernel pick,
    /// which is the only choice for IPv6 targets).
    pub fn for_connection(&self, index: usize, target: &SocketAddr) -> Option<IpAddr> {
        match target {
            SocketAddr::V4(v4) if v4.ip().is_loopback() => {
                let last = 1 + (index % self.count()) as u8;
                Some(IpAddr::V4(Ipv4Addr::new(127, 0, 0, last)))
            }
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_loopback_urls() {
        let t = Target::parse("ws://127.0.0.1:9000/room-1").unwrap();
        assert_eq!(t.addr, "127.0.0.1:9000".parse().unwrap());
        assert_eq!(t.path, "/room-1");
        assert_eq!(t.url(), "ws://127.0.0.1:9000/room-1");
        assert_eq!(Target::parse("ws://127.0.0.1:9000").unwrap().path, "/");
        assert_eq!(
            Target::parse("ws://[::1]:9000/x").unwrap().addr.port(),
            9000
        );
        assert_eq!(t.with_room("other").path, "/other");
    }

    #[test]
    fn refuses_other_schemes_and_remote_hosts() {
        assert!(Target::parse("wss://127.0.0.1:1/").is_err());
        assert!(Target::parse("http://127.0.0.1:1/").is_err());
        assert!(Target::parse("ws://10.0.0.1:80/").is_err());
        assert!(Target::parse("ws:///x").is_err());
    }

    #[test]
    fn spreads_sources_over_loopback() {
        let ips = SourceIps::new(3).unwrap();
        let target: SocketAddr = "127.0.0.1:1".parse().unwrap();
        let got: Vec<_> = (0..4)
            .map(|i| ips.for_connection(i, &target).unwrap())
            .collect();
        assert_eq!(got[0], "127.0.0.1".parse::<IpAddr>().unwrap());
        assert_eq!(got[2], "127.0.0.3".parse::<IpAddr>().unwrap());
        assert_eq!(got[3], got[0]);
        assert!(ips.for_connection(0, &"[::1]:1".parse().unwrap()).is_none());
        assert!(SourceIps::new(0).is_err());
        assert_eq!(SourceIps::enough_for(50).count(), 1);
        assert_eq!(SourceIps::enough_for(15_000).count(), 15);
        assert_eq!(SourceIps::enough_for(500_000).count(), 64);
    }
}
