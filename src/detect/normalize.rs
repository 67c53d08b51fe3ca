//! Folds text into the one canonical form the recognizers match against, and maps spans back.
//!
//! Invariants:
//! - ASCII input is returned unchanged with an identity map (the fast path: no allocation
//!   beyond the copy, no per-byte table).
//! - Every byte of the normalized text maps to the original segment (one or more whole
//!   original chars) that produced it, so [`Normalized::to_original`] always returns a range
//!   on char boundaries of the original that covers the value, including any invisible
//!   characters that were dropped from inside it.
//! - The fold is: drop invisible characters, NFKC, every Unicode decimal digit (`Nd`) to its
//!   ASCII value, dash punctuation to `-`, fraction/division slashes to `/`, and Cyrillic and
//!   Greek letters that look like Latin ones to those Latin letters. The confusable fold is
//!   applied everywhere (not only inside emails) because a look-alike letter hides an IBAN or
//!   a DEA number just as well as an email, and the folded text is only ever matched, never
//!   shown.

use std::borrow::Cow;
use std::ops::Range;

use unicode_normalization::char::{canonical_combining_class, decompose_compatible};
use unicode_normalization::{IsNormalized, UnicodeNormalization, is_nfkc_quick};

/// Text folded for matching, with the map back to the original.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Normalized {
    /// The folded text that recognizers match against.
    pub text: String,
    /// `None` when the folded text is byte-for-byte the original.
    map: Option<Vec<Segment>>,
    original_len: usize,
}

/// The original byte range that produced one normalized byte (u32 halves the map; texts of
/// 4 GiB and more are scanned unfolded, see [`fold`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Segment {
    start: u32,
    end: u32,
}

impl Segment {
    fn new(start: usize, end: usize) -> Self {
        Self {
            start: u32::try_from(start).unwrap_or(u32::MAX),
            end: u32::try_from(end).unwrap_or(u32::MAX),
        }
    }

    fn start(self) -> usize {
        self.start as usize
    }

    fn end(self) -> usize {
        self.end as usize
    }
}

impl Normalized {
    /// True when the normalized text is the original text (no offsets move).
    pub fn is_identity(&self) -> bool {
        self.map.is_none()
    }

    /// Maps a byte range of [`Normalized::text`] to the byte range of the original text that
    /// produced it. Out-of-range input is clamped; the result is always on original char
    /// boundaries.
    pub fn to_original(&self, range: Range<usize>) -> Range<usize> {
        map_range(self.map.as_deref(), self.original_len, range)
    }
}

/// Normalizes `text` for matching. See the module docs for the fold.
pub fn normalize(text: &str) -> Normalized {
    let (folded, map) = fold(text);
    Normalized {
        text: folded.into_owned(),
        map,
        original_len: text.len(),
    }
}

/// The detector's internal entry point: borrows instead of copying when nothing changes.
pub(crate) struct Folded<'a> {
    pub(crate) text: Cow<'a, str>,
    map: Option<Vec<Segment>>,
    original_len: usize,
}

impl Folded<'_> {
    pub(crate) fn to_original(&self, range: Range<usize>) -> Range<usize> {
        map_range(self.map.as_deref(), self.original_len, range)
    }
}

pub(crate) fn fold_for_scan(text: &str) -> Folded<'_> {
    let (folded, map) = fold(text);
    Folded {
        text: folded,
        map,
        original_len: text.len(),
    }
}

fn map_range(map: Option<&[Segment]>, original_len: usize, range: Range<usize>) -> Range<usize> {
    let Some(map) = map else {
        let end = range.end.min(original_len);
        return range.start.min(end)..end;
    };
    let len = map.len();
    let start = range.start.min(len);
    let end = range.end.clamp(start, len);
    if start == end {
        let at = map.get(start).map_or(original_len, |s| s.start());
        return at..at;
    }
    let first = map.get(start).map_or(original_len, |s| s.start());
    let last = end
        .checked_sub(1)
        .and_then(|i| map.get(i))
        .map_or(original_len, |s| s.end());
    first..last.max(first)
}

/// Longest run of code points folded together; bounds the work a pathological run of
/// combining marks can cause (a mark past the bound simply starts a new chunk).
const MAX_CHUNK_CHARS: usize = 32;

fn fold(text: &str) -> (Cow<'_, str>, Option<Vec<Segment>>) {
    // Past u32 offsets the map cannot be built; such a text is far beyond any request limit,
    // so it is matched as it is rather than refused here.
    if text.is_ascii() || u32::try_from(text.len()).is_err() {
        return (Cow::Borrowed(text), None);
    }
    let mut out = Builder {
        text: String::with_capacity(text.len()),
        map: Vec::with_capacity(text.len()),
    };
    let mut chunk: Vec<char> = Vec::with_capacity(8);
    let mut chunk_range = 0..0;
    let bytes = text.as_bytes();
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        if b.is_ascii() {
            // ASCII stretches are copied as they are; only their last char stays pending,
            // since a combining mark after it would compose with it.
            let run = bytes
                .get(i..)
                .unwrap_or_default()
                .iter()
                .take_while(|b| b.is_ascii())
                .count();
            let last = i + run - 1;
            if !chunk.is_empty() {
                out.flush(&chunk, chunk_range.clone());
                chunk.clear();
            }
            out.push_ascii(text, i..last);
            chunk.push(char::from(bytes.get(last).copied().unwrap_or(b' ')));
            chunk_range = last..last + 1;
            i = last + 1;
            continue;
        }
        let Some(c) = text.get(i..).and_then(|t| t.chars().next()) else {
            break;
        };
        let end = i + c.len_utf8();
        i = end;
        if is_invisible(c) {
            continue;
        }
        if chunk.is_empty() {
            chunk.push(c);
            chunk_range = end - c.len_utf8()..end;
            continue;
        }
        if boundary_before(c) || chunk.len() >= MAX_CHUNK_CHARS {
            out.flush(&chunk, chunk_range.clone());
            chunk.clear();
            chunk_range = end - c.len_utf8()..end;
        } else {
            chunk_range.end = end;
        }
        chunk.push(c);
    }
    if !chunk.is_empty() {
        out.flush(&chunk, chunk_range);
    }
    (Cow::Owned(out.text), Some(out.map))
}

struct Builder {
    text: String,
    map: Vec<Segment>,
}

impl Builder {
    fn push_ascii(&mut self, text: &str, range: Range<usize>) {
        if let Some(run) = text.get(range.clone()) {
            self.text.push_str(run);
            self.map.extend(range.map(|k| Segment::new(k, k + 1)));
        }
    }

    fn push(&mut self, c: char, seg: Segment) {
        self.text.push(c);
        for _ in 0..c.len_utf8() {
            self.map.push(seg);
        }
    }

    fn flush(&mut self, chunk: &[char], range: Range<usize>) {
        let seg = Segment::new(range.start, range.end);
        if let [c] = chunk {
            if c.is_ascii() {
                self.push(*c, seg);
                return;
            }
            if is_nfkc_quick(std::iter::once(*c)) == IsNormalized::Yes {
                self.push(fold_char(*c), seg);
                return;
            }
        }
        for c in chunk.iter().copied().nfkc() {
            if !is_invisible(c) {
                self.push(fold_char(c), seg);
            }
        }
    }
}

/// Whether NFKC can never merge `c` with what comes before it, so a chunk may end there.
fn boundary_before(c: char) -> bool {
    if c.is_ascii() {
        return true;
    }
    if canonical_combining_class(c) != 0 {
        return false;
    }
    match is_nfkc_quick(std::iter::once(c)) {
        IsNormalized::Yes => true,
        IsNormalized::Maybe => false,
        IsNormalized::No => {
            let mut first = None;
            decompose_compatible(c, |d| {
                if first.is_none() {
                    first = Some(d);
                }
            });
            first.is_none_or(|d| {
                canonical_combining_class(d) == 0
                    && is_nfkc_quick(std::iter::once(d)) != IsNormalized::Maybe
            })
        }
    }
}

/// Characters that render as nothing and are used to split values past a scanner.
pub fn is_invisible(c: char) -> bool {
    matches!(c,
        '\u{00AD}'                  // soft hyphen
        | '\u{034F}'                // combining grapheme joiner
        | '\u{061C}'                // Arabic letter mark
        | '\u{115F}' | '\u{1160}'   // Hangul fillers
        | '\u{17B4}' | '\u{17B5}'   // Khmer inherent vowels
        | '\u{180B}'..='\u{180F}'   // Mongolian variation selectors and vowel separator
        | '\u{200B}'..='\u{200F}'   // zero-width space, non-joiner, joiner, LRM, RLM
        | '\u{202A}'..='\u{202E}'   // bidi embeddings and overrides
        | '\u{2060}'..='\u{2064}'   // word joiner, invisible operators
        | '\u{2066}'..='\u{206F}'   // bidi isolates, deprecated format controls
        | '\u{3164}' | '\u{FFA0}'   // Hangul fillers
        | '\u{FE00}'..='\u{FE0F}'   // variation selectors
        | '\u{FEFF}'                // BOM / zero-width no-break space
        | '\u{1BCA0}'..='\u{1BCA3}' // shorthand format controls
        | '\u{E0000}'..='\u{E007F}' // tag characters
        | '\u{E0100}'..='\u{E01EF}' // variation selectors supplement
    )
}

fn fold_char(c: char) -> char {
    if c.is_ascii() {
        return c;
    }
    if let Some(d) = decimal_digit_value(c) {
        return char::from(b'0' + d);
    }
    match c {
        '\u{2010}'..='\u{2015}' | '\u{2212}' | '\u{FE58}' | '\u{FE63}' | '\u{FF0D}' => '-',
        '\u{2044}' | '\u{2215}' | '\u{29F8}' => '/',
        '\u{00A0}' | '\u{2000}'..='\u{200A}' | '\u{202F}' | '\u{205F}' | '\u{3000}' => ' ',
        _ => fold_confusable(c).unwrap_or(c),
    }
}

/// The zero of every block of Unicode decimal digits (general category `Nd`), Unicode 18.
///
/// Every `Nd` character belongs to a block of ten consecutive code points with values 0–9, so
/// the value of `c` is `c - zero` for the greatest zero not above `c`, when that is below ten.
/// `char::to_digit` only knows ASCII, and NFKC leaves Arabic-Indic, Devanagari and most other
/// scripts' digits alone, hence the table. Generated with the `unicodedata2` backport:
/// `[cp for cp in range(0x110000) if category(chr(cp)) == 'Nd' and decimal(chr(cp)) == 0]`
/// (77 zeros, 770 `Nd` code points, every block checked to hold the values 0–9 in order).
const ND_ZEROS: [u32; 77] = [
    0x30, 0x660, 0x6F0, 0x7C0, 0x966, 0x9E6, 0xA66, 0xAE6, 0xB66, 0xBE6, 0xC66, 0xCE6, 0xD66,
    0xDE6, 0xE50, 0xED0, 0xF20, 0x1040, 0x1090, 0x17E0, 0x1810, 0x1946, 0x19D0, 0x1A80, 0x1A90,
    0x1B50, 0x1BB0, 0x1C40, 0x1C50, 0xA620, 0xA8D0, 0xA900, 0xA9D0, 0xA9F0, 0xAA50, 0xABF0, 0xFF10,
    0x104A0, 0x10D30, 0x10D40, 0x11066, 0x110F0, 0x11136, 0x111D0, 0x112F0, 0x11450, 0x114D0,
    0x11650, 0x116C0, 0x116D0, 0x116DA, 0x11730, 0x118E0, 0x11950, 0x11BF0, 0x11C50, 0x11D50,
    0x11DA0, 0x11DE0, 0x11F50, 0x16130, 0x16A60, 0x16AC0, 0x16B50, 0x16D70, 0x1CCF0, 0x1D7CE,
    0x1D7D8, 0x1D7E2, 0x1D7EC, 0x1D7F6, 0x1E140, 0x1E2F0, 0x1E4F0, 0x1E5F1, 0x1E950, 0x1FBF0,
];

/// The value of a Unicode decimal digit of any script, or `None`.
pub fn decimal_digit_value(c: char) -> Option<u8> {
    let cp = u32::from(c);
    let idx = ND_ZEROS.partition_point(|&z| z <= cp).checked_sub(1)?;
    let zero = ND_ZEROS.get(idx)?;
    let v = cp.checked_sub(*zero)?;
    u8::try_from(v).ok().filter(|v| *v < 10)
}

/// Latin look-alikes from Cyrillic and Greek (the confusables that survive NFKC).
fn fold_confusable(c: char) -> Option<char> {
    Some(match c {
        // Cyrillic lower case
        'а' => 'a',
        'в' => 'b',
        'с' => 'c',
        'ԁ' => 'd',
        'е' | 'ё' => 'e',
        'һ' => 'h',
        'і' | 'ї' => 'i',
        'ј' => 'j',
        'к' => 'k',
        'ӏ' => 'l',
        'м' => 'm',
        'н' => 'h',
        'о' => 'o',
        'р' => 'p',
        'ԛ' => 'q',
        'ѕ' => 's',
        'т' => 't',
        'ѵ' => 'v',
        'ԝ' => 'w',
        'х' => 'x',
        'у' => 'y',
        // Cyrillic upper case
        'А' => 'A',
        'В' => 'B',
        'С' => 'C',
        'Е' | 'Ё' => 'E',
        'Н' => 'H',
        'І' | 'Ї' => 'I',
        'Ј' => 'J',
        'К' => 'K',
        'М' => 'M',
        'О' => 'O',
        'Р' => 'P',
        'Ѕ' => 'S',
        'Т' => 'T',
        'Х' => 'X',
        'У' | 'Ү' => 'Y',
        'Ԛ' => 'Q',
        'Ԝ' => 'W',
        // Greek lower case
        'α' => 'a',
        'β' => 'b',
        'ε' => 'e',
        'ι' => 'i',
        'κ' => 'k',
        'ν' => 'v',
        'ο' => 'o',
        'ρ' => 'p',
        'τ' => 't',
        'υ' => 'u',
        'χ' => 'x',
        'γ' => 'y',
        // Greek upper case
        'Α' => 'A',
        'Β' => 'B',
        'Ε' => 'E',
        'Ζ' => 'Z',
        'Η' => 'H',
        'Ι' => 'I',
        'Κ' => 'K',
        'Μ' => 'M',
        'Ν' => 'N',
        'Ο' => 'O',
        'Ρ' => 'P',
        'Τ' => 'T',
        'Υ' => 'Y',
        'Χ' => 'X',
        // Latin letters that pass for ASCII ones
        'ı' => 'i',
        'ȷ' => 'j',
        'ɑ' => 'a',
        'ɡ' => 'g',
        _ => return None,
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;

    fn orig<'a>(text: &'a str, n: &Normalized, needle: &str) -> &'a str {
        let at = n.text.find(needle).unwrap();
        let r = n.to_original(at..at + needle.len());
        &text[r]
    }

    #[test]
    fn ascii_is_identity() {
        let n = normalize("card 4111 1111 1111 1111");
        assert!(n.is_identity());
        assert_eq!(n.to_original(5..9), 5..9);
    }

    #[test]
    fn fullwidth_digits_and_at_sign_fold() {
        let text = "ｊａｎｅ＠ｅｘａｍｐｌｅ．ｃｏｍ ４１１１";
        let n = normalize(text);
        assert_eq!(n.text, "jane@example.com 4111");
        assert_eq!(
            orig(text, &n, "jane@example.com"),
            "ｊａｎｅ＠ｅｘａｍｐｌｅ．ｃｏｍ"
        );
    }

    #[test]
    fn arabic_indic_and_devanagari_digits_fold_by_value() {
        let n = normalize("٠١٢٣٤٥٦٧٨٩ ०१२३४५६७८९ ۰۹");
        assert_eq!(n.text, "0123456789 0123456789 09");
    }

    #[test]
    fn every_nd_block_is_ten_numeric_chars() {
        for z in ND_ZEROS {
            for v in 0..10u32 {
                let c = char::from_u32(z + v).unwrap();
                assert!(c.is_numeric(), "{:X}", z + v);
                assert_eq!(decimal_digit_value(c), Some(v as u8));
            }
        }
        assert_eq!(decimal_digit_value('a'), None);
        assert_eq!(decimal_digit_value('٪'), None);
        assert_eq!(decimal_digit_value('\u{10FFFF}'), None);
    }

    #[test]
    fn invisible_chars_are_dropped_and_covered() {
        let text = "123\u{200B}-45\u{00AD}-6789 x";
        let n = normalize(text);
        assert_eq!(n.text, "123-45-6789 x");
        assert_eq!(orig(text, &n, "123-45-6789"), "123\u{200B}-45\u{00AD}-6789");
    }

    #[test]
    fn tag_and_bidi_chars_are_dropped() {
        let text = "4111\u{E0031}1111\u{202E}1111\u{2066}1111";
        let n = normalize(text);
        assert_eq!(n.text, "4111111111111111");
        assert_eq!(n.to_original(0..n.text.len()), 0..text.len());
    }

    #[test]
    fn cyrillic_homoglyphs_fold_to_latin() {
        let text = "jаne@exаmple.com";
        let n = normalize(text);
        assert_eq!(n.text, "jane@example.com");
    }

    #[test]
    fn combining_marks_compose_and_map_to_whole_chunk() {
        let text = "Jose\u{301} ok";
        let n = normalize(text);
        assert_eq!(n.text, "José ok");
        assert_eq!(orig(text, &n, "é"), "e\u{301}");
    }

    #[test]
    fn dashes_and_spaces_fold() {
        let n = normalize("4111\u{2013}1111\u{00A0}1111\u{2212}1111");
        assert_eq!(n.text, "4111-1111 1111-1111");
    }

    #[test]
    fn empty_and_clamped_ranges() {
        let text = "é1";
        let n = normalize(text);
        assert_eq!(n.to_original(0..0), 0..0);
        assert_eq!(n.to_original(5..9), text.len()..text.len());
        assert_eq!(n.to_original(0..100), 0..text.len());
    }
}
