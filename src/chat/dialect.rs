//! Which of the two dialects a session speaks, chosen by subprotocol negotiation.

/// The subprotocol name a client offers in `Sec-WebSocket-Protocol` to speak v1.
pub const SUBPROTOCOL: &str = "shardcast.v1";

/// How a session talks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    /// The byte-exact relay of the core: messages in, messages out, nothing else.
    Plain,
    /// JSON envelopes with nicknames and presence.
    V1,
}

impl Dialect {
    /// The dialect for a client that offered `offers` (the values of every
    /// `Sec-WebSocket-Protocol` header it sent, each a comma-separated list).
    pub fn negotiate<'a>(offers: impl IntoIterator<Item = &'a str>) -> Dialect {
        let v1 = offers
            .into_iter()
            .flat_map(|value| value.split(','))
            .any(|token| token.trim() == SUBPROTOCOL);
        if v1 { Dialect::V1 } else { Dialect::Plain }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v1_is_chosen_only_when_offered_exactly() {
        assert_eq!(Dialect::negotiate([]), Dialect::Plain);
        assert_eq!(Dialect::negotiate(["chat"]), Dialect::Plain);
        assert_eq!(Dialect::negotiate(["shardcast.v1"]), Dialect::V1);
        assert_eq!(Dialect::negotiate(["chat, shardcast.v1"]), Dialect::V1);
        assert_eq!(Dialect::negotiate(["chat", " shardcast.v1 "]), Dialect::V1);
        assert_eq!(Dialect::negotiate(["shardcast.v10"]), Dialect::Plain);
        assert_eq!(Dialect::negotiate(["SHARDCAST.V1"]), Dialect::Plain);
    }
}
