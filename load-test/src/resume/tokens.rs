//! One subscriber's books of the messages it received, by their token (publisher, seq),
//! across all of its connections.
//!
//! Offsets ([`super::offsets`]) are numbered per epoch, so they cannot say what a resume into
//! *another* epoch skipped or brought twice: a restarted server, or cluster nodes that each
//! number a room on their own. A token means the same on every node and in every epoch, and
//! every subscriber joins before the first message is sent, so every message sent is one it
//! should receive: `sent − distinct tokens` is what it missed, over the whole run.
//!
//! Seen seqs are a bitmap per publisher (a bit per message). Publishers beyond the run's
//! count and seqs beyond [`super::offsets::MAX_SPAN`] are not recorded but counted as out of
//! range: a token of this run never has them, and a server echoing absurd ones must not make
//! the generator allocate without bound.

use super::offsets::MAX_SPAN;

/// What the books say about one arriving token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arrival {
    First,
    /// Received before, on this or an earlier connection.
    Again,
    OutOfRange,
}

#[derive(Debug)]
pub struct TokenLog {
    /// Per publisher, a bit per seq received.
    seen: Vec<Vec<u64>>,
    /// Distinct tokens received.
    pub distinct: u64,
    /// Tokens received more than once (each repeat counts).
    pub again: u64,
    pub out_of_range: u64,
}

impl TokenLog {
    /// Books for a run with `publishers` publishers.
    pub fn new(publishers: usize) -> TokenLog {
        TokenLog {
            seen: vec![Vec::new(); publishers],
            distinct: 0,
            again: 0,
            out_of_range: 0,
        }
    }

    pub fn observe(&mut self, publisher: u32, seq: u64) -> Arrival {
        let Some(bits) = self
            .seen
            .get_mut(publisher as usize)
            .filter(|_| seq < MAX_SPAN)
        else {
            self.out_of_range += 1;
            return Arrival::OutOfRange;
        };
        let (word, bit) = ((seq / 64) as usize, 1u64 << (seq % 64));
        if word >= bits.len() {
            bits.resize(word + 1, 0);
        }
        if bits[word] & bit != 0 {
            self.again += 1;
            return Arrival::Again;
        }
        bits[word] |= bit;
        self.distinct += 1;
        Arrival::First
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_firsts_and_repeats_per_publisher() {
        let mut log = TokenLog::new(2);
        assert_eq!(log.observe(0, 5), Arrival::First);
        assert_eq!(
            log.observe(1, 5),
            Arrival::First,
            "another publisher's seq 5"
        );
        assert_eq!(log.observe(0, 5), Arrival::Again);
        assert_eq!(log.observe(0, 200), Arrival::First);
        assert_eq!((log.distinct, log.again), (3, 1));
    }

    #[test]
    fn absurd_tokens_are_counted_not_recorded() {
        let mut log = TokenLog::new(1);
        assert_eq!(log.observe(1, 0), Arrival::OutOfRange);
        assert_eq!(log.observe(u32::MAX, 0), Arrival::OutOfRange);
        assert_eq!(log.observe(0, MAX_SPAN), Arrival::OutOfRange);
        assert_eq!(log.observe(0, MAX_SPAN - 1), Arrival::First);
        assert_eq!((log.distinct, log.out_of_range), (1, 3));
    }
}
