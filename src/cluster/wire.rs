//! What a node publishes to Redis: compact, binary-safe envelopes, one per Redis message.
//!
//! ```text
//! message   'M' 1 opcode  node  sender  nick  [user]  ts:u64  payload…     on shardcast:room:<name>
//! presence  'P' 1 node  room  shard:u16  plain:u32  v1:u32  change  [id  nick  [user]]   on shardcast:presence
//! heartbeat 'H' 1 node  count:u32  (room  shard:u16  plain:u32  v1:u32)*  [instance:u64  sent:u64]
//! disconnect 'D' 1 node  target  session  code:u16  text…                      on shardcast:presence
//! ask       'Q' 1 node  request:u64  room                                       on shardcast:presence
//! answer    'A' 1 node  target  request:u64  shard:u16  shards:u16  count:u32  (id  nick  v1:u8)*
//! ```
//!
//! `ask` and `answer` are the server API's presence across nodes: each shard of every other
//! node answers for its own members (docs/api.md).
//!
//! Strings are a length byte and UTF-8 (a nick of length 0 is "none", as no nickname is
//! empty); integers are big-endian; `change` is 0 (none), 1 (join) or 2 (leave). The payload
//! runs to the end, so any byte may appear in it. Decoding checks every length and never
//! panics: another node's bytes are input like any other.
//!
//! `user` (the user id of a member with a token, docs/auth.md) is there only for such
//! members, so anonymous traffic is byte for byte what it was: in a message, the opcode's
//! [`HAS_USER`] bit says it follows the nick; in a presence change, it is the last field,
//! present when bytes remain (a node that predates it stops reading before it). A node that
//! predates it ignores messages with the bit set (an opcode it does not know).
//!
//! A heartbeat ends with the sending process's [`Instance`]: a random token drawn once per
//! process (two processes claiming one node id tell each other apart by it) and when it was
//! sent (microseconds since the epoch; the node's own echo measures the link's lag). Like
//! `user`, it follows the fields an older node reads, so such a node still reads the table; a
//! heartbeat without it (from an older node) decodes with `instance: None`.

use crate::chat::envelope::Change;
use crate::chat::{Body, Post};
use crate::room::Share;

/// The envelope format version; a node ignores envelopes of other versions.
pub const VERSION: u8 = 1;

const MESSAGE: u8 = b'M';
const PRESENCE: u8 = b'P';
const HEARTBEAT: u8 = b'H';
const DISCONNECT: u8 = b'D';
const DISCONNECT_USER: u8 = b'U';
const ASK: u8 = b'Q';
const ANSWER: u8 = b'A';
const OP_TEXT: u8 = 1;
const OP_BINARY: u8 = 2;
/// Set in a message's opcode when a `user` string follows the nick.
pub const HAS_USER: u8 = 0x80;

/// Which process sent a heartbeat, and when.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Instance {
    /// Random, drawn once per process: two processes with one node id differ here.
    pub token: u64,
    /// When the heartbeat was sent, in microseconds since the Unix epoch.
    pub sent_micros: u64,
}

/// A presence change with the member it concerns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member<'a> {
    /// Joined or left.
    pub change: Change,
    /// The member's session id (with its node prefix).
    pub id: &'a str,
    /// Its nickname (`None` for a plain client).
    pub nick: Option<&'a str>,
    /// Its user id (members with a token).
    pub user: Option<&'a str>,
}

/// A member as a presence answer lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listed<'a> {
    /// Its session id (with its node prefix).
    pub id: &'a str,
    /// Its nickname (`None` for a plain client).
    pub nick: Option<&'a str>,
    /// Whether it speaks `shardcast.v1`.
    pub v1: bool,
}

/// One decoded envelope, borrowing from the Redis message.
#[derive(Debug, PartialEq, Eq)]
pub enum Envelope<'a> {
    /// A message for the room the channel names.
    Message {
        /// The node it came from.
        node: &'a str,
        /// The sender's session id.
        sender: &'a str,
        /// The sender's nickname (v1 senders).
        nick: Option<&'a str>,
        /// The sender's user id (senders with a token).
        user: Option<&'a str>,
        /// Binary (true) or text.
        binary: bool,
        /// When the origin node received it (ms since the epoch).
        ts: u64,
        /// The content (valid UTF-8 when text).
        payload: &'a [u8],
    },
    /// A shard of `node` now has `share` members in `room`.
    Presence {
        /// The node.
        node: &'a str,
        /// The room.
        room: &'a str,
        /// The shard on that node.
        shard: u16,
        /// Its members there now.
        share: Share,
        /// Who arrived or left, if this was a join or leave (not a correction).
        member: Option<Member<'a>>,
    },
    /// The whole table of `node`'s members: `(room, shard, share)` for every room it has
    /// members in. Replaces whatever was known of that node.
    Heartbeat {
        /// The node.
        node: &'a str,
        /// Its shares.
        shares: Vec<(&'a str, u16, Share)>,
        /// The process that sent it (absent from older nodes' heartbeats).
        instance: Option<Instance>,
    },
    /// The server API of `node` asks node `target` to close its session `session`
    /// (`"<worker>.<seq>"`) with `code` and `text` (docs/api.md).
    Disconnect {
        /// The node that took the API request.
        node: &'a str,
        /// The node whose session it is.
        target: &'a str,
        /// The session's id on that node, without the node prefix.
        session: &'a str,
        /// The close code.
        code: u16,
        /// The close text.
        text: &'a str,
    },
    /// The server API of `node` asks every other node to close every session of `user`
    /// with `code` and `text` (docs/api.md).
    DisconnectUser {
        /// The node that took the API request.
        node: &'a str,
        /// The user (`sub` of its token).
        user: &'a str,
        /// The close code.
        code: u16,
        /// The close text.
        text: &'a str,
    },
    /// The server API of `node` asks every other node for its members of `room`.
    Ask {
        /// The asking node.
        node: &'a str,
        /// Its request's id.
        request: u64,
        /// The room.
        room: &'a str,
    },
    /// Shard `shard` (of `shards`) of `node` answers `target`'s request `request`.
    Answer {
        /// The answering node.
        node: &'a str,
        /// The asking node.
        target: &'a str,
        /// The request's id.
        request: u64,
        /// The answering shard.
        shard: u16,
        /// How many shards the node has (each answers).
        shards: u16,
        /// The shard's members of the room.
        members: Vec<Listed<'a>>,
    },
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    // Node ids, session ids, nicknames and room names are all far below 256 bytes.
    let len = s.len().min(255);
    out.push(len as u8);
    out.extend_from_slice(&s.as_bytes()[..len]);
}

fn put_share(out: &mut Vec<u8>, share: Share) {
    out.extend_from_slice(&share.plain.to_be_bytes());
    out.extend_from_slice(&share.v1.to_be_bytes());
}

/// The envelope of a message a local member sent.
pub fn message(node: &str, post: &Post) -> Vec<u8> {
    let (opcode, payload): (u8, &[u8]) = match &post.body {
        Body::Text(text) => (OP_TEXT, text.as_bytes()),
        Body::Binary(data) => (OP_BINARY, data),
    };
    let user = post.user.as_deref();
    let opcode = if user.is_some() {
        opcode | HAS_USER
    } else {
        opcode
    };
    let mut out = Vec::with_capacity(16 + node.len() + post.sender.len() + 32 + payload.len());
    out.extend_from_slice(&[MESSAGE, VERSION, opcode]);
    put_str(&mut out, node);
    put_str(&mut out, &post.sender);
    put_str(&mut out, post.nick.as_ref().map_or("", |n| n.as_str()));
    if let Some(user) = user {
        put_str(&mut out, user);
    }
    out.extend_from_slice(&post.ts.to_be_bytes());
    out.extend_from_slice(payload);
    out
}

/// The envelope of a change in a local shard's share of `room`.
pub fn presence(
    node: &str,
    room: &str,
    shard: u16,
    share: Share,
    member: Option<Member<'_>>,
) -> Vec<u8> {
    let mut out = Vec::with_capacity(64);
    out.extend_from_slice(&[PRESENCE, VERSION]);
    put_str(&mut out, node);
    put_str(&mut out, room);
    out.extend_from_slice(&shard.to_be_bytes());
    put_share(&mut out, share);
    match member {
        None => out.push(0),
        Some(m) => {
            out.push(match m.change {
                Change::Join => 1,
                Change::Leave => 2,
            });
            put_str(&mut out, m.id);
            put_str(&mut out, m.nick.unwrap_or(""));
            if let Some(user) = m.user {
                put_str(&mut out, user);
            }
        }
    }
    out
}

/// A heartbeat with every `(room, shard, share)` of this node, sent by `instance`.
pub fn heartbeat<'a>(
    node: &str,
    shares: impl ExactSizeIterator<Item = (&'a str, u16, Share)>,
    instance: Instance,
) -> Vec<u8> {
    let mut out = Vec::with_capacity(24 + node.len() + shares.len() * 24);
    out.extend_from_slice(&[HEARTBEAT, VERSION]);
    put_str(&mut out, node);
    out.extend_from_slice(&(shares.len() as u32).to_be_bytes());
    for (room, shard, share) in shares {
        put_str(&mut out, room);
        out.extend_from_slice(&shard.to_be_bytes());
        put_share(&mut out, share);
    }
    out.extend_from_slice(&instance.token.to_be_bytes());
    out.extend_from_slice(&instance.sent_micros.to_be_bytes());
    out
}

/// The envelope of a server API disconnect for session `session` of node `target`.
pub fn disconnect(node: &str, target: &str, session: &str, code: u16, text: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(8 + node.len() + target.len() + session.len() + text.len());
    out.extend_from_slice(&[DISCONNECT, VERSION]);
    put_str(&mut out, node);
    put_str(&mut out, target);
    put_str(&mut out, session);
    out.extend_from_slice(&code.to_be_bytes());
    out.extend_from_slice(text.as_bytes());
    out
}

/// The envelope of a server API disconnect of every session of `user`, for every node.
pub fn disconnect_user(node: &str, user: &str, code: u16, text: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(8 + node.len() + user.len() + text.len());
    out.extend_from_slice(&[DISCONNECT_USER, VERSION]);
    put_str(&mut out, node);
    put_str(&mut out, user);
    out.extend_from_slice(&code.to_be_bytes());
    out.extend_from_slice(text.as_bytes());
    out
}

/// The envelope of a server API presence question about `room`.
pub fn ask(node: &str, request: u64, room: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(12 + node.len() + room.len());
    out.extend_from_slice(&[ASK, VERSION]);
    put_str(&mut out, node);
    out.extend_from_slice(&request.to_be_bytes());
    put_str(&mut out, room);
    out
}

/// The envelope of shard `shard`'s (of `shards`) answer to `target`'s question `request`.
pub fn answer<'a>(
    node: &str,
    target: &str,
    request: u64,
    (shard, shards): (u16, u16),
    members: impl ExactSizeIterator<Item = Listed<'a>>,
) -> Vec<u8> {
    let mut out = Vec::with_capacity(24 + node.len() + target.len() + members.len() * 24);
    out.extend_from_slice(&[ANSWER, VERSION]);
    put_str(&mut out, node);
    put_str(&mut out, target);
    out.extend_from_slice(&request.to_be_bytes());
    out.extend_from_slice(&shard.to_be_bytes());
    out.extend_from_slice(&shards.to_be_bytes());
    out.extend_from_slice(&(members.len() as u32).to_be_bytes());
    for m in members {
        put_str(&mut out, m.id);
        put_str(&mut out, m.nick.unwrap_or(""));
        out.push(u8::from(m.v1));
    }
    out
}

/// Reads fields off the front of a byte slice; every read checks the length.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Some(head)
    }

    fn u8(&mut self) -> Option<u8> {
        self.take(1).map(|b| b[0])
    }

    fn u16(&mut self) -> Option<u16> {
        self.take(2).map(|b| u16::from_be_bytes([b[0], b[1]]))
    }

    fn u32(&mut self) -> Option<u32> {
        self.take(4)
            .and_then(|b| b.try_into().ok())
            .map(u32::from_be_bytes)
    }

    fn u64(&mut self) -> Option<u64> {
        self.take(8)
            .and_then(|b| b.try_into().ok())
            .map(u64::from_be_bytes)
    }

    fn str(&mut self) -> Option<&'a str> {
        let len = self.u8()? as usize;
        std::str::from_utf8(self.take(len)?).ok()
    }

    fn share(&mut self) -> Option<Share> {
        Some(Share {
            plain: self.u32()?,
            v1: self.u32()?,
        })
    }
}

fn optional(s: &str) -> Option<&str> {
    (!s.is_empty()).then_some(s)
}

/// Decodes one envelope; `None` for anything malformed or of another version.
pub fn decode(bytes: &[u8]) -> Option<Envelope<'_>> {
    let mut r = Reader(bytes);
    let kind = r.u8()?;
    if r.u8()? != VERSION {
        return None;
    }
    match kind {
        MESSAGE => {
            let opcode = r.u8()?;
            let binary = match opcode & !HAS_USER {
                OP_TEXT => false,
                OP_BINARY => true,
                _ => return None,
            };
            let node = r.str()?;
            let sender = r.str()?;
            let nick = optional(r.str()?);
            let user = if opcode & HAS_USER != 0 {
                Some(r.str()?).filter(|u| !u.is_empty())
            } else {
                None
            };
            let ts = r.u64()?;
            let payload = r.0;
            if !binary && std::str::from_utf8(payload).is_err() {
                return None;
            }
            Some(Envelope::Message {
                node,
                sender,
                nick,
                user,
                binary,
                ts,
                payload,
            })
        }
        PRESENCE => {
            let node = r.str()?;
            let room = r.str()?;
            let shard = r.u16()?;
            let share = r.share()?;
            let change = match r.u8()? {
                0 => None,
                1 => Some(Change::Join),
                2 => Some(Change::Leave),
                _ => return None,
            };
            let member = match change {
                None => None,
                Some(change) => Some(Member {
                    change,
                    id: r.str()?,
                    nick: optional(r.str()?),
                    // Absent from anonymous members' changes (and from older nodes').
                    user: if r.0.is_empty() {
                        None
                    } else {
                        optional(r.str()?)
                    },
                }),
            };
            Some(Envelope::Presence {
                node,
                room,
                shard,
                share,
                member,
            })
        }
        DISCONNECT => Some(Envelope::Disconnect {
            node: r.str()?,
            target: r.str()?,
            session: r.str()?,
            code: r.u16()?,
            text: std::str::from_utf8(r.0).ok()?,
        }),
        DISCONNECT_USER => Some(Envelope::DisconnectUser {
            node: r.str()?,
            user: r.str()?,
            code: r.u16()?,
            text: std::str::from_utf8(r.0).ok()?,
        }),
        ASK => Some(Envelope::Ask {
            node: r.str()?,
            request: r.u64()?,
            room: r.str()?,
        }),
        ANSWER => {
            let node = r.str()?;
            let target = r.str()?;
            let request = r.u64()?;
            let shard = r.u16()?;
            let shards = r.u16()?;
            let count = r.u32()? as usize;
            // Each member takes at least 3 bytes: a count beyond that is a lie.
            if count > r.0.len() / 3 {
                return None;
            }
            let mut members = Vec::with_capacity(count);
            for _ in 0..count {
                members.push(Listed {
                    id: r.str()?,
                    nick: optional(r.str()?),
                    v1: r.u8()? != 0,
                });
            }
            Some(Envelope::Answer {
                node,
                target,
                request,
                shard,
                shards,
                members,
            })
        }
        HEARTBEAT => {
            let node = r.str()?;
            let count = r.u32()? as usize;
            // Each entry takes at least 11 bytes: a claimed count cannot outgrow the input.
            let mut shares = Vec::with_capacity(count.min(r.0.len() / 11));
            for _ in 0..count {
                shares.push((r.str()?, r.u16()?, r.share()?));
            }
            // Absent from older nodes' heartbeats; cut short, the heartbeat is malformed.
            let instance = if r.0.is_empty() {
                None
            } else {
                Some(Instance {
                    token: r.u64()?,
                    sent_micros: r.u64()?,
                })
            };
            Some(Envelope::Heartbeat {
                node,
                shares,
                instance,
            })
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::chat::Nick;

    #[test]
    fn a_presence_question_and_answer_round_trip() {
        assert_eq!(
            decode(&ask("n1", 7, "room")),
            Some(Envelope::Ask {
                node: "n1",
                request: 7,
                room: "room"
            })
        );
        let listed = [
            Listed {
                id: "n2.0.1",
                nick: Some("ann"),
                v1: true,
            },
            Listed {
                id: "n2.0.2",
                nick: None,
                v1: false,
            },
        ];
        let bytes = answer("n2", "n1", 7, (0, 2), listed.clone().into_iter());
        assert_eq!(
            decode(&bytes),
            Some(Envelope::Answer {
                node: "n2",
                target: "n1",
                request: 7,
                shard: 0,
                shards: 2,
                members: listed.to_vec(),
            })
        );
        for cut in 1..bytes.len() {
            assert_eq!(decode(&bytes[..cut]), None, "cut at {cut}");
        }
    }

    #[test]
    fn a_disconnect_round_trips_and_truncations_are_refused() {
        let bytes = disconnect("n1", "n2", "0.7", 4001, "bye ✓");
        assert_eq!(
            decode(&bytes),
            Some(Envelope::Disconnect {
                node: "n1",
                target: "n2",
                session: "0.7",
                code: 4001,
                text: "bye ✓",
            })
        );
        // Cut inside the code: refused; cut inside the text's last char: not UTF-8, refused.
        assert_eq!(decode(&bytes[..bytes.len() - 8]), None);
        assert_eq!(decode(&bytes[..bytes.len() - 1]), None);
    }

    #[test]
    fn a_disconnect_of_a_user_round_trips_and_truncations_are_refused() {
        let bytes = disconnect_user("n1", "u-7", 4001, "bye");
        assert_eq!(
            decode(&bytes),
            Some(Envelope::DisconnectUser {
                node: "n1",
                user: "u-7",
                code: 4001,
                text: "bye",
            })
        );
        assert_eq!(decode(&bytes[..bytes.len() - 4]), None);
    }

    #[test]
    fn messages_round_trip_any_payload() {
        let post = Post {
            sender: Arc::from("n1.0.7"),
            nick: Nick::parse("ann"),
            user: None,
            body: Body::Text("hé \0 x".into()),
            ts: 1234,
        };
        let bytes = message("n1", &post);
        assert_eq!(
            decode(&bytes),
            Some(Envelope::Message {
                node: "n1",
                sender: "n1.0.7",
                nick: Some("ann"),
                user: None,
                binary: false,
                ts: 1234,
                payload: "hé \0 x".as_bytes(),
            })
        );
        let post = Post {
            nick: None,
            body: Body::Binary(tungstenite::Bytes::from_static(&[0xff, 0, 1])),
            ..post
        };
        match decode(&message("n1", &post)) {
            Some(Envelope::Message {
                binary: true,
                nick: None,
                payload,
                ..
            }) => assert_eq!(payload, &[0xff, 0, 1]),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn presence_and_heartbeats_round_trip() {
        let share = Share {
            plain: 3,
            v1: 70_000,
        };
        let member = Member {
            change: Change::Leave,
            id: "n2.1.9",
            nick: None,
            user: None,
        };
        let bytes = presence("n2", "lobby", 1, share, Some(member.clone()));
        assert_eq!(
            decode(&bytes),
            Some(Envelope::Presence {
                node: "n2",
                room: "lobby",
                shard: 1,
                share,
                member: Some(member),
            })
        );
        let table = [("a", 0, share), ("b", 3, Share::default())];
        let bytes = heartbeat("n2", table.iter().copied(), INSTANCE);
        assert_eq!(
            decode(&bytes),
            Some(Envelope::Heartbeat {
                node: "n2",
                shares: table.to_vec(),
                instance: Some(INSTANCE),
            })
        );
    }

    const INSTANCE: Instance = Instance {
        token: 0x0123_4567_89ab_cdef,
        sent_micros: 1_765_000_000_000_000,
    };

    #[test]
    fn a_heartbeat_without_an_instance_is_an_older_nodes_and_a_cut_one_is_refused() {
        let share = Share { plain: 2, v1: 0 };
        let bytes = heartbeat("n2", [("r", 1, share)].into_iter(), INSTANCE);
        let table_end = bytes.len() - 16;
        // What an older node sends: the table alone. It still counts; no instance to compare.
        assert_eq!(
            decode(&bytes[..table_end]),
            Some(Envelope::Heartbeat {
                node: "n2",
                shares: vec![("r", 1, share)],
                instance: None,
            })
        );
        // Every other cut, inside the table or inside the instance, is refused.
        for cut in (0..bytes.len()).filter(|&cut| cut != table_end) {
            assert_eq!(decode(&bytes[..cut]), None, "cut at {cut}");
        }
        // Fields a later version may append are skipped, as an older node skips ours.
        let mut longer = bytes.clone();
        longer.extend_from_slice(b"later");
        assert_eq!(decode(&longer), decode(&bytes));
    }

    #[test]
    fn user_ids_travel_only_for_members_with_a_token() {
        let anonymous = Post {
            sender: Arc::from("n1.0.7"),
            nick: Nick::parse("ann"),
            user: None,
            body: Body::Text("x".into()),
            ts: 1,
        };
        let with_user = Post {
            user: Some(Arc::from("u-1")),
            ..anonymous.clone()
        };
        let (plain, signed) = (message("n1", &anonymous), message("n1", &with_user));
        assert_eq!(plain[2], OP_TEXT, "anonymous messages are as before");
        assert_eq!(signed[2], OP_TEXT | HAS_USER);
        assert!(matches!(
            decode(&signed),
            Some(Envelope::Message {
                user: Some("u-1"),
                ..
            })
        ));
        assert!(matches!(
            decode(&plain),
            Some(Envelope::Message { user: None, .. })
        ));
        let member = Member {
            change: Change::Join,
            id: "n1.0.7",
            nick: Some("ann"),
            user: Some("u-1"),
        };
        let share = Share { plain: 0, v1: 1 };
        let bytes = presence("n1", "r", 0, share, Some(member.clone()));
        match decode(&bytes) {
            Some(Envelope::Presence {
                member: Some(m), ..
            }) => assert_eq!(m, member),
            other => panic!("{other:?}"),
        }
        // Without a user, the change is the old format exactly.
        let old = presence(
            "n1",
            "r",
            0,
            share,
            Some(Member {
                user: None,
                ..member
            }),
        );
        assert_eq!(old.len(), bytes.len() - 4);
    }

    #[test]
    fn malformed_envelopes_are_refused_without_panicking() {
        let share = Share { plain: 1, v1: 1 };
        let good = [
            presence("n", "r", 0, share, None),
            heartbeat("n", [("r", 0, share)].into_iter(), INSTANCE),
            message(
                "n",
                &Post {
                    sender: Arc::from("n.0.1"),
                    nick: None,
                    user: None,
                    body: Body::Text("x".into()),
                    ts: 0,
                },
            ),
        ];
        for bytes in &good {
            assert!(decode(bytes).is_some());
            // Every truncation of a presence, of a heartbeat before its instance (a cut there is
            // an older node's heartbeat, tested above), and of a message before its payload,
            // is refused.
            let fixed = match bytes[0] {
                MESSAGE => bytes.len() - 1,
                HEARTBEAT => bytes.len() - 16,
                _ => bytes.len(),
            };
            for cut in 0..fixed {
                assert_eq!(decode(&bytes[..cut]), None, "cut at {cut} of {bytes:?}");
            }
            let mut other_version = bytes.clone();
            other_version[1] = 2;
            assert_eq!(decode(&other_version), None);
        }
        // A text payload must be UTF-8; a huge claimed heartbeat count is just short input.
        let mut bad_text = good[2].clone();
        bad_text.push(0xff);
        assert_eq!(decode(&bad_text), None);
        assert_eq!(decode(b"H\x01\x01n\xff\xff\xff\xff"), None);
        assert_eq!(decode(b"Z\x01"), None);
    }
}
