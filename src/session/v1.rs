//! The `shardcast.v1` rules a session applies to what its client says (docs/protocol.md):
//! a nickname from `?nick=` or a first `hello`, then `message` envelopes for the room.
//!
//! Framing stays in the session; this module only decides what a v1 text message means:
//! an [`Event`] for the shard, or an [`ErrorCode`] for the client.

use std::sync::Arc;
use std::time::Instant;

use crate::chat::envelope::{ClientEnvelope, ErrorCode, HelloSince};
use crate::chat::post::now_millis;
use crate::chat::{Body, Nick, Post};
use crate::history::{Ask, Epoch, Since};
use crate::room::RoomId;
use crate::session::Event;

/// What the v1 rules read and change of a session.
pub struct V1State<'a> {
    /// The nickname, once set.
    pub nick: &'a mut Option<Nick>,
    /// Set while a `hello` is due, cleared once one is accepted.
    pub hello: &'a mut Option<Box<AwaitingHello>>,
    /// The room the session upgraded into.
    pub room: Option<&'a RoomId>,
}

/// A v1 client that upgraded without a nickname: when its `hello` is due, and what the
/// upgrade's query asked of the history (a `hello` may ask instead).
#[derive(Debug)]
pub struct AwaitingHello {
    /// The deadline.
    pub until: Instant,
    /// The query's `history` and `since`.
    pub ask: Ask,
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
        (
            Some(ClientEnvelope::Hello {
                nick,
                history,
                since,
            }),
            None,
        ) => match Nick::parse(&nick) {
            Some(nick) => {
                *state.nick = Some(nick);
                let query_ask = state.hello.take().map_or_else(Ask::default, |h| h.ask);
                let (ask, error) = hello_ask(history, since, query_ask);
                if let Some(room) = state.room {
                    events.push(Event::Joined(room.clone(), ask));
                }
                error
            }
            None => Some(ErrorCode::BadNick),
        },
    }
}

/// What a `hello` asks of the history: its own `history` and `since` if it has either, the
/// query's otherwise. An epoch that is no epoch still asks for a resume (never recovered),
/// and is reported.
fn hello_ask(
    history: Option<u64>,
    since: Option<HelloSince>,
    query: Ask,
) -> (Ask, Option<ErrorCode>) {
    if history.is_none() && since.is_none() {
        return (query, None);
    }
    let epoch = since.as_ref().map(|s| Epoch::parse(&s.epoch));
    let ask = Ask {
        history: history.map_or(0, |n| n.min(u64::from(u32::MAX)) as u32),
        since: since.map(|s| Since {
            epoch: Epoch::parse(&s.epoch),
            offset: s.offset,
        }),
    };
    let error = matches!(epoch, Some(None)).then_some(ErrorCode::BadSince);
    (ask, error)
}

/// What a v1 client's upgrade leads to: with a valid `?nick=` it joins now (`Ok(true)`);
/// without one it must send a `hello` (`Ok(false)`); a bad one is refused (`Err`), and the
/// client may still send a `hello`.
pub fn greet(
    nick: Option<String>,
    own: &mut Option<Nick>,
    room: Option<&RoomId>,
    ask: Ask,
    events: &mut Vec<Event>,
) -> Result<bool, ErrorCode> {
    let Some(asked) = nick else {
        return Ok(false);
    };
    match Nick::parse(&asked) {
        Some(nick) => {
            *own = Some(nick);
            if let Some(room) = room {
                events.push(Event::Joined(room.clone(), ask));
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
        let mut hello = Some(Box::new(AwaitingHello {
            until: Instant::now(),
            ask: Ask {
                history: 7,
                since: None,
            },
        }));
        on_text(
            text,
            V1State {
                nick,
                hello: &mut hello,
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
        assert!(matches!(events.as_slice(), [Event::Joined(_, ask)] if ask.history == 7));
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
    fn a_hello_asks_for_history_itself_or_leaves_it_to_the_query() {
        let mut events = Vec::new();
        let hello = r#"{"type":"hello","nick":"a","history":3,"since":{"epoch":"00000000000000ff","offset":9}}"#;
        assert_eq!(run(hello, &mut None, &mut events), None);
        let [Event::Joined(_, ask)] = events.as_slice() else {
            panic!("one join, got {events:?}");
        };
        assert_eq!(ask.history, 3);
        assert_eq!(
            ask.since,
            Some(Since {
                epoch: Some(Epoch(255)),
                offset: 9
            })
        );
        // An epoch that is none: reported, and asked as a resume that cannot be recovered.
        let mut events = Vec::new();
        let hello = r#"{"type":"hello","nick":"a","since":{"epoch":"nope","offset":9}}"#;
        assert_eq!(
            run(hello, &mut None, &mut events),
            Some(ErrorCode::BadSince)
        );
        let [Event::Joined(_, ask)] = events.as_slice() else {
            panic!("one join, got {events:?}");
        };
        assert_eq!(ask.since.map(|s| s.epoch), Some(None));
    }

    #[test]
    fn greeting_takes_a_valid_query_nick_and_refuses_a_bad_one() {
        let room = RoomId::parse("r").unwrap();
        let (mut nick, mut events) = (None, Vec::new());
        let ask = Ask::default();
        assert_eq!(
            greet(None, &mut nick, Some(&room), ask, &mut events),
            Ok(false)
        );
        assert_eq!(
            greet(Some("a b".into()), &mut nick, Some(&room), ask, &mut events),
            Err(ErrorCode::BadNick)
        );
        assert_eq!(
            greet(Some("ann".into()), &mut nick, Some(&room), ask, &mut events),
            Ok(true)
        );
        assert_eq!(events.len(), 1);
    }
}
