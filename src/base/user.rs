//! THE user-name rule, used by every route and layer that takes a user name.
//!
//! A user name is 1-128 characters of ASCII letters, digits and `. _ - @ +` (campus ids such
//! as `r0123456`, e-mail addresses with sub-addressing such as `an.peeters+kiosk@odisee.be`),
//! and is not `.` or `..` (it is a path segment in `/v1/users/{user}`). ASCII only: no control,
//! bidirectional-override or look-alike characters can reach the database or an audit line.

use std::fmt;

pub const MAX_USER_NAME_CHARS: usize = 128;

/// What clients are told when a user name breaks the rule.
pub const USER_NAME_RULE: &str =
    "`user` must be 1-128 characters of letters, digits and . _ - @ + (not `.` or `..`)";

/// A user name that follows the rule.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct UserName(String);

/// A user name that breaks the rule (the message is [`USER_NAME_RULE`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{USER_NAME_RULE}")]
pub struct InvalidUserName;

impl UserName {
    pub fn parse(s: &str) -> Result<UserName, InvalidUserName> {
        if is_valid_user_name(s) {
            Ok(UserName(s.to_string()))
        } else {
            Err(InvalidUserName)
        }
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for UserName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The rule itself (see the module documentation).
pub fn is_valid_user_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= MAX_USER_NAME_CHARS
        && s != "."
        && s != ".."
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b'@' | b'+'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_rule() {
        for ok in [
            "r0123456",
            "an.peeters+kiosk@odisee.be",
            "a",
            "...",
            ".hidden",
            "A_B-C",
            &"x".repeat(128),
        ] {
            assert!(UserName::parse(ok).is_ok(), "{ok:?} should pass");
        }
        for bad in [
            "",
            ".",
            "..",
            &"x".repeat(129),
            "an peeters",
            "a/b",
            "a%2Fb",
            "zoë",
            "a\u{202E}b",
            "a\0",
            "a\n",
            "а", // Cyrillic a
        ] {
            assert_eq!(
                UserName::parse(bad),
                Err(InvalidUserName),
                "{bad:?} should fail"
            );
        }
    }
}
