//! Values identified only by the label in front of them: medical record numbers, health
//! plan member ids, account numbers, license numbers, device serials and identifiers of no more
//! specific kind (`MRN: 1234567`, `record #88410-KLM`, `insurance plan #RZ-5531902`,
//! `acct # 0042-77312`, `S/N AB12-34567`, `ref. code: TK-2291`, `claim # 7731-XQ`), plus the
//! tenant's own MRN formats. The label types the value: MRN, HEALTH_PLAN_ID, ACCOUNT,
//! DRIVERS_LICENSE, DEVICE_ID, or the generic `ID`. The labels are the keyword table's.
//!
//! Invariants: a value is looked for only right after a label (a few filler bytes or words
//! such as `#`, `:`, `no.`, `number`, `code`, `is` in between); it must be one token of letters,
//! digits and inner hyphens with enough digits to be an identifier, so `account of 3 factors`
//! or `MRN unknown` report nothing. Where labels end at the same place (`member id`, `id`), the
//! longer, more specific one types the value.

use std::ops::Range;
use std::sync::Arc;

use regex::Regex;

use crate::detect::EntityType;
use crate::detect::Scan;
use crate::detect::around::word_after;
use crate::detect::keywords::class;
use crate::detect::recognizer::{names, scores};

const FILLER_WORDS: &[&[u8]] = &[
    b"no", b"nr", b"num", b"number", b"is", b"id", b"of", b"nbr", b"code",
];

/// The custom entity name used for driver's license numbers (HIPAA: license numbers).
pub const DRIVERS_LICENSE: &str = "DRIVERS_LICENSE";
/// The custom entity name used for identifiers of no more specific kind (HIPAA: any other
/// unique identifying number or code).
pub const GENERIC_ID: &str = "ID";
const MAX_GAP: usize = 20;
const MAX_VALUE: usize = 32;
const CUSTOM_WINDOW: usize = 64;

/// Reports the values that follow anchor keywords.
pub(crate) fn scan(s: &mut Scan<'_>, mrn_formats: &[Regex]) {
    let mut anchors: Vec<(usize, usize, u64)> = s
        .hits
        .of(class::MRN
            | class::PLAN
            | class::ACCOUNT
            | class::DEVICE
            | class::ZIP
            | class::LICENSE
            | class::ID)
        .map(|h| (h.end, h.start, h.class))
        .collect();
    // In label order; of labels ending together, the longest (most specific) first.
    anchors.sort_by_key(|&(end, start, _)| (end, start));
    let anchors = anchors.into_iter().map(|(end, _, class)| (end, class));
    let mut last_value_end = 0;
    for (end, cls) in anchors {
        if cls & class::ZIP != 0 {
            if let Some(span) = value_start(s.bytes, end).and_then(|v| postal(s.bytes, v))
                && span.start >= last_value_end
                && !word_after(s.text, span.end)
            {
                last_value_end = span.end;
                s.emit(span, EntityType::Zip, scores::ANCHORED, names::ZIP);
            }
            continue;
        }
        let (entity, recognizer) = if cls & class::LICENSE != 0 {
            (
                EntityType::Custom(Arc::from(DRIVERS_LICENSE)),
                names::LICENSE,
            )
        } else if cls & class::MRN != 0 {
            (EntityType::Mrn, names::MRN)
        } else if cls & class::PLAN != 0 {
            (EntityType::HealthPlanId, names::HEALTH_PLAN)
        } else if cls & class::ACCOUNT != 0 {
            (EntityType::Account, names::ACCOUNT)
        } else if cls & class::DEVICE != 0 {
            (EntityType::DeviceId, names::DEVICE)
        } else {
            (EntityType::Custom(Arc::from(GENERIC_ID)), names::ID)
        };
        let Some(start) = value_start(s.bytes, end) else {
            continue;
        };
        if start < last_value_end {
            continue;
        }
        if entity == EntityType::Mrn && !mrn_formats.is_empty() {
            let to = (start + CUSTOM_WINDOW).min(s.text.len());
            let window = (start..=to)
                .rev()
                .find_map(|t| s.text.get(start..t))
                .unwrap_or_default();
            let custom = mrn_formats
                .iter()
                .filter_map(|re| re.find(window))
                .map(|m| m.end())
                .filter(|&len| len > 0 && !word_after(s.text, start + len))
                .max();
            if let Some(len) = custom {
                s.emit(start..start + len, EntityType::Mrn, 0.9, names::MRN_FORMAT);
                last_value_end = start + len;
                continue;
            }
        }
        let Some(value_end) = value_end(s.bytes, start) else {
            continue;
        };
        let value = s.bytes.get(start..value_end).unwrap_or_default();
        let digits = value.iter().filter(|b| b.is_ascii_digit()).count();
        let min_len = if entity == EntityType::Mrn { 4 } else { 5 };
        let year_like = value.len() == 4 && (value.starts_with(b"19") || value.starts_with(b"20"));
        if value.len() < min_len || digits < 3 || year_like || word_after(s.text, value_end) {
            continue;
        }
        s.emit(start..value_end, entity, scores::ANCHORED, recognizer);
        last_value_end = value_end;
    }
    bare_markers(s);
}

/// A value after a bare `#` or `No.` (`#88410-KLM`, `No. 4471-220`) with no label of its own:
/// an identifier of no more specific kind, at a lower score than a labelled one. Clinical notes
/// write catheter gauges and counts this way (`#20 IV`, `#18 foley`, `#20x2`, `No. 5`), so the
/// value needs five or more characters with three digits in a row, and a value another
/// recognizer already reported (a card after `card #`, a labelled MRN) is left to it.
fn bare_markers(s: &mut Scan<'_>) {
    let mut at = 0;
    while let Some(i) = s.bytes.get(at..).and_then(|b| {
        b.iter()
            .enumerate()
            .find(|&(j, c)| {
                *c == b'#'
                    || (c.eq_ignore_ascii_case(&b'n')
                        && b.get(j + 1).is_some_and(|o| o.eq_ignore_ascii_case(&b'o'))
                        && b.get(j + 2) == Some(&b'.'))
            })
            .map(|(j, _)| at + j)
    }) {
        let marker_end = if s.bytes.get(i) == Some(&b'#') {
            i + 1
        } else {
            i + 3
        };
        at = marker_end;
        let glued = i > 0 && s.bytes.get(i - 1).is_some_and(u8::is_ascii_alphanumeric);
        let Some(start) = (!glued)
            .then(|| s.bytes.get(marker_end).copied())
            .flatten()
            .and_then(|b| match b {
                b' ' => Some(marker_end + 1),
                b if b.is_ascii_alphanumeric() => Some(marker_end),
                _ => None,
            })
            .filter(|&v| s.bytes.get(v).is_some_and(u8::is_ascii_alphanumeric))
        else {
            continue;
        };
        let Some(end) = value_end(s.bytes, start) else {
            continue;
        };
        let value = s.bytes.get(start..end).unwrap_or_default();
        let digit_run = value
            .split(|b| !b.is_ascii_digit())
            .map(<[u8]>::len)
            .max()
            .unwrap_or(0);
        let year_like = value.len() == 4 && (value.starts_with(b"19") || value.starts_with(b"20"));
        let taken = s.out.iter().any(|f| f.start < end && start < f.end);
        if value.len() < 5 || digit_run < 3 || year_like || taken || word_after(s.text, end) {
            continue;
        }
        s.emit(
            start..end,
            EntityType::Custom(Arc::from(GENERIC_ID)),
            scores::BARE_MARKER,
            names::ID_BARE,
        );
        at = end;
    }
}

/// Skips punctuation and filler words after a keyword; the start of the value, if close.
pub(crate) fn value_start(bytes: &[u8], from: usize) -> Option<usize> {
    let mut k = from;
    while k < from + MAX_GAP {
        let b = *bytes.get(k)?;
        if matches!(
            b,
            b' ' | b'\t' | b':' | b'#' | b'=' | b'.' | b'-' | b'(' | b')'
        ) {
            k += 1;
            continue;
        }
        if b.is_ascii_alphabetic() {
            let w = bytes
                .get(k..)?
                .iter()
                .take_while(|c| c.is_ascii_alphabetic())
                .count();
            let word = bytes.get(k..k + w)?;
            let after = bytes.get(k + w).copied();
            let filler = FILLER_WORDS.iter().any(|f| f.eq_ignore_ascii_case(word))
                && !after.is_some_and(|c| c.is_ascii_digit());
            if filler {
                k += w;
                continue;
            }
        }
        return (b.is_ascii_alphanumeric()).then_some(k);
    }
    None
}

/// A postal code at `start`: one token of 2–10 letters and digits, optionally followed by a
/// second short token (`394 13`, `B0J 2H0`, `7412 SL`, `75534-030`), with at least 3 digits.
fn postal(bytes: &[u8], start: usize) -> Option<Range<usize>> {
    let alnum_len = |k: usize| {
        bytes
            .get(k..)
            .unwrap_or_default()
            .iter()
            .take(11)
            .take_while(|c| c.is_ascii_alphanumeric())
            .count()
    };
    let first = alnum_len(start);
    if !(2..=10).contains(&first) {
        return None;
    }
    let mut end = start + first;
    if first <= 5 && matches!(bytes.get(end), Some(b' ' | b'-')) {
        let second = alnum_len(end + 1);
        let tok = bytes.get(end + 1..end + 1 + second).unwrap_or_default();
        let ok = (2..=4).contains(&second)
            && (tok.iter().any(u8::is_ascii_digit)
                || (second == 2 && tok.iter().all(u8::is_ascii_uppercase)));
        if ok {
            end += 1 + second;
        }
    }
    let digits = bytes
        .get(start..end)?
        .iter()
        .filter(|c| c.is_ascii_digit())
        .count();
    (digits >= 3).then_some(start..end)
}

/// The end of a value token: letters and digits, with single inner hyphens.
fn value_end(bytes: &[u8], start: usize) -> Option<usize> {
    let mut k = start;
    while k < start + MAX_VALUE {
        match bytes.get(k) {
            Some(b) if b.is_ascii_alphanumeric() => k += 1,
            Some(b'-') if bytes.get(k + 1).is_some_and(u8::is_ascii_alphanumeric) && k > start => {
                k += 1
            }
            _ => break,
        }
    }
    (k > start).then_some(k)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use crate::detect::{EntityType, PatternConfig, PatternDetector};

    fn found(cfg: &PatternConfig, text: &str, e: EntityType) -> Vec<String> {
        let d = PatternDetector::new(cfg).unwrap();
        d.detect(text)
            .into_iter()
            .filter(|f| f.entity == e && f.score >= 0.5)
            .map(|f| text[f.start..f.end].to_owned())
            .collect()
    }

    #[test]
    fn anchored_values() {
        let c = PatternConfig::default();
        assert_eq!(found(&c, "MRN: 1234567", EntityType::Mrn), ["1234567"]);
        assert_eq!(
            found(&c, "member id XYZ123456789", EntityType::HealthPlanId),
            ["XYZ123456789"]
        );
        assert_eq!(
            found(&c, "acct # 0042-77312", EntityType::Account),
            ["0042-77312"]
        );
        assert_eq!(
            found(&c, "S/N: AB12-34567", EntityType::DeviceId),
            ["AB12-34567"]
        );
        assert!(found(&c, "take into account 3 factors", EntityType::Account).is_empty());
        assert!(found(&c, "MRN unknown", EntityType::Mrn).is_empty());
    }

    #[test]
    fn custom_mrn_format() {
        let c = PatternConfig {
            mrn_formats: vec![r"[A-Z]{2}-\d{3}-\d{3}".into()],
            ..PatternConfig::default()
        };
        assert_eq!(
            found(&c, "MRN: QX-123-456 seen", EntityType::Mrn),
            ["QX-123-456"]
        );
    }
}
