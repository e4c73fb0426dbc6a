//! A publisher of the resume scenario: sends tokens on a fixed schedule (open loop, stamped
//! with the scheduled time, as in the engine), as a plain client or a `shardcast.v1` one.
//!
//! A plain client's text is relayed as it is; a v1 client's must be a `message` envelope,
//! `{"type":"message","text":"<token><padding>"}` (the token and the padding need no JSON
//! escaping). Either way a v1 subscriber finds the token in the envelope's `text`.

use crate::token::{MAX_TOKEN_LEN, PADDING, Token};

/// How a publisher speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    Plain,
    V1,
}

const V1_PREFIX: &[u8] = br#"{"type":"message","text":""#;
const V1_SUFFIX: &[u8] = br#""}"#;

/// A publisher's schedule and progress.
#[derive(Debug, Clone)]
pub struct Schedule {
    pub publisher: u32,
    pub next_due_ns: u64,
    pub interval_ns: u64,
    pub next_seq: u64,
}

impl Schedule {
    /// The next message if it is due at `now_ns` and scheduled before `end_ns`: its body
    /// (written into `out`), and the count of padding bytes to append after it.
    pub fn next_message(
        &mut self,
        now_ns: u64,
        end_ns: u64,
        size: usize,
        dialect: Dialect,
        out: &mut Vec<u8>,
    ) -> Option<usize> {
        if self.next_due_ns > now_ns || self.next_due_ns >= end_ns {
            return None;
        }
        let mut token = [0u8; MAX_TOKEN_LEN];
        let len = Token {
            publisher: self.publisher,
            seq: self.next_seq,
            sent_ns: self.next_due_ns,
        }
        .encode(&mut token);
        self.next_seq += 1;
        self.next_due_ns += self.interval_ns;
        let pad = size.saturating_sub(len);
        out.clear();
        match dialect {
            Dialect::Plain => {
                out.extend_from_slice(&token[..len]);
                Some(pad)
            }
            Dialect::V1 => {
                out.extend_from_slice(V1_PREFIX);
                out.extend_from_slice(&token[..len]);
                out.resize(out.len() + pad, PADDING);
                out.extend_from_slice(V1_SUFFIX);
                Some(0)
            }
        }
    }

    /// Skips a due message that cannot be sent (no connection): it still counts as due, so
    /// the schedule does not shift.
    pub fn skip(&mut self) {
        self.next_seq += 1;
        self.next_due_ns += self.interval_ns;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sends_on_schedule_in_either_dialect() {
        let mut s = Schedule {
            publisher: 2,
            next_due_ns: 100,
            interval_ns: 50,
            next_seq: 0,
        };
        let mut out = Vec::new();
        assert_eq!(
            s.next_message(99, 1_000, 20, Dialect::Plain, &mut out),
            None
        );
        assert_eq!(
            s.next_message(100, 1_000, 20, Dialect::Plain, &mut out),
            Some(7)
        );
        assert_eq!(out, b"SCL1:2:0:100;");
        let pad = s.next_message(200, 1_000, 20, Dialect::V1, &mut out);
        assert_eq!(pad, Some(0));
        let text = String::from_utf8(out.clone()).unwrap();
        assert_eq!(text, r#"{"type":"message","text":"SCL1:2:1:150;xxxxxxx"}"#);
        let parsed: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(parsed["text"].as_str().map(str::len), Some(20));
        // Due again at 200, but the schedule ends there.
        assert_eq!(s.next_message(300, 200, 20, Dialect::Plain, &mut out), None);
    }
}
