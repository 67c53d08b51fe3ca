//! Loading: checks the model file before llama.cpp sees it, initialises llama.cpp once per
//! process (with its logging silenced), loads the model and checks its chat template.
//!
//! Invariants: every failure is a `String` reason that names the file or setting at fault and
//! never contains prompt text; no file reaches llama.cpp unless it exists, matches the configured
//! SHA-256 (when one is set) and starts with a GGUF header of a version llama.cpp reads.
//!
//! What llama.cpp itself does with bad files (llama-cpp-sys-2 0.1.161, probed in a subprocess
//! per file): random bytes, empty files, truncations at 12 points from 4 bytes to 1 byte short,
//! 80 files with a valid header and random counts or contents, and 40 full-size copies with
//! metadata bytes flipped all end in a clean load error, never an abort. Truncated files fail
//! with "tensor data is not within the file bounds". Flipped bytes inside metadata values or
//! tensor data can still load (8 of the 40), so only the configured SHA-256 catches silent
//! corruption. The header check here only turns the common cases into clearer reasons.

use std::io::Read;
use std::path::Path;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, Ordering};

use llama_cpp_2::llama_backend::LlamaBackend;
use llama_cpp_2::model::params::LlamaModelParams;
use llama_cpp_2::model::{LlamaChatMessage, LlamaChatTemplate, LlamaModel};
use llama_cpp_2::{LogOptions, send_logs_to_tracing};
use sha2::{Digest, Sha256};

use super::LocalConfig;

/// The process-wide llama.cpp backend (llama.cpp allows one; it is never freed).
static BACKEND: OnceLock<Result<LlamaBackend, String>> = OnceLock::new();
/// Whether llama.cpp's own log lines go to `tracing` instead of nowhere.
static FORWARD_LOGS: AtomicBool = AtomicBool::new(false);

/// Sends llama.cpp's own log lines (model metadata, memory sizes, load errors) to `tracing`
/// under the target `llama-cpp-2`, for debugging a model that will not load. By default they
/// are discarded. llama.cpp does not log prompt text at any level in this build (its tokenizer
/// debug output is compiled out); invalid token ids are the closest it comes.
pub fn forward_llama_logs_to_tracing() {
    FORWARD_LOGS.store(true, Ordering::SeqCst);
    if BACKEND.get().is_some() {
        send_logs_to_tracing(LogOptions::default());
    }
}

/// The llama.cpp backend, initialised on first use.
pub(super) fn backend() -> Result<&'static LlamaBackend, String> {
    BACKEND
        .get_or_init(|| match LlamaBackend::init() {
            Ok(mut backend) => {
                if FORWARD_LOGS.load(Ordering::SeqCst) {
                    send_logs_to_tracing(LogOptions::default());
                } else {
                    backend.void_logs();
                }
                Ok(backend)
            }
            Err(err) => Err(format!(
                "llama.cpp was already initialised elsewhere in this process ({err}); only the local engine may initialise it"
            )),
        })
        .as_ref()
        .map_err(Clone::clone)
}

/// Rejects settings the engine cannot run with, naming the setting.
pub(super) fn check_config(cfg: &LocalConfig) -> Result<(), String> {
    if cfg.context_size == 0 {
        return Err(
            "context_size must be at least 1 token; set it in the local model configuration".into(),
        );
    }
    if cfg.parallel == 0 {
        return Err("parallel must be at least 1; set it in the local model configuration".into());
    }
    if cfg.threads < 1 {
        return Err("threads must be at least 1; set it in the local model configuration".into());
    }
    if (cfg.batch_size as usize) < cfg.parallel {
        return Err(format!(
            "batch_size ({}) must be at least parallel ({}) so every sequence can decode in each step; raise batch_size",
            cfg.batch_size, cfg.parallel
        ));
    }
    if cfg.default_max_tokens == 0 {
        return Err(
            "default_max_tokens must be at least 1; set it in the local model configuration".into(),
        );
    }
    let total = u64::from(cfg.context_size) * cfg.parallel as u64;
    if total > u64::from(u32::MAX / 2) {
        return Err(format!(
            "context_size × parallel ({total} tokens) is larger than llama.cpp supports; lower one of them"
        ));
    }
    Ok(())
}

/// Checks the file before llama.cpp opens it: it exists, matches `sha256` when one is
/// configured, and is a structurally complete GGUF file.
pub(super) fn check_model_file(path: &Path, sha256: Option<&str>) -> Result<(), String> {
    let meta = std::fs::metadata(path).map_err(|err| match err.kind() {
        std::io::ErrorKind::NotFound => format!(
            "model file {} does not exist; check the local model path",
            path.display()
        ),
        _ => format!("model file {} cannot be read ({err})", path.display()),
    })?;
    if !meta.is_file() {
        return Err(format!(
            "model path {} is not a regular file; point it at a .gguf file",
            path.display()
        ));
    }
    if let Some(expected) = sha256 {
        verify_sha256(path, expected)?;
    }
    check_gguf_header(path, meta.len())
}

/// GGUF versions llama.cpp reads.
const GGUF_VERSIONS: std::ops::RangeInclusive<u32> = 2..=3;

/// Checks the magic bytes and version at the start of the file.
fn check_gguf_header(path: &Path, len: u64) -> Result<(), String> {
    let mut header = [0u8; 8];
    let read = std::fs::File::open(path).and_then(|mut file| file.read_exact(&mut header));
    if read.is_err() || len < 24 {
        return Err(format!(
            "model file {} is too small to be a GGUF model ({len} bytes); the file is truncated or not a model",
            path.display()
        ));
    }
    if &header[..4] != b"GGUF" {
        return Err(format!(
            "model file {} is not a GGUF file (wrong magic bytes); download the model again or point to a .gguf file",
            path.display()
        ));
    }
    let version = u32::from_le_bytes([header[4], header[5], header[6], header[7]]);
    if !GGUF_VERSIONS.contains(&version) {
        return Err(format!(
            "model file {} uses GGUF version {version}, which this llama.cpp build does not read; convert the model again",
            path.display()
        ));
    }
    Ok(())
}

/// Hashes the file and compares it with the configured digest.
fn verify_sha256(path: &Path, expected: &str) -> Result<(), String> {
    let expected = expected.trim().to_ascii_lowercase();
    if expected.len() != 64 || !expected.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(
            "the configured sha256 is not 64 hexadecimal digits; fix the local model configuration"
                .into(),
        );
    }
    let mut file = std::fs::File::open(path)
        .map_err(|err| format!("model file {} cannot be opened ({err})", path.display()))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file
            .read(&mut buf)
            .map_err(|err| format!("model file {} cannot be read ({err})", path.display()))?;
        if n == 0 {
            break;
        }
        hasher.update(buf.get(..n).unwrap_or_default());
    }
    let actual = hex::encode(hasher.finalize());
    if actual != expected {
        return Err(format!(
            "checksum mismatch for model file {}: expected sha256 {expected}, found {actual}; replace the file or update the configured digest",
            path.display()
        ));
    }
    Ok(())
}

/// Loads the model with llama.cpp (memory-mapped, CPU only).
pub(super) fn load_model(backend: &LlamaBackend, path: &Path) -> Result<LlamaModel, String> {
    LlamaModel::load_from_file(backend, path, &LlamaModelParams::default()).map_err(|err| {
        format!(
            "llama.cpp could not load model file {} ({err}): the file is corrupt or its architecture is not supported by this build",
            path.display()
        )
    })
}

/// The model's own chat template, checked by rendering a probe conversation.
pub(super) fn chat_template(model: &LlamaModel) -> Result<LlamaChatTemplate, String> {
    let template = model.chat_template(None).map_err(|_| {
        "the model file has no chat template (tokenizer.chat_template); use a chat/instruct GGUF that embeds one".to_string()
    })?;
    let probe = LlamaChatMessage::new("user".into(), "ping".into())
        .map_err(|err| format!("cannot build the template probe ({err})"))?;
    model
        .apply_chat_template(&template, &[probe], true)
        .map_err(|err| {
            format!(
                "llama.cpp cannot render this model's chat template ({err}); use a model whose template llama.cpp supports"
            )
        })?;
    Ok(template)
}
