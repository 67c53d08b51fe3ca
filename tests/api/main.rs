//! Integration tests: veil on port 0 with a temporary audit database, in front of a counting
//! mock cloud upstream. One test binary; modules by subject.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]
mod helpers;

mod audit;
mod chat;
mod classifier;
mod faults;
mod hostile;
mod leaks;
mod local;
mod policy;
mod postgres;
mod streaming;
