//! The JSON envelopes of `shardcast.v1`, each carried in one text frame.
//!
//! Client envelopes are parsed with serde (unknown fields ignored, so later clients may add
//! some); server envelopes are serialized and framed at once. A message or notice envelope is
//! built once and shared by every v1 recipient; only `welcome` and `error` are per session.

use serde::{Deserialize, Serialize};

use crate::chat::nick::NICK_RULE;
use crate::frame::{OP_TEXT, SharedFrame, encode_shared};

/// What a v1 client may send.
#[derive(Debug, PartialEq, Eq, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum ClientEnvelope {
    /// Sets the nickname (when `?nick=` did not).
    Hello {
        /// The nickname asked for (it may be left out when the token names the member).
        #[serde(default)]
        nick: Option<String>,
        /// A signed connection token (docs/auth.md), for a client that did not bring one to
        /// the upgrade.
        #[serde(default)]
        token: Option<TokenText>,
        /// The room's last messages to replay after the welcome.
        #[serde(default)]
        history: Option<u64>,
        /// Resume after this position (docs/protocol.md, "History and resume").
        #[serde(default)]
        since: Option<HelloSince>,
        /// Take the nickname back from this client's earlier connection: the `reclaim` of
        /// its welcome (docs/protocol.md, "Unique nicknames").
        #[serde(default)]
        reclaim: Option<String>,
    },
    /// A message for the room.
    Message {
        /// Its text.
        text: String,
    },
    /// Who is in the room? Answered with [`members`].
    Who,
}

impl ClientEnvelope {
    /// Parses one text message; `None` when it is not a valid client envelope.
    pub fn parse(text: &str) -> Option<ClientEnvelope> {
        serde_json::from_str(text).ok()
    }
}

/// A token as a `hello` carries it. Its `Debug` never shows it, so that it cannot reach a log.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct TokenText(pub String);

impl std::fmt::Debug for TokenText {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "TokenText({} bytes)", self.0.len())
    }
}

/// A `hello`'s resume position, as sent: the epoch token (checked by the history) and the
/// offset of the last message the client has.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct HelloSince {
    /// The epoch, 16 hex digits.
    pub epoch: String,
    /// The offset.
    pub offset: u64,
}

/// Why a client's envelope was refused (the `code` of an `error` envelope).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    /// The nickname breaks the rule.
    BadNick,
    /// A `message` before the client has a nickname.
    HelloRequired,
    /// A `hello` after the client has a nickname.
    AlreadyJoined,
    /// Not a client envelope.
    BadEnvelope,
    /// A `message` with empty text.
    EmptyMessage,
    /// More history asked for than the room keeps (the most it keeps is sent).
    HistoryLimit,
    /// A `since` epoch that is not 16 hex digits (the join goes on, not recovered).
    BadSince,
    /// A message over `--max-publish-rate`: it was dropped.
    RateLimited,
    /// A `hello` without a valid token where one is needed (the connection is closed).
    Unauthorized,
    /// The token does not allow this: the room (the connection is closed) or publishing.
    Forbidden,
    /// The nickname is held by another member of the room (the client may try another).
    NickTaken,
    /// A `who` while the server has too many to answer (the client may ask again later).
    Busy,
    /// The cluster cannot order messages now (Redis unreachable): the message was not sent.
    Unavailable,
}

impl ErrorCode {
    /// The code as sent, and the explanation for people.
    pub fn wire(self) -> (&'static str, &'static str) {
        match self {
            ErrorCode::BadNick => ("bad_nick", NICK_RULE),
            ErrorCode::HelloRequired => (
                "hello_required",
                "send {\"type\":\"hello\",\"nick\":...} before messages",
            ),
            ErrorCode::AlreadyJoined => ("already_joined", "the nickname is already set"),
            ErrorCode::BadEnvelope => (
                "bad_envelope",
                "expected {\"type\":\"message\",\"text\":...} or {\"type\":\"hello\",\"nick\":...}",
            ),
            ErrorCode::EmptyMessage => ("empty_message", "a message needs some text"),
            ErrorCode::HistoryLimit => (
                "history_limit",
                "more history asked for than the room keeps (--history-size): sending all it has",
            ),
            ErrorCode::BadSince => (
                "bad_since",
                "since is {\"epoch\":<16 hex digits>,\"offset\":<number>}: not resumed",
            ),
            ErrorCode::RateLimited => (
                "rate_limited",
                "too many messages too fast: this one was not sent; slow down",
            ),
            ErrorCode::Unauthorized => ("unauthorized", "a valid token is required"),
            ErrorCode::Forbidden => (
                "forbidden",
                "read-only: the token does not allow sending messages",
            ),
            ErrorCode::NickTaken => (
                "nick_taken",
                "someone in this room has that nickname: choose another and send hello",
            ),
            ErrorCode::Busy => (
                "busy",
                "the server has too many member lists to make: ask again in a moment",
            ),
            ErrorCode::Unavailable => (
                "unavailable",
                "the cluster cannot order messages now (Redis unreachable): this one was not \
                 sent; send it again later",
            ),
        }
    }
}

/// A change in a room's membership.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// Somebody arrived.
    Join,
    /// Somebody left.
    Leave,
}

#[derive(Serialize)]
#[serde(tag = "type", rename_all = "lowercase")]
enum ServerEnvelope<'a> {
    Welcome {
        id: &'a str,
        room: &'a str,
        nick: &'a str,
        #[serde(skip_serializing_if = "Option::is_none")]
        user: Option<&'a str>,
        online: u64,
        #[serde(skip_serializing_if = "Option::is_none")]
        epoch: Option<&'a str>,
        #[serde(skip_serializing_if = "Option::is_none")]
        offset: Option<u64>,
        #[serde(skip_serializing_if = "Option::is_none")]
        replay: Option<u64>,
        #[serde(skip_serializing_if = "Option::is_none")]
        recovered: Option<bool>,
        /// `--max-message`: the largest message (the whole envelope, in bytes) the server
        /// takes, so that a client can refuse a longer one instead of being closed with 1009.
        max_message_bytes: usize,
        /// The token with which a new connection of this client takes the nickname back
        /// from this one (`crate::names`).
        #[serde(skip_serializing_if = "Option::is_none")]
        reclaim: Option<&'a str>,
    },
    Message {
        id: &'a str,
        nick: Option<&'a str>,
        #[serde(skip_serializing_if = "Option::is_none")]
        user: Option<&'a str>,
        #[serde(skip_serializing_if = "Option::is_none")]
        from: Option<&'a str>,
        text: &'a str,
        ts: u64,
        #[serde(skip_serializing_if = "is_zero")]
        offset: u64,
        #[serde(skip_serializing_if = "is_false")]
        history: bool,
    },
    Join {
        id: &'a str,
        nick: Option<&'a str>,
        #[serde(skip_serializing_if = "Option::is_none")]
        user: Option<&'a str>,
        online: u64,
    },
    Leave {
        id: &'a str,
        nick: Option<&'a str>,
        #[serde(skip_serializing_if = "Option::is_none")]
        user: Option<&'a str>,
        online: u64,
    },
    Error {
        code: &'a str,
        text: &'a str,
    },
    Online {
        online: u64,
    },
    Notice {
        code: &'a str,
        text: &'a str,
        online: u64,
    },
}

/// Where a joining member starts in its room's history: `welcome`'s history fields, each
/// absent when `None` (all but `recovered` are, with history off).
#[derive(Debug, Clone, Copy, Default)]
pub struct WelcomeStart<'a> {
    /// The history's epoch token.
    pub epoch: Option<&'a str>,
    /// The room's latest offset when the member joined.
    pub offset: Option<u64>,
    /// How many history messages follow the welcome.
    pub replay: Option<u64>,
    /// Whether a resume (`since`) was exact; absent when the client did not ask for one.
    pub recovered: Option<bool>,
}

/// A message's place in its room: its offset (0: none, history off) and whether it is
/// replayed from history.
#[derive(Debug, Clone, Copy, Default)]
pub struct Place {
    /// The offset.
    pub offset: u64,
    /// Replayed from history (after a `welcome`), not live.
    pub replayed: bool,
    /// Sent by the server API (`POST /api/publish`), not by a member: `"from":"server"`.
    pub from_server: bool,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

fn is_false(b: &bool) -> bool {
    !*b
}

fn frame(envelope: &ServerEnvelope) -> SharedFrame {
    // Serializing borrowed strings and integers into a Vec cannot fail.
    let json = serde_json::to_vec(envelope).unwrap_or_default();
    encode_shared(OP_TEXT, &json)
}

/// Who a member is, as envelopes name it: its session id, its nickname (`None` for a plain
/// client) and, for a member with a token, its user id.
#[derive(Debug, Clone, Copy, Default)]
pub struct Who<'a> {
    /// The session id.
    pub id: &'a str,
    /// The nickname.
    pub nick: Option<&'a str>,
    /// The user id (`sub`) of a member with a token.
    pub user: Option<&'a str>,
}

/// `welcome`: the session `who.id` is now a member of `room` as `who.nick`; `online` members
/// in all; where it starts in the room's history, when history is on; the largest message
/// it may send (`max_message_bytes`, the whole text frame).
pub fn welcome(
    who: Who,
    room: &str,
    online: u64,
    start: WelcomeStart,
    max_message_bytes: usize,
    reclaim: Option<&str>,
) -> SharedFrame {
    frame(&ServerEnvelope::Welcome {
        id: who.id,
        room,
        nick: who.nick.unwrap_or(""),
        user: who.user,
        online,
        epoch: start.epoch,
        offset: start.offset,
        replay: start.replay,
        recovered: start.recovered,
        max_message_bytes,
        reclaim,
    })
}

/// `message`: `text` from member `who`, received at `ts` (milliseconds since the Unix
/// epoch), at `place` in its room.
pub fn message(who: Who, text: &str, ts: u64, place: Place) -> SharedFrame {
    frame(&ServerEnvelope::Message {
        id: who.id,
        nick: who.nick,
        user: who.user,
        from: place.from_server.then_some("server"),
        text,
        ts,
        offset: place.offset,
        history: place.replayed,
    })
}

/// `join` or `leave` of member `who`; `online` counts the change.
pub fn presence(change: Change, who: Who, online: u64) -> SharedFrame {
    let Who { id, nick, user } = who;
    frame(&match change {
        Change::Join => ServerEnvelope::Join {
            id,
            nick,
            user,
            online,
        },
        Change::Leave => ServerEnvelope::Leave {
            id,
            nick,
            user,
            online,
        },
    })
}

/// `online`: the room's count changed without a known member (a cluster node was lost, or
/// its counts were corrected by a heartbeat).
pub fn online(online: u64) -> SharedFrame {
    frame(&ServerEnvelope::Online { online })
}

/// A change in the server's own state that members should know of (`notice`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Notice {
    /// In a cluster: messages stopped reaching other nodes; `online` is this node's members.
    ClusterDown,
    /// In a cluster: messages reach other nodes again.
    ClusterUp,
}

impl Notice {
    /// The code as sent, and the explanation for people.
    pub fn wire(self) -> (&'static str, &'static str) {
        match self {
            Notice::ClusterDown => (
                "cluster_down",
                "messages no longer reach members on other servers; only members here are \
                 counted",
            ),
            Notice::ClusterUp => ("cluster_up", "messages reach every server again"),
        }
    }
}

/// `notice`: `notice` happened; the room has `online` members now (as far as the server can
/// vouch for them).
pub fn notice(notice: Notice, online: u64) -> SharedFrame {
    let (code, text) = notice.wire();
    frame(&ServerEnvelope::Notice { code, text, online })
}

/// `error` with `code`.
pub fn error(code: ErrorCode) -> SharedFrame {
    let (code, text) = code.wire();
    frame(&ServerEnvelope::Error { code, text })
}

/// `error` with `code` and a more precise `text` than its usual one (why a token was refused).
pub fn error_saying(code: ErrorCode, text: &str) -> SharedFrame {
    let (code, _) = code.wire();
    frame(&ServerEnvelope::Error { code, text })
}

// `who` is answered with `members` (docs/protocol.md, "Who is here").

/// One member as `members` lists it.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Listed<'a> {
    /// Its session id.
    pub id: &'a str,
    /// Its nickname (`None`: a plain client).
    pub nick: Option<&'a str>,
    /// Its user id, when it came with a token.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user: Option<&'a str>,
}

#[derive(Serialize)]
struct MembersEnvelope<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    room: &'a str,
    members: &'a [Listed<'a>],
    total: u64,
    truncated: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    complete: Option<bool>,
}

/// `members`: `listed` of the `total` members of `room` (`truncated` when that is not all of
/// them); in a cluster, `complete` says whether every node answered in time.
pub fn members(room: &str, listed: &[Listed], total: u64, complete: Option<bool>) -> SharedFrame {
    let envelope = MembersEnvelope {
        kind: "members",
        room,
        members: listed,
        total,
        truncated: (listed.len() as u64) < total,
        complete,
    };
    // Serializing borrowed strings and integers into a Vec cannot fail.
    let json = serde_json::to_vec(&envelope).unwrap_or_default();
    encode_shared(OP_TEXT, &json)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn payload(frame: &[u8]) -> serde_json::Value {
        assert_eq!(frame[0], 0x81, "a final text frame");
        let (len, start) = match frame[1] {
            126 => (u16::from_be_bytes([frame[2], frame[3]]) as usize, 4),
            n => (n as usize, 2),
        };
        assert_eq!(frame.len(), start + len);
        serde_json::from_slice(&frame[start..]).unwrap()
    }

    #[test]
    fn client_envelopes_parse_and_ignore_extra_fields() {
        assert_eq!(
            ClientEnvelope::parse(r#"{"type":"hello","nick":"ann"}"#),
            Some(ClientEnvelope::Hello {
                nick: Some("ann".into()),
                token: None,
                history: None,
                since: None,
                reclaim: None
            })
        );
        assert_eq!(
            ClientEnvelope::parse(
                r#"{"type":"hello","nick":"ann","history":5,"since":{"epoch":"x","offset":3}}"#
            ),
            Some(ClientEnvelope::Hello {
                nick: Some("ann".into()),
                token: None,
                history: Some(5),
                since: Some(HelloSince {
                    epoch: "x".into(),
                    offset: 3
                }),
                reclaim: None
            })
        );
        assert_eq!(
            ClientEnvelope::parse(r#"{"type":"hello","token":"a.b.c"}"#),
            Some(ClientEnvelope::Hello {
                nick: None,
                token: Some(TokenText("a.b.c".into())),
                history: None,
                since: None,
                reclaim: None
            })
        );
        assert_eq!(
            ClientEnvelope::parse(r#"{"text":"hi \"you\"","type":"message","x":1}"#),
            Some(ClientEnvelope::Message {
                text: "hi \"you\"".into()
            })
        );
        for bad in [
            "hi",
            "[]",
            "{}",
            r#"{"type":"shout","text":"x"}"#,
            r#"{"type":"message"}"#,
            r#"{"type":"message","text":5}"#,
            r#"{"type":"hello","nick":5}"#,
            r#"{"type":"hello","token":5}"#,
            r#"{"type":"hello","nick":"a","since":{"epoch":"x"}}"#,
            r#"{"type":"hello","nick":"a","since":{"epoch":"x","offset":-1}}"#,
            r#"{"type":"hello","nick":"a","history":"all"}"#,
        ] {
            assert_eq!(ClientEnvelope::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn server_envelopes_are_documented_json() {
        let ann = Who {
            id: "0.1",
            nick: Some("ann"),
            user: None,
        };
        let v = payload(&welcome(ann, "a", 3, WelcomeStart::default(), 65536, None));
        assert_eq!(
            v,
            serde_json::json!({"type":"welcome","id":"0.1","room":"a","nick":"ann","online":3,
                "max_message_bytes":65536})
        );
        let v = payload(&welcome(
            ann,
            "a",
            3,
            WelcomeStart::default(),
            65536,
            Some("0.1.ab"),
        ));
        assert_eq!(v["reclaim"], "0.1.ab");
        let start = WelcomeStart {
            epoch: Some("00000000000000ff"),
            offset: Some(9),
            replay: Some(2),
            recovered: Some(true),
        };
        let v = payload(&welcome(ann, "a", 3, start, 100, None));
        assert_eq!(
            v,
            serde_json::json!({"type":"welcome","id":"0.1","room":"a","nick":"ann","online":3,
                "epoch":"00000000000000ff","offset":9,"replay":2,"recovered":true,
                "max_message_bytes":100})
        );
        let plain = Who {
            id: "1.4",
            ..Who::default()
        };
        let v = payload(&message(plain, "<b>\"x\"</b>", 7, Place::default()));
        assert_eq!(
            v,
            serde_json::json!({"type":"message","id":"1.4","nick":null,"text":"<b>\"x\"</b>","ts":7})
        );
        let place = Place {
            offset: 12,
            replayed: true,
            from_server: false,
        };
        let bob = Who {
            id: "1.4",
            nick: Some("bob"),
            user: None,
        };
        let v = payload(&message(bob, "x", 7, place));
        assert_eq!(
            v,
            serde_json::json!({"type":"message","id":"1.4","nick":"bob","text":"x","ts":7,
                "offset":12,"history":true})
        );
        let place = Place {
            offset: 3,
            replayed: false,
            from_server: true,
        };
        let v = payload(&message(
            Who {
                id: "server",
                nick: None,
                user: None,
            },
            "x",
            7,
            place,
        ));
        assert_eq!(
            v,
            serde_json::json!({"type":"message","id":"server","nick":null,"from":"server",
                "text":"x","ts":7,"offset":3})
        );
        let v = payload(&presence(Change::Leave, bob, 2));
        assert_eq!(
            v,
            serde_json::json!({"type":"leave","id":"1.4","nick":"bob","online":2})
        );
        // A member with a token: its user id, in every envelope that names it.
        let carol = Who {
            id: "0.3",
            nick: Some("Carol"),
            user: Some("u-7"),
        };
        let v = payload(&presence(Change::Join, carol, 4));
        assert_eq!(
            v,
            serde_json::json!({"type":"join","id":"0.3","nick":"Carol","user":"u-7","online":4})
        );
        let v = payload(&message(carol, "hi", 7, Place::default()));
        assert_eq!(v["user"], "u-7");
        let v = payload(&welcome(
            carol,
            "a",
            4,
            WelcomeStart::default(),
            65536,
            None,
        ));
        assert_eq!(v["user"], "u-7");
        let v = payload(&error_saying(ErrorCode::Unauthorized, "token expired"));
        assert_eq!(
            v,
            serde_json::json!({"type":"error","code":"unauthorized","text":"token expired"})
        );
        let v = payload(&error(ErrorCode::BadNick));
        assert_eq!(v["type"], "error");
        assert_eq!(v["code"], "bad_nick");
    }

    #[test]
    fn cluster_notices_carry_a_code_an_explanation_and_the_count() {
        let v = payload(&notice(Notice::ClusterDown, 2));
        assert_eq!(
            (&v["type"], &v["code"], &v["online"]),
            (
                &serde_json::json!("notice"),
                &serde_json::json!("cluster_down"),
                &serde_json::json!(2)
            )
        );
        assert!(
            v["text"]
                .as_str()
                .is_some_and(|t| t.contains("other servers"))
        );
        let v = payload(&notice(Notice::ClusterUp, 5));
        assert_eq!(
            (&v["code"], &v["online"]),
            (&serde_json::json!("cluster_up"), &serde_json::json!(5))
        );
    }

    #[test]
    fn who_and_members_are_documented_json() {
        assert_eq!(
            ClientEnvelope::parse(r#"{"type":"who"}"#),
            Some(ClientEnvelope::Who)
        );
        assert_eq!(
            ClientEnvelope::parse(r#"{"type":"who","since":1}"#),
            Some(ClientEnvelope::Who)
        );
        let listed = [
            Listed {
                id: "0.1",
                nick: Some("ann"),
                user: None,
            },
            Listed {
                id: "1.2",
                nick: Some("Bo"),
                user: Some("u-2"),
            },
            Listed {
                id: "1.3",
                nick: None,
                user: None,
            },
        ];
        let v = payload(&members("r", &listed, 4, None));
        assert_eq!(
            v,
            serde_json::json!({"type":"members","room":"r","members":[
                {"id":"0.1","nick":"ann"},{"id":"1.2","nick":"Bo","user":"u-2"},
                {"id":"1.3","nick":null}],"total":4,"truncated":true})
        );
        let v = payload(&members("r", &[], 0, Some(false)));
        assert_eq!(
            v,
            serde_json::json!({"type":"members","room":"r","members":[],"total":0,
                "truncated":false,"complete":false})
        );
    }
}
