//! What a joining client asks of its room's history, and what it gets: the epoch token, the
//! `since` position of a resume, the [`Ask`], and the [`Start`] the room's sequencer answers.

use std::fmt;
use std::sync::Arc;

use crate::chat::Outgoing;

/// A history's epoch: a random token that changes whenever the server cannot vouch for the
/// continuity of a room's offsets (a restart, an eviction, an expiry). Shown as 16 hex digits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Epoch(pub u64);

impl Epoch {
    /// Reads 16 hex digits.
    pub fn parse(text: &str) -> Option<Epoch> {
        if text.len() != 16 || !text.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        u64::from_str_radix(text, 16).ok().map(Epoch)
    }
}

impl fmt::Display for Epoch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

/// Where a resuming client left off: the epoch it knew and the offset of the last message it
/// has (or the welcome's offset if none came).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Since {
    /// The epoch of the client's history; `None` when what it sent was no epoch at all (it
    /// matches none: such a resume is never recovered).
    pub epoch: Option<Epoch>,
    /// The offset of the last message it has.
    pub offset: u64,
}

impl Since {
    /// Reads the query form `EPOCH:OFFSET` (16 hex digits, a colon, a decimal offset).
    pub fn parse(text: &str) -> Option<Since> {
        let (epoch, offset) = text.split_once(':')?;
        // `u64::from_str` would also take a leading `+`.
        if offset.is_empty() || !offset.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        Some(Since {
            epoch: Some(Epoch::parse(epoch)?),
            offset: offset.parse().ok()?,
        })
    }
}

/// What a client asks of the history when it joins.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Ask {
    /// The last messages to replay (already capped at `--history-size`).
    pub history: u32,
    /// Resume after this position.
    pub since: Option<Since>,
}

/// Where a member starts in its room, as the room's sequencer decided at the moment the
/// member was added: every message after `offset` reaches it live, `replay` before them.
#[derive(Debug, Clone)]
pub struct Start {
    /// The history's epoch.
    pub epoch: Epoch,
    /// The room's latest offset at the join.
    pub offset: u64,
    /// `Some(true)`: `replay` is exactly every message after the client's `since`;
    /// `Some(false)`: the server cannot vouch for that; `None`: no resume was asked.
    pub recovered: Option<bool>,
    /// The messages to send after the welcome, oldest first.
    pub replay: Vec<Arc<Outgoing>>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn since_reads_epoch_colon_offset_and_nothing_else() {
        let since = Since::parse("00000000000000ff:42").unwrap();
        assert_eq!(since.epoch, Some(Epoch(255)));
        assert_eq!(since.offset, 42);
        assert_eq!(Epoch(255).to_string(), "00000000000000ff");
        for bad in [
            "",
            "ff:1",
            "00000000000000ff",
            "00000000000000ff:",
            "00000000000000ff:-1",
            "00000000000000ff:+1",
            "00000000000000ff:1x",
            "0000000000000xff:1",
            "00000000000000ff:99999999999999999999999",
            "+0000000000000ff:1",
        ] {
            assert_eq!(Since::parse(bad), None, "{bad}");
        }
    }
}
