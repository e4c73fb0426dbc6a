//! The prompt's command language: one command per line after its `/` (which
//! [`crate::client::typed`] removes), words separated by spaces, the last argument of `send`
//! and `close` taking the rest of the line.

use std::fmt;

/// A connection's number in interactive mode: 0, 1, 2, ... in order of `connect`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ConnectionId(pub usize);

impl fmt::Display for ConnectionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// One parsed command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// `connect <url> [subprotocol]`: open a new connection in the background.
    Connect {
        /// The URL as typed (validated when connecting).
        url: String,
        /// A subprotocol that overrides `--subprotocol` for this connection.
        subprotocol: Option<String>,
    },
    /// `send <id> <message>`: send the rest of the line as a text message.
    Send {
        /// Which connection.
        id: ConnectionId,
        /// The message.
        text: String,
    },
    /// `close <id> [code] [reason]`: start the close handshake.
    Close {
        /// Which connection.
        id: ConnectionId,
        /// The status code (default 1000).
        code: u16,
        /// The reason (default empty).
        reason: String,
    },
    /// `show <id>`: everything known about a connection.
    Show {
        /// Which connection.
        id: ConnectionId,
    },
    /// `list`: one line per connection.
    List,
    /// `help`: the commands.
    Help,
    /// `quit`: close every connection and exit.
    Quit,
}

/// Why a line is not a command; the text is what the prompt prints.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    /// The first word is no command.
    #[error("Unknown command /{0} (type /help for the list; //{0} sends it as a message)")]
    Unknown(String),
    /// A required argument is missing.
    #[error("Missing {what}; usage: {usage}")]
    Missing {
        /// The argument's name.
        what: &'static str,
        /// The command's usage line.
        usage: &'static str,
    },
    /// More arguments than the command takes.
    #[error("Too many arguments; usage: {usage}")]
    TooMany {
        /// The command's usage line.
        usage: &'static str,
    },
    /// The id is not a number.
    #[error("Invalid connection id {0:?}: expected a number like 0")]
    BadId(String),
    /// The code is not one an endpoint may send (RFC 6455 §7.4).
    #[error("Invalid close code {0:?}: use 1000-1003, 1007-1014 or 3000-4999")]
    BadCode(String),
    /// The reason does not fit a close frame (125 bytes less the 2-byte code).
    #[error("Close reason too long: {0} bytes, at most {MAX_REASON}")]
    LongReason(usize),
}

/// Longest close reason, in bytes: a control frame carries at most 125, 2 of them the code.
pub const MAX_REASON: usize = 123;

/// Every command's usage line and summary, for `help`.
pub const USAGE: &[(&str, &str)] = &[
    ("<message>", "send a text message on the current connection"),
    ("//message", "send a text message that starts with '/'"),
    (
        CONNECT,
        "open a connection (in the background); prints its id; it becomes the current one",
    ),
    (SEND, "send a text message on connection <id>"),
    (CLOSE, "close with a code (default 1000) and reason"),
    (SHOW, "URL, state, headers, counts and message history"),
    (
        WHO,
        "ask a shardcast.v1 room who is in it (sends {\"type\":\"who\"} on <id>)",
    ),
    (
        LIST,
        "one line per connection, with the server's id for us (shardcast.v1)",
    ),
    (HELP, "this list"),
    (QUIT, "close every connection and exit"),
];

const CONNECT: &str = "/connect <url> [subprotocol]";
const SEND: &str = "/send <id> <message>";
const CLOSE: &str = "/close <id> [code] [reason]";
const SHOW: &str = "/show <id>";
const WHO: &str = "/who <id>";

/// What `/who` sends (docs/protocol.md, "Who is here").
const WHO_ENVELOPE: &str = r#"{"type":"who"}"#;
const LIST: &str = "/list";
const HELP: &str = "/help";
const QUIT: &str = "/quit";

/// Parses one line; `Ok(None)` for a blank one.
pub fn parse(line: &str) -> Result<Option<Command>, ParseError> {
    let Some((word, rest)) = next_word(line) else {
        return Ok(None);
    };
    let command = match word.to_ascii_lowercase().as_str() {
        "connect" => {
            let (url, rest) = next_word(rest).ok_or(ParseError::Missing {
                what: "URL",
                usage: CONNECT,
            })?;
            let subprotocol = match next_word(rest) {
                Some((p, rest)) if next_word(rest).is_none() => Some(p.to_string()),
                Some(_) => return Err(ParseError::TooMany { usage: CONNECT }),
                None => None,
            };
            Command::Connect {
                url: url.to_string(),
                subprotocol,
            }
        }
        "send" => {
            let (id, text) = id_and_rest(rest, SEND)?;
            if text.is_empty() {
                return Err(ParseError::Missing {
                    what: "message",
                    usage: SEND,
                });
            }
            Command::Send {
                id,
                text: text.to_string(),
            }
        }
        "close" => {
            let (id, rest) = id_and_rest(rest, CLOSE)?;
            let (code, reason) = match next_word(rest) {
                Some((code, reason)) => (parse_code(code)?, reason.trim()),
                None => (1000, ""),
            };
            if reason.len() > MAX_REASON {
                return Err(ParseError::LongReason(reason.len()));
            }
            Command::Close {
                id,
                code,
                reason: reason.to_string(),
            }
        }
        "show" => Command::Show {
            id: only_id(rest, SHOW)?,
        },
        "who" => Command::Send {
            id: only_id(rest, WHO)?,
            text: WHO_ENVELOPE.to_string(),
        },
        "list" => no_arguments(rest, LIST, Command::List)?,
        "help" | "?" => no_arguments(rest, HELP, Command::Help)?,
        "quit" | "exit" => no_arguments(rest, QUIT, Command::Quit)?,
        _ => return Err(ParseError::Unknown(word.to_string())),
    };
    Ok(Some(command))
}

/// The first word of `s` and what follows it (leading spaces removed).
fn next_word(s: &str) -> Option<(&str, &str)> {
    let s = s.trim_start();
    if s.is_empty() {
        return None;
    }
    let end = s.find(char::is_whitespace).unwrap_or(s.len());
    let (word, rest) = s.split_at(end);
    // One separator belongs to the word; the rest of the line is kept as typed.
    let rest = rest.strip_prefix(char::is_whitespace).unwrap_or(rest);
    Some((word, rest.trim_start()))
}

fn id_and_rest<'a>(s: &'a str, usage: &'static str) -> Result<(ConnectionId, &'a str), ParseError> {
    let (id, rest) = next_word(s).ok_or(ParseError::Missing {
        what: "connection id",
        usage,
    })?;
    let id = id
        .parse()
        .map(ConnectionId)
        .map_err(|_| ParseError::BadId(id.to_string()))?;
    Ok((id, rest))
}

fn only_id(s: &str, usage: &'static str) -> Result<ConnectionId, ParseError> {
    let (id, rest) = id_and_rest(s, usage)?;
    no_arguments(rest, usage, id)
}

fn no_arguments<T>(rest: &str, usage: &'static str, value: T) -> Result<T, ParseError> {
    match next_word(rest) {
        None => Ok(value),
        Some(_) => Err(ParseError::TooMany { usage }),
    }
}

/// A status code an endpoint may put in a close frame: the defined ones except those
/// reserved for reporting (1004-1006, 1015), and the registered (3xxx) and private (4xxx).
fn parse_code(s: &str) -> Result<u16, ParseError> {
    match s.parse::<u16>() {
        Ok(code @ (1000..=1003 | 1007..=1014 | 3000..=4999)) => Ok(code),
        _ => Err(ParseError::BadCode(s.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(line: &str) -> Command {
        parse(line)
            .unwrap_or_else(|e| panic!("{line:?}: {e}"))
            .unwrap_or_else(|| panic!("{line:?} is blank"))
    }

    #[test]
    fn connect_takes_a_url_and_an_optional_subprotocol() {
        assert_eq!(
            ok("connect ws://127.0.0.1:8080/room"),
            Command::Connect {
                url: "ws://127.0.0.1:8080/room".into(),
                subprotocol: None
            }
        );
        assert_eq!(
            ok("  connect   wss://h/r  chat "),
            Command::Connect {
                url: "wss://h/r".into(),
                subprotocol: Some("chat".into())
            }
        );
    }

    #[test]
    fn send_keeps_the_rest_of_the_line() {
        assert_eq!(
            ok("send 3 hello,  world "),
            Command::Send {
                id: ConnectionId(3),
                text: "hello,  world ".into()
            }
        );
    }

    #[test]
    fn who_sends_the_who_envelope() {
        assert_eq!(
            parse("who 2"),
            Ok(Some(Command::Send {
                id: ConnectionId(2),
                text: r#"{"type":"who"}"#.into()
            }))
        );
        assert!(matches!(parse("who"), Err(ParseError::Missing { .. })));
        assert!(matches!(parse("who 1 2"), Err(ParseError::TooMany { .. })));
    }

    #[test]
    fn close_defaults_to_1000_and_an_empty_reason() {
        assert_eq!(
            ok("close 1"),
            Command::Close {
                id: ConnectionId(1),
                code: 1000,
                reason: String::new()
            }
        );
        assert_eq!(
            ok("close 1 4000 bye for now"),
            Command::Close {
                id: ConnectionId(1),
                code: 4000,
                reason: "bye for now".into()
            }
        );
    }

    #[test]
    fn simple_commands_and_blank_lines() {
        assert_eq!(
            ok("show 0"),
            Command::Show {
                id: ConnectionId(0)
            }
        );
        assert_eq!(ok("list"), Command::List);
        assert_eq!(ok("HELP"), Command::Help);
        assert_eq!(ok("quit"), Command::Quit);
        assert_eq!(ok("exit"), Command::Quit);
        assert_eq!(parse("   "), Ok(None));
        assert_eq!(parse(""), Ok(None));
    }

    #[test]
    fn mistakes_get_a_message_not_a_panic() {
        let long_reason = format!("close 0 1000 {}", "x".repeat(124));
        let cases: &[(&str, ParseError)] = &[
            ("frobnicate 1", ParseError::Unknown("frobnicate".into())),
            (
                "connect",
                ParseError::Missing {
                    what: "URL",
                    usage: CONNECT,
                },
            ),
            (
                "connect ws://h/ a b",
                ParseError::TooMany { usage: CONNECT },
            ),
            (
                "send",
                ParseError::Missing {
                    what: "connection id",
                    usage: SEND,
                },
            ),
            (
                "send 0",
                ParseError::Missing {
                    what: "message",
                    usage: SEND,
                },
            ),
            ("send x hi", ParseError::BadId("x".into())),
            ("send -1 hi", ParseError::BadId("-1".into())),
            (
                "show 99999999999999999999999",
                ParseError::BadId("99999999999999999999999".into()),
            ),
            ("show 0 1", ParseError::TooMany { usage: SHOW }),
            ("list all", ParseError::TooMany { usage: LIST }),
            ("close 0 1005", ParseError::BadCode("1005".into())),
            ("close 0 999", ParseError::BadCode("999".into())),
            ("close 0 5000", ParseError::BadCode("5000".into())),
            ("close 0 abc", ParseError::BadCode("abc".into())),
            (&long_reason, ParseError::LongReason(124)),
        ];
        for (line, expected) in cases {
            assert_eq!(parse(line).as_ref(), Err(expected), "{line:?}");
        }
    }

    #[test]
    fn error_messages_name_the_usage() {
        let e = parse("close").unwrap_err().to_string();
        assert_eq!(
            e,
            "Missing connection id; usage: /close <id> [code] [reason]"
        );
    }

    #[test]
    fn multibyte_text_survives() {
        assert_eq!(
            ok("send 0 héllo wörld ✓"),
            Command::Send {
                id: ConnectionId(0),
                text: "héllo wörld ✓".into()
            }
        );
    }
}
