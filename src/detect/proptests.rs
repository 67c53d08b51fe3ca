//! Property tests for the invariants the rest of veil relies on: offsets map back onto char
//! boundaries and cover the value, and `detect` never panics and returns sorted, in-bounds
//! findings on any input.

#![allow(clippy::unwrap_used, clippy::indexing_slicing, clippy::panic)]

use proptest::prelude::*;

use crate::detect::normalize::normalize;
use crate::detect::{EntityType, PatternConfig, PatternDetector};

/// Characters that stress the fold: invisibles, other-script digits, combining marks,
/// fullwidth forms, homoglyphs, compatibility characters, plus ordinary text.
fn tricky_char() -> impl Strategy<Value = char> {
    prop_oneof![
        4 => any::<char>(),
        4 => prop::sample::select(vec![
            '0', '1', '4', '9', '-', ' ', '.', '/', '@', '(', ')', '+', 'a', 'e', 'x', '\n',
        ]),
        3 => prop::sample::select(vec![
            '\u{200B}', '\u{200D}', '\u{2060}', '\u{FEFF}', '\u{00AD}', '\u{202E}', '\u{2066}',
            '\u{E0041}', '\u{FE0F}', '\u{E0100}', '\u{0301}', '\u{0308}', '\u{1100}', '\u{1161}',
            '\u{11A8}', '\u{FF14}', '\u{0664}', '\u{06F4}', '\u{096A}', '\u{FF20}', 'а', 'ε',
            'ﬁ', '½', '①', '\u{3000}', '\u{2013}', 'é', '中', '\u{1D7D9}', '\u{FF9E}',
        ]),
    ]
}

fn tricky_text(max: usize) -> impl Strategy<Value = String> {
    prop::collection::vec(tricky_char(), 0..max).prop_map(|v| v.into_iter().collect())
}

fn invisible() -> impl Strategy<Value = char> {
    prop::sample::select(vec![
        '\u{200B}',
        '\u{200C}',
        '\u{200D}',
        '\u{2060}',
        '\u{FEFF}',
        '\u{00AD}',
        '\u{202A}',
        '\u{202C}',
        '\u{202E}',
        '\u{2066}',
        '\u{2069}',
        '\u{E0020}',
        '\u{E007F}',
        '\u{FE0F}',
    ])
}

proptest! {
    // 256 cases by default; `PROPTEST_CASES=20000 cargo test proptests` for a longer run.
    #![proptest_config(ProptestConfig::default())]

    #[test]
    fn mapped_ranges_land_on_original_char_boundaries(text in tricky_text(64)) {
        let n = normalize(&text);
        let bounds: Vec<usize> = n.text.char_indices().map(|(i, _)| i).chain([n.text.len()]).collect();
        for (ai, &a) in bounds.iter().enumerate() {
            for &b in bounds.iter().skip(ai) {
                let r = n.to_original(a..b);
                prop_assert!(r.start <= r.end && r.end <= text.len());
                prop_assert!(text.is_char_boundary(r.start) && text.is_char_boundary(r.end));
            }
        }
        // Byte positions inside a char still map onto boundaries.
        for a in 0..=n.text.len() {
            let r = n.to_original(a..n.text.len());
            prop_assert!(text.is_char_boundary(r.start) && text.is_char_boundary(r.end));
        }
    }

    #[test]
    fn mapping_covers_the_source_of_every_char(text in tricky_text(64)) {
        let n = normalize(&text);
        let mut prev_end = 0;
        for (i, c) in n.text.char_indices() {
            let r = n.to_original(i..i + c.len_utf8());
            prop_assert!(r.start < r.end, "every normalized char comes from some original text");
            prop_assert!(r.start >= prev_end || r.end <= prev_end, "segments never interleave");
            prev_end = prev_end.max(r.end);
        }
    }

    #[test]
    fn value_split_by_invisibles_is_found_and_covered(
        gaps in prop::collection::vec(prop::option::of(invisible()), 10),
        prefix in "[a-z ]{0,8}",
    ) {
        let value = "123-45-6789";
        let mut split = String::new();
        for (i, c) in value.chars().enumerate() {
            split.push(c);
            if let Some(Some(inv)) = gaps.get(i).filter(|_| i + 1 < value.len()) {
                split.push(*inv);
            }
        }
        let text = format!("{prefix} ssn {split} ok");
        let start = text.find(&split).unwrap();
        let d = PatternDetector::new(&PatternConfig::default()).unwrap();
        let found = d.detect(&text);
        prop_assert!(
            found.iter().any(|f| f.entity == EntityType::Ssn && f.start == start && f.end == start + split.len()),
            "{found:?}"
        );
    }

    #[test]
    fn detect_never_panics_and_returns_sorted_in_bounds_findings(text in tricky_text(200)) {
        let d = PatternDetector::new(&PatternConfig::default()).unwrap();
        let found = d.detect(&text);
        for f in &found {
            prop_assert!(f.start < f.end && f.end <= text.len());
            prop_assert!(text.is_char_boundary(f.start) && text.is_char_boundary(f.end));
            prop_assert!((0.0..=1.0).contains(&f.score));
        }
        for w in found.windows(2) {
            prop_assert!(w[0].start < w[1].start || (w[0].start == w[1].start && w[0].end >= w[1].end));
        }
    }

    #[test]
    fn detect_never_panics_on_arbitrary_strings(text in any::<String>()) {
        let d = PatternDetector::new(&PatternConfig::default()).unwrap();
        for f in d.detect(&text) {
            prop_assert!(f.end <= text.len() && text.is_char_boundary(f.start) && text.is_char_boundary(f.end));
        }
    }

    #[test]
    fn char_offsets_match_a_naive_count(text in tricky_text(40), picks in prop::collection::vec(0usize..200, 0..8)) {
        let offsets: Vec<usize> = picks.iter().map(|p| p % (text.len() + 1)).filter(|&p| text.is_char_boundary(p)).collect();
        let got = crate::detect::byte_to_char_offsets(&text, &offsets);
        let want: Vec<usize> = offsets.iter().map(|&b| text[..b].chars().count()).collect();
        prop_assert_eq!(got, want);
    }
}
