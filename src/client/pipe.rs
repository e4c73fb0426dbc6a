//! Pipe mode (`shardcast client URL`): stdin lines out as messages, messages in as stdout
//! lines, like websocat.
//!
//! Threads: `stdin` reads lines and posts them to the connection's mailbox (blocking when it
//! is full, so input is read no faster than the socket drains); the calling thread opens the
//! connection and runs its pump, and under `--reconnect` opens it again after a drop. The
//! mailbox and poll outlive each connection, so lines typed while reconnecting are sent on
//! the next one.
//!
//! Under `--reconnect`, a connection that speaks `shardcast.v1` resumes the room ([`Resume`]):
//! the next connection asks for `since=` the last message's epoch and offset, a message
//! printed before is never printed again, and a reconnection the server could not recover
//! prints "some messages may be missing" on stderr.
//!
//! The run ends with `Ok` when stdin ends (after our close and its reply, or the close
//! timeout), when the server closes the connection, or when stdout is closed; with an error
//! when the connection fails or drops, or when reconnection gives up. `--reconnect` retries
//! only while there is input to deliver: once stdin has ended and every line has been taken,
//! the last setback decides the exit status.

use std::io::{self, BufRead, Write};
use std::thread;
use std::time::{Duration, Instant};

use mio::{Events, Poll};
use tungstenite::Message;

use super::connect;
use super::error::ClientError;
use super::mailbox::{self, CloseNote, Inbox, Mailbox, Request};
use super::options::{ConnectOptions, LinkSettings};
use super::pump::{Ending, Observer, Pump, Side, WAKER};
use super::resume::{Admit, Resume};
use super::target::Target;
use crate::backoff::Backoff;
use crate::chat::dialect::SUBPROTOCOL;

/// What pipe mode does beyond connecting.
#[derive(Debug, Clone, Copy, Default)]
pub struct PipeOptions {
    /// Send each line as a binary message (received binary messages are always written raw).
    pub binary: bool,
    /// Reconnect after a drop, with at most this many attempts in a row (`--reconnect`,
    /// `--max-retries`); `None`: a drop ends the run.
    pub reconnect: Option<u32>,
}

/// Runs pipe mode against `target` until input ends, the server closes, or it fails.
pub fn run(
    target: &Target,
    options: &ConnectOptions,
    link: LinkSettings,
    pipe: PipeOptions,
) -> Result<(), ClientError> {
    let mut poll = Poll::new().map_err(ClientError::setup("a poll"))?;
    let (mailbox, mut inbox) =
        mailbox::mailbox(&poll, WAKER).map_err(ClientError::setup("a waker"))?;
    thread::Builder::new()
        .name("stdin".into())
        .spawn(move || read_lines(io::stdin().lock(), &mailbox, pipe.binary))
        .map_err(ClientError::setup("the stdin thread"))?;
    let mut output = StdoutLines {
        resume: pipe.reconnect.map(|_| Resume::default()),
        v1: false,
    };
    let mut backoff = pipe.reconnect.map(Backoff::new);
    loop {
        let url = match &mut output.resume {
            Some(resume) => resume.target(target),
            None => target.clone(),
        };
        // What this run returns if it stops now, and the setback in words.
        let (stop, setback) = match connect::open(&url, options) {
            Ok(opened) => {
                if let Some(backoff) = &mut backoff {
                    if backoff.retries() > 0 {
                        notice(format_args!("reconnected to {url}"));
                    }
                    backoff.reset();
                }
                output.v1 = opened.handshake.subprotocol.as_deref() == Some(SUBPROTOCOL);
                match Pump::new(opened.ws, &mut poll, &mut inbox, &mut output, link).run() {
                    // We closed (stdin ended, or stdout did): done, even if the reply never
                    // came; that is the server's problem.
                    Ending::Closed {
                        initiator: Side::Us,
                        ..
                    }
                    | Ending::Lost { ours: Some(_), .. } => return Ok(()),
                    Ending::Closed { theirs, .. } => {
                        let setback = format!("closed by the server with {theirs}");
                        if theirs.code != 1000 && backoff.is_none() {
                            notice(format_args!("{setback}"));
                        }
                        (Ok(()), setback)
                    }
                    Ending::Lost { reason, .. } => {
                        let setback = format!("connection lost: {reason}");
                        (Err(ClientError::Lost(reason)), setback)
                    }
                }
            }
            Err(e) => {
                let setback = e.to_string();
                (Err(e.into()), setback)
            }
        };
        // Reconnect only to deliver input: none left to send and none to come means stop.
        let Some(backoff) = backoff.as_mut().filter(|_| !inbox.is_finished()) else {
            return stop;
        };
        let Some(delay) = backoff.next_delay() else {
            return Err(ClientError::GaveUp {
                attempts: backoff.retries(),
                last: setback,
            });
        };
        notice(format_args!(
            "{setback}; reconnecting in {:.1} s (attempt {})",
            delay.as_secs_f64(),
            backoff.retries()
        ));
        if sleep_unless_input_ends(&mut poll, &mut inbox, delay) {
            return stop;
        }
    }
}

/// Writes each received message as one stdout line.
struct StdoutLines {
    /// The room's position across connections (`--reconnect`).
    resume: Option<Resume>,
    /// The current connection speaks `shardcast.v1`: its text messages are envelopes.
    v1: bool,
}

impl Observer for StdoutLines {
    fn sent(&mut self, _message: &Message) {}

    fn received(&mut self, message: &Message) -> io::Result<()> {
        let payload: &[u8] = match message {
            Message::Text(text) => {
                if let Some(resume) = self.resume.as_mut().filter(|_| self.v1) {
                    match resume.admit(text) {
                        Admit::Print => {}
                        Admit::Duplicate(offset) => {
                            tracing::debug!("skipping message {offset}: printed already");
                            return Ok(());
                        }
                        Admit::Gap(why) => {
                            notice(format_args!("some messages may be missing: {why}"))
                        }
                    }
                }
                text.as_bytes()
            }
            Message::Binary(bytes) => bytes,
            _ => return Ok(()),
        };
        let mut out = io::stdout().lock();
        out.write_all(payload)?;
        out.write_all(b"\n")?;
        // Each message is visible at once, whatever buffers sit downstream.
        out.flush()
    }

    fn closing(&mut self, initiator: Side, note: &CloseNote) {
        tracing::debug!("closing ({initiator:?} first): {note}");
    }
}

/// Posts every line of `input` as a message, until input or the connection ends. Dropping
/// the mailbox at the end tells the pump that input is over.
fn read_lines(mut input: impl BufRead, mailbox: &Mailbox, binary: bool) {
    let mut line = Vec::new();
    let mut number = 0u64;
    loop {
        line.clear();
        match input.read_until(b'\n', &mut line) {
            Ok(0) => return,
            Ok(_) => number += 1,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => {
                notice(format_args!("cannot read stdin: {e}"));
                return;
            }
        }
        let Some(message) = line_message(&line, binary) else {
            notice(format_args!(
                "skipping line {number}: not UTF-8 (use --binary)"
            ));
            continue;
        };
        if mailbox.post(Request::Send(message)).is_err() {
            return; // The run is over.
        }
    }
}

/// The message for one input line, without its line ending (`\n` or `\r\n`). `None`: text
/// mode and the line is not UTF-8.
fn line_message(line: &[u8], binary: bool) -> Option<Message> {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    if binary {
        Some(Message::binary(line.to_vec()))
    } else {
        String::from_utf8(line.to_vec()).ok().map(Message::text)
    }
}

/// Waits `delay` before a reconnection; returns `true` early if stdin ended with nothing
/// left to send (no reason to reconnect then).
fn sleep_unless_input_ends(poll: &mut Poll, inbox: &mut Inbox, delay: Duration) -> bool {
    let deadline = Instant::now() + delay;
    let mut events = Events::with_capacity(4);
    loop {
        if inbox.is_finished() {
            return true;
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return false;
        }
        // The mailbox's waker ends the poll early when a line arrives or stdin ends.
        if let Err(e) = poll.poll(&mut events, Some(left))
            && e.kind() != io::ErrorKind::Interrupted
        {
            thread::sleep(left);
            return false;
        }
    }
}

/// A progress note on stderr (stdout carries only messages).
fn notice(message: std::fmt::Arguments<'_>) {
    eprintln!("shardcast client: {message}");
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::mailbox::Taken;

    #[test]
    fn lines_lose_their_line_endings() {
        assert_eq!(line_message(b"hi\n", false), Some(Message::text("hi")));
        assert_eq!(line_message(b"hi\r\n", false), Some(Message::text("hi")));
        assert_eq!(line_message(b"last", false), Some(Message::text("last")));
        assert_eq!(line_message(b"\n", false), Some(Message::text("")));
        assert_eq!(
            line_message(b"\xff\n", true),
            Some(Message::binary(vec![0xff]))
        );
        assert_eq!(line_message(b"\xff\n", false), None);
    }

    #[test]
    fn every_line_is_posted_then_input_finishes() {
        let poll = Poll::new().unwrap();
        let (mailbox, mut inbox) = mailbox::mailbox(&poll, WAKER).unwrap();
        read_lines(&b"one\n\xff\ntwo\n"[..], &mailbox, false);
        drop(mailbox);
        let sent = |t: &str| Taken::Request(Request::Send(Message::text(t)));
        assert_eq!(inbox.take(), sent("one"));
        assert_eq!(inbox.take(), sent("two"));
        assert_eq!(inbox.take(), Taken::Finished);
    }
}
