//! The threading models besides the default sharded one, kept so that users can compare them
//! with the load generator (`--model`). See `docs/architecture.md` for the table.
//!
//! * `single` is a shard that owns the listener (see `Shard`'s `listener` part): one thread,
//!   one loop, no acceptor, no mesh.
//! * `shared` ([`shared`]) is N threads over one locked registry.
//!
//! Both run the same [`crate::session::Session`] state machine as the sharded model, so they
//! behave the same to clients; only where state lives and who writes to sockets differs.

pub mod shared;
