//! Table-driven detector tests: every `fixtures/detect/*.toml` file is a list of cases
//! (`text`, `expect = [{ entity, text }]`, optional `reject = [...]`), run against a detector
//! built from the file's optional `[config]`. Every failing case is reported, not just the
//! first.
//!
//! Semantics, with findings counted at `min_score` (default 0.5, the usual policy threshold):
//! - each `expect` item must be matched by a finding of that entity with exactly the span of
//!   the `nth` (default first) occurrence of its `text` in the case text;
//! - each `reject` string: no finding may overlap any occurrence of it;
//! - an empty `expect` without `reject` means no finding at all.

#![allow(clippy::panic)] // a test harness reports failure by panicking

use std::path::Path;

use serde::Deserialize;
use veil::detect::{Finding, PatternConfig, PatternDetector};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FixtureFile {
    #[serde(default)]
    config: Option<PatternConfig>,
    #[serde(default)]
    min_score: Option<f32>,
    case: Vec<Case>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Case {
    name: String,
    text: String,
    #[serde(default)]
    expect: Vec<Expect>,
    #[serde(default)]
    reject: Option<Vec<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Expect {
    entity: String,
    text: String,
    #[serde(default)]
    nth: usize,
}

fn describe(text: &str, found: &[Finding]) -> String {
    found
        .iter()
        .map(|f| {
            let value = text.get(f.start..f.end).unwrap_or("<bad span>");
            format!(
                "{}({:?}, {:.2}, {})",
                f.entity, value, f.score, f.recognizer
            )
        })
        .collect::<Vec<_>>()
        .join(", ")
}

fn run_case(detector: &PatternDetector, min_score: f32, case: &Case) -> Vec<String> {
    let mut errors = Vec::new();
    let found: Vec<Finding> = detector
        .detect(&case.text)
        .into_iter()
        .filter(|f| f.score >= min_score)
        .collect();
    for f in &found {
        if !case.text.is_char_boundary(f.start)
            || !case.text.is_char_boundary(f.end)
            || f.end > case.text.len()
        {
            errors.push(format!(
                "finding {}..{} is not on char boundaries",
                f.start, f.end
            ));
        }
    }
    for e in &case.expect {
        let Some((start, _)) = case.text.match_indices(&e.text).nth(e.nth) else {
            errors.push(format!(
                "expected text {:?} does not occur in the case text",
                e.text
            ));
            continue;
        };
        let end = start + e.text.len();
        let hit = found
            .iter()
            .any(|f| f.start == start && f.end == end && f.entity.as_str() == e.entity);
        if !hit {
            errors.push(format!("missing {}({:?})", e.entity, e.text));
        }
    }
    match &case.reject {
        Some(rejects) => {
            for r in rejects {
                for (start, m) in case.text.match_indices(r.as_str()) {
                    let end = start + m.len();
                    if let Some(f) = found.iter().find(|f| f.start < end && start < f.end) {
                        errors.push(format!(
                            "rejected text {r:?} is covered by {}",
                            describe(&case.text, std::slice::from_ref(f))
                        ));
                    }
                }
            }
        }
        None if case.expect.is_empty() && !found.is_empty() => {
            errors.push("expected no findings".to_owned());
        }
        None => {}
    }
    if !errors.is_empty() {
        errors.push(format!("found: [{}]", describe(&case.text, &found)));
    }
    errors
}

#[test]
fn detect_fixtures() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/detect");
    let mut paths: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", dir.display()))
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
        .collect();
    paths.sort();
    assert!(!paths.is_empty(), "no fixture files in {}", dir.display());
    let mut failures = Vec::new();
    let mut cases = 0;
    for path in &paths {
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let raw = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{name}: {e}"));
        let file: FixtureFile = match toml::from_str(&raw) {
            Ok(f) => f,
            Err(e) => {
                failures.push(format!("{name}: cannot parse: {e}"));
                continue;
            }
        };
        let detector = match PatternDetector::new(&file.config.unwrap_or_default()) {
            Ok(d) => d,
            Err(e) => {
                failures.push(format!("{name}: bad config: {e}"));
                continue;
            }
        };
        let min_score = file.min_score.unwrap_or(0.5);
        for case in &file.case {
            cases += 1;
            let errors = run_case(&detector, min_score, case);
            if !errors.is_empty() {
                failures.push(format!(
                    "{name} / {}:\n    {}",
                    case.name,
                    errors.join("\n    ")
                ));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {cases} fixture cases failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
    println!("{cases} fixture cases passed in {} files", paths.len());
}
