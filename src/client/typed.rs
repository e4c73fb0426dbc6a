//! What a typed line means, in chat mode and in interactive mode: a message to send, or a
//! command. Commands start with `/`; a line starting with `//` sends the rest with one `/`
//! (so `//shrug` sends `/shrug`); every other line is a message, as typed.
//!
//! Chat mode's own commands are here too ([`ChatCommand`]); interactive mode parses the
//! command text with [`super::interactive::command::parse`].

/// One typed line, classified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Typed<'a> {
    /// Nothing but spaces: nothing to do (an empty message would be refused anyway).
    Blank,
    /// A message to send (a leading `//` already turned into `/`).
    Say(&'a str),
    /// A command: the line without its `/`.
    Command(&'a str),
}

/// Classifies `line` (without its line ending).
pub fn classify(line: &str) -> Typed<'_> {
    if line.trim().is_empty() {
        return Typed::Blank;
    }
    match line.strip_prefix('/') {
        Some(rest) if rest.starts_with('/') => Typed::Say(rest),
        Some(command) => Typed::Command(command),
        None => Typed::Say(line),
    }
}

/// Chat mode's commands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChatCommand {
    /// `/quit` (or `/exit`): leave the room and exit.
    Quit,
    /// `/help`: the commands.
    Help,
    /// `/who`: the room's members (a `who` envelope; the `members` answer is shown as a line).
    Who,
    /// Anything else (the command's first word).
    Unknown(String),
}

/// Every chat command's usage and summary, for `/help`.
pub const CHAT_HELP: &[(&str, &str)] = &[
    ("<text>", "send a message to the room"),
    ("//text", "send a message that starts with '/'"),
    ("/help", "this list"),
    ("/who", "who is here: the room's members"),
    ("/quit", "leave the room and exit (also Ctrl-D)"),
];

/// Parses the text of a chat command (after its `/`).
pub fn chat_command(command: &str) -> ChatCommand {
    let word = command.split_whitespace().next().unwrap_or("");
    match word.to_ascii_lowercase().as_str() {
        "quit" | "exit" | "q" => ChatCommand::Quit,
        "help" | "?" => ChatCommand::Help,
        "who" => ChatCommand::Who,
        _ => ChatCommand::Unknown(word.to_string()),
    }
}

/// `/help`'s lines for a table of usages.
pub fn help_lines(table: &[(&str, &str)]) -> Vec<String> {
    let width = table.iter().map(|(u, _)| u.len()).max().unwrap_or(0);
    let mut lines = vec!["Commands:".to_string()];
    lines.extend(
        table
            .iter()
            .map(|(usage, what)| format!("  {usage:width$}  {what}")),
    );
    lines
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_messages_commands_or_nothing() {
        assert_eq!(classify("hello"), Typed::Say("hello"));
        assert_eq!(classify("  spaced  "), Typed::Say("  spaced  "));
        assert_eq!(classify("a /b"), Typed::Say("a /b"));
        assert_eq!(classify("/quit"), Typed::Command("quit"));
        assert_eq!(
            classify("/connect ws://h/"),
            Typed::Command("connect ws://h/")
        );
        assert_eq!(classify("//shrug"), Typed::Say("/shrug"));
        assert_eq!(classify("///"), Typed::Say("//"));
        assert_eq!(classify("/"), Typed::Command(""));
        assert_eq!(classify(""), Typed::Blank);
        assert_eq!(classify(" \t "), Typed::Blank);
        assert_eq!(classify("héllo ✓"), Typed::Say("héllo ✓"));
    }

    #[test]
    fn chat_commands() {
        assert_eq!(chat_command("quit"), ChatCommand::Quit);
        assert_eq!(chat_command("EXIT"), ChatCommand::Quit);
        assert_eq!(chat_command("help"), ChatCommand::Help);
        assert_eq!(chat_command("who"), ChatCommand::Who);
        assert_eq!(chat_command("frob x"), ChatCommand::Unknown("frob".into()));
        assert_eq!(chat_command(""), ChatCommand::Unknown(String::new()));
    }

    #[test]
    fn help_aligns_the_summaries() {
        let lines = help_lines(&[("/a", "one"), ("/long", "two")]);
        assert_eq!(lines, ["Commands:", "  /a     one", "  /long  two"]);
    }
}
