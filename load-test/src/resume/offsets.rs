//! One subscriber's books of the room offsets it received, across all of its connections.
//!
//! An offset seen twice is a *duplicate*; an offset never seen between the start of the books
//! and the highest offset seen is *lost* (a hole). Messages after the highest offset are not
//! counted here: they are the tail, still on their way or not sent yet. The books start at the
//! first welcome's `offset + 1`, the first message the subscriber can expect.
//!
//! Offsets are numbered per history *epoch*: a welcome with another epoch (a restarted
//! server, an evicted room) starts a new segment of the books, since the numbers of the old
//! one mean nothing in the new one.
//!
//! Seen offsets are a bitmap from the segment's start: a bit per message, so a million
//! messages cost 128 KB per subscriber. Offsets further than [`MAX_SPAN`] from the start are
//! not recorded but counted as out of range (a server sending absurd offsets must not make the
//! generator allocate without bound: at most 2 MB per subscriber).

/// Most offsets one segment can record (28 minutes at 10,000 msg/s).
pub const MAX_SPAN: u64 = 1 << 24;

/// What the books say about one arriving offset.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Seen {
    /// First arrival.
    New,
    /// Seen before on this or an earlier connection.
    Duplicate,
    /// Before the start of the books (nothing the subscriber could expect).
    Early,
    /// Beyond [`MAX_SPAN`] from the start: not recorded.
    OutOfRange,
    /// No welcome has opened the books yet.
    Unopened,
}

/// Counts over all segments.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OffsetTotals {
    /// Offsets received at least once.
    pub unique: u64,
    pub duplicates: u64,
    /// Holes between each segment's start and its highest offset.
    pub lost: u64,
    pub early: u64,
    pub out_of_range: u64,
}

impl OffsetTotals {
    fn add(&mut self, other: &OffsetTotals) {
        self.unique += other.unique;
        self.duplicates += other.duplicates;
        self.lost += other.lost;
        self.early += other.early;
        self.out_of_range += other.out_of_range;
    }
}

/// The offsets of one epoch.
#[derive(Debug)]
struct Segment {
    epoch: String,
    /// The first offset the subscriber could expect.
    start: u64,
    seen: Vec<u64>,
    highest: Option<u64>,
    counts: OffsetTotals,
}

impl Segment {
    fn new(epoch: &str, start: u64) -> Segment {
        Segment {
            epoch: epoch.to_string(),
            start,
            seen: Vec::new(),
            highest: None,
            counts: OffsetTotals::default(),
        }
    }

    fn observe(&mut self, offset: u64) -> Seen {
        let Some(index) = offset.checked_sub(self.start) else {
            self.counts.early += 1;
            return Seen::Early;
        };
        if index >= MAX_SPAN {
            self.counts.out_of_range += 1;
            return Seen::OutOfRange;
        }
        let (word, bit) = ((index / 64) as usize, 1u64 << (index % 64));
        if word >= self.seen.len() {
            self.seen.resize(word + 1, 0);
        }
        if self.seen[word] & bit != 0 {
            self.counts.duplicates += 1;
            return Seen::Duplicate;
        }
        self.seen[word] |= bit;
        self.counts.unique += 1;
        self.highest = self.highest.max(Some(offset));
        Seen::New
    }

    fn totals(&self) -> OffsetTotals {
        let span = self.highest.map_or(0, |h| h - self.start + 1);
        OffsetTotals {
            lost: span - self.counts.unique,
            ..self.counts
        }
    }
}

/// A subscriber's offsets, all epochs.
#[derive(Debug, Default)]
pub struct OffsetLog {
    /// Totals of the segments of earlier epochs.
    closed: OffsetTotals,
    current: Option<Segment>,
}

impl OffsetLog {
    /// A welcome arrived: `offset` is the room's latest offset at the join, and `replay`
    /// messages from history follow, ending at `offset`. In the epoch the books already
    /// follow nothing changes: the numbering continues (and what a failed resume skipped
    /// shows as holes). Another epoch starts a new segment at the first message the
    /// subscriber can expect: the first replayed one, or the first after the join.
    pub fn welcome(&mut self, epoch: &str, offset: u64, replay: u64) {
        if self.current.as_ref().is_some_and(|s| s.epoch == epoch) {
            return;
        }
        if let Some(old) = self.current.take() {
            self.closed.add(&old.totals());
        }
        let start = (offset + 1).saturating_sub(replay);
        self.current = Some(Segment::new(epoch, start));
    }

    pub fn observe(&mut self, offset: u64) -> Seen {
        match &mut self.current {
            Some(segment) => segment.observe(offset),
            None => Seen::Unopened,
        }
    }

    /// The highest offset seen in the current epoch.
    pub fn highest(&self) -> Option<u64> {
        self.current.as_ref().and_then(|s| s.highest)
    }

    pub fn totals(&self) -> OffsetTotals {
        let mut totals = self.closed;
        if let Some(segment) = &self.current {
            totals.add(&segment.totals());
        }
        totals
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EPOCH: &str = "9f3a0c1b2d4e5f60";

    #[test]
    fn a_clean_resume_has_no_holes_and_no_duplicates() {
        let mut log = OffsetLog::default();
        log.welcome(EPOCH, 40, 0);
        for offset in 41..=45 {
            assert_eq!(log.observe(offset), Seen::New);
        }
        // Dropped after 45; the resume replays 46..=48, then live messages follow.
        log.welcome(EPOCH, 48, 3);
        for offset in 46..=50 {
            assert_eq!(log.observe(offset), Seen::New);
        }
        assert_eq!(
            log.totals(),
            OffsetTotals {
                unique: 10,
                ..OffsetTotals::default()
            }
        );
        assert_eq!(log.highest(), Some(50));
    }

    #[test]
    fn holes_are_lost_and_repeats_are_duplicates() {
        let mut log = OffsetLog::default();
        log.welcome(EPOCH, 0, 0);
        for offset in [1, 2, 3, 6, 7] {
            log.observe(offset);
        }
        // A resume that replays too much: 6 and 7 again; 4 and 5 never come.
        log.welcome(EPOCH, 8, 3);
        assert_eq!(log.observe(6), Seen::Duplicate);
        assert_eq!(log.observe(7), Seen::Duplicate);
        assert_eq!(log.observe(8), Seen::New);
        let totals = log.totals();
        assert_eq!((totals.unique, totals.duplicates, totals.lost), (6, 2, 2));
    }

    #[test]
    fn the_tail_is_not_lost_and_the_start_is_the_first_welcome() {
        let mut log = OffsetLog::default();
        // Joined when the room was at 100: 1..=100 were never expected.
        log.welcome(EPOCH, 100, 0);
        assert_eq!(log.totals(), OffsetTotals::default());
        log.observe(101);
        assert_eq!(log.observe(100), Seen::Early);
        assert_eq!(log.totals().lost, 0);
        assert_eq!(log.totals().early, 1);
        // A missing first message is a hole once a later one arrives.
        let mut log = OffsetLog::default();
        log.welcome(EPOCH, 100, 0);
        log.observe(102);
        assert_eq!(log.totals().lost, 1);
    }

    #[test]
    fn a_new_epoch_starts_new_books() {
        let mut log = OffsetLog::default();
        log.welcome(EPOCH, 0, 0);
        for offset in [1, 2, 4] {
            log.observe(offset);
        }
        // The server restarted: the new epoch's history (5 messages up to 5) is replayed.
        log.welcome("0000000000000001", 5, 5);
        for offset in 1..=6 {
            assert_eq!(log.observe(offset), Seen::New, "offset {offset}");
        }
        let totals = log.totals();
        assert_eq!((totals.unique, totals.duplicates, totals.lost), (9, 0, 1));
        assert_eq!(log.highest(), Some(6));
    }

    #[test]
    fn absurd_offsets_are_counted_not_recorded() {
        let mut log = OffsetLog::default();
        assert_eq!(log.observe(1), Seen::Unopened);
        log.welcome(EPOCH, 0, 0);
        assert_eq!(log.observe(u64::MAX), Seen::OutOfRange);
        assert_eq!(
            log.observe(MAX_SPAN),
            Seen::New,
            "the last recordable offset"
        );
        assert_eq!(log.totals().out_of_range, 1);
    }
}
