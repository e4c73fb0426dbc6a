//! A resuming subscriber: its books across connections, the `since` it resumes from, and
//! where its current connection stands (joining → catching up → live).
//!
//! It follows the history contract's client recipe: keep the welcome's `epoch` and the offset
//! of the last message received (the welcome's `offset` if none came), reconnect with
//! `since=EPOCH:OFFSET`; after an unrecovered resume take the new welcome's offset, since the
//! messages before it are gone for good.

use std::collections::BTreeMap;

use hdrhistogram::Histogram;

use crate::stats::new_histogram;
use crate::token::{Token, TokenScanner};

use super::envelope::Envelope;
use super::offsets::{OffsetLog, OffsetTotals, Seen};
use super::tokens::TokenLog;

/// Longest epoch accepted into a URL; longer or non-alphanumeric ones are not resumed from.
const MAX_EPOCH_LEN: usize = 64;

/// Where the current connection stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    /// Not connected.
    Away,
    /// Connecting, upgrading, or waiting for the welcome. `resuming`: a reconnect.
    Joining {
        started_ns: u64,
        resuming: bool,
    },
    /// Welcomed; `left` announced history messages still to come.
    CatchingUp {
        started_ns: u64,
        resuming: bool,
        left: u64,
    },
    Live,
}

/// What all subscribers' connections add up to (the scenario's loop is single-threaded, so
/// one tally, written directly).
#[derive(Debug)]
pub struct Tally {
    /// Resumes answered `recovered: true` / `false` / without `recovered`.
    pub recovered: u64,
    pub not_recovered: u64,
    pub unanswered: u64,
    /// From dialing a reconnect to its last announced history message (ns).
    pub catch_up: Histogram<u64>,
    /// Reconnects that ended before their catch-up completed.
    pub catch_ups_interrupted: u64,
    /// Reconnects that ended before their welcome (a subset of the interrupted ones): with
    /// the answered ones above they add up to every reconnect that is over.
    pub unwelcomed: u64,
    /// Catch-ups where a live message came before every announced history message.
    pub short_replays: u64,
    /// History and live messages received (duplicates included).
    pub replayed: u64,
    pub live: u64,
    /// Scheduled send to receipt of live messages scheduled from `measure_from_ns` on (ns).
    pub latency: Histogram<u64>,
    pub measure_from_ns: u64,
    /// Messages carrying no token of this run.
    pub foreign: u64,
    pub messages_without_offset: u64,
    pub welcomes_without_offset: u64,
    pub unparsable: u64,
    /// `error` envelopes by code.
    pub errors: BTreeMap<String, u64>,
}

impl Default for Tally {
    fn default() -> Self {
        Tally {
            recovered: 0,
            not_recovered: 0,
            unanswered: 0,
            catch_up: new_histogram(),
            catch_ups_interrupted: 0,
            unwelcomed: 0,
            short_replays: 0,
            replayed: 0,
            live: 0,
            latency: new_histogram(),
            measure_from_ns: u64::MAX,
            foreign: 0,
            messages_without_offset: 0,
            welcomes_without_offset: 0,
            unparsable: 0,
            errors: BTreeMap::new(),
        }
    }
}

#[derive(Debug)]
pub struct Subscriber {
    nick: String,
    /// Connections dialed so far: each takes its own nickname (`resume3`, `resume3-1`, …),
    /// since a nickname is one member's per room and a reconnection may reach the server
    /// before it has seen the dropped connection go.
    dials: u64,
    offsets: OffsetLog,
    /// The same messages by token: what offsets cannot tell across epochs.
    tokens: TokenLog,
    epoch: Option<String>,
    /// The offset to resume from.
    last: Option<u64>,
    /// The first welcome's epoch and offset: the room's position when the run began, on the
    /// node this subscriber first joined.
    start: Option<(String, u64)>,
    /// A welcome came on some connection: every later one is a resume.
    welcomed: bool,
    stage: Stage,
}

impl Subscriber {
    /// Subscriber `index` of a run with `publishers` publishers.
    pub fn new(index: usize, publishers: usize) -> Subscriber {
        Subscriber {
            nick: format!("resume{index}"),
            dials: 0,
            offsets: OffsetLog::default(),
            tokens: TokenLog::new(publishers),
            epoch: None,
            last: None,
            start: None,
            welcomed: false,
            stage: Stage::Away,
        }
    }

    /// The query of the next upgrade: the nickname, and on a reconnect `since` (when an
    /// epoch is known) and `history` (when asked for).
    pub fn query(&self, history: u64) -> String {
        let mut query = match self.dials {
            0 => format!("nick={}", self.nick),
            n => format!("nick={}-{n}", self.nick),
        };
        if let (Some(epoch), Some(last)) = (&self.epoch, self.last) {
            query.push_str(&format!("&since={epoch}:{last}"));
            if history > 0 {
                query.push_str(&format!("&history={history}"));
            }
        }
        query
    }

    /// A connection is being dialed.
    pub fn dialing(&mut self, now_ns: u64) {
        self.dials += 1;
        self.stage = Stage::Joining {
            started_ns: now_ns,
            resuming: self.welcomed,
        };
    }

    /// The connection is gone (dropped by us, or ended by the server).
    pub fn away(&mut self, tally: &mut Tally) {
        match self.stage {
            Stage::Joining { resuming: true, .. } => {
                tally.catch_ups_interrupted += 1;
                tally.unwelcomed += 1;
            }
            Stage::CatchingUp { resuming: true, .. } => tally.catch_ups_interrupted += 1,
            _ => {}
        }
        self.stage = Stage::Away;
    }

    pub fn is_live(&self) -> bool {
        self.stage == Stage::Live
    }

    pub fn last(&self) -> Option<u64> {
        self.last
    }

    /// The first welcome's epoch and offset.
    pub fn start(&self) -> Option<(&str, u64)> {
        self.start
            .as_ref()
            .map(|(epoch, offset)| (epoch.as_str(), *offset))
    }

    /// The epoch of the last welcome that carried one ([`Self::last`] counts in it).
    pub fn epoch(&self) -> Option<&str> {
        self.epoch.as_deref()
    }

    pub fn totals(&self) -> OffsetTotals {
        self.offsets.totals()
    }

    /// The messages received, by token.
    pub fn tokens(&self) -> &TokenLog {
        &self.tokens
    }

    /// One data frame from the server.
    pub fn on_text(
        &mut self,
        payload: &[u8],
        now_ns: u64,
        tally: &mut Tally,
        scanner: &TokenScanner,
    ) {
        match Envelope::parse(payload) {
            Ok(Envelope::Welcome {
                epoch,
                offset,
                replay,
                recovered,
            }) => self.on_welcome(epoch, offset, replay, recovered, now_ns, tally),
            Ok(Envelope::Message {
                text,
                offset,
                history,
            }) => {
                self.on_message(offset, history, now_ns, tally);
                self.read_tokens(text.as_bytes(), !history, now_ns, tally, scanner);
            }
            Ok(Envelope::Error { code }) => {
                *tally.errors.entry(code.into_owned()).or_default() += 1;
            }
            Ok(Envelope::Other) => {}
            Err(_) => tally.unparsable += 1,
        }
    }

    fn on_welcome(
        &mut self,
        epoch: Option<String>,
        offset: Option<u64>,
        replay: u64,
        recovered: Option<bool>,
        now_ns: u64,
        tally: &mut Tally,
    ) {
        let (started_ns, resuming) = match self.stage {
            Stage::Joining {
                started_ns,
                resuming,
            } => (started_ns, resuming),
            // A second welcome on one connection: nothing to resume from it.
            _ => return,
        };
        self.welcomed = true;
        if resuming {
            match recovered {
                Some(true) => tally.recovered += 1,
                Some(false) => tally.not_recovered += 1,
                None => tally.unanswered += 1,
            }
        }
        match (epoch.filter(|e| usable_epoch(e)), offset) {
            (Some(epoch), Some(offset)) => {
                let recovered = resuming && recovered == Some(true);
                // Unrecovered, the replay is the room's latest history, ending at `offset`.
                self.offsets
                    .welcome(&epoch, offset, if recovered { 0 } else { replay });
                if !recovered {
                    self.last = Some(offset);
                }
                self.start.get_or_insert_with(|| (epoch.clone(), offset));
                self.epoch = Some(epoch);
            }
            _ => tally.welcomes_without_offset += 1,
        }
        self.stage = Stage::CatchingUp {
            started_ns,
            resuming,
            left: replay,
        };
        if replay == 0 {
            self.caught_up(now_ns, tally);
        }
    }

    fn on_message(&mut self, offset: Option<u64>, history: bool, now_ns: u64, tally: &mut Tally) {
        match offset {
            Some(offset) => {
                if self.offsets.observe(offset) == Seen::New {
                    self.last = self.last.max(Some(offset));
                }
            }
            None => tally.messages_without_offset += 1,
        }
        if history {
            tally.replayed += 1;
        } else {
            tally.live += 1;
        }
        let Stage::CatchingUp { left, .. } = &mut self.stage else {
            return;
        };
        if history {
            *left = left.saturating_sub(1);
            if *left == 0 {
                self.caught_up(now_ns, tally);
            }
        } else {
            // A live message before the announced history was complete.
            tally.short_replays += 1;
            self.stage = Stage::Live;
        }
    }

    /// Books a message's token; a live one's latency too (a replayed one's says nothing of
    /// delivery).
    fn read_tokens(
        &mut self,
        text: &[u8],
        live: bool,
        now_ns: u64,
        tally: &mut Tally,
        scanner: &TokenScanner,
    ) {
        let mut found = false;
        scanner.scan(text, |token: Token| {
            found = true;
            self.tokens.observe(token.publisher, token.seq);
            if live && token.sent_ns >= tally.measure_from_ns {
                tally
                    .latency
                    .saturating_record(now_ns.saturating_sub(token.sent_ns).max(1));
            }
        });
        if live && !found {
            tally.foreign += 1;
        }
    }

    fn caught_up(&mut self, now_ns: u64, tally: &mut Tally) {
        if let Stage::CatchingUp {
            started_ns,
            resuming: true,
            ..
        } = self.stage
        {
            tally
                .catch_up
                .saturating_record(now_ns.saturating_sub(started_ns).max(1));
        }
        self.stage = Stage::Live;
    }
}

/// An epoch goes back into a URL: only short alphanumeric ones are taken.
fn usable_epoch(epoch: &str) -> bool {
    !epoch.is_empty()
        && epoch.len() <= MAX_EPOCH_LEN
        && epoch.bytes().all(|b| b.is_ascii_alphanumeric())
}

#[cfg(test)]
mod tests {
    use super::*;

    const EPOCH: &str = "9f3a0c1b2d4e5f60";

    fn welcome(offset: u64, replay: u64, recovered: Option<bool>) -> String {
        let recovered = match recovered {
            Some(r) => format!(r#","recovered":{r}"#),
            None => String::new(),
        };
        format!(
            r#"{{"type":"welcome","id":"0.1","room":"r","nick":"n","online":1,"epoch":"{EPOCH}","offset":{offset},"replay":{replay}{recovered}}}"#
        )
    }

    fn message(offset: u64, history: bool) -> String {
        format!(
            r#"{{"type":"message","id":"0.2","nick":null,"text":"SCL1:0:{offset}:5;xx","ts":1,"offset":{offset},"history":{history}}}"#
        )
    }

    fn feed(sub: &mut Subscriber, tally: &mut Tally, now_ns: u64, text: &str) {
        sub.on_text(text.as_bytes(), now_ns, tally, &TokenScanner::default());
    }

    #[test]
    fn resumes_from_the_last_offset_and_times_the_catch_up() {
        let mut tally = Tally::default();
        let mut sub = Subscriber::new(3, 1);
        assert_eq!(sub.query(10), "nick=resume3");
        sub.dialing(0);
        feed(&mut sub, &mut tally, 10, &welcome(40, 0, None));
        assert!(sub.is_live());
        assert_eq!(
            sub.query(10),
            format!("nick=resume3-1&since={EPOCH}:40&history=10")
        );
        feed(&mut sub, &mut tally, 20, &message(41, false));
        feed(&mut sub, &mut tally, 20, &message(42, false));
        sub.away(&mut tally);
        assert_eq!(sub.query(0), format!("nick=resume3-1&since={EPOCH}:42"));

        sub.dialing(1_000);
        feed(&mut sub, &mut tally, 1_500, &welcome(44, 2, Some(true)));
        assert!(!sub.is_live(), "two history messages announced");
        feed(&mut sub, &mut tally, 1_600, &message(43, true));
        feed(&mut sub, &mut tally, 1_700, &message(44, true));
        assert!(sub.is_live());
        feed(&mut sub, &mut tally, 1_800, &message(45, false));
        assert_eq!(sub.last(), Some(45));
        assert_eq!((tally.recovered, tally.replayed, tally.live), (1, 2, 3));
        assert_eq!(tally.catch_up.len(), 1, "the first join is not a catch-up");
        assert_eq!(tally.catch_up.max(), 700);
        let totals = sub.totals();
        assert_eq!((totals.unique, totals.lost, totals.duplicates), (5, 0, 0));
        assert_eq!((sub.tokens().distinct, sub.tokens().again), (5, 0));
        assert_eq!(tally.foreign + tally.unparsable, 0);
    }

    #[test]
    fn an_unrecovered_resume_jumps_to_the_new_offset_and_counts_the_gap() {
        let mut tally = Tally::default();
        let mut sub = Subscriber::new(0, 1);
        sub.dialing(0);
        feed(&mut sub, &mut tally, 0, &welcome(0, 0, None));
        feed(&mut sub, &mut tally, 0, &message(1, false));
        sub.away(&mut tally);
        sub.dialing(10);
        // History no longer reaches back to 2: the last message (500) is replayed.
        feed(&mut sub, &mut tally, 20, &welcome(500, 1, Some(false)));
        feed(&mut sub, &mut tally, 30, &message(500, true));
        assert!(sub.is_live());
        assert_eq!(sub.last(), Some(500));
        assert_eq!(tally.not_recovered, 1);
        assert_eq!(sub.totals().lost, 498);
    }

    #[test]
    fn counts_interrupted_and_short_catch_ups() {
        let mut tally = Tally::default();
        let mut sub = Subscriber::new(0, 1);
        sub.dialing(0);
        feed(&mut sub, &mut tally, 0, &welcome(0, 0, None));
        sub.away(&mut tally);
        assert_eq!(
            tally.catch_ups_interrupted, 0,
            "the first join is no catch-up"
        );
        sub.dialing(10);
        sub.away(&mut tally);
        assert_eq!((tally.catch_ups_interrupted, tally.unwelcomed), (1, 1));
        sub.dialing(20);
        feed(&mut sub, &mut tally, 30, &welcome(3, 3, Some(true)));
        feed(&mut sub, &mut tally, 30, &message(1, true));
        feed(&mut sub, &mut tally, 30, &message(4, false));
        assert!(sub.is_live());
        assert_eq!(tally.short_replays, 1);
        assert_eq!(tally.catch_up.len(), 0);
        sub.dialing(40);
        feed(&mut sub, &mut tally, 50, &welcome(4, 2, Some(true)));
        sub.away(&mut tally);
        assert_eq!(
            (tally.catch_ups_interrupted, tally.unwelcomed),
            (2, 1),
            "welcomed, then dropped while catching up"
        );
    }

    #[test]
    fn never_puts_a_strange_epoch_into_a_url() {
        let mut tally = Tally::default();
        let mut sub = Subscriber::new(0, 1);
        sub.dialing(0);
        let odd = r#"{"type":"welcome","epoch":"a b&c","offset":3,"replay":0}"#;
        feed(&mut sub, &mut tally, 0, odd);
        assert_eq!(sub.query(0), "nick=resume0-1");
        assert_eq!(tally.welcomes_without_offset, 1);
        feed(&mut sub, &mut tally, 0, "{not json");
        assert_eq!(tally.unparsable, 1);
    }
}
