//! Routing: where a decided request is answered — a cloud upstream or the in-process model.
//!
//! Only this module talks to the outside (reqwest) or to llama.cpp. Local traffic never falls
//! back to a cloud: when the local model is missing, loading, busy or broken, the caller gets
//! an error to pass on as 503.

pub mod cloud;
pub mod local;
pub mod sse;
