//! Chat mode's view of a `shardcast.v1` room: each server envelope as one line a person reads
//! (docs/client.md has the table).
//!
//! ```text
//! * joined #general as ann (you are 0.12), 3 online
//! [history] bob: what you missed
//! ann: hello
//! * cy joined (1.5), 4 online
//! * cy left (1.5), 3 online
//! * 41 online
//! * 3 here: Ann (0.2), bob (1.1), (0.3)
//! ! bad_nick: a nickname is 1-24 letters, digits, '-', '_' or '.'
//! * --- some messages may be missing: ... ---
//! ```
//!
//! Rendering never fails: text that is not an envelope, and envelopes of a type this client
//! does not know, are shown as they came (a newer server may add some), binary messages as
//! their length. Peer input is never trusted to be well formed.

use serde::Deserialize;
use tungstenite::Message;

/// The prefix of a message replayed from history (`"history": true`).
pub const HISTORY: &str = "[history] ";

/// The fields of a server envelope that chat mode shows (docs/protocol.md).
#[derive(Debug, Deserialize)]
struct Envelope {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    nick: Option<String>,
    #[serde(default)]
    text: Option<String>,
    #[serde(default)]
    room: Option<String>,
    #[serde(default)]
    online: Option<u64>,
    #[serde(default)]
    history: Option<bool>,
    #[serde(default)]
    code: Option<String>,
    #[serde(default)]
    members: Option<Vec<Member>>,
    #[serde(default)]
    total: Option<u64>,
}

/// A member as a `members` envelope lists it.
#[derive(Debug, Deserialize)]
struct Member {
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    nick: Option<String>,
}

/// One received message as the line chat mode prints.
pub fn line(message: &Message) -> Option<String> {
    match message {
        Message::Text(text) => Some(text_line(text)),
        Message::Binary(bytes) => Some(format!("(binary message, {} bytes)", bytes.len())),
        _ => None,
    }
}

/// One received text message as a line: an envelope rendered, anything else as it is.
pub fn text_line(text: &str) -> String {
    let Ok(envelope) = serde_json::from_str::<Envelope>(text) else {
        return text.to_string();
    };
    let who = |e: &Envelope| match (&e.nick, &e.id) {
        (Some(nick), _) => nick.clone(),
        // A plain client has no nickname: its session id stands in.
        (None, Some(id)) => format!("({id})"),
        (None, None) => "(someone)".to_string(),
    };
    // After a nickname, the id tells two members of one name apart (who() shows it otherwise).
    let id = |e: &Envelope| match (&e.nick, &e.id) {
        (Some(_), Some(id)) => format!(" ({id})"),
        _ => String::new(),
    };
    let online = |e: &Envelope| e.online.map_or(String::new(), |n| format!(", {n} online"));
    match envelope.kind.as_str() {
        "message" => {
            let Some(body) = &envelope.text else {
                return text.to_string();
            };
            let prefix = if envelope.history == Some(true) {
                HISTORY
            } else {
                ""
            };
            format!("{prefix}{}: {body}", who(&envelope))
        }
        "welcome" => {
            let room = envelope
                .room
                .as_ref()
                .map_or(String::new(), |r| format!(" #{r}"));
            let nick = envelope.nick.as_deref().unwrap_or("?");
            let you = envelope
                .id
                .as_ref()
                .map_or(String::new(), |id| format!(" (you are {id})"));
            format!("* joined{room} as {nick}{you}{}", online(&envelope))
        }
        "join" => format!(
            "* {} joined{}{}",
            who(&envelope),
            id(&envelope),
            online(&envelope)
        ),
        "leave" => format!(
            "* {} left{}{}",
            who(&envelope),
            id(&envelope),
            online(&envelope)
        ),
        "online" => match envelope.online {
            Some(n) => format!("* {n} online"),
            None => text.to_string(),
        },
        "members" => match &envelope.members {
            Some(members) => members_line(members, envelope.total),
            None => text.to_string(),
        },
        // The server's text says to send another hello, which chat mode cannot: say what can.
        "error" if envelope.code.as_deref() == Some("nick_taken") => {
            "! nick_taken: someone in this room has that nickname; /quit and come back with \
             another --nick"
                .to_string()
        }
        "error" => format!(
            "! {}: {}",
            envelope.code.as_deref().unwrap_or("error"),
            envelope.text.as_deref().unwrap_or("")
        ),
        _ => text.to_string(),
    }
}

/// `/who`'s answer: `* 3 here: Ann (0.2), bob (1.1), (0.3)`, with how many were not listed.
fn members_line(members: &[Member], total: Option<u64>) -> String {
    let names: Vec<String> = members
        .iter()
        .map(|m| match (&m.nick, &m.id) {
            (Some(nick), Some(id)) => format!("{nick} ({id})"),
            (Some(nick), None) => nick.clone(),
            (None, Some(id)) => format!("({id})"),
            (None, None) => "(someone)".to_string(),
        })
        .collect();
    let total = total.unwrap_or(members.len() as u64);
    let unlisted = total.saturating_sub(members.len() as u64);
    let more = if unlisted > 0 {
        format!(" and {unlisted} more")
    } else {
        String::new()
    };
    format!("* {total} here: {}{more}", names.join(", "))
}

/// The session id a `welcome` gives this client (what the room's other members see).
pub fn welcome_id(text: &str) -> Option<String> {
    let envelope = serde_json::from_str::<Envelope>(text).ok()?;
    (envelope.kind == "welcome")
        .then_some(envelope.id)
        .flatten()
}

/// The marker line for a reconnection that may have lost messages.
pub fn gap(why: &str) -> String {
    format!("* --- some messages may be missing: {why} ---")
}

/// A progress note (connecting, reconnecting) as chat mode shows it in a terminal.
pub fn note(text: &str) -> String {
    format!("* {text}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_envelope_type_reads_as_a_line() {
        let cases = [
            (
                r#"{"type":"welcome","id":"0.12","room":"general","nick":"ann","online":3,"epoch":"9f3a0c1b2d4e5f60","offset":41,"replay":0}"#,
                "* joined #general as ann (you are 0.12), 3 online",
            ),
            (
                r#"{"type":"message","id":"1.4","nick":"bob","text":"hi <b>all</b>","ts":1,"offset":42}"#,
                "bob: hi <b>all</b>",
            ),
            (
                r#"{"type":"message","id":"1.4","nick":"bob","text":"old","ts":1,"offset":2,"history":true}"#,
                "[history] bob: old",
            ),
            (
                r#"{"type":"message","id":"0.9","nick":null,"text":"plain","ts":1}"#,
                "(0.9): plain",
            ),
            (
                r#"{"type":"join","id":"1.5","nick":"cy","online":4}"#,
                "* cy joined (1.5), 4 online",
            ),
            (
                r#"{"type":"leave","id":"1.4","nick":"bob","online":3}"#,
                "* bob left (1.4), 3 online",
            ),
            (
                r#"{"type":"join","id":"0.7","nick":null,"online":2}"#,
                "* (0.7) joined, 2 online",
            ),
            (r#"{"type":"online","online":41}"#, "* 41 online"),
            (
                r#"{"type":"error","code":"bad_nick","text":"no"}"#,
                "! bad_nick: no",
            ),
            (
                r#"{"type":"members","room":"r","members":[{"id":"0.2","nick":"Ann"},{"id":"1.1","nick":"bob","user":"u"},{"id":"0.3","nick":null}],"total":3,"truncated":false}"#,
                "* 3 here: Ann (0.2), bob (1.1), (0.3)",
            ),
            (
                r#"{"type":"error","code":"nick_taken","text":"choose another and send hello"}"#,
                "! nick_taken: someone in this room has that nickname; /quit and come back with another --nick",
            ),
            (
                r#"{"type":"members","room":"r","members":[{"id":"0.2","nick":"Ann"}],"total":1001,"truncated":true}"#,
                "* 1001 here: Ann (0.2) and 1000 more",
            ),
        ];
        for (envelope, expected) in cases {
            assert_eq!(text_line(envelope), expected, "{envelope}");
        }
    }

    #[test]
    fn the_welcome_names_our_id() {
        let welcome = r#"{"type":"welcome","id":"0.12","room":"r","nick":"a","online":1}"#;
        assert_eq!(welcome_id(welcome).as_deref(), Some("0.12"));
        assert_eq!(welcome_id(r#"{"type":"join","id":"0.1"}"#), None);
        assert_eq!(welcome_id("0.12"), None);
    }

    #[test]
    fn anything_else_is_shown_as_it_came() {
        for text in [
            "plain text",
            "",
            "[1,2]",
            r#"{"type":"future","x":1}"#,
            r#"{"type":"message"}"#,
            r#"{"no type":1}"#,
            r#"{"type":"online"}"#,
        ] {
            assert_eq!(text_line(text), text);
        }
        assert_eq!(
            line(&Message::binary(vec![1, 2, 3])).as_deref(),
            Some("(binary message, 3 bytes)")
        );
        assert_eq!(line(&Message::Ping(Default::default())), None);
    }

    #[test]
    fn text_with_newlines_or_odd_fields_does_not_panic() {
        let odd = r#"{"type":"message","nick":7,"text":"x"}"#;
        assert_eq!(text_line(odd), odd, "a mistyped field: as it came");
        assert_eq!(
            text_line(r#"{"type":"message","nick":"a","text":"two\nlines"}"#),
            "a: two\nlines"
        );
    }
}
