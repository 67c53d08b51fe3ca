//! The review commands as a reviewer runs them: `veil policy check | test | explain | diff`,
//! through the binary, with the patterns-only configuration in `fixtures/review` (exact outputs,
//! no model needed) unless a test says otherwise.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// `veil ARGS` run from the repository root with a clean environment for veil's own variables.
fn veil(args: &[&str]) -> Output {
    veil_in(&repo(), args)
}

fn veil_in(dir: &Path, args: &[&str]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_veil"));
    cmd.current_dir(dir)
        .args(args)
        .env("VEIL_HMAC_KEY", "review-test-key");
    for var in [
        "VEIL_CONFIG",
        "VEIL_POLICIES_DIR",
        "VEIL_CLASSIFIER_DIR",
        "VEIL_AUDIT_URL",
        "VEIL_LOCAL_MODEL",
        "RUST_LOG",
    ] {
        cmd.env_remove(var);
    }
    cmd.env("RUST_LOG", "error");
    cmd.output().expect("veil runs")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

const CONFIG: &str = "fixtures/review/veil.toml";

/// `veil --config fixtures/review/veil.toml policy ARGS`.
fn policy(args: &[&str]) -> Output {
    let mut all = vec!["--config", CONFIG, "policy"];
    all.extend_from_slice(args);
    veil(&all)
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let p = entry.unwrap().path();
        if p.is_file() {
            std::fs::copy(&p, to.join(p.file_name().unwrap())).unwrap();
        }
    }
}

/// Compares with a golden file; `UPDATE_GOLDEN=1` rewrites it.
fn golden(name: &str, got: &str) {
    let path = repo().join("fixtures/review").join(name);
    if std::env::var("UPDATE_GOLDEN").is_ok_and(|v| v == "1") {
        std::fs::write(&path, got).unwrap();
    }
    let want = std::fs::read_to_string(&path).unwrap_or_default();
    assert_eq!(
        got,
        want,
        "{} differs (UPDATE_GOLDEN=1 rewrites it)",
        path.display()
    );
}

#[test]
fn check_exit_codes_errors_and_warnings() {
    // Clean.
    let o = policy(&["check"]);
    assert_eq!(o.status.code(), Some(0), "{}", stdout(&o));
    assert!(stdout(&o).ends_with("2 policies: 0 errors, 0 warnings\n"));

    // A warning: exit 0, or 2 with --strict.
    let dir = tempfile::tempdir().unwrap();
    copy_dir(&repo().join("fixtures/review/policies"), dir.path());
    let general = dir.path().join("general.toml");
    let text = std::fs::read_to_string(&general).unwrap();
    std::fs::write(
        &general,
        text.replace("id = \"ssn.local\"", "id = \"ssn.local\"\nmin_count = 0"),
    )
    .unwrap();
    let d = dir.path().to_str().unwrap();
    let o = policy(&["check", d]);
    assert_eq!(o.status.code(), Some(0));
    assert!(
        stdout(&o).contains(&format!(
            "{d}/general.toml:16:6: warning[min-count-zero]: rule \"ssn.local\": min_count = 0"
        )),
        "{}",
        stdout(&o)
    );
    let o = policy(&["check", "--strict", d]);
    assert_eq!(o.status.code(), Some(2));

    // An error (and a key whose policy is gone): exit 1, every problem listed.
    std::fs::write(&general, "# being rewritten\n").unwrap();
    std::fs::remove_file(dir.path().join("clinical.toml")).unwrap();
    let o = policy(&["check", d]);
    assert_eq!(o.status.code(), Some(1));
    let out = stdout(&o);
    assert!(
        out.contains(&format!(
            "{d}/general.toml:1:1: defaults: the file is empty or only comments;"
        )),
        "{out}"
    );
    assert!(
        out.contains(&format!(
            "{CONFIG}: key[1].policy: key \"clinic\" names policy \"clinical\", which is not in {d}"
        )),
        "{out}"
    );
}

#[test]
fn check_needs_no_classifier_or_onnx_runtime() {
    // The configuration names the real classifier and an ONNX Runtime library that does not
    // exist: serving would refuse to start, checking does not load either.
    let dir = tempfile::tempdir().unwrap();
    let config = std::fs::read_to_string(repo().join(CONFIG))
        .unwrap()
        .replace(
            "[classifier]\ndir = \"\"",
            &format!(
                "[classifier]\ndir = \"{}\"\nort_library = \"/nonexistent/libonnxruntime.so.1.31.1\"",
                repo().join("models/classifier").display()
            ),
        )
        .replace(
            "dir = \"policies\"",
            &format!(
                "dir = \"{}\"",
                repo().join("fixtures/review/policies").display()
            ),
        );
    let path = dir.path().join("veil.toml");
    std::fs::write(&path, config).unwrap();
    let o = veil(&["--config", path.to_str().unwrap(), "policy", "check"]);
    assert_eq!(o.status.code(), Some(0), "{}", stdout(&o));
    let o = veil(&["--config", path.to_str().unwrap(), "policy", "test"]);
    assert_eq!(
        o.status.code(),
        Some(1),
        "running cases does need the classifier"
    );
}

#[test]
fn shipped_policies_lint_clean_but_for_the_missing_baa() {
    let o = veil(&["policy", "check"]);
    assert_eq!(o.status.code(), Some(0));
    let out = stdout(&o);
    let warnings: Vec<&str> = out.lines().filter(|l| l.contains("warning[")).collect();
    assert_eq!(warnings.len(), 1, "{out}");
    assert!(
        warnings[0].starts_with("veil.toml: warning[no-baa]: upstream \"openai\""),
        "{out}"
    );
}

/// `veil policy test` on the shipped policies and their suites (policies/tests), with the
/// shipped configuration: the classifier and ONNX Runtime `make` fetches.
#[test]
fn the_shipped_policy_suites_pass() {
    let o = veil(&["policy", "test"]);
    let out = stdout(&o);
    assert_eq!(
        o.status.code(),
        Some(0),
        "{out}{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let last = out.lines().last().unwrap_or_default();
    assert!(last.ends_with(" passed, 0 failed"), "{out}");
    let passed: usize = last.split(' ').next().unwrap().parse().unwrap();
    assert!(passed >= 30, "{out}");
}

#[test]
fn a_failing_case_prints_what_differs() {
    let dir = tempfile::tempdir().unwrap();
    copy_dir(&repo().join("fixtures/review/policies"), dir.path());
    std::fs::create_dir(dir.path().join("tests")).unwrap();
    std::fs::write(
        dir.path().join("tests/general.toml"),
        r#"policy = "general"

[[case]]
name = "emails are redacted"
prompt = "Write to jane.morrow@example.com"
expect = { action = "redact", route = "cloud", rules = ["contact.redact"], entities = ["EMAIL"], upstream_excludes = ["jane.morrow@example.com"] }

[[case]]
name = "a wrong expectation"
key = "app"
prompt = "Call 617-555-0142 or mail jane.morrow@example.com"
expect = { action = "local", route = "local", rules = ["ssn.local"], entities_include = ["SSN"], upstream_excludes = ["617-555-0142"], upstream_contains = ["jane.morrow@example.com"] }
"#,
    )
    .unwrap();
    let d = dir.path().to_str().unwrap();
    let o = policy(&["test", d]);
    assert_eq!(o.status.code(), Some(1));
    let want = format!(
        "FAIL  {d}/tests/general.toml:8  a wrong expectation
        action    expected local, got redact
        route     expected local, got cloud
        rules     expected [ssn.local], got [contact.redact]: missing ssn.local; unexpected contact.redact
        entities  expected to include SSN, got [EMAIL, PHONE]
        upstream  must contain \"jane.morrow@example.com\", but it does not
1 passed, 1 failed
"
    );
    assert_eq!(stdout(&o), want);
}

#[test]
fn explain_matches_the_golden_trace() {
    let prompt =
        "Mail jane.morrow@example.com or call 617-555-0142 about the renewal due 03/14/2025.";
    let o = policy(&["explain", "--key", "app", "--text", prompt]);
    assert_eq!(o.status.code(), Some(0));
    golden("explain.txt", &stdout(&o));
    let o = policy(&["explain", "--key", "app", "--text", prompt, "--json"]);
    golden("explain.json", &stdout(&o));
    // Values are masked unless asked for.
    assert!(!stdout(&o).contains("jane.morrow") && !stdout(&o).contains("0142"));
    let o = policy(&[
        "explain",
        "--key",
        "app",
        "--text",
        prompt,
        "--json",
        "--show-values",
    ]);
    let doc: Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(doc["findings"][0]["value"], "jane.morrow@example.com");
    let body = doc["upstream_body"].to_string();
    assert!(
        body.contains("<EMAIL_1>") && body.contains("03/14/2025"),
        "{body}"
    );
}

#[test]
fn explain_a_whole_request_file() {
    let dir = tempfile::tempdir().unwrap();
    let request = dir.path().join("request.json");
    std::fs::write(
        &request,
        r#"{"model": "gpt-4o-mini", "messages": [
            {"role": "user", "content": "Look this up"},
            {"role": "assistant", "content": null, "tool_calls": [{"id": "c1", "type": "function",
              "function": {"name": "lookup", "arguments": "{\"ssn\": \"536-22-8745\"}"}}]}]}"#,
    )
    .unwrap();
    let o = policy(&[
        "explain",
        "--key",
        "app",
        "--request",
        request.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(0));
    let out = stdout(&o);
    assert!(
        out.contains("messages[1].tool_calls[0].function.arguments#/ssn  0..11  SSN"),
        "{out}"
    );
    assert!(out.contains("action     local:"), "{out}");
    assert!(out.contains("nothing leaves veil"), "{out}");
    // A request the server would refuse is refused here too, with the same reason.
    std::fs::write(
        &request,
        r#"{"model": "gpt-4o-mini", "messages": [], "smuggled": "x"}"#,
    )
    .unwrap();
    let o = policy(&[
        "explain",
        "--key",
        "app",
        "--request",
        request.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("unknown field `smuggled`"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
}

/// The fixture policies with e-mail addresses no longer redacted (weaker) and SSNs blocked
/// instead of kept local (stricter).
fn changed_policies(to: &Path) {
    copy_dir(&repo().join("fixtures/review/policies"), to);
    let general = to.join("general.toml");
    let text = std::fs::read_to_string(&general).unwrap();
    let text = text
        .replace(
            "entities = [\"EMAIL\", \"PHONE\"]",
            "entities = [\"PHONE\"]",
        )
        .replace(
            "entities = [\"SSN\"]\naction = \"local\"",
            "entities = [\"SSN\"]\naction = \"block\"",
        );
    std::fs::write(&general, text).unwrap();
}

#[test]
fn diff_lists_exactly_the_changed_lines_and_exits_3_on_a_weakening() {
    let dir = tempfile::tempdir().unwrap();
    changed_policies(dir.path());
    let new = dir.path().to_str().unwrap();
    let args = [
        "--config",
        CONFIG,
        "policy",
        "diff",
        "fixtures/review/policies",
        new,
        "--corpus",
        "fixtures/review/corpus.jsonl",
    ];
    let o = veil(&args);
    assert_eq!(o.status.code(), Some(3), "{}", stdout(&o));
    assert_eq!(
        stdout(&o),
        "line 2: redact -> allow  WEAKER
  rules     [contact.redact] -> []
  upstream  the body that leaves differs
line 3: local -> block
line 6: redact -> allow  WEAKER
  rules     [contact.redact] -> []
  upstream  the body that leaves differs
transitions
  local -> block     1
  redact -> allow    2
7 lines, 3 changed, 2 weaker
"
    );
    let mut allow = args.to_vec();
    allow.push("--allow-weaker");
    assert_eq!(veil(&allow).status.code(), Some(0));
    let mut json = args.to_vec();
    json.push("--json");
    let doc: Value = serde_json::from_str(&stdout(&veil(&json))).unwrap();
    let lines: Vec<u64> = doc["changes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["line"].as_u64().unwrap())
        .collect();
    assert_eq!(lines, [2, 3, 6]);
    assert_eq!(doc["weaker"], 2);
    assert_eq!(doc["transitions"]["redact -> allow"], 2);
    // Swapped, the blocked SSN line becomes local again: that is a weakening too.
    let o = policy(&[
        "diff",
        new,
        "fixtures/review/policies",
        "--corpus",
        "fixtures/review/corpus.jsonl",
    ]);
    assert_eq!(o.status.code(), Some(3), "the reverse weakens line 3");

    // Only an operator changes: same action and rules, but what leaves differs.
    let masked = tempfile::tempdir().unwrap();
    copy_dir(&repo().join("fixtures/review/policies"), masked.path());
    let general = masked.path().join("general.toml");
    let text = std::fs::read_to_string(&general).unwrap();
    std::fs::write(
        &general,
        format!("{text}\n[redaction.operators]\nPHONE = \"mask\"\n"),
    )
    .unwrap();
    let o = policy(&[
        "diff",
        "fixtures/review/policies",
        masked.path().to_str().unwrap(),
        "--corpus",
        "fixtures/review/corpus.jsonl",
    ]);
    assert_eq!(o.status.code(), Some(0));
    assert_eq!(
        stdout(&o),
        "line 5: redact -> redact\n  upstream  the body that leaves differs\n7 lines, 1 changed, 0 weaker\n"
    );
}

#[test]
fn diff_reads_the_old_version_from_git() {
    let repo_dir = tempfile::tempdir().unwrap();
    let r = repo_dir.path();
    copy_dir(
        &repo().join("fixtures/review/policies"),
        &r.join("policies"),
    );
    let git = |args: &[&str]| {
        let o = Command::new("git")
            .current_dir(r)
            .args(["-c", "user.name=t", "-c", "user.email=t@example.org"])
            .args(args)
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    };
    git(&["init", "-q"]);
    git(&["add", "."]);
    git(&["commit", "-qm", "policies"]);
    changed_policies(&r.join("policies"));
    let config = repo().join(CONFIG);
    let corpus = repo().join("fixtures/review/corpus.jsonl");
    let o = veil_in(
        r,
        &[
            "--config",
            config.to_str().unwrap(),
            "policy",
            "diff",
            "HEAD:policies",
            "policies",
            "--corpus",
            corpus.to_str().unwrap(),
        ],
    );
    assert_eq!(o.status.code(), Some(3), "{}", stdout(&o));
    assert!(stdout(&o).ends_with("7 lines, 3 changed, 2 weaker\n"));
    let o = veil_in(
        r,
        &[
            "--config",
            config.to_str().unwrap(),
            "policy",
            "diff",
            "HEAD:nowhere",
            "policies",
            "--corpus",
            corpus.to_str().unwrap(),
        ],
    );
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("git cannot read nowhere at HEAD"));
}
