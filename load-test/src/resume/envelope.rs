//! The `shardcast.v1` server envelopes a resuming subscriber reads (docs/protocol.md and the
//! history contract): `welcome` and `message`; every other type is passed over.
//!
//! Parsed with serde_json, borrowing the text where it has no escapes. Unknown fields are
//! ignored (later servers may add some); a field of the wrong type makes the envelope
//! unparsable, which the scenario counts rather than trusting half of it.

use std::borrow::Cow;

use serde::Deserialize;

/// A server envelope, as far as resuming is concerned.
#[derive(Debug, PartialEq, Eq, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum Envelope<'a> {
    /// The client is a member. `epoch` and `offset` are absent when the server keeps no
    /// history; `recovered` only answers a `since`.
    Welcome {
        epoch: Option<String>,
        offset: Option<u64>,
        /// History messages that follow, before any live one.
        #[serde(default)]
        replay: u64,
        recovered: Option<bool>,
    },
    /// A room message; `history` marks one replayed after the welcome.
    Message {
        #[serde(borrow)]
        text: Cow<'a, str>,
        offset: Option<u64>,
        #[serde(default)]
        history: bool,
    },
    /// An `error` envelope (e.g. `history_limit`): counted, the connection stays.
    Error {
        #[serde(borrow)]
        code: Cow<'a, str>,
    },
    /// `join`, `leave`, `online` and types of later versions.
    #[serde(other)]
    Other,
}

impl<'a> Envelope<'a> {
    pub fn parse(payload: &'a [u8]) -> Result<Envelope<'a>, serde_json::Error> {
        serde_json::from_slice(payload)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_resume_fields() {
        let welcome = br#"{"type":"welcome","id":"0.12","room":"general","nick":"ann","online":3,
            "epoch":"9f3a0c1b2d4e5f60","offset":41,"replay":2,"recovered":true}"#;
        assert_eq!(
            Envelope::parse(welcome).unwrap(),
            Envelope::Welcome {
                epoch: Some("9f3a0c1b2d4e5f60".into()),
                offset: Some(41),
                replay: 2,
                recovered: Some(true),
            }
        );
        let message = br#"{"type":"message","id":"1.4","nick":"bob","text":"SCL1:0:1:2;xx","ts":1,"offset":42,"history":true}"#;
        let Envelope::Message {
            text,
            offset,
            history,
        } = Envelope::parse(message).unwrap()
        else {
            panic!("not a message");
        };
        assert_eq!(
            (text.as_ref(), offset, history),
            ("SCL1:0:1:2;xx", Some(42), true)
        );
        assert!(matches!(text, Cow::Borrowed(_)), "no escapes: borrowed");
    }

    #[test]
    fn tolerates_what_history_off_leaves_out_and_other_types() {
        let welcome = br#"{"type":"welcome","id":"0.1","room":"r","nick":"a","online":1}"#;
        assert_eq!(
            Envelope::parse(welcome).unwrap(),
            Envelope::Welcome {
                epoch: None,
                offset: None,
                replay: 0,
                recovered: None
            }
        );
        let live = br#"{"type":"message","id":"1.4","nick":null,"text":"hi","ts":1}"#;
        assert!(matches!(
            Envelope::parse(live).unwrap(),
            Envelope::Message {
                offset: None,
                history: false,
                ..
            }
        ));
        for other in [
            &br#"{"type":"join","id":"1.5","nick":"cy","online":4}"#[..],
            br#"{"type":"online","online":41}"#,
            br#"{"type":"fancy-later-type"}"#,
        ] {
            assert_eq!(Envelope::parse(other).unwrap(), Envelope::Other);
        }
    }

    #[test]
    fn refuses_what_it_cannot_trust() {
        for bad in [
            &b"not json"[..],
            br#"{"type":"welcome","offset":"41"}"#,
            br#"{"type":"message","offset":-1,"text":"x"}"#,
            br#"{"no":"type"}"#,
        ] {
            assert!(
                Envelope::parse(bad).is_err(),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
    }
}
