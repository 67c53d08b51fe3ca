//! The engine thread: loads the model, owns the one llama.cpp context, and runs continuous
//! batching over up to `parallel` sequences (like llama.cpp's server).
//!
//! Each step builds one batch: first the last sampled token of every generating sequence, then
//! prompt chunks of sequences still prefilling (oldest request first) until `n_batch` is full;
//! one `decode` computes them all; then each sequence whose logits were requested samples one
//! token. A sequence id is the index of its slot; its KV cells are removed when it ends, before
//! its admission permit is released.
//!
//! Invariants: only this thread touches the context; every sequence that leaves a slot gets one
//! terminal event (or its receiver is already gone); a panic inside a step fails the sequences
//! in flight and clears the KV cache, and [`MAX_PANICS_IN_A_ROW`] such panics stop the engine.

use std::num::NonZeroU32;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::sync::mpsc::{Receiver, TryRecvError};
use std::time::Instant;

use llama_cpp_2::context::LlamaContext;
use llama_cpp_2::context::params::LlamaContextParams;
use llama_cpp_2::llama_batch::LlamaBatch;
use llama_cpp_2::model::LlamaModel;
use llama_cpp_2::sampling::LlamaSampler;
use llama_cpp_2::token::LlamaToken;
use tokio::sync::OwnedSemaphorePermit;
use tokio::sync::mpsc::UnboundedSender;

use super::prompt::{Prepared, Sampling};
use super::text::{Push, TextStream};
use super::{FinishReason, GenEvent, Loaded, LocalConfig, LocalError, Shared, Usage, load};

/// Consecutive panicking steps after which the engine gives up.
const MAX_PANICS_IN_A_ROW: u32 = 3;

/// An admitted request on its way to the worker.
pub(super) struct Job {
    /// Tokens, budget, sampling and stops.
    pub(super) prepared: Prepared,
    /// Where the events go; closed when the caller drops its [`super::Generation`].
    pub(super) events: UnboundedSender<GenEvent>,
    /// The admission slot, released when the sequence is gone from the context.
    pub(super) permit: OwnedSemaphorePermit,
}

/// Thread entry point: load, then serve until every engine handle is dropped. Any failure,
/// including a panic, ends in `Failed` status and fails the jobs still queued.
pub(super) fn run(cfg: LocalConfig, shared: Arc<Shared>, jobs: Receiver<Job>) {
    let outcome = catch_unwind(AssertUnwindSafe(|| serve(&cfg, &shared, &jobs)));
    let reason = match outcome {
        Ok(Ok(())) => return,
        Ok(Err(reason)) => reason,
        Err(_) => "the local model thread panicked; restart veil to recover".to_string(),
    };
    shared.fail(reason.clone());
    while let Ok(job) = jobs.try_recv() {
        let _ = job.events.send(GenEvent::Failed(LocalError::Unavailable {
            reason: reason.clone(),
        }));
    }
}

/// Loads the model, creates the context, publishes readiness and runs the batching loop.
fn serve(cfg: &LocalConfig, shared: &Arc<Shared>, jobs: &Receiver<Job>) -> Result<(), String> {
    load::check_config(cfg)?;
    let backend = load::backend()?;
    load::check_model_file(&cfg.model, cfg.sha256.as_deref())?;
    let started = Instant::now();
    let model = Arc::new(load::load_model(backend, &cfg.model)?);
    let template = load::chat_template(&model)?;

    let parallel = u32::try_from(cfg.parallel).map_err(|_| "parallel is too large".to_string())?;
    // Without a unified KV cache llama.cpp gives each sequence n_ctx / n_seq_max cells.
    let n_ctx = cfg.context_size.saturating_mul(parallel);
    let params = LlamaContextParams::default()
        .with_n_ctx(NonZeroU32::new(n_ctx))
        .with_n_batch(cfg.batch_size)
        .with_n_seq_max(parallel)
        .with_n_threads(cfg.threads)
        .with_n_threads_batch(cfg.threads)
        .with_kv_unified(false);
    let ctx = model.new_context(backend, params).map_err(|err| {
        format!(
            "llama.cpp could not create a context of {n_ctx} tokens for {parallel} sequences ({err}); lower context_size or parallel"
        )
    })?;
    if ctx.n_ctx() < n_ctx {
        return Err(format!(
            "llama.cpp created a context of {} tokens, less than context_size × parallel = {n_ctx}; lower context_size",
            ctx.n_ctx()
        ));
    }
    let n_batch = ctx.n_batch() as usize;
    let _ = shared.loaded.set(Arc::new(Loaded {
        model: model.clone(),
        template,
    }));
    shared.set_ready();
    tracing::info!(
        target: "veil::local",
        load_ms = started.elapsed().as_millis() as u64,
        n_ctx = ctx.n_ctx(),
        n_batch,
        parallel,
        threads = cfg.threads,
        "local model ready"
    );

    let mut worker = Worker {
        model: &model,
        ctx,
        batch: LlamaBatch::new(n_batch, 1),
        n_batch,
        slots: (0..cfg.parallel).map(|_| None).collect(),
        shared: shared.as_ref(),
        guard: StepGuard::default(),
        disconnected: false,
    };
    worker.run(jobs)
}

/// One sequence in the context.
struct Seq {
    /// llama.cpp sequence id (= slot index).
    id: i32,
    events: UnboundedSender<GenEvent>,
    /// Held until the sequence's KV cells are gone.
    _permit: OwnedSemaphorePermit,
    prompt: Vec<LlamaToken>,
    /// Prompt tokens already sent to `decode`.
    prefilled: usize,
    /// Position of the next token to decode.
    n_past: i32,
    /// Sampled token that still has to be decoded.
    pending: Option<LlamaToken>,
    /// Index in the current batch whose logits belong to this sequence.
    logits_at: Option<i32>,
    /// Whether this sequence has tokens in the current batch.
    in_batch: bool,
    generated: u32,
    max_new: u32,
    sampler: LlamaSampler,
    text: TextStream,
    admitted: Instant,
    first_token_ms: Option<u64>,
}

impl Seq {
    fn usage(&self) -> Usage {
        Usage {
            prompt_tokens: u32::try_from(self.prompt.len()).unwrap_or(u32::MAX),
            completion_tokens: self.generated,
        }
    }
}

/// Outcome of a guarded step.
#[derive(Debug, PartialEq, Eq)]
enum Guarded {
    /// The step returned normally.
    Ok,
    /// The step panicked; the engine can go on once the sequences in flight are failed.
    Panicked,
    /// Too many panics in a row: the engine must stop, for this reason.
    GiveUp(String),
}

/// Catches panics of worker steps and counts them; a normal step resets the count.
#[derive(Debug, Default)]
struct StepGuard {
    panics_in_a_row: u32,
}

impl StepGuard {
    fn run(&mut self, step: impl FnOnce()) -> Guarded {
        if catch_unwind(AssertUnwindSafe(step)).is_ok() {
            self.panics_in_a_row = 0;
            return Guarded::Ok;
        }
        self.panics_in_a_row += 1;
        tracing::error!(
            target: "veil::local",
            panics_in_a_row = self.panics_in_a_row,
            "a generation step panicked; failing the sequences in flight"
        );
        if self.panics_in_a_row >= MAX_PANICS_IN_A_ROW {
            return Guarded::GiveUp(format!(
                "generation failed {MAX_PANICS_IN_A_ROW} times in a row with an internal error; restart veil"
            ));
        }
        Guarded::Panicked
    }
}

/// How a sequence leaves its slot.
enum End {
    /// Finished normally; `flush` releases held-back text first (not after a stop string).
    Done { reason: FinishReason, flush: bool },
    /// Failed; the caller gets this error.
    Failed(LocalError),
    /// The caller went away; nobody to tell.
    Cancelled,
}

struct Worker<'m> {
    model: &'m LlamaModel,
    ctx: LlamaContext<'m>,
    batch: LlamaBatch<'static>,
    n_batch: usize,
    slots: Vec<Option<Seq>>,
    shared: &'m Shared,
    guard: StepGuard,
    /// Every engine handle is gone: finish what is running, then stop.
    disconnected: bool,
}

impl Worker<'_> {
    fn is_idle(&self) -> bool {
        self.slots.iter().all(Option::is_none)
    }

    /// The batching loop; returns when every handle is dropped and nothing is running.
    fn run(&mut self, jobs: &Receiver<Job>) -> Result<(), String> {
        loop {
            if self.is_idle() {
                if self.disconnected {
                    return Ok(());
                }
                // Nothing to do: block until a job arrives (no busy waiting).
                match jobs.recv() {
                    Ok(job) => self.guarded(|w| w.start(job))?,
                    Err(_) => return Ok(()),
                }
            }
            loop {
                match jobs.try_recv() {
                    Ok(job) => self.guarded(|w| w.start(job))?,
                    Err(TryRecvError::Empty) => break,
                    Err(TryRecvError::Disconnected) => {
                        self.disconnected = true;
                        break;
                    }
                }
            }
            self.guarded(Worker::step)?;
        }
    }

    /// Runs `f`, turning a panic into failed sequences and a cleared KV cache.
    fn guarded(&mut self, f: impl FnOnce(&mut Self)) -> Result<(), String> {
        let mut guard = std::mem::take(&mut self.guard);
        let outcome = guard.run(|| f(self));
        self.guard = guard;
        match outcome {
            Guarded::Ok => Ok(()),
            Guarded::Panicked => {
                self.reset_all(LocalError::Generation(
                    "an internal error interrupted generation".into(),
                ));
                Ok(())
            }
            Guarded::GiveUp(reason) => {
                self.reset_all(LocalError::Generation(
                    "an internal error interrupted generation".into(),
                ));
                Err(reason)
            }
        }
    }

    /// Fails every sequence and clears the whole KV cache.
    fn reset_all(&mut self, err: LocalError) {
        for slot in &mut self.slots {
            if let Some(seq) = slot.take() {
                let _ = seq.events.send(GenEvent::Failed(err.clone()));
                self.shared.active.fetch_sub(1, Ordering::Relaxed);
            }
        }
        self.ctx.clear_kv_cache();
    }

    /// Puts a job into a free slot.
    fn start(&mut self, job: Job) {
        let Some(index) = self.slots.iter().position(Option::is_none) else {
            // Cannot happen: admission hands out at most `parallel` permits and a slot is
            // freed before its permit. Fail the job rather than corrupt another sequence.
            let _ = job.events.send(GenEvent::Failed(LocalError::Generation(
                "no free sequence slot".into(),
            )));
            return;
        };
        let Prepared {
            tokens,
            max_new,
            sampling,
            stops,
        } = job.prepared;
        let sampler = match sampling {
            Sampling::Greedy => LlamaSampler::greedy(),
            Sampling::Random {
                temperature,
                top_p,
                seed,
            } => LlamaSampler::chain_simple([
                LlamaSampler::temp(temperature),
                LlamaSampler::top_p(top_p, 1),
                LlamaSampler::dist(seed),
            ]),
        };
        let Some(slot) = self.slots.get_mut(index) else {
            return;
        };
        self.shared.active.fetch_add(1, Ordering::Relaxed);
        *slot = Some(Seq {
            id: index as i32,
            events: job.events,
            _permit: job.permit,
            prompt: tokens,
            prefilled: 0,
            n_past: 0,
            pending: None,
            logits_at: None,
            in_batch: false,
            generated: 0,
            max_new,
            sampler,
            text: TextStream::new(&stops),
            admitted: Instant::now(),
            first_token_ms: None,
        });
    }

    /// One decode for every sequence with work, then one sampled token per ready sequence.
    fn step(&mut self) {
        // Cancellation is checked here, that is after every token.
        for index in 0..self.slots.len() {
            if self
                .slots
                .get(index)
                .and_then(Option::as_ref)
                .is_some_and(|seq| seq.events.is_closed())
            {
                self.end(index, End::Cancelled);
            }
        }
        if self.is_idle() {
            return;
        }
        if let Err(err) = self.fill_batch() {
            self.fail_batch(format!("could not build the batch ({err})"));
            return;
        }
        if self.batch.n_tokens() == 0 {
            return;
        }
        if let Err(err) = self.ctx.decode(&mut self.batch) {
            self.fail_batch(format!("llama.cpp could not decode ({err})"));
            return;
        }
        for index in 0..self.slots.len() {
            let Some(seq) = self.slots.get_mut(index).and_then(Option::as_mut) else {
                continue;
            };
            let Some(at) = seq.logits_at.take() else {
                continue;
            };
            let token = seq.sampler.sample(&self.ctx, at);
            self.on_token(index, token);
        }
    }

    /// Adds decode tokens of generating sequences, then prompt chunks, up to `n_batch`.
    fn fill_batch(&mut self) -> Result<(), llama_cpp_2::llama_batch::BatchAddError> {
        self.batch.clear();
        for seq in self.slots.iter_mut().flatten() {
            seq.logits_at = None;
            seq.in_batch = false;
            if let Some(token) = seq.pending.take() {
                self.batch.add(token, seq.n_past, &[seq.id], true)?;
                seq.n_past += 1;
                seq.logits_at = Some(self.batch.n_tokens() - 1);
                seq.in_batch = true;
            }
        }
        let mut prefilling: Vec<&mut Seq> = self
            .slots
            .iter_mut()
            .flatten()
            .filter(|seq| seq.prefilled < seq.prompt.len())
            .collect();
        prefilling.sort_by_key(|seq| seq.admitted);
        for seq in prefilling {
            let room = self.n_batch.saturating_sub(self.batch.n_tokens() as usize);
            if room == 0 {
                break;
            }
            let end = seq.prompt.len().min(seq.prefilled + room);
            for (i, &token) in seq.prompt.iter().enumerate().take(end).skip(seq.prefilled) {
                let last = i + 1 == seq.prompt.len();
                self.batch.add(token, seq.n_past, &[seq.id], last)?;
                seq.n_past += 1;
            }
            self.shared
                .prompt_tokens
                .fetch_add((end - seq.prefilled) as u64, Ordering::Relaxed);
            seq.prefilled = end;
            seq.in_batch = true;
            if end == seq.prompt.len() {
                seq.logits_at = Some(self.batch.n_tokens() - 1);
            }
        }
        Ok(())
    }

    /// Fails the sequences that had tokens in the failed batch (llama.cpp rolled it back).
    fn fail_batch(&mut self, why: String) {
        tracing::error!(target: "veil::local", error = %why, "decode step failed");
        for index in 0..self.slots.len() {
            if self
                .slots
                .get(index)
                .and_then(Option::as_ref)
                .is_some_and(|seq| seq.in_batch)
            {
                self.end(index, End::Failed(LocalError::Generation(why.clone())));
            }
        }
    }

    /// Handles the token sampled for the sequence in slot `index`.
    fn on_token(&mut self, index: usize, token: LlamaToken) {
        let model = self.model;
        let vocab = model.vocab();
        let Some(seq) = self.slots.get_mut(index).and_then(Option::as_mut) else {
            return;
        };
        if vocab.is_eog(token) {
            self.end(
                index,
                End::Done {
                    reason: FinishReason::Stop,
                    flush: true,
                },
            );
            return;
        }
        seq.generated += 1;
        self.shared
            .completion_tokens
            .fetch_add(1, Ordering::Relaxed);
        if seq.first_token_ms.is_none() {
            seq.first_token_ms = Some(seq.admitted.elapsed().as_millis() as u64);
        }
        // Control tokens render as nothing (`special = false`).
        let piece = vocab.token_to_piece(token, false, None);
        let (text, stopped) = match seq.text.push(&piece) {
            Push::Continue(text) => (text, false),
            Push::Stopped(text) => (text, true),
        };
        if !text.is_empty() && seq.events.send(GenEvent::Delta(text)).is_err() {
            self.end(index, End::Cancelled);
            return;
        }
        if stopped {
            let end = End::Done {
                reason: FinishReason::Stop,
                flush: false,
            };
            self.end(index, end);
        } else if seq.generated >= seq.max_new {
            let end = End::Done {
                reason: FinishReason::Length,
                flush: true,
            };
            self.end(index, end);
        } else {
            seq.pending = Some(token);
        }
    }

    /// Removes the sequence in slot `index`: clears its KV cells, releases its admission slot
    /// (by dropping the permit), then tells its caller. In that order, a caller that sends its
    /// next request as soon as it sees `Done` finds the slot free.
    fn end(&mut self, index: usize, end: End) {
        let Some(seq) = self.slots.get_mut(index).and_then(Option::take) else {
            return;
        };
        let usage = seq.usage();
        let cleared = self.ctx.clear_kv_cache_seq(Some(seq.id as u32), None, None);
        self.shared.active.fetch_sub(1, Ordering::Relaxed);
        let Seq {
            id,
            events,
            text,
            admitted,
            first_token_ms,
            _permit: permit,
            ..
        } = seq;
        drop(permit);
        let outcome = match end {
            End::Done { reason, flush } => {
                if flush
                    && let rest = text.finish()
                    && !rest.is_empty()
                {
                    let _ = events.send(GenEvent::Delta(rest));
                }
                let _ = events.send(GenEvent::Done(usage, reason));
                match reason {
                    FinishReason::Stop => "stop",
                    FinishReason::Length => "length",
                }
            }
            End::Failed(err) => {
                let _ = events.send(GenEvent::Failed(err));
                "failed"
            }
            End::Cancelled => "cancelled",
        };
        tracing::debug!(
            target: "veil::local",
            seq = id,
            prompt_tokens = usage.prompt_tokens,
            completion_tokens = usage.completion_tokens,
            first_token_ms,
            total_ms = admitted.elapsed().as_millis() as u64,
            outcome,
            "sequence ended"
        );
        if !matches!(cleared, Ok(true)) {
            // A sequence's cells could not be removed: the next user of this id would see
            // them. Start over with an empty cache rather than mix conversations.
            self.reset_all(LocalError::Generation(
                "the KV cache could not be cleared".into(),
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn step_guard_catches_panics_and_gives_up_after_three_in_a_row() {
        let mut guard = StepGuard::default();
        let boom = || std::panic::panic_any("injected step failure");
        assert_eq!(guard.run(boom), Guarded::Panicked);
        assert_eq!(guard.run(boom), Guarded::Panicked);
        assert_eq!(
            guard.run(|| {}),
            Guarded::Ok,
            "a good step resets the count"
        );
        assert_eq!(guard.run(boom), Guarded::Panicked);
        assert_eq!(guard.run(boom), Guarded::Panicked);
        assert!(matches!(guard.run(boom), Guarded::GiveUp(_)));
    }
}
