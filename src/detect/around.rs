//! Questions about what surrounds a byte position: is a word touching it, which word comes
//! before or after, where a window of N characters starts.
//!
//! Invariants: positions may be anywhere (past the end, inside a multi-byte char); every
//! function answers conservatively instead of panicking, and returned positions are on char
//! boundaries of the text.

/// Whether `b` is part of a word for boundary purposes (ASCII letters and digits).
pub(crate) fn is_word_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric()
}

/// Whether a letter or digit (of any script) ends right before `pos`.
pub(crate) fn word_before(text: &str, pos: usize) -> bool {
    let bytes = text.as_bytes();
    match pos.checked_sub(1).and_then(|i| bytes.get(i)) {
        None => false,
        Some(&b) if b.is_ascii() => is_word_byte(b),
        Some(_) => text
            .get(..pos)
            .and_then(|s| s.chars().next_back())
            .is_some_and(char::is_alphanumeric),
    }
}

/// Whether a letter or digit (of any script) starts at `pos`.
pub(crate) fn word_after(text: &str, pos: usize) -> bool {
    match text.as_bytes().get(pos) {
        None => false,
        Some(&b) if b.is_ascii() => is_word_byte(b),
        Some(_) => text
            .get(pos..)
            .and_then(|s| s.chars().next())
            .is_some_and(char::is_alphanumeric),
    }
}

/// The ASCII word (letters, digits, `/`, `'`) that ends at most `max_gap` non-word bytes
/// before `pos` on the same line, as a byte range.
pub(crate) fn prev_word(text: &str, pos: usize, max_gap: usize) -> Option<(usize, usize)> {
    let bytes = text.as_bytes();
    let mut end = pos.min(bytes.len());
    let mut gap = 0;
    while end > 0 {
        let b = *bytes.get(end - 1)?;
        if is_word_byte(b) {
            break;
        }
        if b == b'\n' || gap >= max_gap {
            return None;
        }
        gap += 1;
        end -= 1;
    }
    let mut start = end;
    while start > 0 {
        let b = *bytes.get(start - 1)?;
        if !(is_word_byte(b) || b == b'/' || b == b'\'') {
            break;
        }
        start -= 1;
    }
    (start < end).then_some((start, end))
}

/// The ASCII word (letters, digits, `/`) that starts at most `max_gap` non-word bytes after
/// `pos` on the same line, as a byte range.
pub(crate) fn next_word(text: &str, pos: usize, max_gap: usize) -> Option<(usize, usize)> {
    let bytes = text.as_bytes();
    let mut start = pos;
    let mut gap = 0;
    loop {
        let b = *bytes.get(start)?;
        if is_word_byte(b) {
            break;
        }
        if b == b'\n' || gap >= max_gap {
            return None;
        }
        gap += 1;
        start += 1;
    }
    let mut end = start;
    while let Some(&b) = bytes.get(end) {
        if !(is_word_byte(b) || b == b'/') {
            break;
        }
        end += 1;
    }
    (start < end).then_some((start, end))
}

/// The byte position `chars` characters before `pos` (0 at the start of the text).
pub(crate) fn back_chars(text: &str, pos: usize, chars: usize, ascii: bool) -> usize {
    let pos = pos.min(text.len());
    if ascii {
        return pos.saturating_sub(chars);
    }
    let Some(head) = text.get(..pos) else {
        return pos.saturating_sub(chars);
    };
    head.char_indices()
        .rev()
        .take(chars)
        .last()
        .map_or(pos, |(i, _)| i)
}

/// The byte position `chars` characters after `pos` (the text length at most).
pub(crate) fn fwd_chars(text: &str, pos: usize, chars: usize, ascii: bool) -> usize {
    if ascii {
        return pos.saturating_add(chars).min(text.len());
    }
    let Some(tail) = text.get(pos..) else {
        return pos.saturating_add(chars).min(text.len());
    };
    tail.char_indices()
        .nth(chars)
        .map_or(text.len(), |(i, _)| pos + i)
}

/// Lower-cases a short ASCII word into a stack buffer for table lookups.
pub(crate) fn lower_word<'b>(text: &str, range: (usize, usize), buf: &'b mut [u8; 24]) -> &'b [u8] {
    let word = text.as_bytes().get(range.0..range.1).unwrap_or_default();
    let n = word.len().min(buf.len());
    for (dst, src) in buf.iter_mut().zip(word) {
        *dst = src.to_ascii_lowercase();
    }
    buf.get(..n).unwrap_or_default()
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;

    #[test]
    fn words_around() {
        let t = "BP 120/80, 1/2 tab";
        assert_eq!(prev_word(t, 3, 2), Some((0, 2)));
        assert_eq!(next_word(t, 14, 2), Some((15, 18)));
        assert_eq!(prev_word(t, 0, 2), None);
        assert_eq!(next_word(t, t.len(), 2), None);
        assert_eq!(prev_word("a\n 5", 3, 3), None);
    }

    #[test]
    fn boundaries_on_unicode() {
        let t = "é1 x";
        assert!(word_before(t, 2));
        assert!(!word_before(t, 0));
        assert!(word_after(t, 0));
        assert!(!word_after(t, 99));
        assert_eq!(back_chars(t, 3, 2, false), 0);
        assert_eq!(fwd_chars(t, 0, 2, false), 3);
        assert_eq!(fwd_chars(t, 0, 99, false), t.len());
    }
}
