//! `veil policy test [DIR]`: runs the policy test files `DIR/tests/*.toml`.
//!
//! Each case gives a prompt or a whole chat request, who sends it (a key id, or a policy and a
//! tenant) and the model, and expects the action, the route, the matched rule ids, the entity
//! types found, and strings the upstream body must not (or must) contain. The case goes through
//! [`decide`] exactly as a request to the server would.

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use toml::Spanned;

use super::{DEFAULT_MODEL, ReviewError, Workspace};
use crate::config::{TomlError, line_column, parse_toml};
use crate::decide::{Decision, Request, Route, decide};
use crate::policy::Action;
use crate::snapshot::Snapshot;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SuiteFile {
    /// Policy of cases that name no key.
    #[serde(default)]
    policy: Option<String>,
    /// Model of cases that name none.
    #[serde(default)]
    model: Option<String>,
    #[serde(default, rename = "case")]
    cases: Vec<Spanned<CaseFile>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CaseFile {
    name: String,
    #[serde(default)]
    key: Option<String>,
    #[serde(default)]
    policy: Option<String>,
    #[serde(default)]
    tenant: Option<String>,
    #[serde(default)]
    model: Option<String>,
    #[serde(default)]
    prompt: Option<String>,
    /// A whole chat request, as JSON text.
    #[serde(default)]
    request: Option<String>,
    expect: Expect,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Expect {
    action: Action,
    /// `local`, an upstream name, or `none`.
    #[serde(default)]
    route: Option<String>,
    /// Exactly the rules that match (built-in `veil.*` reasons included).
    #[serde(default)]
    rules: Option<Vec<String>>,
    /// At least these rules match (others may too).
    #[serde(default)]
    rules_include: Vec<String>,
    /// Exactly the entity types found.
    #[serde(default)]
    entities: Option<Vec<String>>,
    /// At least these entity types are found (others may be too).
    #[serde(default)]
    entities_include: Vec<String>,
    /// Strings the upstream body must not contain (checked also when nothing leaves).
    #[serde(default)]
    upstream_excludes: Vec<String>,
    /// Strings the upstream body must contain.
    #[serde(default)]
    upstream_contains: Vec<String>,
}

/// One case's result.
#[derive(Debug)]
pub struct CaseResult {
    /// `file:line` of the case.
    pub place: String,
    /// The case's name.
    pub name: String,
    /// Empty when it passed; otherwise one line per difference.
    pub failures: Vec<String>,
}

/// The results of every test file.
#[derive(Debug, Default)]
pub struct Outcome {
    /// Every case, in file order.
    pub cases: Vec<CaseResult>,
}

impl Outcome {
    /// Cases that passed.
    pub fn passed(&self) -> usize {
        self.cases.iter().filter(|c| c.failures.is_empty()).count()
    }

    /// Cases that failed.
    pub fn failed(&self) -> usize {
        self.cases.len() - self.passed()
    }

    /// What the command prints: each failure with its differences, then `N passed, M failed`.
    pub fn render(&self, verbose: bool) -> String {
        let mut out = String::new();
        for c in &self.cases {
            if c.failures.is_empty() {
                if verbose {
                    let _ = writeln!(out, "ok    {}  {}", c.place, c.name);
                }
                continue;
            }
            let _ = writeln!(out, "FAIL  {}  {}", c.place, c.name);
            for f in &c.failures {
                let _ = writeln!(out, "        {f}");
            }
        }
        let _ = write!(out, "{} passed, {} failed", self.passed(), self.failed());
        out
    }
}

/// Runs every `*.toml` in `DIR/tests` against the policies in `dir`.
pub fn run(ws: &Workspace, dir: &Path) -> Result<Outcome, ReviewError> {
    let snapshot = ws.snapshot(Some(dir))?;
    let tests = dir.join("tests");
    let read_err = |path: &Path| {
        let path = path.to_owned();
        move |source| ReviewError::Read { path, source }
    };
    let mut files: Vec<PathBuf> = std::fs::read_dir(&tests)
        .map_err(read_err(&tests))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
        .collect();
    files.sort();
    if files.is_empty() {
        return Err(ReviewError::Input(format!(
            "no test files (*.toml) in {}",
            tests.display()
        )));
    }
    let mut outcome = Outcome::default();
    for file in files {
        let text = std::fs::read_to_string(&file).map_err(read_err(&file))?;
        let suite: SuiteFile = parse_toml(&file, &text).map_err(input)?;
        for case in &suite.cases {
            let (line, _) = line_column(&text, case.span().start);
            let place = format!("{}:{line}", file.display());
            let case = case.get_ref();
            let failures = match run_case(ws, &snapshot, &suite, case) {
                Ok(f) => f,
                Err(e) => vec![format!("error: {e}")],
            };
            outcome.cases.push(CaseResult {
                place,
                name: case.name.clone(),
                failures,
            });
        }
    }
    Ok(outcome)
}

fn input(e: TomlError) -> ReviewError {
    ReviewError::Input(e.to_string())
}

fn run_case(
    ws: &Workspace,
    snapshot: &Snapshot,
    suite: &SuiteFile,
    case: &CaseFile,
) -> Result<Vec<String>, ReviewError> {
    let policy = case.policy.as_deref().or(if case.key.is_none() {
        suite.policy.as_deref()
    } else {
        None
    });
    let principal = ws.principal(case.key.as_deref(), policy, case.tenant.as_deref())?;
    let model = case
        .model
        .as_deref()
        .or(suite.model.as_deref())
        .unwrap_or(DEFAULT_MODEL);
    let request = match (&case.prompt, &case.request) {
        (Some(text), None) => Request::from_text(model, text),
        (None, Some(json)) => ws.request(json.as_bytes())?,
        _ => {
            return Err(ReviewError::Input(
                "give exactly one of prompt or request".to_owned(),
            ));
        }
    };
    let decision = decide(&request, &principal, snapshot)?;
    Ok(compare(&case.expect, &decision))
}

fn compare(expect: &Expect, d: &Decision) -> Vec<String> {
    let mut failures = Vec::new();
    if d.action() != expect.action {
        failures.push(format!(
            "action    expected {}, got {}",
            expect.action.as_str(),
            d.action().as_str()
        ));
    }
    let route = d.route.name().unwrap_or("none");
    if let Some(want) = &expect.route
        && want != route
    {
        failures.push(format!("route     expected {want}, got {route}"));
    }
    let rules: BTreeSet<&str> = d.verdict.hits.iter().map(|h| &*h.rule).collect();
    let entities: BTreeSet<&str> = d
        .scanned
        .findings
        .iter()
        .map(|f| f.entity.as_str())
        .collect();
    for (what, exact, include, got) in [
        ("rules", &expect.rules, &expect.rules_include, &rules),
        (
            "entities",
            &expect.entities,
            &expect.entities_include,
            &entities,
        ),
    ] {
        if let Some(want) = exact {
            set_diff(what, want, got, &mut failures);
        }
        let missing: Vec<&str> = include
            .iter()
            .map(String::as_str)
            .filter(|w| !got.contains(w))
            .collect();
        if !missing.is_empty() {
            failures.push(format!(
                "{what:<9} expected to include {}, got [{}]",
                missing.join(", "),
                got.iter().copied().collect::<Vec<_>>().join(", ")
            ));
        }
    }
    let upstream = match &d.route {
        Route::Cloud { body, .. } => body.body().to_string(),
        _ => String::new(),
    };
    for s in &expect.upstream_excludes {
        if upstream.contains(s.as_str()) || upstream.contains(&json_escaped(s)) {
            failures.push(format!("upstream  must not contain {s:?}, but it does"));
        }
    }
    for s in &expect.upstream_contains {
        if !upstream.contains(s.as_str()) && !upstream.contains(&json_escaped(s)) {
            let what = if upstream.is_empty() {
                "nothing leaves"
            } else {
                "it does not"
            };
            failures.push(format!("upstream  must contain {s:?}, but {what}"));
        }
    }
    failures
}

/// `s` as it appears inside a JSON string.
fn json_escaped(s: &str) -> String {
    let quoted = serde_json::to_string(s).unwrap_or_default();
    quoted
        .get(1..quoted.len().saturating_sub(1))
        .unwrap_or_default()
        .to_owned()
}

fn set_diff(what: &str, want: &[String], got: &BTreeSet<&str>, failures: &mut Vec<String>) {
    let want: BTreeSet<&str> = want.iter().map(String::as_str).collect();
    if &want == got {
        return;
    }
    let missing: Vec<&str> = want.difference(got).copied().collect();
    let extra: Vec<&str> = got.difference(&want).copied().collect();
    let mut parts = Vec::new();
    if !missing.is_empty() {
        parts.push(format!("missing {}", missing.join(", ")));
    }
    if !extra.is_empty() {
        parts.push(format!("unexpected {}", extra.join(", ")));
    }
    failures.push(format!(
        "{what:<9} expected [{}], got [{}]: {}",
        want.iter().copied().collect::<Vec<_>>().join(", "),
        got.iter().copied().collect::<Vec<_>>().join(", "),
        parts.join("; ")
    ));
}
