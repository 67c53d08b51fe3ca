//! The token classifier: an int8 ONNX encoder (run with `ort`) that finds what patterns cannot
//! see — names, places, organizations, free-form dates.
//!
//! Decoding mirrors `training/predict.py` exactly (see `models/README.md`, "Decoding rules"):
//! the text is tokenized once; overlapping windows of `max_seq_len - 2` word-pieces are batched;
//! each piece takes its probabilities from the window where it is most central; a word's
//! probabilities are the mean of its pieces'; a word belongs to the entity type X maximizing
//! `p(B-X) + p(I-X)` when that sum reaches X's threshold; consecutive words of one type form a
//! span unless `p(B-X) > p(I-X)` starts a new one. Offsets are byte offsets in the original
//! text, mapped by the tokenizer through its normalization.
//!
//! The model, tokenizer and drug lexicon files are checked against the SHA-256 sums in
//! `manifest.toml` before they are loaded: a corrupt or substituted file is refused.

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

use ort::session::Session;
use ort::session::builder::GraphOptimizationLevel;
use ort::value::Tensor;
use serde::Deserialize;
use sha2::{Digest, Sha256};
use tokenizers::Tokenizer;

use super::{EntityType, Finding};
pub use crate::config::Weights;

pub mod weights;

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
    /// Intra-op threads.
    pub threads: usize,
    /// Windows per inference batch.
    pub batch: usize,
    /// Which integer kernels run the quantized products (see [`weights`]).
    pub weights: Weights,
}

/// One entity type the model knows, with the indices of its B- and I- labels.
#[derive(Debug, Clone)]
struct TypeIdx {
    entity: EntityType,
    name: String,
    b: usize,
    i: usize,
}

/// The loaded classifier; shared by all requests (inference is serialized on one session,
/// which uses `threads` cores).
pub struct Classifier {
    session: Mutex<Session>,
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
    drugs: HashSet<String>,
    demonyms: HashSet<String>,
    plain_words: PlainWords,
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
        let session = Session::builder(&env)
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
            .map_err(runtime)?;
        tracing::info!(
            version = %manifest.version,
            kernels,
            threads = cfg.threads.max(1),
            "classifier loaded"
        );
        Ok(Self {
            session: Mutex::new(session),
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
            drugs,
            demonyms,
            plain_words,
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
    /// per type by `overrides` (an override applies to cased and caseless text alike).
    pub fn detect(
        &self,
        text: &str,
        overrides: &BTreeMap<EntityType, f32>,
    ) -> Result<Vec<Finding>, ClassifierError> {
        if text.trim().is_empty() {
            return Ok(Vec::new());
        }
        let enc = self
            .tokenizer
            .encode(text, false)
            .map_err(|e| ClassifierError::Tokenizer(e.to_string()))?;
        let probs = self.piece_probs(enc.get_ids())?;
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
        let mut words = self.words(enc.get_word_ids(), enc.get_offsets(), &probs);
        if let Some(k) = self
            .types
            .iter()
            .position(|t| t.entity == EntityType::Person)
        {
            no_names_in_abbreviations(text, &mut words, k);
            no_names_in_common_nouns(text, &mut words, k);
            names_after_cues(text, &mut words, k);
            let person_min = thresholds.get(k).copied().unwrap_or(1.0);
            surnames_before_credentials(text, &mut words, k, person_min);
        }
        let mut found: Vec<Finding> = self
            .decode(text, &words, &thresholds, &lows)
            .into_iter()
            .filter_map(|f| span_rules(text, f))
            .map(|f| with_ordinal_day(text, f))
            .filter(|f| !only_lexicon_words(text, f, &self.drugs))
            .filter(|f| !only_lexicon_words(text, f, &self.demonyms))
            .collect();
        if cased {
            found.retain(|f| !weak_lower_case_span(text, f) && !acronym_as_name(text, f));
        }
        found.retain(|f| !only_plain_words(text, f, &self.plain_words, cased));
        drop_group_words(text, &mut found);
        drop_lone_initials(text, &mut found);
        cut_facility_nouns(text, &mut found);
        let more = propagate_names(text, &found);
        found.extend(more);
        Ok(found)
    }

    /// Window ranges over `n` pieces: starts at 0, `stride`, …, and a last window ending at `n`.
    fn windows(&self, n: usize) -> Vec<(usize, usize)> {
        if n <= self.window {
            return vec![(0, n)];
        }
        let mut out: Vec<(usize, usize)> = (0..n - self.window)
            .step_by(self.stride)
            .map(|s| (s, s + self.window))
            .collect();
        out.push((n - self.window, n));
        out
    }

    /// Softmax probabilities per piece, each from the window where the piece is most central.
    fn piece_probs(&self, ids: &[u32]) -> Result<Vec<f32>, ClassifierError> {
        let n = ids.len();
        let c = self.labels;
        let mut probs = vec![0f32; n * c];
        let mut best = vec![(-1i64, usize::MAX); n]; // (centrality, window start)
        let mut jobs = self.windows(n);
        jobs.sort_by_key(|(s, e)| e - s);
        for chunk in jobs.chunks(self.batch) {
            let len = chunk.iter().map(|(s, e)| e - s).max().unwrap_or(0) + 2;
            let rows = chunk.len();
            let mut input = vec![i64::from(self.pad); rows * len];
            let mut mask = vec![0i64; rows * len];
            for (r, &(s, e)) in chunk.iter().enumerate() {
                let row = r * len;
                let cells = input.get_mut(row..row + e - s + 2).unwrap_or_default();
                if let Some((first, rest)) = cells.split_first_mut() {
                    *first = i64::from(self.cls);
                    for (cell, id) in rest.iter_mut().zip(ids.get(s..e).unwrap_or_default()) {
                        *cell = i64::from(*id);
                    }
                    if let Some(last) = rest.last_mut() {
                        *last = i64::from(self.sep);
                    }
                }
                if let Some(m) = mask.get_mut(row..row + e - s + 2) {
                    m.fill(1);
                }
            }
            let logits = self.run(rows, len, input, mask)?;
            for (r, &(s, e)) in chunk.iter().enumerate() {
                for i in s..e {
                    let centrality = (i - s).min(e - 1 - i) as i64;
                    let Some(slot) = best.get_mut(i) else {
                        continue;
                    };
                    if centrality > slot.0 || (centrality == slot.0 && s < slot.1) {
                        *slot = (centrality, s);
                        let at = (r * len + 1 + i - s) * c;
                        if let (Some(src), Some(dst)) =
                            (logits.get(at..at + c), probs.get_mut(i * c..(i + 1) * c))
                        {
                            softmax(src, dst);
                        }
                    }
                }
            }
        }
        Ok(probs)
    }

    fn run(
        &self,
        rows: usize,
        len: usize,
        input: Vec<i64>,
        mask: Vec<i64>,
    ) -> Result<Vec<f32>, ClassifierError> {
        let shape = [rows, len];
        let ids = Tensor::from_array((shape, input)).map_err(runtime)?;
        let att = Tensor::from_array((shape, mask)).map_err(runtime)?;
        // A panic while holding the lock leaves the session itself usable (runs are stateless).
        let mut session = self
            .session
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let outputs = session
            .run(ort::inputs!["input_ids" => ids, "attention_mask" => att])
            .map_err(runtime)?;
        let logits = outputs
            .get("logits")
            .ok_or_else(|| ClassifierError::Runtime("model has no `logits` output".to_owned()))?;
        let (out_shape, data) = logits.try_extract_tensor::<f32>().map_err(runtime)?;
        if out_shape.iter().copied().collect::<Vec<i64>>()
            != [rows as i64, len as i64, self.labels as i64]
        {
            return Err(ClassifierError::Runtime(
                "unexpected logits shape".to_owned(),
            ));
        }
        Ok(data.to_vec())
    }

    /// Words (start byte, end byte, mean piece probabilities).
    fn words(
        &self,
        word_ids: &[Option<u32>],
        offsets: &[(usize, usize)],
        probs: &[f32],
    ) -> Vec<Word> {
        let c = self.labels;
        let mut words: Vec<Word> = Vec::new();
        let mut current: Option<(u32, usize, usize, Vec<usize>)> = None;
        for (i, (w, off)) in word_ids.iter().zip(offsets).enumerate() {
            let Some(w) = *w else { continue };
            match &mut current {
                Some((cw, _, end, pieces)) if *cw == w => {
                    *end = off.1;
                    pieces.push(i);
                }
                _ => {
                    if let Some(done) = current.take() {
                        words.push(self.word(done, probs, c));
                    }
                    current = Some((w, off.0, off.1, vec![i]));
                }
            }
        }
        if let Some(done) = current {
            words.push(self.word(done, probs, c));
        }
        words
    }

    fn word(
        &self,
        (_, start, end, pieces): (u32, usize, usize, Vec<usize>),
        probs: &[f32],
        c: usize,
    ) -> Word {
        let mut mean = vec![0f32; c];
        for &p in &pieces {
            for (m, v) in mean
                .iter_mut()
                .zip(probs.get(p * c..(p + 1) * c).unwrap_or_default())
            {
                *m += v;
            }
        }
        let k = pieces.len().max(1) as f32;
        mean.iter_mut().for_each(|m| *m /= k);
        let pb: Vec<f32> = self
            .types
            .iter()
            .map(|t| mean.get(t.b).copied().unwrap_or(0.0))
            .collect();
        let pi: Vec<f32> = self
            .types
            .iter()
            .map(|t| mean.get(t.i).copied().unwrap_or(0.0))
            .collect();
        Word { start, end, pb, pi }
    }

    fn decode(&self, text: &str, words: &[Word], thresholds: &[f32], lows: &[f32]) -> Vec<Finding> {
        decode(text, words, thresholds, lows)
            .into_iter()
            .map(|span| self.finding(span))
            .collect()
    }

    fn finding(&self, (start, end, k, sum, n): RawSpan) -> Finding {
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

/// A decoded span: start, end, type index, score sum, words.
type RawSpan = (usize, usize, usize, f32, usize);

/// Steps 4 to 5 of the decoding rules: entity words by threshold, grown by hysteresis
/// (`lows`, never across a line break), then spans.
fn decode(text: &str, words: &[Word], thresholds: &[f32], lows: &[f32]) -> Vec<RawSpan> {
    let best: Vec<(usize, f32)> = words
        .iter()
        .map(|w| {
            w.pb.iter().zip(&w.pi).map(|(b, i)| b + i).enumerate().fold(
                (0, f32::MIN),
                |best, (k, s)| if s > best.1 { (k, s) } else { best },
            )
        })
        .collect();
    let mut mark: Vec<bool> = best
        .iter()
        .map(|&(k, s)| thresholds.get(k).is_some_and(|t| s >= *t))
        .collect();
    let joins = |mark: &[bool], j: usize, n: usize| -> bool {
        let (Some(&(kj, sj)), Some(&(kn, _))) = (best.get(j), best.get(n)) else {
            return false;
        };
        let (Some(wj), Some(wn)) = (words.get(j), words.get(n)) else {
            return false;
        };
        let gap = text
            .get(wj.end.min(wn.end)..wj.start.max(wn.start))
            .unwrap_or_default();
        !mark.get(j).copied().unwrap_or(true)
            && mark.get(n).copied().unwrap_or(false)
            && kj == kn
            && lows.get(kj).is_some_and(|l| sj >= *l)
            && !gap.contains('\n')
    };
    for j in 1..words.len() {
        if joins(&mark, j, j - 1)
            && let Some(m) = mark.get_mut(j)
        {
            *m = true;
        }
    }
    for j in (0..words.len().saturating_sub(1)).rev() {
        if joins(&mark, j, j + 1)
            && let Some(m) = mark.get_mut(j)
        {
            *m = true;
        }
    }
    let mut out = Vec::new();
    let mut open: Option<RawSpan> = None;
    for ((w, &(k, s)), &entity_word) in words.iter().zip(&best).zip(&mark) {
        if !entity_word {
            if let Some(span) = open.take() {
                out.push(span);
            }
            continue;
        }
        let continues = open.as_ref().is_some_and(|o| o.2 == k)
            && w.pi.get(k).copied().unwrap_or(0.0) >= w.pb.get(k).copied().unwrap_or(0.0);
        match (&mut open, continues) {
            (Some(o), true) => {
                o.1 = w.end;
                o.3 += s;
                o.4 += 1;
            }
            _ => {
                if let Some(span) = open.take() {
                    out.push(span);
                }
                open = Some((w.start, w.end, k, s, 1));
            }
        }
    }
    if let Some(span) = open {
        out.push(span);
    }
    out
}

/// Step 7 of the decoding rules: a name the model found as a multi-word PERSON span ("Helena
/// Marsh") is a name wherever else it occurs in the text, whole or as one of its words of four
/// letters or more ("Marsh"), matched case-insensitively on word boundaries. The copies get the
/// score of the span they come from.
fn propagate_names(text: &str, found: &[Finding]) -> Vec<Finding> {
    const MAX_NAMES: usize = 64;
    let mut names: Vec<(String, f32)> = Vec::new();
    for f in found.iter().filter(|f| f.entity == EntityType::Person) {
        let Some(span) = text.get(f.start..f.end) else {
            continue;
        };
        if span.split_whitespace().nth(1).is_none() {
            continue;
        }
        names.push((span.to_lowercase(), f.score));
        for word in span.split(|c: char| !c.is_alphabetic()) {
            if word.chars().count() >= 4 {
                names.push((word.to_lowercase(), f.score));
            }
        }
    }
    if names.is_empty() {
        return Vec::new();
    }
    // Longest first, so the alternation prefers the whole name to one of its words.
    names.sort_by(|a, b| b.0.len().cmp(&a.0.len()).then(a.0.cmp(&b.0)));
    names.dedup_by(|a, b| a.0 == b.0);
    names.truncate(MAX_NAMES);
    let pattern = names
        .iter()
        .map(|(n, _)| regex::escape(n))
        .collect::<Vec<_>>()
        .join("|");
    let Ok(re) = regex::Regex::new(&format!(r"(?i)\b(?:{pattern})\b")) else {
        return Vec::new();
    };
    re.find_iter(text)
        .filter(|m| {
            !found
                .iter()
                .any(|f| f.entity == EntityType::Person && f.start < m.end() && m.start() < f.end)
        })
        .filter_map(|m| {
            let lower = m.as_str().to_lowercase();
            let score = names.iter().find(|(n, _)| *n == lower)?.1;
            Some(Finding {
                start: m.start(),
                end: m.end(),
                entity: EntityType::Person,
                score,
                recognizer: "classifier",
            })
        })
        .collect()
}

/// Step 6c of the decoding rules: a PERSON or LOCATION span with a single letter or digit ("G."
/// of "G.U.", "a." of "a.m.", "S" of a SOAP note's "S:") is dropped unless it is tied to a
/// longer span of its type: next to it, with at most three spaces, dots, commas or hyphens
/// between ("D." before "Wren"), directly or through other single letters ("J. R. Tolkien").
/// An initial alone identifies nobody, and two lone letters do not vouch for each other
/// ("G." and "U." of "G.U.", "B." and "S." of "B.S.").
fn drop_lone_initials(text: &str, found: &mut Vec<Finding>) {
    let alnums = |f: &Finding| {
        text.get(f.start..f.end)
            .map_or(0, |s| s.chars().filter(|c| c.is_alphanumeric()).count())
    };
    let ruled = |f: &Finding| matches!(f.entity, EntityType::Person | EntityType::Location);
    let near = |a: &Finding, b: &Finding| {
        let gap = if b.start >= a.end {
            text.get(a.end..b.start)
        } else if a.start >= b.end {
            text.get(b.end..a.start)
        } else {
            None
        };
        a.entity == b.entity
            && gap.is_some_and(|g| {
                g.chars().count() <= 3 && g.chars().all(|c| c.is_whitespace() || ".,-".contains(c))
            })
    };
    let mut keep: Vec<bool> = found.iter().map(|f| !ruled(f) || alnums(f) != 1).collect();
    // Keeping spreads from the longer spans through chains of near single letters (`near`
    // needs the same type, so only PERSON and LOCATION spans can tie a letter).
    let mut changed = true;
    while changed {
        changed = false;
        for (i, f) in found.iter().enumerate() {
            if keep.get(i).copied().unwrap_or(true) {
                continue;
            }
            let tied = found
                .iter()
                .zip(&keep)
                .any(|(o, &kept)| kept && !std::ptr::eq(o, f) && near(f, o));
            if let (true, Some(k)) = (tied, keep.get_mut(i)) {
                *k = true;
                changed = true;
            }
        }
    }
    let mut flags = keep.into_iter();
    found.retain(|_| flags.next().unwrap_or(true));
}

/// Dotted abbreviations that are never a name ("58 y.o. woman", "i.v. zofran", "3 p.m."); same
/// list as `DOTTED_ABBR` in `training/predict.py`.
fn dotted_abbreviation() -> Option<&'static regex::Regex> {
    static RE: OnceLock<Option<regex::Regex>> = OnceLock::new();
    compiled(
        &RE,
        r"(?i)(?:y\.o|a\.m|p\.m|i\.v|i\.m|p\.o|b\.i\.d|t\.i\.d|q\.i\.d|q\.d|q\.h\.s|q\.h|p\.r\.n|n\.p\.o|e\.g|i\.e|s\.p|h\.o|c\.o|r\.o|d\.c|f\.u|w\.u|s\.c|o\.d|o\.s|o\.u|a\.c|p\.c|h\.s|d\.o\.b|m\.d|r\.n)\.?",
    )
}

/// A regex compiled once into `cell`; `None` if it does not compile (callers then skip the rule).
fn compiled(
    cell: &'static OnceLock<Option<regex::Regex>>,
    pattern: &str,
) -> Option<&'static regex::Regex> {
    cell.get_or_init(|| regex::Regex::new(pattern).ok())
        .as_ref()
}

/// Step 4a (i) of the decoding rules: words inside a dotted abbreviation (not preceded by a letter,
/// digit, `_` or `.`, not followed by a letter, digit or `_`) get no PERSON score, so they never
/// start or join a name.
fn no_names_in_abbreviations(text: &str, words: &mut [Word], person: usize) {
    let Some(re) = dotted_abbreviation() else {
        return;
    };
    let word_char = |c: char| c.is_alphanumeric() || c == '_';
    let spans: Vec<(usize, usize)> = re
        .find_iter(text)
        .filter(|m| {
            let before = text.get(..m.start()).and_then(|s| s.chars().next_back());
            let after = text.get(m.end()..).and_then(|s| s.chars().next());
            !before.is_some_and(|c| word_char(c) || c == '.') && !after.is_some_and(word_char)
        })
        .map(|m| (m.start(), m.end()))
        .collect();
    if spans.is_empty() {
        return;
    }
    for w in words {
        if spans.iter().any(|&(a, b)| a <= w.start && w.end <= b) {
            w.never_a_name(person);
        }
    }
}

/// Words for a person that are never a name ("58 year old FEMALE", "daughter and
/// grandaughter", "She"); matched case-insensitively, whole words. Sorted. Short relation words
/// ("son", "man") and the pronoun "he" are left out: they are surnames too.
const NOT_NAMES: &[&str] = &[
    "brother",
    "brothers",
    "daughter",
    "daughters",
    "father",
    "female",
    "females",
    "gentleman",
    "grandaughter",
    "granddaughter",
    "granddaughters",
    "grandson",
    "grandsons",
    "her",
    "hers",
    "herself",
    "him",
    "himself",
    "his",
    "husband",
    "male",
    "males",
    "mother",
    "nephew",
    "niece",
    "patient",
    "patients",
    "she",
    "sister",
    "sisters",
    "spouse",
    "their",
    "theirs",
    "them",
    "themselves",
    "they",
    "uncle",
    "woman",
    "women",
];

/// Step 4a (i), second part: words in [`NOT_NAMES`] get no PERSON score.
fn no_names_in_common_nouns(text: &str, words: &mut [Word], person: usize) {
    for w in words {
        if listed(NOT_NAMES, text.get(w.start..w.end).unwrap_or_default()) {
            w.never_a_name(person);
        }
    }
}

/// Titles before a name ("Dr. Varga", "MRS OKONKWO"); same list as `TITLES` in
/// `training/predict.py`, sorted.
const TITLES: &[&str] = &[
    "dr", "dra", "drs", "frau", "herr", "miss", "mme", "mr", "mrs", "ms", "mx", "prof", "sr",
    "sra", "srta",
];

/// The PERSON score from which a word right after a title is a name.
const TITLE_MIN: f32 = 0.1;

/// The title (as written) that the word starting at byte `start` follows: spaces or tabs (at
/// least one), before them an optional `.`, before that a title not preceded by a letter, digit,
/// `_` or `.`.
fn after_title(text: &str, start: usize) -> Option<&str> {
    let before = text.get(..start)?;
    let trimmed = before.trim_end_matches([' ', '\t']);
    if trimmed.len() == before.len() {
        return None;
    }
    listed_word_before(trimmed, TITLES).and_then(|r| text.get(r))
}

/// The byte range of the word of `list` that `prefix` ends with, after an optional `.`
/// ("Dr." , "St"), when that word is not part of a longer token (see [`word_before`]).
fn listed_word_before(prefix: &str, list: &[&str]) -> Option<std::ops::Range<usize>> {
    let end = prefix.strip_suffix('.').unwrap_or(prefix).len();
    let word = word_before(prefix.get(..end)?).filter(|w| !w.is_empty() && listed(list, w))?;
    Some(end.checked_sub(word.len())?..end)
}

/// Whether `word` is written capitalised: an upper-case letter, then a lower-case one.
fn capitalised(word: &str) -> bool {
    let mut chars = word.chars();
    chars.next().is_some_and(char::is_uppercase) && chars.next().is_some_and(char::is_lowercase)
}

/// The run of letters `prefix` ends with, lower-cased; `None` when the run is preceded by a
/// letter, digit, `_` or `.` (part of a longer token).
fn word_before(prefix: &str) -> Option<String> {
    let head = prefix.trim_end_matches(char::is_alphabetic);
    let glued = head
        .chars()
        .next_back()
        .is_some_and(|c| c.is_alphanumeric() || c == '_' || c == '.');
    (!glued).then(|| prefix.get(head.len()..).unwrap_or_default().to_lowercase())
}

/// Family and care relations before a name ("dtr marisol", "Son, Al,"); same list as
/// `RELATIONS` in `training/predict.py`, sorted.
const RELATIONS: &[&str] = &[
    "aunt",
    "bro",
    "brother",
    "brothers",
    "cousin",
    "dad",
    "dau",
    "daughter",
    "daughters",
    "dtr",
    "father",
    "fiance",
    "fiancee",
    "friend",
    "grandaughter",
    "granddaughter",
    "grandson",
    "hcp",
    "hus",
    "husband",
    "mom",
    "mother",
    "neighbor",
    "nephew",
    "niece",
    "partner",
    "proxy",
    "sis",
    "sister",
    "sisters",
    "son",
    "sons",
    "spouse",
    "uncle",
    "wife",
];

/// Common words never taken for a name after a relation ("brother just turned", "son called");
/// same list as `COMMON_WORDS` in `training/predict.py`, sorted.
const COMMON_WORDS: &[&str] = &[
    "a",
    "about",
    "all",
    "also",
    "an",
    "and",
    "any",
    "are",
    "at",
    "aware",
    "be",
    "been",
    "but",
    "by",
    "called",
    "came",
    "can",
    "could",
    "did",
    "do",
    "does",
    "down",
    "for",
    "from",
    "had",
    "has",
    "have",
    "he",
    "her",
    "here",
    "him",
    "his",
    "home",
    "i",
    "if",
    "in",
    "into",
    "is",
    "it",
    "just",
    "left",
    "may",
    "me",
    "might",
    "must",
    "my",
    "no",
    "not",
    "now",
    "of",
    "on",
    "one",
    "or",
    "our",
    "out",
    "over",
    "present",
    "said",
    "says",
    "she",
    "should",
    "so",
    "some",
    "still",
    "that",
    "the",
    "their",
    "them",
    "then",
    "there",
    "these",
    "they",
    "this",
    "those",
    "three",
    "to",
    "today",
    "tomorrow",
    "tonight",
    "two",
    "up",
    "updated",
    "us",
    "very",
    "visited",
    "was",
    "we",
    "well",
    "went",
    "were",
    "what",
    "when",
    "where",
    "which",
    "who",
    "will",
    "with",
    "would",
    "yes",
    "yesterday",
    "you",
    "your",
];

/// The PERSON score from which a word right after a relation is a name: a relation is evidence
/// like a title, so a weak name score suffices (0.3 until 2026-12-03; 0.1 found two more names
/// after relations in long physionet dev notes with no new false positive on the dev sets).
const RELATION_MIN: f32 = 0.1;

/// Whether the word starting at byte `start` follows a relation with one to three spaces, tabs,
/// commas, hyphens or colons between, the relation not preceded by a letter, digit, `_` or `.`.
fn after_relation(text: &str, start: usize) -> bool {
    let Some(before) = text.get(..start) else {
        return false;
    };
    let trimmed = before.trim_end_matches([' ', '\t', ',', '-', ':']);
    (1..=3).contains(&(before.len() - trimmed.len()))
        && word_before(trimmed).is_some_and(|w| RELATIONS.binary_search(&w.as_str()).is_ok())
}

/// Step 4a (ii) and (iii) of the decoding rules: a word right after a title with a PERSON score
/// of at least `TITLE_MIN` — or with any score when the text capitalises words and both the
/// title and the word are written capitalised, the word no common word ("update to Mrs
/// Okonkwo today"; not "MS. Aspiration", where MS is mental status) — or right after a relation
/// with at least `RELATION_MIN` and not a common word, becomes a confident name word
/// (`p(B-PERSON) = 1`, `p(I-PERSON) = 0`).
fn names_after_cues(text: &str, words: &mut [Word], person: usize) {
    let cased = capitalises_words(text);
    for w in words {
        let score =
            w.pb.get(person).copied().unwrap_or(0.0) + w.pi.get(person).copied().unwrap_or(0.0);
        let word = text.get(w.start..w.end).unwrap_or_default();
        let common = || listed(COMMON_WORDS, word);
        let titled = after_title(text, w.start).is_some_and(|title| {
            score >= TITLE_MIN || (cased && capitalised(title) && capitalised(word) && !common())
        });
        if titled || (score >= RELATION_MIN && !common() && after_relation(text, w.start)) {
            if let Some(b) = w.pb.get_mut(person) {
                *b = 1.0;
            }
            if let Some(i) = w.pi.get_mut(person) {
                *i = 0.0;
            }
        }
    }
}

/// Professional credentials written after a signature ("T. Reyes CRT"), upper case, sorted.
const CREDENTIALS: &[&str] = &[
    "APRN", "BSN", "CCRN", "CNA", "CRNA", "CRT", "DNP", "LCSW", "LICSW", "LPN", "MD", "MSN", "MSW",
    "NP", "PA", "RD", "RN", "RRT", "RT", "SN", "SW",
];

/// Step 4a (iv) of the decoding rules: a surname between a name word and a credential continues
/// the name ("Tomas Reyes CRT", where the model scored the surname low). The word starts with an
/// upper-case letter, is all letters (two or more), no common word and no credential; the next word
/// is an upper-case credential with only spaces, tabs or commas between; the previous word, on the
/// same line and not touching it, has a PERSON score of at least `person_min` (the PERSON
/// threshold). Such a word gets `p(B-PERSON) = 0`, `p(I-PERSON) = 1`.
fn surnames_before_credentials(text: &str, words: &mut [Word], person: usize, person_min: f32) {
    let score = |w: &Word| {
        w.pb.get(person).copied().unwrap_or(0.0) + w.pi.get(person).copied().unwrap_or(0.0)
    };
    for j in 1..words.len().saturating_sub(1) {
        let (Some(prev), Some(w), Some(next)) = (words.get(j - 1), words.get(j), words.get(j + 1))
        else {
            continue;
        };
        let word = text.get(w.start..w.end).unwrap_or_default();
        let credential = text.get(next.start..next.end).unwrap_or_default();
        let before = text.get(prev.end..w.start).unwrap_or_default();
        let after = text.get(w.end..next.start).unwrap_or_default();
        let surname = word.chars().count() >= 2
            && word.chars().all(char::is_alphabetic)
            && word.chars().next().is_some_and(char::is_uppercase)
            && !listed(COMMON_WORDS, word)
            && CREDENTIALS
                .binary_search(&word.to_uppercase().as_str())
                .is_err();
        if surname
            && CREDENTIALS.binary_search(&credential).is_ok()
            && after.trim_matches([' ', '\t', ',']).is_empty()
            && !before.is_empty()
            && !before.contains('\n')
            && score(prev) >= person_min
            && let Some(w) = words.get_mut(j)
        {
            if let Some(b) = w.pb.get_mut(person) {
                *b = 0.0;
            }
            if let Some(i) = w.pi.get_mut(person) {
                *i = 1.0;
            }
        }
    }
}

/// A numeric date, matched against a whole whitespace-delimited chunk.
fn numeric_date() -> Option<&'static regex::Regex> {
    static RE: OnceLock<Option<regex::Regex>> = OnceLock::new();
    compiled(
        &RE,
        r"^(?:(?:0?[1-9]|1[0-2])/(?:0?[1-9]|[12][0-9]|3[01])(?:/(?:\d{2}|\d{4}))?|(?:0?[1-9]|1[0-2])-(?:0?[1-9]|[12][0-9]|3[01])-(?:\d{2}|\d{4})|(?:0?[1-9]|1[0-2])[/-](?:19|20)\d{2}|(?:0?[1-9]|1[0-2])/[3-9]\d|'\d{2}|\d{2}'|(?:19|20)\d{2}|\d{4}-\d{2}-\d{2})$",
    )
}

fn ordinal_day() -> Option<&'static regex::Regex> {
    static RE: OnceLock<Option<regex::Regex>> = OnceLock::new();
    compiled(
        &RE,
        r"^[ \t]?(?:0?[1-9]|[12][0-9]|3[01])(?i:st|nd|rd|th)(?:$|[^\p{L}\p{N}_])",
    )
}

/// Step 6, after [`span_rules`]: a DATE span followed (after at most one space or tab) by an
/// ordinal day (`1st` … `31st`) takes it in — the model is often unsure of the number and keeps
/// only "Monday the" of "Monday the 3rd".
fn with_ordinal_day(text: &str, f: Finding) -> Finding {
    if f.entity != EntityType::Date {
        return f;
    }
    let Some(m) = text.get(f.end..).and_then(|rest| ordinal_day()?.find(rest)) else {
        return f;
    };
    let day = m.as_str().trim_end_matches(|c: char| !c.is_alphanumeric());
    Finding {
        end: f.end + day.len(),
        ..f
    }
}

/// Words that on their own never identify a place or an organisation ("the hospital", "OSH",
/// "nursing home", "MICU", "nuclear med", "radiation therapy"); sorted, for binary search. Same
/// list as `training/predict.py`.
const GENERIC_PLACE: &[&str] = &[
    "a",
    "an",
    "and",
    "angio",
    "angiography",
    "assisted",
    "at",
    "bay",
    "bed",
    "cardiac",
    "cardiology",
    "care",
    "cath",
    "ccu",
    "center",
    "centre",
    "clinic",
    "csru",
    "ct",
    "cvicu",
    "department",
    "dept",
    "dialysis",
    "down",
    "echo",
    "ed",
    "endoscopy",
    "ep",
    "er",
    "ew",
    "facility",
    "floor",
    "funeral",
    "gi",
    "her",
    "his",
    "home",
    "hosp",
    "hospice",
    "hospital",
    "hospitals",
    "house",
    "icu",
    "in",
    "institution",
    "ir",
    "lab",
    "labs",
    "liver",
    "living",
    "local",
    "med",
    "medicine",
    "micu",
    "mri",
    "nephrology",
    "neurology",
    "nicu",
    "nsicu",
    "nuclear",
    "nursing",
    "of",
    "office",
    "oncology",
    "or",
    "ortho",
    "orthopedics",
    "osh",
    "other",
    "our",
    "outside",
    "pacu",
    "pharmacy",
    "picu",
    "psych",
    "psychiatry",
    "pulmonary",
    "radiation",
    "radiology",
    "rehab",
    "rehabilitation",
    "renal",
    "room",
    "same",
    "service",
    "services",
    "shelter",
    "sicu",
    "step",
    "surg",
    "surgery",
    "surgical",
    "team",
    "telemetry",
    "that",
    "the",
    "their",
    "therapy",
    "this",
    "to",
    "transplant",
    "tsicu",
    "ultrasound",
    "unit",
    "urology",
    "vicu",
    "ward",
];

/// Words that are never the first or last word of a place's or organisation's name: a span
/// that starts or ends with them ("the Harlow house", "Richmond and") is cut to what they
/// enclose. A subset of [`GENERIC_PLACE`]; sorted.
const EDGE_WORDS: &[&str] = &[
    "a", "an", "and", "at", "her", "his", "in", "of", "other", "our", "outside", "same", "that",
    "the", "their", "this", "to",
];

/// Whether `word`, lower-cased, is in the sorted `list`.
fn listed(list: &[&str], word: &str) -> bool {
    list.binary_search(&word.to_lowercase().as_str()).is_ok()
}

/// The words of `fragment` — maximal runs of letters — as byte ranges.
fn letter_runs(fragment: &str) -> Vec<(usize, usize)> {
    let mut words = Vec::new();
    let mut open = None;
    for (i, c) in fragment.char_indices().chain([(fragment.len(), ' ')]) {
        match (c.is_alphabetic(), open) {
            (true, None) => open = Some(i),
            (false, Some(a)) => {
                words.push((a, i));
                open = None;
            }
            _ => {}
        }
    }
    words
}

/// The part of a LOCATION or ORGANIZATION fragment that names something, as a byte range of the
/// fragment: all of it if it has no word (run of letters), `None` if every word is generic
/// ("the hospital", "MICU 4"). Otherwise [`EDGE_WORDS`] at either end are cut off with what separates
/// them from the rest, so that the part starts or ends with a letter or digit where it was cut
/// ("the Harlow house" → "Harlow house", "St. Brigid, the" → "St. Brigid").
fn named_part(fragment: &str) -> Option<(usize, usize)> {
    let words = letter_runs(fragment);
    let word = |&(a, b): &(usize, usize)| fragment.get(a..b).unwrap_or_default();
    if words.is_empty() {
        return Some((0, fragment.len()));
    }
    if words.iter().all(|w| listed(GENERIC_PLACE, word(w))) {
        return None;
    }
    let inner = |w: &(usize, usize)| !listed(EDGE_WORDS, word(w));
    let first = words.iter().position(inner)?;
    let last = words.iter().rposition(inner)?;
    let (mut start, mut end) = (0, fragment.len());
    if let Some(cut) = first.checked_sub(1).and_then(|i| words.get(i)) {
        let rest = fragment.get(cut.1..)?;
        start = cut.1 + rest.find(char::is_alphanumeric)?;
    }
    if let Some(cut) = words.get(last + 1) {
        let rest = fragment.get(..cut.0)?;
        let (at, c) = rest
            .char_indices()
            .rev()
            .find(|(_, c)| c.is_alphanumeric())?;
        end = at + c.len_utf8();
    }
    Some((start, end))
}

/// Abbreviations that begin a place's name ("St. Brigid", "Mt Sinai", "Ft. Worth"); sorted.
const PLACE_PREFIXES: &[&str] = &["ft", "mt", "st", "ste"];

/// Where a place's name starting at byte `start` really starts: at a `PLACE_PREFIXES` word right
/// before its first letter or digit (then an optional `.`, then spaces or tabs), which the model
/// often leaves out ("St. Brigid" tagged ". Brigid"); otherwise at `start`.
fn with_place_prefix(text: &str, start: usize) -> usize {
    let name = text
        .get(start..)
        .and_then(|rest| rest.find(char::is_alphanumeric))
        .map_or(start, |i| start + i);
    text.get(..name)
        .and_then(|before| listed_word_before(before.trim_end_matches([' ', '\t']), PLACE_PREFIXES))
        .map_or(start, |r| r.start)
}

/// Score a place or organisation span written all in lower case needs in text that capitalises
/// words (step 6).
const LOWER_CASE_PLACE_MIN: f32 = 0.8;

/// Score a name written all in lower case needs in text that capitalises words (step 6). Higher
/// than [`LOWER_CASE_PLACE_MIN`]: nurses write "son bill" in cased notes, and the model is sure
/// of such names (a name after a relation or title scores 1), not of misspelled words.
const LOWER_CASE_NAME_MIN: f32 = 0.9;

/// Whether `text` has both a capitalised word (`[A-Z][a-z]{2,}`) and a lower-case one
/// (`[a-z]{3,}`), ASCII letters, words delimited by non-alphanumeric characters: its writer
/// uses case, so a proper noun is likely capitalised. All-caps and all-lower-case notes are not.
fn capitalises_words(text: &str) -> bool {
    let (mut capital, mut lower) = (false, false);
    for w in text.split(|c: char| !c.is_alphanumeric() && c != '_') {
        let b = w.as_bytes();
        capital |= b.len() >= 3
            && b.first().is_some_and(u8::is_ascii_uppercase)
            && b.get(1..3)
                .is_some_and(|r| r.iter().all(u8::is_ascii_lowercase));
        lower |= b.len() >= 3
            && b.get(..3)
                .is_some_and(|r| r.iter().all(u8::is_ascii_lowercase));
        if capital && lower {
            return true;
        }
    }
    false
}

/// Step 6, in text that [capitalises words](capitalises_words): whether `f` is a span without an
/// upper-case letter whose score is below [`LOWER_CASE_PLACE_MIN`] for a LOCATION or
/// ORGANIZATION ("in good spirits", "per nutrition consult") or [`LOWER_CASE_NAME_MIN`] for a
/// PERSON ("intermitenly", "vistied"). The tokenizer is uncased, so the model cannot see that
/// the writer did not capitalise it.
fn weak_lower_case_span(text: &str, f: &Finding) -> bool {
    let min = match f.entity {
        EntityType::Location | EntityType::Organization => LOWER_CASE_PLACE_MIN,
        EntityType::Person => LOWER_CASE_NAME_MIN,
        _ => return false,
    };
    f.score < min
        && !text
            .get(f.start..f.end)
            .unwrap_or_default()
            .chars()
            .any(char::is_uppercase)
}

/// Step 6, in text that [capitalises words](capitalises_words): whether `f` is a PERSON span of
/// two or three capitals ("HO" — house officer, "ENT", "SOB", "CDI"), optionally with a final
/// `.`, after no title or relation. Where the writer capitalises words, names are written "Ho"
/// or "Ed" and an all-capitals word that short is an abbreviation; "Dr. HO" and "son ED" stay.
fn acronym_as_name(text: &str, f: &Finding) -> bool {
    let word = text
        .get(f.start..f.end)
        .unwrap_or_default()
        .trim_end_matches('.');
    f.entity == EntityType::Person
        && (2..=3).contains(&word.len())
        && word.bytes().all(|b| b.is_ascii_uppercase())
        && after_title(text, f.start).is_none()
        && !after_relation(text, f.start)
}

/// Nationalities, languages, religions and ethnic groups, lower case, sorted: who a person is or
/// what they speak, never a name or a place by themselves ("Cantonese speaking", "yelling in
/// Iranian", "catholic priest"). `GROUP_WORDS` in `training/predict.py`.
const GROUP_WORDS: &[&str] = &[
    "afghan",
    "african",
    "albanian",
    "algerian",
    "american",
    "amharic",
    "amish",
    "anglican",
    "arab",
    "arabic",
    "argentine",
    "argentinian",
    "armenian",
    "asian",
    "assyrian",
    "australian",
    "austrian",
    "bangladeshi",
    "baptist",
    "belarusian",
    "belgian",
    "bengali",
    "bolivian",
    "bosnian",
    "brazilian",
    "british",
    "buddhist",
    "bulgarian",
    "burmese",
    "cambodian",
    "cameroonian",
    "canadian",
    "cantonese",
    "caribbean",
    "catholic",
    "caucasian",
    "chilean",
    "chinese",
    "colombian",
    "congolese",
    "creole",
    "croatian",
    "cuban",
    "czech",
    "danish",
    "dominican",
    "dutch",
    "ecuadorian",
    "egyptian",
    "english",
    "eritrean",
    "estonian",
    "ethiopian",
    "european",
    "evangelical",
    "farsi",
    "filipino",
    "finnish",
    "french",
    "georgian",
    "german",
    "ghanaian",
    "greek",
    "guatemalan",
    "gujarati",
    "haitian",
    "hasidic",
    "hausa",
    "hebrew",
    "hindi",
    "hindu",
    "hispanic",
    "hmong",
    "honduran",
    "hungarian",
    "icelandic",
    "igbo",
    "indian",
    "indonesian",
    "iranian",
    "iraqi",
    "irish",
    "islamic",
    "israeli",
    "italian",
    "jamaican",
    "japanese",
    "jewish",
    "jordanian",
    "kenyan",
    "khmer",
    "korean",
    "kurdish",
    "lao",
    "laotian",
    "latina",
    "latino",
    "latvian",
    "lebanese",
    "liberian",
    "libyan",
    "lithuanian",
    "lutheran",
    "macedonian",
    "malay",
    "malaysian",
    "mandarin",
    "methodist",
    "mexican",
    "moldovan",
    "mongolian",
    "mormon",
    "moroccan",
    "muslim",
    "nepalese",
    "nepali",
    "nicaraguan",
    "nigerian",
    "norwegian",
    "orthodox",
    "pakistani",
    "palestinian",
    "panamanian",
    "pashto",
    "persian",
    "peruvian",
    "polish",
    "portuguese",
    "presbyterian",
    "protestant",
    "punjabi",
    "quaker",
    "romanian",
    "russian",
    "salvadoran",
    "samoan",
    "saudi",
    "scottish",
    "senegalese",
    "serbian",
    "sikh",
    "slovak",
    "slovenian",
    "somali",
    "spanish",
    "sudanese",
    "swahili",
    "swedish",
    "swiss",
    "syrian",
    "tagalog",
    "taiwanese",
    "tamil",
    "telugu",
    "thai",
    "tibetan",
    "tigrinya",
    "tongan",
    "turkish",
    "ugandan",
    "ukrainian",
    "urdu",
    "uzbek",
    "venezuelan",
    "vietnamese",
    "welsh",
    "yemeni",
    "yiddish",
    "yoruba",
    "zulu",
];

/// Step 6, over all spans: a PERSON, LOCATION or ORGANIZATION span made only of [`GROUP_WORDS`] is
/// dropped, unless a title or a relation precedes it ("Mr. French") or it follows a place or an
/// address span with at most three spaces, commas or `(` between ("Cyprus (Greek)").
fn drop_group_words(text: &str, found: &mut Vec<Finding>) {
    let keep: Vec<bool> = found
        .iter()
        .map(|f| {
            !name_span_words(text, f)
                .is_some_and(|words| words.iter().all(|w| listed(GROUP_WORDS, w)))
                || previous_word(text, f.start)
                    .is_some_and(|w| listed(TITLES, w) || listed(RELATIONS, w))
                || found.iter().any(|o| {
                    matches!(o.entity, EntityType::Location | EntityType::Address)
                        && o.end <= f.start
                        && text.get(o.end..f.start).is_some_and(|gap| {
                            gap.len() <= 3
                                && gap
                                    .chars()
                                    .all(|c| c.is_whitespace() || c == ',' || c == '(')
                        })
                })
        })
        .collect();
    let mut keep = keep.into_iter();
    found.retain(|_| keep.next().unwrap_or(true));
}

/// Step 6 of the decoding rules, after [`span_rules`]: whether `f` is a PERSON, LOCATION or
/// ORGANIZATION span whose words (runs of letters) are all in `lexicon`. With the drug lexicon
/// ("coumadin", "ATIVAN", "zoloft / amiodarone": a drug is never a person or a place; it has no
/// name or place that Faker knows, `training/drug_lexicon.py`); with the demonym lexicon
/// ("African American", "Hispanic", "Cantonese": nationality, ethnicity and language words are
/// never names or places; `models/classifier/demonyms.txt`).
fn only_lexicon_words(text: &str, f: &Finding, lexicon: &HashSet<String>) -> bool {
    !lexicon.is_empty()
        && name_span_words(text, f)
            .is_some_and(|words| words.iter().all(|w| lexicon.contains(&w.to_lowercase())))
}

/// The words (runs of letters) of `f` when it is a PERSON, LOCATION or ORGANIZATION span that
/// has any; what the lexicon rules of step 6 look up.
fn name_span_words<'t>(text: &'t str, f: &Finding) -> Option<Vec<&'t str>> {
    if !matches!(
        f.entity,
        EntityType::Person | EntityType::Location | EntityType::Organization
    ) {
        return None;
    }
    let fragment = text.get(f.start..f.end)?;
    let words: Vec<&str> = letter_runs(fragment)
        .into_iter()
        .filter_map(|(a, b)| fragment.get(a..b))
        .collect();
    (!words.is_empty()).then_some(words)
}

/// Words that make a name of the plain words before them: "Good Shepherd Hospital", "Larkspur House"
/// name a facility although every other word of them is an everyday word. Sorted.
const FACILITY_HEADS: &[&str] = &[
    "center",
    "centre",
    "clinic",
    "facility",
    "home",
    "hosp",
    "hospice",
    "hospital",
    "hospitals",
    "house",
    "infirmary",
    "institute",
    "rehab",
    "shelter",
];

/// Step 6d: a LOCATION span that ends in [`FACILITY_HEADS`] nouns ends before them when a word
/// that names something stays ("CALVERT HOSPITAL" → "CALVERT", "Keeley House" → "Keeley",
/// "St. Brigid's Hospital" → "St. Brigid's"). The name identifies the place, the noun does not,
/// and a redacted prompt keeps it readable ("transferred from `<LOCATION_1>` Hospital"). Runs after
/// the plain-word rule, for which the noun is what makes "MERCY HOSPITAL" a name. A span whose
/// other words are all generic ("the hospital") or edge words is left whole.
fn cut_facility_nouns(text: &str, found: &mut [Finding]) {
    for f in found
        .iter_mut()
        .filter(|f| f.entity == EntityType::Location)
    {
        let Some(fragment) = text.get(f.start..f.end) else {
            continue;
        };
        let words = letter_runs(fragment);
        let word = |&(a, b): &(usize, usize)| fragment.get(a..b).unwrap_or_default();
        let Some(last) = words.iter().rposition(|w| !listed(FACILITY_HEADS, word(w))) else {
            continue;
        };
        let Some(&(cut, _)) = words.get(last + 1) else {
            continue;
        };
        let named = words
            .iter()
            .take(last + 1)
            .any(|w| !listed(GENERIC_PLACE, word(w)) && !listed(EDGE_WORDS, word(w)));
        let end = fragment.get(..cut).and_then(|head| {
            head.char_indices()
                .rev()
                .find(|(_, c)| c.is_alphanumeric())
                .map(|(at, c)| at + c.len_utf8())
        });
        if let (true, Some(end)) = (named, end) {
            f.end = f.start + end;
        }
    }
}

/// Letters of the shortest word whose misspellings count as the word ([`PlainWords::contains`]).
const TYPO_MIN: usize = 7;

/// The word lexicon of decoding rule 6, with the plain words whose misspellings may be names.
#[derive(Debug, Default)]
struct PlainWords {
    /// English words written only in lower case, none a name or place Faker knows.
    words: HashSet<String>,
    /// Words of `words` one slip away from a name, place or capitalised word ("fetcher" ~
    /// "Fletcher"). Present only with `near_name_lexicon`, which also turns misspellings on.
    near_names: HashSet<String>,
}

impl PlainWords {
    fn is_empty(&self) -> bool {
        self.words.is_empty()
    }

    /// Whether lower-case `word` is a plain word, or (with a near-name lexicon) a plain word of
    /// [`TYPO_MIN`]+ letters with one slip inside it: a letter dropped ("tomrrow"), added
    /// ("betweeen") or swapped with its neighbour ("daugther"), first and last letters kept — the
    /// typing slips of hurried notes, which the model reads as names. Plain words near a name are
    /// excluded both ways, so no misspelling of them is also a name that Faker knows.
    fn contains(&self, word: &str) -> bool {
        if self.words.contains(word) {
            return true;
        }
        if self.near_names.is_empty() || word.chars().count() < TYPO_MIN {
            return false;
        }
        interior_edits(word).into_iter().any(|v| {
            v.chars().count() >= TYPO_MIN
                && self.words.contains(&v)
                && !self.near_names.contains(&v)
        })
    }
}

/// Every word one slip away from `word` without touching its first or last letter: one inner
/// letter dropped, two inner neighbours swapped, or a letter a–z inserted after the first.
fn interior_edits(word: &str) -> Vec<String> {
    let c: Vec<char> = word.chars().collect();
    let n = c.len();
    let mut out = Vec::new();
    for i in 1..n.saturating_sub(1) {
        let mut dropped = c.clone();
        dropped.remove(i);
        out.push(dropped.into_iter().collect());
        if i + 2 < n {
            let mut swapped = c.clone();
            swapped.swap(i, i + 1);
            out.push(swapped.into_iter().collect());
        }
    }
    for i in 1..n {
        for l in 'a'..='z' {
            let mut added = c.clone();
            added.insert(i, l);
            out.push(added.into_iter().collect());
        }
    }
    out
}

/// Step 6 of the decoding rules: whether `f` is a PERSON, LOCATION or ORGANIZATION span made only
/// of plain words (`plain`: English words written only in lower case, none a name or place Faker
/// knows; `training/word_lexicon.py`) and [`GENERIC_PLACE`] words, where case cannot tell the
/// model otherwise: the text does not [capitalise words](capitalises_words) (`cased` false:
/// "TRIPLE LUMEN", "MEDICALLY", "wheezy"), or the span does not mix cases: no upper-case letter
/// ("fair weather") or no lower-case one ("MIDDLE OF BED" in a note that capitalises elsewhere).
/// Kept: spans with a [`FACILITY_HEADS`] word ("MERCY HOSPITAL") and spans whose
/// [previous word](previous_word) is a title or a relation ("DR TALLOW", "son: bill").
fn only_plain_words(text: &str, f: &Finding, plain: &PlainWords, cased: bool) -> bool {
    // Case tells only where the writer uses it and the span mixes cases ("Calvert"); an all-caps
    // span in such text is emphasis or an abbreviation as often as a name.
    if plain.is_empty()
        || (cased
            && text.get(f.start..f.end).is_some_and(|s| {
                s.chars().any(char::is_uppercase) && s.chars().any(char::is_lowercase)
            }))
    {
        return false;
    }
    name_span_words(text, f).is_some_and(|words| {
        words
            .iter()
            .all(|w| listed(GENERIC_PLACE, w) || plain.contains(&w.to_lowercase()))
            && !words.iter().any(|w| listed(FACILITY_HEADS, w))
    }) && !previous_word(text, f.start).is_some_and(|w| listed(TITLES, w) || listed(RELATIONS, w))
}

/// The run of letters before byte `start` of `text`, past spaces, tabs and `.,:-` ("..DR TALLOW",
/// "son: bill"); `None` if there is none.
fn previous_word(text: &str, start: usize) -> Option<&str> {
    let before = text
        .get(..start)?
        .trim_end_matches([' ', '\t', '.', ',', ':', '-']);
    let head = before.trim_end_matches(char::is_alphabetic);
    before.get(head.len()..).filter(|w| !w.is_empty())
}

/// Words after which a four-digit number is a time of day, not a year ("BP 84/40 at 2000",
/// "extubated at approx 2030"). Sorted.
const CLOCK_CUES: &[&str] = &["about", "approx", "approximately", "aprox", "around", "at"];

/// Whether `chunk` (at `start` in `text`) is a 24-hour time (`0000`–`2359`) right after a clock
/// cue (`at`, `@`, `~`, `approx`, …).
fn clock_stamp(text: &str, start: usize, chunk: &str) -> bool {
    let &[h1, h2, m1, m2] = chunk.as_bytes() else {
        return false;
    };
    if ![h1, h2, m1, m2].iter().all(u8::is_ascii_digit)
        || (h1 - b'0') * 10 + (h2 - b'0') > 23
        || m1 > b'5'
    {
        return false;
    }
    let before = text.get(..start).unwrap_or_default().trim_end();
    if before.ends_with(['@', '~']) {
        return true;
    }
    let word = before
        .rsplit(|c: char| !c.is_alphabetic())
        .next()
        .unwrap_or_default();
    listed(CLOCK_CUES, word)
}

/// Separators a span never starts or ends with ([`span_rules`]): the model tags the comma after a
/// town as part of an address ("14 Elm Hollow Rd, Dunmore,").
const SPAN_TRIM: &str = ",;:";

/// Step 6 of the decoding rules: drop spans without letters or digits; trim [`SPAN_TRIM`]
/// separators and whitespace off both ends; place and organisation
/// spans are cut to their named part ([`named_part`]) and dropped without one; a DATE span without letters is replaced by
/// its chunk (delimited by whitespace and `()[]{},;`) if that chunk is a numeric date, and
/// dropped otherwise (fragments of vitals such as `120/85`, ranges such as `12-15`).
fn span_rules(text: &str, f: Finding) -> Option<Finding> {
    let fragment = text.get(f.start..f.end)?;
    if !fragment.chars().any(char::is_alphanumeric) {
        return None;
    }
    let trim = |c: char| c.is_whitespace() || SPAN_TRIM.contains(c);
    let f = Finding {
        start: f.end - fragment.trim_start_matches(trim).len(),
        end: f.start + fragment.trim_end_matches(trim).len(),
        ..f
    };
    let fragment = text.get(f.start..f.end)?;
    if matches!(f.entity, EntityType::Location | EntityType::Organization) {
        let (start, end) = named_part(fragment)?;
        return Some(Finding {
            start: with_place_prefix(text, f.start + start),
            end: f.start + end,
            ..f
        });
    }
    if f.entity != EntityType::Date || fragment.chars().any(char::is_alphabetic) {
        return Some(f);
    }
    let before = text.get(..f.start)?;
    let after = text.get(f.end..)?;
    let bound = |c: char| c.is_whitespace() || "()[]{},;".contains(c);
    let mut start = before
        .char_indices()
        .rev()
        .find(|(_, c)| bound(*c))
        .map_or(0, |(i, c)| i + c.len_utf8());
    let mut end = f.end + after.find(bound).unwrap_or(after.len());
    while let Some(c) = text.get(start..end).and_then(|s| s.chars().next()) {
        if !"([{\"\u{201c}\u{2018}".contains(c) {
            break;
        }
        start += c.len_utf8();
    }
    while let Some(c) = text.get(start..end).and_then(|s| s.chars().next_back()) {
        if !".,;:!?)]}\"\u{201d}\u{2019}".contains(c) {
            break;
        }
        end -= c.len_utf8();
    }
    let chunk = text.get(start..end)?;
    if !numeric_date().is_some_and(|re| re.is_match(chunk)) || clock_stamp(text, start, chunk) {
        return None;
    }
    if chunk.starts_with('\'') {
        start += 1;
    } else if chunk.ends_with('\'') {
        end -= 1;
    }
    Some(Finding { start, end, ..f })
}

struct Word {
    start: usize,
    end: usize,
    pb: Vec<f32>,
    pi: Vec<f32>,
}

impl Word {
    /// Step 4a: this word gets no PERSON score (index `person`).
    fn never_a_name(&mut self, person: usize) {
        for p in [&mut self.pb, &mut self.pi] {
            if let Some(v) = p.get_mut(person) {
                *v = 0.0;
            }
        }
    }
}

fn softmax(logits: &[f32], out: &mut [f32]) {
    let max = logits.iter().copied().fold(f32::MIN, f32::max);
    let mut sum = 0.0;
    for (o, l) in out.iter_mut().zip(logits) {
        *o = (l - max).exp();
        sum += *o;
    }
    if sum > 0.0 {
        out.iter_mut().for_each(|o| *o /= sum);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A classifier finding of `entity` (score 0.9) on the first `needle` in `text`.
    fn found(text: &str, needle: &str, entity: EntityType) -> Finding {
        let start = text.find(needle).expect("needle in text");
        Finding {
            start,
            end: start + needle.len(),
            entity,
            score: 0.9,
            recognizer: "classifier",
        }
    }

    /// What the span rules make of a classifier finding of `entity` on `needle` in `text`.
    fn ruled(entity: EntityType, text: &str, needle: &str) -> Option<String> {
        span_rules(text, found(text, needle, entity)).map(|f| text[f.start..f.end].to_owned())
    }

    fn date(text: &str, needle: &str) -> Option<String> {
        ruled(EntityType::Date, text, needle)
    }

    /// Words of one type (index 0 of two) with the given scores, split evenly into B and I.
    fn words(text: &str, scores: &[f32]) -> Vec<Word> {
        let mut out = Vec::new();
        let mut at = 0;
        for (w, s) in text.split_whitespace().zip(scores) {
            let start = at + text[at..].find(w).unwrap();
            at = start + w.len();
            out.push(Word {
                start,
                end: at,
                pb: vec![if out.is_empty() { *s } else { 0.0 }, 0.0],
                pi: vec![if out.is_empty() { 0.0 } else { *s }, 0.0],
            });
        }
        out
    }

    fn spans<'t>(text: &'t str, scores: &[f32], low: f32) -> Vec<&'t str> {
        decode(text, &words(text, scores), &[0.8, 0.8], &[low, 0.8])
            .into_iter()
            .map(|(a, b, ..)| &text[a..b])
            .collect()
    }

    #[test]
    fn hysteresis_grows_spans_from_a_confident_word_but_not_across_lines() {
        let text = "seen by marta k palermo today";
        let scores = [0.0, 0.1, 0.9, 0.5, 0.4, 0.2];
        // Without hysteresis only the confident word; with it, its neighbours of the same type.
        assert_eq!(spans(text, &scores, 0.8), ["marta"]);
        assert_eq!(spans(text, &scores, 0.35), ["marta k palermo"]);
        // A lone word under the threshold never starts a span, however low `extend` is.
        assert_eq!(
            spans(text, &[0.0, 0.1, 0.7, 0.5, 0.4, 0.2], 0.05),
            Vec::<&str>::new()
        );
        // Leftwards too, and never over a line break.
        let text = "pt: ann\nmarie smith";
        assert_eq!(spans(text, &[0.0, 0.5, 0.5, 0.95], 0.4), ["marie smith"]);
    }

    #[test]
    fn a_date_takes_in_the_ordinal_day_after_it() {
        let extended = |text: &str, needle: &str, entity: EntityType| {
            let f = with_ordinal_day(text, found(text, needle, entity));
            text[f.start..f.end].to_owned()
        };
        let date = |text: &str, needle: &str| extended(text, needle, EntityType::Date);
        assert_eq!(
            date("on Monday the 3rd, at 9", "Monday the"),
            "Monday the 3rd"
        );
        assert_eq!(date("seen on the\t11TH.", "on the"), "on the\t11TH");
        // Two spaces, a longer word, an impossible day, another type: left as they are.
        assert_eq!(date("Friday the  4th", "Friday the"), "Friday the");
        assert_eq!(date("the 11thx", "the"), "the");
        assert_eq!(date("the 32nd", "the"), "the");
        let person = extended("Mary the 3rd", "Mary the", EntityType::Person);
        assert_eq!(person, "Mary the");
    }

    #[test]
    fn times_after_clock_cues_are_not_years() {
        assert!(CLOCK_CUES.windows(2).all(|w| w[0] < w[1]), "sorted");
        let text = "BP 84/40 at 2000, extubated @2030 and at approx 1415; at 1999";
        assert_eq!(date(text, "2000"), None);
        assert_eq!(date(text, "2030"), None);
        assert_eq!(date(text, "1415"), None);
        // Not a time of day, or no cue: a year.
        assert_eq!(date(text, "1999").as_deref(), Some("1999"));
        assert_eq!(date("CABG in 2000", "2000").as_deref(), Some("2000"));
    }

    #[test]
    fn date_fragments_are_completed_or_dropped() {
        assert_eq!(date("seen 10/15 at noon", "/15").as_deref(), Some("10/15"));
        assert_eq!(date("BP 120/85 stable", "/85"), None);
        assert_eq!(date("MI in '92.", "92").as_deref(), Some("92"));
        assert_eq!(date("(7/22/1993)", "22").as_deref(), Some("7/22/1993"));
        assert_eq!(date("since 1992, ok", "1992").as_deref(), Some("1992"));
        assert_eq!(date("rate 10:30", "30"), None);
        assert_eq!(date("on March 3", "March 3").as_deref(), Some("March 3"));
        assert_eq!(date("Café 3/4 ü", "3/4").as_deref(), Some("3/4"));
        assert_eq!(date("RR 12-15, sats ok", "12-15"), None);
        assert_eq!(
            date("on 12-15-2019.", "12-15").as_deref(),
            Some("12-15-2019")
        );
        assert_eq!(date("AVR 8/88, MVR", "8/88").as_deref(), Some("8/88"));
        // Chunks end at brackets and commas too; a two-digit year may carry a trailing apostrophe.
        assert_eq!(date("cabg '95(lima to d1)", "95").as_deref(), Some("95"));
        assert_eq!(
            date("at 0000(10/15) will", "10/15").as_deref(),
            Some("10/15")
        );
        assert_eq!(date("CVA 74'. OBESITY", "74").as_deref(), Some("74"));
        assert_eq!(date("HR 70-90'S", "90"), None);
    }

    fn place(text: &str, needle: &str) -> Option<String> {
        ruled(EntityType::Location, text, needle)
    }

    #[test]
    fn multi_word_names_propagate_to_their_other_occurrences() {
        let text = "Helena Marsh > Flightaware > HELENA MARSH; Marsh's note. Marshville";
        let person = |start: usize, end: usize| Finding {
            start,
            end,
            entity: EntityType::Person,
            score: 0.9,
            recognizer: "classifier",
        };
        let more = propagate_names(text, &[person(0, 12)]);
        let got: Vec<&str> = more.iter().map(|f| &text[f.start..f.end]).collect();
        assert_eq!(got, ["HELENA MARSH", "Marsh"]);
        // A single-word span does not propagate (too many names are also words).
        let text = "Dr. Brown saw her; brown sputum";
        assert!(propagate_names(text, &[person(4, 9)]).is_empty());
    }

    #[test]
    fn weak_lower_case_spans_are_dropped_where_the_writer_capitalises() {
        assert!(capitalises_words("Pt in good spirits. Family at bedside"));
        assert!(!capitalises_words("PT IN GOOD SPIRITS, FAMILY AT BEDSIDE"));
        assert!(!capitalises_words(
            "pt in good spirits, family at bedside; BP ok"
        ));
        assert!(!capitalises_words("Pt ok; BP 120/80"));
        let text = "Pt in good spirits, moved to Richmond; wife from fairfax";
        let place = |needle: &str, score: f32| Finding {
            score,
            ..found(text, needle, EntityType::Location)
        };
        assert!(weak_lower_case_span(text, &place("good spirits", 0.6)));
        assert!(!weak_lower_case_span(text, &place("good spirits", 0.85)));
        assert!(!weak_lower_case_span(text, &place("Richmond", 0.6)));
        // Names need more: a confident lower-case name stays, a middling one goes.
        let name = |score: f32| Finding {
            entity: EntityType::Person,
            ..place("fairfax", score)
        };
        assert!(!weak_lower_case_span(text, &name(0.95)));
        assert!(weak_lower_case_span(text, &name(0.8)));
        let date = Finding {
            entity: EntityType::Date,
            ..name(0.8)
        };
        assert!(!weak_lower_case_span(text, &date));
    }

    #[test]
    fn short_capitals_are_abbreviations_where_the_writer_capitalises() {
        let text = "Line placed by HO, seen by ENT. Dr. LEE and son ED aware; Ho visited. \
                    Mr LI came; HOGAN called; SOB. noted";
        assert!(capitalises_words(text));
        let person = |needle: &str| found(text, needle, EntityType::Person);
        assert!(acronym_as_name(text, &person("HO")));
        assert!(acronym_as_name(text, &person("ENT")));
        assert!(acronym_as_name(text, &person("SOB.")));
        // After a title or a relation, written normally, four letters or more, or not a name.
        assert!(!acronym_as_name(text, &person("LEE")));
        assert!(!acronym_as_name(text, &person("ED")));
        assert!(!acronym_as_name(text, &person("LI")));
        assert!(!acronym_as_name(text, &person("Ho")));
        assert!(!acronym_as_name(text, &person("HOGAN")));
        assert!(!acronym_as_name(
            text,
            &found(text, "ENT", EntityType::Organization)
        ));
    }

    #[test]
    fn spans_made_only_of_drug_names_are_dropped() {
        let drugs: HashSet<String> = ["coumadin", "amiodarone", "zoloft"]
            .into_iter()
            .map(str::to_owned)
            .collect();
        let text = "on COUMADIN and zoloft \n amiodarone; Dr Coumadin-Smith; Zoloft 50 mg";
        let span = |needle: &str, entity: EntityType| found(text, needle, entity);
        let dropped = |f: Finding| only_lexicon_words(text, &f, &drugs);
        assert!(dropped(span("COUMADIN", EntityType::Person)));
        assert!(dropped(span("zoloft \n amiodarone", EntityType::Location)));
        assert!(dropped(span("Zoloft 50", EntityType::Organization)));
        // A name beside a drug's, other types, and an empty lexicon are left alone.
        assert!(!dropped(span("Coumadin-Smith", EntityType::Person)));
        assert!(!dropped(span("COUMADIN", EntityType::Date)));
        assert!(!only_lexicon_words(
            text,
            &span("COUMADIN", EntityType::Person),
            &HashSet::new()
        ));
    }

    #[test]
    fn spans_of_plain_words_are_dropped_where_case_cannot_tell() {
        let plain = plain_words(
            &["triple", "lumen", "fair", "weather", "mercy", "tallow"],
            &[],
        );
        let upper = "TRIPLE LUMEN IN. TO MERCY HOSPITAL. ..DR TALLOW CALLED. JO FAIR";
        let cased = "Out in fair weather, Triple Lumen out, son: tallow came, back to TRIPLE LUMEN";
        let dropped = |text: &str, needle: &str, entity: EntityType| {
            let f = found(text, needle, entity);
            only_plain_words(text, &f, &plain, capitalises_words(text))
        };
        assert!(!capitalises_words(upper) && capitalises_words(cased));
        // Where the text has no case to go by, and lower-case spans where it has.
        assert!(dropped(upper, "TRIPLE LUMEN", EntityType::Location));
        assert!(dropped(cased, "fair weather", EntityType::Location));
        assert!(dropped(upper, "FAIR", EntityType::Person));
        // In cased text an all-caps span does not use case either.
        let mut f = found(cased, "TRIPLE LUMEN", EntityType::Location);
        f.start = cased.rfind("TRIPLE LUMEN").expect("second mention");
        f.end = f.start + "TRIPLE LUMEN".len();
        assert!(only_plain_words(cased, &f, &plain, true));
        // A facility noun, a title or relation before, a capital in cased text, a word that is
        // not plain ("JO"), other types, and an empty lexicon are left alone.
        assert!(!dropped(upper, "MERCY HOSPITAL", EntityType::Location));
        assert!(!dropped(upper, "TALLOW", EntityType::Person));
        assert!(!dropped(cased, "tallow", EntityType::Person));
        assert!(!dropped(cased, "Triple Lumen", EntityType::Organization));
        assert!(!dropped(upper, "JO FAIR", EntityType::Person));
        assert!(!dropped(upper, "TRIPLE LUMEN", EntityType::Date));
        let f = found(upper, "TRIPLE LUMEN", EntityType::Location);
        assert!(!only_plain_words(upper, &f, &PlainWords::default(), false));
    }

    #[test]
    fn places_end_before_their_facility_nouns() {
        let text = "FROM CALVERT HOSPITAL TO keeley house; St. Brigid's Hospital 2, \
                    the hospital, Mercy Hospital, Osler 5 Rehab Center";
        let cut = |needle: &str, entity: EntityType| {
            let mut found = vec![found(text, needle, entity)];
            cut_facility_nouns(text, &mut found);
            found.first().map(|f| text[f.start..f.end].to_owned())
        };
        let place = |needle| cut(needle, EntityType::Location);
        assert_eq!(place("CALVERT HOSPITAL").as_deref(), Some("CALVERT"));
        assert_eq!(place("keeley house").as_deref(), Some("keeley"));
        assert_eq!(
            place("St. Brigid's Hospital 2").as_deref(),
            Some("St. Brigid's")
        );
        assert_eq!(place("Mercy Hospital").as_deref(), Some("Mercy"));
        assert_eq!(place("Osler 5 Rehab Center").as_deref(), Some("Osler 5"));
        // Nothing but generic and edge words before the noun, no noun at the end, other types.
        assert_eq!(place("the hospital").as_deref(), Some("the hospital"));
        assert_eq!(place("CALVERT").as_deref(), Some("CALVERT"));
        assert_eq!(
            cut("Mercy Hospital", EntityType::Organization).as_deref(),
            Some("Mercy Hospital")
        );
    }

    fn plain_words(words: &[&str], near_names: &[&str]) -> PlainWords {
        let set = |w: &[&str]| w.iter().map(|w| (*w).to_owned()).collect();
        PlainWords {
            words: set(words),
            near_names: set(near_names),
        }
    }

    #[test]
    fn misspelt_plain_words_count_as_plain_unless_a_name_is_one_slip_away() {
        // Invented words and notes; "fetcher" stands for a plain word one slip from a name.
        let plain = plain_words(
            &["daughter", "between", "tomorrow", "severely", "fetcher"],
            &["fetcher"],
        );
        for slip in [
            "daugther",
            "betweeen",
            "tomrrow",
            "severly",
            "dauhgter",
            "daughhter",
        ] {
            assert!(plain.contains(slip), "{slip}");
        }
        // The first and last letters stay; two slips, short words, and words near a name are not
        // recognised; without the near-name lexicon there are no misspellings at all.
        for other in ["adughter", "daughtre", "dauhgtre", "fletcher", "fetchr"] {
            assert!(!plain.contains(other), "{other}");
        }
        assert!(!plain_words(&["between"], &[]).contains("betweeen"));
        let short = plain_words(&["sister", "between"], &["nothing"]);
        assert!(!short.contains("sisster") && short.contains("beetween"));
        let note = "PT'S STEP DUAGHTER CALLED. SPOKE WITH FLETCHER";
        let span = |needle| found(note, needle, EntityType::Person);
        let step = plain_words(&["step", "daughter", "fetcher"], &["fetcher"]);
        assert!(only_plain_words(note, &span("STEP DUAGHTER"), &step, false));
        assert!(!only_plain_words(note, &span("FLETCHER"), &step, false));
    }

    #[test]
    fn generic_places_are_dropped_named_ones_kept() {
        let text =
            "from the hospital to OSH, then Nursing Home; now at St. Brigid Hospital, MICU 4";
        assert_eq!(place(text, "the hospital"), None);
        assert_eq!(place(text, "OSH"), None);
        assert_eq!(place(text, "Nursing Home"), None);
        assert_eq!(place(text, "MICU 4"), None);
        assert_eq!(
            place(text, "St. Brigid Hospital").as_deref(),
            Some("St. Brigid Hospital")
        );
        assert!(GENERIC_PLACE.windows(2).all(|w| w[0] < w[1]), "sorted");
        assert!(EDGE_WORDS.windows(2).all(|w| w[0] < w[1]), "sorted");
        assert!(EDGE_WORDS.iter().all(|w| GENERIC_PLACE.contains(w)));
        // Articles, prepositions and possessives at the ends are not part of the name.
        let text = "from the Harlow house to WESTBROOK 2 via Brookfield-Adventist Hosp. and";
        assert_eq!(
            place(text, "the Harlow house").as_deref(),
            Some("Harlow house")
        );
        assert_eq!(
            place(text, "to WESTBROOK 2 via").as_deref(),
            Some("WESTBROOK 2 via")
        );
        assert_eq!(
            place(text, "Brookfield-Adventist Hosp. and").as_deref(),
            Some("Brookfield-Adventist Hosp")
        );
        assert_eq!(place(text, "Hosp. and"), None);
        assert_eq!(place(text, "2").as_deref(), Some("2"));
        let text = "seen at the Clínica São José, in";
        assert_eq!(
            place(text, "the Clínica São José, in").as_deref(),
            Some("Clínica São José")
        );
        // A place's name begins with the St./Mt./Ft. the model left out.
        let text = "accepted by St. Brigid; bed @ Mt Sinai; Main St. Brigid; Fort Ste.Anne";
        assert_eq!(place(text, ". Brigid").as_deref(), Some("St. Brigid"));
        assert_eq!(place(text, "Sinai").as_deref(), Some("Mt Sinai"));
        assert_eq!(place(text, "Anne").as_deref(), Some("Ste.Anne"));
        assert_eq!(
            place("best. Brigid", ". Brigid").as_deref(),
            Some(". Brigid")
        );
        assert_eq!(
            place("by St. Brigid", "St. Brigid").as_deref(),
            Some("St. Brigid")
        );
        // Departments and services are where a patient goes, not who or where they are.
        let text = "sent to nuclear med, then radiation therapy; seen by Johns Hopkins cardiology";
        assert_eq!(place(text, "nuclear med"), None);
        assert_eq!(place(text, "radiation therapy"), None);
        assert_eq!(
            place(text, "Johns Hopkins cardiology").as_deref(),
            Some("Johns Hopkins cardiology")
        );
    }

    #[test]
    fn a_weak_name_after_a_title_is_a_name() {
        let person_spans = |text: &str, scores: &[f32]| {
            let mut w = words(text, scores);
            names_after_cues(text, &mut w, 0);
            decode(text, &w, &[0.8, 0.8], &[0.8, 0.8])
                .into_iter()
                .map(|(a, b, ..)| text[a..b].to_owned())
                .collect::<Vec<_>>()
        };
        assert_eq!(
            person_spans("seen by Dr. Varga today", &[0.0, 0.0, 0.0, 0.3, 0.0]),
            ["Varga"]
        );
        assert_eq!(
            person_spans("TELL MRS\tOKONKWO", &[0.0, 0.0, 0.2]),
            ["OKONKWO"]
        );
        // In text that capitalises words, a capitalised word after a title needs no score; a
        // common word does, and so does every word in an all-caps note.
        assert_eq!(
            person_spans("Phone call to Mrs Okonkwo today", &[0.0; 6]),
            ["Okonkwo"]
        );
        assert_eq!(
            person_spans("Drs Joseph and Lindgren", &[0.0; 4]),
            ["Joseph"]
        );
        assert!(person_spans("Update to Dr. On call", &[0.0; 5]).is_empty());
        assert!(person_spans("Changes in MS. Aspiration risk", &[0.0; 5]).is_empty());
        assert!(person_spans("Changes in Ms. BP", &[0.0; 4]).is_empty());
        assert!(person_spans("UPDATE TO MRS OKONKWO", &[0.0, 0.0, 0.0, 0.05]).is_empty());
        // Below TITLE_MIN the title does not help ("Dr. aware"), nor does a title inside a word,
        // nor a title on the line above.
        assert!(person_spans("Dr. aware", &[0.0, 0.05]).is_empty());
        assert!(person_spans("cdr. Varga", &[0.0, 0.3]).is_empty());
        assert!(person_spans("Dr.\nVarga", &[0.0, 0.3]).is_empty());
        assert_eq!(after_title("ok Mr. ", 7), Some("Mr"));
        assert_eq!(after_title("Prof x", 5), Some("Prof"));
        assert_eq!(after_title("Mr.x", 3), None);
        // Relations: a name needs RELATION_MIN and must not be a common word.
        assert_eq!(
            person_spans("dtr marisol in contact", &[0.0, 0.35, 0.0, 0.0]),
            ["marisol"]
        );
        assert_eq!(
            person_spans("Son, Al, was updated", &[0.0, 0.4, 0.0, 0.0]),
            ["Al,"]
        );
        assert!(person_spans("my brother just turned", &[0.0, 0.0, 0.6, 0.0]).is_empty());
        assert_eq!(person_spans("dtr marisol", &[0.0, 0.15]), ["marisol"]);
        assert!(person_spans("dtr marisol", &[0.0, 0.05]).is_empty());
        assert!(after_relation("GRAND DAUGHTER-", 15) && !after_relation("stepson ", 8));
        assert!(RELATIONS.windows(2).all(|w| w[0] < w[1]));
        assert!(COMMON_WORDS.windows(2).all(|w| w[0] < w[1]));
    }

    #[test]
    fn a_surname_before_a_credential_continues_the_name() {
        assert!(CREDENTIALS.windows(2).all(|w| w[0] < w[1]), "sorted");
        let person_spans = |text: &str, scores: &[f32]| {
            let mut w = words(text, scores);
            surnames_before_credentials(text, &mut w, 0, 0.8);
            decode(text, &w, &[0.8, 0.8], &[0.8, 0.8])
                .into_iter()
                .map(|(a, b, ..)| text[a..b].to_owned())
                .collect::<Vec<_>>()
        };
        assert_eq!(
            person_spans("signed Tomas Reyes CRT", &[0.0, 0.9, 0.1, 0.0]),
            ["Tomas Reyes"]
        );
        assert_eq!(person_spans("ANA VOSS RRT", &[0.9, 0.2, 0.0]), ["ANA VOSS"]);
        // No name before it, a name on the line above, a lower-case credential, a common word or
        // a credential in the surname's place: nothing changes.
        assert!(person_spans("signed Tomas Reyes CRT", &[0.0, 0.5, 0.1, 0.0]).is_empty());
        assert_eq!(
            person_spans("Tomas\nReyes CRT", &[0.9, 0.1, 0.0]),
            ["Tomas"]
        );
        assert_eq!(person_spans("Tomas Reyes crt", &[0.9, 0.1, 0.0]), ["Tomas"]);
        assert_eq!(person_spans("Tomas Aware RN", &[0.9, 0.1, 0.0]), ["Tomas"]);
        assert_eq!(person_spans("Tomas NP RN", &[0.9, 0.1, 0.0]), ["Tomas"]);
    }

    #[test]
    fn words_for_a_person_are_never_names() {
        assert!(NOT_NAMES.windows(2).all(|w| w[0] < w[1]), "sorted");
        let text = "58 YEAR OLD FEMALE daughter and Grandaughter Rose Male She HIS";
        let n = text.split_whitespace().count();
        let mut w = words(text, &vec![0.95; n]);
        no_names_in_common_nouns(text, &mut w, 0);
        let got: Vec<&str> = decode(text, &w, &[0.8, 0.8], &[0.8, 0.8])
            .into_iter()
            .map(|(a, b, ..)| &text[a..b])
            .collect();
        assert_eq!(got, ["58 YEAR OLD", "and", "Rose"]);
    }

    #[test]
    fn dotted_abbreviations_are_never_names() {
        // Every word looks like a confident name (type 0 = PERSON here).
        let person_spans = |text: &str| {
            let n = text.split_whitespace().count();
            let mut w = words(text, &vec![0.95; n]);
            no_names_in_abbreviations(text, &mut w, 0);
            decode(text, &w, &[0.8, 0.8], &[0.8, 0.8])
                .into_iter()
                .map(|(a, b, ..)| text[a..b].to_owned())
                .collect::<Vec<_>>()
        };
        assert_eq!(person_spans("58 y.o. Woman"), ["58", "Woman"]);
        assert_eq!(person_spans("Given I.V. Zofran"), ["Given", "Zofran"]);
        // Only whole abbreviations: not inside other initials or words.
        assert_eq!(person_spans("J.A.M. Smith"), ["J.A.M. Smith"]);
        assert_eq!(person_spans("y.o.f Ann"), ["y.o.f Ann"]);
        // The rule removes the PERSON score only; other types keep theirs.
        let text = "P.O. Box 12";
        let mut w = words(text, &[0.9, 0.9, 0.9]);
        for x in &mut w {
            x.pb.swap(0, 1);
            x.pi.swap(0, 1);
        }
        no_names_in_abbreviations(text, &mut w, 0);
        assert_eq!(decode(text, &w, &[0.8, 0.8], &[0.8, 0.8]).len(), 1);
    }

    #[test]
    fn lone_initials_are_dropped_unless_next_to_a_name() {
        let text = "G.U.: ok. D. Wren here. r. stable. Dan A. Kowal";
        let person = |needle: &str| found(text, needle, EntityType::Person);
        let mut spans: Vec<Finding> = ["G.", "D.", "Wren", "r.", "A.", "Dan", "Kowal"]
            .into_iter()
            .map(person)
            .collect();
        drop_lone_initials(text, &mut spans);
        let kept: Vec<&str> = spans.iter().map(|f| &text[f.start..f.end]).collect();
        assert_eq!(kept, ["D.", "Wren", "A.", "Dan", "Kowal"]);

        // Two lone letters do not vouch for each other; a chain of initials before a name does;
        // places follow the same rule, and a name does not vouch for a place letter.
        let text =
            "G.U.: ok. B.S. clear. Seen by J. R. Tolkien. S: at St A. now. O: to L. Hargrove";
        let (person, place) = (EntityType::Person, EntityType::Location);
        let spans = [
            ("G.", &person),
            ("U.", &person),
            ("B.", &person),
            ("S.", &person),
            ("J.", &person),
            ("R.", &person),
            ("Tolkien", &person),
            ("St", &place),
            ("A.", &place),
            ("O", &place),
            ("L.", &place),
            ("Hargrove", &person),
        ];
        let kept = kept_after(drop_lone_initials, text, &spans);
        assert_eq!(kept, ["J.", "R.", "Tolkien", "St", "A.", "Hargrove"]);
    }

    /// The spans (first occurrence of each needle, with its type) that `rule` keeps, as text.
    fn kept_after<'t>(
        rule: fn(&str, &mut Vec<Finding>),
        text: &'t str,
        spans: &[(&str, &EntityType)],
    ) -> Vec<&'t str> {
        let mut found: Vec<Finding> = spans
            .iter()
            .map(|(needle, entity)| found(text, needle, (*entity).clone()))
            .collect();
        rule(text, &mut found);
        found.iter().map(|f| &text[f.start..f.end]).collect()
    }

    #[test]
    fn nationalities_languages_and_faiths_are_no_names_or_places() {
        let text = "Pt speaks Cantonese, yelling in IRANIAN; catholic priest in. Mr. French and \
                    Nadia Welsh came from Cyprus (Greek) and Lake Tahoe.";
        let (person, place) = (EntityType::Person, EntityType::Location);
        let spans = [
            ("Cantonese", &person),
            ("IRANIAN", &place),
            ("catholic", &person),
            ("French", &person),
            ("Nadia Welsh", &person),
            ("Cyprus", &place),
            ("Greek", &place),
            ("Lake Tahoe", &place),
        ];
        let kept = kept_after(drop_group_words, text, &spans);
        // A title before it, another word in the span, a place just before it keep it.
        assert_eq!(
            kept,
            ["French", "Nadia Welsh", "Cyprus", "Greek", "Lake Tahoe"]
        );
        assert!(GROUP_WORDS.windows(2).all(|w| w[0] < w[1]), "sorted");
    }

    #[test]
    fn spans_without_letters_or_digits_are_dropped() {
        let f = Finding {
            start: 1,
            end: 2,
            entity: EntityType::Person,
            score: 0.9,
            recognizer: "classifier",
        };
        assert!(span_rules("a/b", f).is_none());
    }

    #[test]
    fn separators_at_the_ends_of_a_span_are_trimmed() {
        let text = "at 14 Elm Hollow Rd, Dunmore, on Friday; Ann: yes";
        assert_eq!(
            ruled(EntityType::Address, text, "14 Elm Hollow Rd, Dunmore, ").as_deref(),
            Some("14 Elm Hollow Rd, Dunmore")
        );
        assert_eq!(
            ruled(EntityType::Person, text, "; Ann:").as_deref(),
            Some("Ann")
        );
        assert_eq!(
            ruled(EntityType::Location, text, "Dunmore,").as_deref(),
            Some("Dunmore")
        );
        // Inner separators and a final full stop ("Rd.") stay.
        assert_eq!(
            ruled(EntityType::Address, "14 Elm Rd., Dunmore", "14 Elm Rd.").as_deref(),
            Some("14 Elm Rd.")
        );
    }
}
