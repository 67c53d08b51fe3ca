//! The policy file format: a serde mirror of `policies/*.toml`, compiled into [`Policy`].
//!
//! Every error names the file, the key path and line:column, and a file with any error is
//! refused as a whole: a half-valid policy never becomes active.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::Arc;

use serde::Deserialize;
use sha2::{Digest, Sha256};
use toml::Spanned;

use super::{Action, Operator, Policy, Rule, Wildcard};
use crate::config::{TomlError, line_column, parse_toml};
use crate::detect::{DenyList, EntityType, PatternConfig};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PolicyFile {
    description: Option<String>,
    /// Required: see [`Defaults::from_file`].
    #[serde(default)]
    defaults: Option<Spanned<DefaultsFile>>,
    #[serde(default)]
    redaction: RedactionFile,
    #[serde(default)]
    rules: Vec<RuleFile>,
    #[serde(default)]
    dictionaries: DictionariesFile,
    #[serde(default)]
    classifier: ClassifierFile,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ClassifierFile {
    #[serde(default)]
    thresholds: BTreeMap<Spanned<String>, Spanned<f32>>,
}

/// `[defaults]` as written: the three actions have no default of their own, so that an empty,
/// truncated or partial file is refused instead of becoming an allow-everything policy.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct DefaultsFile {
    action: Option<Spanned<Action>>,
    on_detector_error: Option<Spanned<Action>>,
    on_unscannable: Option<Spanned<Action>>,
    #[serde(default = "half")]
    min_score: f32,
}

fn half() -> f32 {
    0.5
}

/// The defaults, all stated.
struct Defaults {
    action: Action,
    action_at: usize,
    on_detector_error: Action,
    on_unscannable: Action,
}

impl Defaults {
    fn from_file(
        path: &Path,
        text: &str,
        file: Option<&Spanned<DefaultsFile>>,
    ) -> Result<Self, TomlError> {
        const STATE: &str =
            "a policy states [defaults] action, on_detector_error and on_unscannable explicitly";
        let Some(spanned) = file else {
            let message = if is_blank(text) {
                format!(
                    "the file is empty or only comments; {STATE}, so an empty file is refused rather than read as allow-everything"
                )
            } else {
                format!("missing [defaults]; {STATE} (veil assumes none of them)")
            };
            return Err(TomlError::at(path, text, Some(0), "defaults", &message));
        };
        let d = spanned.get_ref();
        let missing: Vec<&str> = [
            ("action", d.action.is_none()),
            ("on_detector_error", d.on_detector_error.is_none()),
            ("on_unscannable", d.on_unscannable.is_none()),
        ]
        .into_iter()
        .filter_map(|(k, m)| m.then_some(k))
        .collect();
        match (&d.action, &d.on_detector_error, &d.on_unscannable) {
            (Some(a), Some(e), Some(u)) => Ok(Self {
                action: *a.get_ref(),
                action_at: a.span().start,
                on_detector_error: *e.get_ref(),
                on_unscannable: *u.get_ref(),
            }),
            _ => Err(TomlError::at(
                path,
                text,
                Some(spanned.span().start),
                "defaults",
                &format!(
                    "missing {}; {STATE} (veil assumes none of them)",
                    missing.join(", ")
                ),
            )),
        }
    }
}

/// Only whitespace and comments.
fn is_blank(text: &str) -> bool {
    text.lines()
        .map(str::trim)
        .all(|l| l.is_empty() || l.starts_with('#'))
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RedactionFile {
    #[serde(default)]
    default: Option<Operator>,
    #[serde(default)]
    operators: BTreeMap<Spanned<String>, Operator>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RuleFile {
    id: Spanned<String>,
    #[serde(default)]
    description: Option<String>,
    #[serde(default)]
    entities: Vec<Spanned<String>>,
    action: Action,
    min_score: Option<Spanned<f32>>,
    #[serde(default = "one")]
    min_count: usize,
    #[serde(default)]
    tenants: Vec<String>,
    #[serde(default)]
    models: Vec<String>,
}

fn one() -> usize {
    1
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct DictionariesFile {
    #[serde(default)]
    allow: Vec<String>,
    #[serde(default)]
    deny: Vec<DenyFile>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct DenyFile {
    entity: Spanned<String>,
    terms: Vec<String>,
    #[serde(default)]
    case_sensitive: bool,
}

/// Parses and compiles one policy file's text. `path` names the file in errors; the policy's
/// name is the file stem.
pub fn compile(path: &Path, text: &str) -> Result<Policy, TomlError> {
    let file: PolicyFile = parse_toml(path, text)?;
    let default_min_score = file
        .defaults
        .as_ref()
        .map_or_else(half, |d| d.get_ref().min_score);
    let err = |span: std::ops::Range<usize>, key: String, message: String| {
        TomlError::at(path, text, Some(span.start), &key, &message)
    };
    // Custom entity types exist only when a deny list in this file declares them, so that a
    // typo such as "SNN" is an error rather than a rule that never matches.
    let mut declared: BTreeSet<&str> = file
        .dictionaries
        .deny
        .iter()
        .map(|d| d.entity.get_ref().as_str())
        .collect();
    // Custom types the pattern tier itself emits.
    declared.insert(crate::detect::DRIVERS_LICENSE);
    declared.insert(crate::detect::GENERIC_ID);
    let entity = |s: &Spanned<String>, key: String| -> Result<EntityType, TomlError> {
        let parsed = s
            .get_ref()
            .parse::<EntityType>()
            .map_err(|e| err(s.span(), key.clone(), e.to_string()))?;
        if matches!(parsed, EntityType::Custom(_)) && !declared.contains(s.get_ref().as_str()) {
            return Err(err(
                s.span(),
                key,
                format!(
                    "unknown entity type {:?}; use a built-in type or declare it with a [[dictionaries.deny]] entry",
                    s.get_ref()
                ),
            ));
        }
        Ok(parsed)
    };

    let mut ids = BTreeSet::new();
    let mut rules = Vec::with_capacity(file.rules.len());
    for (i, r) in file.rules.iter().enumerate() {
        let id = r.id.get_ref();
        if id.is_empty()
            || !id
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
        {
            return Err(err(
                r.id.span(),
                format!("rules[{i}].id"),
                "rule ids use letters, digits, '.', '_' and '-'".to_owned(),
            ));
        }
        if !ids.insert(id.clone()) {
            return Err(err(
                r.id.span(),
                format!("rules[{i}].id"),
                format!("duplicate rule id {id:?}; every rule needs its own id"),
            ));
        }
        let mut entities = Vec::new();
        let mut any = false;
        for (j, e) in r.entities.iter().enumerate() {
            if e.get_ref() == "*" {
                any = true;
            } else {
                entities.push(entity(e, format!("rules[{i}].entities[{j}]"))?);
            }
        }
        let min_score = match &r.min_score {
            Some(s) if !(0.0..=1.0).contains(s.get_ref()) => {
                return Err(err(
                    s.span(),
                    format!("rules[{i}].min_score"),
                    "must be between 0.0 and 1.0".to_owned(),
                ));
            }
            Some(s) => *s.get_ref(),
            None => default_min_score,
        };
        rules.push(Rule {
            id: Arc::from(id.as_str()),
            description: r.description.clone().unwrap_or_default(),
            entities,
            any_entity: any,
            action: r.action,
            min_score,
            min_count: r.min_count,
            tenants: r.tenants.iter().map(|t| Wildcard::new(t)).collect(),
            models: r.models.iter().map(|m| Wildcard::new(m)).collect(),
            at: line_column(text, r.id.span().start),
        });
    }

    let mut operators = BTreeMap::new();
    for (name, op) in &file.redaction.operators {
        let e = entity(name, format!("redaction.operators.{}", name.get_ref()))?;
        operators.insert(e, *op);
    }

    let mut classifier_thresholds = BTreeMap::new();
    for (name, value) in &file.classifier.thresholds {
        let key = format!("classifier.thresholds.{}", name.get_ref());
        let e = entity(name, key.clone())?;
        if !(0.0..=1.0).contains(value.get_ref()) {
            return Err(err(
                value.span(),
                key,
                "must be between 0.0 and 1.0".to_owned(),
            ));
        }
        classifier_thresholds.insert(e, *value.get_ref());
    }

    let mut deny = Vec::new();
    for (i, d) in file.dictionaries.deny.iter().enumerate() {
        deny.push(DenyList {
            entity: entity(&d.entity, format!("dictionaries.deny[{i}].entity"))?,
            terms: d.terms.clone(),
            case_sensitive: d.case_sensitive,
        });
    }
    let patterns = PatternConfig {
        deny,
        allow: file.dictionaries.allow.clone(),
        ..PatternConfig::default()
    };

    // Checked last, so that an error in a rule is reported where it is even in a file that also
    // lacks its defaults.
    let defaults = Defaults::from_file(path, text, file.defaults.as_ref())?;
    let name = path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    Ok(Policy {
        name: Arc::from(name.as_str()),
        file: path.to_owned(),
        description: file.description.unwrap_or_default(),
        digest: hex::encode(Sha256::digest(text.as_bytes())),
        default_action: defaults.action,
        default_at: line_column(text, defaults.action_at),
        on_detector_error: defaults.on_detector_error,
        on_unscannable: defaults.on_unscannable,
        default_operator: file.redaction.default.unwrap_or(Operator::Placeholder),
        operators,
        rules,
        patterns,
        classifier_thresholds,
    })
}
