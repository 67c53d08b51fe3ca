//! `veil policy diff OLD NEW --corpus FILE.jsonl`: replays a corpus through two versions of the
//! policies and lists every line whose decision changes — action, matched rules, entity types,
//! the body that would leave — with counts per action transition. A decision that becomes less
//! restrictive is a weakening.
//!
//! `OLD` (or `NEW`) may be a git revision and path, `REV:DIR` (e.g. `origin/main:policies`), so
//! a reviewer answers "what does this pull request change?" with one command.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::io::BufRead;
use std::path::{Path, PathBuf};

use serde::Serialize;
use serde_json::Value;
use sha2::{Digest, Sha256};

use super::{DEFAULT_MODEL, ReviewError, Workspace};
use crate::decide::{Decision, Request, Route, decide};
use crate::policy::Action;

/// What one version decided for one corpus line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Summary {
    /// The action.
    pub action: Action,
    /// Matched rule ids.
    pub rules: BTreeSet<String>,
    /// Entity types found.
    pub entities: BTreeSet<String>,
    /// SHA-256 of the body the upstream would receive (none when nothing leaves): an operator
    /// change shows here even when the action and rules stay the same.
    #[serde(skip)]
    pub upstream: Option<String>,
}

impl Summary {
    fn of(d: &Decision) -> Self {
        let upstream = match &d.route {
            Route::Cloud { body, .. } => Some(hex::encode(Sha256::digest(
                body.body().to_string().as_bytes(),
            ))),
            _ => None,
        };
        Self {
            upstream,
            action: d.action(),
            rules: d.verdict.hits.iter().map(|h| h.rule.to_string()).collect(),
            entities: d
                .scanned
                .findings
                .iter()
                .map(|f| f.entity.as_str().to_owned())
                .collect(),
        }
    }
}

/// One changed line.
#[derive(Debug, Clone, Serialize)]
pub struct Change {
    /// 1-based line number in the corpus.
    pub line: usize,
    /// Before.
    pub old: Summary,
    /// After.
    pub new: Summary,
    /// The new action is less restrictive than the old one.
    pub weaker: bool,
    /// What the upstream would receive differs.
    pub upstream_changed: bool,
}

/// The whole comparison.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Report {
    /// Lines replayed.
    pub lines: usize,
    /// Lines whose decision changed.
    pub changes: Vec<Change>,
    /// `old -> new` action transitions among the changed lines, with counts.
    pub transitions: BTreeMap<String, usize>,
}

impl Report {
    /// Changed lines whose decision became less restrictive.
    pub fn weaker(&self) -> usize {
        self.changes.iter().filter(|c| c.weaker).count()
    }

    /// 0, or 3 when a decision became less restrictive and that is not allowed.
    pub fn exit_code(&self, allow_weaker: bool) -> u8 {
        if self.weaker() > 0 && !allow_weaker {
            3
        } else {
            0
        }
    }

    /// The comparison as the command prints it.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let list = |s: &BTreeSet<String>| s.iter().cloned().collect::<Vec<_>>().join(", ");
        for c in &self.changes {
            let _ = writeln!(
                out,
                "line {}: {} -> {}{}",
                c.line,
                c.old.action.as_str(),
                c.new.action.as_str(),
                if c.weaker { "  WEAKER" } else { "" }
            );
            if c.old.rules != c.new.rules {
                let _ = writeln!(
                    out,
                    "  rules     [{}] -> [{}]",
                    list(&c.old.rules),
                    list(&c.new.rules)
                );
            }
            if c.upstream_changed && c.old.upstream.is_some() && c.new.upstream.is_some() {
                let _ = writeln!(out, "  upstream  the body that leaves differs");
            }
            if c.old.entities != c.new.entities {
                let _ = writeln!(
                    out,
                    "  entities  [{}] -> [{}]",
                    list(&c.old.entities),
                    list(&c.new.entities)
                );
            }
        }
        if !self.transitions.is_empty() {
            let _ = writeln!(out, "transitions");
            for (t, n) in &self.transitions {
                let _ = writeln!(out, "  {t:<18} {n}");
            }
        }
        let _ = write!(
            out,
            "{} lines, {} changed, {} weaker",
            self.lines,
            self.changes.len(),
            self.weaker()
        );
        out
    }
}

/// One corpus line: a chat request, `{"text", "key"?, "model"?}`, or `{"request", "key"?}`.
fn parse_line(ws: &Workspace, value: &Value) -> Result<(Request, Option<String>), ReviewError> {
    let key = value.get("key").and_then(Value::as_str).map(str::to_owned);
    if let Some(text) = value.get("text").and_then(Value::as_str) {
        let model = value
            .get("model")
            .and_then(Value::as_str)
            .unwrap_or(DEFAULT_MODEL);
        return Ok((Request::from_text(model, text), key));
    }
    if let Some(request) = value.get("request") {
        return Ok((ws.request_value(request)?, key));
    }
    Ok((ws.request_value(value)?, None))
}

/// Replays `corpus` through the policies in `old` and in `new`; lines without a `"key"` use
/// `default_key`.
pub fn diff(
    ws: &Workspace,
    old: &Path,
    new: &Path,
    corpus: &Path,
    default_key: Option<&str>,
) -> Result<Report, ReviewError> {
    let before = ws.snapshot(Some(old))?;
    let after = ws.snapshot(Some(new))?;
    let file = std::fs::File::open(corpus).map_err(|source| ReviewError::Read {
        path: corpus.to_owned(),
        source,
    })?;
    let mut report = Report::default();
    for (i, line) in std::io::BufReader::new(file).lines().enumerate() {
        let n = i + 1;
        let line = line.map_err(|source| ReviewError::Read {
            path: corpus.to_owned(),
            source,
        })?;
        if line.trim().is_empty() {
            continue;
        }
        let at = |e: &dyn std::fmt::Display| {
            ReviewError::Input(format!("{}:{n}: {e}", corpus.display()))
        };
        let value: Value = serde_json::from_str(&line).map_err(|e| at(&e))?;
        let (request, key) = parse_line(ws, &value).map_err(|e| at(&e))?;
        let key = key.as_deref().or(default_key).ok_or_else(|| {
            at(&"no key: give the line a \"key\" (a key id from veil.toml) or pass --key")
        })?;
        let principal = ws.principal(Some(key), None, None).map_err(|e| at(&e))?;
        let old = Summary::of(&decide(&request, &principal, &before).map_err(|e| at(&e))?);
        let new = Summary::of(&decide(&request, &principal, &after).map_err(|e| at(&e))?);
        report.lines += 1;
        if old != new {
            if old.action != new.action {
                *report
                    .transitions
                    .entry(format!(
                        "{} -> {}",
                        old.action.as_str(),
                        new.action.as_str()
                    ))
                    .or_default() += 1;
            }
            report.changes.push(Change {
                line: n,
                weaker: new.action < old.action,
                upstream_changed: old.upstream != new.upstream,
                old,
                new,
            });
        }
    }
    Ok(report)
}

/// A directory as given, or `REV:DIR` checked out of git into `scratch` (the directory is
/// returned; `scratch` must outlive its use).
pub fn resolve(spec: &str, scratch: &Path) -> Result<PathBuf, ReviewError> {
    let path = Path::new(spec);
    if path.is_dir() {
        return Ok(path.to_owned());
    }
    let Some((rev, dir)) = spec.split_once(':') else {
        return Err(ReviewError::Input(format!(
            "{spec}: not a directory; give a policy directory or REV:DIR (a git revision and path)"
        )));
    };
    let git = |args: &[&str]| -> Result<std::process::Output, ReviewError> {
        std::process::Command::new("git")
            .args(args)
            .output()
            .map_err(|e| ReviewError::Input(format!("cannot run git: {e}")))
    };
    let listing = git(&["ls-tree", "--name-only", &format!("{rev}:{dir}")])?;
    if !listing.status.success() {
        return Err(ReviewError::Input(format!(
            "{spec}: git cannot read {dir} at {rev}: {}",
            String::from_utf8_lossy(&listing.stderr).trim()
        )));
    }
    let out = scratch.join("policies");
    std::fs::create_dir_all(&out).map_err(|source| ReviewError::Read {
        path: out.clone(),
        source,
    })?;
    for name in String::from_utf8_lossy(&listing.stdout).lines() {
        if !name.ends_with(".toml") {
            continue;
        }
        let blob = git(&["show", &format!("{rev}:{dir}/{name}")])?;
        if !blob.status.success() {
            return Err(ReviewError::Input(format!(
                "{spec}: git cannot read {name}"
            )));
        }
        let target = out.join(name);
        std::fs::write(&target, &blob.stdout).map_err(|source| ReviewError::Read {
            path: target,
            source,
        })?;
    }
    Ok(out)
}
