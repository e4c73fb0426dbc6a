//! One connection, one room: `shardcast client URL`, in chat mode or raw, from a terminal or
//! a pipe.
//!
//! - **Raw** (no `--nick`, or `--raw`): stdin lines out as messages, messages in as stdout
//!   lines, like websocat. With `--nick` (and `--raw`) the client still speaks `shardcast.v1`
//!   and sends the `hello` itself; everything else is the envelopes as they are.
//! - **Chat** (`--nick NAME`): the client speaks `shardcast.v1`, sends `hello` with the nick
//!   on every connection, wraps each typed line in a `message` envelope ([`typed`]: `/quit`,
//!   `/help`, `//` for a leading `/`) and shows what arrives as lines a person reads
//!   ([`render`]). In a terminal (stdin and stdout both one), lines are typed at a prompt
//!   (rustyline) and arriving lines are printed above it; in a pipe, stdin lines are typed
//!   lines and stdout gets the rendered lines, one per message.
//!
//! Threads: an input thread (`stdin`, or `prompt` in a terminal) reads lines and posts them
//! to the connection's mailbox (blocking when it is full, so input is read no faster than the
//! socket drains); the calling thread opens the connection and runs its pump, and under
//! `--reconnect` opens it again after a drop. The mailbox and poll outlive each connection,
//! so lines typed while reconnecting are sent on the next one.
//!
//! Under `--reconnect`, a connection that speaks `shardcast.v1` resumes the room ([`Resume`]):
//! the next connection asks for `since=` the last message's epoch and offset, a message
//! printed before is never printed again, and a reconnection the server could not recover
//! says "some messages may be missing" (chat mode: a marker line among the messages; raw: on
//! stderr). Progress notes (reconnecting, reconnected) go to stderr, or above the prompt in a
//! terminal.
//!
//! The run ends with `Ok` when input ends (stdin's end, `/quit`, Ctrl-D; after our close and
//! its reply, or the close timeout), when the server closes the connection, or when stdout is
//! closed; with an error when the connection fails or drops, or when reconnection gives up.
//! `--reconnect` retries forever unless `--max-retries` bounds it, but only while there is
//! input to deliver: once stdin has ended and every line has been taken, the last setback
//! decides the exit status.
//!
//! [`typed`]: super::typed
//! [`render`]: super::render

use std::io::{self, BufRead, IsTerminal, Write};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use mio::{Events, Poll};
use rustyline::error::ReadlineError;
use rustyline::{Config, DefaultEditor};
use tungstenite::Message;

use super::connect;
use super::console::Console;
use super::error::ClientError;
use super::mailbox::{self, CloseNote, Inbox, Mailbox, Request};
use super::options::{ConnectOptions, LinkSettings};
use super::pump::{Ending, Observer, Pump, Side, WAKER};
use super::render;
use super::resume::{Admit, Position, Resume};
use super::target::Target;
use super::typed::{self, ChatCommand, Typed};
use crate::backoff::Backoff;
use crate::chat::dialect::SUBPROTOCOL;
use crate::chat::nick::{NICK_RULE, Nick};

/// What a run does beyond connecting.
#[derive(Debug, Clone, Default)]
pub struct PipeOptions {
    /// Send each line as a binary message (raw only; received binary messages are always
    /// written raw there).
    pub binary: bool,
    /// Reconnect after a drop (`--reconnect`); `None`: a drop ends the run.
    pub reconnect: Option<Retries>,
    /// The nickname (`--nick`): speak `shardcast.v1` and send `hello` on every connection.
    pub nick: Option<String>,
    /// History messages to ask for when joining (`--history`, with `--nick`).
    pub history: Option<u32>,
    /// Print envelopes as they come and send lines as they are (`--raw`); without a nick the
    /// run is always raw.
    pub raw: bool,
}

/// How many reconnection attempts in a row `--reconnect` makes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retries {
    /// Until it works (the default): a server restart of any length does not end the run.
    Forever,
    /// At most this many (`--max-retries`), then the run fails.
    AtMost(u32),
}

impl PipeOptions {
    /// Chat mode: a nick, and not `--raw`.
    pub fn chat(&self) -> bool {
        self.nick.is_some() && !self.raw
    }

    /// The `hello` each connection starts with (with a nick), resuming from `since`. The
    /// `since` goes in the hello even though the URL has it too: a hello that asks for
    /// `history` replaces the query's whole ask, `since` included.
    fn hello(&self, since: Option<&Position>) -> Option<Message> {
        let nick = self.nick.as_ref()?;
        let mut hello = serde_json::json!({"type": "hello", "nick": nick});
        if let Some(history) = self.history {
            hello["history"] = history.into();
        }
        if let Some(since) = since {
            hello["since"] = serde_json::json!({"epoch": since.epoch, "offset": since.offset});
        }
        Some(Message::text(hello.to_string()))
    }
}

/// Runs against `target` until input ends, the server closes, or it fails.
pub fn run(
    target: &Target,
    options: &ConnectOptions,
    link: LinkSettings,
    pipe: PipeOptions,
) -> Result<(), ClientError> {
    if let Some(nick) = pipe.nick.as_deref().filter(|n| Nick::parse(n).is_none()) {
        // Said now rather than by the server's `bad_nick`, which would leave us unable to
        // say anything until its hello timeout closed the connection.
        return Err(ClientError::BadNick {
            nick: nick.to_string(),
            rule: NICK_RULE,
        });
    }
    let mut options = options.clone();
    if pipe.nick.is_some() {
        options.subprotocol = Some(SUBPROTOCOL.to_string());
    }
    let mut poll = Poll::new().map_err(ClientError::setup("a poll"))?;
    let (mailbox, mut inbox) =
        mailbox::mailbox(&poll, WAKER).map_err(ClientError::setup("a waker"))?;
    let terminal = pipe.chat() && io::stdin().is_terminal() && io::stdout().is_terminal();
    let mut prompt = None;
    let sink = if terminal {
        let started = Prompt::start(pipe.nick.as_deref().unwrap_or(""), mailbox)?;
        let console = started.console.clone();
        prompt = Some(started);
        Sink::Console(console)
    } else {
        let chat = pipe.chat();
        let binary = pipe.binary;
        thread::Builder::new()
            .name("stdin".into())
            .spawn(move || read_lines(io::stdin().lock(), &mailbox, binary, chat))
            .map_err(ClientError::setup("the stdin thread"))?;
        Sink::Stdout
    };
    let mut output = Printer {
        resume: pipe.reconnect.map(|_| Resume::default()),
        v1: false,
        chat: pipe.chat(),
        sink,
    };
    let outcome = connect_and_pump(
        target,
        &options,
        link,
        &pipe,
        &mut poll,
        &mut inbox,
        &mut output,
    );
    if let Some(prompt) = prompt {
        prompt.finish(&output, &outcome);
    }
    outcome
}

/// The connection loop: open, pump, and under `--reconnect` open again.
fn connect_and_pump(
    target: &Target,
    options: &ConnectOptions,
    link: LinkSettings,
    pipe: &PipeOptions,
    poll: &mut Poll,
    inbox: &mut Inbox,
    output: &mut Printer,
) -> Result<(), ClientError> {
    let mut backoff = pipe.reconnect.map(|retries| {
        Backoff::new(match retries {
            // Four billion attempts at 30 s apart: forever, for any person or script.
            Retries::Forever => u32::MAX,
            Retries::AtMost(n) => n,
        })
    });
    loop {
        let url = match &mut output.resume {
            Some(resume) => resume.target(target),
            None => target.clone(),
        };
        let hello = pipe.hello(output.resume.as_ref().and_then(Resume::asked));
        // What this run returns if it stops now, and the setback in words.
        let (stop, setback) = match connect::open(&url, options) {
            Ok(opened) => {
                if let Some(backoff) = &mut backoff {
                    if backoff.retries() > 0 {
                        output.notice(format_args!("reconnected to {url}"));
                    }
                    backoff.reset();
                }
                output.v1 = opened.handshake.subprotocol.as_deref() == Some(SUBPROTOCOL);
                match Pump::new(opened.ws, poll, inbox, output, link)
                    .greeting(hello)
                    .run()
                {
                    // We closed (input ended, or stdout did): done, even if the reply never
                    // came; that is the server's problem.
                    Ending::Closed {
                        initiator: Side::Us,
                        ..
                    }
                    | Ending::Lost { ours: Some(_), .. } => return Ok(()),
                    Ending::Closed { theirs, .. } => {
                        let setback = format!("closed by the server with {theirs}");
                        if theirs.code != 1000 && backoff.is_none() {
                            output.notice(format_args!("{setback}"));
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
        output.notice(format_args!(
            "{setback}; reconnecting in {:.1} s (attempt {})",
            delay.as_secs_f64(),
            backoff.retries()
        ));
        if sleep_unless_input_ends(poll, inbox, delay) {
            return stop;
        }
    }
}

/// Where received lines and notes go.
enum Sink {
    /// Lines to stdout, notes to stderr (a pipe, or raw output).
    Stdout,
    /// Everything above the prompt (chat mode in a terminal).
    Console(Console),
}

/// Writes each received message as a line: as it came (raw) or rendered (chat).
struct Printer {
    /// The room's position across connections (`--reconnect`).
    resume: Option<Resume>,
    /// The current connection speaks `shardcast.v1`: its text messages are envelopes.
    v1: bool,
    /// Render envelopes for people.
    chat: bool,
    sink: Sink,
}

impl Printer {
    /// A progress note: on stderr (stdout carries only messages), or above the prompt.
    fn notice(&self, message: std::fmt::Arguments<'_>) {
        match &self.sink {
            Sink::Stdout => notice(message),
            Sink::Console(console) => console.line(render::note(&message.to_string())),
        }
    }

    /// One line of output.
    fn line(&self, line: &[u8]) -> io::Result<()> {
        match &self.sink {
            Sink::Stdout => {
                let mut out = io::stdout().lock();
                out.write_all(line)?;
                out.write_all(b"\n")?;
                // Each message is visible at once, whatever buffers sit downstream.
                out.flush()
            }
            Sink::Console(console) => {
                console.line(String::from_utf8_lossy(line));
                Ok(())
            }
        }
    }
}

impl Observer for Printer {
    fn sent(&mut self, _message: &Message) {}

    fn received(&mut self, message: &Message) -> io::Result<()> {
        if let Message::Text(text) = message
            && let Some(resume) = self.resume.as_mut().filter(|_| self.v1)
        {
            match resume.admit(text) {
                Admit::Print => {}
                Admit::Duplicate(offset) => {
                    tracing::debug!("skipping message {offset}: printed already");
                    return Ok(());
                }
                // In chat mode the marker stands where the gap is, among the messages.
                Admit::Gap(why) if self.chat => self.line(render::gap(&why).as_bytes())?,
                Admit::Gap(why) => self.notice(format_args!("some messages may be missing: {why}")),
            }
        }
        if self.chat {
            return match render::line(message) {
                Some(line) => self.line(line.as_bytes()),
                None => Ok(()),
            };
        }
        match message {
            Message::Text(text) => self.line(text.as_bytes()),
            Message::Binary(bytes) => self.line(bytes),
            _ => Ok(()),
        }
    }

    fn closing(&mut self, initiator: Side, note: &CloseNote) {
        tracing::debug!("closing ({initiator:?} first): {note}");
    }
}

/// What one typed line asks for, in chat mode.
#[derive(Debug, PartialEq)]
enum Action {
    /// Send this message.
    Send(Message),
    /// Leave.
    Quit,
    /// Tell the user these lines (an answer to a command).
    Tell(Vec<String>),
    /// Nothing (a blank line).
    Nothing,
}

/// Chat mode's reading of a typed line.
fn chat_action(line: &str) -> Action {
    match typed::classify(line) {
        Typed::Blank => Action::Nothing,
        Typed::Say(text) => Action::Send(Message::text(
            serde_json::json!({"type": "message", "text": text}).to_string(),
        )),
        Typed::Command(command) => match typed::chat_command(command) {
            ChatCommand::Quit => Action::Quit,
            ChatCommand::Help => Action::Tell(typed::help_lines(typed::CHAT_HELP)),
            ChatCommand::Who => Action::Send(Message::text(r#"{"type":"who"}"#)),
            ChatCommand::Unknown(word) => Action::Tell(vec![format!(
                "unknown command /{word} (/help lists them; //{word} sends it as a message)"
            )]),
        },
    }
}

/// Posts every line of `input` as a message, until input or the connection ends (or, in
/// chat mode, `/quit`). Dropping the mailbox at the end tells the pump that input is over.
/// Answers to chat commands go to stderr: stdout carries only the room.
fn read_lines(mut input: impl BufRead, mailbox: &Mailbox, binary: bool, chat: bool) {
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
        let Some(message) = line_message(&line, binary && !chat) else {
            notice(format_args!(
                "skipping line {number}: not UTF-8 (use --binary)"
            ));
            continue;
        };
        let message = match (chat, message) {
            (true, Message::Text(text)) => match chat_action(&text) {
                Action::Send(message) => message,
                Action::Quit => return,
                Action::Tell(lines) => {
                    lines.iter().for_each(|l| notice(format_args!("{l}")));
                    continue;
                }
                Action::Nothing => continue,
            },
            (_, message) => message,
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

/// Chat mode in a terminal: a `prompt` thread reads typed lines with rustyline while the
/// calling thread runs the connection, whose lines appear above the prompt.
struct Prompt {
    console: Console,
    thread: thread::JoinHandle<()>,
    /// The user asked to leave (`/quit`, Ctrl-D, Ctrl-C): the prompt thread has returned.
    quit: Arc<AtomicBool>,
    /// The run is over: the prompt thread returns after the next line.
    over: Arc<AtomicBool>,
}

impl Prompt {
    fn start(nick: &str, mailbox: Mailbox) -> Result<Prompt, ClientError> {
        let config = Config::builder().auto_add_history(true).build();
        let mut editor =
            DefaultEditor::with_config(config).map_err(|e| ClientError::Terminal(e.to_string()))?;
        let printer = editor
            .create_external_printer()
            .map_err(|e| ClientError::Terminal(e.to_string()))?;
        let console = Console::with_printer(Box::new(printer));
        let quit = Arc::new(AtomicBool::new(false));
        let over = Arc::new(AtomicBool::new(false));
        let prompt = format!("{nick}> ");
        console.line(render::note(
            "type a message and press Enter; /help for the commands",
        ));
        let thread = {
            let (console, quit, over) = (console.clone(), quit.clone(), over.clone());
            thread::Builder::new()
                .name("prompt".into())
                .spawn(move || {
                    read_prompt(&mut editor, &prompt, &mailbox, &console, &over);
                    quit.store(true, Ordering::Release);
                })
                .map_err(ClientError::setup("the prompt thread"))?
        };
        Ok(Prompt {
            console,
            thread,
            quit,
            over,
        })
    }

    /// The run is over: wait for the prompt to hand the terminal back. If the user did not
    /// ask to leave, the prompt is still waiting for a line; say so and wait for one (killing
    /// rustyline mid-line would leave the terminal in raw mode).
    fn finish(self, output: &Printer, outcome: &Result<(), ClientError>) {
        self.over.store(true, Ordering::Release);
        if !self.quit.load(Ordering::Acquire) {
            let why = match outcome {
                Ok(()) => "the connection is closed".to_string(),
                Err(e) => e.to_string(),
            };
            output.notice(format_args!("{why}; press Enter to exit"));
        }
        drop(self.console);
        if self.thread.join().is_err() {
            tracing::warn!("the prompt thread panicked");
        }
    }
}

/// The prompt thread's loop: each typed line to the mailbox, until `/quit`, Ctrl-D, Ctrl-C,
/// a terminal error, or the end of the run.
fn read_prompt(
    editor: &mut DefaultEditor,
    prompt: &str,
    mailbox: &Mailbox,
    console: &Console,
    over: &AtomicBool,
) {
    loop {
        let line = match editor.readline(prompt) {
            Ok(line) => line,
            Err(ReadlineError::Interrupted | ReadlineError::Eof) => return,
            Err(e) => {
                console.line(render::note(&format!("terminal error: {e}")));
                return;
            }
        };
        if over.load(Ordering::Acquire) {
            return;
        }
        match chat_action(&line) {
            Action::Send(message) => {
                if mailbox.post(Request::Send(message)).is_err() {
                    return;
                }
            }
            Action::Quit => return,
            Action::Tell(lines) => console.block(&lines),
            Action::Nothing => {}
        }
    }
}

/// Waits `delay` before a reconnection; returns `true` early if input ended with nothing
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
        // The mailbox's waker ends the poll early when a line arrives or input ends.
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
        read_lines(&b"one\n\xff\ntwo\n"[..], &mailbox, false, false);
        drop(mailbox);
        let sent = |t: &str| Taken::Request(Request::Send(Message::text(t)));
        assert_eq!(inbox.take(), sent("one"));
        assert_eq!(inbox.take(), sent("two"));
        assert_eq!(inbox.take(), Taken::Finished);
    }

    fn envelope(text: &str) -> Taken {
        let json = serde_json::json!({"type": "message", "text": text}).to_string();
        Taken::Request(Request::Send(Message::text(json)))
    }

    #[test]
    fn chat_lines_become_envelopes_until_quit() {
        let poll = Poll::new().unwrap();
        let (mailbox, mut inbox) = mailbox::mailbox(&poll, WAKER).unwrap();
        let input = "hello \"you\"\n\n/help\n//slash\n/quit\nnever sent\n";
        read_lines(input.as_bytes(), &mailbox, false, true);
        drop(mailbox);
        assert_eq!(inbox.take(), envelope("hello \"you\""));
        assert_eq!(inbox.take(), envelope("/slash"));
        assert_eq!(inbox.take(), Taken::Finished);
    }

    #[test]
    fn chat_commands_answer_without_sending_but_who_asks_the_server() {
        assert_eq!(
            chat_action("/who"),
            Action::Send(Message::text(r#"{"type":"who"}"#))
        );
        assert!(matches!(chat_action("/frob"), Action::Tell(l) if l[0].contains("//frob")));
        assert!(matches!(chat_action("/help"), Action::Tell(l) if l.len() > 3));
        assert_eq!(chat_action("/QUIT"), Action::Quit);
        assert_eq!(chat_action("  "), Action::Nothing);
    }

    #[test]
    fn hello_carries_the_nick_and_the_history_asked_for() {
        let mut options = PipeOptions {
            nick: Some("ann".into()),
            ..PipeOptions::default()
        };
        assert!(options.chat());
        let hello = |o: &PipeOptions| -> serde_json::Value {
            serde_json::from_str(&o.hello(None).unwrap().into_text().unwrap()).unwrap()
        };
        assert_eq!(
            hello(&options),
            serde_json::json!({"type": "hello", "nick": "ann"})
        );
        options.history = Some(20);
        assert_eq!(hello(&options)["history"], 20);
        let since = Position {
            epoch: "9f3a0c1b2d4e5f60".into(),
            offset: 41,
        };
        let resuming = options.hello(Some(&since)).unwrap().into_text().unwrap();
        let resuming: serde_json::Value = serde_json::from_str(&resuming).unwrap();
        assert_eq!(
            resuming["since"],
            serde_json::json!({"epoch": "9f3a0c1b2d4e5f60", "offset": 41})
        );
        options.raw = true;
        assert!(!options.chat(), "--raw");
        assert!(
            options.hello(None).is_some(),
            "raw with a nick still says hello"
        );
        assert_eq!(PipeOptions::default().hello(None), None);
    }
}
