//! The decoding rules (steps 4a and 6 of `models/README.md`): an ordered table of rules with ids
//! that correct what the model's scores alone would report. Word rules change word scores before
//! spans are formed; span rules drop, cut, extend or add spans after. Each can be switched off
//! (`classifier.rules_off` in `veil.toml`, `veil scan --rules-off`), and `veil scan --ablate`
//! writes the output without each one, so what a rule is worth is measured, not remembered
//! (`make eval-rules`). The word lists they use are data: `decoding.toml` and the lexicon files
//! in the model directory, checksummed in its manifest.

use std::collections::HashSet;
use std::sync::OnceLock;

use serde::Deserialize;

use super::decode::Word;
use crate::detect::{EntityType, Finding};

/// The word lists of `decoding.toml` (see the comments there), lower case.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WordLists {
    not_names: HashSet<String>,
    titles: HashSet<String>,
    relations: HashSet<String>,
    common_words: HashSet<String>,
    generic_place: HashSet<String>,
    edge_words: HashSet<String>,
    place_prefixes: HashSet<String>,
    facility_heads: HashSet<String>,
    clock_cues: HashSet<String>,
}

impl WordLists {
    /// Parses `decoding.toml`; every list must be there.
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut lists: Self = toml::from_str(text).map_err(|e| e.to_string())?;
        for list in [
            &mut lists.not_names,
            &mut lists.titles,
            &mut lists.relations,
            &mut lists.common_words,
            &mut lists.generic_place,
            &mut lists.edge_words,
            &mut lists.place_prefixes,
            &mut lists.facility_heads,
            &mut lists.clock_cues,
        ] {
            *list = list.drain().map(|w| w.to_lowercase()).collect();
        }
        Ok(lists)
    }
}

/// Everything the rules look words up in: the word lists and the lexicon files.
#[derive(Debug, Default)]
pub struct Lists {
    /// `decoding.toml`.
    pub words: WordLists,
    /// Drug names (`drugs.txt`): never a person or a place.
    pub drugs: HashSet<String>,
    /// Nationality, ethnicity and language words (`demonyms.txt`).
    pub demonyms: HashSet<String>,
    /// Plain English words (`words.txt`, `near_names.txt`).
    pub plain: PlainWords,
}

/// What a rule sees besides the words or spans it works on.
pub(super) struct Ctx<'a> {
    /// The text being decoded.
    pub text: &'a str,
    /// Whether its writer [capitalises words](capitalises_words).
    pub cased: bool,
    /// Index of PERSON among the model's types, if it has one.
    pub person: Option<usize>,
    /// Word lists and lexicons.
    pub lists: &'a Lists,
}

/// What a rule works on.
#[derive(Clone, Copy)]
enum Step {
    /// Word scores, before spans are formed.
    Words(fn(&Ctx<'_>, &mut [Word])),
    /// Spans, after they are formed.
    Spans(fn(&Ctx<'_>, &mut Vec<Finding>)),
}

/// One decoding rule.
#[derive(Clone, Copy)]
pub struct Rule {
    /// Stable id, used in configuration, `--rules-off` and `--ablate`.
    pub id: &'static str,
    /// What it does, in a line.
    pub summary: &'static str,
    step: Step,
}

/// The rules, in the order they run: all word rules, then span rules.
pub const RULES: &[Rule] = &[
    Rule {
        id: "abbreviations_not_names",
        summary: "words inside dotted abbreviations (y.o., p.o., b.i.d.) are never names",
        step: Step::Words(abbreviations_not_names),
    },
    Rule {
        id: "person_words_not_names",
        summary: "words for a person (female, daughter, she) are never names",
        step: Step::Words(person_words_not_names),
    },
    Rule {
        id: "names_after_cues",
        summary: "a weak name right after a title or a relation is a name",
        step: Step::Words(names_after_cues_rule),
    },
    Rule {
        id: "trim_spans",
        summary: "spans without letters or digits are dropped; separators trimmed off the ends",
        step: Step::Spans(trim_spans),
    },
    Rule {
        id: "named_part",
        summary: "places and organisations are cut to the words that name something",
        step: Step::Spans(named_parts),
    },
    Rule {
        id: "numeric_dates",
        summary: "a date without letters is its whole chunk if that is a date, else dropped",
        step: Step::Spans(numeric_dates),
    },
    Rule {
        id: "drug_names",
        summary: "names and places made only of drug names are dropped",
        step: Step::Spans(drug_names),
    },
    Rule {
        id: "demonyms",
        summary: "names and places made only of nationality, ethnicity or language words are dropped",
        step: Step::Spans(demonyms),
    },
    Rule {
        id: "weak_lower_case",
        summary: "in text that capitalises words, weak all-lower-case names and places are dropped",
        step: Step::Spans(weak_lower_case),
    },
    Rule {
        id: "acronyms_not_names",
        summary: "in text that capitalises words, names of two or three capitals are dropped",
        step: Step::Spans(acronyms_not_names),
    },
    Rule {
        id: "plain_words",
        summary: "names and places made only of plain English words are dropped where case cannot tell",
        step: Step::Spans(plain_words),
    },
    Rule {
        id: "lone_initials",
        summary: "a single-letter name or place alone is dropped",
        step: Step::Spans(lone_initials),
    },
    Rule {
        id: "facility_nouns",
        summary: "a place ends before its facility noun (CALVERT HOSPITAL -> CALVERT)",
        step: Step::Spans(facility_nouns),
    },
];

/// An id in configuration or on the command line that names no rule.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown decoding rule {0:?}; the rules are: {known}", known = RULES.iter().map(|r| r.id).collect::<Vec<_>>().join(", "))]
pub struct UnknownRule(pub String);

/// Which rules run (all by default).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RuleSet {
    /// Bit `i` set: `RULES[i]` is off.
    off: u64,
}

impl RuleSet {
    /// Every rule.
    pub fn all() -> Self {
        Self::default()
    }

    /// Every rule except those named.
    pub fn without<S: AsRef<str>>(ids: &[S]) -> Result<Self, UnknownRule> {
        let mut set = Self::all();
        for id in ids {
            let id = id.as_ref();
            let i = RULES
                .iter()
                .position(|r| r.id == id)
                .ok_or_else(|| UnknownRule(id.to_owned()))?;
            set.off |= 1 << i;
        }
        Ok(set)
    }

    /// This set with `RULES[i]` also off.
    pub fn and_without(self, i: usize) -> Self {
        Self {
            off: self.off | (1 << i),
        }
    }

    /// Whether `RULES[i]` runs.
    pub fn runs(self, i: usize) -> bool {
        self.off & (1 << i) == 0
    }

    /// Ids of the rules switched off.
    pub fn off(self) -> Vec<&'static str> {
        RULES
            .iter()
            .enumerate()
            .filter(|(i, _)| !self.runs(*i))
            .map(|(_, r)| r.id)
            .collect()
    }

    /// Runs the word rules of the set, in table order.
    pub(super) fn on_words(self, c: &Ctx<'_>, words: &mut [Word]) {
        for (i, rule) in RULES.iter().enumerate() {
            if let (true, Step::Words(f)) = (self.runs(i), rule.step) {
                f(c, words);
            }
        }
    }

    /// Runs the span rules of the set, in table order.
    pub(super) fn on_spans(self, c: &Ctx<'_>, found: &mut Vec<Finding>) {
        for (i, rule) in RULES.iter().enumerate() {
            if let (true, Step::Spans(f)) = (self.runs(i), rule.step) {
                f(c, found);
            }
        }
    }
}

// The table's rules, each a thin adapter over the function that does the work.

fn abbreviations_not_names(c: &Ctx<'_>, words: &mut [Word]) {
    if let Some(k) = c.person {
        no_names_in_abbreviations(c.text, words, k);
    }
}

fn person_words_not_names(c: &Ctx<'_>, words: &mut [Word]) {
    if let Some(k) = c.person {
        no_names_in_common_nouns(&c.lists.words, c.text, words, k);
    }
}

fn names_after_cues_rule(c: &Ctx<'_>, words: &mut [Word]) {
    if let Some(k) = c.person {
        names_after_cues(&c.lists.words, c.text, c.cased, words, k);
    }
}

fn trim_spans(c: &Ctx<'_>, found: &mut Vec<Finding>) {
    *found = std::mem::take(found)
        .into_iter()
        .filter_map(|f| trim_span(c.text, f))
        .collect();
}

fn named_parts(c: &Ctx<'_>, found: &mut Vec<Finding>) {
    *found = std::mem::take(found)
        .into_iter()
        .filter_map(|f| place_named_part(&c.lists.words, c.text, f))
        .collect();
}

fn numeric_dates(c: &Ctx<'_>, found: &mut Vec<Finding>) {
    *found = std::mem::take(found)
        .into_iter()
        .filter_map(|f| numeric_date_chunk(&c.lists.words, c.text, f))
        .collect();
}

fn drug_names(c: &Ctx<'_>, found: &mut Vec<Finding>) {
    found.retain(|f| !only_lexicon_words(c.text, f, &c.lists.drugs));
}

fn demonyms(c: &Ctx<'_>, found: &mut Vec<Finding>) {
    drop_group_words(&c.lists.words, c.text, found, &c.lists.demonyms);
}

fn weak_lower_case(c: &Ctx<'_>, found: &mut Vec<Finding>) {
    if c.cased {
        found.retain(|f| !weak_lower_case_span(c.text, f));
    }
}

fn acronyms_not_names(c: &Ctx<'_>, found: &mut Vec<Finding>) {
    if c.cased {
        found.retain(|f| !acronym_as_name(&c.lists.words, c.text, f));
    }
}

fn plain_words(c: &Ctx<'_>, found: &mut Vec<Finding>) {
    found.retain(|f| !only_plain_words(&c.lists.words, c.text, f, &c.lists.plain, c.cased));
}

fn lone_initials(c: &Ctx<'_>, found: &mut Vec<Finding>) {
    drop_lone_initials(c.text, found);
}

#[allow(clippy::ptr_arg, reason = "every span rule has the table's signature")]
fn facility_nouns(c: &Ctx<'_>, found: &mut Vec<Finding>) {
    cut_facility_nouns(&c.lists.words, c.text, found);
}

/// Step 6c of the decoding rules: a PERSON or LOCATION span with a single letter or digit ("G."
/// of "G.U.", "a." of "a.m.", "S" of a SOAP note's "S:") is dropped unless it is tied to a
/// longer span of its type: next to it, with at most three spaces, dots, commas or hyphens
/// between ("D." before "Wren"), directly or through other single letters ("J. R. Tolkien").
/// An initial alone identifies nobody, and two lone letters do not vouch for each other
/// ("G." and "U." of "G.U.", "B." and "S." of "B.S.").
fn drop_lone_initials(text: &str, found: &mut Vec<Finding>) {
    let alnums = |f: &Finding| {
        text.get(f.start..f.end)
            .map_or(0, |s| s.chars().filter(|c| c.is_alphanumeric()).count())
    };
    let ruled = |f: &Finding| matches!(f.entity, EntityType::Person | EntityType::Location);
    let near = |a: &Finding, b: &Finding| {
        let gap = if b.start >= a.end {
            text.get(a.end..b.start)
        } else if a.start >= b.end {
            text.get(b.end..a.start)
        } else {
            None
        };
        a.entity == b.entity
            && gap.is_some_and(|g| {
                g.chars().count() <= 3 && g.chars().all(|c| c.is_whitespace() || ".,-".contains(c))
            })
    };
    let mut keep: Vec<bool> = found.iter().map(|f| !ruled(f) || alnums(f) != 1).collect();
    // Keeping spreads from the longer spans through chains of near single letters (`near`
    // needs the same type, so only PERSON and LOCATION spans can tie a letter).
    let mut changed = true;
    while changed {
        changed = false;
        for (i, f) in found.iter().enumerate() {
            if keep.get(i).copied().unwrap_or(true) {
                continue;
            }
            let tied = found
                .iter()
                .zip(&keep)
                .any(|(o, &kept)| kept && !std::ptr::eq(o, f) && near(f, o));
            if let (true, Some(k)) = (tied, keep.get_mut(i)) {
                *k = true;
                changed = true;
            }
        }
    }
    let mut flags = keep.into_iter();
    found.retain(|_| flags.next().unwrap_or(true));
}

/// Dotted abbreviations that are never a name ("58 y.o. woman", "i.v. zofran", "3 p.m."); same
/// list as `DOTTED_ABBR` in `training/predict.py`.
fn dotted_abbreviation() -> Option<&'static regex::Regex> {
    static RE: OnceLock<Option<regex::Regex>> = OnceLock::new();
    compiled(
        &RE,
        r"(?i)(?:y\.o|a\.m|p\.m|i\.v|i\.m|p\.o|b\.i\.d|t\.i\.d|q\.i\.d|q\.d|q\.h\.s|q\.h|p\.r\.n|n\.p\.o|e\.g|i\.e|s\.p|h\.o|c\.o|r\.o|d\.c|f\.u|w\.u|s\.c|o\.d|o\.s|o\.u|a\.c|p\.c|h\.s|d\.o\.b|m\.d|r\.n)\.?",
    )
}

/// A regex compiled once into `cell`; `None` if it does not compile (callers then skip the rule).
pub(super) fn compiled(
    cell: &'static OnceLock<Option<regex::Regex>>,
    pattern: &str,
) -> Option<&'static regex::Regex> {
    cell.get_or_init(|| regex::Regex::new(pattern).ok())
        .as_ref()
}

/// Step 4a (i) of the decoding rules: words inside a dotted abbreviation (not preceded by a letter,
/// digit, `_` or `.`, not followed by a letter, digit or `_`) get no PERSON score, so they never
/// start or join a name.
fn no_names_in_abbreviations(text: &str, words: &mut [Word], person: usize) {
    let Some(re) = dotted_abbreviation() else {
        return;
    };
    let word_char = |c: char| c.is_alphanumeric() || c == '_';
    let spans: Vec<(usize, usize)> = re
        .find_iter(text)
        .filter(|m| {
            let before = text.get(..m.start()).and_then(|s| s.chars().next_back());
            let after = text.get(m.end()..).and_then(|s| s.chars().next());
            !before.is_some_and(|c| word_char(c) || c == '.') && !after.is_some_and(word_char)
        })
        .map(|m| (m.start(), m.end()))
        .collect();
    if spans.is_empty() {
        return;
    }
    for w in words {
        if spans.iter().any(|&(a, b)| a <= w.start && w.end <= b) {
            w.never(person);
        }
    }
}

/// Step 4a (i), second part: words in `not_names` get no PERSON score.
fn no_names_in_common_nouns(l: &WordLists, text: &str, words: &mut [Word], person: usize) {
    for w in words {
        if listed(&l.not_names, text.get(w.start..w.end).unwrap_or_default()) {
            w.never(person);
        }
    }
}

/// The PERSON score from which a word right after a title is a name.
const TITLE_MIN: f32 = 0.1;

/// The title (as written) that the word starting at byte `start` follows: spaces or tabs (at
/// least one), before them an optional `.`, before that a title not preceded by a letter, digit,
/// `_` or `.`.
fn after_title<'t>(l: &WordLists, text: &'t str, start: usize) -> Option<&'t str> {
    let before = text.get(..start)?;
    let trimmed = before.trim_end_matches([' ', '\t']);
    if trimmed.len() == before.len() {
        return None;
    }
    listed_word_before(trimmed, &l.titles).and_then(|r| text.get(r))
}

/// The byte range of the word of `list` that `prefix` ends with, after an optional `.`
/// ("Dr." , "St"), when that word is not part of a longer token (see [`word_before`]).
fn listed_word_before(prefix: &str, list: &HashSet<String>) -> Option<std::ops::Range<usize>> {
    let end = prefix.strip_suffix('.').unwrap_or(prefix).len();
    let word = word_before(prefix.get(..end)?).filter(|w| !w.is_empty() && listed(list, w))?;
    Some(end.checked_sub(word.len())?..end)
}

/// Whether `word` is written capitalised: an upper-case letter, then a lower-case one.
fn capitalised(word: &str) -> bool {
    let mut chars = word.chars();
    chars.next().is_some_and(char::is_uppercase) && chars.next().is_some_and(char::is_lowercase)
}

/// The run of letters `prefix` ends with, lower-cased; `None` when the run is preceded by a
/// letter, digit, `_` or `.` (part of a longer token).
fn word_before(prefix: &str) -> Option<String> {
    let head = prefix.trim_end_matches(char::is_alphabetic);
    let glued = head
        .chars()
        .next_back()
        .is_some_and(|c| c.is_alphanumeric() || c == '_' || c == '.');
    (!glued).then(|| prefix.get(head.len()..).unwrap_or_default().to_lowercase())
}

/// The PERSON score from which a word right after a relation is a name: a relation is evidence
/// like a title, so a weak name score suffices (0.3 until 2026-12-03; 0.1 found two more names
/// after relations in long physionet dev notes with no new false positive on the dev sets).
const RELATION_MIN: f32 = 0.1;

/// Whether the word starting at byte `start` follows a relation with one to three spaces, tabs,
/// commas, hyphens or colons between, the relation not preceded by a letter, digit, `_` or `.`.
fn after_relation(l: &WordLists, text: &str, start: usize) -> bool {
    let Some(before) = text.get(..start) else {
        return false;
    };
    let trimmed = before.trim_end_matches([' ', '\t', ',', '-', ':']);
    (1..=3).contains(&(before.len() - trimmed.len()))
        && word_before(trimmed).is_some_and(|w| l.relations.contains(&w))
}

/// Step 4a (ii) and (iii) of the decoding rules: a word right after a title with a PERSON score
/// of at least `TITLE_MIN` — or with any score when the text capitalises words and both the
/// title and the word are written capitalised, the word no common word ("update to Mrs
/// Okonkwo today"; not "MS. Aspiration", where MS is mental status) — or right after a relation
/// with at least `RELATION_MIN` and not a common word, becomes a confident name word
/// (`p(B-PERSON) = 1`, `p(I-PERSON) = 0`).
fn names_after_cues(l: &WordLists, text: &str, cased: bool, words: &mut [Word], person: usize) {
    for w in words {
        let score =
            w.pb.get(person).copied().unwrap_or(0.0) + w.pi.get(person).copied().unwrap_or(0.0);
        let word = text.get(w.start..w.end).unwrap_or_default();
        let common = || listed(&l.common_words, word);
        let titled = after_title(l, text, w.start).is_some_and(|title| {
            score >= TITLE_MIN || (cased && capitalised(title) && capitalised(word) && !common())
        });
        if titled || (score >= RELATION_MIN && !common() && after_relation(l, text, w.start)) {
            if let Some(b) = w.pb.get_mut(person) {
                *b = 1.0;
            }
            if let Some(i) = w.pi.get_mut(person) {
                *i = 0.0;
            }
        }
    }
}

/// A numeric date, matched against a whole whitespace-delimited chunk.
fn numeric_date() -> Option<&'static regex::Regex> {
    static RE: OnceLock<Option<regex::Regex>> = OnceLock::new();
    compiled(
        &RE,
        r"^(?:(?:0?[1-9]|1[0-2])/(?:0?[1-9]|[12][0-9]|3[01])(?:/(?:\d{2}|\d{4}))?|(?:0?[1-9]|1[0-2])-(?:0?[1-9]|[12][0-9]|3[01])-(?:\d{2}|\d{4})|(?:0?[1-9]|1[0-2])[/-](?:19|20)\d{2}|(?:0?[1-9]|1[0-2])/[3-9]\d|'\d{2}|\d{2}'|(?:19|20)\d{2}|\d{4}-\d{2}-\d{2})$",
    )
}

/// Whether `word`, lower-cased, is in the sorted `list`.
fn listed(list: &HashSet<String>, word: &str) -> bool {
    list.contains(&word.to_lowercase())
}

/// The words of `fragment` — maximal runs of letters — as byte ranges.
fn letter_runs(fragment: &str) -> Vec<(usize, usize)> {
    let mut words = Vec::new();
    let mut open = None;
    for (i, c) in fragment.char_indices().chain([(fragment.len(), ' ')]) {
        match (c.is_alphabetic(), open) {
            (true, None) => open = Some(i),
            (false, Some(a)) => {
                words.push((a, i));
                open = None;
            }
            _ => {}
        }
    }
    words
}

/// The part of a LOCATION or ORGANIZATION fragment that names something, as a byte range of the
/// fragment: all of it if it has no word (run of letters), `None` if every word is generic
/// ("the hospital", "MICU 4"). Otherwise `edge_words` at either end are cut off with what separates
/// them from the rest, so that the part starts or ends with a letter or digit where it was cut
/// ("the Harlow house" → "Harlow house", "St. Brigid, the" → "St. Brigid").
fn named_part(l: &WordLists, fragment: &str) -> Option<(usize, usize)> {
    let words = letter_runs(fragment);
    let word = |&(a, b): &(usize, usize)| fragment.get(a..b).unwrap_or_default();
    if words.is_empty() {
        return Some((0, fragment.len()));
    }
    if words.iter().all(|w| listed(&l.generic_place, word(w))) {
        return None;
    }
    let inner = |w: &(usize, usize)| !listed(&l.edge_words, word(w));
    let first = words.iter().position(inner)?;
    let last = words.iter().rposition(inner)?;
    let (mut start, mut end) = (0, fragment.len());
    if let Some(cut) = first.checked_sub(1).and_then(|i| words.get(i)) {
        let rest = fragment.get(cut.1..)?;
        start = cut.1 + rest.find(char::is_alphanumeric)?;
    }
    if let Some(cut) = words.get(last + 1) {
        let rest = fragment.get(..cut.0)?;
        let (at, c) = rest
            .char_indices()
            .rev()
            .find(|(_, c)| c.is_alphanumeric())?;
        end = at + c.len_utf8();
    }
    Some((start, end))
}

/// Where a place's name starting at byte `start` really starts: at a `place_prefixes` word right
/// before its first letter or digit (then an optional `.`, then spaces or tabs), which the model
/// often leaves out ("St. Brigid" tagged ". Brigid"); otherwise at `start`.
fn with_place_prefix(l: &WordLists, text: &str, start: usize) -> usize {
    let name = text
        .get(start..)
        .and_then(|rest| rest.find(char::is_alphanumeric))
        .map_or(start, |i| start + i);
    text.get(..name)
        .and_then(|before| {
            listed_word_before(before.trim_end_matches([' ', '\t']), &l.place_prefixes)
        })
        .map_or(start, |r| r.start)
}

/// Score a place or organisation span written all in lower case needs in text that capitalises
/// words (step 6).
const LOWER_CASE_PLACE_MIN: f32 = 0.8;

/// Score a name written all in lower case needs in text that capitalises words (step 6). Higher
/// than [`LOWER_CASE_PLACE_MIN`]: nurses write "son bill" in cased notes, and the model is sure
/// of such names (a name after a relation or title scores 1), not of misspelled words.
const LOWER_CASE_NAME_MIN: f32 = 0.9;

/// Whether `text` has both a capitalised word (`[A-Z][a-z]{2,}`) and a lower-case one
/// (`[a-z]{3,}`), ASCII letters, words delimited by non-alphanumeric characters: its writer
/// uses case, so a proper noun is likely capitalised. All-caps and all-lower-case notes are not.
pub(super) fn capitalises_words(text: &str) -> bool {
    let (mut capital, mut lower) = (false, false);
    for w in text.split(|c: char| !c.is_alphanumeric() && c != '_') {
        let b = w.as_bytes();
        capital |= b.len() >= 3
            && b.first().is_some_and(u8::is_ascii_uppercase)
            && b.get(1..3)
                .is_some_and(|r| r.iter().all(u8::is_ascii_lowercase));
        lower |= b.len() >= 3
            && b.get(..3)
                .is_some_and(|r| r.iter().all(u8::is_ascii_lowercase));
        if capital && lower {
            return true;
        }
    }
    false
}

/// Step 6, in text that [capitalises words](capitalises_words): whether `f` is a span without an
/// upper-case letter whose score is below [`LOWER_CASE_PLACE_MIN`] for a LOCATION or
/// ORGANIZATION ("in good spirits", "per nutrition consult") or [`LOWER_CASE_NAME_MIN`] for a
/// PERSON ("intermitenly", "vistied"). The tokenizer is uncased, so the model cannot see that
/// the writer did not capitalise it.
fn weak_lower_case_span(text: &str, f: &Finding) -> bool {
    let min = match f.entity {
        EntityType::Location | EntityType::Organization => LOWER_CASE_PLACE_MIN,
        EntityType::Person => LOWER_CASE_NAME_MIN,
        _ => return false,
    };
    f.score < min
        && !text
            .get(f.start..f.end)
            .unwrap_or_default()
            .chars()
            .any(char::is_uppercase)
}

/// Step 6, in text that [capitalises words](capitalises_words): whether `f` is a PERSON span of
/// two or three capitals ("HO" — house officer, "ENT", "SOB", "CDI"), optionally with a final
/// `.`, after no title or relation. Where the writer capitalises words, names are written "Ho"
/// or "Ed" and an all-capitals word that short is an abbreviation; "Dr. HO" and "son ED" stay.
fn acronym_as_name(l: &WordLists, text: &str, f: &Finding) -> bool {
    let word = text
        .get(f.start..f.end)
        .unwrap_or_default()
        .trim_end_matches('.');
    f.entity == EntityType::Person
        && (2..=3).contains(&word.len())
        && word.bytes().all(|b| b.is_ascii_uppercase())
        && after_title(l, text, f.start).is_none()
        && !after_relation(l, text, f.start)
}

/// Step 6, over all spans: a PERSON, LOCATION or ORGANIZATION span made only of `group_words` is
/// dropped, unless a title or a relation precedes it ("Mr. French") or it follows a place or an
/// address span with at most three spaces, commas or `(` between ("Cyprus (Greek)").
fn drop_group_words(l: &WordLists, text: &str, found: &mut Vec<Finding>, groups: &HashSet<String>) {
    let keep: Vec<bool> = found
        .iter()
        .map(|f| {
            !name_span_words(text, f).is_some_and(|words| words.iter().all(|w| listed(groups, w)))
                || previous_word(text, f.start)
                    .is_some_and(|w| listed(&l.titles, w) || listed(&l.relations, w))
                || found.iter().any(|o| {
                    matches!(o.entity, EntityType::Location | EntityType::Address)
                        && o.end <= f.start
                        && text.get(o.end..f.start).is_some_and(|gap| {
                            gap.len() <= 3
                                && gap
                                    .chars()
                                    .all(|c| c.is_whitespace() || c == ',' || c == '(')
                        })
                })
        })
        .collect();
    let mut keep = keep.into_iter();
    found.retain(|_| keep.next().unwrap_or(true));
}

/// Step 6 of the decoding rules, after [`span_rules`]: whether `f` is a PERSON, LOCATION or
/// ORGANIZATION span whose words (runs of letters) are all in `lexicon`. With the drug lexicon
/// ("coumadin", "ATIVAN", "zoloft / amiodarone": a drug is never a person or a place; it has no
/// name or place that Faker knows, `training/drug_lexicon.py`); with the demonym lexicon
/// ("African American", "Hispanic", "Cantonese": nationality, ethnicity and language words are
/// never names or places; `models/classifier/demonyms.txt`).
fn only_lexicon_words(text: &str, f: &Finding, lexicon: &HashSet<String>) -> bool {
    !lexicon.is_empty()
        && name_span_words(text, f)
            .is_some_and(|words| words.iter().all(|w| lexicon.contains(&w.to_lowercase())))
}

/// The words (runs of letters) of `f` when it is a PERSON, LOCATION or ORGANIZATION span that
/// has any; what the lexicon rules of step 6 look up.
fn name_span_words<'t>(text: &'t str, f: &Finding) -> Option<Vec<&'t str>> {
    if !matches!(
        f.entity,
        EntityType::Person | EntityType::Location | EntityType::Organization
    ) {
        return None;
    }
    let fragment = text.get(f.start..f.end)?;
    let words: Vec<&str> = letter_runs(fragment)
        .into_iter()
        .filter_map(|(a, b)| fragment.get(a..b))
        .collect();
    (!words.is_empty()).then_some(words)
}

/// Step 6d: a LOCATION span that ends in `facility_heads` nouns ends before them when a word
/// that names something stays ("CALVERT HOSPITAL" → "CALVERT", "Keeley House" → "Keeley",
/// "St. Brigid's Hospital" → "St. Brigid's"). The name identifies the place, the noun does not,
/// and a redacted prompt keeps it readable ("transferred from `<LOCATION_1>` Hospital"). Runs after
/// the plain-word rule, for which the noun is what makes "MERCY HOSPITAL" a name. A span whose
/// other words are all generic ("the hospital") or edge words is left whole.
fn cut_facility_nouns(l: &WordLists, text: &str, found: &mut [Finding]) {
    for f in found
        .iter_mut()
        .filter(|f| f.entity == EntityType::Location)
    {
        let Some(fragment) = text.get(f.start..f.end) else {
            continue;
        };
        let words = letter_runs(fragment);
        let word = |&(a, b): &(usize, usize)| fragment.get(a..b).unwrap_or_default();
        let Some(last) = words
            .iter()
            .rposition(|w| !listed(&l.facility_heads, word(w)))
        else {
            continue;
        };
        let Some(&(cut, _)) = words.get(last + 1) else {
            continue;
        };
        let named = words
            .iter()
            .take(last + 1)
            .any(|w| !listed(&l.generic_place, word(w)) && !listed(&l.edge_words, word(w)));
        let end = fragment.get(..cut).and_then(|head| {
            head.char_indices()
                .rev()
                .find(|(_, c)| c.is_alphanumeric())
                .map(|(at, c)| at + c.len_utf8())
        });
        if let (true, Some(end)) = (named, end) {
            f.end = f.start + end;
        }
    }
}

/// Letters of the shortest word whose misspellings count as the word ([`PlainWords::contains`]).
const TYPO_MIN: usize = 7;

/// The word lexicon of decoding rule 6, with the plain words whose misspellings may be names.
#[derive(Debug, Default)]
pub struct PlainWords {
    /// English words written only in lower case, none a name or place Faker knows.
    pub words: HashSet<String>,
    /// Words of `words` one slip away from a name, place or capitalised word ("fetcher" ~
    /// "Fletcher"). Present only with `near_name_lexicon`, which also turns misspellings on.
    pub near_names: HashSet<String>,
}

impl PlainWords {
    fn is_empty(&self) -> bool {
        self.words.is_empty()
    }

    /// Whether lower-case `word` is a plain word, or (with a near-name lexicon) a plain word of
    /// [`TYPO_MIN`]+ letters with one slip inside it: a letter dropped ("tomrrow"), added
    /// ("betweeen") or swapped with its neighbour ("daugther"), first and last letters kept — the
    /// typing slips of hurried notes, which the model reads as names. Plain words near a name are
    /// excluded both ways, so no misspelling of them is also a name that Faker knows.
    fn contains(&self, word: &str) -> bool {
        if self.words.contains(word) {
            return true;
        }
        if self.near_names.is_empty() || word.chars().count() < TYPO_MIN {
            return false;
        }
        interior_edits(word).into_iter().any(|v| {
            v.chars().count() >= TYPO_MIN
                && self.words.contains(&v)
                && !self.near_names.contains(&v)
        })
    }
}

/// Every word one slip away from `word` without touching its first or last letter: one inner
/// letter dropped, two inner neighbours swapped, or a letter a–z inserted after the first.
fn interior_edits(word: &str) -> Vec<String> {
    let c: Vec<char> = word.chars().collect();
    let n = c.len();
    let mut out = Vec::new();
    for i in 1..n.saturating_sub(1) {
        let mut dropped = c.clone();
        dropped.remove(i);
        out.push(dropped.into_iter().collect());
        if i + 2 < n {
            let mut swapped = c.clone();
            swapped.swap(i, i + 1);
            out.push(swapped.into_iter().collect());
        }
    }
    for i in 1..n {
        for l in 'a'..='z' {
            let mut added = c.clone();
            added.insert(i, l);
            out.push(added.into_iter().collect());
        }
    }
    out
}

/// Step 6 of the decoding rules: whether `f` is a PERSON, LOCATION or ORGANIZATION span made only
/// of plain words (`plain`: English words written only in lower case, none a name or place Faker
/// knows; `training/word_lexicon.py`) and `generic_place` words, where case cannot tell the
/// model otherwise: the text does not [capitalise words](capitalises_words) (`cased` false:
/// "TRIPLE LUMEN", "MEDICALLY", "wheezy"), or the span does not mix cases: no upper-case letter
/// ("fair weather") or no lower-case one ("MIDDLE OF BED" in a note that capitalises elsewhere).
/// Kept: spans with a `facility_heads` word ("MERCY HOSPITAL") and spans whose
/// [previous word](previous_word) is a title or a relation ("DR TALLOW", "son: bill").
fn only_plain_words(
    l: &WordLists,
    text: &str,
    f: &Finding,
    plain: &PlainWords,
    cased: bool,
) -> bool {
    // Case tells only where the writer uses it and the span mixes cases ("Calvert"); an all-caps
    // span in such text is emphasis or an abbreviation as often as a name.
    if plain.is_empty()
        || (cased
            && text.get(f.start..f.end).is_some_and(|s| {
                s.chars().any(char::is_uppercase) && s.chars().any(char::is_lowercase)
            }))
    {
        return false;
    }
    name_span_words(text, f).is_some_and(|words| {
        words
            .iter()
            .all(|w| listed(&l.generic_place, w) || plain.contains(&w.to_lowercase()))
            && !words.iter().any(|w| listed(&l.facility_heads, w))
    }) && !previous_word(text, f.start)
        .is_some_and(|w| listed(&l.titles, w) || listed(&l.relations, w))
}

/// The run of letters before byte `start` of `text`, past spaces, tabs and `.,:-` ("..DR TALLOW",
/// "son: bill"); `None` if there is none.
fn previous_word(text: &str, start: usize) -> Option<&str> {
    let before = text
        .get(..start)?
        .trim_end_matches([' ', '\t', '.', ',', ':', '-']);
    let head = before.trim_end_matches(char::is_alphabetic);
    before.get(head.len()..).filter(|w| !w.is_empty())
}

/// Whether `chunk` (at `start` in `text`) is a 24-hour time (`0000`–`2359`) right after a clock
/// cue (`at`, `@`, `~`, `approx`, …).
fn clock_stamp(l: &WordLists, text: &str, start: usize, chunk: &str) -> bool {
    let &[h1, h2, m1, m2] = chunk.as_bytes() else {
        return false;
    };
    if ![h1, h2, m1, m2].iter().all(u8::is_ascii_digit)
        || (h1 - b'0') * 10 + (h2 - b'0') > 23
        || m1 > b'5'
    {
        return false;
    }
    let before = text.get(..start).unwrap_or_default().trim_end();
    if before.ends_with(['@', '~']) {
        return true;
    }
    let word = before
        .rsplit(|c: char| !c.is_alphabetic())
        .next()
        .unwrap_or_default();
    listed(&l.clock_cues, word)
}

/// Separators a span never starts or ends with ([`trim_span`]): the model tags the comma after a
/// town as part of an address ("14 Elm Hollow Rd, Dunmore,").
const SPAN_TRIM: &str = ",;:";

/// Step 6 (`trim_spans`): drops a span without letters or digits; trims [`SPAN_TRIM`]
/// separators and whitespace off both ends.
fn trim_span(text: &str, f: Finding) -> Option<Finding> {
    let fragment = text.get(f.start..f.end)?;
    if !fragment.chars().any(char::is_alphanumeric) {
        return None;
    }
    let trim = |c: char| c.is_whitespace() || SPAN_TRIM.contains(c);
    Some(Finding {
        start: f.end - fragment.trim_start_matches(trim).len(),
        end: f.start + fragment.trim_end_matches(trim).len(),
        ..f
    })
}

/// Step 6 (`named_part`): a place or organisation span is cut to its named part
/// ([`named_part`], with a place prefix before it) and dropped without one; other spans pass.
fn place_named_part(l: &WordLists, text: &str, f: Finding) -> Option<Finding> {
    if !matches!(f.entity, EntityType::Location | EntityType::Organization) {
        return Some(f);
    }
    let fragment = text.get(f.start..f.end)?;
    let (start, end) = named_part(l, fragment)?;
    Some(Finding {
        start: with_place_prefix(l, text, f.start + start),
        end: f.start + end,
        ..f
    })
}

/// Step 6 (`numeric_dates`): a DATE span without letters is replaced by its chunk (delimited by
/// whitespace and `()[]{},;`) if that chunk is a numeric date and no time after a clock cue,
/// and dropped otherwise (fragments of vitals such as `120/85`, ranges such as `12-15`).
fn numeric_date_chunk(l: &WordLists, text: &str, f: Finding) -> Option<Finding> {
    let fragment = text.get(f.start..f.end)?;
    if f.entity != EntityType::Date || fragment.chars().any(char::is_alphabetic) {
        return Some(f);
    }
    let before = text.get(..f.start)?;
    let after = text.get(f.end..)?;
    let bound = |c: char| c.is_whitespace() || "()[]{},;".contains(c);
    let mut start = before
        .char_indices()
        .rev()
        .find(|(_, c)| bound(*c))
        .map_or(0, |(i, c)| i + c.len_utf8());
    let mut end = f.end + after.find(bound).unwrap_or(after.len());
    while let Some(c) = text.get(start..end).and_then(|s| s.chars().next()) {
        if !"([{\"\u{201c}\u{2018}".contains(c) {
            break;
        }
        start += c.len_utf8();
    }
    while let Some(c) = text.get(start..end).and_then(|s| s.chars().next_back()) {
        if !".,;:!?)]}\"\u{201d}\u{2019}".contains(c) {
            break;
        }
        end -= c.len_utf8();
    }
    let chunk = text.get(start..end)?;
    if !numeric_date().is_some_and(|re| re.is_match(chunk)) || clock_stamp(l, text, start, chunk) {
        return None;
    }
    if chunk.starts_with('\'') {
        start += 1;
    } else if chunk.ends_with('\'') {
        end -= 1;
    }
    Some(Finding { start, end, ..f })
}

#[cfg(test)]
mod tests {
    use super::super::decode::spans as decode;
    use super::*;

    /// The shipped word lists.
    fn l() -> &'static WordLists {
        static LISTS: OnceLock<WordLists> = OnceLock::new();
        LISTS.get_or_init(|| {
            let path = concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/models/classifier/decoding.toml"
            );
            WordLists::parse(&std::fs::read_to_string(path).expect("decoding.toml"))
                .expect("valid word lists")
        })
    }

    /// The shipped demonym lexicon.
    fn demonyms() -> HashSet<String> {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/models/classifier/demonyms.txt"
        );
        std::fs::read_to_string(path)
            .expect("demonyms.txt")
            .lines()
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .map(str::to_owned)
            .collect()
    }

    /// The three span-shape rules in table order (`trim_spans`, `named_part`, `numeric_dates`).
    fn span_rules(text: &str, f: Finding) -> Option<Finding> {
        let f = trim_span(text, f)?;
        let f = place_named_part(l(), text, f)?;
        numeric_date_chunk(l(), text, f)
    }

    /// A classifier finding of `entity` (score 0.9) on the first `needle` in `text`.
    fn found(text: &str, needle: &str, entity: EntityType) -> Finding {
        let start = text.find(needle).expect("needle in text");
        Finding {
            start,
            end: start + needle.len(),
            entity,
            score: 0.9,
            recognizer: "classifier",
        }
    }

    /// What the span rules make of a classifier finding of `entity` on `needle` in `text`.
    fn ruled(entity: EntityType, text: &str, needle: &str) -> Option<String> {
        span_rules(text, found(text, needle, entity)).map(|f| text[f.start..f.end].to_owned())
    }

    fn date(text: &str, needle: &str) -> Option<String> {
        ruled(EntityType::Date, text, needle)
    }

    /// Words of one type (index 0 of two) with the given scores, split evenly into B and I.
    fn words(text: &str, scores: &[f32]) -> Vec<Word> {
        let mut out = Vec::new();
        let mut at = 0;
        for (w, s) in text.split_whitespace().zip(scores) {
            let start = at + text[at..].find(w).unwrap();
            at = start + w.len();
            out.push(Word {
                start,
                end: at,
                pb: vec![if out.is_empty() { *s } else { 0.0 }, 0.0],
                pi: vec![if out.is_empty() { 0.0 } else { *s }, 0.0],
            });
        }
        out
    }

    fn spans<'t>(text: &'t str, scores: &[f32], low: f32) -> Vec<&'t str> {
        decode(text, &words(text, scores), &[0.8, 0.8], &[low, 0.8])
            .into_iter()
            .map(|(a, b, ..)| &text[a..b])
            .collect()
    }

    #[test]
    fn hysteresis_grows_spans_from_a_confident_word_but_not_across_lines() {
        let text = "seen by marta k palermo today";
        let scores = [0.0, 0.1, 0.9, 0.5, 0.4, 0.2];
        // Without hysteresis only the confident word; with it, its neighbours of the same type.
        assert_eq!(spans(text, &scores, 0.8), ["marta"]);
        assert_eq!(spans(text, &scores, 0.35), ["marta k palermo"]);
        // A lone word under the threshold never starts a span, however low `extend` is.
        assert_eq!(
            spans(text, &[0.0, 0.1, 0.7, 0.5, 0.4, 0.2], 0.05),
            Vec::<&str>::new()
        );
        // Leftwards too, and never over a line break.
        let text = "pt: ann\nmarie smith";
        assert_eq!(spans(text, &[0.0, 0.5, 0.5, 0.95], 0.4), ["marie smith"]);
    }

    #[test]
    fn times_after_clock_cues_are_not_years() {
        let text = "BP 84/40 at 2000, extubated @2030 and at approx 1415; at 1999";
        assert_eq!(date(text, "2000"), None);
        assert_eq!(date(text, "2030"), None);
        assert_eq!(date(text, "1415"), None);
        // Not a time of day, or no cue: a year.
        assert_eq!(date(text, "1999").as_deref(), Some("1999"));
        assert_eq!(date("CABG in 2000", "2000").as_deref(), Some("2000"));
    }

    #[test]
    fn date_fragments_are_completed_or_dropped() {
        assert_eq!(date("seen 10/15 at noon", "/15").as_deref(), Some("10/15"));
        assert_eq!(date("BP 120/85 stable", "/85"), None);
        assert_eq!(date("MI in '92.", "92").as_deref(), Some("92"));
        assert_eq!(date("(7/22/1993)", "22").as_deref(), Some("7/22/1993"));
        assert_eq!(date("since 1992, ok", "1992").as_deref(), Some("1992"));
        assert_eq!(date("rate 10:30", "30"), None);
        assert_eq!(date("on March 3", "March 3").as_deref(), Some("March 3"));
        assert_eq!(date("Café 3/4 ü", "3/4").as_deref(), Some("3/4"));
        assert_eq!(date("RR 12-15, sats ok", "12-15"), None);
        assert_eq!(
            date("on 12-15-2019.", "12-15").as_deref(),
            Some("12-15-2019")
        );
        assert_eq!(date("AVR 8/88, MVR", "8/88").as_deref(), Some("8/88"));
        // Chunks end at brackets and commas too; a two-digit year may carry a trailing apostrophe.
        assert_eq!(date("cabg '95(lima to d1)", "95").as_deref(), Some("95"));
        assert_eq!(
            date("at 0000(10/15) will", "10/15").as_deref(),
            Some("10/15")
        );
        assert_eq!(date("CVA 74'. OBESITY", "74").as_deref(), Some("74"));
        assert_eq!(date("HR 70-90'S", "90"), None);
    }

    fn place(text: &str, needle: &str) -> Option<String> {
        ruled(EntityType::Location, text, needle)
    }

    #[test]
    fn weak_lower_case_spans_are_dropped_where_the_writer_capitalises() {
        assert!(capitalises_words("Pt in good spirits. Family at bedside"));
        assert!(!capitalises_words("PT IN GOOD SPIRITS, FAMILY AT BEDSIDE"));
        assert!(!capitalises_words(
            "pt in good spirits, family at bedside; BP ok"
        ));
        assert!(!capitalises_words("Pt ok; BP 120/80"));
        let text = "Pt in good spirits, moved to Richmond; wife from fairfax";
        let place = |needle: &str, score: f32| Finding {
            score,
            ..found(text, needle, EntityType::Location)
        };
        assert!(weak_lower_case_span(text, &place("good spirits", 0.6)));
        assert!(!weak_lower_case_span(text, &place("good spirits", 0.85)));
        assert!(!weak_lower_case_span(text, &place("Richmond", 0.6)));
        // Names need more: a confident lower-case name stays, a middling one goes.
        let name = |score: f32| Finding {
            entity: EntityType::Person,
            ..place("fairfax", score)
        };
        assert!(!weak_lower_case_span(text, &name(0.95)));
        assert!(weak_lower_case_span(text, &name(0.8)));
        let date = Finding {
            entity: EntityType::Date,
            ..name(0.8)
        };
        assert!(!weak_lower_case_span(text, &date));
    }

    #[test]
    fn short_capitals_are_abbreviations_where_the_writer_capitalises() {
        let text = "Line placed by HO, seen by ENT. Dr. LEE and son ED aware; Ho visited. \
                    Mr LI came; HOGAN called; SOB. noted";
        assert!(capitalises_words(text));
        let person = |needle: &str| found(text, needle, EntityType::Person);
        assert!(acronym_as_name(l(), text, &person("HO")));
        assert!(acronym_as_name(l(), text, &person("ENT")));
        assert!(acronym_as_name(l(), text, &person("SOB.")));
        // After a title or a relation, written normally, four letters or more, or not a name.
        assert!(!acronym_as_name(l(), text, &person("LEE")));
        assert!(!acronym_as_name(l(), text, &person("ED")));
        assert!(!acronym_as_name(l(), text, &person("LI")));
        assert!(!acronym_as_name(l(), text, &person("Ho")));
        assert!(!acronym_as_name(l(), text, &person("HOGAN")));
        assert!(!acronym_as_name(
            l(),
            text,
            &found(text, "ENT", EntityType::Organization)
        ));
    }

    #[test]
    fn spans_made_only_of_drug_names_are_dropped() {
        let drugs: HashSet<String> = ["coumadin", "amiodarone", "zoloft"]
            .into_iter()
            .map(str::to_owned)
            .collect();
        let text = "on COUMADIN and zoloft \n amiodarone; Dr Coumadin-Smith; Zoloft 50 mg";
        let span = |needle: &str, entity: EntityType| found(text, needle, entity);
        let dropped = |f: Finding| only_lexicon_words(text, &f, &drugs);
        assert!(dropped(span("COUMADIN", EntityType::Person)));
        assert!(dropped(span("zoloft \n amiodarone", EntityType::Location)));
        assert!(dropped(span("Zoloft 50", EntityType::Organization)));
        // A name beside a drug's, other types, and an empty lexicon are left alone.
        assert!(!dropped(span("Coumadin-Smith", EntityType::Person)));
        assert!(!dropped(span("COUMADIN", EntityType::Date)));
        assert!(!only_lexicon_words(
            text,
            &span("COUMADIN", EntityType::Person),
            &HashSet::new()
        ));
    }

    #[test]
    fn spans_of_plain_words_are_dropped_where_case_cannot_tell() {
        let plain = plain_words(
            &["triple", "lumen", "fair", "weather", "mercy", "tallow"],
            &[],
        );
        let upper = "TRIPLE LUMEN IN. TO MERCY HOSPITAL. ..DR TALLOW CALLED. JO FAIR";
        let cased = "Out in fair weather, Triple Lumen out, son: tallow came, back to TRIPLE LUMEN";
        let dropped = |text: &str, needle: &str, entity: EntityType| {
            let f = found(text, needle, entity);
            only_plain_words(l(), text, &f, &plain, capitalises_words(text))
        };
        assert!(!capitalises_words(upper) && capitalises_words(cased));
        // Where the text has no case to go by, and lower-case spans where it has.
        assert!(dropped(upper, "TRIPLE LUMEN", EntityType::Location));
        assert!(dropped(cased, "fair weather", EntityType::Location));
        assert!(dropped(upper, "FAIR", EntityType::Person));
        // In cased text an all-caps span does not use case either.
        let mut f = found(cased, "TRIPLE LUMEN", EntityType::Location);
        f.start = cased.rfind("TRIPLE LUMEN").expect("second mention");
        f.end = f.start + "TRIPLE LUMEN".len();
        assert!(only_plain_words(l(), cased, &f, &plain, true));
        // A facility noun, a title or relation before, a capital in cased text, a word that is
        // not plain ("JO"), other types, and an empty lexicon are left alone.
        assert!(!dropped(upper, "MERCY HOSPITAL", EntityType::Location));
        assert!(!dropped(upper, "TALLOW", EntityType::Person));
        assert!(!dropped(cased, "tallow", EntityType::Person));
        assert!(!dropped(cased, "Triple Lumen", EntityType::Organization));
        assert!(!dropped(upper, "JO FAIR", EntityType::Person));
        assert!(!dropped(upper, "TRIPLE LUMEN", EntityType::Date));
        let f = found(upper, "TRIPLE LUMEN", EntityType::Location);
        assert!(!only_plain_words(
            l(),
            upper,
            &f,
            &PlainWords::default(),
            false
        ));
    }

    #[test]
    fn places_end_before_their_facility_nouns() {
        let text = "FROM CALVERT HOSPITAL TO keeley house; St. Brigid's Hospital 2, \
                    the hospital, Mercy Hospital, Osler 5 Rehab Center";
        let cut = |needle: &str, entity: EntityType| {
            let mut found = vec![found(text, needle, entity)];
            cut_facility_nouns(l(), text, &mut found);
            found.first().map(|f| text[f.start..f.end].to_owned())
        };
        let place = |needle| cut(needle, EntityType::Location);
        assert_eq!(place("CALVERT HOSPITAL").as_deref(), Some("CALVERT"));
        assert_eq!(place("keeley house").as_deref(), Some("keeley"));
        assert_eq!(
            place("St. Brigid's Hospital 2").as_deref(),
            Some("St. Brigid's")
        );
        assert_eq!(place("Mercy Hospital").as_deref(), Some("Mercy"));
        assert_eq!(place("Osler 5 Rehab Center").as_deref(), Some("Osler 5"));
        // Nothing but generic and edge words before the noun, no noun at the end, other types.
        assert_eq!(place("the hospital").as_deref(), Some("the hospital"));
        assert_eq!(place("CALVERT").as_deref(), Some("CALVERT"));
        assert_eq!(
            cut("Mercy Hospital", EntityType::Organization).as_deref(),
            Some("Mercy Hospital")
        );
    }

    fn plain_words(words: &[&str], near_names: &[&str]) -> PlainWords {
        let set = |w: &[&str]| w.iter().map(|w| (*w).to_owned()).collect();
        PlainWords {
            words: set(words),
            near_names: set(near_names),
        }
    }

    #[test]
    fn misspelt_plain_words_count_as_plain_unless_a_name_is_one_slip_away() {
        // Invented words and notes; "fetcher" stands for a plain word one slip from a name.
        let plain = plain_words(
            &["daughter", "between", "tomorrow", "severely", "fetcher"],
            &["fetcher"],
        );
        for slip in [
            "daugther",
            "betweeen",
            "tomrrow",
            "severly",
            "dauhgter",
            "daughhter",
        ] {
            assert!(plain.contains(slip), "{slip}");
        }
        // The first and last letters stay; two slips, short words, and words near a name are not
        // recognised; without the near-name lexicon there are no misspellings at all.
        for other in ["adughter", "daughtre", "dauhgtre", "fletcher", "fetchr"] {
            assert!(!plain.contains(other), "{other}");
        }
        assert!(!plain_words(&["between"], &[]).contains("betweeen"));
        let short = plain_words(&["sister", "between"], &["nothing"]);
        assert!(!short.contains("sisster") && short.contains("beetween"));
        let note = "PT'S STEP DUAGHTER CALLED. SPOKE WITH FLETCHER";
        let span = |needle| found(note, needle, EntityType::Person);
        let step = plain_words(&["step", "daughter", "fetcher"], &["fetcher"]);
        assert!(only_plain_words(
            l(),
            note,
            &span("STEP DUAGHTER"),
            &step,
            false
        ));
        assert!(!only_plain_words(
            l(),
            note,
            &span("FLETCHER"),
            &step,
            false
        ));
    }

    #[test]
    fn generic_places_are_dropped_named_ones_kept() {
        let text =
            "from the hospital to OSH, then Nursing Home; now at St. Brigid Hospital, MICU 4";
        assert_eq!(place(text, "the hospital"), None);
        assert_eq!(place(text, "OSH"), None);
        assert_eq!(place(text, "Nursing Home"), None);
        assert_eq!(place(text, "MICU 4"), None);
        assert_eq!(
            place(text, "St. Brigid Hospital").as_deref(),
            Some("St. Brigid Hospital")
        );
        assert!(l().edge_words.iter().all(|w| l().generic_place.contains(w)));
        // Articles, prepositions and possessives at the ends are not part of the name.
        let text = "from the Harlow house to WESTBROOK 2 via Brookfield-Adventist Hosp. and";
        assert_eq!(
            place(text, "the Harlow house").as_deref(),
            Some("Harlow house")
        );
        assert_eq!(
            place(text, "to WESTBROOK 2 via").as_deref(),
            Some("WESTBROOK 2 via")
        );
        assert_eq!(
            place(text, "Brookfield-Adventist Hosp. and").as_deref(),
            Some("Brookfield-Adventist Hosp")
        );
        assert_eq!(place(text, "Hosp. and"), None);
        assert_eq!(place(text, "2").as_deref(), Some("2"));
        let text = "seen at the Clínica São José, in";
        assert_eq!(
            place(text, "the Clínica São José, in").as_deref(),
            Some("Clínica São José")
        );
        // A place's name begins with the St./Mt./Ft. the model left out.
        let text = "accepted by St. Brigid; bed @ Mt Sinai; Main St. Brigid; Fort Ste.Anne";
        assert_eq!(place(text, ". Brigid").as_deref(), Some("St. Brigid"));
        assert_eq!(place(text, "Sinai").as_deref(), Some("Mt Sinai"));
        assert_eq!(place(text, "Anne").as_deref(), Some("Ste.Anne"));
        assert_eq!(
            place("best. Brigid", ". Brigid").as_deref(),
            Some(". Brigid")
        );
        assert_eq!(
            place("by St. Brigid", "St. Brigid").as_deref(),
            Some("St. Brigid")
        );
        // Departments and services are where a patient goes, not who or where they are.
        let text = "sent to nuclear med, then radiation therapy; seen by Johns Hopkins cardiology";
        assert_eq!(place(text, "nuclear med"), None);
        assert_eq!(place(text, "radiation therapy"), None);
        assert_eq!(
            place(text, "Johns Hopkins cardiology").as_deref(),
            Some("Johns Hopkins cardiology")
        );
    }

    #[test]
    fn a_weak_name_after_a_title_is_a_name() {
        let person_spans = |text: &str, scores: &[f32]| {
            let mut w = words(text, scores);
            names_after_cues(l(), text, capitalises_words(text), &mut w, 0);
            decode(text, &w, &[0.8, 0.8], &[0.8, 0.8])
                .into_iter()
                .map(|(a, b, ..)| text[a..b].to_owned())
                .collect::<Vec<_>>()
        };
        assert_eq!(
            person_spans("seen by Dr. Varga today", &[0.0, 0.0, 0.0, 0.3, 0.0]),
            ["Varga"]
        );
        assert_eq!(
            person_spans("TELL MRS\tOKONKWO", &[0.0, 0.0, 0.2]),
            ["OKONKWO"]
        );
        // In text that capitalises words, a capitalised word after a title needs no score; a
        // common word does, and so does every word in an all-caps note.
        assert_eq!(
            person_spans("Phone call to Mrs Okonkwo today", &[0.0; 6]),
            ["Okonkwo"]
        );
        assert_eq!(
            person_spans("Drs Joseph and Lindgren", &[0.0; 4]),
            ["Joseph"]
        );
        assert!(person_spans("Update to Dr. On call", &[0.0; 5]).is_empty());
        assert!(person_spans("Changes in MS. Aspiration risk", &[0.0; 5]).is_empty());
        assert!(person_spans("Changes in Ms. BP", &[0.0; 4]).is_empty());
        assert!(person_spans("UPDATE TO MRS OKONKWO", &[0.0, 0.0, 0.0, 0.05]).is_empty());
        // Below TITLE_MIN the title does not help ("Dr. aware"), nor does a title inside a word,
        // nor a title on the line above.
        assert!(person_spans("Dr. aware", &[0.0, 0.05]).is_empty());
        assert!(person_spans("cdr. Varga", &[0.0, 0.3]).is_empty());
        assert!(person_spans("Dr.\nVarga", &[0.0, 0.3]).is_empty());
        assert_eq!(after_title(l(), "ok Mr. ", 7), Some("Mr"));
        assert_eq!(after_title(l(), "Prof x", 5), Some("Prof"));
        assert_eq!(after_title(l(), "Mr.x", 3), None);
        // Relations: a name needs RELATION_MIN and must not be a common word.
        assert_eq!(
            person_spans("dtr marisol in contact", &[0.0, 0.35, 0.0, 0.0]),
            ["marisol"]
        );
        assert_eq!(
            person_spans("Son, Al, was updated", &[0.0, 0.4, 0.0, 0.0]),
            ["Al,"]
        );
        assert!(person_spans("my brother just turned", &[0.0, 0.0, 0.6, 0.0]).is_empty());
        assert_eq!(person_spans("dtr marisol", &[0.0, 0.15]), ["marisol"]);
        assert!(person_spans("dtr marisol", &[0.0, 0.05]).is_empty());
        assert!(after_relation(l(), "GRAND DAUGHTER-", 15) && !after_relation(l(), "stepson ", 8));
    }

    #[test]
    fn words_for_a_person_are_never_names() {
        let text = "58 YEAR OLD FEMALE daughter and Grandaughter Rose Male She HIS";
        let n = text.split_whitespace().count();
        let mut w = words(text, &vec![0.95; n]);
        no_names_in_common_nouns(l(), text, &mut w, 0);
        let got: Vec<&str> = decode(text, &w, &[0.8, 0.8], &[0.8, 0.8])
            .into_iter()
            .map(|(a, b, ..)| &text[a..b])
            .collect();
        assert_eq!(got, ["58 YEAR OLD", "and", "Rose"]);
    }

    #[test]
    fn dotted_abbreviations_are_never_names() {
        // Every word looks like a confident name (type 0 = PERSON here).
        let person_spans = |text: &str| {
            let n = text.split_whitespace().count();
            let mut w = words(text, &vec![0.95; n]);
            no_names_in_abbreviations(text, &mut w, 0);
            decode(text, &w, &[0.8, 0.8], &[0.8, 0.8])
                .into_iter()
                .map(|(a, b, ..)| text[a..b].to_owned())
                .collect::<Vec<_>>()
        };
        assert_eq!(person_spans("58 y.o. Woman"), ["58", "Woman"]);
        assert_eq!(person_spans("Given I.V. Zofran"), ["Given", "Zofran"]);
        // Only whole abbreviations: not inside other initials or words.
        assert_eq!(person_spans("J.A.M. Smith"), ["J.A.M. Smith"]);
        assert_eq!(person_spans("y.o.f Ann"), ["y.o.f Ann"]);
        // The rule removes the PERSON score only; other types keep theirs.
        let text = "P.O. Box 12";
        let mut w = words(text, &[0.9, 0.9, 0.9]);
        for x in &mut w {
            x.pb.swap(0, 1);
            x.pi.swap(0, 1);
        }
        no_names_in_abbreviations(text, &mut w, 0);
        assert_eq!(decode(text, &w, &[0.8, 0.8], &[0.8, 0.8]).len(), 1);
    }

    #[test]
    fn lone_initials_are_dropped_unless_next_to_a_name() {
        let text = "G.U.: ok. D. Wren here. r. stable. Dan A. Kowal";
        let person = |needle: &str| found(text, needle, EntityType::Person);
        let mut spans: Vec<Finding> = ["G.", "D.", "Wren", "r.", "A.", "Dan", "Kowal"]
            .into_iter()
            .map(person)
            .collect();
        drop_lone_initials(text, &mut spans);
        let kept: Vec<&str> = spans.iter().map(|f| &text[f.start..f.end]).collect();
        assert_eq!(kept, ["D.", "Wren", "A.", "Dan", "Kowal"]);

        // Two lone letters do not vouch for each other; a chain of initials before a name does;
        // places follow the same rule, and a name does not vouch for a place letter.
        let text =
            "G.U.: ok. B.S. clear. Seen by J. R. Tolkien. S: at St A. now. O: to L. Hargrove";
        let (person, place) = (EntityType::Person, EntityType::Location);
        let spans = [
            ("G.", &person),
            ("U.", &person),
            ("B.", &person),
            ("S.", &person),
            ("J.", &person),
            ("R.", &person),
            ("Tolkien", &person),
            ("St", &place),
            ("A.", &place),
            ("O", &place),
            ("L.", &place),
            ("Hargrove", &person),
        ];
        let kept = kept_after(drop_lone_initials, text, &spans);
        assert_eq!(kept, ["J.", "R.", "Tolkien", "St", "A.", "Hargrove"]);
    }

    /// The spans (first occurrence of each needle, with its type) that `rule` keeps, as text.
    fn kept_after<'t>(
        rule: fn(&str, &mut Vec<Finding>),
        text: &'t str,
        spans: &[(&str, &EntityType)],
    ) -> Vec<&'t str> {
        let mut found: Vec<Finding> = spans
            .iter()
            .map(|(needle, entity)| found(text, needle, (*entity).clone()))
            .collect();
        rule(text, &mut found);
        found.iter().map(|f| &text[f.start..f.end]).collect()
    }

    #[test]
    fn nationalities_languages_and_faiths_are_no_names_or_places() {
        let text = "Pt speaks Cantonese, yelling in IRANIAN; catholic priest in. Mr. French and \
                    Nadia Welsh came from Cyprus (Greek) and Lake Tahoe.";
        let (person, place) = (EntityType::Person, EntityType::Location);
        let spans = [
            ("Cantonese", &person),
            ("IRANIAN", &place),
            ("catholic", &person),
            ("French", &person),
            ("Nadia Welsh", &person),
            ("Cyprus", &place),
            ("Greek", &place),
            ("Lake Tahoe", &place),
        ];
        let kept = kept_after(
            |t, s| drop_group_words(l(), t, s, &demonyms()),
            text,
            &spans,
        );
        // A title before it, another word in the span, a place just before it keep it.
        assert_eq!(
            kept,
            ["French", "Nadia Welsh", "Cyprus", "Greek", "Lake Tahoe"]
        );
    }

    #[test]
    fn every_rule_is_documented_and_ids_are_unique() {
        let doc =
            std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/detection.md"))
                .unwrap();
        let mut ids = HashSet::new();
        for rule in RULES {
            assert!(ids.insert(rule.id), "{} twice", rule.id);
            assert!(
                doc.contains(&format!("| `{}` |", rule.id)),
                "{} not in docs/detection.md",
                rule.id
            );
        }
        // Word rules run before spans exist: all of them come first in the table.
        let first_span = RULES.iter().position(|r| matches!(r.step, Step::Spans(_)));
        assert!(
            RULES
                .iter()
                .skip(first_span.unwrap_or(RULES.len()))
                .all(|r| matches!(r.step, Step::Spans(_)))
        );
        assert!(RULES.len() < 64, "RuleSet keeps one bit per rule");
    }

    #[derive(Deserialize)]
    struct EditCases {
        case: Vec<EditCase>,
    }

    #[derive(Deserialize)]
    struct EditCase {
        word: String,
        distinct: usize,
        contains: Vec<String>,
        excludes: Vec<String>,
    }

    #[test]
    fn typing_slips_match_the_table_training_shares() {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/fixtures/classifier/interior_edits.toml"
        );
        let cases: EditCases = toml::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
        for case in cases.case {
            let edits: HashSet<String> = interior_edits(&case.word).into_iter().collect();
            assert_eq!(edits.len(), case.distinct, "{}", case.word);
            assert!(
                case.contains.iter().all(|w| edits.contains(w)),
                "{}",
                case.word
            );
            assert!(
                !case.excludes.iter().any(|w| edits.contains(w)),
                "{}",
                case.word
            );
        }
    }

    #[test]
    fn spans_without_letters_or_digits_are_dropped() {
        let f = Finding {
            start: 1,
            end: 2,
            entity: EntityType::Person,
            score: 0.9,
            recognizer: "classifier",
        };
        assert!(span_rules("a/b", f).is_none());
    }

    #[test]
    fn separators_at_the_ends_of_a_span_are_trimmed() {
        let text = "at 14 Elm Hollow Rd, Dunmore, on Friday; Ann: yes";
        assert_eq!(
            ruled(EntityType::Address, text, "14 Elm Hollow Rd, Dunmore, ").as_deref(),
            Some("14 Elm Hollow Rd, Dunmore")
        );
        assert_eq!(
            ruled(EntityType::Person, text, "; Ann:").as_deref(),
            Some("Ann")
        );
        assert_eq!(
            ruled(EntityType::Location, text, "Dunmore,").as_deref(),
            Some("Dunmore")
        );
        // Inner separators and a final full stop ("Rd.") stay.
        assert_eq!(
            ruled(EntityType::Address, "14 Elm Rd., Dunmore", "14 Elm Rd.").as_deref(),
            Some("14 Elm Rd.")
        );
    }
}
