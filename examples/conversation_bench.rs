//! Detection time per turn of a conversation that resends its whole history every turn, with
//! and without the classifier's segment cache (issue 27: turn 20 within 1.5x of turn 1).
//!
//! usage: VEIL_ORT_LIB=… cargo run --release --example conversation_bench [-- TURNS CONVERSATIONS]
//!
//! Each turn's request holds every earlier user message and answer plus a new user message, as
//! chat clients send them; the messages are invented clinical questions and answers of about
//! 500 bytes. Every turn is decided as the server decides it (`decide::decide` under the
//! default policy); with the cache, each answer is then read as the server reads it while the
//! classifier is idle (`decide::prime`, timed apart: it is off the request path). Prints the
//! median time of turn 1 and of the last turn over the conversations.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)] // a benchmark, not a request path

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use veil::auth::Principal;
use veil::config::Config;
use veil::decide::{self, Request};
use veil::scan::ClassifierState;
use veil::snapshot::Snapshot;

const TOPICS: &[&str] = &[
    "community-acquired pneumonia",
    "atrial fibrillation",
    "type 2 diabetes",
    "chronic kidney disease",
    "heart failure with reduced ejection fraction",
    "asthma in adults",
    "hypertension in older adults",
    "deep vein thrombosis",
];

fn user(turn: usize, conv: usize) -> String {
    let topic = TOPICS[(turn + conv) % TOPICS.len()];
    format!(
        "Question {turn}: for a patient with {topic}, which findings at the first visit should \
         change the plan, how should treatment be adjusted when the response is slow, which \
         laboratory results need repeating and how often, and what should the patient be told \
         about warning signs that call for an earlier review? Please keep the answer practical \
         and note where the main guidelines differ from each other on any of these points."
    )
}

fn answer(turn: usize, conv: usize) -> String {
    let topic = TOPICS[(turn * 3 + conv) % TOPICS.len()];
    format!(
        "For {topic}, the first visit should establish severity, other conditions and current \
         medicines. Treatment is usually adjusted after two to four weeks if the response is \
         slow, with attention to adherence and side effects. Repeat the relevant blood tests \
         at the intervals the guideline suggests, sooner after a change of dose. Patients \
         should be told which symptoms mean they must come back early (answer {turn})."
    )
}

fn main() {
    let mut args = std::env::args().skip(1);
    let turns: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(20);
    let conversations: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(3);
    let repo = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let config = |cache_entries: usize| {
        let mut config = Config::parse(
            &repo.join("veil.toml"),
            &format!(
                "[policies]\ndir = {:?}\n[detect]\ncache_entries = {cache_entries}\n\
                 [classifier]\ndir = {:?}\nsessions = 1\n",
                repo.join("policies"),
                repo.join("models/classifier"),
            ),
        )
        .expect("config");
        if let Ok(lib) = std::env::var("VEIL_ORT_LIB") {
            config.classifier.ort_library = PathBuf::from(lib);
        }
        config
    };
    let classifier = veil::snapshot::load_classifier(&config(0).classifier).expect("classifier");
    assert!(matches!(classifier, ClassifierState::Loaded(_)));
    let principal = Principal {
        key_id: Arc::from("bench"),
        tenant: Arc::from("bench"),
        policy: Arc::from("default"),
    };
    for (label, entries, read_ahead) in [
        ("without cache", 0, false),
        ("cache, no read-ahead", 4096, false),
        ("with cache", 4096, true),
    ] {
        let mut per_turn: Vec<Vec<Duration>> = vec![Vec::new(); turns];
        let mut priming: Vec<Duration> = Vec::new();
        for conv in 0..conversations {
            // A new snapshot per conversation: its caches start empty.
            let snap = Snapshot::build(
                &config(entries),
                &classifier,
                veil::audit::ValueDigester::new(b"bench"),
                |_| None,
            )
            .expect("snapshot");
            let mut messages: Vec<Value> = Vec::new();
            for (turn, times) in per_turn.iter_mut().enumerate() {
                messages.push(json!({"role": "user", "content": user(turn, conv)}));
                let request = Request::new(
                    "gpt-4o-mini",
                    json!({"model": "gpt-4o-mini", "messages": messages}),
                );
                let started = Instant::now();
                let decision = decide::decide(&request, &principal, &snap).expect("decide");
                times.push(started.elapsed());
                assert!(!decision.scanned.failed);
                let reply = json!({"role": "assistant", "content": answer(turn, conv)});
                if read_ahead {
                    let started = Instant::now();
                    decide::prime(&request, reply.clone(), &principal, &snap).expect("prime");
                    priming.push(started.elapsed());
                }
                messages.push(reply);
            }
        }
        let median = |t: &[Duration]| {
            let mut t = t.to_vec();
            t.sort();
            t.get(t.len() / 2).copied().unwrap_or_default()
        };
        let first = median(&per_turn[0]);
        let last = median(&per_turn[turns - 1]);
        print!(
            "{label:20} turn 1 {:7.2} ms   turn {turns} {:7.2} ms   ratio {:.2}   (request of {} messages)",
            first.as_secs_f64() * 1e3,
            last.as_secs_f64() * 1e3,
            last.as_secs_f64() / first.as_secs_f64(),
            2 * turns - 1
        );
        if priming.is_empty() {
            println!();
        } else {
            println!(
                "   reading an answer while idle {:.2} ms",
                median(&priming).as_secs_f64() * 1e3
            );
        }
    }
}
