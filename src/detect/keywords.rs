//! One pass over the words of the text that finds every context word and anchor keyword,
//! and on the way collects the tokens the code and encoding recognizers need.
//!
//! Invariants: the text is walked once, byte by byte; a keyword is a whole word or phrase (no
//! letter or digit touches either end); lookups are bucketed by first letter and length, so
//! a word costs a table probe and usually nothing more; recognizers ask "is there a hit of
//! these classes near here" instead of searching the text again, so adding a context word
//! never adds a pass. Hits come out sorted by start.

use std::ops::Range;

use crate::detect::DetectError;
use crate::detect::around::{word_after, word_before};

/// Keyword classes, as bits so that one word can serve several recognizers.
pub(crate) mod class {
    pub const CARD: u64 = 1 << 0;
    pub const CVV: u64 = 1 << 1;
    pub const EXPIRY: u64 = 1 << 2;
    pub const SSN: u64 = 1 << 3;
    pub const PHONE: u64 = 1 << 4;
    pub const PAGER: u64 = 1 << 5;
    pub const DOB: u64 = 1 << 6;
    pub const ZIP: u64 = 1 << 7;
    pub const ROUTING: u64 = 1 << 8;
    pub const NPI: u64 = 1 << 9;
    pub const DEA: u64 = 1 << 10;
    pub const VIN: u64 = 1 << 11;
    pub const IP: u64 = 1 << 12;
    pub const VERSION: u64 = 1 << 13;
    pub const NOT_CARD: u64 = 1 << 14;
    pub const MRN: u64 = 1 << 15;
    pub const PLAN: u64 = 1 << 16;
    pub const ACCOUNT: u64 = 1 << 17;
    pub const DEVICE: u64 = 1 << 18;
    pub const URL_SCHEME: u64 = 1 << 19;
    pub const WWW: u64 = 1 << 20;
    pub const SPELLED: u64 = 1 << 21;
    pub const MONTH: u64 = 1 << 22;
    pub const AGE: u64 = 1 << 23;
    pub const IBAN: u64 = 1 << 24;
    pub const EMAIL: u64 = 1 << 25;
    pub const LICENSE: u64 = 1 << 26;
    /// A label that introduces an identifier of no more specific kind (claim, case, reference).
    pub const ID: u64 = 1 << 27;
}

use class::*;

/// Words whose parts may be joined by a space, hyphen, underscore or nothing.
const KEYWORDS: &[(&str, u64)] = &[
    // cards
    ("card", CARD),
    ("cards", CARD),
    ("credit", CARD),
    ("debit", CARD),
    ("visa", CARD),
    ("mastercard", CARD),
    ("master card", CARD),
    ("amex", CARD),
    ("american express", CARD),
    ("discover", CARD),
    ("diners", CARD),
    ("jcb", CARD),
    ("maestro", CARD),
    ("cc", CARD),
    ("ccn", CARD),
    ("pan", CARD),
    ("cardholder", CARD),
    ("billing", CARD),
    ("charge", CARD),
    ("payment", CARD),
    ("cvv", CVV | CARD),
    ("cvv2", CVV | CARD),
    ("cvc", CVV | CARD),
    ("cvc2", CVV | CARD),
    ("cid", CVV),
    ("csc", CVV),
    ("security code", CVV | CARD),
    ("card verification", CVV | CARD),
    ("exp", EXPIRY),
    ("expiry", EXPIRY | CARD),
    ("expires", EXPIRY),
    ("expiring", EXPIRY),
    ("expiration", EXPIRY | CARD),
    ("exp date", EXPIRY | CARD),
    ("valid thru", EXPIRY | CARD),
    ("valid through", EXPIRY | CARD),
    ("good thru", EXPIRY | CARD),
    ("order", NOT_CARD),
    ("tracking", NOT_CARD),
    ("invoice", NOT_CARD),
    ("isbn", NOT_CARD),
    ("confirmation", NOT_CARD),
    ("imei", NOT_CARD | DEVICE),
    // SSN
    ("ssn", SSN),
    ("ssns", SSN),
    ("social", SSN),
    ("social security", SSN),
    ("social security number", SSN),
    ("soc sec", SSN),
    ("ss#", SSN),
    ("ss #", SSN),
    ("ss no", SSN),
    ("taxpayer", SSN),
    // phone
    ("phone", PHONE),
    ("phones", PHONE),
    ("telephone", PHONE),
    ("tel", PHONE),
    ("cell", PHONE),
    ("cellphone", PHONE),
    ("mobile", PHONE),
    ("mob", PHONE),
    ("fax", PHONE),
    ("call", PHONE),
    ("called", PHONE),
    ("calling", PHONE),
    ("contact", PHONE),
    ("reach", PHONE),
    ("reached", PHONE),
    ("text", PHONE),
    ("sms", PHONE),
    ("whatsapp", PHONE),
    ("office", PHONE),
    ("desk", PHONE),
    ("landline", PHONE),
    ("ext", PHONE),
    ("extension", PHONE),
    ("dial", PHONE),
    ("answering", PHONE),
    ("messages", PHONE),
    ("registered", PHONE),
    ("hotline", PHONE),
    ("ph", PHONE),
    ("home #", PHONE),
    ("work #", PHONE),
    ("pager", PHONE | PAGER),
    ("beeper", PHONE | PAGER),
    ("pgr", PHONE | PAGER),
    ("pg", PAGER),
    // dates of birth
    ("dob", DOB),
    ("d.o.b", DOB),
    ("date of birth", DOB),
    ("birth date", DOB),
    ("birthdate", DOB),
    ("birthday", DOB),
    ("born", DOB),
    // other identifiers
    ("zip", ZIP),
    ("zipcode", ZIP),
    ("zip code", ZIP),
    ("postal code", ZIP),
    ("postcode", ZIP),
    ("routing", ROUTING),
    ("aba", ROUTING),
    ("rtn", ROUTING),
    ("transit number", ROUTING),
    ("npi", NPI),
    ("national provider", NPI),
    ("dea", DEA),
    ("vin", VIN),
    ("vehicle identification", VIN),
    ("vehicle", VIN),
    ("ip", IP),
    ("ip address", IP),
    ("ipv4", IP),
    ("ipv6", IP),
    ("version", VERSION),
    ("ver", VERSION),
    ("release", VERSION),
    ("build", VERSION),
    ("firmware", VERSION),
    ("oid", VERSION),
    ("section", VERSION),
    ("sections", VERSION),
    ("chapter", VERSION),
    ("clause", VERSION),
    ("paragraph", VERSION),
    ("rfc", VERSION),
    ("iban", IBAN | ACCOUNT),
    ("email", EMAIL),
    ("e-mail", EMAIL),
    // anchors: a value follows
    ("mrn", MRN),
    ("mr#", MRN),
    ("mr #", MRN),
    ("mr no", MRN),
    ("medical record", MRN),
    ("medical record number", MRN),
    ("med rec", MRN),
    ("record number", MRN),
    ("chart number", MRN),
    ("chart #", MRN),
    ("chart no", MRN),
    ("patient id", MRN),
    ("patient number", MRN),
    ("patient #", MRN),
    ("pt id", MRN),
    ("hospital number", MRN),
    ("unit number", MRN),
    ("record", MRN),
    ("chart", MRN),
    ("member", PLAN),
    ("subscriber", PLAN),
    ("beneficiary", PLAN),
    ("policy", PLAN),
    ("plan", PLAN),
    ("insurance", PLAN),
    ("insurer", PLAN),
    ("member id", PLAN),
    ("member number", PLAN),
    ("member #", PLAN),
    ("member no", PLAN),
    ("subscriber id", PLAN),
    ("subscriber number", PLAN),
    ("subscriber #", PLAN),
    ("policy number", PLAN),
    ("policy #", PLAN),
    ("policy no", PLAN),
    ("policy id", PLAN),
    ("health plan", PLAN),
    ("health plan id", PLAN),
    ("plan id", PLAN),
    ("insurance id", PLAN),
    ("insurance number", PLAN),
    ("group number", PLAN),
    ("group", PLAN),
    ("group #", PLAN),
    ("group no", PLAN),
    ("group id", PLAN),
    ("grp #", PLAN),
    ("grp no", PLAN),
    ("medicare", PLAN),
    ("medicare number", PLAN),
    ("medicaid", PLAN),
    ("medicaid number", PLAN),
    ("mbi", PLAN),
    ("hicn", PLAN),
    ("beneficiary id", PLAN),
    ("account", ACCOUNT),
    ("account number", ACCOUNT),
    ("account no", ACCOUNT),
    ("account #", ACCOUNT),
    ("acct", ACCOUNT),
    ("acct #", ACCOUNT),
    ("acct no", ACCOUNT),
    ("acc no", ACCOUNT),
    ("bank account", ACCOUNT),
    ("serial", DEVICE | NOT_CARD),
    ("serial number", DEVICE | NOT_CARD),
    ("serial no", DEVICE | NOT_CARD),
    ("serial #", DEVICE | NOT_CARD),
    ("s/n", DEVICE),
    ("sn", DEVICE),
    ("device id", DEVICE),
    ("device serial", DEVICE),
    ("udi", DEVICE),
    ("meid", DEVICE),
    // Labels of identifiers of no more specific kind.
    ("id", ID),
    ("identifier", ID),
    ("claim", ID),
    ("case", ID),
    ("reference", ID),
    ("ref", ID),
    ("rx", ID),
    ("driver's license", LICENSE),
    ("driver’s license", LICENSE),
    ("drivers license", LICENSE),
    ("driver license", LICENSE),
    ("driving licence", LICENSE),
    ("driver's licence", LICENSE),
    ("license", LICENSE),
    ("licence", LICENSE),
    ("license id", LICENSE),
    ("license number", LICENSE),
    ("licence number", LICENSE),
    ("license no", LICENSE),
    ("license #", LICENSE),
    ("lic #", LICENSE),
    ("dl#", LICENSE),
    ("dl #", LICENSE),
    ("dl no", LICENSE),
    ("age", AGE),
    ("aged", AGE),
];

/// Keywords matched exactly as written (no joiner variants).
const LITERALS: &[(&str, u64)] = &[
    ("http://", URL_SCHEME),
    ("https://", URL_SCHEME),
    ("ftp://", URL_SCHEME),
    ("ftps://", URL_SCHEME),
    ("sftp://", URL_SCHEME),
    ("www.", WWW),
    ("dot", SPELLED),
];

/// `at` is a spelled-out-email anchor only inside brackets: `(at)`, `[at]`, `{at}`, `<at>`.
const BRACKETED_AT: u64 = SPELLED;

const MONTHS: &[&str] = &[
    "january",
    "jan",
    "february",
    "feb",
    "march",
    "mar",
    "april",
    "apr",
    "may",
    "june",
    "jun",
    "july",
    "jul",
    "august",
    "aug",
    "september",
    "sept",
    "sep",
    "october",
    "oct",
    "november",
    "nov",
    "december",
    "dec",
];

/// One whole-word keyword occurrence.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Hit {
    pub start: usize,
    pub end: usize,
    pub class: u64,
}

/// What follows the first word of a keyword, and what the keyword means.
#[derive(Debug, Clone)]
struct Entry {
    /// Lower-case bytes that must follow the first word (empty for one-word keywords).
    rest: Box<[u8]>,
    class: u64,
    /// The keyword ends with a letter or digit, so nothing word-like may follow it.
    check_end: bool,
    /// Only counts inside brackets (`(at)`).
    bracketed: bool,
}

/// First words longer than this are no keyword's first word.
const MAX_FIRST: usize = 24;

/// The compiled keyword table: buckets by (first letter, length of first word).
#[derive(Debug, Clone)]
pub(crate) struct Keywords {
    buckets: Vec<Bucket>,
}

/// First words of one (letter, length) bucket with their keyword entries.
type Bucket = Vec<(Box<[u8]>, Vec<Entry>)>;

/// All keyword hits of one text, sorted by start, and the candidate tokens found on the way.
#[derive(Debug, Default)]
pub(crate) struct Hits {
    hits: Vec<Hit>,
    /// ASCII alphanumeric tokens holding both letters and digits (IBAN, VIN, DEA candidates).
    pub(crate) codes: Vec<Range<usize>>,
    /// Runs of base64-alphabet bytes at least [`MIN_ENCODED_RUN`] long (with `=` padding).
    pub(crate) encoded: Vec<Range<usize>>,
    /// Where each run of ASCII digits starts, in order.
    pub(crate) digit_runs: Vec<usize>,
}

/// Shortest run of base64-alphabet bytes collected as an encoding candidate.
pub(crate) const MIN_ENCODED_RUN: usize = 16;

fn bucket(first: u8, len: usize) -> Option<usize> {
    let letter = usize::from(first.to_ascii_lowercase().checked_sub(b'a')?);
    (letter < 26 && (1..=MAX_FIRST).contains(&len)).then(|| letter * MAX_FIRST + len - 1)
}

const ALNUM: u8 = 1;
const B64_EXTRA: u8 = 2;
const DIGIT: u8 = 4;
const ALPHA: u8 = 8;

/// Byte classes for the single pass.
#[allow(clippy::indexing_slicing)] // const evaluation: an out-of-range index fails the build
static CLASSES: [u8; 256] = {
    let mut t = [0u8; 256];
    let mut b = 0;
    while b < 256 {
        let c = b as u8;
        if c.is_ascii_digit() {
            t[b] = ALNUM | DIGIT;
        } else if c.is_ascii_alphabetic() {
            t[b] = ALNUM | ALPHA;
        } else if c == b'+' || c == b'/' || c == b'-' || c == b'_' {
            t[b] = B64_EXTRA;
        }
        b += 1;
    }
    t
};

fn byte_class(b: u8) -> u8 {
    CLASSES.get(usize::from(b)).copied().unwrap_or(0)
}

impl Keywords {
    pub(crate) fn new() -> Result<Self, DetectError> {
        let mut buckets: Vec<Bucket> = vec![Vec::new(); 26 * MAX_FIRST];
        let mut add = |pattern: &str, class: u64, bracketed: bool| -> Result<(), DetectError> {
            let p = pattern.to_ascii_lowercase().into_bytes();
            let first_len = p.iter().take_while(|b| b.is_ascii_alphanumeric()).count();
            let (first, rest) = p.split_at(first_len);
            let idx = first
                .first()
                .and_then(|&f| bucket(f, first_len))
                .ok_or_else(|| DetectError::Automaton {
                    what: "keyword table",
                    reason: format!("keyword {pattern:?} must start with a letter and be short"),
                })?;
            let entry = Entry {
                rest: rest.into(),
                class,
                check_end: p.last().is_some_and(u8::is_ascii_alphanumeric),
                bracketed,
            };
            let slot = buckets.get_mut(idx).ok_or_else(|| DetectError::Automaton {
                what: "keyword table",
                reason: "bucket out of range".to_owned(),
            })?;
            match slot.iter_mut().find(|(w, _)| **w == *first) {
                Some((_, entries)) => entries.push(entry),
                None => slot.push((first.into(), vec![entry])),
            }
            Ok(())
        };
        for (word, class) in KEYWORDS {
            for variant in joiner_variants(word) {
                add(&variant, *class, false)?;
            }
        }
        for (word, class) in LITERALS {
            add(word, *class, false)?;
        }
        add("at", BRACKETED_AT, true)?;
        for word in MONTHS {
            add(word, MONTH, false)?;
        }
        Ok(Self { buckets })
    }

    /// Finds every whole-word keyword in `text`, and collects code and encoding candidates.
    pub(crate) fn scan(&self, text: &str) -> Hits {
        let bytes = text.as_bytes();
        let mut out = Hits::default();
        let mut run_start: Option<usize> = None;
        let mut i = 0;
        while let Some(&b) = bytes.get(i) {
            let cls = byte_class(b);
            if cls & ALNUM != 0 {
                let start = i;
                let rest = bytes.get(start..).unwrap_or_default();
                let len = rest
                    .iter()
                    .position(|&c| byte_class(c) & ALNUM == 0)
                    .unwrap_or(rest.len());
                let word = rest.get(..len).unwrap_or_default();
                let seen = word.iter().fold(0u8, |acc, &c| acc | byte_class(c));
                if seen & DIGIT != 0 {
                    let mut prev_digit = false;
                    for (k, c) in word.iter().enumerate() {
                        let digit = c.is_ascii_digit();
                        if digit && !prev_digit {
                            out.digit_runs.push(start + k);
                        }
                        prev_digit = digit;
                    }
                }
                i = start + len;
                let mixed = seen & (DIGIT | ALPHA) == DIGIT | ALPHA;
                if mixed && (len == 4 || (9..=34).contains(&len)) {
                    out.codes.push(start..i);
                }
                if cls & ALPHA != 0 {
                    self.lookup(text, start, i, &mut out.hits);
                }
                run_start.get_or_insert(start);
                continue;
            }
            if cls == B64_EXTRA {
                run_start.get_or_insert(i);
                i += 1;
                continue;
            }
            if let Some(rs) = run_start.take() {
                let mut end = i;
                while end < i + 2 && bytes.get(end) == Some(&b'=') {
                    end += 1;
                }
                if end - rs >= MIN_ENCODED_RUN {
                    out.encoded.push(rs..end);
                }
            }
            i += 1;
        }
        if let Some(rs) = run_start
            && bytes.len() - rs >= MIN_ENCODED_RUN
        {
            out.encoded.push(rs..bytes.len());
        }
        out.hits.sort_unstable_by_key(|h| (h.start, h.end));
        out
    }

    fn lookup(&self, text: &str, start: usize, end: usize, hits: &mut Vec<Hit>) {
        let bytes = text.as_bytes();
        let len = end - start;
        let Some(slot) = bytes
            .get(start)
            .and_then(|&f| bucket(f, len))
            .and_then(|i| self.buckets.get(i))
        else {
            return;
        };
        if slot.is_empty() {
            return;
        }
        let word = bytes.get(start..end).unwrap_or_default();
        let Some((_, entries)) = slot.iter().find(|(w, _)| w.eq_ignore_ascii_case(word)) else {
            return;
        };
        if start > 0
            && bytes.get(start - 1).is_some_and(|&b| !b.is_ascii())
            && word_before(text, start)
        {
            return;
        }
        for e in entries {
            let hit_end = end + e.rest.len();
            if !e.rest.is_empty()
                && !bytes
                    .get(end..hit_end)
                    .is_some_and(|t| t.eq_ignore_ascii_case(&e.rest))
            {
                continue;
            }
            if e.check_end && word_after(text, hit_end) {
                continue;
            }
            if e.bracketed {
                let open = start.checked_sub(1).and_then(|k| bytes.get(k)).copied();
                let close = bytes.get(hit_end).copied();
                if !matches!(
                    (open, close),
                    (Some(b'('), Some(b')'))
                        | (Some(b'['), Some(b']'))
                        | (Some(b'{'), Some(b'}'))
                        | (Some(b'<'), Some(b'>'))
                ) {
                    continue;
                }
            }
            hits.push(Hit {
                start,
                end: hit_end,
                class: e.class,
            });
        }
    }
}

/// "member id" → "member id", "member-id", "member_id", "memberid", "member  id", "member. id".
fn joiner_variants(word: &str) -> Vec<String> {
    if !word.contains(' ') {
        return vec![word.to_owned()];
    }
    let mut out: Vec<String> = [" ", "-", "_", "", "  ", ". "]
        .iter()
        .map(|j| word.replace(' ', j))
        .collect();
    out.sort();
    out.dedup();
    out
}

impl Hits {
    /// Whether a hit of any class in `mask` lies wholly inside `from..to`.
    pub(crate) fn any_in(&self, from: usize, to: usize, mask: u64) -> bool {
        self.iter_in(from, to).any(|h| h.class & mask != 0)
    }

    /// Hits that start at or after `from` and end at or before `to`.
    pub(crate) fn iter_in(&self, from: usize, to: usize) -> impl Iterator<Item = &Hit> {
        let first = self.hits.partition_point(|h| h.start < from);
        self.hits
            .get(first..)
            .unwrap_or_default()
            .iter()
            .take_while(move |h| h.start < to)
            .filter(move |h| h.end <= to)
    }

    /// Every hit of a class in `mask`, in order.
    pub(crate) fn of(&self, mask: u64) -> impl Iterator<Item = &Hit> {
        self.hits.iter().filter(move |h| h.class & mask != 0)
    }

    /// The last hit of a class in `mask` inside `from..pos`.
    pub(crate) fn last_before(&self, from: usize, pos: usize, mask: u64) -> Option<&Hit> {
        self.iter_in(from, pos)
            .filter(|h| h.class & mask != 0)
            .last()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;

    #[test]
    fn whole_words_only() {
        let k = Keywords::new().unwrap();
        let h = k.scan("Phone: call the cellular line; cell# 5; SSN; MRN:12 damage page");
        let words: Vec<_> = h.hits.iter().map(|h| h.class).collect();
        assert!(h.any_in(0, 6, PHONE));
        assert!(!h.any_in(16, 25, PHONE)); // "cellular"
        assert!(h.any_in(31, 35, PHONE)); // "cell" before '#'
        assert!(h.of(SSN).count() == 1);
        assert!(h.of(MRN).count() == 1);
        assert!(h.of(AGE).count() == 0, "{words:?}");
    }

    #[test]
    fn joiners_and_case() {
        let k = Keywords::new().unwrap();
        let h = k.scan("MEMBER-ID x; member_id y; Member Id z; memberid");
        // The two-word label, however joined (the bare "member" is a label of its own too).
        let phrase = h
            .of(PLAN)
            .filter(|x| x.end - x.start > "member".len())
            .count();
        assert_eq!(phrase, 4);
        let h = k.scan("see https://x.example and www.example.org, March");
        assert_eq!(h.of(URL_SCHEME).count(), 1);
        assert_eq!(h.of(WWW).count(), 1);
        assert_eq!(h.of(MONTH).count(), 1);
    }
}
