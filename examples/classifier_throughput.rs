//! The classifier alone under concurrent requests: how many ~1 KB prompts (the proxy bench's
//! prompt) a core budget classifies per second, and their latency, for a choice of sessions and
//! threads per session (`classifier.sessions`, `classifier.threads`).
//!
//! `cargo run --release --example classifier_throughput -- THREADS SESSIONS CONCURRENCY SECS`
//! (defaults 2 2 2 10). Needs `VEIL_ORT_LIB` or `make assets`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use veil::config::Weights;
use veil::detect::classifier::rules::RuleSet;
use veil::detect::classifier::{Classifier, ClassifierConfig};

/// The prompt of `scripts/bench_proxy.py`.
const PROMPT: &str = "Summarise the current guidance on managing community-acquired pneumonia in adults who are otherwise healthy. Cover how severity is assessed at the first visit, which findings on examination and which laboratory results point towards admission rather than treatment at home, and which first-line antibiotics are preferred when there are no risk factors for resistant organisms. Explain how long treatment usually lasts, what follow-up is advised when symptoms improve slowly, and which warning signs should make a patient come back early. Mention the role of chest imaging, when repeat imaging is useful and when it is not, and how vaccination against pneumococcus and influenza fits into prevention afterwards. Keep the answer practical, in short paragraphs, suitable for a clinician reviewing options before a consultation, and note where recommendations differ between major guidelines.";

fn main() {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .map(|a| a.parse().expect("numbers"))
        .collect();
    let arg = |i: usize, default: usize| args.get(i).copied().unwrap_or(default);
    let (threads, sessions, concurrency, secs) = (arg(0, 2), arg(1, 2), arg(2, 2), arg(3, 10));
    let repo = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let classifier = Arc::new(
        Classifier::load(&ClassifierConfig {
            dir: repo.join("models/classifier"),
            ort_library: std::env::var("VEIL_ORT_LIB").map_or_else(
                |_| repo.join(".cache/onnxruntime/libonnxruntime.so.1.31.1"),
                PathBuf::from,
            ),
            threads,
            sessions,
            batch: 16,
            weights: Weights::Auto,
            rules: RuleSet::all(),
        })
        .expect("classifier"),
    );
    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let workers: Vec<_> = (0..concurrency)
        .map(|_| {
            let (c, stop) = (classifier.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut times = Vec::new();
                while !stop.load(Ordering::Relaxed) {
                    let t = Instant::now();
                    c.detect(PROMPT, &BTreeMap::new()).expect("detect");
                    times.push(t.elapsed().as_secs_f64());
                }
                times
            })
        })
        .collect();
    std::thread::sleep(Duration::from_secs(secs as u64));
    stop.store(true, Ordering::Relaxed);
    let mut times: Vec<f64> = workers
        .into_iter()
        .flat_map(|w| w.join().expect("worker"))
        .collect();
    let elapsed = started.elapsed().as_secs_f64();
    times.sort_by(f64::total_cmp);
    let at = |q: f64| times[((times.len() as f64 * q) as usize).min(times.len() - 1)] * 1e3;
    println!(
        "threads {threads} sessions {sessions} concurrency {concurrency}: {:.1} prompts/s, \
         p50 {:.2} ms, p99 {:.2} ms",
        times.len() as f64 / elapsed,
        at(0.5),
        at(0.99)
    );
}
