//! Static checks of compiled policies: what a reviewer should look at before a policy ships.
//!
//! Lints are warnings, not errors: the policy is valid and would be enforced as written. Each one
//! names the file and line:column of what it is about and says what to do. They read only the
//! policies and `veil.toml` — no detector runs — so a policy repository's CI can run them without
//! the classifier. Which entity types are PHI or PCI data is one ordered table
//! ([`PROTECTED`]), not code.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::PathBuf;

use super::{Action, Policy, Rule, Wildcard};
use crate::config::Config;
use crate::detect::EntityType;

/// Entity types that are protected data: HIPAA Safe Harbor identifiers (45 CFR 164.514(b)(2))
/// veil detects, and PCI DSS account data. Provider identifiers (NPI, DEA), organizations and
/// bank routing numbers identify no patient and are not listed.
pub const PROTECTED: &[(&str, Class)] = &[
    ("CREDIT_CARD", Class::Pci),
    ("PERSON", Class::Phi),
    ("ADDRESS", Class::Phi),
    ("LOCATION", Class::Phi),
    ("ZIP", Class::Phi),
    ("DATE", Class::Phi),
    ("AGE", Class::Phi),
    ("PHONE", Class::Phi),
    ("EMAIL", Class::Phi),
    ("SSN", Class::Phi),
    ("MRN", Class::Phi),
    ("HEALTH_PLAN_ID", Class::Phi),
    ("ACCOUNT", Class::Phi),
    ("IBAN", Class::Phi),
    ("DRIVERS_LICENSE", Class::Phi),
    ("ID", Class::Phi),
    ("VIN", Class::Phi),
    ("DEVICE_ID", Class::Phi),
    ("URL", Class::Phi),
    ("IP_ADDRESS", Class::Phi),
];

/// Entity types only the classifier (or a deny list) reports.
const CLASSIFIER_TYPES: &[&str] = &["PERSON", "LOCATION", "ADDRESS", "ORGANIZATION", "YEAR"];

/// What kind of protected data an entity type is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Class {
    /// Protected health information (a Safe Harbor identifier).
    Phi,
    /// Cardholder data.
    Pci,
}

impl Class {
    fn as_str(self) -> &'static str {
        match self {
            Self::Phi => "PHI",
            Self::Pci => "PCI",
        }
    }
}

/// One warning.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lint {
    /// Short id, e.g. `redundant`.
    pub code: &'static str,
    /// The file it is about.
    pub file: PathBuf,
    /// 1-based line and column, when the item has a place in the file.
    pub at: Option<(usize, usize)>,
    /// What is wrong and what to do.
    pub message: String,
}

impl fmt::Display for Lint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if let Some((line, column)) = self.at {
            write!(f, ":{line}:{column}")?;
        }
        write!(f, ": warning[{}]: {}", self.code, self.message)
    }
}

/// Lints every policy; with `config`, also what depends on keys, upstreams and the classifier.
/// `config_file` names `veil.toml` in warnings about it.
pub fn lint(policies: &[&Policy], config: Option<(&Config, PathBuf)>) -> Vec<Lint> {
    let mut out = Vec::new();
    for p in policies {
        unprotected(p, &mut out);
        for (i, rule) in p.rules.iter().enumerate() {
            if rule.min_count == 0 {
                out.push(at_rule(
                    p,
                    rule,
                    "min-count-zero",
                    format!(
                        "rule {:?}: min_count = 0 is read as 1 (a rule with entities needs at least one finding); write 1 or drop the key",
                        rule.id
                    ),
                ));
            }
            redundant(p, i, rule, &mut out);
        }
    }
    if let Some((config, file)) = config {
        for p in policies {
            never_matches(p, config, &mut out);
            undetectable(p, config, &mut out);
        }
        no_baa(policies, config, &file, &mut out);
    }
    out
}

fn at_rule(p: &Policy, rule: &Rule, code: &'static str, message: String) -> Lint {
    Lint {
        code,
        file: p.file.clone(),
        at: Some(rule.at),
        message,
    }
}

/// Whether an unscoped rule (every tenant, every model) names `entity`, with its action.
fn unscoped_actions<'a>(
    p: &'a Policy,
    entity: &'a EntityType,
) -> impl Iterator<Item = Action> + 'a {
    p.rules
        .iter()
        .filter(|r| r.tenants.is_empty() && r.models.is_empty())
        .filter(move |r| r.any_entity || r.entities.contains(entity))
        .map(|r| r.action)
}

fn names(p: &Policy, entity: &EntityType) -> bool {
    p.rules
        .iter()
        .any(|r| r.any_entity || r.entities.contains(entity))
}

/// Protected types no rule names, while the default sends everything else out as it is.
fn unprotected(p: &Policy, out: &mut Vec<Lint>) {
    if p.default_action != Action::Allow {
        return;
    }
    let missing: Vec<String> = PROTECTED
        .iter()
        .filter_map(|(name, class)| {
            let entity: EntityType = name.parse().ok()?;
            (unscoped_actions(p, &entity).next().is_none()).then(|| {
                let scoped = if names(p, &entity) {
                    ", named only for some tenants or models"
                } else {
                    ""
                };
                format!("{name} ({}{scoped})", class.as_str())
            })
        })
        .collect();
    if missing.is_empty() {
        return;
    }
    out.push(Lint {
        code: "unprotected",
        file: p.file.clone(),
        at: Some(p.default_at),
        message: format!(
            "[defaults] action is \"allow\" and no rule covers {} for every tenant and model; they reach the cloud as they are. Name them in a rule (a rule with action = \"allow\" states that this is intended)",
            missing.join(", ")
        ),
    });
}

/// Whether every request `a` matches is also matched by `b`.
fn covers(b: &Rule, a: &Rule) -> bool {
    let entities = if !b.needs_findings() {
        true
    } else if !a.needs_findings() {
        false
    } else {
        (b.any_entity || (!a.any_entity && a.entities.iter().all(|e| b.entities.contains(e))))
            && b.min_score <= a.min_score
            && b.min_count.max(1) <= a.min_count.max(1)
    };
    entities && scope_covers(&b.tenants, &a.tenants) && scope_covers(&b.models, &a.models)
}

/// `b` (empty: everything) includes every name `a` (empty: everything) includes. Patterns are
/// compared literally, plus `*` covering anything; a finer containment is not attempted.
fn scope_covers(b: &[Wildcard], a: &[Wildcard]) -> bool {
    b.is_empty()
        || (!a.is_empty()
            && a.iter().all(|x| {
                b.iter()
                    .any(|y| y.pattern() == "*" || y.pattern() == x.pattern())
            }))
}

fn redundant(p: &Policy, i: usize, a: &Rule, out: &mut Vec<Lint>) {
    // Of two rules that cover each other with the same action, only the later is reported.
    let by = p.rules.iter().enumerate().find(|&(j, b)| {
        j != i
            && covers(b, a)
            && (b.action > a.action || (b.action == a.action && (j < i || !covers(a, b))))
    });
    if let Some((_, b)) = by {
        let stricter = if b.action > a.action {
            "stricter"
        } else {
            "equally strict"
        };
        out.push(at_rule(
            p,
            a,
            "redundant",
            format!(
                "rule {:?} ({}) never changes the action: the {stricter} rule {:?} ({}) matches every request it matches; remove it or narrow {:?}",
                a.id,
                a.action.as_str(),
                b.id,
                b.action.as_str(),
                b.id
            ),
        ));
    }
}

/// Whether some name matches both `*`-patterns.
pub fn globs_intersect(a: &str, b: &str) -> bool {
    let (a, b): (Vec<char>, Vec<char>) = (a.chars().collect(), b.chars().collect());
    let mut memo = vec![None; (a.len() + 1) * (b.len() + 1)];
    intersect(&a, &b, 0, 0, &mut memo)
}

fn intersect(a: &[char], b: &[char], i: usize, j: usize, memo: &mut [Option<bool>]) -> bool {
    let key = i * (b.len() + 1) + j;
    if let Some(Some(known)) = memo.get(key) {
        return *known;
    }
    let result = match (a.get(i), b.get(j)) {
        (None, None) => true,
        (Some('*'), _) => {
            intersect(a, b, i + 1, j, memo) || (j < b.len() && intersect(a, b, i, j + 1, memo))
        }
        (_, Some('*')) => {
            intersect(a, b, i, j + 1, memo) || (i < a.len() && intersect(a, b, i + 1, j, memo))
        }
        (Some(x), Some(y)) => x == y && intersect(a, b, i + 1, j + 1, memo),
        _ => false,
    };
    if let Some(slot) = memo.get_mut(key) {
        *slot = Some(result);
    }
    result
}

fn never_matches(p: &Policy, config: &Config, out: &mut Vec<Lint>) {
    let tenants: BTreeSet<&str> = config
        .keys
        .iter()
        .filter(|k| k.policy == *p.name && !k.revoked)
        .map(|k| k.tenant.as_str())
        .collect();
    let served: Vec<&str> = config
        .upstreams
        .iter()
        .flat_map(|u| u.models.iter().map(String::as_str))
        .collect();
    for rule in &p.rules {
        if !rule.tenants.is_empty()
            && !rule
                .tenants
                .iter()
                .any(|w| tenants.iter().any(|t| w.matches(t)))
        {
            let known: Vec<&str> = tenants.iter().copied().collect();
            out.push(at_rule(
                p,
                rule,
                "never-matches",
                format!(
                    "rule {:?} can never match: no key of policy {:?} in veil.toml has a tenant matching tenants = {:?} (their tenants: {:?})",
                    rule.id,
                    &*p.name,
                    patterns(&rule.tenants),
                    known
                ),
            ));
        }
        if !rule.models.is_empty()
            && !rule
                .models
                .iter()
                .any(|w| served.iter().any(|m| globs_intersect(w.pattern(), m)))
        {
            out.push(at_rule(
                p,
                rule,
                "never-matches",
                format!(
                    "rule {:?}: no upstream in veil.toml serves a model matching models = {:?}, so it matches only requests that would otherwise get model_not_found",
                    rule.id,
                    patterns(&rule.models)
                ),
            ));
        }
    }
}

fn patterns(w: &[Wildcard]) -> Vec<&str> {
    w.iter().map(Wildcard::pattern).collect()
}

/// Rules on types only the classifier finds, when `veil.toml` disables it.
fn undetectable(p: &Policy, config: &Config, out: &mut Vec<Lint>) {
    if !config.classifier.dir.as_os_str().is_empty() {
        return;
    }
    // Allowing what cannot be found changes nothing; acting on it silently does nothing.
    for rule in p.rules.iter().filter(|r| r.action != Action::Allow) {
        let blind: Vec<&str> = rule
            .entities
            .iter()
            .map(EntityType::as_str)
            .filter(|e| CLASSIFIER_TYPES.contains(e))
            .filter(|e| !p.patterns.deny.iter().any(|d| d.entity.as_str() == *e))
            .collect();
        if !blind.is_empty() {
            out.push(at_rule(
                p,
                rule,
                "undetectable",
                format!(
                    "rule {:?} names {}, which only the classifier finds, and veil.toml disables it (classifier.dir is empty); only deny-list terms would be found",
                    rule.id,
                    blind.join(", ")
                ),
            ));
        }
    }
}

/// PHI types a policy lets out as they are: the strongest unscoped rule naming the type allows
/// it, or no rule names it and the default allows.
fn phi_out(p: &Policy) -> Vec<&'static str> {
    PROTECTED
        .iter()
        .filter(|(_, class)| *class == Class::Phi)
        .filter_map(|(name, _)| {
            let entity: EntityType = name.parse().ok()?;
            let strongest = unscoped_actions(p, &entity)
                .max()
                .unwrap_or(p.default_action);
            (strongest == Action::Allow).then_some(*name)
        })
        .collect()
}

fn no_baa(policies: &[&Policy], config: &Config, file: &std::path::Path, out: &mut Vec<Lint>) {
    // Policies in use, with the keys that use them.
    let mut used: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for k in config.keys.iter().filter(|k| !k.revoked) {
        used.entry(k.policy.as_str())
            .or_default()
            .push(k.id.as_str());
    }
    let leaks: Vec<String> = policies
        .iter()
        .filter_map(|p| {
            let keys = used.get(&*p.name)?;
            let types = phi_out(p);
            (!types.is_empty()).then(|| {
                format!(
                    "policy {:?} (keys {}) lets {} out unredacted",
                    &*p.name,
                    keys.join(", "),
                    types.join(", ")
                )
            })
        })
        .collect();
    if leaks.is_empty() {
        return;
    }
    for u in config.upstreams.iter().filter(|u| !u.baa) {
        out.push(Lint {
            code: "no-baa",
            file: file.to_owned(),
            at: None,
            message: format!(
                "upstream {:?} is not marked baa = true, but may receive PHI: {}. Set baa = true once a business-associate agreement covers it, or redact those types or keep them local",
                u.name,
                leaks.join("; ")
            ),
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn glob_intersection() {
        for (a, b, want) in [
            ("gpt-*", "gpt-4o", true),
            ("gpt-*", "*-mini", true),
            ("gpt-*", "claude-*", false),
            ("*", "anything", true),
            ("a*c", "ab*", true),
            ("a*c", "b*", false),
            ("exact", "exact", true),
            ("exact", "exac", false),
            ("o1*", "o3*", false),
            ("*x*", "*y*", true),
        ] {
            assert_eq!(globs_intersect(a, b), want, "{a} ∩ {b}");
            assert_eq!(globs_intersect(b, a), want, "{b} ∩ {a}");
        }
    }

    /// Every case of `fixtures/policy/lints.toml` gets exactly its warnings.
    #[test]
    fn lint_fixtures() {
        #[derive(serde::Deserialize)]
        struct Table {
            case: Vec<Case>,
        }
        #[derive(serde::Deserialize)]
        struct Case {
            name: String,
            policy: String,
            config: Option<String>,
            expect: Vec<String>,
        }
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
        let text = std::fs::read_to_string(root.join("fixtures/policy/lints.toml"))
            .unwrap_or_else(|e| panic!("{e}"));
        let table: Table = toml::from_str(&text).unwrap_or_else(|e| panic!("{e}"));
        let mut wrong = Vec::new();
        let mut codes = std::collections::BTreeMap::<&str, (usize, usize)>::new();
        for case in &table.case {
            let policy =
                super::super::compile(std::path::Path::new("policies/p.toml"), &case.policy)
                    .unwrap_or_else(|e| panic!("{}: {e}", case.name));
            let config = case.config.as_deref().map(|c| {
                Config::parse(std::path::Path::new("veil.toml"), c)
                    .unwrap_or_else(|e| panic!("{}: {e}", case.name))
            });
            let got: Vec<String> = lint(
                &[&policy],
                config.as_ref().map(|c| (c, PathBuf::from("veil.toml"))),
            )
            .iter()
            .map(ToString::to_string)
            .collect();
            if got != case.expect {
                wrong.push(format!(
                    "{}:\n  want {:?}\n  got  {:?}",
                    case.name, case.expect, got
                ));
            }
            // Which lint the case is about: the prefix of its name.
            let code = case.name.split(':').next().unwrap_or_default();
            let entry = codes.entry(code).or_default();
            if case
                .expect
                .iter()
                .any(|w| w.contains(&format!("warning[{code}]")))
            {
                entry.0 += 1;
            } else {
                entry.1 += 1;
            }
        }
        assert!(wrong.is_empty(), "{}", wrong.join("\n"));
        for code in [
            "unprotected",
            "min-count-zero",
            "redundant",
            "never-matches",
            "no-baa",
            "undetectable",
        ] {
            let (fires, quiet) = codes.get(code).copied().unwrap_or_default();
            assert!(
                fires > 0 && quiet > 0,
                "{code}: {fires} triggering and {quiet} quiet fixtures"
            );
        }
    }

    #[test]
    fn every_protected_type_parses() {
        for (name, _) in PROTECTED {
            assert!(name.parse::<EntityType>().is_ok(), "{name}");
        }
    }
}
