//! Detection throughput and latency with the classifier: patterns + token classifier, as one
//! request runs them (`Detectors::detect`, the shipped `default` policy and model).
//!
//! `cargo run --release --example detect_bench [-- --jsonl FILE] [--docs N] [--portable]`
//!
//! Without `--jsonl`, documents of about 1 KB of generated clinical-style text are used (the
//! same text on every run). With `--jsonl FILE` (lines with a `"text"` field, e.g. a dev set),
//! those documents are used instead. Reports KB/s over all documents (one at a time, as
//! requests arrive) and the p50/p95 latency per document. Needs `VEIL_ORT_LIB`;
//! `VEIL_CLASSIFIER_DIR` selects another model directory; `--portable` keeps the shipped uint8
//! weights on CPUs where veil would run them as int8 (`classifier.weights = "portable"`).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::time::Instant;

use veil::config::{ClassifierSettings, Weights};
use veil::snapshot::{Snapshot, load_classifier};

const PROSE: &[&str] = &[
    "Pt resting comfortably overnight, no acute distress noted. ",
    "Denies chest pain or shortness of breath, reports mild nausea after breakfast. ",
    "LUNGS: coarse breath sounds bilaterally, diminished at the right base. ",
    "ABD soft, nontender, +BS x4, tolerating clear liquids without difficulty. ",
    "Plan: continue diuresis, recheck lytes in AM, wean O2 as tolerated. ",
    "NEURO: A+Ox3, MAE, follows commands, PERRLA, speech clear. ",
    "Skin intact, turned q2h, heels elevated on pillows. ",
    "Family in to visit this evening, updated on plan of care by RN. ",
];

const CLINICAL: &[&str] = &[
    "VS: BP 132/78 HR 92 RR 20 T 37.4 SpO2 96% 3L NC. ",
    "K 3.6 repleted with 40 mEq KCl PO, Mg 1.9, Cr 1.3 (baseline 1.1). ",
    "Lopressor 12.5 mg PO BID held for SBP < 100. ",
    "ABG 7.41/39/92 on PSV 12/5 FiO2 .40, RSBI 58. ",
    "I/O +650 for the shift, foley draining clear yellow urine 40-60 cc/hr. ",
    "Heparin gtt @ 900 u/hr, PTT 58.1 this AM. ",
];

const PHI: &[&str] = &[
    "Seen by Dr. Okafor this morning. ",
    "Wife Linda called at 4pm, will visit tomorrow. ",
    "Transferred from St. Agnes Hospital on 3/12. ",
    "Daughter's number (410) 555-0187. ",
    "MRN 7731902. ",
];

struct Lcg(u64);

impl Lcg {
    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        items[(self.0 >> 33) as usize % items.len()]
    }
}

fn generated(docs: usize) -> Vec<String> {
    let mut rng = Lcg(42);
    (0..docs)
        .map(|i| {
            let mut doc = String::new();
            while doc.len() < 1000 {
                let part = match doc.len() % 5 {
                    0 | 1 => rng.pick(PROSE),
                    2 | 3 => rng.pick(CLINICAL),
                    _ if i % 3 == 0 => rng.pick(PHI),
                    _ => rng.pick(PROSE),
                };
                doc.push_str(part);
            }
            doc
        })
        .collect()
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let flag = |name: &str| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1).cloned())
    };
    let docs: usize = flag("--docs").and_then(|d| d.parse().ok()).unwrap_or(300);
    let texts: Vec<String> = match flag("--jsonl") {
        Some(path) => std::fs::read_to_string(&path)
            .unwrap()
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter_map(|v| v["text"].as_str().map(str::to_owned))
            .collect(),
        None => generated(docs),
    };
    let root = env!("CARGO_MANIFEST_DIR");
    let settings = ClassifierSettings {
        dir: std::env::var("VEIL_CLASSIFIER_DIR")
            .unwrap_or_else(|_| format!("{root}/models/classifier"))
            .into(),
        ort_library: std::env::var("VEIL_ORT_LIB")
            .expect("set VEIL_ORT_LIB to libonnxruntime.so")
            .into(),
        weights: if args.iter().any(|a| a == "--portable") {
            Weights::Portable
        } else {
            Weights::Auto
        },
        ..ClassifierSettings::default()
    };
    let classifier = load_classifier(&settings).unwrap();
    let set = Snapshot::policy_set(
        std::path::Path::new(&format!("{root}/policies/default.toml")),
        &classifier,
    )
    .unwrap();
    // Warm-up.
    for t in texts.iter().take(5) {
        set.detectors.detect(t).unwrap();
    }
    let mut lat = Vec::with_capacity(texts.len());
    let mut bytes = 0usize;
    let mut findings = 0usize;
    let start = Instant::now();
    for t in &texts {
        let t0 = Instant::now();
        findings += set.detectors.detect(t).unwrap().len();
        lat.push(t0.elapsed().as_secs_f64() * 1e3);
        bytes += t.len();
    }
    let secs = start.elapsed().as_secs_f64();
    lat.sort_by(f64::total_cmp);
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!(
        "{} docs, {:.0} KB (mean {:.0} B/doc), {findings} findings",
        texts.len(),
        bytes as f64 / 1024.0,
        bytes as f64 / texts.len() as f64
    );
    println!(
        "throughput {:.1} KB/s   latency p50 {:.1} ms  p95 {:.1} ms  max {:.1} ms",
        bytes as f64 / 1024.0 / secs,
        percentile(&lat, 0.5),
        percentile(&lat, 0.95),
        lat.last().copied().unwrap_or_default()
    );
    println!(
        "versions {:?}   load average {}",
        set.detectors.versions(),
        load.trim()
    );
}
