//! Values hidden in encodings: base64, hex and percent-encoded runs are decoded (within a
//! per-text budget) and rescanned, and large blobs that cannot be decoded to text are
//! reported as opaque so the caller can treat them as unscannable.
//!
//! Invariants: at most [`crate::detect::DECODE_BUDGET`] decoded bytes are rescanned per
//! `detect` call, across all runs and nesting levels; a value found inside a run is reported
//! on the whole encoded run (the part of the original that carries it), named
//! `"<encoding>:<inner recognizer>"`; only decodings that are valid UTF-8 without control
//! characters are rescanned, so random tokens (hashes, UUIDs, keys) cost one failed decode.

use std::ops::Range;

use base64::Engine as _;
use base64::alphabet;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};

use crate::detect::recognizer::encoded_name;
use crate::detect::{EntityType, Finding, Scan};

/// The encodings that are decoded and rescanned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    /// RFC 4648 base64, standard or URL-safe alphabet, padded or not.
    Base64,
    /// Hexadecimal bytes (`6a616e65...`).
    Hex,
    /// URL percent-encoding (`jane%40example.com`).
    Percent,
}

/// Shortest run that [`opaque_blobs`] reports.
pub const MIN_OPAQUE_LEN: usize = 256;

const CONFIG: GeneralPurposeConfig = GeneralPurposeConfig::new()
    .with_decode_padding_mode(DecodePaddingMode::Indifferent)
    .with_decode_allow_trailing_bits(true);
const STANDARD: GeneralPurpose = GeneralPurpose::new(&alphabet::STANDARD, CONFIG);
const URL_SAFE: GeneralPurpose = GeneralPurpose::new(&alphabet::URL_SAFE, CONFIG);

fn is_b64_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'+' | b'/' | b'-' | b'_')
}

/// Runs of base64-alphabet bytes (with up to two `=` of padding), as byte ranges.
fn b64_runs(bytes: &[u8]) -> impl Iterator<Item = Range<usize>> + '_ {
    let mut i = 0;
    std::iter::from_fn(move || {
        while i < bytes.len() {
            let start = i;
            while bytes.get(i).is_some_and(|&b| is_b64_byte(b)) {
                i += 1;
            }
            let mut end = i;
            while end < i + 2 && bytes.get(end) == Some(&b'=') {
                end += 1;
            }
            if end == start {
                i += 1;
                continue;
            }
            i = end.max(i + 1);
            return Some(start..end);
        }
        None
    })
}

/// Decoded bytes as text, if they are valid UTF-8 with no control characters.
fn as_text(decoded: &[u8]) -> Option<&str> {
    let s = std::str::from_utf8(decoded).ok()?;
    let clean = s
        .chars()
        .all(|c| !c.is_control() || matches!(c, '\n' | '\r' | '\t'));
    (clean && s.chars().count() >= 4).then_some(s)
}

fn decode_b64(run: &[u8]) -> Option<Vec<u8>> {
    let body = run
        .strip_suffix(b"==")
        .or_else(|| run.strip_suffix(b"="))
        .unwrap_or(run);
    if body.len() % 4 == 1 {
        return None;
    }
    let url = body.iter().any(|b| matches!(b, b'-' | b'_'));
    let std = body.iter().any(|b| matches!(b, b'+' | b'/'));
    match (url, std) {
        (true, true) => None,
        (true, false) => URL_SAFE.decode(body).ok(),
        (false, _) => STANDARD.decode(body).ok(),
    }
}

fn plausible_b64(run: &[u8]) -> bool {
    let upper = run.iter().any(u8::is_ascii_uppercase);
    let lower = run.iter().any(u8::is_ascii_lowercase);
    let digit = run.iter().any(u8::is_ascii_digit);
    (upper && lower) || (digit && (upper || lower))
}

/// Decodes candidate runs of `s.text`, rescans them with `rescan`, and reports what it finds.
pub(crate) fn scan<F>(s: &mut Scan<'_>, budget: &mut usize, mut rescan: F)
where
    F: FnMut(&str, &mut usize) -> Vec<Finding>,
{
    let mut decoded_runs: Vec<(Range<usize>, Encoding, Vec<u8>)> = Vec::new();
    for run in std::mem::take(&mut s.hits.encoded) {
        let Some(raw) = s.bytes.get(run.clone()) else {
            continue;
        };
        let hex_like = raw.len() % 2 == 0 && raw.iter().all(u8::is_ascii_hexdigit);
        if hex_like
            && raw.len() / 2 <= *budget
            && let Ok(bytes) = hex::decode(raw)
            && as_text(&bytes).is_some()
        {
            *budget -= bytes.len();
            decoded_runs.push((run, Encoding::Hex, bytes));
            continue;
        }
        if !plausible_b64(raw) || raw.len() / 4 * 3 > *budget {
            continue;
        }
        if let Some(bytes) = decode_b64(raw)
            && as_text(&bytes).is_some()
        {
            *budget = budget.saturating_sub(bytes.len());
            decoded_runs.push((run, Encoding::Base64, bytes));
        }
    }
    let mut last_end = 0;
    for pct in memchr::memchr_iter(b'%', s.bytes) {
        if pct < last_end {
            continue;
        }
        let token = token_around(s.bytes, pct);
        last_end = token.end;
        let Some(raw) = s.bytes.get(token.clone()) else {
            continue;
        };
        let escapes = raw
            .windows(3)
            .filter(|w| w.first() == Some(&b'%') && w.iter().skip(1).all(u8::is_ascii_hexdigit))
            .count();
        if escapes == 0 || raw.len() > *budget {
            continue;
        }
        let bytes: Vec<u8> = percent_encoding::percent_decode(raw).collect();
        if as_text(&bytes).is_some() {
            *budget = budget.saturating_sub(bytes.len());
            decoded_runs.push((token, Encoding::Percent, bytes));
        }
    }
    for (span, encoding, bytes) in decoded_runs {
        let Some(text) = as_text(&bytes) else {
            continue;
        };
        for inner in rescan(text, budget) {
            // Percent-escapes are how URLs carry ordinary text; a URL inside one is not news.
            if encoding == Encoding::Percent && inner.entity == EntityType::Url {
                continue;
            }
            s.emit(
                span.clone(),
                inner.entity,
                inner.score,
                encoded_name(encoding, inner.recognizer),
            );
        }
    }
}

/// The whitespace-delimited token around `pos` (quotes and angle brackets also delimit).
fn token_around(bytes: &[u8], pos: usize) -> Range<usize> {
    let stop = |b: u8| {
        b.is_ascii_whitespace()
            || matches!(
                b,
                b'"' | b'\'' | b'<' | b'>' | b'`' | b'(' | b')' | b'[' | b']'
            )
    };
    let mut start = pos;
    while start > 0 && bytes.get(start - 1).is_some_and(|&b| !stop(b)) {
        start -= 1;
    }
    let mut end = pos;
    while bytes.get(end).is_some_and(|&b| !stop(b)) {
        end += 1;
    }
    start..end
}

/// Shannon entropy of the bytes, in bits per byte.
fn entropy(bytes: &[u8]) -> f64 {
    let mut counts = [0u32; 256];
    for &b in bytes {
        if let Some(c) = counts.get_mut(usize::from(b)) {
            *c += 1;
        }
    }
    let n = bytes.len() as f64;
    counts
        .iter()
        .filter(|&&c| c > 0)
        .map(|&c| {
            let p = f64::from(c) / n;
            -p * p.log2()
        })
        .sum()
}

/// Byte ranges of large encoded-looking blobs whose content cannot be scanned: at least
/// [`MIN_OPAQUE_LEN`] characters of the base64/hex alphabet (line-wrapped runs joined), high
/// entropy, and not decodable to text within the decode budget (binary payloads, images,
/// ciphertext, keys). Prose, long identifiers and scannable base64 text are not reported.
pub fn opaque_blobs(text: &str) -> Vec<Range<usize>> {
    let bytes = text.as_bytes();
    let mut runs: Vec<Range<usize>> = Vec::new();
    for run in b64_runs(bytes) {
        // Join MIME/PEM-style wrapped lines: a long run, a line break, the next run.
        if let Some(prev) = runs.last_mut() {
            let gap = bytes.get(prev.end..run.start).unwrap_or_default();
            let wrapped = (gap == b"\n" || gap == b"\r\n") && prev.len() >= 60;
            if wrapped && !bytes.get(prev.clone()).unwrap_or_default().ends_with(b"=") {
                prev.end = run.end;
                continue;
            }
        }
        runs.push(run);
    }
    runs.into_iter()
        .filter(|run| run.len() >= MIN_OPAQUE_LEN)
        .filter(|run| {
            let raw: Vec<u8> = bytes
                .get(run.clone())
                .unwrap_or_default()
                .iter()
                .copied()
                .filter(|b| !b.is_ascii_whitespace())
                .collect();
            let hex_only = raw.iter().all(u8::is_ascii_hexdigit);
            let threshold = if hex_only { 3.0 } else { 4.5 };
            if entropy(&raw) < threshold {
                return false;
            }
            let decoded = if hex_only {
                hex::decode(&raw).ok()
            } else {
                decode_b64(&raw)
            };
            !decoded
                .is_some_and(|d| d.len() <= crate::detect::DECODE_BUDGET && as_text(&d).is_some())
        })
        .collect()
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;
    use crate::detect::{EntityType, PatternConfig, PatternDetector};

    fn found(text: &str) -> Vec<(EntityType, String, &'static str)> {
        let d = PatternDetector::new(&PatternConfig::default()).unwrap();
        d.detect(text)
            .into_iter()
            .filter(|f| f.score >= 0.5)
            .map(|f| (f.entity, text[f.start..f.end].to_owned(), f.recognizer))
            .collect()
    }

    #[test]
    fn base64_ssn_is_reported_on_the_run() {
        let enc = STANDARD.encode("ssn 123-45-6789");
        let text = format!("blob {enc} end");
        let f = found(&text);
        assert!(
            f.iter()
                .any(|(e, v, r)| *e == EntityType::Ssn && *v == enc && *r == "base64:ssn"),
            "{f:?}"
        );
    }

    #[test]
    fn hex_and_percent() {
        let enc = hex::encode("card 4111111111111111");
        let f = found(&format!("x {enc} y"));
        assert!(
            f.iter()
                .any(|(e, _, r)| *e == EntityType::CreditCard && *r == "hex:credit_card_luhn"),
            "{f:?}"
        );
        let f = found("q=jane%2Edoe%40example%2Ecom&x=1");
        assert!(
            f.iter()
                .any(|(e, _, r)| *e == EntityType::Email && *r == "percent:email"),
            "{f:?}"
        );
    }

    #[test]
    fn hashes_and_uuids_are_not_decoded_into_findings() {
        let text = "commit 3f786850e387550fdab836ed7e6dc881de23001b uuid 123e4567-e89b-12d3-a456-426614174000";
        assert!(found(text).is_empty());
    }

    #[test]
    fn opaque_binary_blob() {
        let bin: Vec<u8> = (0..600u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
            .collect();
        let enc = STANDARD.encode(&bin);
        let text = format!("image: data:image/png;base64,{enc} done");
        let blobs = opaque_blobs(&text);
        assert_eq!(blobs.len(), 1);
        assert_eq!(&text[blobs[0].clone()], enc);
        let prose = "word ".repeat(200);
        assert!(opaque_blobs(&prose).is_empty());
        let text_b64 = STANDARD.encode("plain words here ".repeat(30));
        assert!(opaque_blobs(&text_b64).is_empty());
    }
}
