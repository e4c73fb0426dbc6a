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

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::sync::{Arc, Mutex, PoisonError};

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
#[derive(Debug)]
pub struct NameClaims {
    stripes: Box<[Mutex<Stripe>]>,
    hasher: RandomState,
}

impl Default for NameClaims {
    fn default() -> Self {
        NameClaims {
            stripes: (0..STRIPES).map(|_| Mutex::default()).collect(),
            hasher: RandomState::new(),
        }
    }
}

/// The form in which names are compared.
pub fn fold(nick: &Nick) -> Box<str> {
    nick.as_str().to_lowercase().into_boxed_str()
}

impl NameClaims {
    /// Claims `nick` in `room` for `who`: granted (and held until [`NameClaims::release`]) or
    /// [`Taken`].
    pub fn claim(&self, room: &RoomId, nick: &Nick, who: Claimant) -> Result<(), Taken> {
        let mut stripe = self.stripe(room);
        let holders = stripe.entry((room.clone(), fold(nick))).or_default();
        let ours = |h: &Holder| {
            h.session == who.session || (who.user.is_some() && h.user.as_deref() == who.user)
        };
        if !who.verified && !holders.iter().all(ours) {
            return Err(Taken);
        }
        if !holders.iter().any(|h| h.session == who.session) {
            holders.push(Holder {
                session: who.session,
                user: who.user.map(Arc::from),
            });
        }
        Ok(())
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

    fn id(seq: u64) -> SessionId {
        SessionId { worker: 0, seq }
    }

    fn anon(seq: u64) -> Claimant<'static> {
        Claimant {
            session: id(seq),
            user: None,
            verified: false,
        }
    }

    fn nick(name: &str) -> Nick {
        Nick::parse(name).unwrap()
    }

    #[test]
    fn a_name_is_one_members_per_room_whatever_its_case_until_released() {
        let names = NameClaims::default();
        let (a, b) = (RoomId::parse("a").unwrap(), RoomId::parse("b").unwrap());
        assert_eq!(names.claim(&a, &nick("Ann"), anon(1)), Ok(()));
        assert_eq!(names.claim(&a, &nick("ann"), anon(2)), Err(Taken));
        assert_eq!(names.claim(&a, &nick("ANN"), anon(2)), Err(Taken));
        assert_eq!(
            names.claim(&b, &nick("ann"), anon(2)),
            Ok(()),
            "another room"
        );
        // Claiming again for the same session is no second claim.
        assert_eq!(names.claim(&a, &nick("ann"), anon(1)), Ok(()));
        // Releasing for a session that does not hold it changes nothing.
        names.release(&a, &nick("ann"), id(2));
        assert_eq!(names.claim(&a, &nick("ann"), anon(3)), Err(Taken));
        names.release(&a, &nick("aNN"), id(1));
        assert_eq!(names.claim(&a, &nick("ann"), anon(3)), Ok(()));
        names.release(&a, &nick("ann"), id(3));
        names.release(&b, &nick("ann"), id(2));
        assert!(names.is_empty());
    }

    #[test]
    fn lowercasing_is_unicode_but_nothing_else_is_folded() {
        let names = NameClaims::default();
        let room = RoomId::parse("r").unwrap();
        assert_eq!(names.claim(&room, &nick("JOSÉ"), anon(1)), Ok(()));
        assert_eq!(names.claim(&room, &nick("josé"), anon(2)), Err(Taken));
        assert_eq!(names.claim(&room, &nick("jose"), anon(3)), Ok(()));
        assert_eq!(names.claim(&room, &nick("Straße"), anon(4)), Ok(()));
        assert_eq!(names.claim(&room, &nick("strasse"), anon(5)), Ok(()));
    }

    #[test]
    fn a_tokens_name_wins_and_one_user_may_hold_a_name_twice() {
        let names = NameClaims::default();
        let room = RoomId::parse("r").unwrap();
        let user = |seq, sub, verified| Claimant {
            session: id(seq),
            user: Some(sub),
            verified,
        };
        assert_eq!(names.claim(&room, &nick("ann"), anon(1)), Ok(()));
        // A signed-in Ann gets her token's name even though an anonymous ann has it.
        assert_eq!(
            names.claim(&room, &nick("Ann"), user(2, "u-1", true)),
            Ok(())
        );
        names.release(&room, &nick("ann"), id(1));
        // ... and holds it against anonymous members, but not against herself.
        assert_eq!(names.claim(&room, &nick("ann"), anon(3)), Err(Taken));
        assert_eq!(
            names.claim(&room, &nick("ann"), user(4, "u-1", false)),
            Ok(())
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
