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
        /// The nickname asked for.
        nick: String,
    },
    /// A message for the room.
    Message {
        /// Its text.
        text: String,
    },
}

impl ClientEnvelope {
    /// Parses one text message; `None` when it is not a valid client envelope.
    pub fn parse(text: &str) -> Option<ClientEnvelope> {
        serde_json::from_str(text).ok()
    }
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
        online: u64,
    },
    Message {
        id: &'a str,
        nick: Option<&'a str>,
        text: &'a str,
        ts: u64,
    },
    Join {
        id: &'a str,
        nick: Option<&'a str>,
        online: u64,
    },
    Leave {
        id: &'a str,
        nick: Option<&'a str>,
        online: u64,
    },
    Error {
        code: &'a str,
        text: &'a str,
    },
    Online {
        online: u64,
    },
}

fn frame(envelope: &ServerEnvelope) -> SharedFrame {
    // Serializing borrowed strings and integers into a Vec cannot fail.
    let json = serde_json::to_vec(envelope).unwrap_or_default();
    encode_shared(OP_TEXT, &json)
}

/// `welcome`: the session `id` is now a member of `room` as `nick`; `online` members in all.
pub fn welcome(id: &str, room: &str, nick: &str, online: u64) -> SharedFrame {
    frame(&ServerEnvelope::Welcome {
        id,
        room,
        nick,
        online,
    })
}

/// `message`: `text` from member `id` (`nick` is `None` for a plain client), received at `ts`
/// (milliseconds since the Unix epoch).
pub fn message(id: &str, nick: Option<&str>, text: &str, ts: u64) -> SharedFrame {
    frame(&ServerEnvelope::Message { id, nick, text, ts })
}

/// `join` or `leave` of member `id`; `online` counts the change.
pub fn presence(change: Change, id: &str, nick: Option<&str>, online: u64) -> SharedFrame {
    frame(&match change {
        Change::Join => ServerEnvelope::Join { id, nick, online },
        Change::Leave => ServerEnvelope::Leave { id, nick, online },
    })
}

/// `online`: the room's count changed without a known member (a cluster node was lost, or
/// its counts were corrected by a heartbeat).
pub fn online(online: u64) -> SharedFrame {
    frame(&ServerEnvelope::Online { online })
}

/// `error` with `code`.
pub fn error(code: ErrorCode) -> SharedFrame {
    let (code, text) = code.wire();
    frame(&ServerEnvelope::Error { code, text })
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
            Some(ClientEnvelope::Hello { nick: "ann".into() })
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
            r#"{"type":"hello","nick":null}"#,
        ] {
            assert_eq!(ClientEnvelope::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn server_envelopes_are_documented_json() {
        let v = payload(&welcome("0.1", "a", "ann", 3));
        assert_eq!(
            v,
            serde_json::json!({"type":"welcome","id":"0.1","room":"a","nick":"ann","online":3})
        );
        let v = payload(&message("1.4", None, "<b>\"x\"</b>", 7));
        assert_eq!(
            v,
            serde_json::json!({"type":"message","id":"1.4","nick":null,"text":"<b>\"x\"</b>","ts":7})
        );
        let v = payload(&presence(Change::Leave, "1.4", Some("bob"), 2));
        assert_eq!(
            v,
            serde_json::json!({"type":"leave","id":"1.4","nick":"bob","online":2})
        );
        let v = payload(&error(ErrorCode::BadNick));
        assert_eq!(v["type"], "error");
        assert_eq!(v["code"], "bad_nick");
    }
}
