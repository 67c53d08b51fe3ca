//! Dates: calendar validation, the context rules that keep ratios and vital signs
//! (`BP 120/80`, `1/2 tab`, `5/5 strength`) from being read as dates, time-of-day extension,
//! and month-name dates (`March 3, 2021`, `3 Mar 2021`, `Jan 2019`).
//!
//! Invariants: a month name alone is never a date; a month/day without a year is reported at
//! 0.55 (0.8 after a date word), and not at all next to a ratio, dose or vital-sign word, after
//! a number other than a 24-hour clock time (`2 1/2` is a fraction, `0330 3/7` a time stamp),
//! nor when it reads as a fraction or score (`1/2`, `5/5`, `4/10`) without a date word; machine
//! log timestamps are reported below the usual policy threshold.

use std::ops::Range;

use crate::detect::EntityType;
use crate::detect::Scan;
use crate::detect::around::{lower_word, next_word, prev_word, word_after};
use crate::detect::keywords::class;
use crate::detect::recognizer::{names, scores};

/// Four-digit years accepted in dates.
pub(crate) fn year4_ok(y: u32) -> bool {
    (1900..=2100).contains(&y)
}

/// Whether `m/d` can be a calendar day (Feb 29 allowed).
pub(crate) fn month_day_ok(m: u32, d: u32) -> bool {
    let max = match m {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 => 29,
        _ => return false,
    };
    (1..=max).contains(&d)
}

/// What the words around a short numeric date say about it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum DateContext {
    /// A ratio, dose or vital-sign word is adjacent: not a date.
    Negative,
    /// Nothing either way.
    Neutral,
    /// A date word (`on`, `since`, `admitted`, ...) precedes it, or it opens a line.
    Positive,
}

/// Words right before a number/number that make it a ratio or a measurement.
const NOT_DATE_BEFORE: &[&[u8]] = &[
    b"bp",
    b"b/p",
    b"nbp",
    b"abp",
    b"nibp",
    b"sbp",
    b"dbp",
    b"map",
    b"ps",
    b"peep",
    b"cpap",
    b"bipap",
    b"epap",
    b"ipap",
    b"ac",
    b"simv",
    b"imv",
    b"prvc",
    b"vt",
    b"tv",
    b"abg",
    b"vbg",
    b"gcs",
    b"rr",
    b"hr",
    b"pain",
    b"strength",
    b"motor",
    b"murmur",
    b"grade",
    b"sats",
    b"sat",
    b"score",
    b"x",
    b"ratio",
    b"cvp",
    b"pap",
    b"pas",
    b"pad",
    b"art",
    b"cuff",
    b"fio2",
    b"o2",
    b"pressure",
    b"pressures",
    b"range",
    b"ranges",
    b"between",
    b"vent",
    b"settings",
    b"mode",
    b"rate",
    b"apgar",
    b"aox",
    b"ox",
    b"a&o",
    b"iabp",
    b"augmentation",
    b"pa",
    b"wedge",
    b"bs",
    b"glucose",
    b"fs",
    b"fsbs",
    b"k",
    b"na",
    b"hct",
    b"hgb",
    b"plt",
    b"wbc",
    b"inr",
    b"ptt",
    b"pt",
    b"cr",
    b"bun",
    b"mg",
    b"ca",
    b"phos",
    b"lytes",
    b"labs",
    b"dose",
    b"take",
    b"takes",
    b"taking",
    b"give",
    b"gave",
    b"given",
    b"about",
    b"approximately",
    b"approx",
    b"only",
    b"over",
    b"under",
    b"scored",
    b"page",
    b"pages",
    b"step",
    b"steps",
    b"part",
    b"chapter",
    b"version",
    b"v",
    b"ver",
    b"rev",
    b"section",
    b"item",
    b"items",
    b"room",
    b"rm",
    b"bed",
    b"psv",
    b"cpap/ps",
    b"ps/peep",
    b"crackles",
    b"rales",
    b"wheezes",
    b"flowby",
    b"ventilation",
    b"cp",
    b"co/ci",
    b"trial",
    b"weaning",
    b"wean",
    b"ie",
    b"i:e",
    b"fraction",
    b"half",
    b"ratios",
];

/// Words right after a number/number that make it a ratio or a measurement.
const NOT_DATE_AFTER: &[&[u8]] = &[
    b"tab",
    b"tabs",
    b"tablet",
    b"tablets",
    b"pill",
    b"pills",
    b"cap",
    b"caps",
    b"capsule",
    b"strength",
    b"strengh",
    b"of",
    b"ns",
    b"nss",
    b"murmur",
    b"sem",
    b"pain",
    b"mmhg",
    b"mm",
    b"mg",
    b"mcg",
    b"ml",
    b"cc",
    b"cc/hr",
    b"units",
    b"unit",
    b"u",
    b"x",
    b"scale",
    b"score",
    b"ratio",
    b"dose",
    b"doses",
    b"amp",
    b"amps",
    b"l",
    b"lpm",
    b"liter",
    b"liters",
    b"sec",
    b"min",
    b"mins",
    b"minute",
    b"minutes",
    b"hr",
    b"hrs",
    b"hour",
    b"hours",
    b"day",
    b"days",
    b"week",
    b"weeks",
    b"month",
    b"months",
    b"bpm",
    b"inch",
    b"inches",
    b"cup",
    b"cups",
    b"sats",
    b"times",
    b"pack",
    b"packs",
    b"ppd",
    b"beats",
    b"breaths",
    b"grade",
    b"power",
    b"reflexes",
    b"pulses",
    b"cm",
    b"kg",
    b"g",
    b"gm",
    b"mmol",
    b"meq",
    b"peep",
    b"ps",
    b"fio2",
    b"rr",
    b"vt",
    b"strength",
    b"systolic",
    b"diastolic",
    b"pressure",
    b"teaspoon",
    b"tsp",
    b"tbsp",
    b"spray",
    b"sprays",
    b"puff",
    b"puffs",
    b"drop",
    b"drops",
    b"vial",
    b"bottle",
    b"bag",
    b"bags",
    b"liter",
    b"nc",
    b"nrb",
    b"fm",
    b"ventimask",
    b"vm",
    b"cpap",
    b"bipap",
    b"via",
    b"split",
    b"mix",
    b"pct",
    b"percent",
    b"rule",
    b"ft",
    b"feet",
    b"lbs",
    b"lb",
    b"oz",
    b"degrees",
    b"deg",
    b"aa",
    b"ra",
    b"mae",
    b"ext",
    b"extremities",
    b"bilat",
    b"bilaterally",
    b"pupils",
    b"perrl",
    b"up",
    b"way",
    b"str",
    b"psv",
    b"ips",
    b"peep",
    b"imv",
    b"simv",
    b"fio2",
    b"flowby",
    b"down",
    b"full",
    b"normal",
    b"nl",
    b"wnl",
    b"tv",
    b"mv",
    b"pain",
];

/// Words right before a number/number that make it a date.
const DATE_BEFORE: &[&[u8]] = &[
    b"on",
    b"since",
    b"from",
    b"until",
    b"till",
    b"thru",
    b"through",
    b"dated",
    b"date",
    b"dob",
    b"born",
    b"admitted",
    b"admit",
    b"admission",
    b"adm",
    b"readmitted",
    b"discharged",
    b"discharge",
    b"transferred",
    b"transfer",
    b"seen",
    b"visit",
    b"due",
    b"started",
    b"start",
    b"began",
    b"extubated",
    b"intubated",
    b"reintubated",
    b"placed",
    b"inserted",
    b"removed",
    b"changed",
    b"last",
    b"next",
    b"by",
    b"before",
    b"after",
    b"in",
    b"performed",
    b"done",
    b"drawn",
    b"sent",
    b"planned",
    b"scheduled",
    b"dc",
    b"d/c",
    b"dc'd",
    b"d/c'd",
    b"completed",
    b"surgery",
    b"cath",
    b"cathed",
    b"echo",
    b"mri",
    b"ct",
    b"xrt",
    b"cxr",
    b"hd",
    b"lbm",
    b"f/u",
    b"s/p",
    b"arrived",
    b"presented",
    b"noted",
    b"obtained",
    b"effective",
    b"dos",
    b"rec'd",
    b"received",
    b"ended",
    b"stopped",
    b"held",
    b"restart",
    b"resume",
    b"resumed",
    b"returned",
    b"occurred",
    b"died",
    b"deceased",
    b"expired",
    b"birthday",
    b"week",
    b"tomorrow",
    b"today",
    b"yesterday",
    b"appt",
    b"appointment",
];

fn word_in(text: &str, range: Option<(usize, usize)>, words: &[&[u8]]) -> bool {
    let Some(r) = range else { return false };
    let mut buf = [0u8; 24];
    let w = lower_word(text, r, &mut buf);
    words.contains(&w)
}

fn is_number_word(text: &str, range: Option<(usize, usize)>) -> bool {
    range.is_some_and(|(a, b)| {
        text.as_bytes()
            .get(a..b)
            .is_some_and(|w| w.iter().all(u8::is_ascii_digit))
    })
}

/// Whether the word at `range` is a four-digit 24-hour time (`0330`, `2300`; `2400` and
/// `1275` are not).
fn is_clock_time(text: &str, range: Option<(usize, usize)>) -> bool {
    let Some(&[h1, h2, m1, m2]) = range.and_then(|(a, b)| text.as_bytes().get(a..b)) else {
        return false;
    };
    [h1, h2, m1, m2].iter().all(u8::is_ascii_digit)
        && (h1 - b'0') * 10 + (h2 - b'0') <= 23
        && m1 <= b'5'
}

/// Classifies the words around a short date candidate at `span`. With `strict` false (a
/// three-part date, which no measurement looks like), words before it cannot veto it.
pub(crate) fn short_date_context(text: &str, span: Range<usize>, strict: bool) -> DateContext {
    let bytes = text.as_bytes();
    if matches!(bytes.get(span.end), Some(b'+' | b'%' | b'/'))
        || span
            .start
            .checked_sub(1)
            .and_then(|i| bytes.get(i))
            .is_some_and(|b| matches!(b, b'/' | b'#' | b'%' | b'+' | b'='))
    {
        return DateContext::Negative;
    }
    let before = prev_word(text, span.start, 3);
    let after = next_word(text, span.end, 2);
    // A number right before it makes a mixed fraction or a measurement (`2 1/2`), except a
    // 24-hour clock time (`arrived at 0330 3/7`): that is how notes stamp an event.
    let number_before = is_number_word(text, before) && !is_clock_time(text, before);
    let setting_before = word_in(text, before, NOT_DATE_BEFORE) && !antecubital(text, before);
    if (strict && (setting_before || number_before)) || word_in(text, after, NOT_DATE_AFTER) {
        return DateContext::Negative;
    }
    if word_in(text, before, DATE_BEFORE) {
        return DateContext::Positive;
    }
    if strict && settings_nearby(text, span.start) {
        return DateContext::Negative;
    }
    // A date opening a line (`7/22 found on floor`) is how notes date their entries.
    let line_start = bytes
        .get(..span.start)
        .unwrap_or_default()
        .iter()
        .rev()
        .take_while(|&&b| b != b'\n')
        .all(|b| b.is_ascii_whitespace());
    if line_start {
        return DateContext::Positive;
    }
    DateContext::Neutral
}

/// Ventilator and monitor words that make a nearby `n/n` a setting (`PSV increased to 10/5`).
const SETTINGS: &[&[u8]] = &[
    b"psv",
    b"ps",
    b"cpap",
    b"bipap",
    b"peep",
    b"vent",
    b"ventilator",
    b"simv",
    b"imv",
    b"ac",
    b"fio2",
    b"abg",
    b"bp",
    b"nbp",
    b"abp",
    b"map",
];

/// How far back (bytes, same line) [`SETTINGS`] words are looked for.
const SETTINGS_WINDOW: usize = 32;

fn settings_nearby(text: &str, start: usize) -> bool {
    let from = start.saturating_sub(SETTINGS_WINDOW);
    let Some(window) = text.as_bytes().get(from..start) else {
        return false;
    };
    let line = window.rsplit(|&b| b == b'\n').next().unwrap_or_default();
    let mut previous: &[u8] = &[];
    line.split(|b| !b.is_ascii_alphanumeric())
        .skip(usize::from(from > 0)) // the first piece may be a cut word
        .filter(|w| !w.is_empty())
        .any(|w| {
            let side_ac = w.eq_ignore_ascii_case(b"ac") && is_side(previous);
            previous = w;
            !side_ac && SETTINGS.iter().any(|s| s.eq_ignore_ascii_case(w))
        })
}

/// Words for the side of the body ("R AC": the right antecubital fossa, not assist control).
const SIDES: &[&[u8]] = &[b"l", b"left", b"lt", b"r", b"right", b"rt"];

fn is_side(word: &[u8]) -> bool {
    SIDES.iter().any(|s| s.eq_ignore_ascii_case(word))
}

/// Whether the word at `range` is `AC` after a side ("PICC placed in R AC 11/17"): a site, the
/// antecubital fossa, so a date may follow it; elsewhere `AC` is the assist-control vent mode.
fn antecubital(text: &str, range: Option<(usize, usize)>) -> bool {
    word_in(text, range, &[b"ac"])
        && range.is_some_and(|(a, _)| word_in(text, prev_word(text, a, 2), SIDES))
}

const LOG_LEVELS: &[&[u8]] = &[
    b"trace",
    b"debug",
    b"info",
    b"notice",
    b"warn",
    b"warning",
    b"error",
    b"err",
    b"fatal",
    b"critical",
    b"crit",
    b"panic",
];

fn two_digits(bytes: &[u8], at: usize) -> Option<u32> {
    let a = *bytes.get(at)?;
    let b = *bytes.get(at + 1)?;
    (a.is_ascii_digit() && b.is_ascii_digit())
        .then(|| u32::from(a - b'0') * 10 + u32::from(b - b'0'))
}

/// Extends a date at `span` over a following time of day (`12:30`, `T12:30:45.123Z`,
/// `12:30:45+02:00`). Returns the new end and whether the whole looks like a machine log
/// timestamp (`T` separator, fraction, zone, log level after it, or `[` before it).
pub(crate) fn extend_time(text: &str, span: Range<usize>) -> (usize, bool) {
    let bytes = text.as_bytes();
    let mut k = span.end;
    let sep = bytes.get(k).copied();
    if !matches!(sep, Some(b' ' | b'T' | b't')) {
        return (span.end, false);
    }
    k += 1;
    let (Some(h), Some(m)) = (two_digits(bytes, k), two_digits(bytes, k + 3)) else {
        return (span.end, false);
    };
    if bytes.get(k + 2) != Some(&b':') || h > 24 || m > 59 {
        return (span.end, false);
    }
    k += 5;
    let mut logish = matches!(sep, Some(b'T' | b't'));
    if bytes.get(k) == Some(&b':') && two_digits(bytes, k + 1).is_some() {
        k += 3;
        if matches!(bytes.get(k), Some(b'.' | b','))
            && bytes.get(k + 1).is_some_and(u8::is_ascii_digit)
        {
            k += 1;
            while bytes.get(k).is_some_and(u8::is_ascii_digit) {
                k += 1;
            }
            logish = true;
        }
    }
    if matches!(bytes.get(k), Some(b'Z' | b'z')) && !word_after(text, k + 1) {
        k += 1;
        logish = true;
    } else if matches!(bytes.get(k), Some(b'+' | b'-')) && two_digits(bytes, k + 1).is_some() {
        let colon = usize::from(bytes.get(k + 3) == Some(&b':'));
        if two_digits(bytes, k + 3 + colon).is_some() {
            k += 5 + colon;
            logish = true;
        }
    }
    if word_after(text, k) {
        return (span.end, false);
    }
    if span.start > 0 && bytes.get(span.start - 1) == Some(&b'[') {
        logish = true;
    }
    if word_in(text, next_word(text, k, 3), LOG_LEVELS) {
        logish = true;
    }
    (k, logish)
}

fn skip(bytes: &[u8], mut k: usize, set: &[u8]) -> usize {
    while bytes.get(k).is_some_and(|b| set.contains(b)) {
        k += 1;
    }
    k
}

fn digits_at(bytes: &[u8], k: usize, max: usize) -> usize {
    bytes
        .get(k..)
        .unwrap_or_default()
        .iter()
        .take(max + 1)
        .take_while(|b| b.is_ascii_digit())
        .count()
}

fn number(bytes: &[u8], k: usize, len: usize) -> u32 {
    bytes
        .get(k..k + len)
        .unwrap_or_default()
        .iter()
        .fold(0, |acc, b| acc * 10 + u32::from(b - b'0'))
}

/// Ordinal suffix (`st`, `nd`, `rd`, `th`) length at `k`, if any.
fn ordinal(bytes: &[u8], k: usize) -> usize {
    let Some(w) = bytes.get(k..k + 2) else {
        return 0;
    };
    let w = [
        w.first().copied().unwrap_or(0).to_ascii_lowercase(),
        w.get(1).copied().unwrap_or(0).to_ascii_lowercase(),
    ];
    if matches!(&w, b"st" | b"nd" | b"rd" | b"th")
        && !bytes.get(k + 2).is_some_and(u8::is_ascii_alphanumeric)
    {
        2
    } else {
        0
    }
}

/// A day number (1–31, optional ordinal) starting exactly at `k`: its end.
fn day_at(bytes: &[u8], k: usize) -> Option<usize> {
    let n = digits_at(bytes, k, 2);
    if !(1..=2).contains(&n) {
        return None;
    }
    let d = number(bytes, k, n);
    if !(1..=31).contains(&d) {
        return None;
    }
    let end = k + n + ordinal(bytes, k + n);
    (!bytes.get(end).is_some_and(u8::is_ascii_alphanumeric)).then_some(end)
}

/// A four-digit year starting exactly at `k`: its end.
fn year_at(bytes: &[u8], k: usize) -> Option<usize> {
    (digits_at(bytes, k, 4) == 4
        && year4_ok(number(bytes, k, 4))
        && !bytes.get(k + 4).is_some_and(u8::is_ascii_alphanumeric))
    .then_some(k + 4)
}

/// A two-digit year (`'96`, or `96` after a comma) starting at `k`: its end.
fn short_year_at(bytes: &[u8], k: usize, after_comma: bool) -> Option<usize> {
    let (k, quoted) = if bytes.get(k) == Some(&b'\'') {
        (k + 1, true)
    } else {
        (k, false)
    };
    if digits_at(bytes, k, 2) != 2 || bytes.get(k + 2).is_some_and(u8::is_ascii_alphanumeric) {
        return None;
    }
    (quoted || (after_comma && number(bytes, k, 2) > 31)).then_some(k + 2)
}

/// Dates written with a month name, anchored on the month keyword hits.
pub(crate) fn scan_month_names(s: &mut Scan<'_>) {
    let bytes = s.bytes;
    let months: Vec<(usize, usize)> = s.hits.of(class::MONTH).map(|h| (h.start, h.end)).collect();
    for (ms, me) in months {
        let word = bytes.get(ms..me).unwrap_or_default();
        let ambiguous = word.eq_ignore_ascii_case(b"may")
            || (word.eq_ignore_ascii_case(b"mar") && word.first() != Some(&b'M'))
            || word.iter().all(u8::is_ascii_lowercase) && word.len() == 3;
        let mut k = me;
        if bytes.get(k) == Some(&b'.') {
            k += 1;
        }
        // Forward: day and/or year.
        let mut end = None;
        let mut has_day = false;
        let mut has_year = false;
        let k1 = skip(bytes, k, b" ");
        if let Some(d_end) = day_at(bytes, k1).filter(|_| k1 > k) {
            has_day = true;
            end = Some(d_end);
            let k2 = skip(bytes, d_end, b" ,");
            if let Some(y_end) = year_at(bytes, k2).filter(|_| k2 > d_end) {
                has_year = true;
                end = Some(y_end);
            }
        } else {
            let k2 = skip(bytes, k, b" ,");
            let of = if starts_with_ci(bytes, k2, b"of ") {
                k2 + 3
            } else {
                k2
            };
            let comma = bytes.get(k..k2).is_some_and(|g| g.contains(&b','));
            if let Some(y_end) = year_at(bytes, of).filter(|_| of > k) {
                has_year = true;
                end = Some(y_end);
            } else if let Some(y_end) = short_year_at(bytes, k2, comma).filter(|_| k2 > k) {
                has_year = true;
                end = Some(y_end);
            }
        }
        // Backward: a day before the month (`3 Mar`, `21st of March`).
        let mut start = ms;
        let mut b = ms;
        while b > 0 && bytes.get(b - 1) == Some(&b' ') {
            b -= 1;
        }
        if b >= 3 && starts_with_ci(bytes, b - 2, b"of") && bytes.get(b - 3) == Some(&b' ') {
            b -= 3;
            while b > 0 && bytes.get(b - 1) == Some(&b' ') {
                b -= 1;
            }
        }
        if b < ms && !has_day {
            let mut d_end = b;
            let ord = if b >= 2 { ordinal(bytes, b - 2) } else { 0 };
            if ord == 2 && bytes.get(b).is_some_and(|c| !c.is_ascii_alphanumeric()) {
                d_end = b - 2;
            }
            let n = bytes
                .get(..d_end)
                .unwrap_or_default()
                .iter()
                .rev()
                .take(3)
                .take_while(|c| c.is_ascii_digit())
                .count();
            if (1..=2).contains(&n) && !crate::detect::around::word_before(s.text, d_end - n) {
                let d = number(bytes, d_end - n, n);
                if (1..=31).contains(&d) {
                    start = d_end - n;
                    has_day = true;
                    if end.is_none() {
                        end = Some(me);
                    }
                }
            }
        }
        let Some(end) = end else { continue };
        let score = match (has_day, has_year) {
            (_, true) if ambiguous && !has_day => 0.6,
            (true, true) => scores::DATE_FULL,
            (false, true) => 0.8,
            (true, false) if ambiguous => continue,
            (true, false) => {
                if word_in(s.text, next_word(s.text, end, 2), NOT_DATE_AFTER) {
                    continue;
                }
                0.6
            }
            (false, false) => continue,
        };
        s.emit(start..end, EntityType::Date, score, names::DATE_MONTH);
    }
}

fn starts_with_ci(bytes: &[u8], at: usize, pat: &[u8]) -> bool {
    bytes
        .get(at..at.saturating_add(pat.len()))
        .is_some_and(|w| w.eq_ignore_ascii_case(pat))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;
    use crate::detect::{PatternConfig, PatternDetector};

    fn dates(text: &str) -> Vec<String> {
        let d = PatternDetector::new(&PatternConfig::default()).unwrap();
        d.detect(text)
            .into_iter()
            .filter(|f| f.entity == EntityType::Date && f.score >= 0.5)
            .map(|f| text[f.start..f.end].to_owned())
            .collect()
    }

    #[test]
    fn calendar() {
        assert!(month_day_ok(2, 29));
        assert!(!month_day_ok(2, 30));
        assert!(!month_day_ok(13, 1));
        assert!(!month_day_ok(4, 31));
    }

    #[test]
    fn numeric_dates() {
        assert_eq!(dates("born 3/14/1961."), ["3/14/1961"]);
        assert_eq!(dates("on 2021-03-04 we"), ["2021-03-04"]);
        assert_eq!(dates("seen 14.03.2021"), ["14.03.2021"]);
        assert_eq!(dates("at 2000-04-16 11:34:35 ok"), ["2000-04-16 11:34:35"]);
        assert_eq!(dates("admitted on 7/22 with"), ["7/22"]);
        assert!(dates("2024-01-15T10:30:00Z INFO started").is_empty());
        // A slashed full date touching a word on its left; not a dashed or dotted one, nor a
        // date touching a word on its right, nor an impossible day.
        assert_eq!(dates("drawn on03/11/79> ok"), ["03/11/79"]);
        assert_eq!(dates("seen ON3/14/1961"), ["3/14/1961"]);
        assert!(dates("ref AB03-11-79 x").is_empty());
        assert!(dates("on03/11/79abc").is_empty());
        assert!(dates("on2/31/79 x").is_empty());
    }

    #[test]
    fn a_clock_time_before_a_month_day_stamps_an_event() {
        assert_eq!(dates("arrived to CCU at 2300 10/15. awake"), ["10/15"]);
        assert_eq!(dates("Arrived at 0330 3/7. intubated"), ["3/7"]);
        // Other numbers before it still make a fraction or a measurement; a clock time does
        // not turn a fraction-like pair into a date.
        assert!(dates("take 2 3/7 of it").is_empty());
        assert!(dates("at 2460 10/15 units").is_empty());
        assert!(dates("NS 1000 1/2 strength").is_empty());
    }

    #[test]
    fn ratios_are_not_dates() {
        assert!(dates("BP 120/80, HR 72").is_empty());
        assert!(dates("take 1/2 tab daily").is_empty());
        assert!(dates("about 2/3 of the dose").is_empty());
        assert!(dates("strength 5/5 in all extremities").is_empty());
        assert!(dates("PS 10/5 on CPAP").is_empty());
        assert!(dates("pain 4/10").is_empty());
        assert!(dates("vent AC 14/5 overnight").is_empty());
        assert!(dates("on AC 12/5, fio2 40%").is_empty());
    }

    #[test]
    fn a_side_before_ac_makes_it_a_site_not_the_vent_mode() {
        assert_eq!(
            dates("LINES: PICC PLACED IN R AC 11/17, ART LINE"),
            ["11/17"]
        );
        assert_eq!(dates("piv in left ac 3/2 intact"), ["3/2"]);
        // Other settings nearby still make it one.
        assert!(dates("PEEP 5, R AC 12/5").is_empty());
    }

    #[test]
    fn month_names() {
        assert_eq!(dates("on March 3, 2021 she"), ["March 3, 2021"]);
        assert_eq!(dates("on 3 Mar 2021 she"), ["3 Mar 2021"]);
        assert_eq!(dates("since Jan 2019"), ["Jan 2019"]);
        assert_eq!(dates("due July 29th."), ["July 29th"]);
        assert!(dates("in March we").is_empty());
        assert!(dates("you may 5 times").is_empty());
    }
}
