//! The `veil` command line: `serve`, `scan`, `policy check|test|explain|diff`, `key hash`,
//! `audit verify`.

use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};
use serde_json::{Value, json};

use veil::config::Config;
use veil::detect::Finding;
use veil::detect::classifier::decode::WordScores;
use veil::snapshot::{PolicySet, Snapshot};

#[derive(Parser)]
#[command(
    name = "veil",
    version,
    about = "Privacy-policy enforcement proxy for LLM traffic"
)]
struct Cli {
    /// Configuration file [default: veil.toml].
    #[arg(long, short, global = true, env = "VEIL_CONFIG")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the OpenAI-compatible API (the default).
    Serve,
    /// Print what veil detects in a text, a file, or a JSONL file.
    Scan {
        /// Policy whose dictionaries apply (a name in the policies directory).
        #[arg(long, default_value = "default")]
        policy: String,
        /// Read lines {"id","text"} from IN and write {"id","spans"} to OUT (offsets in code points).
        #[arg(long, num_args = 2, value_names = ["IN", "OUT"])]
        jsonl: Option<Vec<PathBuf>>,
        /// Only findings a rule of the policy acts on (redact, local or block; by entity type and
        /// score): what the policy protects, rather than everything detected.
        #[arg(long)]
        acted_on: bool,
        /// With --jsonl: also write the classifier's word scores of every record to FILE.
        #[arg(long, value_name = "FILE", requires = "jsonl")]
        word_scores_out: Option<PathBuf>,
        /// With --jsonl: decode word scores read from FILE (written by --word-scores-out for the
        /// same records and model) instead of running the model: other thresholds or rules,
        /// same scores.
        #[arg(long, value_name = "FILE", requires = "jsonl")]
        word_scores_in: Option<PathBuf>,
        /// Decoding rules to switch off, by id, on top of `classifier.rules_off`.
        #[arg(long, value_name = "ID", value_delimiter = ',')]
        rules_off: Vec<String>,
        /// With --jsonl: also write DIR/<rule id>.jsonl for every rule that runs, the output
        /// without that rule (the model runs once per record).
        #[arg(long, value_name = "DIR", requires = "jsonl")]
        ablate: Option<PathBuf>,
        /// With --jsonl: read each record as a conversation of messages of at least BYTES bytes
        /// (cut at the next line or sentence end), each message read by the classifier on its
        /// own after the end of the one before, as the server does with the segment cache
        /// (`detect.cache_entries`): how that reading compares on labelled text. Offsets stay
        /// the record's.
        #[arg(long, value_name = "BYTES", requires = "jsonl", conflicts_with_all = ["word_scores_in", "word_scores_out", "ablate"])]
        as_messages: Option<usize>,
        /// Scan this file.
        #[arg(long)]
        file: Option<PathBuf>,
        /// Scan this text (or standard input when neither TEXT nor --file is given).
        text: Option<String>,
    },
    /// Policy tools.
    Policy {
        #[command(subcommand)]
        command: PolicyCommand,
    },
    /// API key tools.
    Key {
        #[command(subcommand)]
        command: KeyCommand,
    },
    /// Audit log tools.
    Audit {
        #[command(subcommand)]
        command: AuditCommand,
    },
}

#[derive(Subcommand)]
enum PolicyCommand {
    /// Validate every policy file and the keys that refer to them, and lint them, without loading
    /// any model. Exit code 0 clean, 1 errors, 2 warnings with --strict.
    Check {
        /// Policy directory [default: policies.dir from veil.toml].
        dir: Option<PathBuf>,
        /// Fail (exit code 2) on warnings too.
        #[arg(long)]
        strict: bool,
    },
    /// Run the policy test files DIR/tests/*.toml. Exit code 1 when a case fails.
    Test {
        /// Policy directory [default: policies.dir from veil.toml].
        dir: Option<PathBuf>,
        /// List passing cases too.
        #[arg(long, short)]
        verbose: bool,
    },
    /// Show the whole decision for one request: findings, every rule, the action and why, the
    /// route and the body the upstream would receive.
    Explain {
        /// Policy to apply [default: the key's].
        #[arg(long)]
        policy: Option<String>,
        /// A key id from veil.toml: its tenant and policy.
        #[arg(long)]
        key: Option<String>,
        /// Tenant [default: the key's, or "default"].
        #[arg(long)]
        tenant: Option<String>,
        /// The prompt, sent as one user message.
        #[arg(long, conflicts_with = "request", required_unless_present = "request")]
        text: Option<String>,
        /// A whole chat request (JSON) in a file.
        #[arg(long)]
        request: Option<PathBuf>,
        /// Model of a --text request.
        #[arg(long, default_value = veil::review::DEFAULT_MODEL)]
        model: String,
        /// Policy directory [default: policies.dir from veil.toml].
        #[arg(long)]
        dir: Option<PathBuf>,
        /// One JSON document instead of text.
        #[arg(long)]
        json: bool,
        /// Show detected values (masked by default).
        #[arg(long)]
        show_values: bool,
    },
    /// Replay a corpus through two versions of the policies and list every decision that
    /// changes. Exit code 3 when a decision becomes less restrictive, unless --allow-weaker.
    Diff {
        /// The policies before: a directory, or REV:DIR from git (e.g. origin/main:policies).
        old: String,
        /// The policies after: a directory, or REV:DIR.
        new: String,
        /// JSONL: one chat request, {"text", "key"?, "model"?} or {"request", "key"?} per line.
        #[arg(long)]
        corpus: PathBuf,
        /// Key id for lines that name none.
        #[arg(long)]
        key: Option<String>,
        /// One JSON document instead of text.
        #[arg(long)]
        json: bool,
        /// Exit 0 even when a decision becomes less restrictive.
        #[arg(long)]
        allow_weaker: bool,
    },
}

#[derive(Subcommand)]
enum KeyCommand {
    /// Print the SHA-256 to put in `veil.toml` for a key (read from standard input if omitted).
    Hash {
        /// The key.
        key: Option<String>,
    },
}

#[derive(Subcommand)]
#[allow(clippy::large_enum_variant)] // parsed once per process
enum AuditCommand {
    /// Check the hash chain of the audit log (read-only; safe beside a live server). Exit code 1
    /// when a link is broken.
    Verify {
        /// Database URL [default: audit.url from veil.toml].
        #[arg(long)]
        db: Option<String>,
        /// First sequence number to check (its link to the row before is taken as given).
        #[arg(long)]
        from: Option<i64>,
        /// Last sequence number to check.
        #[arg(long)]
        to: Option<i64>,
        /// One JSON document instead of text.
        #[arg(long)]
        json: bool,
        /// A checkpoint file kept outside the database (repeatable) [default:
        /// audit.checkpoint_file, if it exists]. With it, a cut tail or an older copy of the
        /// database is detected.
        #[arg(long = "checkpoints", value_name = "FILE")]
        checkpoints: Vec<PathBuf>,
        /// The checkpoint signers' public key file (repeatable) [default:
        /// audit.public_key_file, if it exists].
        #[arg(long = "public-key", value_name = "FILE")]
        public_keys: Vec<PathBuf>,
        /// Verify an export written by `veil audit export` instead of a database.
        #[arg(long, value_name = "DIR", conflicts_with_all = ["db", "from", "to"])]
        export: Option<PathBuf>,
    },
    /// Write a range of the chain, its signed checkpoints and the public key to a directory,
    /// to be verified elsewhere with `veil audit verify --export DIR`.
    Export {
        /// Database URL [default: audit.url from veil.toml].
        #[arg(long)]
        db: Option<String>,
        /// First row: a sequence number, an RFC 3339 time or a date (inclusive) [default: 1].
        #[arg(long)]
        from: Option<String>,
        /// Last row: a sequence number (inclusive), or a time or date (exclusive) [default: the
        /// last]. The export extends to the next signed checkpoint.
        #[arg(long)]
        to: Option<String>,
        /// Directory to write (absent or empty).
        dir: PathBuf,
    },
    /// Remove rows older than a date, up to the last signed checkpoint before it, after
    /// verifying the whole chain (rows younger than audit.retention_days are never removed).
    /// With SQLite the server must be stopped (it holds the database as its writer).
    Prune {
        /// Database URL [default: audit.url from veil.toml].
        #[arg(long)]
        db: Option<String>,
        /// Remove rows written before this time (RFC 3339 or YYYY-MM-DD).
        #[arg(long)]
        before: String,
        /// Say what would be removed, and remove nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// List the requests that match filters (newest first), or count them with --stats.
    Query {
        /// Database URL [default: audit.url from veil.toml].
        #[arg(long)]
        db: Option<String>,
        /// From this time on (RFC 3339 or YYYY-MM-DD), inclusive.
        #[arg(long)]
        from: Option<String>,
        /// Before this time (RFC 3339 or YYYY-MM-DD), exclusive.
        #[arg(long)]
        to: Option<String>,
        /// Tenant.
        #[arg(long)]
        tenant: Option<String>,
        /// API key id.
        #[arg(long)]
        key: Option<String>,
        /// Action: allow, redact, local, block, reject.
        #[arg(long)]
        action: Option<String>,
        /// Route: local or an upstream name.
        #[arg(long)]
        route: Option<String>,
        /// A rule id that matched.
        #[arg(long)]
        rule: Option<String>,
        /// An entity type that was found (e.g. SSN).
        #[arg(long)]
        entity: Option<String>,
        /// HTTP status sent.
        #[arg(long)]
        status: Option<i64>,
        /// Outcome: completed, blocked, upstream_error, …
        #[arg(long)]
        outcome: Option<String>,
        /// One request id.
        #[arg(long)]
        request_id: Option<String>,
        /// Requests that carried this value ("-": read it from standard input), found by its
        /// keyed digest under VEIL_HMAC_KEY; needs --type.
        #[arg(long, requires = "value_type")]
        value: Option<String>,
        /// Entity type of --value (e.g. SSN).
        #[arg(long = "type", id = "value_type")]
        value_type: Option<String>,
        /// table, jsonl or csv.
        #[arg(long, default_value = "table")]
        format: String,
        /// Most rows (newest first).
        #[arg(long)]
        limit: Option<usize>,
        /// Counts by action, route, entity type, tenant and day instead of rows.
        #[arg(long)]
        stats: bool,
    },
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    veil::telemetry::init_logging();
    match run(cli) {
        Ok(code) => std::process::ExitCode::from(code),
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

const DEFAULT_CONFIG: &str = "veil.toml";

/// Runs a command; the exit code when it did not fail outright.
fn run(cli: Cli) -> anyhow::Result<u8> {
    let config_file = cli
        .config
        .clone()
        .unwrap_or_else(|| PathBuf::from(DEFAULT_CONFIG));
    let config_file = config_file.as_path();
    match cli.command.unwrap_or(Command::Serve) {
        Command::Serve => serve(config_file).map(|()| 0),
        Command::Scan {
            policy,
            jsonl,
            acted_on,
            word_scores_out,
            word_scores_in,
            rules_off,
            ablate,
            as_messages,
            file,
            text,
        } => {
            let mut config = Config::load(config_file)?;
            config.classifier.rules_off.extend(rules_off);
            let classifier = veil::snapshot::load_classifier(&config.classifier)?;
            let set = Snapshot::policy_set(
                &config.policies.dir.join(format!("{policy}.toml")),
                &classifier,
            )?;
            match (jsonl, file, text) {
                (Some(paths), _, _) => match paths.as_slice() {
                    [input, output] => scan_jsonl(
                        &set,
                        &ScanJsonl {
                            acted_on,
                            input,
                            output,
                            scores_out: word_scores_out.as_deref(),
                            scores_in: word_scores_in.as_deref(),
                            ablate: ablate.as_deref(),
                            as_messages,
                        },
                    ),
                    _ => bail!("--jsonl takes IN and OUT"),
                },
                (None, Some(path), _) => {
                    let text = std::fs::read_to_string(&path)
                        .with_context(|| format!("cannot read {}", path.display()))?;
                    print_findings(&set, acted_on, &text)
                }
                (None, None, Some(text)) => print_findings(&set, acted_on, &text),
                (None, None, None) => {
                    let mut text = String::new();
                    std::io::Read::read_to_string(&mut std::io::stdin(), &mut text)?;
                    print_findings(&set, acted_on, &text)
                }
            }
            .map(|()| 0)
        }
        Command::Policy { command } => policy(cli.config.as_deref(), config_file, command),
        Command::Key {
            command: KeyCommand::Hash { key },
        } => {
            let key = match key {
                Some(k) => k,
                None => {
                    let mut line = String::new();
                    std::io::stdin().lock().read_line(&mut line)?;
                    line.trim().to_owned()
                }
            };
            if key.is_empty() {
                bail!("give a key as an argument or on standard input");
            }
            println!("{}", veil::auth::hash_key(&key));
            Ok(0)
        }
        Command::Audit {
            command:
                AuditCommand::Verify {
                    db,
                    from,
                    to,
                    json,
                    checkpoints,
                    public_keys,
                    export,
                },
        } => audit_verify(
            config_file,
            VerifyArgs {
                db,
                from,
                to,
                json,
                checkpoints,
                public_keys,
                export,
            },
        ),
        Command::Audit {
            command: AuditCommand::Export { db, from, to, dir },
        } => audit_export(config_file, db, from, to, &dir),
        Command::Audit {
            command:
                AuditCommand::Prune {
                    db,
                    before,
                    dry_run,
                },
        } => audit_prune(config_file, db, &before, dry_run),
        Command::Audit {
            command:
                AuditCommand::Query {
                    db,
                    from,
                    to,
                    tenant,
                    key,
                    action,
                    route,
                    rule,
                    entity,
                    status,
                    outcome,
                    request_id,
                    value,
                    value_type,
                    format,
                    limit,
                    stats,
                },
        } => {
            let config = Config::load(config_file)?;
            let format = match format.as_str() {
                "table" => veil::audit::Format::Table,
                "jsonl" => veil::audit::Format::Jsonl,
                "csv" => veil::audit::Format::Csv,
                other => bail!("--format {other:?}: use table, jsonl or csv"),
            };
            let hmac = match (value, value_type) {
                (Some(value), Some(entity)) => Some(value_digest(&config, &value, &entity)?),
                _ => None,
            };
            let query = veil::audit::Query {
                from,
                to,
                tenant,
                key_id: key,
                action,
                route,
                rule,
                entity,
                status,
                outcome,
                request_id,
                hmac,
                limit,
            };
            let url = db.unwrap_or(config.audit.url);
            runtime()?.block_on(async move {
                let store = veil::audit::open_read_only(&url).await?;
                if stats {
                    print!("{}", store.stats(&query).await?.render());
                } else {
                    print!(
                        "{}",
                        veil::audit::render(&store.query(&query).await?, format)
                    );
                }
                anyhow::Ok(0)
            })
        }
    }
}

/// `veil policy …`. `given` is the configuration file named on the command line, if any.
fn policy(given: Option<&Path>, config_file: &Path, command: PolicyCommand) -> anyhow::Result<u8> {
    use veil::review::{Workspace, check, diff, explain, suite};
    let dir_of = |config: &Config, dir: Option<PathBuf>| dir.unwrap_or(config.policies.dir.clone());
    match command {
        PolicyCommand::Check { dir, strict } => {
            // A policy repository may have no veil.toml: then only the policies are checked.
            let config = match given {
                Some(path) => Some(Config::load(path)?),
                None if config_file.exists() => Some(Config::load(config_file)?),
                None => None,
            };
            let dir = match (&config, dir) {
                (_, Some(d)) => d,
                (Some(c), None) => c.policies.dir.clone(),
                (None, None) => PathBuf::from("policies"),
            };
            let report = check::check(&dir, config.as_ref().map(|c| (c, config_file)));
            println!("{}", report.render());
            Ok(report.exit_code(strict))
        }
        PolicyCommand::Test { dir, verbose } => {
            let ws = Workspace::open(config_file)?;
            let dir = dir_of(&ws.config, dir);
            let outcome = suite::run(&ws, &dir)?;
            println!("{}", outcome.render(verbose));
            Ok(u8::from(outcome.failed() > 0))
        }
        PolicyCommand::Explain {
            policy,
            key,
            tenant,
            text,
            request,
            model,
            dir,
            json,
            show_values,
        } => {
            let ws = Workspace::open(config_file)?;
            let dir = dir_of(&ws.config, dir);
            let snapshot = ws.snapshot(Some(&dir))?;
            let principal = ws.principal(key.as_deref(), policy.as_deref(), tenant.as_deref())?;
            let request = match (text, request) {
                (Some(t), _) => veil::decide::Request::from_text(&model, &t),
                (None, Some(path)) => {
                    let bytes = std::fs::read(&path)
                        .with_context(|| format!("cannot read {}", path.display()))?;
                    ws.request(&bytes)?
                }
                (None, None) => bail!("give --text or --request"),
            };
            let decision = veil::decide::decide(&request, &principal, &snapshot)?;
            let opts = explain::Options { show_values };
            if json {
                let doc = explain::json(&request, &principal, &decision, &snapshot.digester, opts);
                println!("{}", serde_json::to_string_pretty(&doc)?);
            } else {
                print!(
                    "{}",
                    explain::text(&request, &principal, &decision, &snapshot.digester, opts)
                );
            }
            Ok(0)
        }
        PolicyCommand::Diff {
            old,
            new,
            corpus,
            key,
            json,
            allow_weaker,
        } => {
            let ws = Workspace::open(config_file)?;
            let (old_scratch, new_scratch) = (Scratch::new()?, Scratch::new()?);
            let old = diff::resolve(&old, &old_scratch.0)?;
            let new = diff::resolve(&new, &new_scratch.0)?;
            let report = diff::diff(&ws, &old, &new, &corpus, key.as_deref())?;
            if json {
                let mut doc = serde_json::to_value(&report)?;
                if let Some(o) = doc.as_object_mut() {
                    o.insert("weaker".to_owned(), json!(report.weaker()));
                }
                println!("{}", serde_json::to_string_pretty(&doc)?);
            } else {
                println!("{}", report.render());
            }
            Ok(report.exit_code(allow_weaker))
        }
    }
}

/// A scratch directory, removed when dropped (where `REV:DIR` policies are checked out).
struct Scratch(PathBuf);

impl Scratch {
    fn new() -> anyhow::Result<Self> {
        let path = std::env::temp_dir().join(format!("veil-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&path)?;
        Ok(Self(path))
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?)
}

fn serve(path: &Path) -> anyhow::Result<()> {
    let config = Config::load(path)?;
    runtime()?.block_on(async move {
        let running = veil::server::start(config, |k| std::env::var(k).ok()).await?;
        shutdown_signal().await;
        tracing::info!("shutting down: draining in-flight requests");
        let lost = running.shutdown().await;
        if lost > 0 {
            bail!("{lost} audit row(s) could not be written before shutdown");
        }
        tracing::info!("stopped");
        Ok(())
    })
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
}

/// What `veil scan` reports: every finding, or with `acted_on` those a rule of the policy acts on.
fn findings(set: &PolicySet, acted_on: bool, text: &str) -> anyhow::Result<Vec<Finding>> {
    let mut found = set.detectors.detect(text)?;
    if acted_on {
        found.retain(|f| set.policy.acts_on(f));
    }
    Ok(found)
}

/// What the server finds in `text` sent as a conversation of messages of at least `bytes`
/// bytes, each cut at an ASCII space or line break after a line or sentence end, read message
/// by message (`veil scan --as-messages`). The cut's one whitespace byte is the joined
/// document's separator, so offsets are `text`'s.
fn findings_as_messages(set: &PolicySet, text: &str, bytes: usize) -> anyhow::Result<Vec<Finding>> {
    let mut messages = Vec::new();
    let (mut start, mut prev) = (0, '\0');
    for (i, c) in text.char_indices() {
        if i - start >= bytes
            && i + 1 < text.len()
            && (c == ' ' || c == '\n')
            && matches!(prev, '.' | '?' | '!' | '\n')
        {
            messages.push(json!({"role": "user", "content": text.get(start..i)}));
            start = i + 1;
        }
        prev = c;
    }
    messages.push(json!({"role": "user", "content": text.get(start..)}));
    let extracted = veil::extract::chat(&json!({ "messages": messages }), usize::MAX);
    let (doc, starts) = extracted.joined();
    anyhow::ensure!(
        doc.len() == text.len(),
        "the messages do not rejoin to the text"
    );
    let readings = veil::scan::readings(&extracted, &doc, &starts, true);
    Ok(set.detectors.detect_readings(&doc, &readings, "scan")?)
}

fn print_findings(set: &PolicySet, acted_on: bool, text: &str) -> anyhow::Result<()> {
    let findings = findings(set, acted_on, text)?;
    let mut out = std::io::stdout().lock();
    if findings.is_empty() {
        writeln!(out, "no findings")?;
    }
    for f in findings {
        let value = text.get(f.start..f.end).unwrap_or_default();
        let (start, end) = char_offsets(text, f.start, f.end);
        writeln!(
            out,
            "{start}..{end}\t{}\t{:.2}\t{}\t{value:?}",
            f.entity, f.score, f.recognizer
        )?;
    }
    Ok(())
}

fn char_offsets(text: &str, start: usize, end: usize) -> (usize, usize) {
    let count = |b: usize| text.get(..b).map_or(0, |s| s.chars().count());
    (count(start), count(end))
}

/// `veil scan --jsonl` and its options.
struct ScanJsonl<'a> {
    acted_on: bool,
    input: &'a Path,
    output: &'a Path,
    scores_out: Option<&'a Path>,
    scores_in: Option<&'a Path>,
    ablate: Option<&'a Path>,
    as_messages: Option<usize>,
}

/// One record's word scores as `--word-scores-out` writes them: the model and a digest of the
/// text they belong to (no text), so scores are never decoded against another text or model.
#[derive(serde::Serialize, serde::Deserialize)]
struct ScoredRecord {
    id: Value,
    model: String,
    text_sha256: String,
    #[serde(flatten)]
    scores: WordScores,
}

fn create(path: &Path) -> anyhow::Result<std::io::BufWriter<std::fs::File>> {
    Ok(std::io::BufWriter::new(
        std::fs::File::create(path).with_context(|| format!("cannot write {}", path.display()))?,
    ))
}

fn write_spans(
    out: &mut impl Write,
    id: &Value,
    text: &str,
    findings: Vec<Finding>,
) -> anyhow::Result<()> {
    let spans: Vec<Value> = findings
        .into_iter()
        .map(|f| {
            let (start, end) = char_offsets(text, f.start, f.end);
            json!({"start": start, "end": end, "label": f.entity.as_str(), "score": f.score, "recognizer": f.recognizer})
        })
        .collect();
    serde_json::to_writer(&mut *out, &json!({"id": id, "spans": spans}))?;
    out.write_all(b"\n")?;
    Ok(())
}

fn scan_jsonl(set: &PolicySet, o: &ScanJsonl<'_>) -> anyhow::Result<()> {
    use sha2::Digest;
    let classifier = match &set.detectors.classifier {
        veil::scan::ClassifierState::Loaded(c) => Some(c.clone()),
        _ => None,
    };
    let scored = o.scores_out.is_some() || o.scores_in.is_some() || o.ablate.is_some();
    let Some(c) = classifier.filter(|_| scored) else {
        if scored {
            bail!(
                "--word-scores-out, --word-scores-in and --ablate need the classifier (classifier.dir is empty or it did not load)"
            );
        }
        return scan_plain(set, o);
    };
    let mut stored: std::collections::HashMap<String, ScoredRecord> = match o.scores_in {
        None => Default::default(),
        Some(path) => {
            let file = std::fs::File::open(path)
                .with_context(|| format!("cannot read {}", path.display()))?;
            let mut out = std::collections::HashMap::new();
            for (n, line) in std::io::BufReader::new(file).lines().enumerate() {
                let r: ScoredRecord = serde_json::from_str(&line?).with_context(|| {
                    format!("{}:{}: not a word-score record", path.display(), n + 1)
                })?;
                out.insert(r.id.to_string(), r);
            }
            out
        }
    };
    let mut output = create(o.output)?;
    let mut scores_out = o.scores_out.map(create).transpose()?;
    let rules = c.rules();
    let mut ablations = match o.ablate {
        None => Vec::new(),
        Some(dir) => {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("cannot create {}", dir.display()))?;
            veil::detect::classifier::rules::RULES
                .iter()
                .enumerate()
                .filter(|(i, _)| rules.runs(*i))
                .map(|(i, r)| {
                    Ok((
                        rules.and_without(i),
                        create(&dir.join(format!("{}.jsonl", r.id)))?,
                    ))
                })
                .collect::<anyhow::Result<Vec<_>>>()?
        }
    };
    for_records(o.input, |id, text| {
        let digest = hex::encode(sha2::Sha256::digest(text.as_bytes()));
        let scores = match o.scores_in {
            None => c.word_scores(text)?,
            Some(path) => {
                let r = stored.remove(&id.to_string()).with_context(|| {
                    format!("{}: no word scores for record {id}", path.display())
                })?;
                if r.model != c.version() || r.text_sha256 != digest || !c.fits(&r.scores) {
                    bail!(
                        "{}: the word scores of record {id} are for another text or model ({}); write them again with --word-scores-out",
                        path.display(),
                        r.model
                    );
                }
                r.scores
            }
        };
        let mut found = set.detectors.detect_scored(text, &scores, rules)?;
        if o.acted_on {
            found.retain(|f| set.policy.acts_on(f));
        }
        write_spans(&mut output, id, text, found)?;
        for (without, out) in &mut ablations {
            let mut found = set.detectors.detect_scored(text, &scores, *without)?;
            if o.acted_on {
                found.retain(|f| set.policy.acts_on(f));
            }
            write_spans(out, id, text, found)?;
        }
        if let Some(out) = &mut scores_out {
            let record = ScoredRecord {
                id: id.clone(),
                model: c.version().to_owned(),
                text_sha256: digest,
                scores,
            };
            serde_json::to_writer(&mut *out, &record)?;
            out.write_all(b"\n")?;
        }
        Ok(())
    })?;
    for out in std::iter::once(&mut output)
        .chain(scores_out.as_mut())
        .chain(ablations.iter_mut().map(|(_, out)| out))
    {
        out.flush()?;
    }
    Ok(())
}

/// `veil scan --jsonl` without word scores: what the server would detect, record by record.
fn scan_plain(set: &PolicySet, o: &ScanJsonl<'_>) -> anyhow::Result<()> {
    let mut output = create(o.output)?;
    for_records(o.input, |id, text| {
        let found = match o.as_messages {
            Some(bytes) => {
                let mut found = findings_as_messages(set, text, bytes)?;
                if o.acted_on {
                    found.retain(|f| set.policy.acts_on(f));
                }
                found
            }
            None => findings(set, o.acted_on, text)?,
        };
        write_spans(&mut output, id, text, found)
    })?;
    output.flush()?;
    Ok(())
}

/// Calls `each` with the id and text of every record of a JSONL file.
fn for_records(
    input: &Path,
    mut each: impl FnMut(&Value, &str) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    let reader = std::io::BufReader::new(
        std::fs::File::open(input).with_context(|| format!("cannot read {}", input.display()))?,
    );
    for (n, line) in reader.lines().enumerate() {
        let line = line?;
        if line.trim().is_empty() {
            continue;
        }
        let record: Value = serde_json::from_str(&line)
            .with_context(|| format!("{}:{}: not a JSON object", input.display(), n + 1))?;
        let id = record.get("id").cloned().unwrap_or(Value::Null);
        let text = record
            .get("text")
            .and_then(Value::as_str)
            .with_context(|| format!("{}:{}: no \"text\" string", input.display(), n + 1))?;
        each(&id, text)?;
    }
    Ok(())
}

/// The stored digest of a value (first 16 hex digits), under the deployment's value key.
fn value_digest(config: &Config, value: &str, entity: &str) -> anyhow::Result<String> {
    let value = if value == "-" {
        let mut line = String::new();
        std::io::stdin().lock().read_line(&mut line)?;
        line.trim_end_matches(['\r', '\n']).to_owned()
    } else {
        value.to_owned()
    };
    let entity: veil::detect::EntityType = entity
        .parse()
        .map_err(|_| anyhow::anyhow!("--type {entity:?} is not an entity type"))?;
    let Some(key) = std::env::var(&config.hmac_key_env)
        .ok()
        .filter(|k| !k.is_empty())
    else {
        bail!(
            "set {} to the key the server used: digests are keyed, so a value can only be found with that key",
            config.hmac_key_env
        );
    };
    let digest = veil::audit::ValueDigester::new(key.as_bytes()).digest(entity.as_str(), &value);
    Ok(digest.get(..16).unwrap_or(&digest).to_owned())
}

/// Arguments of `veil audit verify`.
struct VerifyArgs {
    db: Option<String>,
    from: Option<i64>,
    to: Option<i64>,
    json: bool,
    checkpoints: Vec<PathBuf>,
    public_keys: Vec<PathBuf>,
    export: Option<PathBuf>,
}

/// The config file's settings, or the defaults when there is none (an auditor verifying an
/// export or a copied database on another machine has no `veil.toml`).
fn config_or_default(path: &Path) -> anyhow::Result<Config> {
    if path.exists() {
        return Ok(Config::load(path)?);
    }
    let mut config = Config::parse(path, "")?;
    config.apply_env(path, |k| std::env::var(k).ok())?;
    Ok(config)
}

fn audit_verify(path: &Path, args: VerifyArgs) -> anyhow::Result<u8> {
    let mut config = config_or_default(path)?;
    if let Some(db) = &args.db {
        // Key and checkpoint files not set explicitly are looked for beside this database.
        config.audit.url.clone_from(db);
    }
    let (mut evidence, damaged) = veil::audit::keys::evidence(
        &config.audit,
        |k| std::env::var(k).ok(),
        &args.public_keys,
        &args.checkpoints,
    )?;
    if args.export.is_some() && args.checkpoints.is_empty() {
        // An export carries its own checkpoints; the local checkpoint file belongs to another
        // log (or to this one's later life) and is used only when named.
        evidence.checkpoints.clear();
    }
    let url = args.db.unwrap_or(config.audit.url);
    let (v, scope) = match &args.export {
        Some(dir) => {
            let (m, v) = veil::audit::export::verify_export(dir, &evidence)?;
            (
                v,
                format!(
                    "export {} (seq {}..={})",
                    dir.display(),
                    m.from_seq,
                    m.to_seq
                ),
            )
        }
        None => runtime()?.block_on(async {
            // Read-only, and never the server's start-up work: verifying a live database must
            // not write to it, and a missing one is an error, not an empty chain.
            let store = veil::audit::open_read_only(&url).await?;
            let v =
                veil::audit::verify_store(store.as_ref(), args.from, args.to, &evidence).await?;
            anyhow::Ok((v, url.clone()))
        })?,
    };
    let mut v = v;
    v.notices.splice(0..0, damaged);
    let notices = &v.notices;
    let intact = v.problems.is_empty();
    if args.json {
        let mut doc = v.report();
        if let Some(map) = doc.as_object_mut() {
            map.insert("scope".to_owned(), json!(scope));
            map.insert("from".to_owned(), json!(args.from));
            map.insert("to".to_owned(), json!(args.to));
        }
        println!("{}", serde_json::to_string_pretty(&doc)?);
        return Ok(u8::from(!intact));
    }
    for n in notices {
        println!("note: {n}");
    }
    if intact {
        println!(
            "ok: {} rows, chain intact; MACs {}; {} signed checkpoint(s) matched",
            v.rows,
            if v.macs_checked {
                "checked"
            } else {
                "not checked"
            },
            v.checkpoints_matched
        );
    } else {
        for p in &v.problems {
            println!("seq {}: {}", p.seq, p.problem);
        }
        println!(
            "{} problem(s) in {} rows; the first at seq {}",
            v.problems.len(),
            v.rows,
            v.problems.first().map_or(0, |p| p.seq)
        );
    }
    Ok(u8::from(!intact))
}

fn audit_prune(path: &Path, db: Option<String>, before: &str, dry_run: bool) -> anyhow::Result<u8> {
    let mut config = config_or_default(path)?;
    if let Some(db) = &db {
        config.audit.url.clone_from(db);
    }
    let (evidence, _) =
        veil::audit::keys::evidence(&config.audit, |k| std::env::var(k).ok(), &[], &[])?;
    let Some(key) = evidence.key.clone() else {
        bail!(
            "prune needs the chain key ({}) to verify the chain and record the prune",
            config.audit.chain_key_env
        );
    };
    if evidence.public_keys.is_empty() {
        bail!(
            "prune needs the checkpoint public key (audit.public_key_file): it cuts only at a signed checkpoint"
        );
    }
    let days = config.audit.retention_days;
    let limit = time::OffsetDateTime::now_utc()
        - time::Duration::days(i64::try_from(days).unwrap_or(i64::MAX / 86_400));
    let limit = limit.format(&time::format_description::well_known::Rfc3339)?;
    if before > limit.as_str() {
        bail!(
            "{before} is within the retention period ({days} days, audit.retention_days): rows \
             written after {limit} are kept"
        );
    }
    let url = config.audit.url.clone();
    runtime()?.block_on(async move {
        let store = veil::audit::open_writer(&url).await?;
        let v = veil::audit::verify_store(store.as_ref(), None, None, &evidence).await?;
        if let Some(p) = v.problems.first() {
            bail!(
                "the chain does not verify ({} problem(s); the first at seq {}: {}); prune \
                 refuses to remove rows while it does",
                v.problems.len(),
                p.seq,
                p.problem
            );
        }
        // The last signed checkpoint whose row was written before `before`.
        let mut through = None;
        let checkpoints = store.checkpoints().await?;
        for cp in checkpoints.iter().rev() {
            if cp.check(&evidence.public_keys).is_err() || cp.seq <= v.pruned_through.unwrap_or(0) {
                continue;
            }
            let row = store.rows_page(cp.seq - 1, cp.seq, 1).await?;
            if row
                .first()
                .is_some_and(|r| r.ts.as_str() < before && r.hash == cp.head)
            {
                through = Some(cp);
                break;
            }
        }
        let Some(cp) = through else {
            println!("nothing to prune: no signed checkpoint on a row written before {before}");
            return Ok(0);
        };
        if dry_run {
            println!(
                "would remove rows up to seq {} (checkpoint signed at {})",
                cp.seq, cp.ts
            );
            return Ok(0);
        }
        // Recorded first: the trail says who pruned what even if the delete then fails.
        veil::audit::append_event(
            store.as_ref(),
            &key,
            veil::audit::EventRecord {
                id: format!("prune-{}", uuid::Uuid::now_v7()),
                event: "audit_prune".to_owned(),
                status: "accepted".to_owned(),
                file: "audit_log".to_owned(),
                old_digest: Some(cp.head.clone()),
                new_digest: None,
                reason: format!(
                    "rows through seq {} written before {before} removed (retention {days} days)",
                    cp.seq
                ),
            },
        )
        .await?;
        let removed = store.prune(cp.seq).await?;
        println!(
            "removed {removed} rows (through seq {}); the chain now starts after the checkpoint \
             signed at {}",
            cp.seq, cp.ts
        );
        Ok(0)
    })
}

fn audit_export(
    path: &Path,
    db: Option<String>,
    from: Option<String>,
    to: Option<String>,
    dir: &Path,
) -> anyhow::Result<u8> {
    let mut config = config_or_default(path)?;
    if let Some(db) = &db {
        config.audit.url.clone_from(db);
    }
    let (evidence, _) = veil::audit::keys::evidence(&config.audit, |_| None, &[], &[])?;
    let url = db.unwrap_or(config.audit.url);
    runtime()?.block_on(async {
        let store = veil::audit::open_read_only(&url).await?;
        let seq = |v: &Option<String>| v.as_deref().and_then(|s| s.parse::<i64>().ok());
        let (from_time, to_time) = (
            from.as_deref().filter(|_| seq(&from).is_none()),
            to.as_deref().filter(|_| seq(&to).is_none()),
        );
        let bounds = if from_time.is_some() || to_time.is_some() {
            store.seq_bounds(from_time, to_time).await?
        } else {
            None
        };
        if (from_time.is_some() || to_time.is_some()) && bounds.is_none() {
            bail!("no audit rows in that time range");
        }
        let lo = seq(&from)
            .or(from_time.and(bounds.map(|b| b.0)))
            .unwrap_or(1);
        let hi = match (seq(&to), to_time) {
            (Some(s), _) => s,
            (None, Some(_)) => bounds.map_or(0, |b| b.1),
            (None, None) => store.tail().await?.map_or(0, |t| t.0),
        };
        let m =
            veil::audit::export::export(store.as_ref(), lo, hi, &evidence.public_keys, dir).await?;
        println!(
            "exported rows {}..={} ({} rows, {} checkpoints) to {}",
            m.from_seq,
            m.to_seq,
            m.rows,
            m.checkpoints,
            dir.display()
        );
        Ok(0)
    })
}
