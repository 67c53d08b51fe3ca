//! The errors of the local engine. Messages are sentences that say what to do next and never
//! contain prompt or completion text (only counts, paths and configuration).

/// Why the local model could not answer a request.
///
/// The HTTP edge maps these to status codes: `Unavailable` and `Busy` to 503 with `Retry-After`
/// (a local-only request is never sent to a cloud instead), `ContextLengthExceeded` and
/// `InvalidRequest` to 400, `Generation` to 500.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LocalError {
    /// The model is not loaded: still loading, failed to load, or the engine stopped.
    #[error(
        "the local model is unavailable: {reason}; retry later, or ask an operator to check the local model configuration"
    )]
    Unavailable {
        /// What is wrong with the engine (never prompt text).
        reason: String,
    },
    /// Every generation slot is busy and the wait queue is full, or the wait timed out.
    #[error("the local model is busy with other requests; retry after {retry_after_secs} seconds")]
    Busy {
        /// Suggested wait before retrying, for the `Retry-After` header.
        retry_after_secs: u32,
    },
    /// The rendered prompt leaves no room for even one completion token.
    #[error(
        "the prompt is {prompt_tokens} tokens but the local model's context holds {context} tokens including the answer; shorten the conversation"
    )]
    ContextLengthExceeded {
        /// Tokens in the prompt after the chat template was applied.
        prompt_tokens: usize,
        /// Tokens one sequence may hold (prompt plus completion).
        context: u32,
    },
    /// The request itself is malformed (out-of-range sampling parameters, no messages, NUL bytes).
    #[error("the request cannot be run on the local model: {0}")]
    InvalidRequest(String),
    /// Generation started but llama.cpp failed; the request may be retried.
    #[error("local generation failed: {0}; retry the request")]
    Generation(String),
}
