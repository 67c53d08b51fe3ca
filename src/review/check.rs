//! `veil policy check [DIR]`: validates every policy file, the keys that refer to them and the
//! dictionaries they declare, then lints them — without loading the classifier or ONNX Runtime.

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use crate::config::Config;
use crate::detect::PatternDetector;
use crate::policy::{self, Lint, Policy, Sources};

/// What `check` found.
#[derive(Debug, Default)]
pub struct Report {
    /// Policies that compiled, in file order.
    pub policies: Vec<Policy>,
    /// Errors: file:line:column and what to fix. Any error makes the check fail.
    pub errors: Vec<String>,
    /// Lint warnings.
    pub warnings: Vec<Lint>,
    /// Set when no `veil.toml` was read: the checks that need keys and upstreams were skipped.
    pub without_config: bool,
}

impl Report {
    /// 0 clean, 1 errors, 2 warnings when `strict`.
    pub fn exit_code(&self, strict: bool) -> u8 {
        if !self.errors.is_empty() {
            1
        } else if strict && !self.warnings.is_empty() {
            2
        } else {
            0
        }
    }

    /// The report as the command prints it.
    pub fn render(&self) -> String {
        let mut out = String::new();
        for e in &self.errors {
            let _ = writeln!(out, "{e}");
        }
        for w in &self.warnings {
            let _ = writeln!(out, "{w}");
        }
        for p in &self.policies {
            let _ = writeln!(
                out,
                "ok  {}  {} rules  sha256:{}",
                p.name,
                p.rules.len(),
                p.digest
            );
        }
        if self.without_config {
            let _ = writeln!(
                out,
                "note: no veil.toml read; keys, tenants, models and upstreams were not checked"
            );
        }
        let _ = write!(
            out,
            "{} policies: {} errors, {} warnings",
            self.policies.len(),
            self.errors.len(),
            self.warnings.len()
        );
        out
    }
}

/// Checks the policies in `dir` against `config` (when there is one; `config_file` names it).
pub fn check(dir: &Path, config: Option<(&Config, &Path)>) -> Report {
    let mut report = Report {
        without_config: config.is_none(),
        ..Report::default()
    };
    let sources = match Sources::read(dir) {
        Ok(s) => s,
        Err(e) => {
            report.errors.push(e.to_string());
            return report;
        }
    };
    for (path, result) in sources.compile_each() {
        match result {
            Ok(p) => match PatternDetector::new(&p.patterns) {
                Ok(_) => report.policies.push(p),
                Err(e) => report
                    .errors
                    .push(format!("{}: dictionaries: {e}", path.display())),
            },
            Err(e) => report.errors.push(e.to_string()),
        }
    }
    if sources.is_empty() {
        report
            .errors
            .push(policy::PolicyError::Empty(dir.to_owned()).to_string());
    }
    if let Some((config, file)) = config {
        let names: BTreeSet<&str> = sources.names().collect();
        for (i, k) in config.keys.iter().enumerate() {
            if !names.contains(k.policy.as_str()) {
                report.errors.push(format!(
                    "{}: key[{i}].policy: key {:?} names policy {:?}, which is not in {}",
                    file.display(),
                    k.id,
                    k.policy,
                    dir.display()
                ));
            }
        }
    }
    let compiled: Vec<&Policy> = report.policies.iter().collect();
    report.warnings = policy::lint(&compiled, config.map(|(c, f)| (c, PathBuf::from(f))));
    report
}
