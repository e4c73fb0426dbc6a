//! Resuming a `shardcast.v1` room across reconnections (pipe mode's `--reconnect`), so that
//! no message is printed twice and a loss is never silent.
//!
//! It follows the recipe of docs/protocol.md: keep the room's history `epoch` from the
//! welcome and the `offset` of the last message received (the welcome's own `offset` once its
//! replay has arrived, so a quiet room resumes from where it stood); reconnect with
//! `since=EPOCH:OFFSET`. A welcome with `"recovered":true` means its replay is exactly what was
//! missed; any other welcome after the first means messages may have been missed, which
//! [`Admit::Gap`] reports so that the caller can say so.
//!
//! Invariant: within one epoch the offsets printed only grow. A message whose offset is not
//! above the last one of its epoch was printed already (by an earlier connection) and is
//! skipped: [`Admit::Duplicate`]. The server never sends one when it resumes correctly; this
//! is what makes "never twice" hold even if it did, and also after a welcome that could not
//! vouch for the resume but kept the epoch (the history it replays may overlap what was
//! printed: offsets of one epoch never restart, so the overlap is found by offset).
//!
//! Only text envelopes are read (a `welcome` or a `message`); anything else, binary messages
//! and text that is not an envelope are printed as they are.

use serde::Deserialize;

use super::target::Target;

/// Where the client stands in a room's history: what `since=` names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Position {
    /// The room's history epoch (16 hex digits, from a welcome).
    pub epoch: String,
    /// The offset of the last message of `epoch` the client has.
    pub offset: u64,
}

impl std::fmt::Display for Position {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.epoch, self.offset)
    }
}

/// What to do with one received text message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Admit {
    /// Print it.
    Print,
    /// A message printed before (its offset): skip it.
    Duplicate(u64),
    /// A welcome that does not vouch for what was missed since the last connection: say so
    /// (why, in words), then print it.
    Gap(String),
}

/// The resume state of one pipe-mode run, kept across its connections.
#[derive(Debug, Default)]
pub struct Resume {
    /// The room's epoch and last offset; `None` before the first welcome, or when the server
    /// keeps no history (its welcome has no epoch).
    position: Option<Position>,
    /// The position the current connection asked to resume from.
    asked: Option<Position>,
    /// A welcome arrived on some connection of this run.
    joined: bool,
    /// History messages still to come after the current connection's welcome.
    replay_left: u64,
    /// That welcome's offset, taken as the position once its replay has arrived.
    welcome_offset: Option<u64>,
    /// The last welcome's token for taking the nickname back from a connection the server
    /// has not yet seen go (`reclaim=`, docs/protocol.md "Unique nicknames").
    reclaim: Option<String>,
}

/// The fields of a server envelope that resuming needs (docs/protocol.md).
#[derive(Debug, Deserialize)]
struct Envelope<'a> {
    #[serde(rename = "type", borrow)]
    kind: &'a str,
    #[serde(default)]
    epoch: Option<String>,
    #[serde(default)]
    offset: Option<u64>,
    #[serde(default)]
    replay: Option<u64>,
    #[serde(default)]
    recovered: Option<bool>,
    #[serde(default)]
    reclaim: Option<String>,
}

impl Resume {
    /// The URL for the next connection: `base` with `since=` set when there is a position to
    /// resume from. Remembers what it asked for.
    pub fn target(&mut self, base: &Target) -> Target {
        self.asked = self.position.clone();
        self.replay_left = 0;
        self.welcome_offset = None;
        let target = match &self.asked {
            Some(position) => base.with_query_param("since", &position.to_string()),
            None => base.clone(),
        };
        match &self.reclaim {
            Some(token) => target.with_query_param("reclaim", token),
            None => target,
        }
    }

    /// The position the current connection resumes from (what its `since` names).
    pub fn asked(&self) -> Option<&Position> {
        self.asked.as_ref()
    }

    /// The position `since=` would name now.
    pub fn position(&self) -> Option<&Position> {
        self.position.as_ref()
    }

    /// Decides about one received text message, and learns from it.
    pub fn admit(&mut self, text: &str) -> Admit {
        // Cheap test first: most lines of a busy room are messages, all are JSON objects.
        let Ok(envelope) = serde_json::from_str::<Envelope<'_>>(text) else {
            return Admit::Print;
        };
        match envelope.kind {
            "welcome" => self.welcome(envelope),
            "message" => self.message(envelope.offset),
            _ => Admit::Print,
        }
    }

    fn welcome(&mut self, welcome: Envelope<'_>) -> Admit {
        if welcome.reclaim.is_some() {
            self.reclaim.clone_from(&welcome.reclaim);
        }
        let asked = self.asked.take();
        let recovered = welcome.recovered == Some(true)
            && asked
                .as_ref()
                .is_some_and(|a| welcome.epoch.as_deref() == Some(a.epoch.as_str()));
        let mut admit = Admit::Print;
        if !recovered {
            if self.joined {
                admit = Admit::Gap(match &asked {
                    Some(from) => format!(
                        "the server could not resume from {from} (it restarted, or its history \
                         no longer reaches back that far)"
                    ),
                    None => "the server keeps no history to resume from".into(),
                });
            }
            // A new epoch: start counting afresh. The same one without the server's word: its
            // offsets still name the same messages, so keep deduplicating by them.
            let same_epoch = matches!(
                (&self.position, &welcome.epoch),
                (Some(position), Some(epoch)) if position.epoch == *epoch
            );
            if !same_epoch {
                self.position = welcome
                    .epoch
                    .filter(|e| is_epoch(e))
                    .map(|epoch| Position { epoch, offset: 0 });
            }
        }
        self.joined = true;
        self.replay_left = welcome.replay.unwrap_or(0);
        self.welcome_offset = welcome.offset;
        self.settle();
        admit
    }

    fn message(&mut self, offset: Option<u64>) -> Admit {
        self.replay_left = self.replay_left.saturating_sub(1);
        let mut admit = Admit::Print;
        if let (Some(position), Some(offset)) = (&mut self.position, offset) {
            if offset <= position.offset {
                admit = Admit::Duplicate(offset);
            } else {
                position.offset = offset;
            }
        }
        self.settle();
        admit
    }

    /// Once the welcome's replay has arrived (at once if there is none), everything up to the
    /// welcome's offset is had.
    fn settle(&mut self) {
        if self.replay_left > 0 {
            return;
        }
        if let (Some(position), Some(offset)) = (&mut self.position, self.welcome_offset.take()) {
            position.offset = position.offset.max(offset);
        }
    }
}

/// An epoch as the server writes it: anything else is never sent back.
fn is_epoch(epoch: &str) -> bool {
    epoch.len() == 16 && epoch.bytes().all(|b| b.is_ascii_hexdigit())
}

#[cfg(test)]
mod tests {
    use super::*;

    const E1: &str = "9f3a0c1b2d4e5f60";
    const E2: &str = "0000000000000abc";

    fn welcome(epoch: &str, offset: u64, replay: u64, recovered: Option<bool>) -> String {
        let recovered = recovered.map_or(String::new(), |r| format!(r#","recovered":{r}"#));
        format!(
            r#"{{"type":"welcome","id":"0.1","room":"r","nick":"n","online":1,"epoch":"{epoch}","offset":{offset},"replay":{replay}{recovered}}}"#
        )
    }

    fn message(offset: u64) -> String {
        format!(
            r#"{{"type":"message","id":"0.2","nick":"b","text":"m{offset}","ts":1,"offset":{offset}}}"#
        )
    }

    fn target() -> Target {
        Target::parse("ws://h:1/r?nick=n&history=5").unwrap()
    }

    #[test]
    fn the_next_connection_brings_the_last_welcomes_reclaim_token() {
        let mut resume = Resume::default();
        resume.target(&target());
        let with_token =
            welcome(E1, 3, 0, None).replace(r#""online":1"#, r#""online":1,"reclaim":"0.1.ab""#);
        resume.admit(&with_token);
        assert_eq!(
            resume.target(&target()).to_string(),
            format!("ws://h:1/r?nick=n&history=5&since={E1}:3&reclaim=0.1.ab")
        );
    }

    #[test]
    fn a_first_join_resumes_from_the_last_message_or_the_welcome() {
        let mut resume = Resume::default();
        assert_eq!(
            resume.target(&target()),
            target(),
            "nothing to resume from yet"
        );
        // Two history messages, then the replay is over: the position is the welcome's.
        assert_eq!(resume.admit(&welcome(E1, 7, 2, None)), Admit::Print);
        assert_eq!(resume.admit(&message(6)), Admit::Print);
        assert_eq!(
            resume.position().unwrap().offset,
            6,
            "mid-replay: the last received"
        );
        assert_eq!(resume.admit(&message(7)), Admit::Print);
        assert_eq!(resume.admit(&message(8)), Admit::Print);
        assert_eq!(
            resume.target(&target()).to_string(),
            format!("ws://h:1/r?nick=n&history=5&since={E1}:8")
        );

        // A quiet room: no message at all, the welcome's offset is the position.
        let mut quiet = Resume::default();
        quiet.admit(&welcome(E1, 3, 0, None));
        assert_eq!(quiet.position().unwrap().to_string(), format!("{E1}:3"));
    }

    #[test]
    fn a_recovered_resume_prints_each_message_once() {
        let mut resume = Resume::default();
        resume.admit(&welcome(E1, 4, 0, None));
        resume.admit(&message(5));
        resume.target(&target());
        // A server that replays one too many (5, which was printed) is caught.
        assert_eq!(resume.admit(&welcome(E1, 7, 3, Some(true))), Admit::Print);
        assert_eq!(resume.admit(&message(5)), Admit::Duplicate(5));
        assert_eq!(resume.admit(&message(6)), Admit::Print);
        assert_eq!(resume.admit(&message(7)), Admit::Print);
        assert_eq!(resume.admit(&message(8)), Admit::Print);
        assert_eq!(resume.position().unwrap().offset, 8);
    }

    #[test]
    fn an_unrecovered_resume_is_a_gap_and_takes_the_new_epoch() {
        let mut resume = Resume::default();
        resume.admit(&welcome(E1, 40, 0, None));
        resume.admit(&message(41));
        resume.target(&target());
        match resume.admit(&welcome(E2, 2, 2, Some(false))) {
            Admit::Gap(why) => assert!(why.contains(&format!("{E1}:41")), "{why}"),
            other => panic!("{other:?}"),
        }
        // Low offsets of the new epoch are new messages, not duplicates.
        assert_eq!(resume.admit(&message(1)), Admit::Print);
        assert_eq!(resume.admit(&message(2)), Admit::Print);
        assert_eq!(resume.admit(&message(3)), Admit::Print);
        assert_eq!(resume.position().unwrap().to_string(), format!("{E2}:3"));
    }

    #[test]
    fn an_unrecovered_resume_in_the_same_epoch_still_skips_what_was_printed() {
        let mut resume = Resume::default();
        resume.admit(&welcome(E1, 0, 0, None));
        resume.admit(&message(1));
        resume.admit(&message(2));
        resume.target(&target());
        assert_eq!(
            resume.asked().map(ToString::to_string),
            Some(format!("{E1}:2"))
        );
        // The server could not vouch (say, a `since` it did not take) and replays history.
        assert!(matches!(
            resume.admit(&welcome(E1, 3, 3, Some(false))),
            Admit::Gap(_)
        ));
        assert_eq!(resume.admit(&message(1)), Admit::Duplicate(1));
        assert_eq!(resume.admit(&message(2)), Admit::Duplicate(2));
        assert_eq!(resume.admit(&message(3)), Admit::Print);
        assert_eq!(resume.position().unwrap().to_string(), format!("{E1}:3"));
    }

    #[test]
    fn without_history_every_reconnect_is_a_gap() {
        let old = r#"{"type":"welcome","id":"0.1","room":"r","nick":"n","online":1}"#;
        let mut resume = Resume::default();
        assert_eq!(resume.admit(old), Admit::Print);
        assert_eq!(
            resume.target(&target()),
            target(),
            "no since without an epoch"
        );
        assert!(matches!(resume.admit(old), Admit::Gap(why) if why.contains("no history")));
        let plain = r#"{"type":"message","id":"0.2","nick":"b","text":"x","ts":1}"#;
        assert_eq!(resume.admit(plain), Admit::Print);
        assert_eq!(resume.admit(plain), Admit::Print);
    }

    #[test]
    fn other_text_is_printed_as_it_is() {
        let mut resume = Resume::default();
        for text in [
            "plain text",
            "",
            "[1,2]",
            r#"{"type":"join","id":"1","nick":"c"}"#,
        ] {
            assert_eq!(resume.admit(text), Admit::Print, "{text:?}");
        }
    }

    #[test]
    fn a_malformed_epoch_is_never_sent_back() {
        let mut resume = Resume::default();
        resume.admit(&welcome("not-hex-at-all!!", 3, 0, None));
        assert_eq!(resume.position(), None);
        assert_eq!(resume.target(&target()), target());
    }
}
