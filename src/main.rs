//! The `veil` command line: `serve`, `scan`, `policy check`, `key hash`, `audit verify`.

use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};
use serde_json::{Value, json};

use veil::config::Config;
use veil::detect::Finding;
use veil::snapshot::{PolicySet, Snapshot};

#[derive(Parser)]
#[command(
    name = "veil",
    version,
    about = "Privacy-policy enforcement proxy for LLM traffic"
)]
struct Cli {
    /// Configuration file.
    #[arg(
        long,
        short,
        global = true,
        default_value = "veil.toml",
        env = "VEIL_CONFIG"
    )]
    config: PathBuf,
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
    /// Validate every policy file and the keys that refer to them.
    Check,
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
enum AuditCommand {
    /// Check the hash chain of the audit log.
    Verify,
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    veil::telemetry::init_logging();
    match run(cli) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command.unwrap_or(Command::Serve) {
        Command::Serve => serve(&cli.config),
        Command::Scan {
            policy,
            jsonl,
            acted_on,
            file,
            text,
        } => {
            let config = Config::load(&cli.config)?;
            let classifier = veil::snapshot::load_classifier(&config.classifier)?;
            let set = Snapshot::policy_set(
                &config.policies.dir.join(format!("{policy}.toml")),
                &classifier,
            )?;
            match (jsonl, file, text) {
                (Some(paths), _, _) => match paths.as_slice() {
                    [input, output] => scan_jsonl(&set, acted_on, input, output),
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
        }
        Command::Policy {
            command: PolicyCommand::Check,
        } => {
            let config = Config::load(&cli.config)?;
            let classifier = veil::snapshot::load_classifier(&config.classifier)?;
            let snap = Snapshot::build(&config, &classifier, |k| std::env::var(k).ok())?;
            let mut names: Vec<_> = snap.policies.values().collect();
            names.sort_by(|a, b| a.policy.name.cmp(&b.policy.name));
            for p in names {
                println!(
                    "ok  {}  {} rules  sha256:{}",
                    p.policy.name,
                    p.policy.rules.len(),
                    p.policy.digest
                );
            }
            Ok(())
        }
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
            Ok(())
        }
        Command::Audit {
            command: AuditCommand::Verify,
        } => audit_verify(&cli.config),
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
        running.shutdown().await;
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

fn scan_jsonl(set: &PolicySet, acted_on: bool, input: &Path, output: &Path) -> anyhow::Result<()> {
    let reader = std::io::BufReader::new(
        std::fs::File::open(input).with_context(|| format!("cannot read {}", input.display()))?,
    );
    let mut writer = std::io::BufWriter::new(
        std::fs::File::create(output)
            .with_context(|| format!("cannot write {}", output.display()))?,
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
        let spans: Vec<Value> = findings(set, acted_on, text)?
            .into_iter()
            .map(|f| {
                let (start, end) = char_offsets(text, f.start, f.end);
                json!({"start": start, "end": end, "label": f.entity.as_str(), "score": f.score, "recognizer": f.recognizer})
            })
            .collect();
        serde_json::to_writer(&mut writer, &json!({"id": id, "spans": spans}))?;
        writer.write_all(b"\n")?;
    }
    writer.flush()?;
    Ok(())
}

fn audit_verify(path: &Path) -> anyhow::Result<()> {
    let config = Config::load(path)?;
    runtime()?.block_on(async move {
        let (log, _task) =
            veil::audit::AuditLog::open(&config.audit.url, std::time::Duration::from_secs(30), 1)
                .await?;
        let rows = log.rows().await?;
        let problems = veil::audit::verify(&rows);
        if problems.is_empty() {
            println!("ok: {} rows, chain intact", rows.len());
            Ok(())
        } else {
            for p in &problems {
                println!("seq {}: {}", p.seq, p.problem);
            }
            bail!("{} problem(s) in the audit chain", problems.len())
        }
    })
}
