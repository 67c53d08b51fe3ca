//! Letter-and-digit codes with check digits: IBAN (mod 97), VIN (position-9 check digit) and
//! DEA registration numbers.
//!
//! Invariants: only ASCII alphanumeric tokens that hold both letters and digits are examined; a code must
//! be a whole token (IBANs may continue over single spaces in groups of four); every report
//! has passed its checksum.

use crate::detect::EntityType;
use crate::detect::Scan;
use crate::detect::around::{word_after, word_before};
use crate::detect::checksum;
use crate::detect::keywords::class;
use crate::detect::recognizer::{names, scores};

/// Longest IBAN (Saint Lucia and Russia are 32–33 characters).
const MAX_IBAN: usize = 34;

/// Examines every alphanumeric token that holds letters and digits (collected by the
/// keyword pass).
pub(crate) fn scan(s: &mut Scan<'_>) {
    let candidates = std::mem::take(&mut s.hits.codes);
    let mut done_until = 0;
    for token in candidates {
        let (start, end) = (token.start, token.end);
        if start < done_until || word_before(s.text, start) || word_after(s.text, end) {
            continue;
        }
        if let Some(iban_end) = iban(s, start, end) {
            done_until = iban_end;
            continue;
        }
        let Some(bytes) = s.bytes.get(start..end) else {
            continue;
        };
        match bytes.len() {
            9 if checksum::dea_valid(bytes) => {
                let span = start..end;
                let score = if s.ctx(span.clone(), class::DEA) {
                    0.95
                } else if !upper_letters(bytes) {
                    continue; // registrations are printed in capitals; `ab1234563` is a token
                } else {
                    scores::DEA
                };
                s.emit(span, EntityType::Dea, score, names::DEA);
            }
            17 if checksum::vin_valid(bytes)
                && bytes.iter().filter(|c| c.is_ascii_digit()).count() >= 3 =>
            {
                let span = start..end;
                let score = if s.ctx(span.clone(), class::VIN) {
                    0.95
                } else if !upper_letters(bytes) {
                    continue; // VINs are printed in capitals; lower-case hex is a hash
                } else {
                    scores::VIN
                };
                s.emit(span, EntityType::Vin, score, names::VIN);
            }
            _ => {}
        }
    }
}

fn upper_letters(token: &[u8]) -> bool {
    !token.iter().any(u8::is_ascii_lowercase)
}

/// An IBAN starting at the token `start..end`, compact or in space-separated groups of four.
/// Returns the end of the IBAN when one was reported.
fn iban(s: &mut Scan<'_>, start: usize, end: usize) -> Option<usize> {
    let bytes = s.bytes;
    let head = bytes.get(start..start + 4)?;
    let [a, b, c, d] = [head.first()?, head.get(1)?, head.get(2)?, head.get(3)?];
    if !(a.is_ascii_alphabetic()
        && b.is_ascii_alphabetic()
        && c.is_ascii_digit()
        && d.is_ascii_digit())
    {
        return None;
    }
    let want = checksum::iban_length([*a, *b])?;
    let mut compact = [0u8; MAX_IBAN];
    let mut n = 0;
    let mut push = |chunk: &[u8], n: &mut usize| -> Option<()> {
        for &ch in chunk {
            *compact.get_mut(*n)? = ch;
            *n += 1;
        }
        Some(())
    };
    let first = bytes.get(start..end)?;
    if first.len() > want {
        return None;
    }
    push(first, &mut n)?;
    let mut iban_end = end;
    // Grouped form: the token so far is a group of four, then ` XXXX` groups.
    if n < want {
        if first.len() != 4 {
            return None;
        }
        let mut k = end;
        while n < want {
            if bytes.get(k) != Some(&b' ') {
                return None;
            }
            let g_start = k + 1;
            let g_len = bytes
                .get(g_start..)?
                .iter()
                .take(5)
                .take_while(|c| c.is_ascii_alphanumeric())
                .count();
            if g_len == 0 || g_len > 4 || n + g_len > want || (g_len < 4 && n + g_len != want) {
                return None;
            }
            push(bytes.get(g_start..g_start + g_len)?, &mut n)?;
            k = g_start + g_len;
        }
        iban_end = k;
        if word_after(s.text, iban_end) {
            return None;
        }
    }
    if n != want || !checksum::iban_valid(compact.get(..n)?) {
        return None;
    }
    s.emit(start..iban_end, EntityType::Iban, scores::IBAN, names::IBAN);
    Some(iban_end)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use crate::detect::{EntityType, PatternConfig, PatternDetector};

    fn found(text: &str, e: EntityType) -> Vec<String> {
        let d = PatternDetector::new(&PatternConfig::default()).unwrap();
        d.detect(text)
            .into_iter()
            .filter(|f| f.entity == e && f.score >= 0.5)
            .map(|f| text[f.start..f.end].to_owned())
            .collect()
    }

    #[test]
    fn ibans() {
        assert_eq!(
            found("IBAN GB82 WEST 1234 5698 7654 32.", EntityType::Iban),
            ["GB82 WEST 1234 5698 7654 32"]
        );
        assert_eq!(
            found("to gb82west12345698765432 pls", EntityType::Iban),
            ["gb82west12345698765432"]
        );
        assert!(found("GB82 WEST 1234 5698 7654 33", EntityType::Iban).is_empty());
    }

    #[test]
    fn dea_and_vin() {
        assert_eq!(found("DEA AB1234563", EntityType::Dea), ["AB1234563"]);
        assert!(found("DEA AB1234564", EntityType::Dea).is_empty());
        assert_eq!(
            found("VIN 1M8GDM9AXKP042788", EntityType::Vin),
            ["1M8GDM9AXKP042788"]
        );
        assert!(found("VIN 1M8GDM9A1KP042788", EntityType::Vin).is_empty());
    }
}
