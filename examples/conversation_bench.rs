//! Detection time per turn of a conversation that resends its whole history every turn, with
//! and without the classifier's segment cache (issue 27: turn 20 within 1.5x of turn 1).
//!
//! usage: VEIL_ORT_LIB=… cargo run --release --example conversation_bench [-- TURNS CONVERSATIONS]
//!
//! Each turn's request holds every earlier user message and answer plus a new user message, as
//! chat clients send them; the messages are invented clinical questions and answers of about
//! 500 bytes. Prints the median detection time of each turn over the conversations.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)] // a benchmark, not a request path

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use veil::config::Weights;
use veil::detect::classifier::cache::SegmentCache;
use veil::detect::classifier::rules::RuleSet;
use veil::detect::classifier::{Classifier, ClassifierConfig};
use veil::detect::{PatternConfig, PatternDetector};
use veil::scan::{ClassifierState, Detectors};

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
    let classifier = Classifier::load(&ClassifierConfig {
        dir: repo.join("models/classifier"),
        ort_library: std::env::var("VEIL_ORT_LIB").map_or_else(
            |_| repo.join(".cache/onnxruntime/libonnxruntime.so.1.31.1"),
            PathBuf::from,
        ),
        threads: 2,
        sessions: 1,
        batch: 16,
        weights: Weights::Auto,
        rules: RuleSet::all(),
    })
    .expect("classifier");
    let classifier = ClassifierState::Loaded(Arc::new(classifier));
    let detectors = |cache: Option<SegmentCache>| {
        Detectors::new(
            PatternDetector::new(&PatternConfig::default()).expect("patterns"),
            classifier.clone(),
            BTreeMap::new(),
            &[],
        )
        .with_cache(cache)
    };
    for (label, cached) in [("without cache", false), ("with cache", true)] {
        let mut per_turn: Vec<Vec<Duration>> = vec![Vec::new(); turns];
        for conv in 0..conversations {
            let d = detectors(
                cached
                    .then(|| SegmentCache::new(4096, Duration::from_secs(600)))
                    .flatten(),
            );
            let mut messages: Vec<String> = Vec::new();
            for (turn, times) in per_turn.iter_mut().enumerate() {
                if turn > 0 {
                    messages.push(answer(turn - 1, conv));
                }
                messages.push(user(turn, conv));
                let doc = messages.join(" ");
                let mut ranges = Vec::new();
                let mut at = 0;
                for m in &messages {
                    ranges.push(at..at + m.len());
                    at += m.len() + 1;
                }
                let started = Instant::now();
                d.detect_segments(&doc, &ranges, "bench").expect("detect");
                times.push(started.elapsed());
            }
        }
        let median = |t: &Vec<Duration>| {
            let mut t = t.clone();
            t.sort();
            t[t.len() / 2]
        };
        let first = median(&per_turn[0]);
        let last = median(&per_turn[turns - 1]);
        println!(
            "{label:14} turn 1 {:7.2} ms   turn {turns} {:7.2} ms   ratio {:.2}   (request of {} messages)",
            first.as_secs_f64() * 1e3,
            last.as_secs_f64() * 1e3,
            last.as_secs_f64() / first.as_secs_f64(),
            2 * turns - 1
        );
    }
}
