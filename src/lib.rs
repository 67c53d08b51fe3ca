//! veil — a privacy-policy enforcement proxy for LLM traffic.
//!
//! Applications talk to veil exactly as they talk to the OpenAI API. Every request
//! flows through one pipeline, one stage per module:
//!
//! ```text
//!  HTTP ─▶ api ─▶ auth ─▶ extract ─▶ detect ─▶ policy ─▶ redact ─▶ route ─┬─ cloud ─▶ respond (+restore)
//!                                                          │               ├─ local ─▶ respond
//!                                                          ▼               └─ block ─▶ OpenAI-shaped error
//!                                                        audit  (decision durable before any byte leaves;
//!                                                                outcome appended when the answer ends)
//! ```
//!
//! - [`api`]: the HTTP edge (axum): strict body parsing, the OpenAI wire types, errors.
//! - [`auth`]: bearer API keys (stored hashed) to a principal: key id, tenant, policy.
//! - [`extract`]: every text-bearing field of a request, and the parts that cannot be scanned.
//! - [`detect`]: normalization, pattern recognizers with validators, dictionaries.
//! - [`policy`]: policy files compiled into rules; the most restrictive action wins.
//! - [`redact`]: replacement operators, the per-request redaction map, restoring answers.
//! - [`route`]: the cloud upstream (reqwest) and the local model.
//! - [`audit`]: the append-only, hash-chained decision log behind a store trait.
//! - [`pipeline`]: the stages above in order, with types that make skipping one a compile error.
//! - [`config`] and [`snapshot`]: `veil.toml`, and the immutable compiled state each request uses.
//!
//! Invariants that every module keeps: nothing that cannot be scanned, decided and audited is
//! sent to a cloud; prompt and answer text never reach logs, errors or the audit database.

pub mod api;
pub mod audit;
pub mod auth;
pub mod config;
pub mod decide;
pub mod detect;
pub mod extract;
pub mod json;
pub mod pipeline;
pub mod policy;
pub mod redact;
pub mod review;
pub mod route;
pub mod scan;
pub mod server;
pub mod snapshot;
pub mod telemetry;
