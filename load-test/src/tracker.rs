//! Order bookkeeping for one (recipient, publisher) pair.
//!
//! The server promises per-sender order, so the common case is `seq == next` and costs one
//! comparison. A jump leaves *holes* (sequence numbers not yet seen); a later arrival that
//! fills a hole is *reordered*, any other old number is a *duplicate*. Holes still open at the
//! end are lost, and so is every number the publisher sent past the last one seen: the run
//! computes loss as `expected - unique deliveries`, so the tracker needs no per-message memory.

/// Holes remembered per pair. Past this, the oldest holes are forgotten: they stay counted as
/// lost, and if one arrives after all it is miscounted as a duplicate (documented limitation).
pub const MAX_HOLES: usize = 4096;

/// How one arrival relates to what the recipient saw before.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arrival {
    /// The next number: the normal case.
    InOrder,
    /// Ahead of the next number: `skipped` numbers are missing for now.
    Ahead { skipped: u64 },
    /// Fills an earlier hole.
    Reordered,
    /// Seen before (or older than every remembered hole).
    Duplicate,
}

/// Expected-next sequence number and open holes for one publisher, as seen by one recipient.
#[derive(Debug, Clone, Default)]
pub struct SeqTracker {
    next: u64,
    holes: Vec<u64>,
}

impl SeqTracker {
    #[inline]
    pub fn observe(&mut self, seq: u64) -> Arrival {
        if seq == self.next {
            self.next += 1;
            return Arrival::InOrder;
        }
        if seq > self.next {
            let skipped = seq - self.next;
            let remembered = skipped.min(MAX_HOLES as u64);
            self.holes.extend(seq - remembered..seq);
            if self.holes.len() > MAX_HOLES {
                let excess = self.holes.len() - MAX_HOLES;
                self.holes.drain(..excess);
            }
            self.next = seq + 1;
            return Arrival::Ahead { skipped };
        }
        match self.holes.iter().position(|&h| h == seq) {
            Some(i) => {
                self.holes.swap_remove(i);
                Arrival::Reordered
            }
            None => Arrival::Duplicate,
        }
    }

    /// Numbers skipped and not (yet) filled.
    pub fn open_holes(&self) -> usize {
        self.holes.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_order_gaps_fills_and_duplicates() {
        let mut t = SeqTracker::default();
        assert_eq!(t.observe(0), Arrival::InOrder);
        assert_eq!(t.observe(1), Arrival::InOrder);
        assert_eq!(t.observe(4), Arrival::Ahead { skipped: 2 });
        assert_eq!(t.open_holes(), 2);
        assert_eq!(t.observe(3), Arrival::Reordered);
        assert_eq!(t.observe(3), Arrival::Duplicate);
        assert_eq!(t.observe(4), Arrival::Duplicate);
        assert_eq!(t.observe(5), Arrival::InOrder);
        assert_eq!(t.open_holes(), 1);
    }

    #[test]
    fn holes_are_bounded() {
        let mut t = SeqTracker::default();
        t.observe(1_000_000);
        assert_eq!(t.open_holes(), MAX_HOLES);
        assert_eq!(t.observe(999_999), Arrival::Reordered);
        assert_eq!(t.observe(0), Arrival::Duplicate);
    }
}
