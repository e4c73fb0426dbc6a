//! A membership change, as the event loop hands it to the cluster bridge and the bridge hands
//! it back to other nodes' loops.

use std::sync::Arc;

use crate::chat::Nick;
use crate::chat::envelope::Change;

/// Someone joined or left a room.
#[derive(Debug, Clone)]
pub struct MemberChange {
    /// Joined or left.
    pub change: Change,
    /// The member's id.
    pub id: Arc<str>,
    /// Its nickname.
    pub nick: Option<Nick>,
    /// Its user id, when it came with a token (docs/auth.md).
    pub user: Option<Arc<str>>,
}

impl MemberChange {
    /// The member as envelopes name it.
    pub fn who(&self) -> crate::chat::envelope::Who<'_> {
        crate::chat::envelope::Who {
            id: &self.id,
            nick: self.nick.as_ref().map(Nick::as_str),
            user: self.user.as_deref(),
        }
    }
}
