//! Interactive mode's connections by id, and the requests the prompt makes of them.
//!
//! Ids are indexes: 0, 1, 2, ... in order of `connect`, never reused, so a closed
//! connection stays visible to `show` and `list` until the program exits.

use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use mio::Poll;
use tungstenite::Message;

use super::command::ConnectionId;
use super::link::{Link, SharedRecord, lock};
use super::record::{Record, State};
use crate::client::console::Console;
use crate::client::error::ClientError;
use crate::client::mailbox::{self, CAPACITY, CloseNote, Mailbox, PostError, Request};
use crate::client::options::{ConnectOptions, LinkSettings};
use crate::client::pump::WAKER;
use crate::client::target::Target;

/// Why the prompt could not do what was asked; the text is what it prints.
#[derive(Debug, thiserror::Error)]
pub enum UserError {
    /// A message was typed before any `/connect`.
    #[error("No connection to send to: /connect <url> first (commands start with /)")]
    NoConnection,
    /// No `connect` gave this id.
    #[error("No connection found with id {0}")]
    NoSuchConnection(ConnectionId),
    /// The URL cannot be used.
    #[error("Invalid URL {url:?}: {reason}")]
    BadUrl {
        /// As typed.
        url: String,
        /// What is wrong.
        reason: String,
    },
    /// The connection is closing, closed or failed.
    #[error("Connection {id} is {state}")]
    NotOpen {
        /// Which.
        id: ConnectionId,
        /// Its state.
        state: State,
    },
    /// The connection's queue is full (it cannot send as fast as asked).
    #[error("Connection {0} has {CAPACITY} requests waiting; try again shortly")]
    Busy(ConnectionId),
    /// A poll, waker or thread could not be created.
    #[error("Cannot start the connection: {0}")]
    Setup(String),
}

/// One connection as the prompt holds it.
struct Entry {
    record: SharedRecord,
    /// Dropped at shutdown, which tells the thread that no more requests come.
    mailbox: Option<Mailbox>,
    thread: Option<JoinHandle<()>>,
}

/// Every connection of the session.
pub struct Registry {
    entries: Vec<Entry>,
    options: ConnectOptions,
    settings: LinkSettings,
    console: Console,
}

impl Registry {
    /// An empty registry whose connections use `options` and `settings`.
    pub fn new(options: ConnectOptions, settings: LinkSettings, console: Console) -> Registry {
        Registry {
            entries: Vec::new(),
            options,
            settings,
            console,
        }
    }

    /// Starts connecting to `url` in a new thread; the id is returned at once.
    pub fn connect(
        &mut self,
        url: &str,
        subprotocol: Option<String>,
    ) -> Result<ConnectionId, UserError> {
        let target = Target::parse(url).map_err(|e| match e {
            ClientError::Url { url, reason } => UserError::BadUrl { url, reason },
            other => UserError::Setup(other.to_string()),
        })?;
        let id = ConnectionId(self.entries.len());
        let setup = |e: std::io::Error| UserError::Setup(e.to_string());
        let poll = Poll::new().map_err(setup)?;
        let (mailbox, inbox) = mailbox::mailbox(&poll, WAKER).map_err(setup)?;
        let record = SharedRecord::new(Record::new(target.to_string()).into());
        let mut options = self.options.clone();
        if subprotocol.is_some() {
            options.subprotocol = subprotocol;
        }
        let link = Link {
            id,
            target,
            options,
            settings: self.settings,
            record: record.clone(),
            console: self.console.clone(),
        };
        let thread = thread::Builder::new()
            .name(format!("connection-{id}"))
            .spawn(move || link.serve(poll, inbox))
            .map_err(setup)?;
        self.entries.push(Entry {
            record,
            mailbox: Some(mailbox),
            thread: Some(thread),
        });
        Ok(id)
    }

    /// Queues a text message (sent as soon as the connection is open).
    pub fn send(&self, id: ConnectionId, text: String) -> Result<(), UserError> {
        self.post(id, Request::Send(Message::text(text)))
    }

    /// Queues a text message on the current connection: the last one opened.
    pub fn say(&self, text: String) -> Result<(), UserError> {
        let current = self
            .entries
            .len()
            .checked_sub(1)
            .ok_or(UserError::NoConnection)?;
        self.send(ConnectionId(current), text)
    }

    /// Queues the start of the close handshake.
    pub fn close(&self, id: ConnectionId, code: u16, reason: String) -> Result<(), UserError> {
        self.post(id, Request::Close(CloseNote { code, reason }))
    }

    /// `show`'s lines for `id`.
    pub fn show(&self, id: ConnectionId) -> Result<Vec<String>, UserError> {
        let entry = self.entry(id)?;
        let mut lines = vec![format!("Connection {id}")];
        lines.extend(lock(&entry.record).show());
        Ok(lines)
    }

    /// `list`'s lines.
    pub fn list(&self) -> Vec<String> {
        if self.entries.is_empty() {
            return vec!["No connections (use /connect <url>)".into()];
        }
        self.entries
            .iter()
            .enumerate()
            .map(|(id, e)| format!("[{id}] {}", lock(&e.record).summary()))
            .collect()
    }

    /// Closes every connection normally (1000) and waits up to `grace` for their close
    /// handshakes. Threads still busy then (a slow handshake) are left to the process exit.
    pub fn shutdown(&mut self, grace: Duration) {
        for entry in &mut self.entries {
            if let Some(mailbox) = entry.mailbox.take()
                && lock(&entry.record).state().accepts_requests()
            {
                // Full or gone: dropping the mailbox below also makes the pump close.
                let _ = mailbox.try_post(Request::Close(CloseNote::normal()));
            }
        }
        let deadline = Instant::now() + grace;
        for entry in &mut self.entries {
            let Some(thread) = entry.thread.take() else {
                continue;
            };
            // JoinHandle has no timed join: poll briefly until the deadline.
            while !thread.is_finished() && Instant::now() < deadline {
                thread::sleep(Duration::from_millis(10));
            }
            if thread.is_finished() && thread.join().is_err() {
                tracing::warn!("a connection thread panicked");
            }
        }
    }

    fn entry(&self, id: ConnectionId) -> Result<&Entry, UserError> {
        self.entries
            .get(id.0)
            .ok_or(UserError::NoSuchConnection(id))
    }

    fn post(&self, id: ConnectionId, request: Request) -> Result<(), UserError> {
        let entry = self.entry(id)?;
        let state = lock(&entry.record).state();
        if !state.accepts_requests() {
            return Err(UserError::NotOpen { id, state });
        }
        let mailbox = entry
            .mailbox
            .as_ref()
            .ok_or(UserError::NotOpen { id, state })?;
        mailbox.try_post(request).map_err(|e| match e {
            PostError::Full => UserError::Busy(id),
            // The thread ended between the state check and now.
            PostError::Gone => UserError::NotOpen {
                id,
                state: lock(&entry.record).state(),
            },
        })
    }
}
