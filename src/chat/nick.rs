//! Nicknames: validated once, then shared by every message and notice that carries them.

use std::sync::Arc;

/// Most characters (not bytes) in a nickname.
pub const MAX_NICK_CHARS: usize = 24;

/// The rule, as the `bad_nick` error states it.
pub const NICK_RULE: &str = "a nickname is 1-24 letters, digits, '-', '_' or '.'";

/// A valid nickname: 1 to [`MAX_NICK_CHARS`] characters, each a letter or digit of any script,
/// `-`, `_` or `.`. No spaces or punctuation, so the plain rendering `nick: text` is never
/// ambiguous and a nickname cannot pose as a notice.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Nick(Arc<str>);

impl Nick {
    /// Validates `name`; `None` when it breaks the rule.
    pub fn parse(name: &str) -> Option<Nick> {
        let mut count = 0;
        for c in name.chars() {
            count += 1;
            if count > MAX_NICK_CHARS || !(c.is_alphanumeric() || matches!(c, '-' | '_' | '.')) {
                return None;
            }
        }
        (count > 0).then(|| Nick(Arc::from(name)))
    }

    /// The nickname.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nicknames_follow_the_documented_rule() {
        for good in ["ann", "Bob_2", "a.b-c", "José", "たろう", &"x".repeat(24)] {
            assert!(Nick::parse(good).is_some(), "{good:?}");
        }
        for bad in [
            "",
            "a b",
            "ann:",
            "<b>",
            "x\u{0}",
            &"x".repeat(25),
            "tab\t",
            "🙂",
        ] {
            assert!(Nick::parse(bad).is_none(), "{bad:?}");
        }
        // Characters, not bytes: 24 two-byte letters are fine.
        assert!(Nick::parse(&"é".repeat(24)).is_some());
    }
}
