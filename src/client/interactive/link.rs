//! One connection's thread in interactive mode: open, report, pump, report.
//!
//! Everything it learns goes two ways: into the connection's [`Record`] (for `show` and
//! `list`) and, when a person would want to know now, onto the console (`< [N] text` for
//! each arriving message, `> [N] ...` for state changes).

use std::io;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use mio::Poll;
use tungstenite::Message;

use super::command::ConnectionId;
use super::record::{Record, describe};
use crate::client::connect;
use crate::client::console::Console;
use crate::client::mailbox::{CloseNote, Inbox};
use crate::client::options::{ConnectOptions, LinkSettings};
use crate::client::pump::{Observer, Pump, Side};
use crate::client::target::Target;

/// A record shared by the connection's thread (writer) and the prompt (reader). The lock
/// is held for one update or one rendering at a time.
pub type SharedRecord = Arc<Mutex<Record>>;

/// Locks a record; a thread that panicked while holding it cannot have left it torn
/// (every update is a few field writes), so poisoning is ignored.
pub fn lock(record: &SharedRecord) -> MutexGuard<'_, Record> {
    record.lock().unwrap_or_else(PoisonError::into_inner)
}

/// What the thread needs.
pub struct Link {
    /// The connection's number.
    pub id: ConnectionId,
    /// Where to connect.
    pub target: Target,
    /// How.
    pub options: ConnectOptions,
    /// How to keep the connection.
    pub settings: LinkSettings,
    /// The shared record.
    pub record: SharedRecord,
    /// Where to report.
    pub console: Console,
}

impl Link {
    /// The thread's body: returns when the connection has ended.
    pub fn serve(mut self, mut poll: Poll, mut inbox: Inbox) {
        let id = self.id;
        let opened = match connect::open(&self.target, &self.options) {
            Ok(opened) => opened,
            Err(e) => {
                lock(&self.record).failed(e.to_string());
                self.console
                    .line(format!("> [{id}] connection failed: {e}"));
                return;
            }
        };
        let server = opened
            .handshake
            .server
            .clone()
            .unwrap_or_else(|| "?".into());
        lock(&self.record).opened(opened.handshake);
        self.console
            .line(format!("> [{id}] open (server {server})"));
        let settings = self.settings;
        let ending = Pump::new(opened.ws, &mut poll, &mut inbox, &mut self, settings).run();
        lock(&self.record).ended(&ending);
        self.console.line(format!("> [{id}] {ending}"));
    }
}

impl Observer for Link {
    fn sent(&mut self, message: &Message) {
        lock(&self.record).sent(message);
    }

    fn received(&mut self, message: &Message) -> io::Result<()> {
        lock(&self.record).received(message);
        self.console
            .line(format!("< [{}] {}", self.id, describe(message)));
        Ok(())
    }

    fn closing(&mut self, initiator: Side, note: &CloseNote) {
        lock(&self.record).closing(initiator, note);
        if initiator == Side::Peer {
            self.console
                .line(format!("> [{}] the server is closing with {note}", self.id));
        }
    }
}
