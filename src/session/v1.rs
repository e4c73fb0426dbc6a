//! The `shardcast.v1` rules a session applies to what its client says (docs/protocol.md):
//! a nickname from `?nick=` or a first `hello` (claimed in its room: `crate::names`),
//! then `message` and `who` envelopes.
//!
//! Framing stays in the session; this module only decides what a v1 text message means:
//! an [`Event`] for the shard, or an [`ErrorCode`] for the client.

use std::sync::Arc;
use std::time::Instant;

use crate::auth::{Grant, Refusal, Verifier};
use crate::chat::envelope::{ClientEnvelope, ErrorCode, HelloSince, TokenText};
use crate::chat::post::now_millis;
use crate::chat::{Body, Nick, Post};
use crate::config::AuthMode;
use crate::history::{Ask, Epoch, Since};
use crate::ids::SessionId;
use crate::names::{Claimant, NameClaims};
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
    /// What a token granted: from the upgrade, or set here by a `hello`'s token.
    pub grant: &'a mut Option<Box<Grant>>,
    /// Checks a `hello`'s token; `None` with `--auth off` (tokens are ignored).
    pub verifier: Option<&'a Verifier>,
    /// The loop's time.
    pub now: Instant,
    /// Where the nickname is claimed in its room.
    pub names: NameTaker<'a>,
}

/// What a session claims its nickname with: the node's table of held names, and its id.
#[derive(Clone, Copy)]
pub struct NameTaker<'a> {
    /// The names held in every room.
    pub names: &'a NameClaims,
    /// The session.
    pub session: SessionId,
    /// A reclaim token for the name (`?reclaim=`, or a `hello`'s `reclaim`).
    pub reclaim: Option<&'a str>,
}

impl NameTaker<'_> {
    /// Claims `nick` in `room` (`verified`: it is the token's name; `user`: the session's
    /// signed-in user): `nick_taken` when another member holds it. A session that the name
    /// was taken back from with a reclaim token is to be closed: [`Event::Replaced`].
    fn take(
        self,
        room: Option<&RoomId>,
        nick: &Nick,
        verified: bool,
        user: Option<&str>,
        events: &mut Vec<Event>,
    ) -> Result<(), ErrorCode> {
        let Some(room) = room else {
            return Ok(());
        };
        let who = Claimant {
            session: self.session,
            user,
            verified,
            reclaim: self.reclaim,
        };
        let claimed = self
            .names
            .claim(room, nick, who)
            .map_err(|_| ErrorCode::NickTaken)?;
        if let Some(old) = claimed.replaced {
            events.push(Event::Replaced(old));
        }
        Ok(())
    }
}

/// A v1 client that upgraded without a nickname: when its `hello` is due, and what the
/// upgrade's query asked of the history (a `hello` may ask instead).
#[derive(Debug)]
pub struct AwaitingHello {
    /// The deadline.
    pub until: Instant,
    /// The query's `history` and `since`.
    pub ask: Ask,
    /// A valid `?nick=` kept while the client's token is due in its `hello`.
    pub nick: Option<Nick>,
    /// The query's `?reclaim=`, for the name the `hello` asks for.
    pub reclaim: Option<Box<str>>,
}

/// What the session must tell a v1 client about one of its envelopes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    /// An `error` envelope; the connection stays.
    Error(ErrorCode),
    /// The `hello`'s token (or its absence) was refused: an `error` envelope saying why
    /// (`unauthorized`, or `forbidden` for the room), then close 1008.
    Refused(Refusal),
}

/// Acts on one text message from a v1 client: a `message` becomes [`Event::Message`] (from
/// `sender`), a `who` [`Event::Who`], a valid first `hello` sets the nickname (checking its
/// token, if any, and claiming the name in the room) and [`Event::Joined`]. Anything else is
/// answered with the returned [`Answer`].
pub fn on_text(
    text: &str,
    mut state: V1State<'_>,
    sender: impl FnOnce() -> Arc<str>,
    events: &mut Vec<Event>,
) -> Option<Answer> {
    let error = |code| Some(Answer::Error(code));
    match (ClientEnvelope::parse(text), state.nick.as_ref()) {
        (None, _) => error(ErrorCode::BadEnvelope),
        (Some(ClientEnvelope::Message { .. }), None) => error(ErrorCode::HelloRequired),
        (Some(ClientEnvelope::Message { text }), Some(_)) if text.is_empty() => {
            error(ErrorCode::EmptyMessage)
        }
        // A read-only member: one branch per message, anonymous or not.
        (Some(ClientEnvelope::Message { .. }), Some(_))
            if state.grant.as_ref().is_some_and(|g| !g.publish) =>
        {
            error(ErrorCode::Forbidden)
        }
        (Some(ClientEnvelope::Message { text }), Some(nick)) => {
            events.push(Event::Message(Post {
                sender: sender(),
                nick: Some(nick.clone()),
                user: state.grant.as_ref().map(|g| g.user.clone()),
                body: Body::Text(text.into()),
                ts: now_millis(),
            }));
            None
        }
        (Some(ClientEnvelope::Who), None) => error(ErrorCode::HelloRequired),
        (Some(ClientEnvelope::Who), Some(_)) => {
            events.push(Event::Who);
            None
        }
        (Some(ClientEnvelope::Hello { .. }), Some(_)) => error(ErrorCode::AlreadyJoined),
        (
            Some(ClientEnvelope::Hello {
                nick,
                token,
                history,
                since,
                reclaim,
            }),
            None,
        ) => {
            let name = match hello_token(token, &mut state) {
                Ok(name) => name,
                Err(refusal) => return Some(Answer::Refused(refusal)),
            };
            let kept = state.hello.as_ref().and_then(|h| h.nick.clone());
            let verified = name.is_some();
            // The token's name wins; then the hello's nick; then a `?nick=` kept for it.
            let chosen = match (name, nick) {
                (Some(name), _) => name,
                (None, Some(asked)) => match Nick::parse(&asked) {
                    Some(nick) => nick,
                    None => return error(ErrorCode::BadNick),
                },
                (None, None) => match kept {
                    Some(nick) => nick,
                    // A token without a name: the client must still name itself.
                    None if state.grant.is_some() => return error(ErrorCode::BadNick),
                    None => return error(ErrorCode::BadEnvelope),
                },
            };
            let user = state.grant.as_ref().map(|g| &*g.user);
            let kept_reclaim = state.hello.as_ref().and_then(|h| h.reclaim.as_deref());
            let names = NameTaker {
                reclaim: reclaim.as_deref().or(kept_reclaim),
                ..state.names
            };
            if let Err(code) = names.take(state.room, &chosen, verified, user, events) {
                return error(code);
            }
            *state.nick = Some(chosen);
            let query_ask = state.hello.take().map_or_else(Ask::default, |h| h.ask);
            let (ask, code) = hello_ask(history, since, query_ask);
            if let Some(room) = state.room {
                events.push(Event::Joined(room.clone(), ask));
            }
            code.map(Answer::Error)
        }
    }
}

/// Checks a `hello`'s token, for a client that brought none to its upgrade: a valid one
/// that allows the room is granted (its name returned); none is fine unless tokens are
/// required. Tokens are ignored with `--auth off`, and after the upgrade's.
fn hello_token(token: Option<TokenText>, state: &mut V1State<'_>) -> Result<Option<Nick>, Refusal> {
    let Some(verifier) = state.verifier else {
        return Ok(None);
    };
    if state.grant.is_some() {
        return Ok(None);
    }
    match token {
        Some(TokenText(token)) => {
            let identity = verifier.verify(&token)?;
            if state.room.is_some_and(|room| !identity.allows(room)) {
                return Err(Refusal::Room);
            }
            *state.grant = Some(Box::new(Grant::of(&identity, state.now)));
            Ok(identity.name)
        }
        None if verifier.mode() == AuthMode::Required => Err(Refusal::Missing),
        None => Ok(None),
    }
}

/// What a `hello` asks of the history: each of `history` and `since` from the `hello` if it
/// has it, from the query otherwise (a client may put `?history=50` in its URL and a resume's
/// `since` in its `hello`). An epoch that is no epoch still asks for a resume (never
/// recovered), and is reported.
fn hello_ask(
    history: Option<u64>,
    since: Option<HelloSince>,
    query: Ask,
) -> (Ask, Option<ErrorCode>) {
    let epoch = since.as_ref().map(|s| Epoch::parse(&s.epoch));
    let ask = Ask {
        history: history.map_or(query.history, |n| n.min(u64::from(u32::MAX)) as u32),
        since: since
            .map(|s| Since {
                epoch: Epoch::parse(&s.epoch),
                offset: s.offset,
            })
            .or(query.since),
    };
    let error = matches!(epoch, Some(None)).then_some(ErrorCode::BadSince);
    (ask, error)
}

/// Where a v1 client's upgrade leaves it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Greeting {
    /// A member now (it had a nickname: the token's name, or a valid `?nick=`).
    Joined,
    /// It must send a `hello`; a valid `?nick=` is kept for it when only its token is due.
    Awaiting(Option<Nick>),
}

/// What the greeting reads and sets of a session that just upgraded.
pub struct Greeted<'a> {
    /// The nickname, set when the client joins.
    pub own: &'a mut Option<Nick>,
    /// The room it upgraded into.
    pub room: Option<&'a RoomId>,
    /// Where its nickname is claimed.
    pub names: NameTaker<'a>,
    /// Its signed-in user, if the upgrade brought a token.
    pub user: Option<&'a str>,
}

/// What a v1 client's upgrade leads to: with the token's `name` or a valid `?nick=` it joins
/// now, unless its token is still due (`token_due`: `--auth required` and none came with the
/// upgrade); otherwise it must send a `hello`. A bad nickname, or one another member of the
/// room holds, is refused (`Err`), and the client may still send a `hello`.
pub fn greet(
    nick: Option<String>,
    name: Option<Nick>,
    token_due: bool,
    ask: Ask,
    state: Greeted<'_>,
    events: &mut Vec<Event>,
) -> Result<Greeting, ErrorCode> {
    let Greeted {
        own,
        room,
        names,
        user,
    } = state;
    let verified = name.is_some();
    let chosen = match (name, nick) {
        (Some(name), _) => name,
        (None, None) => return Ok(Greeting::Awaiting(None)),
        (None, Some(asked)) => Nick::parse(&asked).ok_or(ErrorCode::BadNick)?,
    };
    if token_due {
        return Ok(Greeting::Awaiting(Some(chosen)));
    }
    names.take(room, &chosen, verified, user, events)?;
    *own = Some(chosen);
    if let Some(room) = room {
        events.push(Event::Joined(room.clone(), ask));
    }
    Ok(Greeting::Joined)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(text: &str, nick: &mut Option<Nick>, events: &mut Vec<Event>) -> Option<ErrorCode> {
        match run_with(text, nick, &mut None, None, events) {
            None => None,
            Some(Answer::Error(code)) => Some(code),
            Some(other) => panic!("no token, yet {other:?}"),
        }
    }

    fn run_with(
        text: &str,
        nick: &mut Option<Nick>,
        grant: &mut Option<Box<Grant>>,
        verifier: Option<&Verifier>,
        events: &mut Vec<Event>,
    ) -> Option<Answer> {
        let room = RoomId::parse("r").unwrap();
        let mut hello = Some(Box::new(AwaitingHello {
            until: Instant::now(),
            ask: Ask {
                history: 7,
                since: None,
            },
            nick: None,
            reclaim: None,
        }));
        on_text(
            text,
            V1State {
                nick,
                hello: &mut hello,
                room: Some(&room),
                grant,
                verifier,
                now: Instant::now(),
                names: NameTaker {
                    names: &NameClaims::default(),
                    session: SessionId::default(),
                    reclaim: None,
                },
            },
            || Arc::from("0.1"),
            events,
        )
    }

    #[test]
    fn a_nickname_held_in_the_room_is_refused_and_the_client_may_try_another() {
        let names = NameClaims::default();
        let room = RoomId::parse("r").unwrap();
        let hello = |seq, text: &str, nick: &mut Option<Nick>, waiting: &mut Option<_>| {
            let state = V1State {
                nick,
                hello: waiting,
                room: Some(&room),
                grant: &mut None,
                verifier: None,
                now: Instant::now(),
                names: NameTaker {
                    names: &names,
                    session: SessionId { worker: 0, seq },
                    reclaim: None,
                },
            };
            on_text(text, state, || Arc::from("x"), &mut Vec::new())
        };
        let waiting = || {
            Some(Box::new(AwaitingHello {
                until: Instant::now(),
                ask: Ask::default(),
                nick: None,
                reclaim: None,
            }))
        };
        let (mut first, mut second) = (None, None);
        let (mut first_waits, mut second_waits) = (waiting(), waiting());
        let ann = r#"{"type":"hello","nick":"ann"}"#;
        assert_eq!(hello(1, ann, &mut first, &mut first_waits), None);
        let shouted = r#"{"type":"hello","nick":"ANN"}"#;
        assert_eq!(
            hello(2, shouted, &mut second, &mut second_waits),
            Some(Answer::Error(ErrorCode::NickTaken))
        );
        assert!(second.is_none() && second_waits.is_some(), "still waiting");
        let bob = r#"{"type":"hello","nick":"bob"}"#;
        assert_eq!(hello(2, bob, &mut second, &mut second_waits), None);
        assert_eq!(second.as_ref().map(Nick::as_str), Some("bob"));
    }

    const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef";

    fn verifier(mode: AuthMode) -> Verifier {
        Verifier::new(
            mode,
            jsonwebtoken::DecodingKey::from_secret(SECRET),
            jsonwebtoken::Algorithm::HS256,
        )
    }

    fn hello_with(claims: serde_json::Value, nick: Option<&str>) -> String {
        hello_signed(SECRET, claims, nick)
    }

    fn hello_signed(secret: &[u8], claims: serde_json::Value, nick: Option<&str>) -> String {
        let token = jsonwebtoken::encode(
            &jsonwebtoken::Header::default(),
            &claims,
            &jsonwebtoken::EncodingKey::from_secret(secret),
        )
        .unwrap();
        serde_json::json!({"type": "hello", "token": token, "nick": nick}).to_string()
    }

    #[test]
    fn a_hello_token_names_the_member_and_its_user_travels_with_its_messages() {
        let v = verifier(AuthMode::Optional);
        let (mut nick, mut grant, mut events) = (None, None, Vec::new());
        let hello = hello_with(serde_json::json!({"sub": "u-1", "name": "Ann"}), Some("x"));
        assert_eq!(
            run_with(&hello, &mut nick, &mut grant, Some(&v), &mut events),
            None
        );
        assert_eq!(nick.as_ref().map(Nick::as_str), Some("Ann"));
        assert_eq!(grant.as_ref().map(|g| &*g.user), Some("u-1"));
        let msg = r#"{"type":"message","text":"hi"}"#;
        assert_eq!(
            run_with(msg, &mut nick, &mut grant, Some(&v), &mut events),
            None
        );
        assert!(matches!(&events[1], Event::Message(p) if p.user.as_deref() == Some("u-1")));
    }

    #[test]
    fn a_hello_token_is_checked_and_required_when_tokens_are() {
        let (mut nick, mut events) = (None, Vec::new());
        let required = verifier(AuthMode::Required);
        let bare = r#"{"type":"hello","nick":"ann"}"#;
        let refused = |text: &str, v: &Verifier, nick: &mut Option<Nick>| {
            run_with(text, nick, &mut None, Some(v), &mut Vec::new())
        };
        assert_eq!(
            refused(bare, &required, &mut nick),
            Some(Answer::Refused(Refusal::Missing))
        );
        let forged = hello_signed(
            b"not the server's secret, 32 bytes",
            serde_json::json!({"sub": "u"}),
            Some("ann"),
        );
        assert_eq!(
            refused(&forged, &required, &mut nick),
            Some(Answer::Refused(Refusal::Signature))
        );
        let elsewhere = hello_with(serde_json::json!({"sub": "u", "rooms": ["other"]}), None);
        assert_eq!(
            refused(&elsewhere, &required, &mut nick),
            Some(Answer::Refused(Refusal::Room))
        );
        assert!(nick.is_none(), "refused clients never join");
        // Optional: no token is anonymous; --auth off: a token is ignored.
        let optional = verifier(AuthMode::Optional);
        assert_eq!(refused(bare, &optional, &mut nick), None);
        let mut grant = None;
        let signed = hello_with(serde_json::json!({"sub": "u", "name": "Bo"}), Some("cy"));
        assert_eq!(
            run_with(&signed, &mut None, &mut grant, None, &mut events),
            None
        );
        assert!(grant.is_none());
    }

    #[test]
    fn a_token_without_a_name_still_needs_a_nick_and_read_only_members_cannot_send() {
        let v = verifier(AuthMode::Required);
        let (mut nick, mut grant, mut events) = (None, None, Vec::new());
        let unnamed = hello_with(serde_json::json!({"sub": "u", "publish": false}), None);
        assert_eq!(
            run_with(&unnamed, &mut nick, &mut grant, Some(&v), &mut events),
            Some(Answer::Error(ErrorCode::BadNick))
        );
        // The token was taken: the next hello only needs a nick.
        let bare = r#"{"type":"hello","nick":"ann"}"#;
        assert_eq!(
            run_with(bare, &mut nick, &mut grant, Some(&v), &mut events),
            None
        );
        let msg = r#"{"type":"message","text":"hi"}"#;
        assert_eq!(
            run_with(msg, &mut nick, &mut grant, Some(&v), &mut events),
            Some(Answer::Error(ErrorCode::Forbidden))
        );
        assert_eq!(events.len(), 1, "the join only");
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
    fn the_query_and_the_hello_each_give_what_the_other_leaves_out() {
        let query = Ask {
            history: 50,
            since: None,
        };
        let since = HelloSince {
            epoch: "00000000000000ff".into(),
            offset: 9,
        };
        let (ask, error) = hello_ask(None, Some(since), query);
        assert_eq!(error, None);
        assert_eq!(ask.history, 50, "the query's history stays");
        assert_eq!(ask.since.map(|s| s.offset), Some(9));
        let query = Ask {
            history: 0,
            since: Some(Since {
                epoch: Some(Epoch(1)),
                offset: 4,
            }),
        };
        let (ask, _) = hello_ask(Some(7), None, query);
        assert_eq!(
            (ask.history, ask.since),
            (7, query.since),
            "the query's since stays"
        );
        assert_eq!(hello_ask(None, None, query), (query, None));
    }

    #[test]
    fn greeting_takes_a_valid_query_nick_and_refuses_a_bad_one() {
        let room = RoomId::parse("r").unwrap();
        let (mut nick, mut events) = (None, Vec::new());
        let ask = Ask::default();
        let names = NameClaims::default();
        let mut seq = 0;
        let mut greet_as = |query: Option<&str>, name: Option<&str>, due: bool| {
            let query = query.map(str::to_owned);
            let name = name.and_then(Nick::parse);
            seq += 1;
            let state = Greeted {
                own: &mut nick,
                room: Some(&room),
                names: NameTaker {
                    names: &names,
                    session: SessionId { worker: 0, seq },
                    reclaim: None,
                },
                user: None,
            };
            greet(query, name, due, ask, state, &mut events)
        };
        assert_eq!(greet_as(None, None, false), Ok(Greeting::Awaiting(None)));
        assert_eq!(greet_as(Some("a b"), None, false), Err(ErrorCode::BadNick));
        // A token due: a good query nick waits for the hello that brings it.
        assert_eq!(
            greet_as(Some("ann"), None, true),
            Ok(Greeting::Awaiting(Nick::parse("ann")))
        );
        assert_eq!(greet_as(Some("ann"), None, false), Ok(Greeting::Joined));
        assert_eq!(
            greet_as(Some("Ann"), None, false),
            Err(ErrorCode::NickTaken),
            "another session"
        );
        // The token's name wins over the query's.
        assert_eq!(
            greet_as(Some("ann"), Some("Zoe"), false),
            Ok(Greeting::Joined)
        );
        assert_eq!(nick.as_ref().map(Nick::as_str), Some("Zoe"));
        assert_eq!(events.len(), 2);
    }
}
