//! Redis as every room's sequencer (`--redis` with history on; docs/cluster.md, "One order
//! across nodes").
//!
//! Each room has two keys: the meta hash `shardcast:meta:<room>` (`epoch`, `offset`) and the
//! stream `shardcast:log:<room>` (entry id `<offset>-0`, field `m`: the message envelope). Two
//! Lua scripts keep them, each atomic, loaded with `SCRIPT LOAD` and run with `EVALSHA`:
//!
//! * [`PUBLISH`] (by `bridge-pub`, many per pipeline): makes the meta if it is missing (a new
//!   epoch, offset 0, and the stream deleted: it belonged to an order nobody can vouch for),
//!   takes the next offset, appends the message to the stream (trimmed to about
//!   `--history-size`), makes both keys live at least `--history-ttl` more (never shortening
//!   a longer time to live: a followed room's, below), and publishes the message on the
//!   room's channel as a [`sequenced`] envelope: epoch, offset, message.
//! * [`READ`] (by `bridge-sub`, on its own command connection): makes the meta if it is
//!   missing in the same way, renews the keys' time to live, and returns the epoch, the
//!   offset and the last `--history-size` messages: what a node that starts following a room,
//!   or fills a gap, hands to the room's sequencer as a [`Batch`].
//!
//! Since every offset of a room is taken inside Redis, one at a time, and Redis sends one
//! channel's messages to every subscriber in the order they were published, every node sees
//! a room's messages in one order; a node that misses some (a resubscription) notices the gap
//! in the offsets and reads the stream.

use std::time::Duration;

use crate::chat::{Body, Nick, Post};
use crate::cluster::wire::{self, Envelope};
use crate::history::{Batch, Epoch};
use crate::room::RoomId;
use std::sync::Arc;
use tungstenite::{Bytes, Utf8Bytes};

/// The publish script. KEYS: meta, stream. ARGV: the message envelope, an epoch for a new
/// order, the stream's length, the keys' time to live in seconds, the room's channel.
pub const PUBLISH: &str = r#"
local epoch = redis.call('HGET', KEYS[1], 'epoch')
if not epoch then
  redis.call('DEL', KEYS[2])
  epoch = ARGV[2]
  redis.call('HSET', KEYS[1], 'epoch', epoch, 'offset', 0)
end
local offset = redis.call('HINCRBY', KEYS[1], 'offset', 1)
redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[3], offset .. '-0', 'm', ARGV[1])
local ttl = tonumber(ARGV[4])
for _, key in ipairs(KEYS) do
  if redis.call('TTL', key) < ttl then redis.call('EXPIRE', key, ttl) end
end
redis.call('PUBLISH', ARGV[5], 'S\1' .. epoch .. ' ' .. offset .. ' ' .. ARGV[1])
return {epoch, offset}
"#;

/// The read script. KEYS: meta, stream. ARGV: an epoch for a new order, how many messages,
/// the keys' time to live in seconds. Returns `{epoch, offset, newest entries first}`.
pub const READ: &str = r#"
local epoch = redis.call('HGET', KEYS[1], 'epoch')
if not epoch then
  redis.call('DEL', KEYS[2])
  epoch = ARGV[1]
  redis.call('HSET', KEYS[1], 'epoch', epoch, 'offset', 0)
end
local ttl = tonumber(ARGV[3])
for _, key in ipairs(KEYS) do
  if redis.call('TTL', key) < ttl then redis.call('EXPIRE', key, ttl) end
end
local offset = redis.call('HGET', KEYS[1], 'offset')
return {epoch, offset, redis.call('XREVRANGE', KEYS[2], '+', '-', 'COUNT', ARGV[2])}
"#;

/// The first two bytes of a sequenced envelope (its kind and version).
pub const SEQUENCED: &[u8] = b"S\x01";

/// The first two bytes of the publisher's wake-up (an envelope every node ignores; its echo
/// wakes this node's subscriber to take a follow request).
pub const WAKE: &[u8] = b"W\x01";

/// A Lua script as Redis knows it: loaded with `SCRIPT LOAD` on every connection (a
/// restarted Redis has none), run with `EVALSHA` by the hash Redis answered.
#[derive(Debug)]
pub struct Script {
    code: &'static str,
    hash: String,
}

impl Script {
    /// The script `code`, not loaded yet.
    pub fn new(code: &'static str) -> Script {
        Script {
            code,
            hash: String::new(),
        }
    }

    /// Loads it into Redis on `conn` (again).
    pub fn load(&mut self, conn: &mut redis::Connection) -> redis::RedisResult<()> {
        self.hash = redis::cmd("SCRIPT")
            .arg("LOAD")
            .arg(self.code)
            .query(conn)?;
        Ok(())
    }

    /// Its hash, for `EVALSHA` (empty before the first load: Redis then answers NOSCRIPT).
    pub fn hash(&self) -> &str {
        &self.hash
    }

    /// Whether `error` says Redis no longer has the script (`SCRIPT FLUSH`).
    pub fn missing(error: &redis::RedisError) -> bool {
        error.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::NoScript)
    }
}

/// The least time to live of a followed room's keys (five heartbeats).
pub const FOLLOWED_TTL_MIN: Duration = Duration::from_secs(10);

/// What the scripts need to know of the history.
#[derive(Debug, Clone, Copy)]
pub struct Sequencing {
    /// `--history-size`.
    pub size: usize,
    /// `--history-ttl`.
    pub ttl: Duration,
}

impl Sequencing {
    /// The keys' time to live, in whole seconds (at least 1).
    pub fn ttl_secs(&self) -> u64 {
        self.ttl.as_secs().max(1)
    }

    /// The time to live a node gives the keys of a room it follows, renewed every third of
    /// it: `--history-ttl`, but at least [`FOLLOWED_TTL_MIN`], so that renewals (made when
    /// `bridge-sub` wakes, at least at every heartbeat) always come in time.
    pub fn followed_ttl(&self) -> Duration {
        self.ttl.max(FOLLOWED_TTL_MIN)
    }
}

/// The meta hash of `room`.
pub fn meta_key(room: &RoomId) -> String {
    format!("shardcast:meta:{}", room.as_str())
}

/// The stream of `room`.
pub fn log_key(room: &RoomId) -> String {
    format!("shardcast:log:{}", room.as_str())
}

/// A fresh epoch for a room whose meta is missing (16 hex digits; only used if this script
/// run is the one that makes the meta).
pub fn fresh_epoch() -> String {
    Epoch(crate::backoff::random_seed()).to_string()
}

/// Reads a sequenced envelope: `'S' 1 epoch(16 hex) ' ' offset ' ' message`.
pub fn sequenced(bytes: &[u8]) -> Option<(Epoch, u64, &[u8])> {
    let rest = bytes.strip_prefix(SEQUENCED)?;
    let epoch = Epoch::parse(std::str::from_utf8(rest.get(..16)?).ok()?)?;
    let rest = rest.get(16..)?.strip_prefix(b" ")?;
    let space = rest.iter().position(|&b| b == b' ')?;
    let digits = &rest[..space];
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let offset = std::str::from_utf8(digits).ok()?.parse().ok()?;
    Some((epoch, offset, &rest[space + 1..]))
}

/// The message a message envelope carries, and the node it came from; `None` for anything
/// else.
pub fn post(envelope: &[u8]) -> Option<(&str, Post)> {
    let Some(Envelope::Message {
        node,
        sender,
        nick,
        user,
        binary,
        ts,
        payload,
    }) = wire::decode(envelope)
    else {
        return None;
    };
    let body = if binary {
        Body::Binary(Bytes::copy_from_slice(payload))
    } else {
        // `decode` checked the UTF-8 already.
        Body::Text(Utf8Bytes::from(String::from_utf8(payload.to_vec()).ok()?))
    };
    let post = Post {
        sender: Arc::from(sender),
        nick: nick.and_then(Nick::parse),
        user: user.map(Arc::from),
        body,
        ts,
    };
    Some((node, post))
}

/// The read script's answer as a [`Batch`]; `None` when it is not what the script returns.
pub fn batch(value: redis::Value) -> Option<Batch> {
    let redis::Value::Array(mut parts) = value else {
        return None;
    };
    if parts.len() != 3 {
        return None;
    }
    let entries = parts.pop()?;
    let offset = number(&parts.pop()?)?;
    let epoch = Epoch::parse(std::str::from_utf8(&bytes(parts.pop()?)?).ok()?)?;
    let redis::Value::Array(entries) = entries else {
        return None;
    };
    let mut out = Vec::with_capacity(entries.len());
    // Newest first: the batch wants them oldest first.
    for entry in entries.into_iter().rev() {
        let redis::Value::Array(mut entry) = entry else {
            return None;
        };
        let fields = entry.pop()?;
        let id = bytes(entry.pop()?)?;
        let at: u64 = std::str::from_utf8(&id)
            .ok()?
            .split_once('-')?
            .0
            .parse()
            .ok()?;
        let redis::Value::Array(fields) = fields else {
            return None;
        };
        // One field, `m`: [name, value].
        let envelope = fields.into_iter().nth(1).and_then(bytes)?;
        match post(&envelope) {
            Some((_, post)) => out.push((at, post)),
            // Unreadable (another version's): what is after it is still contiguous.
            None => out.clear(),
        }
    }
    Some(Batch {
        epoch,
        offset,
        entries: out,
    })
}

fn bytes(value: redis::Value) -> Option<Vec<u8>> {
    match value {
        redis::Value::BulkString(b) => Some(b),
        redis::Value::SimpleString(s) => Some(s.into_bytes()),
        _ => None,
    }
}

fn number(value: &redis::Value) -> Option<u64> {
    match value {
        redis::Value::Int(n) => u64::try_from(*n).ok(),
        redis::Value::BulkString(b) => std::str::from_utf8(b).ok()?.parse().ok(),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(text: &str) -> Vec<u8> {
        wire::message(
            "n1",
            &Post {
                sender: Arc::from("n1.0.1"),
                nick: Nick::parse("ann"),
                user: None,
                body: Body::Text(text.into()),
                ts: 7,
            },
        )
    }

    #[test]
    fn a_sequenced_envelope_reads_back_and_nothing_malformed_does() {
        let inner = message("hi");
        let mut bytes = b"S\x010000000000000abc 42 ".to_vec();
        bytes.extend_from_slice(&inner);
        let (epoch, offset, got) = sequenced(&bytes).unwrap();
        assert_eq!((epoch, offset), (Epoch(0xabc), 42));
        assert_eq!(got, &inner[..]);
        let (node, post) = post(got).unwrap();
        assert_eq!(node, "n1");
        assert!(matches!(post.body, Body::Text(t) if t.as_str() == "hi"));
        for bad in [
            &b"S\x010000000000000abc 42"[..],
            b"S\x010000000000000abc  1 x",
            b"S\x010000000000000abc +1 x",
            b"S\x02000000000000abc 1 x",
            b"S\x01zz00000000000abc 1 x",
            b"M\x01",
            b"",
        ] {
            assert_eq!(sequenced(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn the_read_scripts_answer_becomes_a_batch_oldest_first() {
        use redis::Value::{Array, BulkString};
        let entry = |offset: u64, text: &str| {
            Array(vec![
                BulkString(format!("{offset}-0").into_bytes()),
                Array(vec![BulkString(b"m".to_vec()), BulkString(message(text))]),
            ])
        };
        let value = Array(vec![
            BulkString(b"00000000000000ff".to_vec()),
            BulkString(b"9".to_vec()),
            Array(vec![entry(9, "c"), entry(8, "b")]),
        ]);
        let batch = batch(value).unwrap();
        assert_eq!((batch.epoch, batch.offset), (Epoch(255), 9));
        let offsets: Vec<u64> = batch.entries.iter().map(|(o, _)| *o).collect();
        assert_eq!(offsets, vec![8, 9]);
        assert!(super::batch(redis::Value::Nil).is_none());
    }
}
