//! The in-process local model.
//!
//! This build has no local model engine yet: every `local` decision is answered with
//! `503 local_model_unavailable` (never a fake answer, never the cloud).

/// Handle to the local model.
#[derive(Debug, Clone, Default)]
pub struct LocalModel {
    configured: bool,
}

/// Readiness of the local model.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LocalStatus {
    /// Not configured or not built.
    Unavailable {
        /// Why, as a sentence.
        reason: String,
    },
}

impl LocalModel {
    /// A handle for a configured (or not) model path.
    pub fn new(configured: bool) -> Self {
        Self { configured }
    }

    /// Whether a model is configured.
    pub fn is_configured(&self) -> bool {
        self.configured
    }

    /// Current status.
    pub fn status(&self) -> LocalStatus {
        LocalStatus::Unavailable {
            reason: "this build of veil has no local model engine".to_owned(),
        }
    }

    /// The model id listed by `/v1/models`, when the model is ready.
    pub fn model_id(&self) -> Option<String> {
        None
    }
}
