//! The `shardcast.v1` rules a session applies to what its client says (docs/protocol.md):
//! a nickname from `?nick=` or a first `hello`, then `message` envelopes for the room.
//!
//! Framing stays in the session; this module only decides what a v1 text message means:
//! an [`Event`] for the shard, or an [`ErrorCode`] for the client.

use std::sync::Arc;
use std::time::Instant;

use crate::chat::envelope::{ClientEnvelope, ErrorCode};
use crate::chat::post::now_millis;
use crate::chat::{Body, Nick, Post};
use crate::room::RoomId;
use crate::session::Event;

/// What the v1 rules read and change of a session.
pub struct V1State<'a> {
    /// The nickname, once set.
    pub nick: &'a mut Option<Nick>,
    /// The deadline for a `hello`, cleared once one is accepted.
    pub hello_until: &'a mut Option<Instant>,
    /// The room the session upgraded into.
    pub room: Option<&'a RoomId>,
}

/// Acts on one text message from a v1 client: a `message` becomes [`Event::Message`] (from
/// `sender`), a valid first `hello` sets the nickname and [`Event::Joined`]. Anything else is
/// refused with the returned code.
pub fn on_text(
    text: &str,
    state: V1State<'_>,
    sender: impl FnOnce() -> Arc<str>,
    events: &mut Vec<Event>,
) -> Option<ErrorCode> {
    match (ClientEnvelope::parse(text), state.nick.as_ref()) {
        (None, _) => Some(ErrorCode::BadEnvelope),
        (Some(ClientEnvelope::Message { .. }), None) => Some(ErrorCode::HelloRequired),
        (Some(ClientEnvelope::Message { text }), Some(_)) if text.is_empty() => {
            Some(ErrorCode::EmptyMessage)
        }
        (Some(ClientEnvelope::Message { text }), Some(nick)) => {
            events.push(Event::Message(Post {
                sender: sender(),
                nick: Some(nick.clone()),
                body: Body::Text(text.into()),
                ts: now_millis(),
            }));
            None
        }
        (Some(ClientEnvelope::Hello { .. }), Some(_)) => Some(ErrorCode::AlreadyJoined),
        (Some(ClientEnvelope::Hello { nick }), None) => match Nick::parse(&nick) {
            Some(nick) => {
                *state.nick = Some(nick);
                *state.hello_until = None;
                if let Some(room) = state.room {
                    events.push(Event::Joined(room.clone()));
                }
                None
            }
            None => Some(ErrorCode::BadNick),
        },
    }
}

/// What a v1 client's upgrade leads to: with a valid `?nick=` it joins now (`Ok(true)`);
/// without one it must send a `hello` (`Ok(false)`); a bad one is refused (`Err`), and the
/// client may still send a `hello`.
pub fn greet(
    nick: Option<String>,
    own: &mut Option<Nick>,
    room: Option<&RoomId>,
    events: &mut Vec<Event>,
) -> Result<bool, ErrorCode> {
    let Some(asked) = nick else {
        return Ok(false);
    };
    match Nick::parse(&asked) {
        Some(nick) => {
            *own = Some(nick);
            if let Some(room) = room {
                events.push(Event::Joined(room.clone()));
            }
            Ok(true)
        }
        None => Err(ErrorCode::BadNick),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(text: &str, nick: &mut Option<Nick>, events: &mut Vec<Event>) -> Option<ErrorCode> {
        let room = RoomId::parse("r").unwrap();
        let mut hello_until = Some(Instant::now());
        on_text(
            text,
            V1State {
                nick,
                hello_until: &mut hello_until,
                room: Some(&room),
            },
            || Arc::from("0.1"),
            events,
        )
    }

    #[test]
    fn a_hello_sets_the_nick_once_and_joins() {
        let (mut nick, mut events) = (None, Vec::new());
        let hello = r#"{"type":"hello","nick":"ann"}"#;
        assert_eq!(run(hello, &mut nick, &mut events), None);
        assert_eq!(nick.as_ref().map(Nick::as_str), Some("ann"));
        assert!(matches!(events.as_slice(), [Event::Joined(_)]));
        assert_eq!(
            run(hello, &mut nick, &mut events),
            Some(ErrorCode::AlreadyJoined)
        );
    }

    #[test]
    fn messages_need_a_nick_and_text() {
        let (mut nick, mut events) = (None, Vec::new());
        let msg = r#"{"type":"message","text":"hi"}"#;
        assert_eq!(
            run(msg, &mut nick, &mut events),
            Some(ErrorCode::HelloRequired)
        );
        nick = Nick::parse("bob");
        assert_eq!(
            run(r#"{"type":"message","text":""}"#, &mut nick, &mut events),
            Some(ErrorCode::EmptyMessage)
        );
        assert_eq!(run(msg, &mut nick, &mut events), None);
        assert!(matches!(events.as_slice(), [Event::Message(p)] if &*p.sender == "0.1"));
        assert_eq!(
            run("not json", &mut nick, &mut events),
            Some(ErrorCode::BadEnvelope)
        );
    }

    #[test]
    fn greeting_takes_a_valid_query_nick_and_refuses_a_bad_one() {
        let room = RoomId::parse("r").unwrap();
        let (mut nick, mut events) = (None, Vec::new());
        assert_eq!(greet(None, &mut nick, Some(&room), &mut events), Ok(false));
        assert_eq!(
            greet(Some("a b".into()), &mut nick, Some(&room), &mut events),
            Err(ErrorCode::BadNick)
        );
        assert_eq!(
            greet(Some("ann".into()), &mut nick, Some(&room), &mut events),
            Ok(true)
        );
        assert_eq!(events.len(), 1);
    }
}
