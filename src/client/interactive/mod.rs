//! Interactive mode (`shardcast client` without a URL): a prompt that opens, drives and
//! inspects several connections at once, in the spirit of WebSocket++'s `utility_client`.
//!
//! The prompt thread parses commands ([`command`]) and acts on the [`registry`]; each
//! connection runs in its own thread ([`link`]), which records what happens ([`record`]) and
//! prints arriving messages above the prompt through the [`Console`].
//!
//! Commands start with `/` ([`crate::client::typed`]); any other line is a message for the
//! current connection (the last one opened with `/connect`), and `//` sends a leading `/`.
//!
//! ```text
//! client> /connect ws://127.0.0.1:8080/general
//! > Created connection with id 0
//! > [0] open (server shardcast/0.1.0)
//! client> hello
//! < [0] hello
//! client> /send 0 //not a command
//! < [0] /not a command
//! client> /close 0 4000 bye
//! > [0] closed by us with 4000 "bye"; the server answered 4000 "bye"
//! ```

pub mod command;
pub mod link;
pub mod record;
pub mod registry;

use rustyline::error::ReadlineError;
use rustyline::{Config, DefaultEditor};

use self::command::{Command, USAGE};
use self::registry::Registry;
use super::console::Console;
use super::error::ClientError;
use super::options::{ConnectOptions, LinkSettings};
use super::typed::{self, Typed};

/// The prompt.
pub const PROMPT: &str = "client> ";

/// Runs the prompt until `quit`, end of input (Ctrl-D) or a terminal error; every connection
/// is closed on the way out.
pub fn run(options: ConnectOptions, settings: LinkSettings) -> Result<(), ClientError> {
    let config = Config::builder().auto_add_history(true).build();
    let mut editor =
        DefaultEditor::with_config(config).map_err(|e| ClientError::Terminal(e.to_string()))?;
    // No terminal (input or output redirected): plain stdout lines instead.
    let console = match editor.create_external_printer() {
        Ok(printer) => Console::with_printer(Box::new(printer)),
        Err(_) => Console::stdout(),
    };
    let mut registry = Registry::new(options, settings, console.clone());
    console.line("> shardcast client: type /help for the commands");
    let outcome = loop {
        match editor.readline(PROMPT) {
            Ok(line) => {
                if execute(&line, &mut registry, &console) == Flow::Quit {
                    break Ok(());
                }
            }
            Err(ReadlineError::Interrupted) => {
                console.line("> Type /quit (or press Ctrl-D) to exit");
            }
            Err(ReadlineError::Eof) => break Ok(()),
            Err(e) => break Err(ClientError::Terminal(e.to_string())),
        }
    };
    // A close handshake takes a round trip; allow a bit more than the close timeout.
    registry.shutdown(settings.close_timeout + std::time::Duration::from_millis(500));
    outcome
}

/// Whether the prompt goes on.
#[derive(Debug, PartialEq, Eq)]
enum Flow {
    Continue,
    Quit,
}

/// Runs one typed line (a command, or a message for the current connection) and prints
/// its answer.
fn execute(line: &str, registry: &mut Registry, console: &Console) -> Flow {
    let line = match typed::classify(line) {
        Typed::Blank => return Flow::Continue,
        Typed::Say(text) => {
            if let Err(e) = registry.say(text.to_string()) {
                console.line(format!("> {e}"));
            }
            return Flow::Continue;
        }
        Typed::Command(line) => line,
    };
    let command = match command::parse(line) {
        Ok(Some(command)) => command,
        Ok(None) => return Flow::Continue,
        Err(e) => {
            console.line(format!("> {e}"));
            return Flow::Continue;
        }
    };
    let answer = match command {
        Command::Connect { url, subprotocol } => registry
            .connect(&url, subprotocol)
            .map(|id| vec![format!("Created connection with id {id}")]),
        Command::Send { id, text } => registry.send(id, text).map(|()| vec![]),
        Command::Close { id, code, reason } => registry
            .close(id, code, reason)
            .map(|()| vec![format!("Closing connection {id}")]),
        Command::Show { id } => registry.show(id),
        Command::List => Ok(registry.list()),
        Command::Help => Ok(typed::help_lines(USAGE)),
        Command::Quit => return Flow::Quit,
    };
    match answer {
        Ok(lines) => {
            let lines: Vec<String> = lines.iter().map(|l| format!("> {l}")).collect();
            console.block(&lines);
        }
        Err(e) => console.line(format!("> {e}")),
    }
    Flow::Continue
}
