//! `--max-connection-rate-per-ip`: new connections per second from one address.
//!
//! The thread that accepts (the acceptor, or the `single` model's loop) owns the table
//! outright: no lock, and nothing else ever touches it. It is consulted once per accepted
//! connection, never per message.
//!
//! **Bounded.** An address whose bucket has refilled is the same as an address never seen,
//! so such entries are pruned: whenever the table has doubled since the last pruning (at
//! [`MIN_PRUNE_AT`] entries at the least). It never holds more than its cap
//! ([`MAX_ADDRESSES`] by default: about 6.5 MB at the most, 48 bytes and a control byte per
//! slot of a table of 131,072): when that many addresses are all still
//! refilling — a connection flood from a whole network, since each bucket is full again
//! `(N + burst) / N` seconds after its last connection — a new address is refused like an
//! address over its rate (fail closed, as nginx's `limit_req` does when its zone is full),
//! and a full table is pruned at most once per [`FULL_PRUNE_PAUSE`], so that the flood cannot
//! make every accept walk the whole table.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use super::rate::{Rate, Spent};

/// The most addresses tracked at once.
pub const MAX_ADDRESSES: usize = 65_536;

/// The table is first pruned at this size.
pub const MIN_PRUNE_AT: usize = 1024;

/// A full table is pruned again only this long after the last time.
pub const FULL_PRUNE_PAUSE: Duration = Duration::from_millis(100);

/// A connection over the rate: when to try again, in whole seconds (`Retry-After`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryAfter(pub u32);

/// One address's bucket, and when it last changed.
#[derive(Debug, Clone, Copy)]
struct Slot {
    spent: Spent,
    last: Instant,
}

/// New connections per address, against a [`Rate`].
#[derive(Debug)]
pub struct ConnectionRate {
    rate: Rate,
    max_addresses: usize,
    seen: HashMap<IpAddr, Slot>,
    /// Prune when the table reaches this size.
    prune_at: usize,
    last_prune: Option<Instant>,
}

impl ConnectionRate {
    /// At most `rate` new connections per address, tracking up to [`MAX_ADDRESSES`].
    pub fn new(rate: Rate) -> Self {
        Self::with_max_addresses(rate, MAX_ADDRESSES)
    }

    /// As [`ConnectionRate::new`], tracking up to `max_addresses` (at least 1).
    pub fn with_max_addresses(rate: Rate, max_addresses: usize) -> Self {
        let max_addresses = max_addresses.max(1);
        ConnectionRate {
            rate,
            max_addresses,
            seen: HashMap::new(),
            prune_at: MIN_PRUNE_AT.min(max_addresses),
            last_prune: None,
        }
    }

    /// A new connection from `ip` at `now`: admitted, or refused until [`RetryAfter`].
    pub fn try_admit(&mut self, ip: IpAddr, now: Instant) -> Result<(), RetryAfter> {
        let (refill, capacity) = (self.rate.refill(), self.rate.capacity());
        if let Some(slot) = self.seen.get_mut(&ip) {
            let elapsed = now.saturating_duration_since(slot.last);
            slot.last = now;
            if slot.spent.take(elapsed, refill, capacity) {
                return Ok(());
            }
            let wait = slot.spent.wait(refill, capacity);
            return Err(RetryAfter((wait.ceil() as u32).max(1)));
        }
        if !self.make_room(now) {
            return Err(RetryAfter(1));
        }
        let mut spent = Spent::default();
        // A full bucket holds at least one token (the rate is at least 1).
        let taken = spent.take(Duration::ZERO, refill, capacity);
        debug_assert!(taken);
        self.seen.insert(ip, Slot { spent, last: now });
        Ok(())
    }

    /// Addresses tracked now.
    pub fn tracked(&self) -> usize {
        self.seen.len()
    }

    /// Prunes if the table is due; whether a new address fits afterwards.
    fn make_room(&mut self, now: Instant) -> bool {
        if self.seen.len() < self.prune_at {
            return true;
        }
        let full = self.seen.len() >= self.max_addresses;
        let paused = self
            .last_prune
            .is_some_and(|at| now.saturating_duration_since(at) < FULL_PRUNE_PAUSE);
        if !(full && paused) {
            self.prune(now);
        }
        self.seen.len() < self.max_addresses
    }

    /// Forgets every address whose bucket is full again.
    fn prune(&mut self, now: Instant) {
        let refill = self.rate.refill();
        self.seen.retain(|_, slot| {
            slot.spent
                .after(now.saturating_duration_since(slot.last), refill)
                > 0.0
        });
        self.prune_at = (2 * self.seen.len())
            .max(MIN_PRUNE_AT)
            .min(self.max_addresses);
        // Give back what a flood made the table grow to.
        self.seen.shrink_to(self.prune_at);
        self.last_prune = Some(now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(last: u32) -> IpAddr {
        IpAddr::from(std::net::Ipv4Addr::from(0x0a00_0000 + last))
    }

    #[test]
    fn each_address_gets_rate_plus_burst_at_once_then_the_rate() {
        let t0 = Instant::now();
        let mut limit = ConnectionRate::new(Rate::new(2, Some(1)));
        for _ in 0..3 {
            assert_eq!(limit.try_admit(ip(1), t0), Ok(()));
        }
        assert_eq!(limit.try_admit(ip(1), t0), Err(RetryAfter(1)));
        // Another address has its own bucket.
        assert_eq!(limit.try_admit(ip(2), t0), Ok(()));
        // One token every 500 ms.
        let t1 = t0 + Duration::from_millis(250);
        assert_eq!(limit.try_admit(ip(1), t1), Err(RetryAfter(1)));
        let t2 = t0 + Duration::from_millis(500);
        assert_eq!(limit.try_admit(ip(1), t2), Ok(()));
        assert_eq!(limit.try_admit(ip(1), t2), Err(RetryAfter(1)));
    }

    #[test]
    fn retry_after_rounds_up_to_whole_seconds() {
        let t0 = Instant::now();
        let mut limit = ConnectionRate::new(Rate::new(1, Some(0)));
        assert_eq!(limit.try_admit(ip(1), t0), Ok(()));
        assert_eq!(limit.try_admit(ip(1), t0), Err(RetryAfter(1)));
        // A quarter of a token short: still a whole second, never 0.
        let t1 = t0 + Duration::from_millis(750);
        assert_eq!(limit.try_admit(ip(1), t1), Err(RetryAfter(1)));
        let t2 = t0 + Duration::from_secs(1);
        assert_eq!(limit.try_admit(ip(1), t2), Ok(()));
    }

    #[test]
    fn addresses_whose_bucket_refilled_are_pruned() {
        let t0 = Instant::now();
        let mut limit = ConnectionRate::new(Rate::new(1, Some(1)));
        for i in 0..MIN_PRUNE_AT as u32 {
            assert_eq!(limit.try_admit(ip(i), t0), Ok(()));
        }
        assert_eq!(limit.tracked(), MIN_PRUNE_AT);
        // One token each was taken; one second later every bucket is full again.
        let later = t0 + Duration::from_secs(1);
        assert_eq!(limit.try_admit(ip(1_000_000), later), Ok(()));
        assert_eq!(limit.tracked(), 1);
        // Forgetting them changed nothing: each may again take rate plus burst at once.
        assert_eq!(limit.try_admit(ip(5), later), Ok(()));
        assert_eq!(limit.try_admit(ip(5), later), Ok(()));
        assert_eq!(limit.try_admit(ip(5), later), Err(RetryAfter(1)));
    }

    #[test]
    fn busy_addresses_are_kept_and_the_table_doubles_before_pruning_again() {
        let t0 = Instant::now();
        let mut limit = ConnectionRate::new(Rate::new(1, Some(1)));
        for i in 0..MIN_PRUNE_AT as u32 {
            limit.try_admit(ip(i), t0).unwrap();
        }
        // Still refilling 500 ms later: pruning keeps them all.
        let t1 = t0 + Duration::from_millis(500);
        limit.try_admit(ip(1_000_000), t1).unwrap();
        assert_eq!(limit.tracked(), MIN_PRUNE_AT + 1);
        for i in 1..MIN_PRUNE_AT as u32 {
            limit.try_admit(ip(1_000_000 + i), t1).unwrap();
        }
        assert_eq!(limit.tracked(), 2 * MIN_PRUNE_AT);
    }

    #[test]
    fn a_full_table_refuses_new_addresses_until_some_are_stale() {
        let t0 = Instant::now();
        let mut limit = ConnectionRate::with_max_addresses(Rate::new(1, Some(0)), 4);
        for i in 0..4 {
            limit.try_admit(ip(i), t0).unwrap();
        }
        assert_eq!(limit.try_admit(ip(9), t0), Err(RetryAfter(1)));
        // Known addresses still get their rate.
        let t1 = t0 + Duration::from_secs(1);
        assert_eq!(limit.try_admit(ip(0), t1), Ok(()));
        // The others are full again: pruned, and the newcomer fits.
        assert_eq!(limit.try_admit(ip(9), t1), Ok(()));
        assert_eq!(limit.tracked(), 2);
    }

    #[test]
    fn a_full_table_is_pruned_at_most_once_per_pause() {
        let t0 = Instant::now();
        // 1000 a second: every bucket is full again a millisecond after its connection.
        let mut limit = ConnectionRate::with_max_addresses(Rate::new(1000, Some(0)), 4);
        for i in 0..4 {
            limit.try_admit(ip(i), t0).unwrap();
        }
        // Pruned at t0 (nothing stale yet) and refused.
        assert!(limit.try_admit(ip(9), t0).is_err());
        // Stale now, but a full table waits out the pause before walking itself again.
        let soon = t0 + FULL_PRUNE_PAUSE / 2;
        assert!(limit.try_admit(ip(10), soon).is_err());
        assert_eq!(limit.tracked(), 4);
        assert_eq!(limit.try_admit(ip(10), t0 + FULL_PRUNE_PAUSE), Ok(()));
        assert_eq!(limit.tracked(), 1);
    }
}
