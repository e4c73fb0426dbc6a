//! The `shardcast.v1` chat protocol (`docs/protocol.md`): dialects, nicknames, envelopes and
//! the message a room relays.
//!
//! Everything here is pure data and encoding: the session decides what a client said, the
//! shard (or the shared-model worker) decides who hears it. Each rendering of a message is
//! encoded once and shared by refcount ([`post::Outgoing`]).

pub mod dialect;
pub mod envelope;
pub mod member;
pub mod nick;
pub mod post;

pub use dialect::{Dialect, SUBPROTOCOL};
pub use member::MemberChange;
pub use nick::Nick;
pub use post::{Body, Outgoing, Post};
