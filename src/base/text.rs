//! Free text a person typed (nicknames, display names): the one rule for what may be stored
//! and shown back at a kiosk or in the service desk's tools.

/// Bidirectional formatting characters (Unicode UAX #9: embeddings, overrides, isolates and
/// marks). A nickname carrying U+202E would show reversed text to the next reader, so these
/// are refused like control characters.
pub fn is_bidi_control(c: char) -> bool {
    matches!(
        c,
        '\u{061C}' | '\u{200E}' | '\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}'
    )
}

/// Why a text field was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TextProblem {
    Empty,
    TooLong { max: usize },
    Unprintable,
}

/// Check a free-text field: not blank, at most `max` characters, no control (NUL, newline, ...)
/// and no bidirectional formatting characters.
pub fn check_text(v: &str, max: usize) -> Result<(), TextProblem> {
    if v.trim().is_empty() {
        return Err(TextProblem::Empty);
    }
    if v.chars().count() > max {
        return Err(TextProblem::TooLong { max });
    }
    if v.chars().any(|c| c.is_control() || is_bidi_control(c)) {
        return Err(TextProblem::Unprintable);
    }
    Ok(())
}

/// The message clients get for a refused field.
pub fn text_message(field: &str, max: usize) -> String {
    format!("`{field}` must be 1-{max} printable characters (no control or bidirectional-override characters)")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_rule() {
        assert_eq!(check_text("blauwe sleutel", 128), Ok(()));
        assert_eq!(check_text("Zoë Dupré", 128), Ok(()));
        assert_eq!(check_text("  ", 128), Err(TextProblem::Empty));
        assert_eq!(
            check_text(&"a".repeat(129), 128),
            Err(TextProblem::TooLong { max: 128 })
        );
        assert_eq!(check_text(&"é".repeat(128), 128), Ok(()));
        assert_eq!(
            check_text("abc\u{202E}fed", 128),
            Err(TextProblem::Unprintable)
        );
        assert_eq!(check_text("a\u{2067}b", 128), Err(TextProblem::Unprintable));
        assert_eq!(check_text("nul\0", 128), Err(TextProblem::Unprintable));
        assert_eq!(check_text("two\nlines", 128), Err(TextProblem::Unprintable));
    }
}
