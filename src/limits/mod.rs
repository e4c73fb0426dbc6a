//! Limits on what one client may take: open connections per address
//! (`--max-connections-per-ip`, [`PerIpLimit`], here), new connections per address per second
//! (`--max-connection-rate-per-ip`, [`ConnectionRate`]) and messages per connection per second
//! (`--max-publish-rate`, [`PublishMeter`]); the last two are token buckets ([`Rate`]).
//!
//! A leaf: the acceptor and the sessions apply these, and count what they refuse.
//!
//! [`PerIpLimit`]'s map is behind a mutex because two threads touch it — the acceptor takes a
//! place when it accepts and the shard that ends the connection gives it back — but only once
//! per connection opened or closed, never per message, and only when the limit is configured
//! at all.

mod connection_rate;
mod publish;
mod rate;

pub use connection_rate::{ConnectionRate, MAX_ADDRESSES, RetryAfter};
pub use publish::{FLOOD_FACTOR, FLOOD_SECONDS, Publish, PublishMeter};
pub use rate::{Rate, Spent};

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;

/// Counts open connections per peer address.
#[derive(Debug)]
pub struct PerIpLimit {
    max: usize,
    open: Mutex<HashMap<IpAddr, usize>>,
}

impl PerIpLimit {
    /// At most `max` connections per address.
    pub fn new(max: usize) -> Self {
        PerIpLimit {
            max,
            open: Mutex::new(HashMap::new()),
        }
    }

    /// Takes a place for `ip`; false when it already has `max`.
    pub fn try_acquire(&self, ip: IpAddr) -> bool {
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        let count = open.entry(ip).or_insert(0);
        if *count >= self.max {
            return false;
        }
        *count += 1;
        true
    }

    /// Gives back a place taken for `ip`.
    pub fn release(&self, ip: IpAddr) {
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(count) = open.get_mut(&ip) {
            *count -= 1;
            if *count == 0 {
                open.remove(&ip);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn places_are_per_address_and_come_back() {
        let limit = PerIpLimit::new(2);
        let a: IpAddr = "127.0.0.1".parse().unwrap();
        let b: IpAddr = "127.0.0.2".parse().unwrap();
        assert!(limit.try_acquire(a) && limit.try_acquire(a));
        assert!(!limit.try_acquire(a));
        assert!(limit.try_acquire(b));
        limit.release(a);
        assert!(limit.try_acquire(a));
    }
}
