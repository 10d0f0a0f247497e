//! What a node name may be: it is printed on terminals and in logs, and certificates carry it.

/// Longest name, in bytes of UTF-8.
pub const MAX_NAME_BYTES: usize = 64;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum NameError {
    #[error("a node name cannot be empty")]
    Empty,
    #[error("a node name is at most {MAX_NAME_BYTES} bytes, not {0}")]
    TooLong(usize),
    #[error("a node name cannot hold control or text-direction characters ({0:?})")]
    Control(char),
    #[error("a node name cannot start or end with a space")]
    Padded,
    #[error("a node name cannot hold '…' (it marks a shortened peer id in labels)")]
    Ellipsis,
}

/// Whether `name` can be a node name: 1 to [`MAX_NAME_BYTES`] bytes, no control characters (a
/// name is printed on terminals and in logs), no characters that reorder the text around them
/// (they would let one name pose as another), no leading or trailing space, and no `…`, so a
/// name cannot pose as a label with a short peer id (`cluster::names::labels`).
pub fn check_name(name: &str) -> Result<(), NameError> {
    if name.is_empty() {
        return Err(NameError::Empty);
    }
    if name.len() > MAX_NAME_BYTES {
        return Err(NameError::TooLong(name.len()));
    }
    if let Some(c) = name.chars().find(|&c| c.is_control() || reorders_text(c)) {
        return Err(NameError::Control(c));
    }
    if name.trim() != name {
        return Err(NameError::Padded);
    }
    if name.contains('…') {
        return Err(NameError::Ellipsis);
    }
    Ok(())
}

/// Unicode's explicit direction marks, embeddings, overrides and isolates.
fn reorders_text(c: char) -> bool {
    matches!(c, '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}
