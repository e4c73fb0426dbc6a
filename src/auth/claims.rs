//! A token's claims and the rules they must meet (docs/auth.md, "Claims"): pure data and
//! arithmetic on a given time, so that every rule is tested without keys or clocks.

use std::sync::Arc;

use serde::Deserialize;

use super::Refusal;
use crate::chat::Nick;
use crate::room::RoomId;

/// Seconds the time claims (`exp`, `nbf`, `iat`) may be off, for clocks that disagree a little.
pub const LEEWAY_SECS: u64 = 5;

/// Most bytes in a `sub` (it travels in envelopes, logs and the cluster's wire format).
pub const MAX_USER_BYTES: usize = 128;

/// The claims as a token carries them (unknown claims are ignored). A claim of the wrong type
/// fails the decoding as a whole ([`Refusal::Claims`]).
#[derive(Debug, Default, Deserialize)]
pub struct Claims {
    /// The user id (required).
    #[serde(default)]
    pub sub: Option<String>,
    /// The display name; it must follow the nickname rule.
    #[serde(default)]
    pub name: Option<String>,
    /// Expiry, seconds since the Unix epoch (fractions allowed, as RFC 7519 does).
    #[serde(default)]
    pub exp: Option<f64>,
    /// Not before, seconds since the Unix epoch.
    #[serde(default)]
    pub nbf: Option<f64>,
    /// Issued at, seconds since the Unix epoch.
    #[serde(default)]
    pub iat: Option<f64>,
    /// The rooms the token allows; absent: every room.
    #[serde(default)]
    pub rooms: Option<Vec<String>>,
    /// `false` makes the member read-only; absent: it may publish.
    #[serde(default)]
    pub publish: Option<bool>,
}

/// Who a valid token says the client is, and what it may do.
#[derive(Debug, Clone)]
pub struct Identity {
    /// The user id (`sub`), shown to others as `user`.
    pub user: Arc<str>,
    /// The display name (`name`), which wins over any nickname the client asks for.
    pub name: Option<Nick>,
    /// The rooms allowed; `None`: every room.
    pub rooms: Option<Vec<String>>,
    /// Whether the member may send messages.
    pub publish: bool,
    /// When the connection must end: `exp` plus the leeway, in seconds since the Unix epoch
    /// (`None`: the token does not expire).
    pub ends_at: Option<f64>,
}

impl Identity {
    /// Whether the token lets its holder into `room`.
    pub fn allows(&self, room: &RoomId) -> bool {
        self.rooms
            .as_ref()
            .is_none_or(|rooms| rooms.iter().any(|r| r == room.as_str()))
    }
}

impl Claims {
    /// Checks the claims at `now` (seconds since the Unix epoch), with [`LEEWAY_SECS`].
    pub fn check(self, now: f64) -> Result<Identity, Refusal> {
        let leeway = LEEWAY_SECS as f64;
        let finite = |t: Option<f64>| t.is_none_or(f64::is_finite);
        if !(finite(self.exp) && finite(self.nbf) && finite(self.iat)) {
            return Err(Refusal::Claims);
        }
        if self.exp.is_some_and(|exp| exp + leeway <= now) {
            return Err(Refusal::Expired);
        }
        // A token issued in the future is as premature as one whose nbf is to come.
        if self.nbf.is_some_and(|nbf| nbf > now + leeway)
            || self.iat.is_some_and(|iat| iat > now + leeway)
        {
            return Err(Refusal::NotYetValid);
        }
        let user = match self.sub {
            Some(sub) if valid_user(&sub) => Arc::from(sub),
            _ => return Err(Refusal::Claims),
        };
        let name = match self.name {
            None => None,
            Some(name) => Some(Nick::parse(&name).ok_or(Refusal::Claims)?),
        };
        Ok(Identity {
            user,
            name,
            rooms: self.rooms,
            publish: self.publish.unwrap_or(true),
            ends_at: self.exp.map(|exp| exp + leeway),
        })
    }
}

/// A user id is 1 to [`MAX_USER_BYTES`] bytes without control characters.
fn valid_user(sub: &str) -> bool {
    !sub.is_empty() && sub.len() <= MAX_USER_BYTES && !sub.chars().any(char::is_control)
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: f64 = 1_800_000_000.0;

    fn claims() -> Claims {
        Claims {
            sub: Some("u-42".into()),
            ..Claims::default()
        }
    }

    #[test]
    fn a_subject_alone_is_a_member_of_every_room_who_may_publish() {
        let id = claims().check(NOW).unwrap();
        assert_eq!(&*id.user, "u-42");
        assert!(id.name.is_none() && id.publish && id.ends_at.is_none());
        assert!(id.allows(&RoomId::parse("anything").unwrap()));
    }

    #[test]
    fn the_subject_is_required_and_bounded() {
        for sub in [
            None,
            Some(String::new()),
            Some("a\nb".into()),
            Some("x".repeat(129)),
        ] {
            let c = Claims { sub, ..claims() };
            assert_eq!(c.check(NOW).unwrap_err(), Refusal::Claims);
        }
        let c = Claims {
            sub: Some("é".repeat(64)),
            ..claims()
        };
        assert!(c.check(NOW).is_ok());
    }

    #[test]
    fn times_are_checked_with_the_leeway() {
        let at = |exp: Option<f64>, nbf: Option<f64>, iat: Option<f64>| {
            Claims {
                exp,
                nbf,
                iat,
                ..claims()
            }
            .check(NOW)
            .map(|id| id.ends_at)
        };
        let leeway = LEEWAY_SECS as f64;
        assert_eq!(
            at(Some(NOW + 60.0), None, None),
            Ok(Some(NOW + 60.0 + leeway))
        );
        // Expired a moment ago: still within the leeway.
        assert!(at(Some(NOW - leeway + 1.0), None, None).is_ok());
        assert_eq!(at(Some(NOW - leeway), None, None), Err(Refusal::Expired));
        assert_eq!(at(Some(NOW - 3600.0), None, None), Err(Refusal::Expired));
        assert!(at(None, Some(NOW + leeway), Some(NOW + leeway)).is_ok());
        assert_eq!(
            at(None, Some(NOW + leeway + 1.0), None),
            Err(Refusal::NotYetValid)
        );
        assert_eq!(at(None, None, Some(NOW + 600.0)), Err(Refusal::NotYetValid));
        assert_eq!(at(Some(f64::NAN), None, None), Err(Refusal::Claims));
    }

    #[test]
    fn the_name_must_be_a_valid_nickname() {
        let named = |name: &str| {
            Claims {
                name: Some(name.into()),
                ..claims()
            }
            .check(NOW)
        };
        assert_eq!(named("Ann_B").unwrap().name.unwrap().as_str(), "Ann_B");
        for bad in ["", "Ann B", "<b>", &"x".repeat(25)] {
            assert_eq!(named(bad).unwrap_err(), Refusal::Claims, "{bad:?}");
        }
    }

    #[test]
    fn rooms_and_publish_are_what_the_token_says() {
        let id = Claims {
            rooms: Some(vec!["general".into(), "lobby".into()]),
            publish: Some(false),
            ..claims()
        }
        .check(NOW)
        .unwrap();
        assert!(!id.publish);
        assert!(id.allows(&RoomId::parse("general").unwrap()));
        assert!(!id.allows(&RoomId::parse("secret").unwrap()));
        let none = Claims {
            rooms: Some(Vec::new()),
            ..claims()
        }
        .check(NOW)
        .unwrap();
        assert!(!none.allows(&RoomId::parse("general").unwrap()));
    }

    #[test]
    fn claims_of_the_wrong_type_do_not_parse() {
        for bad in [
            r#"{"sub":5}"#,
            r#"{"sub":"a","rooms":"general"}"#,
            r#"{"sub":"a","publish":"no"}"#,
            r#"{"sub":"a","exp":"tomorrow"}"#,
        ] {
            assert!(serde_json::from_str::<Claims>(bad).is_err(), "{bad}");
        }
        let ok: Claims =
            serde_json::from_str(r#"{"sub":"a","exp":1.5e9,"extra":[1],"publish":false}"#).unwrap();
        assert_eq!(ok.exp, Some(1.5e9));
    }
}
