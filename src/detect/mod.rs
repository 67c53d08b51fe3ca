//! The pattern tier of detection: finds PII/PHI/PCI in text with validated patterns,
//! context words and dictionaries, and reports byte spans of the original text.
//!
//! ```text
//!   text ──normalize──▶ folded text ──keywords (one pass over the words)──▶ hits + candidates
//!                           │
//!                           ├─ numeric    digit runs: cards, SSN, phones, dates, IPv4, ZIP, ABA, NPI, ages
//!                           ├─ codes      letter+digit tokens: IBAN, VIN, DEA
//!                           ├─ contact    '@' emails, spelled-out emails, URLs, IPv6
//!                           ├─ dates      month-name dates
//!                           ├─ anchored   values after MRN / member id / acct / S/N / ZIP / license keywords
//!                           ├─ dictionary deny lists (Aho-Corasick)
//!                           └─ encoded    base64 / hex / percent runs, decoded (bounded) and rescanned
//!                                   │
//!          findings ◀──allow list, map back to original offsets, sort──┘
//! ```
//!
//! Invariants: a [`PatternDetector`] is immutable once built and shared by every request;
//! [`PatternDetector::detect`] never panics, returns spans on char boundaries of the original
//! text, sorted by start then longest first, and never reads or logs more than it returns.
//! Errors name the configuration item at fault and never contain scanned text.

pub mod checksum;
pub mod classifier;
pub mod encoded;
pub mod normalize;

mod anchored;
mod around;
mod codes;
mod contact;
mod dates;
mod dictionary;
mod keywords;
mod numeric;
mod recognizer;

#[cfg(test)]
mod proptests;

use std::fmt;
use std::ops::Range;
use std::str::FromStr;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

pub use anchored::{DRIVERS_LICENSE, GENERIC_ID};
pub use encoded::opaque_blobs;
pub use recognizer::names as recognizers;

use keywords::{Hits, Keywords};

/// What kind of sensitive value a finding is.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum EntityType {
    /// An email address.
    Email,
    /// A telephone or fax number.
    Phone,
    /// A US Social Security number.
    Ssn,
    /// A payment card number, its expiry or CVV, or magnetic-stripe track data.
    CreditCard,
    /// An international bank account number.
    Iban,
    /// A US ABA bank routing number.
    RoutingNumber,
    /// A US National Provider Identifier.
    Npi,
    /// A DEA registration number.
    Dea,
    /// An IPv4 or IPv6 address.
    IpAddress,
    /// A web address.
    Url,
    /// A calendar date (or month and year) more specific than a year.
    Date,
    /// A year alone, a year range or a decade ("in 2021", "2019-2021", "the 1990s"): HIPAA Safe
    /// Harbor removes every element of a date except the year (45 CFR 164.514(b)(2)(i)(C)).
    Year,
    /// An age over 89 (HIPAA Safe Harbor protects only those).
    Age,
    /// A US ZIP code.
    Zip,
    /// A medical record number.
    Mrn,
    /// A health plan beneficiary or member number.
    HealthPlanId,
    /// A bank or customer account number.
    Account,
    /// A vehicle identification number.
    Vin,
    /// A device identifier or serial number.
    DeviceId,
    /// A person's name (from deny lists or the classifier).
    Person,
    /// A place (from deny lists or the classifier).
    Location,
    /// A street address (from deny lists or the classifier).
    Address,
    /// An organization (from deny lists or the classifier).
    Organization,
    /// A tenant-defined type, named in `SCREAMING_SNAKE_CASE`.
    Custom(Arc<str>),
}

const BUILTIN: [(EntityType, &str); 23] = [
    (EntityType::Email, "EMAIL"),
    (EntityType::Phone, "PHONE"),
    (EntityType::Ssn, "SSN"),
    (EntityType::CreditCard, "CREDIT_CARD"),
    (EntityType::Iban, "IBAN"),
    (EntityType::RoutingNumber, "ROUTING_NUMBER"),
    (EntityType::Npi, "NPI"),
    (EntityType::Dea, "DEA"),
    (EntityType::IpAddress, "IP_ADDRESS"),
    (EntityType::Url, "URL"),
    (EntityType::Date, "DATE"),
    (EntityType::Year, "YEAR"),
    (EntityType::Age, "AGE"),
    (EntityType::Zip, "ZIP"),
    (EntityType::Mrn, "MRN"),
    (EntityType::HealthPlanId, "HEALTH_PLAN_ID"),
    (EntityType::Account, "ACCOUNT"),
    (EntityType::Vin, "VIN"),
    (EntityType::DeviceId, "DEVICE_ID"),
    (EntityType::Person, "PERSON"),
    (EntityType::Location, "LOCATION"),
    (EntityType::Address, "ADDRESS"),
    (EntityType::Organization, "ORGANIZATION"),
];

impl EntityType {
    /// The `SCREAMING_SNAKE_CASE` name used in policies, audit rows and JSONL output.
    pub fn as_str(&self) -> &str {
        match self {
            EntityType::Custom(name) => name,
            builtin => BUILTIN
                .iter()
                .find(|(e, _)| e == builtin)
                .map_or("UNKNOWN", |(_, s)| s),
        }
    }
}

impl fmt::Display for EntityType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a string is not an entity type name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "entity type names are SCREAMING_SNAKE_CASE (a capital letter, then capitals, digits or \
     underscores, at most 64 characters); use one of the built-in names or rename the custom type"
)]
pub struct ParseEntityError;

impl FromStr for EntityType {
    type Err = ParseEntityError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if let Some((e, _)) = BUILTIN.iter().find(|(_, name)| *name == s) {
            return Ok(e.clone());
        }
        let mut bytes = s.bytes();
        let valid = s.len() <= 64
            && bytes.next().is_some_and(|b| b.is_ascii_uppercase())
            && bytes.all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_');
        if valid {
            Ok(EntityType::Custom(Arc::from(s)))
        } else {
            Err(ParseEntityError)
        }
    }
}

impl Serialize for EntityType {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for EntityType {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// One detected value. Offsets are BYTE offsets into the ORIGINAL text, on char boundaries.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Finding {
    /// First byte of the value in the original text.
    pub start: usize,
    /// One past the last byte of the value in the original text.
    pub end: usize,
    /// What the value is.
    pub entity: EntityType,
    /// Confidence in 0..=1; see [`recognizers`] for each recognizer's base score.
    pub score: f32,
    /// Which recognizer found it, e.g. `"credit_card_luhn"` or `"base64:ssn"`.
    pub recognizer: &'static str,
}

/// Tenant settings for the pattern tier (compiled once by [`PatternDetector::new`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PatternConfig {
    /// Dictionaries of terms to report as a given entity type.
    pub deny: Vec<DenyList>,
    /// Terms that are never reported, whatever recognizer matches them exactly.
    pub allow: Vec<String>,
    /// Extra MRN formats (regular expressions for the value) matched right after an MRN
    /// keyword such as `MRN:` or `medical record number`.
    pub mrn_formats: Vec<String>,
    /// How far (in characters) around a candidate context words are looked for.
    pub context_window: usize,
}

impl Default for PatternConfig {
    fn default() -> Self {
        Self {
            deny: Vec::new(),
            allow: Vec::new(),
            mrn_formats: Vec::new(),
            context_window: DEFAULT_CONTEXT_WINDOW,
        }
    }
}

/// Default context window, in characters.
pub const DEFAULT_CONTEXT_WINDOW: usize = 40;
const MAX_CONTEXT_WINDOW: usize = 1000;

/// A dictionary whose whole-word matches are reported as `entity`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DenyList {
    /// The entity type reported for a match.
    pub entity: EntityType,
    /// The terms (patient names, code names, ...).
    pub terms: Vec<String>,
    /// Match case exactly; the default ignores case.
    #[serde(default)]
    pub case_sensitive: bool,
}

/// Why a [`PatternConfig`] cannot be compiled. Messages name the item, never its text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DetectError {
    /// A custom MRN format is not a valid regular expression.
    #[error("mrn_formats[{index}] is not a valid regular expression ({reason}); fix or remove it")]
    MrnFormat {
        /// Position in `mrn_formats`.
        index: usize,
        /// The regex compiler's complaint.
        reason: String,
    },
    /// A deny-list term is empty or only whitespace.
    #[error("deny[{list}].terms[{term}] is empty; remove it")]
    EmptyDenyTerm {
        /// Position of the list in `deny`.
        list: usize,
        /// Position of the term in the list.
        term: usize,
    },
    /// An allow-list term is empty or only whitespace.
    #[error("allow[{index}] is empty; remove it")]
    EmptyAllowTerm {
        /// Position in `allow`.
        index: usize,
    },
    /// The context window is outside 1..=1000 characters.
    #[error("context_window must be between 1 and {MAX_CONTEXT_WINDOW} characters, got {0}")]
    ContextWindow(usize),
    /// An automaton could not be built (e.g. the dictionaries are too large).
    #[error("could not build the {what} ({reason}); reduce the number or length of terms")]
    Automaton {
        /// Which automaton.
        what: &'static str,
        /// The builder's complaint.
        reason: String,
    },
}

/// The compiled pattern tier: immutable, `Send + Sync`, built once and shared.
#[derive(Debug, Clone)]
pub struct PatternDetector {
    keywords: Keywords,
    dictionary: dictionary::Dictionary,
    mrn_formats: Vec<regex::Regex>,
    contact: contact::Compiled,
    context_window: usize,
}

/// The version of the pattern rules, stamped on audit rows.
pub const VERSION: &str = "patterns-2";

/// Findings below this score are dropped: they carry no signal a policy could use.
const REPORT_FLOOR: f32 = 0.3;

/// Decoded bytes rescanned per `detect` call, across all encoded runs and depths.
pub const DECODE_BUDGET: usize = 64 * 1024;

/// How many encodings deep a value is followed (base64 inside percent-encoding is 2).
const MAX_DECODE_DEPTH: u8 = 2;

impl PatternDetector {
    /// Compiles a configuration. Fails on invalid regexes, empty terms or a bad window.
    pub fn new(cfg: &PatternConfig) -> Result<Self, DetectError> {
        if cfg.context_window == 0 || cfg.context_window > MAX_CONTEXT_WINDOW {
            return Err(DetectError::ContextWindow(cfg.context_window));
        }
        let mrn_formats = cfg
            .mrn_formats
            .iter()
            .enumerate()
            .map(|(index, f)| {
                regex::RegexBuilder::new(&format!(r"\A(?:{f})"))
                    .size_limit(1 << 20)
                    .build()
                    .map_err(|e| DetectError::MrnFormat {
                        index,
                        reason: regex_reason(&e),
                    })
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self {
            keywords: Keywords::new()?,
            dictionary: dictionary::Dictionary::new(&cfg.deny, &cfg.allow)?,
            mrn_formats,
            contact: contact::Compiled::new()?,
            context_window: cfg.context_window,
        })
    }

    /// Finds sensitive values in `text`. Sorted by start, then longest first.
    pub fn detect(&self, text: &str) -> Vec<Finding> {
        let folded = normalize::fold_for_scan(text);
        let mut budget = DECODE_BUDGET;
        let mut found = self.scan(&folded.text, 0, &mut budget);
        found.retain(|f| f.score >= REPORT_FLOOR);
        self.dictionary.retain_not_allowed(&folded.text, &mut found);
        for f in &mut found {
            let r = folded.to_original(f.start..f.end);
            f.start = r.start;
            f.end = r.end;
        }
        found.retain(|f| f.start < f.end);
        sort_and_dedup(&mut found);
        found
    }

    /// The version of the pattern rules.
    pub fn version(&self) -> &'static str {
        VERSION
    }

    /// Runs every recognizer over already-folded text; spans are in `text`'s coordinates.
    fn scan(&self, text: &str, depth: u8, budget: &mut usize) -> Vec<Finding> {
        let hits = self.keywords.scan(text);
        let mut s = Scan {
            text,
            bytes: text.as_bytes(),
            ascii: text.is_ascii(),
            hits,
            window: self.context_window,
            out: Vec::new(),
        };
        numeric::scan(&mut s);
        codes::scan(&mut s);
        contact::scan(&mut s, &self.contact);
        dates::scan_month_names(&mut s);
        anchored::scan(&mut s, &self.mrn_formats);
        self.dictionary.scan(&mut s);
        if depth < MAX_DECODE_DEPTH {
            encoded::scan(&mut s, budget, |decoded, budget| {
                let folded = normalize::fold_for_scan(decoded);
                self.scan(&folded.text, depth + 1, budget)
            });
        }
        s.out
    }
}

fn regex_reason(e: &regex::Error) -> String {
    match e {
        regex::Error::CompiledTooBig(_) => "the compiled pattern is too large".to_owned(),
        // The syntax error's text quotes the pattern: configuration, not scanned text.
        other => other
            .to_string()
            .lines()
            .last()
            .unwrap_or("invalid")
            .trim()
            .to_owned(),
    }
}

fn sort_and_dedup(found: &mut Vec<Finding>) {
    found.sort_by(|a, b| {
        a.start
            .cmp(&b.start)
            .then(b.end.cmp(&a.end))
            .then(a.entity.cmp(&b.entity))
            .then(b.score.total_cmp(&a.score))
    });
    found.dedup_by(|later, kept| {
        later.start == kept.start && later.end == kept.end && later.entity == kept.entity
    });
}

/// The state every recognizer shares while scanning one (folded) text.
pub(crate) struct Scan<'t> {
    pub(crate) text: &'t str,
    pub(crate) bytes: &'t [u8],
    pub(crate) ascii: bool,
    pub(crate) hits: Hits,
    pub(crate) window: usize,
    pub(crate) out: Vec<Finding>,
}

impl Scan<'_> {
    pub(crate) fn emit(
        &mut self,
        span: Range<usize>,
        entity: EntityType,
        score: f32,
        recognizer: &'static str,
    ) {
        if span.start < span.end && span.end <= self.text.len() {
            self.out.push(Finding {
                start: span.start,
                end: span.end,
                entity,
                score: score.clamp(0.0, 1.0),
                recognizer,
            });
        }
    }

    /// Whether a keyword of a class in `mask` lies within the context window around `span`.
    pub(crate) fn ctx(&self, span: Range<usize>, mask: u64) -> bool {
        let from = around::back_chars(self.text, span.start, self.window, self.ascii);
        let to = around::fwd_chars(self.text, span.end, self.window, self.ascii);
        self.hits.any_in(from, span.start, mask) || self.hits.any_in(span.end, to, mask)
    }

    /// Like [`Scan::ctx`], only looking before the span.
    pub(crate) fn ctx_before(&self, span_start: usize, mask: u64) -> bool {
        let from = around::back_chars(self.text, span_start, self.window, self.ascii);
        self.hits.any_in(from, span_start, mask)
    }
}

/// Converts byte offsets into Unicode code point offsets (what JSONL consumers expect).
/// Offsets inside a multi-byte char count that char as started; offsets past the end map to
/// the number of chars in `text`. Runs in one pass over `text` whatever the order of offsets.
pub fn byte_to_char_offsets(text: &str, byte_offsets: &[usize]) -> Vec<usize> {
    if text.is_ascii() {
        return byte_offsets.iter().map(|&b| b.min(text.len())).collect();
    }
    let mut order: Vec<usize> = (0..byte_offsets.len()).collect();
    order.sort_by_key(|&i| byte_offsets.get(i).copied().unwrap_or(0));
    let mut out = vec![0; byte_offsets.len()];
    let mut chars = text.char_indices().enumerate().peekable();
    let total = text.chars().count();
    for i in order {
        let want = byte_offsets.get(i).copied().unwrap_or(0);
        let mut idx = total;
        while let Some(&(ci, (bi, c))) = chars.peek() {
            if want < bi + c.len_utf8() {
                idx = if want <= bi { ci } else { ci + 1 };
                break;
            }
            chars.next();
        }
        if let Some(slot) = out.get_mut(i) {
            *slot = idx;
        }
    }
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;

    #[test]
    fn entity_names_round_trip() {
        for (e, name) in BUILTIN.iter() {
            assert_eq!(e.as_str(), *name);
            assert_eq!(name.parse::<EntityType>().unwrap(), *e);
        }
        let c: EntityType = "PROJECT_CODENAME".parse().unwrap();
        assert_eq!(c, EntityType::Custom(Arc::from("PROJECT_CODENAME")));
        assert_eq!(c.to_string(), "PROJECT_CODENAME");
        assert!("lower".parse::<EntityType>().is_err());
        assert!("".parse::<EntityType>().is_err());
        assert!("9LIVES".parse::<EntityType>().is_err());
        let json = serde_json::to_string(&EntityType::CreditCard).unwrap();
        assert_eq!(json, "\"CREDIT_CARD\"");
        let back: EntityType = serde_json::from_str("\"IP_ADDRESS\"").unwrap();
        assert_eq!(back, EntityType::IpAddress);
    }

    #[test]
    fn char_offsets() {
        let t = "é a€b";
        // bytes: é(0..2) ' '(2) a(3) €(4..7) b(7)
        assert_eq!(
            byte_to_char_offsets(t, &[7, 0, 3, 4, 8, 100]),
            vec![4, 0, 2, 3, 5, 5]
        );
        assert_eq!(byte_to_char_offsets("abc", &[1, 9]), vec![1, 3]);
    }

    #[test]
    fn config_errors_name_the_item() {
        let cfg = PatternConfig {
            mrn_formats: vec!["[0-9".into()],
            ..PatternConfig::default()
        };
        let e = PatternDetector::new(&cfg).unwrap_err();
        assert!(
            e.to_string().starts_with("mrn_formats[0] is not a valid"),
            "{e}"
        );
        let cfg = PatternConfig {
            deny: vec![DenyList {
                entity: EntityType::Person,
                terms: vec!["Secret Name".into(), " ".into()],
                case_sensitive: false,
            }],
            ..PatternConfig::default()
        };
        let e = PatternDetector::new(&cfg).unwrap_err().to_string();
        assert_eq!(e, "deny[0].terms[1] is empty; remove it");
        let cfg = PatternConfig {
            context_window: 0,
            ..PatternConfig::default()
        };
        assert!(PatternDetector::new(&cfg).is_err());
    }

    #[test]
    fn detector_is_send_sync() {
        fn check<T: Send + Sync>() {}
        check::<PatternDetector>();
    }
}
