//! Nicknames held in each room: a name is one member's while it is connected
//! (docs/protocol.md, "Unique nicknames").
//!
//! **Why a shared table, not the room's home shard.** Two `ann`s may join one room at the same
//! moment on two shards; exactly one may win. The room's home shard orders messages only with
//! history on, and in the `shared` and `single` models there is no home at all, so deciding
//! there would need a mesh round trip before every welcome and a second path per model. A
//! claim is instead one check-and-insert under a lock that every event loop of the node
//! reaches the same way: exact in every model, with or without history. It costs one
//! uncontended lock per v1 join and leave (the table is striped by room), and nothing on the
//! message path, which never looks at it.
//!
//! **Whose name.** Names are compared after Unicode lowercasing (`str::to_lowercase`): `Ann`,
//! `ANN` and `ann` are one name; nothing else is folded (`ß` is not `ss`, `é` is not `e`,
//! look-alikes from other scripts stay distinct). A name a signed token gives (`name` claim,
//! docs/auth.md) is verified: it is always granted, and holds the name against anonymous
//! members. A name a member chose is granted when nobody holds it, or when only sessions of
//! the same signed-in user hold it (one person, two tabs).
//!
//! **Release.** A holder's claim ends when it leaves its room (`Shard::depart`) or, if it
//! never became a member, when its session is reaped; releasing is keyed by the session, so a
//! second release, or one for a session that holds nothing, changes nothing.
//!
//! **Reclaim.** A member whose connection dropped without a close (a train tunnel, a laptop
//! lid) still holds its name until the server notices, up to the ping interval and pong
//! timeout later. Its welcome therefore carries a *reclaim* token for the name: an HMAC, under
//! a key made at start-up, of the room, the folded name and the session id. A new connection
//! that presents it gets the name at once, and the old session is closed as replaced. Nothing
//! is stored per member: the token names its session and proves itself. A token is only good
//! while that very session holds the name, so it cannot take a name back from anyone else,
//! and a restart (a new key) voids every token along with every claim.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::hash::{BuildHasher, RandomState};
use std::sync::{Arc, Mutex, PoisonError};

use ring::hmac;
use subtle::ConstantTimeEq;

use crate::chat::Nick;
use crate::ids::SessionId;
use crate::room::RoomId;

/// Locks the table is split into (by room), so that joins to different rooms on different
/// threads rarely meet on one.
const STRIPES: usize = 64;

/// Who asks for a name.
#[derive(Debug, Clone, Copy)]
pub struct Claimant<'a> {
    /// The session.
    pub session: SessionId,
    /// Its signed-in user (`sub`), if it came with a token.
    pub user: Option<&'a str>,
    /// The name is its token's `name`: verified, always granted.
    pub verified: bool,
    /// A reclaim token for the name (from the welcome of an earlier connection).
    pub reclaim: Option<&'a str>,
}

/// The name is held by someone else in the room: `nick_taken`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Taken;

#[derive(Debug)]
struct Holder {
    session: SessionId,
    user: Option<Arc<str>>,
}

type Stripe = HashMap<(RoomId, Box<str>), Vec<Holder>>;

/// The names held in every room of this node (one per node, shared by its event loops).
pub struct NameClaims {
    stripes: Box<[Mutex<Stripe>]>,
    hasher: RandomState,
    /// Signs reclaim tokens; made at start-up, so a restart voids them.
    reclaim_key: hmac::Key,
}

impl std::fmt::Debug for NameClaims {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NameClaims").finish_non_exhaustive()
    }
}

impl Default for NameClaims {
    fn default() -> Self {
        let mut secret = [0u8; 32];
        // Without the OS's randomness the key is still unknown to clients, only weaker.
        if getrandom::getrandom(&mut secret).is_err() {
            secret[..8].copy_from_slice(&crate::backoff::random_seed().to_le_bytes());
        }
        NameClaims {
            stripes: (0..STRIPES).map(|_| Mutex::default()).collect(),
            hasher: RandomState::new(),
            reclaim_key: hmac::Key::new(hmac::HMAC_SHA256, &secret),
        }
    }
}

/// Bytes of the HMAC a reclaim token carries (128 bits: not guessable).
const RECLAIM_TAG: usize = 16;

/// A granted claim.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Claimed {
    /// The session the name was taken back from (a reclaim): it is to be closed.
    pub replaced: Option<SessionId>,
}

/// The form in which names are compared.
pub fn fold(nick: &Nick) -> Box<str> {
    nick.as_str().to_lowercase().into_boxed_str()
}

impl NameClaims {
    /// Claims `nick` in `room` for `who`: granted (and held until [`NameClaims::release`]) or
    /// [`Taken`].
    pub fn claim(&self, room: &RoomId, nick: &Nick, who: Claimant) -> Result<Claimed, Taken> {
        let folded = fold(nick);
        // Checked before the lock: an HMAC is cheap, but not free.
        let reclaiming = who
            .reclaim
            .and_then(|token| self.verified_reclaim(room, &folded, token));
        let mut stripe = self.stripe(room);
        let holders = stripe.entry((room.clone(), folded)).or_default();
        let ours = |h: &Holder| {
            h.session == who.session || (who.user.is_some() && h.user.as_deref() == who.user)
        };
        let mut claimed = Claimed { replaced: None };
        if !who.verified && !holders.iter().all(ours) {
            // The one other holder is the session the token was made for: it is replaced.
            let Some(old) = reclaiming.filter(|old| {
                holders.iter().any(|h| h.session == *old)
                    && holders.iter().all(|h| ours(h) || h.session == *old)
            }) else {
                return Err(Taken);
            };
            holders.retain(|h| h.session != old);
            claimed.replaced = Some(old);
        }
        if !holders.iter().any(|h| h.session == who.session) {
            holders.push(Holder {
                session: who.session,
                user: who.user.map(Arc::from),
            });
        }
        Ok(claimed)
    }

    /// The token with which `session`, holding `nick` in `room`, may take it back from a
    /// new connection: `<worker>.<seq>.<hex HMAC-SHA256, 128 bits>`.
    pub fn reclaim_token(&self, room: &RoomId, nick: &Nick, session: SessionId) -> String {
        let tag = self.tag(room, &fold(nick), session);
        let mut token = format!("{session}.");
        for byte in &tag.as_ref()[..RECLAIM_TAG] {
            let _ = write!(token, "{byte:02x}");
        }
        token
    }

    /// The session a reclaim token was made for, if it is genuine for `folded` in `room`.
    fn verified_reclaim(&self, room: &RoomId, folded: &str, token: &str) -> Option<SessionId> {
        let (id, hex) = token.rsplit_once('.')?;
        let session = SessionId::parse(id)?;
        if hex.len() != 2 * RECLAIM_TAG {
            return None;
        }
        let mut given = [0u8; RECLAIM_TAG];
        for (i, byte) in given.iter_mut().enumerate() {
            *byte = u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok()?;
        }
        let expected = self.tag(room, folded, session);
        // Constant time, as for any secret compared with what a peer sent.
        bool::from(given.ct_eq(&expected.as_ref()[..RECLAIM_TAG])).then_some(session)
    }

    fn tag(&self, room: &RoomId, folded: &str, session: SessionId) -> hmac::Tag {
        let mut context = hmac::Context::with_key(&self.reclaim_key);
        // Lengths first, so that no two (room, name, session) triples read alike.
        for part in [room.as_str(), folded] {
            context.update(&(part.len() as u64).to_le_bytes());
            context.update(part.as_bytes());
        }
        context.update(&session.worker.to_le_bytes());
        context.update(&session.seq.to_le_bytes());
        context.sign()
    }

    /// Session `session` no longer holds `nick` in `room` (if it did).
    pub fn release(&self, room: &RoomId, nick: &Nick, session: SessionId) {
        let mut stripe = self.stripe(room);
        let key = (room.clone(), fold(nick));
        let Some(holders) = stripe.get_mut(&key) else {
            return;
        };
        holders.retain(|h| h.session != session);
        if holders.is_empty() {
            stripe.remove(&key);
        }
    }

    /// How many (room, name) pairs are held.
    pub fn len(&self) -> usize {
        self.stripes.iter().map(|s| lock(s).len()).sum()
    }

    /// Whether no name is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn stripe(&self, room: &RoomId) -> std::sync::MutexGuard<'_, Stripe> {
        let index = self.hasher.hash_one(room) as usize % self.stripes.len();
        lock(&self.stripes[index])
    }
}

/// The lock, even if a thread panicked while holding it: the map is never left half-changed
/// (each change is one insert, push, retain or remove).
fn lock(stripe: &Mutex<Stripe>) -> std::sync::MutexGuard<'_, Stripe> {
    stripe.lock().unwrap_or_else(PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;

    const GRANTED: Result<Claimed, Taken> = Ok(Claimed { replaced: None });

    fn id(seq: u64) -> SessionId {
        SessionId { worker: 0, seq }
    }

    fn anon(seq: u64) -> Claimant<'static> {
        Claimant {
            session: id(seq),
            user: None,
            verified: false,
            reclaim: None,
        }
    }

    fn nick(name: &str) -> Nick {
        Nick::parse(name).unwrap()
    }

    #[test]
    fn a_name_is_one_members_per_room_whatever_its_case_until_released() {
        let names = NameClaims::default();
        let (a, b) = (RoomId::parse("a").unwrap(), RoomId::parse("b").unwrap());
        assert_eq!(names.claim(&a, &nick("Ann"), anon(1)), GRANTED);
        assert_eq!(names.claim(&a, &nick("ann"), anon(2)), Err(Taken));
        assert_eq!(names.claim(&a, &nick("ANN"), anon(2)), Err(Taken));
        assert_eq!(
            names.claim(&b, &nick("ann"), anon(2)),
            GRANTED,
            "another room"
        );
        // Claiming again for the same session is no second claim.
        assert_eq!(names.claim(&a, &nick("ann"), anon(1)), GRANTED);
        // Releasing for a session that does not hold it changes nothing.
        names.release(&a, &nick("ann"), id(2));
        assert_eq!(names.claim(&a, &nick("ann"), anon(3)), Err(Taken));
        names.release(&a, &nick("aNN"), id(1));
        assert_eq!(names.claim(&a, &nick("ann"), anon(3)), GRANTED);
        names.release(&a, &nick("ann"), id(3));
        names.release(&b, &nick("ann"), id(2));
        assert!(names.is_empty());
    }

    #[test]
    fn a_reclaim_token_takes_the_name_back_from_its_own_session_only() {
        let names = NameClaims::default();
        let (a, b) = (RoomId::parse("a").unwrap(), RoomId::parse("b").unwrap());
        assert_eq!(names.claim(&a, &nick("Ann"), anon(1)), GRANTED);
        let token = names.reclaim_token(&a, &nick("Ann"), id(1));
        let with = |seq, token: &'static str| Claimant {
            reclaim: Some(token),
            ..anon(seq)
        };
        let token: &'static str = Box::leak(token.into_boxed_str());
        // Not for another room, nor (folded) another name, nor altered.
        assert_eq!(names.claim(&b, &nick("x"), anon(9)), GRANTED);
        let other_room = Box::leak(
            names
                .reclaim_token(&b, &nick("Ann"), id(1))
                .into_boxed_str(),
        );
        assert_eq!(
            names.claim(&a, &nick("ann"), with(2, other_room)),
            Err(Taken)
        );
        let mut forged = token.to_owned();
        let last = forged.pop().unwrap();
        forged.push(if last == '0' { '1' } else { '0' });
        let forged: &'static str = Box::leak(forged.into_boxed_str());
        assert_eq!(names.claim(&a, &nick("ann"), with(2, forged)), Err(Taken));
        for junk in ["", "0.1", "x.y.z", "0.1.zz", "99999999.1.00"] {
            assert_eq!(names.claim(&a, &nick("ann"), with(2, junk)), Err(Taken));
        }
        // The genuine token, with the name in any case: the old session is replaced.
        assert_eq!(
            names.claim(&a, &nick("ANN"), with(2, token)),
            Ok(Claimed {
                replaced: Some(id(1))
            })
        );
        // Spent: session 1 no longer holds the name, so its token takes nothing from 2.
        assert_eq!(names.claim(&a, &nick("ann"), with(3, token)), Err(Taken));
        names.release(&a, &nick("ann"), id(1));
        assert_eq!(
            names.claim(&a, &nick("ann"), anon(4)),
            Err(Taken),
            "2 holds it"
        );
        names.release(&a, &nick("ann"), id(2));
        assert_eq!(names.claim(&a, &nick("ann"), anon(4)), GRANTED);
    }

    #[test]
    fn lowercasing_is_unicode_but_nothing_else_is_folded() {
        let names = NameClaims::default();
        let room = RoomId::parse("r").unwrap();
        assert_eq!(names.claim(&room, &nick("JOSÉ"), anon(1)), GRANTED);
        assert_eq!(names.claim(&room, &nick("josé"), anon(2)), Err(Taken));
        assert_eq!(names.claim(&room, &nick("jose"), anon(3)), GRANTED);
        assert_eq!(names.claim(&room, &nick("Straße"), anon(4)), GRANTED);
        assert_eq!(names.claim(&room, &nick("strasse"), anon(5)), GRANTED);
    }

    #[test]
    fn a_tokens_name_wins_and_one_user_may_hold_a_name_twice() {
        let names = NameClaims::default();
        let room = RoomId::parse("r").unwrap();
        let user = |seq, sub, verified| Claimant {
            session: id(seq),
            user: Some(sub),
            verified,
            reclaim: None,
        };
        assert_eq!(names.claim(&room, &nick("ann"), anon(1)), GRANTED);
        // A signed-in Ann gets her token's name even though an anonymous ann has it.
        assert_eq!(
            names.claim(&room, &nick("Ann"), user(2, "u-1", true)),
            GRANTED
        );
        names.release(&room, &nick("ann"), id(1));
        // ... and holds it against anonymous members, but not against herself.
        assert_eq!(names.claim(&room, &nick("ann"), anon(3)), Err(Taken));
        assert_eq!(
            names.claim(&room, &nick("ann"), user(4, "u-1", false)),
            GRANTED
        );
        assert_eq!(
            names.claim(&room, &nick("ann"), user(5, "u-2", false)),
            Err(Taken),
            "a chosen name is not another user's"
        );
        names.release(&room, &nick("ann"), id(2));
        names.release(&room, &nick("ann"), id(4));
        assert!(names.is_empty());
    }

    #[test]
    fn racing_claims_from_many_threads_grant_a_name_once() {
        let names = Arc::new(NameClaims::default());
        let room = RoomId::parse("r").unwrap();
        let granted: usize = std::thread::scope(|s| {
            let tries: Vec<_> = (0..8)
                .map(|seq| {
                    let (names, room) = (names.clone(), room.clone());
                    s.spawn(move || names.claim(&room, &nick("ann"), anon(seq)).is_ok())
                })
                .collect();
            tries
                .into_iter()
                .map(|t| usize::from(t.join().unwrap()))
                .sum()
        });
        assert_eq!(granted, 1);
    }
}
