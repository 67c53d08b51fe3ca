#![allow(missing_docs)]
//! Throughput of the pattern tier on generated clinical-style text (1 KB, 10 KB, 100 KB;
//! ASCII and a non-ASCII variant). Target: at least 100 MB/s per core on ASCII.
//!
//! Run: `cargo bench --bench patterns`

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use veil::detect::{PatternConfig, PatternDetector};

const PROSE: &[&str] = &[
    "Patient resting comfortably, no acute distress overnight. ",
    "Denies chest pain, shortness of breath or palpitations. ",
    "Lungs with scattered crackles at the bases, 1/3 up bilaterally. ",
    "Abdomen soft, non-tender, bowel sounds present in all quadrants. ",
    "Plan to continue diuresis and reassess volume status in the morning. ",
    "Family updated at bedside, questions answered, agree with plan of care. ",
    "Tolerating diet, ambulating in hallway with physical therapy. ",
    "Skin warm and dry, no edema, pulses palpable in all extremities. ",
    "Neuro: alert and oriented x3, follows commands, strength 5/5 throughout. ",
    "Wound dressing changed, site clean with minimal serous drainage. ",
];

const CLINICAL: &[&str] = &[
    "VS: BP 128/76, HR 88, RR 18, T 37.2 C, SpO2 97% on 2L NC. ",
    "Labs: Na 138, K 4.1, Cl 101, HCO3 24, BUN 18, Cr 1.1, Glu 112, Hct 31.4, WBC 9.8. ",
    "Meds: metoprolol 25 mg PO BID, lisinopril 10 mg daily, 1/2 tab at night. ",
    "ABG 7.38/42/88/24 on PSV 10/5, FiO2 40%. ",
    "I/O 1200/850 over the shift, urine output 50-60 cc/hr. ",
    "Heparin gtt at 1100 units/hr, PTT 62.3, INR 1.2. ",
    "Pain 3/10, given acetaminophen 650 mg with relief. ",
    "CXR 2 views: no acute process. EF 55-60% on echo. ",
];

const PII: &[&str] = &[
    "MRN: 4820193. ",
    "Daughter can be reached at (617) 555-0142. ",
    "DOB 3/14/1951. ",
    "Admitted on 7/22 from rehab. ",
    "Email results to jane.doe@example.com please. ",
    "SSN 123-45-6789 on file. ",
    "Card on file 4111 1111 1111 1111 exp 12/27. ",
    "Member ID XYZ123456789. ",
];

const UNICODE: &[&str] = &[
    "Paciente José Nuñez, temp 38,2 °C, café con leche. ",
    "Tel ٠٥٥٥١٢٣٤٥٦٧ (Arabic-Indic). ",
    "Résumé: naïve façade, coöperate, Zürich. ",
    "ＭＲＮ：４８２０１９３ ",
    "jаne\u{200B}.doe@exаmple.com ",
];

/// A small deterministic generator so every run measures the same text.
struct Lcg(u64);

impl Lcg {
    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        let i = usize::try_from(self.0 >> 33).unwrap_or(0) % items.len();
        items.get(i).copied().unwrap_or("")
    }
}

fn clinical_text(size: usize, unicode: bool) -> String {
    let mut rng = Lcg(42);
    let mut out = String::with_capacity(size + 128);
    let mut n = 0u32;
    while out.len() < size {
        n += 1;
        let part = match n % 10 {
            0 => rng.pick(PII),
            1 | 4 | 7 => rng.pick(CLINICAL),
            5 if unicode => rng.pick(UNICODE),
            _ => rng.pick(PROSE),
        };
        out.push_str(part);
        if n.is_multiple_of(6) {
            out.push('\n');
        }
    }
    let mut end = size.min(out.len());
    while !out.is_char_boundary(end) {
        end -= 1;
    }
    out.truncate(end);
    out
}

fn bench(c: &mut Criterion) {
    let detector = match PatternDetector::new(&PatternConfig::default()) {
        Ok(d) => d,
        Err(e) => {
            eprintln!("cannot build detector: {e}");
            return;
        }
    };
    for (variant, unicode) in [("ascii", false), ("unicode", true)] {
        let mut group = c.benchmark_group(format!("patterns/{variant}"));
        for size in [1_000, 10_000, 100_000] {
            let text = clinical_text(size, unicode);
            group.throughput(Throughput::Bytes(text.len() as u64));
            group.bench_function(format!("{}KB", size / 1000), |b| {
                b.iter(|| detector.detect(black_box(&text)));
            });
        }
        group.finish();
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
