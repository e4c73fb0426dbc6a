//! How an event-loop thread holds a session: outright (the shards), or behind a mutex that
//! other threads may take too (the `shared` model). The loop is written once over [`Cell`];
//! for an owned session `with` is a direct call, so the sharded path pays nothing for it.

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use crate::session::{Session, Transport};

/// How an event-loop thread holds a session.
pub trait Cell {
    /// The connection under the session.
    type Stream: Transport;
    /// What other threads may hold of the session (nothing, for a shard's own sessions).
    type Handle: Clone;

    /// Wraps a new session.
    fn wrap(session: Session<Self::Stream>) -> Self;
    /// Runs `f` on the session.
    fn with<R>(&mut self, f: impl FnOnce(&mut Session<Self::Stream>) -> R) -> R;
    /// A handle for other threads.
    fn handle(&self) -> Self::Handle;
}

/// A session owned by its thread alone (the `sharded` and `single` models): no lock, no
/// refcount; `with` is a direct call.
impl<S: Transport> Cell for Session<S> {
    type Stream = S;
    type Handle = ();

    fn wrap(session: Session<S>) -> Self {
        session
    }

    #[inline]
    fn with<R>(&mut self, f: impl FnOnce(&mut Session<S>) -> R) -> R {
        f(self)
    }

    fn handle(&self) {}
}

/// A session other threads may write to (the `shared` model).
pub type Locked<S> = Arc<Mutex<Session<S>>>;

/// Locks, carrying on after a panic elsewhere (every critical section over a session leaves
/// it consistent: they push, pop or swap).
pub fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl<S: Transport> Cell for Locked<S> {
    type Stream = S;
    type Handle = Locked<S>;

    fn wrap(session: Session<S>) -> Self {
        Arc::new(Mutex::new(session))
    }

    #[inline]
    fn with<R>(&mut self, f: impl FnOnce(&mut Session<S>) -> R) -> R {
        f(&mut lock(self))
    }

    fn handle(&self) -> Locked<S> {
        self.clone()
    }
}
