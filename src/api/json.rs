//! The server API's JSON: request bodies read and checked into typed values (each refusal a
//! one-line reason, answered 400), and the answers written (docs/api.md).

use std::sync::Arc;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde::Deserialize;
use serde_json::{Value, json};
use tungstenite::{Bytes, Utf8Bytes};

use crate::chat::{Body, Outgoing};
use crate::close::CloseReason;
use crate::control::{MemberInfo, Placed};
use crate::history::{Ask, Since, Start};
use crate::ids::SessionId;
use crate::room::RoomId;

/// Most rooms one `POST /api/broadcast` may name.
pub const MAX_BROADCAST_ROOMS: usize = 1000;

/// Longest close text (a close frame's payload is at most 125 bytes, 2 of them the code).
const MAX_CLOSE_TEXT: usize = 123;

/// Why a request was refused with 400: one line for `{"error": ...}`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct BadRequest(pub String);

fn bad(why: impl Into<String>) -> BadRequest {
    BadRequest(why.into())
}

fn parse_json<'a, T: Deserialize<'a>>(body: &'a [u8]) -> Result<T, BadRequest> {
    serde_json::from_slice(body).map_err(|e| bad(format!("bad JSON: {e}")))
}

fn room(name: &str) -> Result<RoomId, BadRequest> {
    RoomId::parse(name)
        .ok_or_else(|| bad(format!("bad room name {name:?}: 1-64 of A-Z a-z 0-9 - _")))
}

/// The content of a publish or broadcast: `data` (text) or `b64data` (binary), one of them.
#[derive(Debug, Deserialize)]
struct Content {
    #[serde(default)]
    data: Option<String>,
    #[serde(default)]
    b64data: Option<String>,
}

impl Content {
    fn body(self, max_message: usize) -> Result<Body, BadRequest> {
        let body = match (self.data, self.b64data) {
            (Some(text), None) => Body::Text(Utf8Bytes::from(text)),
            (None, Some(b64)) => Body::Binary(Bytes::from(
                BASE64
                    .decode(b64.as_bytes())
                    .map_err(|e| bad(format!("b64data is not base64: {e}")))?,
            )),
            (Some(_), Some(_)) => return Err(bad("give data or b64data, not both")),
            (None, None) => return Err(bad("data or b64data is required")),
        };
        let len = match &body {
            Body::Text(text) => text.len(),
            Body::Binary(bytes) => bytes.len(),
        };
        if len > max_message {
            return Err(bad(format!(
                "the message is {len} bytes, over --max-message ({max_message})"
            )));
        }
        Ok(body)
    }
}

#[derive(Debug, Deserialize)]
struct PublishBody {
    room: String,
    #[serde(flatten)]
    content: Content,
}

/// `POST /api/publish`: `{"room": R, "data": T}` or `{"room": R, "b64data": B}`.
pub fn publish(body: &[u8], max_message: usize) -> Result<(RoomId, Body), BadRequest> {
    let request: PublishBody = parse_json(body)?;
    Ok((room(&request.room)?, request.content.body(max_message)?))
}

#[derive(Debug, Deserialize)]
struct BroadcastBody {
    rooms: Vec<String>,
    #[serde(flatten)]
    content: Content,
}

/// `POST /api/broadcast`: `{"rooms": [R, ...], "data": T}` (or `b64data`); 1 to
/// [`MAX_BROADCAST_ROOMS`] rooms, each once.
pub fn broadcast(body: &[u8], max_message: usize) -> Result<(Vec<RoomId>, Body), BadRequest> {
    let request: BroadcastBody = parse_json(body)?;
    if request.rooms.is_empty() || request.rooms.len() > MAX_BROADCAST_ROOMS {
        return Err(bad(format!(
            "rooms must name 1 to {MAX_BROADCAST_ROOMS} rooms"
        )));
    }
    let mut rooms = Vec::with_capacity(request.rooms.len());
    for name in &request.rooms {
        let parsed = room(name)?;
        if rooms.contains(&parsed) {
            return Err(bad(format!("room {name:?} is named twice")));
        }
        rooms.push(parsed);
    }
    Ok((rooms, request.content.body(max_message)?))
}

#[derive(Debug, Deserialize)]
struct DisconnectBody {
    #[serde(default)]
    session: Option<String>,
    #[serde(default)]
    user: Option<String>,
    #[serde(default)]
    code: Option<u16>,
    #[serde(default)]
    reason: Option<String>,
}

/// A checked `POST /api/disconnect`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Disconnect {
    /// Whom to close.
    pub target: Whose,
    /// The close code.
    pub code: u16,
    /// The close text.
    pub text: Arc<str>,
}

/// The longest user id a token may carry (`sub`, docs/auth.md).
const MAX_USER: usize = 128;

/// `POST /api/disconnect`: `{"session": ID | "user": SUB, "code": C, "reason": T}`; `code` is 1000, 1008 or
/// 4000–4999 (default 4000), `reason` at most 123 bytes (default "disconnected by the
/// server"). `node` is this node's id in a cluster (session ids carry it).
pub fn disconnect(body: &[u8], node: Option<&str>) -> Result<Disconnect, BadRequest> {
    let request: DisconnectBody = parse_json(body)?;
    let target = match (request.session, request.user) {
        (Some(id), None) => session_id(&id, node)?,
        (None, Some(user)) if !user.is_empty() && user.len() <= MAX_USER => Whose::User(user),
        (None, Some(_)) => return Err(bad(format!("user must be 1-{MAX_USER} bytes"))),
        (Some(_), Some(_)) => return Err(bad("give session or user, not both")),
        (None, None) => return Err(bad("session or user is required")),
    };
    let code = request
        .code
        .unwrap_or(CloseReason::Disconnected.code().unwrap_or(4000));
    if !(code == 1000 || code == 1008 || (4000..=4999).contains(&code)) {
        return Err(bad(format!("code {code}: use 1000, 1008 or 4000-4999")));
    }
    let text = request
        .reason
        .unwrap_or_else(|| CloseReason::Disconnected.text().to_owned());
    if text.len() > MAX_CLOSE_TEXT {
        return Err(bad(format!(
            "reason is {} bytes, over {MAX_CLOSE_TEXT}",
            text.len()
        )));
    }
    Ok(Disconnect {
        target,
        code,
        text: Arc::from(text),
    })
}

/// Where a session named by the API is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Whose {
    /// This node's.
    Here(SessionId),
    /// Every connection of this user (`sub` of its token), on every node.
    User(String),
    /// Node `node`'s (a cluster member), as `"<worker>.<seq>"` there.
    Node {
        /// The node.
        node: String,
        /// The session's id there, without the node prefix.
        session: String,
    },
}

/// A session id as clients see it: `"<worker>.<seq>"`, or `"<node>.<worker>.<seq>"` in a
/// cluster (`node` is this node's id then).
fn session_id(text: &str, node: Option<&str>) -> Result<Whose, BadRequest> {
    let malformed = || bad(format!("bad session id {text:?}"));
    let (prefix, local) = match text.match_indices('.').count() {
        1 => (None, text),
        2 => text
            .split_once('.')
            .map(|(n, rest)| (Some(n), rest))
            .ok_or_else(malformed)?,
        _ => return Err(malformed()),
    };
    let id = SessionId::parse(local).ok_or_else(malformed)?;
    match (prefix, node) {
        (None, None) => Ok(Whose::Here(id)),
        (Some(theirs), Some(ours)) if theirs == ours => Ok(Whose::Here(id)),
        (Some(theirs), Some(_)) if crate::ids::valid_node_id(theirs) => Ok(Whose::Node {
            node: theirs.to_owned(),
            session: local.to_owned(),
        }),
        _ => Err(malformed()),
    }
}

/// `GET /api/rooms/<room>/history?since=EPOCH:OFFSET&limit=N`: the ask, with `limit` at most
/// `history_size` (its default).
pub fn history_query(
    since: Option<&str>,
    limit: Option<&str>,
    history_size: usize,
) -> Result<Ask, BadRequest> {
    let cap = u32::try_from(history_size).unwrap_or(u32::MAX);
    let history = match limit {
        None => cap,
        Some(n) if !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()) => n
            .parse::<u64>()
            .map_or(cap, |n| n.min(u64::from(cap)) as u32),
        Some(_) => return Err(bad("limit must be a whole number")),
    };
    let since = since
        .map(|s| {
            Since::parse(s)
                .ok_or_else(|| bad("since must be EPOCH:OFFSET (16 hex digits, a number)"))
        })
        .transpose()?;
    Ok(Ask { history, since })
}

/// The answer to a publish: where it went (history on), or only that it went.
pub fn published(placed: Option<Placed>) -> Value {
    match placed {
        Some(p) => json!({"ok": true, "epoch": p.epoch.to_string(), "offset": p.offset}),
        None => json!({"ok": true}),
    }
}

/// A member as `presence` lists it.
pub fn member(m: &MemberInfo) -> Value {
    json!({
        "id": &*m.id,
        "nick": m.nick.as_ref().map(|n| n.as_str()),
        "dialect": if m.v1 { "shardcast.v1" } else { "plain" },
        "user": m.user.as_deref(),
    })
}

/// A kept message as `history` lists it.
pub fn message(out: &Outgoing) -> Value {
    let post = &out.post;
    let mut m = json!({
        "offset": out.offset,
        "id": &*post.sender,
        "nick": post.nick.as_ref().map(|n| n.as_str()),
        "ts": post.ts,
    });
    if post.is_from_server() {
        m["from"] = json!("server");
    }
    match &post.body {
        Body::Text(text) => m["data"] = json!(text.as_str()),
        Body::Binary(bytes) => m["b64data"] = json!(BASE64.encode(bytes)),
    }
    m
}

/// The answer to a history read: the room's epoch and latest offset, `recovered` when the
/// request had `since`, and the messages, oldest first (at most `limit`; `more` when a
/// resume had more after them).
pub fn history(room: &RoomId, ask: &Ask, start: Option<Start>) -> Value {
    let Some(start) = start else {
        let mut v = json!({"room": room.as_str(), "epoch": null, "offset": 0, "messages": [], "more": false});
        if ask.since.is_some() {
            v["recovered"] = json!(false);
        }
        return v;
    };
    let limit = ask.history as usize;
    let more = start.replay.len() > limit;
    // A resume replays everything after `since`: the first `limit` of them go now.
    let messages: Vec<Value> = start
        .replay
        .iter()
        .take(limit)
        .map(|o| message(o))
        .collect();
    let mut v = json!({
        "room": room.as_str(),
        "epoch": start.epoch.to_string(),
        "offset": start.offset,
        "messages": messages,
        "more": more,
    });
    if let Some(recovered) = start.recovered {
        v["recovered"] = json!(recovered);
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::Epoch;

    fn text(body: &Body) -> &str {
        match body {
            Body::Text(t) => t.as_str(),
            Body::Binary(_) => panic!("expected text"),
        }
    }

    #[test]
    fn publish_takes_text_or_base64_and_checks_them() {
        let (room, body) = publish(br#"{"room":"a","data":"hi","extra":1}"#, 100).unwrap();
        assert_eq!((room.as_str(), text(&body)), ("a", "hi"));
        let (_, body) = publish(br#"{"room":"a","b64data":"AAE="}"#, 100).unwrap();
        assert!(matches!(body, Body::Binary(b) if b[..] == [0, 1]));
        for (bad_body, why) in [
            (&b"{"[..], "bad JSON"),
            (br#"[]"#, "bad JSON"),
            (br#"{"data":"x"}"#, "bad JSON"),
            (br#"{"room":5,"data":"x"}"#, "bad JSON"),
            (br#"{"room":"a b","data":"x"}"#, "bad room name"),
            (br#"{"room":"a"}"#, "required"),
            (br#"{"room":"a","data":"x","b64data":"AA=="}"#, "not both"),
            (br#"{"room":"a","b64data":"%%"}"#, "not base64"),
            (
                br#"{"room":"a","data":"0123456789abc"}"#,
                "over --max-message",
            ),
        ] {
            let err = publish(bad_body, 10).unwrap_err();
            assert!(
                err.0.contains(why),
                "{err} for {:?}",
                String::from_utf8_lossy(bad_body)
            );
            assert!(!err.0.contains('\n'), "one line");
        }
    }

    #[test]
    fn broadcast_names_distinct_rooms() {
        let (rooms, _) = broadcast(br#"{"rooms":["a","b"],"data":"x"}"#, 100).unwrap();
        assert_eq!(rooms.len(), 2);
        assert!(broadcast(br#"{"rooms":[],"data":"x"}"#, 100).is_err());
        assert!(broadcast(br#"{"rooms":["a","a"],"data":"x"}"#, 100).is_err());
        assert!(broadcast(br#"{"rooms":"a","data":"x"}"#, 100).is_err());
    }

    #[test]
    fn disconnect_checks_the_id_the_code_and_the_reason() {
        let d = disconnect(br#"{"session":"1.42"}"#, None).unwrap();
        assert_eq!(d.target, Whose::Here(SessionId { worker: 1, seq: 42 }));
        assert_eq!((d.code, &*d.text), (4000, "disconnected by the server"));
        let d = disconnect(
            br#"{"session":"n1.0.7","code":1008,"reason":"bye"}"#,
            Some("n1"),
        )
        .unwrap();
        assert_eq!(d.target, Whose::Here(SessionId { worker: 0, seq: 7 }));
        assert_eq!((d.code, &*d.text), (1008, "bye"));
        let elsewhere = disconnect(br#"{"session":"n2.0.7"}"#, Some("n1")).unwrap();
        assert_eq!(
            elsewhere.target,
            Whose::Node {
                node: "n2".into(),
                session: "0.7".into()
            },
            "another node's session"
        );
        let by_user = disconnect(br#"{"user":"u-7"}"#, Some("n1")).unwrap();
        assert_eq!(by_user.target, Whose::User("u-7".into()));
        for body in [
            &br#"{"session":"x"}"#[..],
            br#"{"session":"1."}"#,
            br#"{"session":"n1.0.7"}"#,
            br#"{"session":"a.b.0.7"}"#,
            br#"{"session":"1.+2"}"#,
            br#"{"session":"1.2","code":1001}"#,
            br#"{"session":"1.2","code":5000}"#,
            br#"{"user":""}"#,
            br#"{"user":"u1","session":"1.2"}"#,
            br#"{}"#,
        ] {
            assert!(
                disconnect(body, None).is_err(),
                "{}",
                String::from_utf8_lossy(body)
            );
        }
        let long = format!(r#"{{"session":"1.2","reason":"{}"}}"#, "x".repeat(124));
        assert!(disconnect(long.as_bytes(), None).is_err());
    }

    #[test]
    fn history_query_caps_the_limit_and_reads_since() {
        let ask = history_query(None, None, 100).unwrap();
        assert_eq!((ask.history, ask.since), (100, None));
        assert_eq!(history_query(None, Some("7"), 100).unwrap().history, 7);
        assert_eq!(
            history_query(None, Some("99999999999999999999"), 100)
                .unwrap()
                .history,
            100
        );
        let ask = history_query(Some("00000000000000ff:3"), Some("2"), 100).unwrap();
        assert_eq!(
            ask.since,
            Some(Since {
                epoch: Some(Epoch(255)),
                offset: 3
            })
        );
        assert!(history_query(Some("ff:3"), None, 100).is_err());
        assert!(history_query(None, Some("-1"), 100).is_err());
        assert!(history_query(None, Some(""), 100).is_err());
    }
}
