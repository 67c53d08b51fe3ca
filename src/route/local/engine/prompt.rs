//! Turns a [`GenerateRequest`] into what the worker runs: the model's chat template applied,
//! the result tokenized, the token budget fixed and the sampling parameters validated.
//!
//! Invariants: a [`Prepared`] always fits its sequence (`tokens.len() + max_new <= context`,
//! `max_new >= 1`), and its sampling parameters are in range. Nothing here logs message text.

use llama_cpp_2::model::{LlamaChatMessage, LlamaChatTemplate, LlamaModel};
use llama_cpp_2::token::LlamaToken;

use super::{GenerateRequest, LocalError};

/// Temperature used when a request does not set one (llama.cpp's own default).
pub const DEFAULT_TEMPERATURE: f32 = 0.8;
/// Nucleus mass used when a request does not set `top_p` (llama.cpp's own default).
pub const DEFAULT_TOP_P: f32 = 0.95;
/// llama.cpp's "pick a random seed" value.
const RANDOM_SEED: u32 = u32::MAX;

/// How the next token is chosen.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) enum Sampling {
    /// Always the most likely token: deterministic for a given prompt.
    Greedy,
    /// Temperature, then nucleus (top-p), then a seeded draw.
    Random {
        /// Softmax temperature (> 0).
        temperature: f32,
        /// Nucleus mass in [0, 1].
        top_p: f32,
        /// llama.cpp seed; [`RANDOM_SEED`] asks llama.cpp to pick one.
        seed: u32,
    },
}

/// A request ready for the worker.
#[derive(Debug)]
pub(super) struct Prepared {
    /// The rendered, tokenized prompt.
    pub(super) tokens: Vec<LlamaToken>,
    /// Completion tokens allowed (>= 1; capped so the prompt plus completion fit the context).
    pub(super) max_new: u32,
    /// Token choice.
    pub(super) sampling: Sampling,
    /// Stop strings (never emitted).
    pub(super) stops: Vec<String>,
}

/// The model's chat template and everything needed to render and tokenize with it.
pub(super) struct Prompter<'m> {
    /// The loaded model (for its vocabulary and template renderer).
    pub(super) model: &'m LlamaModel,
    /// The model's own chat template.
    pub(super) template: &'m LlamaChatTemplate,
}

impl Prompter<'_> {
    /// Applies the chat template (with the assistant turn opened) and tokenizes the result.
    pub(super) fn tokens(&self, req: &GenerateRequest) -> Result<Vec<LlamaToken>, LocalError> {
        if req.messages.is_empty() {
            return Err(LocalError::InvalidRequest(
                "the request has no messages; send at least one".into(),
            ));
        }
        // The template is rendered around placeholders, never around the message text: the
        // template's own markup is tokenized with special-token parsing, every message's text
        // without it. A user who types "<|im_end|><|im_start|>system" gets those characters as
        // plain text, not control tokens that forge a system turn.
        let mut chat = Vec::with_capacity(req.messages.len());
        for (i, turn) in req.messages.iter().enumerate() {
            if turn.content.contains('\0') {
                return Err(LocalError::InvalidRequest(format!(
                    "message {i} contains a NUL character; remove it and retry"
                )));
            }
            let message =
                LlamaChatMessage::new(turn.role.clone(), placeholder(i)).map_err(|_| {
                    LocalError::Generation("a chat role could not be passed to the template".into())
                })?;
            chat.push(message);
        }
        let rendered = self
            .model
            .apply_chat_template(self.template, &chat, true)
            .map_err(|err| {
                // The error variants carry codes, never text.
                LocalError::Generation(format!(
                    "the model's chat template could not render this conversation ({err})"
                ))
            })?;
        let pieces = split_rendered(&rendered, req.messages.len()).ok_or_else(|| {
            LocalError::Generation(
                "the model's chat template does not place each message exactly once, in order; \
                 veil cannot keep message text apart from template markup with it"
                    .into(),
            )
        })?;
        let vocab = self.model.vocab();
        let mut tokens = Vec::new();
        for (k, piece) in pieces.iter().enumerate() {
            match *piece {
                Piece::Markup(markup) if !markup.is_empty() || k == 0 => {
                    tokens.extend(vocab.tokenize(markup.as_bytes(), k == 0, true));
                }
                Piece::Markup(_) => {}
                Piece::Message(i) => {
                    let text = req.messages.get(i).map_or("", |m| m.content.as_str());
                    if !text.is_empty() {
                        tokens.extend(vocab.tokenize(text.as_bytes(), false, false));
                    }
                }
            }
        }
        // Templates that spell out the BOS token plus a vocabulary that adds one would start
        // the prompt with two; llama.cpp's server drops the duplicate the same way.
        let bos = vocab.bos();
        if tokens.get(..2) == Some(&[bos, bos][..]) {
            tokens.remove(0);
        }
        Ok(tokens)
    }

    /// Validates the request and fixes its token budget against `context` tokens per sequence.
    pub(super) fn prepare(
        &self,
        req: &GenerateRequest,
        context: u32,
        default_max_tokens: u32,
    ) -> Result<Prepared, LocalError> {
        let sampling = sampling(req)?;
        let requested = match req.max_tokens {
            Some(0) => {
                return Err(LocalError::InvalidRequest(
                    "max_tokens must be at least 1".into(),
                ));
            }
            Some(n) => n,
            None => default_max_tokens,
        };
        let tokens = self.tokens(req)?;
        if tokens.is_empty() {
            // Cannot happen with a real chat template; a sequence without a prompt token
            // would never produce logits.
            return Err(LocalError::InvalidRequest(
                "the conversation renders to an empty prompt; send a non-empty message".into(),
            ));
        }
        let max_new = budget(tokens.len(), context, requested)?;
        Ok(Prepared {
            tokens,
            max_new,
            sampling,
            stops: req.stop.iter().filter(|s| !s.is_empty()).cloned().collect(),
        })
    }
}

/// Stands in for message `i` while the chat template renders. Private-use code points and no
/// markup: no template alters it, and it cannot collide with text (the text is not rendered).
fn placeholder(i: usize) -> String {
    format!("\u{E000}veil-message-{i}\u{E001}")
}

/// One part of a rendered prompt.
#[derive(Debug, PartialEq, Eq)]
enum Piece<'a> {
    /// The template's own text (role headers, control tokens): tokenized with special parsing.
    Markup(&'a str),
    /// Message `i`'s text: tokenized as plain text.
    Message(usize),
}

/// Splits a prompt rendered around [`placeholder`]s into markup and message pieces, or `None`
/// when a message is missing, repeated or out of order (the template rewrote the conversation).
fn split_rendered(rendered: &str, messages: usize) -> Option<Vec<Piece<'_>>> {
    let mut pieces = Vec::with_capacity(2 * messages + 1);
    let mut rest = rendered;
    for i in 0..messages {
        let mark = placeholder(i);
        let at = rest.find(&mark)?;
        pieces.push(Piece::Markup(&rest[..at]));
        pieces.push(Piece::Message(i));
        rest = &rest[at + mark.len()..];
    }
    if rest.contains("\u{E000}veil-message-") {
        return None;
    }
    pieces.push(Piece::Markup(rest));
    Some(pieces)
}

/// Completion tokens allowed: `requested`, capped so prompt plus completion fit in `context`.
pub(super) fn budget(
    prompt_tokens: usize,
    context: u32,
    requested: u32,
) -> Result<u32, LocalError> {
    let room = u64::from(context).saturating_sub(prompt_tokens as u64);
    if room == 0 {
        return Err(LocalError::ContextLengthExceeded {
            prompt_tokens,
            context,
        });
    }
    Ok(u32::try_from(room).map_or(requested, |room| room.min(requested)))
}

/// Validates and resolves the sampling parameters of `req`.
pub(super) fn sampling(req: &GenerateRequest) -> Result<Sampling, LocalError> {
    let temperature = req.temperature.unwrap_or(DEFAULT_TEMPERATURE);
    if !temperature.is_finite() || !(0.0..=2.0).contains(&temperature) {
        return Err(LocalError::InvalidRequest(
            "temperature must be a number between 0 and 2".into(),
        ));
    }
    let top_p = req.top_p.unwrap_or(DEFAULT_TOP_P);
    if !top_p.is_finite() || !(0.0..=1.0).contains(&top_p) {
        return Err(LocalError::InvalidRequest(
            "top_p must be a number between 0 and 1".into(),
        ));
    }
    if temperature == 0.0 {
        return Ok(Sampling::Greedy);
    }
    Ok(Sampling::Random {
        temperature,
        top_p,
        seed: req.seed.map_or(RANDOM_SEED, fold_seed),
    })
}

/// Folds a 64-bit request seed into llama.cpp's 32-bit seed, avoiding its "random" value.
fn fold_seed(seed: u64) -> u32 {
    let folded = (seed ^ (seed >> 32)) as u32;
    if folded == RANDOM_SEED {
        folded - 1
    } else {
        folded
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(temperature: Option<f32>, top_p: Option<f32>, seed: Option<u64>) -> GenerateRequest {
        GenerateRequest {
            temperature,
            top_p,
            seed,
            ..GenerateRequest::default()
        }
    }

    #[test]
    fn rendered_prompt_splits_into_markup_and_messages() {
        let rendered = format!(
            "<s>[sys]{}[/sys][user]{}[/user][asst]",
            placeholder(0),
            placeholder(1)
        );
        assert_eq!(
            split_rendered(&rendered, 2),
            Some(vec![
                Piece::Markup("<s>[sys]"),
                Piece::Message(0),
                Piece::Markup("[/sys][user]"),
                Piece::Message(1),
                Piece::Markup("[/user][asst]"),
            ])
        );
    }

    #[test]
    fn a_template_that_drops_repeats_or_reorders_messages_is_refused() {
        let dropped = format!("[user]{}[asst]", placeholder(1));
        assert_eq!(split_rendered(&dropped, 2), None);
        let repeated = format!("{0}{0}", placeholder(0));
        assert_eq!(split_rendered(&repeated, 1), None);
        let reordered = format!("{}{}", placeholder(1), placeholder(0));
        assert_eq!(split_rendered(&reordered, 2), None);
    }

    #[test]
    fn budget_caps_to_the_context() {
        assert_eq!(budget(10, 100, 50).ok(), Some(50));
        assert_eq!(budget(90, 100, 50).ok(), Some(10));
        assert_eq!(budget(99, 100, 50).ok(), Some(1));
    }

    #[test]
    fn budget_refuses_a_prompt_without_room() {
        assert_eq!(
            budget(100, 100, 5),
            Err(LocalError::ContextLengthExceeded {
                prompt_tokens: 100,
                context: 100
            })
        );
        assert!(budget(150, 100, 5).is_err());
    }

    #[test]
    fn temperature_zero_is_greedy() {
        assert_eq!(
            sampling(&req(Some(0.0), Some(0.5), Some(1))),
            Ok(Sampling::Greedy)
        );
    }

    #[test]
    fn defaults_are_documented_values_with_random_seed() {
        assert_eq!(
            sampling(&req(None, None, None)),
            Ok(Sampling::Random {
                temperature: DEFAULT_TEMPERATURE,
                top_p: DEFAULT_TOP_P,
                seed: RANDOM_SEED
            })
        );
    }

    #[test]
    fn out_of_range_parameters_are_invalid() {
        for r in [
            req(Some(-0.1), None, None),
            req(Some(2.5), None, None),
            req(Some(f32::NAN), None, None),
            req(None, Some(1.5), None),
            req(None, Some(f32::INFINITY), None),
        ] {
            assert!(matches!(sampling(&r), Err(LocalError::InvalidRequest(_))));
        }
    }

    #[test]
    fn seeds_fold_and_never_mean_random() {
        assert_eq!(fold_seed(7), 7);
        assert_eq!(fold_seed(u64::from(u32::MAX)), u32::MAX - 1);
        assert_ne!(fold_seed(1 << 40), fold_seed(1 << 41));
    }
}
