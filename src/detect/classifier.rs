//! The token classifier: an int8 ONNX encoder (run with `ort`) that finds what patterns cannot
//! see — names, places, organizations, free-form dates.
//!
//! Three parts, in the order text goes through them (`models/README.md`, "Decoding rules"):
//! [`runtime`] runs the model and gives every word its scores per entity type; [`decode`] turns
//! word scores into spans with per-type thresholds and hysteresis; [`rules`] is the ordered table
//! of decoding rules that correct both. The decoder here is the only one: training and threshold
//! search get their figures from `veil scan` (`--word-scores-out` once, then `--word-scores-in`
//! with other thresholds or rules). Offsets are byte offsets in the original text, mapped by the
//! tokenizer through its normalization.
//!
//! The model, tokenizer, word lists and lexicon files are checked against the SHA-256 sums in
//! `manifest.toml` before they are loaded: a corrupt or substituted file is refused.

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicUsize;
use std::sync::{Mutex, OnceLock};

use ort::session::Session;
use ort::session::builder::GraphOptimizationLevel;
use serde::Deserialize;
use sha2::{Digest, Sha256};
use tokenizers::Tokenizer;

use super::{EntityType, Finding};
pub use crate::config::Weights;

pub mod cache;
pub mod decode;
pub mod rules;
mod runtime;
pub mod weights;

use decode::WordScores;
use rules::{Ctx, Lists, PlainWords, RuleSet, WordLists, capitalises_words};

/// Why the classifier could not load or run. Messages never contain text being scanned.
#[derive(Debug, thiserror::Error)]
pub enum ClassifierError {
    /// A file is missing or unreadable.
    #[error("cannot read {path}: {message}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        message: String,
    },
    /// A file's SHA-256 is not the one in the manifest.
    #[error(
        "{path}: checksum mismatch (expected {expected}, found {found}); the file is corrupt or was replaced — run `make assets` or restore it from git"
    )]
    Checksum {
        /// The file.
        path: PathBuf,
        /// Expected hex digest.
        expected: String,
        /// Actual hex digest.
        found: String,
    },
    /// The manifest is invalid.
    #[error("{0}")]
    Manifest(String),
    /// ONNX Runtime failed (library, session or inference).
    #[error("onnx runtime: {0}")]
    Runtime(String),
    /// The tokenizer failed.
    #[error("tokenizer: {0}")]
    Tokenizer(String),
}

/// `models/classifier/manifest.toml`.
#[derive(Debug, Clone, Deserialize)]
pub struct Manifest {
    /// BIO labels in output order.
    pub labels: Vec<String>,
    /// Tokens per window, including `[CLS]` and `[SEP]`.
    pub max_seq_len: usize,
    /// Word-pieces between window starts.
    pub stride: usize,
    /// Default per-type thresholds.
    #[serde(default)]
    pub thresholds: BTreeMap<String, f32>,
    /// Per-type thresholds for text that does not [capitalise words](capitalises_words) (all-caps
    /// and all-lower-case notes), where the model has no case to go by; types missing here use
    /// `thresholds`.
    #[serde(default)]
    pub caseless_thresholds: BTreeMap<String, f32>,
    /// Per-type hysteresis thresholds: a word next to an entity word of its own type joins it
    /// from this score on (absent: the type's threshold, i.e. no hysteresis).
    #[serde(default)]
    pub extend: BTreeMap<String, f32>,
    /// Hex SHA-256 of `model.onnx`.
    pub model_sha256: String,
    /// Hex SHA-256 of `tokenizer.json`.
    pub tokenizer_sha256: String,
    /// File (in the model directory) of drug names that are never a person or a place: one
    /// lower-case word per line, `#` comments. Absent: no drug rule.
    #[serde(default)]
    pub drug_lexicon: Option<String>,
    /// Hex SHA-256 of the drug lexicon file (required with `drug_lexicon`).
    #[serde(default)]
    pub drug_lexicon_sha256: Option<String>,
    /// File (in the model directory) of nationality, ethnicity and language words, which are
    /// never a person or a place either; same format. Absent: no such rule.
    #[serde(default)]
    pub demonym_lexicon: Option<String>,
    /// Hex SHA-256 of the demonym lexicon file (required with `demonym_lexicon`).
    #[serde(default)]
    pub demonym_lexicon_sha256: Option<String>,
    /// File (in the model directory) of the decoding rules' word lists (`decoding.toml`, see
    /// [`rules::WordLists`]).
    pub decoding_lists: String,
    /// Hex SHA-256 of the word-list file.
    pub decoding_lists_sha256: String,
    /// File (in the model directory) of plain words: English words written only in lower case,
    /// none of them a name or place Faker knows; one per line, `#` comments. Absent: no
    /// plain-word rule.
    #[serde(default)]
    pub word_lexicon: Option<String>,
    /// Hex SHA-256 of the word lexicon file (required with `word_lexicon`).
    #[serde(default)]
    pub word_lexicon_sha256: Option<String>,
    /// File (in the model directory) of the plain words of [`TYPO_MIN`]+ letters that one slip
    /// turns into a name, place or capitalised word (`training/word_lexicon.py --near-out`); one
    /// per line, `#` comments. Absent: misspelt plain words are not recognised.
    #[serde(default)]
    pub near_name_lexicon: Option<String>,
    /// Hex SHA-256 of the near-name lexicon file (required with `near_name_lexicon`).
    #[serde(default)]
    pub near_name_lexicon_sha256: Option<String>,
    /// Model version, recorded in audit records.
    pub version: String,
}

/// Where the classifier lives and how to run it.
#[derive(Debug, Clone)]
pub struct ClassifierConfig {
    /// Directory holding `model.onnx`, `tokenizer.json` and `manifest.toml`.
    pub dir: PathBuf,
    /// Path of `libonnxruntime.so` (loaded at run time).
    pub ort_library: PathBuf,
    /// Intra-op threads of each session.
    pub threads: usize,
    /// Sessions: how many requests the model serves at once.
    pub sessions: usize,
    /// Windows per inference batch.
    pub batch: usize,
    /// Which integer kernels run the quantized products (see [`weights`]).
    pub weights: Weights,
    /// Decoding rules that run.
    pub rules: RuleSet,
}

/// One entity type the model knows, with the indices of its B- and I- labels.
#[derive(Debug, Clone)]
struct TypeIdx {
    entity: EntityType,
    name: String,
    b: usize,
    i: usize,
}

/// The loaded classifier; shared by all requests. Each of its sessions runs one request's
/// windows at a time on `threads` threads; concurrent requests take free sessions.
pub struct Classifier {
    sessions: Vec<Mutex<Session>>,
    /// Where the next request starts looking for a free session.
    next: AtomicUsize,
    tokenizer: Tokenizer,
    types: Vec<TypeIdx>,
    labels: usize,
    window: usize,
    stride: usize,
    batch: usize,
    cls: u32,
    sep: u32,
    pad: u32,
    thresholds: Vec<f32>,
    caseless_thresholds: Vec<f32>,
    extend: Vec<f32>,
    lists: Lists,
    rules: RuleSet,
    version: String,
}

impl std::fmt::Debug for Classifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Classifier")
            .field("version", &self.version)
            .finish_non_exhaustive()
    }
}

fn sha256_file(path: &Path) -> Result<(Vec<u8>, String), ClassifierError> {
    let bytes = std::fs::read(path).map_err(|e| ClassifierError::Read {
        path: path.to_owned(),
        message: e.to_string(),
    })?;
    let digest = hex::encode(Sha256::digest(&bytes));
    Ok((bytes, digest))
}

fn verified(path: &Path, expected: &str) -> Result<Vec<u8>, ClassifierError> {
    let (bytes, found) = sha256_file(path)?;
    if !found.eq_ignore_ascii_case(expected) {
        return Err(ClassifierError::Checksum {
            path: path.to_owned(),
            expected: expected.to_owned(),
            found,
        });
    }
    Ok(bytes)
}

/// The words of a lexicon file in `dir` (one per line, lower-cased; blank lines and `#` comments
/// skipped) checked against its SHA-256; empty when the manifest names no file. `key` is the
/// manifest key, for errors.
fn lexicon(
    dir: &Path,
    file: Option<&str>,
    sha256: Option<&str>,
    key: &str,
) -> Result<HashSet<String>, ClassifierError> {
    let (file, sha256) = match (file, sha256) {
        (None, None) => return Ok(HashSet::new()),
        (Some(file), Some(sha256)) => (file, sha256),
        _ => {
            return Err(ClassifierError::Manifest(format!(
                "{key} and {key}_sha256 go together"
            )));
        }
    };
    let path = dir.join(file);
    let bytes = verified(&path, sha256)?;
    let text = String::from_utf8(bytes)
        .map_err(|_| ClassifierError::Manifest(format!("{}: not UTF-8", path.display())))?;
    Ok(text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(str::to_lowercase)
        .collect())
}

/// The process-wide ONNX Runtime environment (the library can be loaded only once).
fn environment(library: &Path) -> Result<ort::environment::Environment, ClassifierError> {
    static ENV: OnceLock<Result<ort::environment::Environment, String>> = OnceLock::new();
    ENV.get_or_init(|| {
        let builder = ort::init_from(library).map_err(|e| e.to_string())?;
        builder.with_name("veil").build().map_err(|e| e.to_string())
    })
    .clone()
    .map_err(ClassifierError::Runtime)
}

/// Chooses the weights the session runs (rewriting `model` to int8 where that is exact and
/// asked for) and names the choice for the log.
fn kernels(choice: Weights, model: &mut [u8]) -> &'static str {
    if choice == Weights::Portable || !weights::exact_signed_kernels() {
        return "uint8 (portable)";
    }
    match weights::to_signed(model) {
        Ok(_) => "int8 (VNNI)",
        Err(weights::RewriteError::Nothing) => "as shipped",
        Err(e) => {
            tracing::warn!(error = %e, "classifier runs its uint8 weights (exact, slower)");
            "uint8 (portable)"
        }
    }
}

fn runtime<E: std::fmt::Display>(e: E) -> ClassifierError {
    ClassifierError::Runtime(e.to_string())
}

impl Classifier {
    /// Loads and verifies the model, tokenizer and manifest.
    pub fn load(cfg: &ClassifierConfig) -> Result<Self, ClassifierError> {
        let manifest_path = cfg.dir.join("manifest.toml");
        let text = std::fs::read_to_string(&manifest_path).map_err(|e| ClassifierError::Read {
            path: manifest_path.clone(),
            message: e.to_string(),
        })?;
        let manifest: Manifest = crate::config::parse_toml(&manifest_path, &text)
            .map_err(|e| ClassifierError::Manifest(e.to_string()))?;
        let mut model = verified(&cfg.dir.join("model.onnx"), &manifest.model_sha256)?;
        let kernels = kernels(cfg.weights, &mut model);
        let tok_bytes = verified(&cfg.dir.join("tokenizer.json"), &manifest.tokenizer_sha256)?;
        let drugs = lexicon(
            &cfg.dir,
            manifest.drug_lexicon.as_deref(),
            manifest.drug_lexicon_sha256.as_deref(),
            "drug_lexicon",
        )?;
        let demonyms = lexicon(
            &cfg.dir,
            manifest.demonym_lexicon.as_deref(),
            manifest.demonym_lexicon_sha256.as_deref(),
            "demonym_lexicon",
        )?;
        let lists_path = cfg.dir.join(&manifest.decoding_lists);
        let word_lists = String::from_utf8(verified(&lists_path, &manifest.decoding_lists_sha256)?)
            .map_err(|_| format!("{}: not UTF-8", lists_path.display()))
            .and_then(|text| {
                WordLists::parse(&text).map_err(|e| format!("{}: {e}", lists_path.display()))
            })
            .map_err(ClassifierError::Manifest)?;
        let plain_words = PlainWords {
            words: lexicon(
                &cfg.dir,
                manifest.word_lexicon.as_deref(),
                manifest.word_lexicon_sha256.as_deref(),
                "word_lexicon",
            )?,
            near_names: lexicon(
                &cfg.dir,
                manifest.near_name_lexicon.as_deref(),
                manifest.near_name_lexicon_sha256.as_deref(),
                "near_name_lexicon",
            )?,
        };

        let mut tokenizer = Tokenizer::from_bytes(&tok_bytes)
            .map_err(|e| ClassifierError::Tokenizer(e.to_string()))?;
        tokenizer
            .with_truncation(None)
            .map_err(|e| ClassifierError::Tokenizer(e.to_string()))?;
        tokenizer.with_padding(None);
        let id = |t: &str| {
            tokenizer.token_to_id(t).ok_or_else(|| {
                ClassifierError::Tokenizer(format!("no {t} token in tokenizer.json"))
            })
        };
        let (cls, sep) = (id("[CLS]")?, id("[SEP]")?);
        let pad = tokenizer.token_to_id("[PAD]").unwrap_or(0);

        let mut types = Vec::new();
        for (b, label) in manifest.labels.iter().enumerate() {
            let Some(name) = label.strip_prefix("B-") else {
                continue;
            };
            let i = manifest
                .labels
                .iter()
                .position(|l| l.strip_prefix("I-") == Some(name))
                .ok_or_else(|| {
                    ClassifierError::Manifest(format!("label B-{name} has no I-{name}"))
                })?;
            let entity = name
                .parse::<EntityType>()
                .map_err(|_| ClassifierError::Manifest(format!("unknown entity type {name}")))?;
            types.push(TypeIdx {
                entity,
                name: name.to_owned(),
                b,
                i,
            });
        }
        if manifest.max_seq_len < 8
            || manifest.stride == 0
            || manifest.stride > manifest.max_seq_len - 2
        {
            return Err(ClassifierError::Manifest(
                "max_seq_len must be at least 8 and stride between 1 and max_seq_len - 2"
                    .to_owned(),
            ));
        }
        let thresholds: Vec<f32> = types
            .iter()
            .map(|t| manifest.thresholds.get(&t.name).copied().unwrap_or(0.5))
            .collect();
        let caseless_thresholds = types
            .iter()
            .zip(&thresholds)
            .map(|(t, d)| {
                manifest
                    .caseless_thresholds
                    .get(&t.name)
                    .copied()
                    .unwrap_or(*d)
            })
            .collect();
        let extend = types
            .iter()
            .map(|t| {
                manifest
                    .extend
                    .get(&t.name)
                    .copied()
                    .unwrap_or(f32::INFINITY)
            })
            .collect();

        let env = environment(&cfg.ort_library)?;
        let sessions = (0..cfg.sessions.max(1))
            .map(|_| {
                Session::builder(&env)
                    .map_err(runtime)?
                    .with_optimization_level(GraphOptimizationLevel::Level3)
                    .map_err(runtime)?
                    .with_intra_threads(cfg.threads.max(1))
                    .map_err(runtime)?
                    .with_inter_threads(1)
                    .map_err(runtime)?
                    // Spinning worker threads would steal the cores llama.cpp's threads wait on.
                    .with_intra_op_spinning(false)
                    .map_err(runtime)?
                    .commit_from_memory(&model)
                    .map(Mutex::new)
                    .map_err(runtime)
            })
            .collect::<Result<Vec<_>, _>>()?;
        tracing::info!(
            version = %manifest.version,
            kernels,
            threads = cfg.threads.max(1),
            sessions = sessions.len(),
            "classifier loaded"
        );
        Ok(Self {
            sessions,
            next: AtomicUsize::new(0),
            tokenizer,
            types,
            labels: manifest.labels.len(),
            window: manifest.max_seq_len - 2,
            stride: manifest.stride,
            batch: cfg.batch.max(1),
            cls,
            sep,
            pad,
            thresholds,
            caseless_thresholds,
            extend,
            lists: Lists {
                words: word_lists,
                drugs,
                demonyms,
                plain: plain_words,
            },
            rules: cfg.rules,
            version: manifest.version,
        })
    }

    /// Model version, for audit records.
    pub fn version(&self) -> &str {
        &self.version
    }

    /// Entity types the model can emit.
    pub fn entities(&self) -> impl Iterator<Item = &EntityType> {
        self.types.iter().map(|t| &t.entity)
    }

    /// Default threshold for an entity type in `text`: the manifest's `caseless_thresholds` where
    /// the text does not [capitalise words](capitalises_words), else its `thresholds`.
    pub fn threshold(&self, entity: &EntityType, text: &str) -> Option<f32> {
        self.types
            .iter()
            .zip(self.default_thresholds(capitalises_words(text)))
            .find(|(t, _)| &t.entity == entity)
            .map(|(_, th)| *th)
    }

    /// The manifest's thresholds (one per type) for text that does (`cased`) or does not
    /// [capitalise words](capitalises_words).
    fn default_thresholds(&self, cased: bool) -> &[f32] {
        if cased {
            &self.thresholds
        } else {
            &self.caseless_thresholds
        }
    }

    /// Findings in `text` with the manifest's thresholds for it ([`Self::threshold`]), overridden
    /// per type by `overrides` (an override applies to cased and caseless text alike), and the
    /// configured decoding rules.
    pub fn detect(
        &self,
        text: &str,
        overrides: &BTreeMap<EntityType, f32>,
    ) -> Result<Vec<Finding>, ClassifierError> {
        let scores = self.word_scores(text)?;
        Ok(self.decode(text, &scores, overrides, self.rules))
    }

    /// The decoding rules configured to run.
    pub fn rules(&self) -> RuleSet {
        self.rules
    }

    /// Whether `scores` can be decoded by this model: one score per entity type it knows.
    pub fn fits(&self, scores: &WordScores) -> bool {
        scores
            .words
            .iter()
            .all(|w| w.pb.len() == self.types.len() && w.pi.len() == self.types.len())
    }

    /// Findings from word scores of `text` (from [`Self::word_scores`], or read back from
    /// `veil scan --word-scores-out`): thresholds as in [`Self::detect`], and `rules`.
    pub fn decode(
        &self,
        text: &str,
        scores: &WordScores,
        overrides: &BTreeMap<EntityType, f32>,
        rules: RuleSet,
    ) -> Vec<Finding> {
        if text.trim().is_empty() {
            return Vec::new();
        }
        let cased = capitalises_words(text);
        let thresholds: Vec<f32> = self
            .types
            .iter()
            .zip(self.default_thresholds(cased))
            .map(|(t, d)| overrides.get(&t.entity).copied().unwrap_or(*d))
            .collect();
        let lows: Vec<f32> = thresholds
            .iter()
            .zip(&self.extend)
            .map(|(t, e)| t.min(*e))
            .collect();
        let person = self
            .types
            .iter()
            .position(|t| t.entity == EntityType::Person);
        let ctx = Ctx {
            text,
            cased,
            person,
            lists: &self.lists,
        };
        let mut words = scores.words.clone();
        rules.on_words(&ctx, &mut words);
        let mut found: Vec<Finding> = decode::spans(text, &words, &thresholds, &lows)
            .into_iter()
            .map(|span| self.finding(span))
            .collect();
        rules.on_spans(&ctx, &mut found);
        for f in &mut found {
            if f.entity == EntityType::Date && text.get(f.start..f.end).is_some_and(only_years) {
                f.entity = EntityType::Year;
            }
        }
        found
    }

    fn finding(&self, (start, end, k, sum, n): decode::RawSpan) -> Finding {
        Finding {
            start,
            end,
            entity: self
                .types
                .get(k)
                .map_or(EntityType::Person, |t| t.entity.clone()),
            score: (sum / n.max(1) as f32).min(1.0),
            recognizer: "classifier",
        }
    }
}

/// A year, a range of years or a decade, and nothing else: what Safe Harbor lets through
/// ([`EntityType::Year`]). Not a decoding rule — it changes a finding's type, never whether it
/// is reported — so it runs after them and cannot be switched off.
fn only_years(fragment: &str) -> bool {
    static RE: OnceLock<Option<regex::Regex>> = OnceLock::new();
    rules::compiled(
        &RE,
        r"^(?:'\d{2}|\d{2}'|(?:1[89]|2[01])\d{2}(?:'?s)?|'\d0'?s|(?:1[89]|2[01])\d{2}\s*(?:-|–|to|through|until)\s*(?:1[89]|2[01])\d{2})$",
    )
    .is_some_and(|re| re.is_match(fragment.trim()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn years_ranges_and_decades_alone_are_years_other_dates_are_not() {
        for year in [
            "2021",
            " 1998 ",
            "'96",
            "1990s",
            "1990's",
            "2013 to 2018",
            "2019-2021",
        ] {
            assert!(only_years(year), "{year:?}");
        }
        for date in [
            "2019-12",
            "03/2021",
            "March 2021",
            "12/96",
            "1700",
            "20210",
            "2021-03-04",
        ] {
            assert!(!only_years(date), "{date:?}");
        }
    }
}
