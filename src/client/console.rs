//! Interactive mode's output: lines from the prompt and from every connection's thread.
//!
//! On a terminal, lines go through rustyline's external printer, which prints them above the
//! prompt and redraws the line being typed instead of tearing it apart. Without a terminal
//! (stdin or stdout redirected) they go to stdout. One lock orders whole lines from all
//! threads; it is held only while a line is written.

use std::io::{self, Write};
use std::sync::{Arc, Mutex, PoisonError};

use rustyline::ExternalPrinter;

/// Where lines end up.
enum Sink {
    /// Above the prompt (a terminal).
    Printer(Box<dyn ExternalPrinter + Send>),
    /// Plain stdout.
    Stdout,
}

/// A cloneable handle that prints whole lines.
#[derive(Clone)]
pub struct Console {
    sink: Arc<Mutex<Sink>>,
}

impl Console {
    /// Prints above rustyline's prompt.
    pub fn with_printer(printer: Box<dyn ExternalPrinter + Send>) -> Console {
        Console {
            sink: Arc::new(Mutex::new(Sink::Printer(printer))),
        }
    }

    /// Prints to stdout.
    pub fn stdout() -> Console {
        Console {
            sink: Arc::new(Mutex::new(Sink::Stdout)),
        }
    }

    /// Prints one line (a newline is added).
    pub fn line(&self, text: impl Into<String>) {
        let mut text = text.into();
        text.push('\n');
        // A thread that panicked mid-print leaves nothing half-done worth refusing over.
        let mut sink = self.sink.lock().unwrap_or_else(PoisonError::into_inner);
        if let Sink::Printer(printer) = &mut *sink {
            match printer.print(text.clone()) {
                Ok(()) => return,
                // The terminal went away under us: fall back for good.
                Err(e) => {
                    tracing::debug!("external printer failed ({e}); printing to stdout");
                    *sink = Sink::Stdout;
                }
            }
        }
        let mut out = io::stdout().lock();
        // Stdout closed: there is no one left to tell.
        let _ = out.write_all(text.as_bytes()).and_then(|()| out.flush());
    }

    /// Prints several lines as one block (not interleaved with other threads' lines).
    pub fn block(&self, lines: &[String]) {
        if !lines.is_empty() {
            self.line(lines.join("\n"));
        }
    }
}
