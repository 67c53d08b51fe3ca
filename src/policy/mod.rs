//! Policies: compiled rules that turn findings into one action per request.
//!
//! Precedence is fixed and independent of rule order: `block > local > redact > allow`. A
//! detector error and an unscannable part are facts like findings, decided by the policy's
//! `on_detector_error` and `on_unscannable` actions, so nothing unscanned is ever allowed by
//! omission.

mod file;
mod lint;
mod sources;

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

pub use file::compile;
pub use lint::{Class, Lint, PROTECTED, globs_intersect, lint};
pub use sources::Sources;

use crate::config::TomlError;
use crate::detect::{EntityType, Finding, PatternConfig};

/// What happens to a request. Ordered by restrictiveness: the maximum wins.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    /// Forward to the cloud unchanged.
    Allow,
    /// Replace detected values, forward, restore them in the answer.
    Redact,
    /// Answer with the in-process model; nothing leaves the machine.
    Local,
    /// Refuse with an error naming the rule.
    Block,
}

impl Action {
    /// Lower-case name, as in policy files and the `x-veil-action` header.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Allow => "allow",
            Self::Redact => "redact",
            Self::Local => "local",
            Self::Block => "block",
        }
    }
}

/// How a detected value is replaced before it leaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Operator {
    /// A typed, numbered placeholder such as `<EMAIL_1>`; restored in the answer.
    Placeholder,
    /// Every character but separators replaced by `*`; not restorable.
    Mask,
    /// Digits masked except the last four (cards, accounts); not restorable.
    Last4,
    /// A keyed-hash token such as `<EMAIL_3f9a1c2b>`, stable for a value; restored in the answer.
    Hash,
}

/// A `*` wildcard pattern over tenant or model names.
#[derive(Debug, Clone)]
pub struct Wildcard(String);

impl Wildcard {
    /// A pattern; `*` matches any run of characters.
    pub fn new(pattern: &str) -> Self {
        Self(pattern.to_owned())
    }

    /// The pattern as written.
    pub fn pattern(&self) -> &str {
        &self.0
    }

    /// Whether `name` matches the pattern.
    pub fn matches(&self, name: &str) -> bool {
        let mut parts = self.0.split('*');
        let first = parts.next().unwrap_or_default();
        let Some(mut rest) = name.strip_prefix(first) else {
            return false;
        };
        let parts: Vec<&str> = parts.collect();
        let Some((last, middle)) = parts.split_last() else {
            return rest.is_empty();
        };
        for part in middle {
            match rest.find(part) {
                Some(i) => rest = rest.get(i + part.len()..).unwrap_or_default(),
                None => return false,
            }
        }
        rest.ends_with(last)
    }
}

/// One compiled rule.
#[derive(Debug, Clone)]
pub struct Rule {
    /// Unique id within the policy, recorded in the audit log and named in block errors.
    pub id: Arc<str>,
    /// Why the rule exists.
    pub description: String,
    /// Entity types the rule counts.
    pub entities: Vec<EntityType>,
    /// `"*"` in `entities`: any entity type counts.
    pub any_entity: bool,
    /// Action when the rule matches.
    pub action: Action,
    /// Findings below this score are not counted.
    pub min_score: f32,
    /// The rule matches when at least this many findings count (0, as written, counts as 1).
    pub min_count: usize,
    /// Tenants the rule applies to; empty means all.
    pub tenants: Vec<Wildcard>,
    /// Requested models the rule applies to; empty means all.
    pub models: Vec<Wildcard>,
    /// Line and column of the rule's `id` in its file.
    pub at: (usize, usize),
}

impl Rule {
    fn counts(&self, f: &Finding) -> bool {
        f.score >= self.min_score && (self.any_entity || self.entities.contains(&f.entity))
    }

    /// A rule without entities matches on tenant and model alone.
    fn needs_findings(&self) -> bool {
        self.any_entity || !self.entities.is_empty()
    }
}

/// One compiled policy file.
#[derive(Debug, Clone)]
pub struct Policy {
    /// File stem, e.g. `hipaa`.
    pub name: Arc<str>,
    /// The file it was compiled from.
    pub file: PathBuf,
    /// Free text from the file.
    pub description: String,
    /// Hex SHA-256 of the file's bytes; stamped on every audit record.
    pub digest: String,
    /// Action when no rule matches.
    pub default_action: Action,
    /// Line and column of `[defaults] action` in the file.
    pub default_at: (usize, usize),
    /// Action when detection fails or times out.
    pub on_detector_error: Action,
    /// Action when a part cannot be scanned (image, audio, file, opaque blob).
    pub on_unscannable: Action,
    /// Operator for entities without their own.
    pub default_operator: Operator,
    /// Operator per entity type.
    pub operators: BTreeMap<EntityType, Operator>,
    /// The rules, in file order (order does not affect the outcome).
    pub rules: Vec<Rule>,
    /// Dictionaries for the pattern detector.
    pub patterns: PatternConfig,
    /// Classifier score thresholds per entity type (override the model's defaults).
    pub classifier_thresholds: BTreeMap<EntityType, f32>,
}

/// Why an action was chosen: a rule id and a reason without any value.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RuleHit {
    /// Rule id, or `veil.*` for built-in reasons.
    pub rule: Arc<str>,
    /// The rule's action.
    pub action: Action,
    /// e.g. `CREDIT_CARD x1 (score >= 0.80)`.
    pub reason: String,
}

/// What the request looked like to the policy.
#[derive(Debug, Clone, Copy)]
pub struct Facts<'a> {
    /// Everything detected.
    pub findings: &'a [Finding],
    /// The caller's tenant.
    pub tenant: &'a str,
    /// The requested model.
    pub model: &'a str,
    /// Detection failed or timed out.
    pub detector_failed: bool,
    /// Parts that could not be scanned.
    pub unscannable: usize,
}

/// One rule (or built-in check) as evaluated for one request.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RuleTrace {
    /// Rule id, or `veil.*` for the built-in checks.
    pub rule: Arc<str>,
    /// The action it asks for when it matches.
    pub action: Action,
    /// Whether it matched.
    pub matched: bool,
    /// Why it matched or did not (types, counts, scopes; never values).
    pub reason: String,
}

/// The policy's verdict on one request, with the whole trace.
#[derive(Debug, Clone)]
pub struct Verdict {
    /// The most restrictive action of all hits (or the default).
    pub action: Action,
    /// Every rule that matched, sorted by rule id.
    pub hits: Vec<RuleHit>,
    /// The built-in checks, then every rule in file order, matched or not.
    pub rules: Vec<RuleTrace>,
    /// Why the action won.
    pub why: String,
    /// For each finding, whether it must be replaced (only when `action` is `Redact`).
    pub redact: Vec<bool>,
}

impl Verdict {
    /// The hit that decided the action (the first in id order with the final action).
    pub fn deciding_rule(&self) -> Option<&RuleHit> {
        self.hits.iter().find(|h| h.action == self.action)
    }
}

impl Policy {
    /// The operator for an entity type.
    pub fn operator(&self, entity: &EntityType) -> Operator {
        self.operators
            .get(entity)
            .copied()
            .unwrap_or(self.default_operator)
    }

    /// Whether a rule that does more than allow counts `f` — by entity type and score alone;
    /// tenants, models and `min_count` are not checked. What `veil scan --acted-on` keeps: the
    /// findings this policy would redact, keep local or block for.
    pub fn acts_on(&self, f: &Finding) -> bool {
        self.rules
            .iter()
            .any(|r| r.action != Action::Allow && r.counts(f))
    }

    /// Decides one request: evaluates the built-in checks and every rule, and takes the most
    /// restrictive action among those that match (the default when none does).
    pub fn decide(&self, facts: &Facts<'_>) -> Verdict {
        let mut rules = Vec::with_capacity(self.rules.len() + 2);
        let mut redact = vec![false; facts.findings.len()];
        rules.push(RuleTrace {
            rule: Arc::from("veil.detector_error"),
            action: self.on_detector_error,
            matched: facts.detector_failed,
            reason: if facts.detector_failed {
                "detection failed or timed out".to_owned()
            } else {
                "detection ran".to_owned()
            },
        });
        rules.push(RuleTrace {
            rule: Arc::from("veil.unscannable"),
            action: self.on_unscannable,
            matched: facts.unscannable > 0,
            reason: if facts.unscannable > 0 {
                format!("{} part(s) cannot be scanned", facts.unscannable)
            } else {
                "every part was scanned".to_owned()
            },
        });
        for rule in &self.rules {
            let (matched, reason) = rule.evaluate(facts, &mut redact);
            rules.push(RuleTrace {
                rule: rule.id.clone(),
                action: rule.action,
                matched,
                reason,
            });
        }
        let mut hits: Vec<RuleHit> = rules
            .iter()
            .filter(|t| t.matched)
            .map(|t| RuleHit {
                rule: t.rule.clone(),
                action: t.action,
                reason: t.reason.clone(),
            })
            .collect();
        hits.sort_by(|a, b| a.rule.cmp(&b.rule));
        let action = hits
            .iter()
            .map(|h| h.action)
            .max()
            .unwrap_or(self.default_action);
        if action != Action::Redact {
            redact.iter_mut().for_each(|r| *r = false);
        }
        let why = if hits.is_empty() {
            format!(
                "no rule matched, so the default applies ([defaults] action = \"{}\")",
                self.default_action.as_str()
            )
        } else {
            let deciding: Vec<&str> = hits
                .iter()
                .filter(|h| h.action == action)
                .map(|h| &*h.rule)
                .collect();
            format!(
                "the most restrictive action of {} matching rule(s) wins (block > local > redact > allow): {}",
                hits.len(),
                deciding.join(", ")
            )
        };
        Verdict {
            action,
            hits,
            rules,
            why,
            redact,
        }
    }
}

impl Rule {
    /// Whether the rule matches, and why (or why not); marks the findings a redact rule covers.
    fn evaluate(&self, facts: &Facts<'_>, redact: &mut [bool]) -> (bool, String) {
        if !self.tenants.is_empty() && !self.tenants.iter().any(|w| w.matches(facts.tenant)) {
            return (
                false,
                format!("tenant {:?} is not in tenants", facts.tenant),
            );
        }
        if !self.models.is_empty() && !self.models.iter().any(|w| w.matches(facts.model)) {
            return (false, format!("model {:?} is not in models", facts.model));
        }
        if !self.needs_findings() {
            return (true, "tenant/model match".to_owned());
        }
        let counted: Vec<usize> = facts
            .findings
            .iter()
            .enumerate()
            .filter(|(_, f)| self.counts(f))
            .map(|(i, _)| i)
            .collect();
        if counted.len() < self.min_count.max(1) {
            return (false, self.miss(facts.findings, counted.len()));
        }
        if self.action == Action::Redact {
            for &i in &counted {
                if let Some(r) = redact.get_mut(i) {
                    *r = true;
                }
            }
        }
        (true, reason(self, facts.findings, &counted))
    }

    /// Why a rule with entities did not match.
    fn miss(&self, findings: &[Finding], counted: usize) -> String {
        let of_type: Vec<&Finding> = findings
            .iter()
            .filter(|f| self.any_entity || self.entities.contains(&f.entity))
            .collect();
        if of_type.is_empty() {
            let types: Vec<&str> = self.entities.iter().map(EntityType::as_str).collect();
            return format!("no finding of {}", types.join(", "));
        }
        if counted == 0 {
            let best = of_type.iter().map(|f| f.score).fold(0.0_f32, f32::max);
            return format!(
                "{} finding(s) of its types, all below min_score {:.2} (best {best:.2})",
                of_type.len(),
                self.min_score
            );
        }
        format!(
            "{counted} finding(s) with score >= {:.2}; needs min_count {}",
            self.min_score, self.min_count
        )
    }
}

fn reason(rule: &Rule, findings: &[Finding], counted: &[usize]) -> String {
    let mut by_type: BTreeMap<&str, usize> = BTreeMap::new();
    for f in counted.iter().filter_map(|&i| findings.get(i)) {
        *by_type.entry(f.entity.as_str()).or_default() += 1;
    }
    let types: Vec<String> = by_type.iter().map(|(t, n)| format!("{t} x{n}")).collect();
    format!("{} (score >= {:.2})", types.join(", "), rule.min_score)
}

/// Why the policy directory could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    /// A file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file or directory.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A file is invalid.
    #[error(transparent)]
    Invalid(#[from] TomlError),
    /// The directory holds no policy.
    #[error("{0}: no *.toml policy files found; add at least default.toml")]
    Empty(PathBuf),
    /// A file is not UTF-8 text (a binary file, or one cut inside a character).
    #[error("{0}: not UTF-8 text; a policy file is TOML")]
    NotText(PathBuf),
}

/// Loads and compiles every `*.toml` in a directory; any invalid file fails the whole load.
pub fn load_dir(dir: &Path) -> Result<HashMap<Arc<str>, Arc<Policy>>, PolicyError> {
    Sources::read(dir)?.compile()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Defaults every test policy states (at the end, so that line numbers above stay put).
    const DEFAULTS: &str =
        "\n[defaults]\naction = 'allow'\non_detector_error = 'block'\non_unscannable = 'local'\n";

    fn policy(text: &str) -> Policy {
        compile(
            Path::new("policies/test.toml"),
            &format!("{text}{DEFAULTS}"),
        )
        .unwrap_or_else(|e| panic!("{e}"))
    }

    fn finding(entity: EntityType, score: f32) -> Finding {
        Finding {
            start: 0,
            end: 1,
            entity,
            score,
            recognizer: "test",
        }
    }

    const P: &str = r#"
[[rules]]
id = "card"
entities = ["CREDIT_CARD"]
action = "block"

[[rules]]
id = "email"
entities = ["EMAIL"]
action = "redact"

[[rules]]
id = "ssn"
entities = ["SSN"]
action = "local"
min_score = 0.8
"#;

    #[test]
    fn most_restrictive_wins_regardless_of_order() {
        let findings = [
            finding(EntityType::Email, 0.9),
            finding(EntityType::CreditCard, 0.9),
        ];
        let facts = Facts {
            findings: &findings,
            tenant: "t",
            model: "m",
            detector_failed: false,
            unscannable: 0,
        };
        let d = policy(P).decide(&facts);
        assert_eq!(d.action, Action::Block);
        assert_eq!(d.deciding_rule().map(|h| &*h.rule), Some("card"));
        assert_eq!(d.redact, vec![false, false]);
        // Same rules in reverse order: same outcome.
        let mut parts: Vec<&str> = P.split("\n\n").collect();
        parts.reverse();
        let reversed = parts.join("\n\n");
        assert_eq!(policy(&reversed).decide(&facts).action, Action::Block);
    }

    #[test]
    fn redact_marks_only_counted_findings() {
        let findings = [
            finding(EntityType::Email, 0.9),
            finding(EntityType::Ssn, 0.5),
        ];
        let d = policy(P).decide(&Facts {
            findings: &findings,
            tenant: "t",
            model: "m",
            detector_failed: false,
            unscannable: 0,
        });
        assert_eq!(d.action, Action::Redact);
        assert_eq!(d.redact, vec![true, false]);
    }

    #[test]
    fn acts_on_counts_rules_that_do_more_than_allow() {
        let p = policy(&format!(
            "{P}\n[[rules]]\nid = \"dates\"\nentities = [\"DATE\"]\naction = \"allow\"\n"
        ));
        assert!(p.acts_on(&finding(EntityType::Email, 0.9)));
        assert!(p.acts_on(&finding(EntityType::Ssn, 0.8)));
        // Below the rule's min_score, only allowed, or no rule at all.
        assert!(!p.acts_on(&finding(EntityType::Ssn, 0.5)));
        assert!(!p.acts_on(&finding(EntityType::Date, 0.9)));
        assert!(!p.acts_on(&finding(EntityType::Person, 0.9)));
    }

    #[test]
    fn detector_error_and_unscannable_fail_closed() {
        let p = policy(P);
        let base = Facts {
            findings: &[],
            tenant: "t",
            model: "m",
            detector_failed: true,
            unscannable: 0,
        };
        assert_eq!(p.decide(&base).action, Action::Block);
        let d = p.decide(&Facts {
            detector_failed: false,
            unscannable: 1,
            ..base
        });
        assert_eq!(d.action, Action::Local);
    }

    #[test]
    fn tenant_and_model_scope_rules() {
        let p = policy(
            "[[rules]]\nid='x'\nentities=[]\nmodels=['gpt-4*']\ntenants=['acme']\naction='local'\n",
        );
        let facts = |tenant, model| Facts {
            findings: &[],
            tenant,
            model,
            detector_failed: false,
            unscannable: 0,
        };
        assert_eq!(p.decide(&facts("acme", "gpt-4o")).action, Action::Local);
        assert_eq!(p.decide(&facts("acme", "gpt-3.5")).action, Action::Allow);
        assert_eq!(p.decide(&facts("other", "gpt-4o")).action, Action::Allow);
    }

    #[test]
    fn min_count_is_respected() {
        let p = policy("[[rules]]\nid='bulk'\nentities=['EMAIL']\nmin_count=3\naction='block'\n");
        let two = [
            finding(EntityType::Email, 0.9),
            finding(EntityType::Email, 0.9),
        ];
        let facts = Facts {
            findings: &two,
            tenant: "t",
            model: "m",
            detector_failed: false,
            unscannable: 0,
        };
        assert_eq!(p.decide(&facts).action, Action::Allow);
    }

    #[test]
    fn errors_name_file_key_and_position() {
        let cases = [
            (
                "[[rules]]\nid='a'\nentities=['SNN']\naction='block'\n",
                "policies/test.toml:3:11: rules[0].entities[0]: unknown entity type",
            ),
            (
                "[[rules]]\nid='a'\nentities=['SSN']\naction='alow'\n",
                "policies/test.toml:4:8: rules[0].action: unknown variant `alow`",
            ),
            (
                "[[rules]]\nid='a'\naction='block'\n[[rules]]\nid='a'\naction='block'\n",
                "policies/test.toml:5:4: rules[1].id: duplicate rule id",
            ),
            (
                "[[rules]]\nid='a'\naction='block'\nmin_scor=1\n",
                "policies/test.toml:4:1: rules[0].min_scor: unknown field `min_scor`, expected one of",
            ),
            (
                "[[rules]]\nid='a'\naction='block'\nmin_score=1.5\n",
                "policies/test.toml:4:11: rules[0].min_score: must be between",
            ),
        ];
        for (text, want) in cases {
            let got = compile(
                Path::new("policies/test.toml"),
                &format!("{text}{DEFAULTS}"),
            )
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
            assert!(got.starts_with(want), "want {want:?}\n got {got:?}");
        }
    }

    /// Every case of `fixtures/policy/invalid.toml` is refused with exactly its error.
    #[test]
    fn invalid_policies_get_their_exact_error() {
        #[derive(Deserialize)]
        struct Table {
            case: Vec<Case>,
        }
        #[derive(Deserialize)]
        struct Case {
            name: String,
            text: String,
            error: String,
        }
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/policy/invalid.toml");
        let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{e}"));
        let table: Table = toml::from_str(&text).unwrap_or_else(|e| panic!("{e}"));
        let mut wrong = Vec::new();
        for case in &table.case {
            let got = match compile(Path::new("policies/p.toml"), &case.text) {
                Ok(_) => "(accepted)".to_owned(),
                Err(e) => e.to_string(),
            };
            if got != case.error {
                wrong.push(format!(
                    "{}:\n  want {:?}\n  got  {:?}",
                    case.name, case.error, got
                ));
            }
        }
        assert!(table.case.len() >= 15);
        assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    }

    #[test]
    fn wildcard_matching() {
        for (p, n, m) in [
            ("*", "anything", true),
            ("gpt-4*", "gpt-4o", true),
            ("gpt-4*", "gpt-3", false),
            ("*mini", "gpt-4o-mini", true),
            ("a*b*c", "axxbyyc", true),
            ("a*b*c", "axxc", false),
            ("exact", "exact", true),
            ("exact", "exactly", false),
        ] {
            assert_eq!(Wildcard::new(p).matches(n), m, "{p} vs {n}");
        }
    }
}
