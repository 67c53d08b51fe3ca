//! The in-process local model: answers what the policy keeps local, without the request ever
//! leaving the machine.
//!
//! [`engine`] wraps llama.cpp (through `llama-cpp-2`): one model loaded once, generation on a
//! dedicated worker thread with continuous batching, a bounded admission queue. This module
//! adapts it to veil: configuration and status for `/readyz` (the edge maps an OpenAI request to
//! a generation: `ChatRequest::local_request`). When the model is missing, loading, busy or
//! broken, callers get an error to answer with 503 — never a cloud fallback, never a fake
//! answer.

#[cfg(feature = "local-model")]
pub mod engine;

use std::time::Duration;

use crate::config::LocalModelConfig;

#[cfg(feature = "local-model")]
pub use engine::{FinishReason, GenEvent, GenerateRequest, Generation, LocalError, Usage};

/// Readiness of the local model.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LocalStatus {
    /// No model configured (or this build has no engine).
    Disabled {
        /// Why, as a sentence.
        reason: String,
    },
    /// Loading and verifying the model.
    Loading,
    /// Accepting requests.
    Ready,
    /// The model is missing, corrupt, or the engine stopped.
    Failed {
        /// Why (path or setting; never prompt text).
        reason: String,
    },
}

/// Handle to the local model.
#[derive(Debug, Clone)]
pub enum LocalModel {
    /// No local model: `local` decisions get 503.
    Disabled(String),
    /// The llama.cpp engine.
    #[cfg(feature = "local-model")]
    Engine(engine::LocalEngine),
}

impl LocalModel {
    /// Starts loading the configured model in the background (or nothing, if none is set).
    pub fn start(cfg: &LocalModelConfig) -> Self {
        if cfg.model.as_os_str().is_empty() {
            return Self::Disabled(
                "no local model is configured ([local] model in veil.toml)".to_owned(),
            );
        }
        #[cfg(feature = "local-model")]
        {
            // llama.cpp's own logs stay discarded (the engine's default): they are not needed
            // to operate veil, and nothing that might echo a prompt reaches the logs.
            Self::Engine(engine::LocalEngine::start(engine::LocalConfig {
                model: cfg.model.clone(),
                sha256: cfg.sha256.clone(),
                context_size: cfg.context_size,
                threads: cfg.threads,
                batch_size: cfg.batch_size,
                parallel: cfg.parallel,
                queue: cfg.queue,
                default_max_tokens: cfg.default_max_tokens,
                queue_timeout: Duration::from_secs(cfg.queue_timeout_secs),
            }))
        }
        #[cfg(not(feature = "local-model"))]
        {
            let _ = Duration::ZERO;
            Self::Disabled(
                "this build of veil has no local model engine (feature `local-model`)".to_owned(),
            )
        }
    }

    /// Whether a model is configured (a configured model that is not ready makes veil unready).
    pub fn is_configured(&self) -> bool {
        !matches!(self, Self::Disabled(_))
    }

    /// Current status.
    pub fn status(&self) -> LocalStatus {
        match self {
            Self::Disabled(reason) => LocalStatus::Disabled {
                reason: reason.clone(),
            },
            #[cfg(feature = "local-model")]
            Self::Engine(e) => match e.status() {
                engine::LocalStatus::Loading => LocalStatus::Loading,
                engine::LocalStatus::Ready => LocalStatus::Ready,
                engine::LocalStatus::Failed { reason } => LocalStatus::Failed { reason },
            },
        }
    }

    /// Waits until the model is ready or failed (tests and benchmarks).
    pub async fn ready(&self) -> LocalStatus {
        #[cfg(feature = "local-model")]
        if let Self::Engine(e) = self {
            e.ready().await;
        }
        self.status()
    }

    /// The model id listed by `/v1/models` and used in local answers, when ready.
    pub fn model_id(&self) -> Option<String> {
        match self {
            Self::Disabled(_) => None,
            #[cfg(feature = "local-model")]
            Self::Engine(e) => {
                (self.status() == LocalStatus::Ready).then(|| e.model_id().to_owned())
            }
        }
    }

    /// The engine, or why there is none.
    #[cfg(feature = "local-model")]
    pub fn engine(&self) -> Result<&engine::LocalEngine, LocalError> {
        match self {
            Self::Engine(e) => Ok(e),
            Self::Disabled(reason) => Err(LocalError::Unavailable {
                reason: reason.clone(),
            }),
        }
    }
}
