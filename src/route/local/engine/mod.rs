//! The in-process local model: answers the prompts the policy keeps local with a llama.cpp
//! model, so nothing leaves the machine.
//!
//! ```text
//! LocalEngine::generate ─ render template + tokenize (blocking pool) ─ context check
//!        │                                                             │ ContextLengthExceeded
//!        ▼
//!   admission: `parallel` slots, then a queue of `queue` waiting ≤ `queue_timeout`, else Busy
//!        │ Job (owns its slot permit)
//!        ▼
//!   worker thread (one per engine, owns the LlamaContext with n_seq_max = parallel):
//!   each step builds ONE batch = the next token of every generating sequence + prompt chunks of
//!   sequences still prefilling, calls decode once, samples one token per sequence that has
//!   logits, streams text ─────────────────────────────────────────────▶ Generation (Stream)
//! ```
//!
//! Invariants:
//! - Generation never runs on the async runtime: decode and sampling run on the engine's own
//!   thread; prompt rendering and tokenization run on tokio's blocking pool.
//! - At most `parallel` sequences exist at once. A sequence's slot permit is released only after
//!   its KV cache cells were cleared, so an admitted request always finds a free sequence id.
//! - Dropping a [`Generation`] cancels it: the worker checks every sequence before each step
//!   (that is, after every token) and frees the slot of any whose receiver is gone.
//! - Every sequence ends with exactly one terminal event ([`GenEvent::Done`] or
//!   [`GenEvent::Failed`]); if the worker dies, the stream yields `Failed(Unavailable)`.
//! - A panic in a step fails the sequences of that step, not the process; three panics in a row
//!   mark the engine `Failed`. (llama.cpp aborts on internal assertion failures, which cannot be
//!   caught; for bad model files it fails cleanly instead, see `load.rs`.)
//! - Local means local: nothing here has a network path; errors tell the caller to retry.
//! - No prompt or completion text is logged, put in an error, or kept after a sequence ends.
//!   llama.cpp's own logging is discarded unless [`forward_llama_logs_to_tracing`] is called.
//!
//! Usage counting: `prompt_tokens` is the length of the tokenized, rendered chat template
//! (exactly what [`LocalEngine::prompt_tokens`] returns); `completion_tokens` counts every token
//! the model sampled for the answer, including tokens that formed a stop string, and excluding
//! the end-of-generation token (as OpenAI does), so `FinishReason::Length` always means
//! `completion_tokens == max_tokens` (after capping to the context).
//!
//! Determinism: temperature 0 is greedy, so the same prompt gives the same output when run with
//! the same batch composition (llama.cpp's CPU kernels may round differently when other
//! sequences share the batch). With temperature > 0 a `seed` makes a lone request repeatable.

mod admission;
mod error;
mod load;
mod prompt;
mod text;
mod worker;

use std::path::PathBuf;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::Duration;

use futures::Stream;
use llama_cpp_2::model::{LlamaChatTemplate, LlamaModel};
use tokio::sync::mpsc::UnboundedReceiver;
use tokio::sync::watch;

pub use self::error::LocalError;
pub use self::load::forward_llama_logs_to_tracing;
pub use self::prompt::{DEFAULT_TEMPERATURE, DEFAULT_TOP_P};

use self::admission::Admission;
use self::prompt::Prompter;
use self::worker::Job;

/// How to load and run the local model.
#[derive(Debug, Clone, PartialEq)]
pub struct LocalConfig {
    /// Path of the GGUF model file.
    pub model: PathBuf,
    /// Expected SHA-256 of the file (64 hex digits); the model is refused when it differs.
    pub sha256: Option<String>,
    /// Tokens one sequence may hold, prompt plus completion.
    pub context_size: u32,
    /// CPU threads llama.cpp uses for prompt processing and generation (at least 1).
    pub threads: i32,
    /// Most tokens decoded in one step, shared by all sequences (at least `parallel`).
    pub batch_size: u32,
    /// Sequences generated concurrently (continuous batching in one context).
    pub parallel: usize,
    /// Requests that may wait for a free sequence beyond `parallel`; more are refused as busy.
    pub queue: usize,
    /// Completion tokens when a request sets no `max_tokens`.
    pub default_max_tokens: u32,
    /// Longest time a request waits in the queue before it is refused as busy.
    pub queue_timeout: Duration,
}

impl LocalConfig {
    /// A configuration for `model` with defaults sized for a small CPU machine:
    /// 2048-token context, one thread less than the machine has cores (at least 1), batch 512,
    /// 2 parallel sequences, queue 8, 256 default completion tokens, 30 s queue timeout, no
    /// checksum. (llama.cpp's threads spin-wait on each other, so a thread that competes with
    /// other work for a core stalls all of them; leaving a core free keeps decode speed stable.)
    pub fn new(model: impl Into<PathBuf>) -> Self {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        Self {
            model: model.into(),
            sha256: None,
            context_size: 2048,
            threads: i32::try_from(cores.saturating_sub(1).max(1)).unwrap_or(1),
            batch_size: 512,
            parallel: 2,
            queue: 8,
            default_max_tokens: 256,
            queue_timeout: Duration::from_secs(30),
        }
    }
}

/// Where the engine is in its life.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LocalStatus {
    /// The model file is being checked and loaded.
    Loading,
    /// Requests are accepted.
    Ready,
    /// The engine cannot serve: the model failed to load, or the worker stopped.
    Failed {
        /// What went wrong, naming the file or setting; never prompt text.
        reason: String,
    },
}

/// One chat message.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ChatTurn {
    /// `system`, `user`, `assistant`, … as the chat template understands them.
    pub role: String,
    /// The message text.
    pub content: String,
}

/// What to generate.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct GenerateRequest {
    /// The conversation, rendered with the model's chat template.
    pub messages: Vec<ChatTurn>,
    /// Completion token limit (default: the engine's `default_max_tokens`; always capped so the
    /// prompt plus completion fit the context).
    pub max_tokens: Option<u32>,
    /// 0 is greedy (deterministic); `None` means [`DEFAULT_TEMPERATURE`]. Range 0–2.
    pub temperature: Option<f32>,
    /// Nucleus sampling mass; `None` means [`DEFAULT_TOP_P`]. Range 0–1.
    pub top_p: Option<f32>,
    /// Seed for sampling at temperature > 0; `None` picks a random one.
    pub seed: Option<u64>,
    /// Generation ends before any of these strings; they are never emitted.
    pub stop: Vec<String>,
}

/// Token counts of one generation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Usage {
    /// Tokens of the rendered prompt.
    pub prompt_tokens: u32,
    /// Tokens sampled for the answer (end-of-generation token excluded).
    pub completion_tokens: u32,
}

/// Why a generation ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FinishReason {
    /// The model ended its turn or a stop string was produced.
    Stop,
    /// The token budget (`max_tokens`, or the context) ran out.
    Length,
}

/// One item of a generation stream.
#[derive(Debug, Clone, PartialEq)]
pub enum GenEvent {
    /// More answer text: valid UTF-8, never containing a stop string.
    Delta(String),
    /// The answer is complete (always the last event).
    Done(Usage, FinishReason),
    /// Generation failed (always the last event).
    Failed(LocalError),
}

/// Counters for metrics and tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct LocalStats {
    /// Sequences currently holding a slot.
    pub active: u64,
    /// Requests waiting for a slot.
    pub waiting: u64,
    /// Completion tokens sampled since start (including those of cancelled requests).
    pub completion_tokens_total: u64,
    /// Prompt tokens decoded since start.
    pub prompt_tokens_total: u64,
    /// Requests refused as busy since start.
    pub busy_total: u64,
}

/// A running generation: a [`Stream`] of [`GenEvent`]s. Dropping it cancels the generation and
/// frees its slot within one decode step.
#[derive(Debug)]
pub struct Generation {
    events: UnboundedReceiver<GenEvent>,
    prompt_tokens: u32,
    finished: bool,
}

impl Generation {
    /// Tokens of the rendered prompt (known before the first token is generated).
    pub fn prompt_tokens(&self) -> u32 {
        self.prompt_tokens
    }

    /// The next event, or `None` after the terminal event.
    pub async fn recv(&mut self) -> Option<GenEvent> {
        std::future::poll_fn(|cx| Pin::new(&mut *self).poll_next(cx)).await
    }
}

impl Stream for Generation {
    type Item = GenEvent;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<GenEvent>> {
        if self.finished {
            return Poll::Ready(None);
        }
        match self.events.poll_recv(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Some(event)) => {
                if !matches!(event, GenEvent::Delta(_)) {
                    self.finished = true;
                }
                Poll::Ready(Some(event))
            }
            // The worker went away without a terminal event: it stopped or crashed.
            Poll::Ready(None) => {
                self.finished = true;
                Poll::Ready(Some(GenEvent::Failed(LocalError::Unavailable {
                    reason: "the local model stopped while generating".into(),
                })))
            }
        }
    }
}

/// The loaded model and its template, published by the worker once it is ready.
struct Loaded {
    model: Arc<LlamaModel>,
    template: LlamaChatTemplate,
}

impl Loaded {
    fn prompter(&self) -> Prompter<'_> {
        Prompter {
            model: &self.model,
            template: &self.template,
        }
    }
}

/// State shared between the handles and the worker (no job sender: dropping every handle
/// closes the job channel, which stops the worker).
struct Shared {
    status: watch::Sender<LocalStatus>,
    loaded: OnceLock<Arc<Loaded>>,
    completion_tokens: AtomicU64,
    prompt_tokens: AtomicU64,
    active: AtomicU64,
}

impl Shared {
    fn new() -> Self {
        Self {
            status: watch::Sender::new(LocalStatus::Loading),
            loaded: OnceLock::new(),
            completion_tokens: AtomicU64::new(0),
            prompt_tokens: AtomicU64::new(0),
            active: AtomicU64::new(0),
        }
    }

    /// Marks the engine ready (unless it already failed).
    fn set_ready(&self) {
        self.status.send_if_modified(|status| {
            let loading = *status == LocalStatus::Loading;
            if loading {
                *status = LocalStatus::Ready;
            }
            loading
        });
    }

    /// Fails the engine unless it already failed (the first reason is the useful one).
    fn fail(&self, reason: String) {
        self.status.send_if_modified(|status| {
            if matches!(status, LocalStatus::Failed { .. }) {
                return false;
            }
            tracing::error!(target: "veil::local", %reason, "local model failed");
            *status = LocalStatus::Failed { reason };
            true
        });
    }
}

struct Inner {
    cfg: LocalConfig,
    model_id: String,
    shared: Arc<Shared>,
    jobs: std::sync::mpsc::Sender<Job>,
    admission: Admission,
}

/// Handle to the local model engine; cheap to clone, shared across tasks. The model and its
/// worker thread live until the last handle is dropped.
#[derive(Clone)]
pub struct LocalEngine {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for LocalEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalEngine")
            .field("model_id", &self.inner.model_id)
            .field("status", &self.status())
            .finish_non_exhaustive()
    }
}

impl LocalEngine {
    /// Starts loading on a dedicated thread and returns immediately; [`Self::status`] reports
    /// progress. A bad configuration, a missing or corrupt model (checksum mismatch, malformed
    /// GGUF, llama.cpp load failure) or a model without a usable chat template ends in `Failed`.
    pub fn start(cfg: LocalConfig) -> LocalEngine {
        let model_id = cfg
            .model
            .file_stem()
            .map(|stem| stem.to_string_lossy().into_owned())
            .unwrap_or_else(|| "local".into());
        let shared = Arc::new(Shared::new());
        let (jobs, rx) = std::sync::mpsc::channel();
        let admission = Admission::new(cfg.parallel, cfg.queue, cfg.queue_timeout);
        let spawned = std::thread::Builder::new()
            .name("veil-local-model".into())
            .spawn({
                let cfg = cfg.clone();
                let shared = shared.clone();
                move || worker::run(cfg, shared, rx)
            });
        if let Err(err) = spawned {
            shared.fail(format!(
                "the local model thread could not be started ({err}); check the process limits"
            ));
        }
        LocalEngine {
            inner: Arc::new(Inner {
                cfg,
                model_id,
                shared,
                jobs,
                admission,
            }),
        }
    }

    /// Where the engine is: loading, ready, or failed with a reason.
    pub fn status(&self) -> LocalStatus {
        self.inner.shared.status.borrow().clone()
    }

    /// The model's name for responses and audit records: the file name without `.gguf`.
    pub fn model_id(&self) -> &str {
        &self.inner.model_id
    }

    /// Tokens one sequence may hold (prompt plus completion).
    pub fn context_size(&self) -> u32 {
        self.inner.cfg.context_size
    }

    /// The configuration the engine was started with.
    pub fn config(&self) -> &LocalConfig {
        &self.inner.cfg
    }

    /// Live counters (active sequences, waiting requests, token totals).
    pub fn stats(&self) -> LocalStats {
        let shared = &self.inner.shared;
        LocalStats {
            active: shared.active.load(Ordering::Relaxed),
            waiting: self.inner.admission.waiting() as u64,
            completion_tokens_total: shared.completion_tokens.load(Ordering::Relaxed),
            prompt_tokens_total: shared.prompt_tokens.load(Ordering::Relaxed),
            busy_total: self.inner.admission.busy_total(),
        }
    }

    /// Waits until the engine is `Ready` or `Failed` and returns that status.
    pub async fn ready(&self) -> LocalStatus {
        let mut status = self.inner.shared.status.subscribe();
        // The sender lives in `self`, so the channel cannot close while we wait.
        match status
            .wait_for(|status| *status != LocalStatus::Loading)
            .await
        {
            Ok(done) => done.clone(),
            Err(_) => self.status(),
        }
    }

    /// Renders the chat template and tokenizes: the prompt's token count, as `Usage` will
    /// report it. CPU-bound (about a millisecond per few thousand tokens).
    pub fn prompt_tokens(&self, req: &GenerateRequest) -> Result<usize, LocalError> {
        let loaded = self.loaded()?;
        // llama-cpp-2 asserts on absurd sizes (over 2 GB of text); keep that off the caller.
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            loaded.prompter().tokens(req).map(|tokens| tokens.len())
        }))
        .unwrap_or_else(|_| {
            Err(LocalError::Generation(
                "tokenizing the prompt failed unexpectedly".into(),
            ))
        })
    }

    /// Admits the request (a free slot, or the bounded queue) and starts generation on the
    /// worker thread. Fails fast with `ContextLengthExceeded` or `InvalidRequest` before taking a
    /// slot, with `Busy` when slots and queue are full or the wait times out, and with
    /// `Unavailable` when the model is not ready.
    pub async fn generate(&self, req: GenerateRequest) -> Result<Generation, LocalError> {
        let loaded = self.loaded()?;
        let context = self.inner.cfg.context_size;
        let default_max = self.inner.cfg.default_max_tokens;
        let prepared = tokio::task::spawn_blocking(move || {
            loaded.prompter().prepare(&req, context, default_max)
        })
        .await
        .map_err(|_| LocalError::Generation("preparing the prompt failed unexpectedly".into()))??;
        let permit = self.inner.admission.admit().await?;
        // The engine may have failed while the request waited.
        self.loaded()?;
        let prompt_tokens = u32::try_from(prepared.tokens.len()).unwrap_or(u32::MAX);
        let (events, rx) = tokio::sync::mpsc::unbounded_channel();
        self.inner
            .jobs
            .send(Job {
                prepared,
                events,
                permit,
            })
            .map_err(|_| LocalError::Unavailable {
                reason: "the local model worker has stopped".into(),
            })?;
        Ok(Generation {
            events: rx,
            prompt_tokens,
            finished: false,
        })
    }

    /// The loaded model, or why requests cannot run now.
    fn loaded(&self) -> Result<Arc<Loaded>, LocalError> {
        match self.status() {
            LocalStatus::Ready => {}
            LocalStatus::Loading => {
                return Err(LocalError::Unavailable {
                    reason: "the local model is still loading".into(),
                });
            }
            LocalStatus::Failed { reason } => return Err(LocalError::Unavailable { reason }),
        }
        self.inner
            .shared
            .loaded
            .get()
            .cloned()
            .ok_or_else(|| LocalError::Unavailable {
                reason: "the local model is still loading".into(),
            })
    }
}
