//! veil — a privacy-policy enforcement proxy for LLM traffic.
//!
//! Applications talk to veil exactly as they talk to the OpenAI API. Every request flows one way:
//!
//! ```text
//!  HTTP ─▶ api ─▶ auth ─▶ decide ──────────────────────────────▶ seal ─▶ route ─┬─ cloud ─▶ respond (+restore)
//!        (wire      (extract ─▶ detect ─▶ policy ─▶ redact;          (audit:     ├─ local ─▶ respond
//!         types)     plain types, no HTTP)                           durable     └─ block ─▶ OpenAI-shaped error
//!                                                                    first)
//! ```
//!
//! - [`api`]: the HTTP edge (axum): the OpenAI wire types, validation, errors.
//! - [`json`]: strict JSON (no duplicate keys, bounded depth) for bodies and tool arguments.
//! - [`auth`]: bearer API keys (stored hashed) to a principal: key id, tenant, policy.
//! - [`decide`]: the decision core — a request, its principal and a snapshot in, one decision
//!   out (findings, every rule evaluated, the action and why, the route, the body that may
//!   leave). The server and every `veil policy` command call it.
//! - [`extract`]: every text-bearing field of a request, and the parts that cannot be scanned.
//! - [`scan`] and [`detect`]: normalization, pattern recognizers with validators, dictionaries,
//!   the token classifier.
//! - [`policy`]: policy files compiled into rules (the most restrictive action wins), and lints.
//! - [`redact`]: replacement operators, the per-request redaction map, restoring answers.
//! - [`audit`]: the append-only, hash-chained decision log behind a store trait.
//! - [`route`]: the cloud upstream (reqwest) and the local model.
//! - [`pipeline`]: the stages above in order, with types that make skipping one a compile error.
//! - [`review`]: `veil policy check | test | explain | diff`.
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
