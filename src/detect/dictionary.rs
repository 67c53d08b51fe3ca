//! Tenant dictionaries: deny lists (terms reported as a given entity type, e.g. patient
//! names or project code names) and the allow list (terms never reported).
//!
//! Invariants: terms are normalized like the text before they are compiled, so a deny term
//! matches its fullwidth, homoglyph or zero-width-split spelling too; deny matches are whole
//! words; case-insensitive lists fold ASCII case in the automaton and add lower, upper and
//! title-case spellings of non-ASCII terms; the allow list suppresses a finding only when the
//! finding's whole span is an allow term.

use std::collections::HashSet;

use aho_corasick::{AhoCorasick, AhoCorasickKind, MatchKind};

use crate::detect::around::{word_after, word_before};
use crate::detect::normalize::normalize;
use crate::detect::recognizer::{names, scores};
use crate::detect::{DenyList, DetectError, EntityType, Finding, Scan};

/// Compiled deny and allow lists.
#[derive(Debug, Clone, Default)]
pub(crate) struct Dictionary {
    insensitive: Option<(AhoCorasick, Vec<EntityType>)>,
    sensitive: Option<(AhoCorasick, Vec<EntityType>)>,
    allow: HashSet<String>,
}

fn title_case(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut at_start = true;
    for c in s.chars() {
        if at_start {
            out.extend(c.to_uppercase());
        } else {
            out.extend(c.to_lowercase());
        }
        at_start = !c.is_alphanumeric();
    }
    out
}

fn build(what: &'static str, patterns: &[String], ci: bool) -> Result<AhoCorasick, DetectError> {
    AhoCorasick::builder()
        .ascii_case_insensitive(ci)
        .match_kind(MatchKind::Standard)
        .kind(Some(AhoCorasickKind::DFA))
        .build(patterns)
        .or_else(|_| {
            // Very large dictionaries exceed the DFA size limit; the NFA is slower but fine.
            AhoCorasick::builder()
                .ascii_case_insensitive(ci)
                .match_kind(MatchKind::Standard)
                .build(patterns)
        })
        .map_err(|e| DetectError::Automaton {
            what,
            reason: e.to_string(),
        })
}

impl Dictionary {
    pub(crate) fn new(deny: &[DenyList], allow: &[String]) -> Result<Self, DetectError> {
        let mut ci: (Vec<String>, Vec<EntityType>) = (Vec::new(), Vec::new());
        let mut cs: (Vec<String>, Vec<EntityType>) = (Vec::new(), Vec::new());
        for (list_idx, list) in deny.iter().enumerate() {
            for (term_idx, term) in list.terms.iter().enumerate() {
                let norm = normalize(term).text.trim().to_owned();
                if norm.is_empty() {
                    return Err(DetectError::EmptyDenyTerm {
                        list: list_idx,
                        term: term_idx,
                    });
                }
                let target = if list.case_sensitive {
                    &mut cs
                } else {
                    &mut ci
                };
                if !list.case_sensitive && !norm.is_ascii() {
                    for v in [norm.to_lowercase(), norm.to_uppercase(), title_case(&norm)] {
                        target.0.push(v);
                        target.1.push(list.entity.clone());
                    }
                }
                target.0.push(norm);
                target.1.push(list.entity.clone());
            }
        }
        let insensitive = if ci.0.is_empty() {
            None
        } else {
            Some((build("deny-list automaton", &ci.0, true)?, ci.1))
        };
        let sensitive = if cs.0.is_empty() {
            None
        } else {
            Some((
                build("case-sensitive deny-list automaton", &cs.0, false)?,
                cs.1,
            ))
        };
        let mut allow_set = HashSet::new();
        for (index, term) in allow.iter().enumerate() {
            let norm = normalize(term).text.trim().to_lowercase();
            if norm.is_empty() {
                return Err(DetectError::EmptyAllowTerm { index });
            }
            allow_set.insert(norm);
        }
        Ok(Self {
            insensitive,
            sensitive,
            allow: allow_set,
        })
    }

    /// Reports whole-word deny-list matches.
    pub(crate) fn scan(&self, s: &mut Scan<'_>) {
        for (ac, entities) in [&self.insensitive, &self.sensitive].into_iter().flatten() {
            for m in ac.find_overlapping_iter(s.text) {
                if word_before(s.text, m.start()) || word_after(s.text, m.end()) {
                    continue;
                }
                if let Some(entity) = entities.get(m.pattern().as_usize()) {
                    s.emit(
                        m.start()..m.end(),
                        entity.clone(),
                        scores::DENY,
                        names::DENY,
                    );
                }
            }
        }
    }

    /// Drops findings whose span (in `text`'s coordinates) is an allow term.
    pub(crate) fn retain_not_allowed(&self, text: &str, found: &mut Vec<Finding>) {
        if self.allow.is_empty() {
            return;
        }
        found.retain(|f| {
            text.get(f.start..f.end)
                .is_none_or(|span| !self.allow.contains(&span.trim().to_lowercase()))
        });
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use crate::detect::{DenyList, EntityType, PatternConfig, PatternDetector};

    fn detector() -> PatternDetector {
        PatternDetector::new(&PatternConfig {
            deny: vec![
                DenyList {
                    entity: EntityType::Person,
                    terms: vec!["Zorblat Quenn".into(), "Renée Okafor".into()],
                    case_sensitive: false,
                },
                DenyList {
                    entity: "CODENAME".parse().unwrap(),
                    terms: vec!["BLUEJAY".into()],
                    case_sensitive: true,
                },
            ],
            allow: vec!["S3".into(), "555-0100".into()],
            ..PatternConfig::default()
        })
        .unwrap()
    }

    fn found(text: &str) -> Vec<(String, String)> {
        detector()
            .detect(text)
            .into_iter()
            .map(|f| (f.entity.to_string(), text[f.start..f.end].to_owned()))
            .collect()
    }

    #[test]
    fn deny_whole_words_any_case() {
        assert_eq!(
            found("pt ZORBLAT QUENN seen"),
            [("PERSON".into(), "ZORBLAT QUENN".into())]
        );
        assert_eq!(
            found("RENÉE OKAFOR"),
            [("PERSON".into(), "RENÉE OKAFOR".into())]
        );
        assert!(found("zorblat quenning").is_empty());
        assert_eq!(
            found("op BLUEJAY go"),
            [("CODENAME".into(), "BLUEJAY".into())]
        );
        assert!(found("op bluejay go").is_empty());
    }

    #[test]
    fn allow_list_suppresses_exact_spans() {
        assert!(found("bucket S3 ok").is_empty());
    }
}
