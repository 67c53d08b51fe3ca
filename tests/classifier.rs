//! The token classifier on its own: offsets in multi-byte text, entities straddling a window
//! boundary, and the checksum check at load.
//!
//! Uses the shipped model (`models/classifier`, or `VEIL_CLASSIFIER_DIR`) and ONNX Runtime from
//! `VEIL_ORT_LIB` (or `.cache/onnxruntime`, where `make` puts it).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use veil::detect::classifier::cache::SegmentCache;
use veil::detect::classifier::decode::WordScores;
use veil::detect::classifier::rules::{RULES, RuleSet};
use veil::detect::classifier::{Classifier, ClassifierConfig, Manifest, Weights, weights};
use veil::detect::{EntityType, Finding, PatternConfig, PatternDetector};
use veil::scan::{ClassifierState, Detectors};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn model_dir() -> PathBuf {
    std::env::var("VEIL_CLASSIFIER_DIR")
        .ok()
        .filter(|d| !d.is_empty())
        .map_or_else(|| repo().join("models/classifier"), PathBuf::from)
}

fn config(dir: &Path) -> ClassifierConfig {
    ClassifierConfig {
        dir: dir.to_owned(),
        ort_library: std::env::var("VEIL_ORT_LIB").map_or_else(
            |_| repo().join(".cache/onnxruntime/libonnxruntime.so.1.31.1"),
            PathBuf::from,
        ),
        threads: 1,
        sessions: 1,
        batch: 4,
        weights: Weights::Auto,
        rules: RuleSet::all(),
    }
}

fn manifest(dir: &Path) -> Manifest {
    toml::from_str(&std::fs::read_to_string(dir.join("manifest.toml")).unwrap()).unwrap()
}

fn load() -> Classifier {
    Classifier::load(&config(&model_dir())).expect("the shipped classifier loads")
}

fn persons<'t>(text: &'t str, found: &[Finding]) -> Vec<&'t str> {
    found
        .iter()
        .filter(|f| f.entity == EntityType::Person)
        .map(|f| {
            text.get(f.start..f.end)
                .expect("offsets on char boundaries")
        })
        .collect()
}

/// Whether some finding of `entity` covers every non-space character of `needle` in `text`.
fn covered(text: &str, found: &[Finding], entity: &EntityType, needle: &str) -> bool {
    let start = text.find(needle).expect("needle in text");
    let end = start + needle.len();
    (start..end)
        .filter(|&i| text.is_char_boundary(i) && !text[i..].starts_with(char::is_whitespace))
        .all(|i| {
            found
                .iter()
                .any(|f| &f.entity == entity && f.start <= i && i < f.end)
        })
}

#[test]
fn offsets_are_exact_in_multi_byte_text() {
    let c = load();
    let text = "Résumé — 🙂 ünïcödé ✓✓ 東京 aside: Dr. Margaret Okonkwo saw the patient today.";
    let found = c.detect(text, &BTreeMap::new()).unwrap();
    for f in &found {
        assert!(
            text.is_char_boundary(f.start) && text.is_char_boundary(f.end),
            "{f:?}"
        );
    }
    assert!(
        persons(text, &found).contains(&"Margaret Okonkwo"),
        "{:?}",
        persons(text, &found)
    );
}

#[test]
fn an_entity_straddling_a_window_boundary_is_found_whole() {
    let c = load();
    let dir = model_dir();
    let window = manifest(&dir).max_seq_len - 2;
    let tokenizer = tokenizers::Tokenizer::from_file(dir.join("tokenizer.json")).unwrap();
    let pieces = |s: &str| tokenizer.encode(s, false).unwrap().get_ids().len();
    let name = "Margaret Okonkwo";
    assert!(pieces(name) >= 3, "the name spans several word-pieces");
    // Filler words of one piece each, until the name's first piece is the last piece of the
    // first window: the rest of the name falls into the second window.
    let mut prefix = String::from("Nursing note. ");
    let filler = [
        "pt", "resting", "in", "bed", "and", "stable", "on", "the", "unit",
    ];
    let mut k = 0;
    while pieces(&prefix) < window - 1 {
        prefix.push_str(filler[k % filler.len()]);
        prefix.push(' ');
        k += 1;
    }
    assert_eq!(
        pieces(&prefix),
        window - 1,
        "filler words are single pieces"
    );
    let text = format!(
        "{prefix}Seen today by Dr. {name} who will follow up. {}",
        "Plan: continue current care. ".repeat(20)
    );
    // Where the name lands depends on the words in between; try the boundary on each of its
    // pieces by trimming the filler.
    let mut straddled = 0;
    for cut in 0..8 {
        let cut_prefix: String = {
            let words: Vec<&str> = text.split(' ').collect();
            let mut w = words.clone();
            w.drain(3..3 + cut);
            w.join(" ")
        };
        let start_piece = pieces(&cut_prefix[..cut_prefix.find(name).unwrap()]);
        let end_piece = start_piece + pieces(name);
        if start_piece < window && end_piece > window {
            straddled += 1;
        }
        let found = c.detect(&cut_prefix, &BTreeMap::new()).unwrap();
        assert!(
            covered(&cut_prefix, &found, &EntityType::Person, name),
            "cut {cut}: name at pieces {start_piece}..{end_piece}, window {window}: {:?}",
            persons(&cut_prefix, &found)
        );
    }
    assert!(straddled > 0, "some case put the name across the boundary");
}

#[test]
fn requests_classified_at_once_on_several_sessions_find_what_one_session_finds() {
    let dir = model_dir();
    let one = load();
    let several = Arc::new(
        Classifier::load(&ClassifierConfig {
            sessions: 3,
            ..config(&dir)
        })
        .unwrap(),
    );
    let texts: Vec<String> = (0..6)
        .map(|i| {
            format!(
                "Note {i}: seen by Dr. Margaret Okonkwo at Briarwood on 4/9/1961, lives at \
                 {i}4 Elm Hollow Rd, Dunmore. {}",
                "Plan: continue current care. ".repeat(i * 4)
            )
        })
        .collect();
    let expected: Vec<Vec<Finding>> = texts
        .iter()
        .map(|t| one.detect(t, &BTreeMap::new()).unwrap())
        .collect();
    assert!(expected.iter().all(|f| !f.is_empty()));
    // Every thread runs every text, so runs overlap on all three sessions.
    let threads: Vec<_> = (0..4)
        .map(|k| {
            let (c, texts) = (several.clone(), texts.clone());
            std::thread::spawn(move || {
                (0..texts.len())
                    .map(|i| {
                        let i = (i + k) % texts.len();
                        (i, c.detect(&texts[i], &BTreeMap::new()).unwrap())
                    })
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    for t in threads {
        for (i, found) in t.join().unwrap() {
            assert_eq!(found, expected[i], "text {i}");
        }
    }
}

#[test]
fn a_corrupt_model_is_refused() {
    let dir = model_dir();
    let tmp = tempfile::tempdir().unwrap();
    for f in [
        "model.onnx",
        "tokenizer.json",
        "manifest.toml",
        "decoding.toml",
        "drugs.txt",
        "demonyms.txt",
        "words.txt",
        "near_names.txt",
    ] {
        std::fs::copy(dir.join(f), tmp.path().join(f)).unwrap();
    }
    let model = tmp.path().join("model.onnx");
    let mut bytes = std::fs::read(&model).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 1;
    std::fs::write(&model, bytes).unwrap();
    let err = Classifier::load(&config(tmp.path()))
        .unwrap_err()
        .to_string();
    assert!(err.contains("checksum mismatch"), "{err}");

    std::fs::copy(dir.join("model.onnx"), &model).unwrap();
    std::fs::remove_file(tmp.path().join("tokenizer.json")).unwrap();
    let err = Classifier::load(&config(tmp.path()))
        .unwrap_err()
        .to_string();
    assert!(err.contains("tokenizer.json"), "{err}");

    // The drug lexicon is checked too: a word slipped into it could silence a name.
    std::fs::copy(
        dir.join("tokenizer.json"),
        tmp.path().join("tokenizer.json"),
    )
    .unwrap();
    // So is the word lexicon, for the same reason.
    // And the near-name list, which keeps misspellings that could be names from counting as words.
    for (file, word) in [
        ("drugs.txt", "smith\n"),
        ("words.txt", "okonkwo\n"),
        ("near_names.txt", "daughter\n"),
        (
            "decoding.toml",
            "# a list edited without its new checksum\n",
        ),
        ("demonyms.txt", "okonkwo\n"),
    ] {
        let path = tmp.path().join(file);
        let mut text = std::fs::read_to_string(&path).unwrap();
        text.push_str(word);
        std::fs::write(&path, text).unwrap();
        let err = Classifier::load(&config(tmp.path()))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("checksum mismatch") && err.contains(file),
            "{err}"
        );
        std::fs::copy(dir.join(file), &path).unwrap();
    }
    Classifier::load(&config(tmp.path())).expect("restored files load");
}

/// The shipped model loaded from `tmp` with its manifest passed through `edit`.
fn load_with(tmp: &Path, edit: impl Fn(&str) -> String) -> Classifier {
    let dir = model_dir();
    for f in [
        "model.onnx",
        "tokenizer.json",
        "decoding.toml",
        "drugs.txt",
        "demonyms.txt",
        "words.txt",
        "near_names.txt",
    ] {
        std::fs::copy(dir.join(f), tmp.join(f)).unwrap();
    }
    let manifest = std::fs::read_to_string(dir.join("manifest.toml")).unwrap();
    std::fs::write(tmp.join("manifest.toml"), edit(&manifest)).unwrap();
    Classifier::load(&config(tmp)).unwrap()
}

/// The shipped model loaded from `tmp` with a manifest without its `key` lexicon lines.
fn load_without(tmp: &Path, key: &str) -> Classifier {
    load_with(tmp, |manifest| {
        manifest
            .lines()
            .filter(|l| !l.starts_with(key))
            .map(|l| format!("{l}\n"))
            .collect()
    })
}

#[test]
fn text_that_does_not_capitalise_words_gets_the_caseless_thresholds() {
    // Invented text, one sentence written twice: with case, and all caps, where the uncased
    // model has no case to go by and the manifest may ask for more certainty.
    let (cased, caseless) = ("move Tove to the late shift", "MOVE TOVE TO THE LATE SHIFT");
    let tmp = tempfile::tempdir().unwrap();
    let c = load_with(tmp.path(), |manifest| {
        let mut m: toml::Table = toml::from_str(manifest).unwrap();
        let mut table = toml::Table::new();
        table.insert("PERSON".to_owned(), toml::Value::Float(0.99));
        m.insert("caseless_thresholds".to_owned(), toml::Value::Table(table));
        toml::to_string(&m).unwrap()
    });
    let shipped = manifest(&model_dir()).thresholds["PERSON"];
    assert_eq!(c.threshold(&EntityType::Person, cased), Some(shipped));
    assert_eq!(c.threshold(&EntityType::Person, caseless), Some(0.99));
    let none = BTreeMap::new();
    // The uncased model scores "Tove" and "TOVE" alike (0.43 with v9), between the two.
    assert_eq!(persons(cased, &c.detect(cased, &none).unwrap()), ["Tove"]);
    assert!(persons(caseless, &c.detect(caseless, &none).unwrap()).is_empty());
    // A policy's threshold replaces both.
    let policy = BTreeMap::from([(EntityType::Person, shipped)]);
    assert_eq!(
        persons(caseless, &c.detect(caseless, &policy).unwrap()),
        ["TOVE"]
    );
}

#[test]
fn plain_words_are_never_names_where_case_cannot_tell() {
    // An all-caps note and an all-lower-case one: the model cannot see that "MOTEL" or
    // "wheezy" is not written like a name or place. Invented text.
    let texts = [
        "WIFE BROUGHT BLANKETS. PT TIRED AND WHEEZY, STAYS IN A MOTEL WHEN NOT HERE.",
        "pt wheezy overnight, says she stays at a motel near her sister.",
    ];
    let hits = |c: &Classifier| {
        texts
            .iter()
            .map(|t| {
                c.detect(t, &BTreeMap::new())
                    .unwrap()
                    .iter()
                    .filter(|f| matches!(f.entity, EntityType::Person | EntityType::Location))
                    .count()
            })
            .sum::<usize>()
    };
    // Without the word lexicon this model finds names or places here (if a new model stops
    // doing so, pick a text where it still does).
    let tmp = tempfile::tempdir().unwrap();
    assert!(
        hits(&load_without(tmp.path(), "word_lexicon")) > 0,
        "the example no longer exercises the rule"
    );
    assert_eq!(hits(&load()), 0);
    // A name that is not a plain word is still found in the same kind of note.
    let text = "WIFE BROUGHT BLANKETS. PT TIRED AND WHEEZY. WIFE OKONKWO AT BEDSIDE.";
    let found = load().detect(text, &BTreeMap::new()).unwrap();
    assert!(covered(text, &found, &EntityType::Person, "OKONKWO"));
}

#[test]
fn nationality_ethnicity_and_language_words_are_never_places_or_names() {
    // Invented text, in the way clinical questions describe patients.
    let text = "55 year old African American male with chest pain; a Hispanic female visitor \
                speaks Cantonese. He lives in Chicago with John Smith.";
    let places_or_names = |c: &Classifier| -> Vec<String> {
        c.detect(text, &BTreeMap::new())
            .unwrap()
            .iter()
            .filter(|f| matches!(f.entity, EntityType::Person | EntityType::Location))
            .map(|f| text[f.start..f.end].to_owned())
            .collect()
    };
    // Without the lexicon this model calls "African American male" a place (if a new model
    // stops doing so, pick a text where it still does).
    let tmp = tempfile::tempdir().unwrap();
    let without = places_or_names(&load_without(tmp.path(), "demonym_lexicon"));
    assert!(
        without.iter().any(|s| s.contains("African American")),
        "the example no longer exercises the rule: {without:?}"
    );
    let with = places_or_names(&load());
    for word in ["African", "American", "Hispanic", "Cantonese"] {
        assert!(!with.iter().any(|s| s.contains(word)), "{word}: {with:?}");
    }
    // The real place and name in the same text are still found.
    let found = load().detect(text, &BTreeMap::new()).unwrap();
    assert!(covered(text, &found, &EntityType::Location, "Chicago"));
    assert!(covered(text, &found, &EntityType::Person, "John Smith"));
}

#[test]
fn misspelt_words_are_no_names_where_case_cannot_tell() {
    // Hurried all-caps notes misspell words, and the model reads the slips as names or places.
    // Invented text.
    let texts = [
        "PT'S STEP DUAGHTER CALLED, WILL VISIT TOMRROW. PT RESTING.",
        "PT SEVERLY SOB, MEMEBERS OF FAMILY AT BEDSIDE. PRIAMRY CARE MD CALLED.",
    ];
    let found = |c: &Classifier| -> Vec<String> {
        texts
            .iter()
            .flat_map(|t| {
                c.detect(t, &BTreeMap::new())
                    .unwrap()
                    .into_iter()
                    .map(|f| t[f.start..f.end].to_owned())
            })
            .collect()
    };
    let tmp = tempfile::tempdir().unwrap();
    let without = found(&load_without(tmp.path(), "near_name_lexicon"));
    assert!(
        without.len() >= 4,
        "the example no longer exercises the rule: {without:?}"
    );
    assert_eq!(found(&load()), Vec::<String>::new());
    // A name next to a misspelt relation is still found, and so is a name one slip away from a
    // plain word ("Fletcher" ~ "fetcher", which the near-name list holds).
    let text = "SOCIAL: DAUGTHER FLETCHER CALLED. SON OKONKWO VISITED.";
    let found = load().detect(text, &BTreeMap::new()).unwrap();
    for name in ["FLETCHER", "OKONKWO"] {
        assert!(covered(text, &found, &EntityType::Person, name), "{name}");
    }
}

#[test]
fn a_facility_is_masked_by_its_name_not_its_noun() {
    // Invented facilities: the name is found, the generic noun after it is left readable.
    for (text, name, noun) in [
        (
            "Pt transferred from Ashbury Memorial Hospital yesterday for cath.",
            "Ashbury Memorial",
            "Hospital",
        ),
        (
            "PT ADMITTED FROM KELLNER HOUSE AFTER A FALL.",
            "KELLNER",
            "HOUSE",
        ),
        (
            "Will go to Brookfield Rehab tomorrow.",
            "Brookfield",
            "Rehab",
        ),
    ] {
        let found = load().detect(text, &BTreeMap::new()).unwrap();
        assert!(covered(text, &found, &EntityType::Location, name), "{text}");
        let at = text.find(noun).unwrap();
        assert!(
            !found.iter().any(|f| f.start <= at && at < f.end),
            "{noun} in {text}: {found:?}"
        );
    }
}

#[test]
fn the_word_lexicon_holds_charting_abbreviations_but_no_names() {
    // training/word_lexicon.py adds the abbreviations the generator teaches as non-entities
    // ("NGT", "NKDA", "PERRLA") and removes every name and place Faker knows, abbreviations
    // included ("HO" is a surname, "LIMA" a city).
    let words: std::collections::HashSet<String> =
        std::fs::read_to_string(model_dir().join("words.txt"))
            .unwrap()
            .lines()
            .filter(|l| !l.starts_with('#'))
            .map(str::to_owned)
            .collect();
    for w in ["ngt", "nkda", "perrla", "cabg", "simv", "wheezy"] {
        assert!(words.contains(w), "{w} missing");
    }
    for w in ["ho", "lima", "lad", "smith", "baltimore"] {
        assert!(!words.contains(w), "{w} is a name or place");
    }
}

#[test]
fn drug_names_are_never_people_or_places() {
    // (v2 read drugs in "LASIX---COUMADIN" lists as names; v5 learned those lists, so the
    // example is brand names in prose.)
    let text =
        "Family asked about Xarelto vs Eliquis. Pt takes Januvia, Farxiga and Jardiance at home.";
    let drugs = ["Xarelto", "Eliquis", "Januvia", "Farxiga", "Jardiance"];
    let hits = |c: &Classifier| {
        let found = c.detect(text, &BTreeMap::new()).unwrap();
        drugs
            .iter()
            .filter(|d| {
                [EntityType::Person, EntityType::Location]
                    .iter()
                    .any(|e| covered(text, &found, e, d))
            })
            .count()
    };
    // Without the lexicon this model reads some of these drugs as names or places (that is
    // what the rule is for; if a new model stops doing so, pick a text where it still does).
    let tmp = tempfile::tempdir().unwrap();
    let bare = load_without(tmp.path(), "drug_lexicon");
    assert!(hits(&bare) > 0, "the example no longer exercises the rule");
    assert_eq!(hits(&load()), 0);
}

#[test]
fn scores_do_not_depend_on_the_cpu() {
    // The model's integer products must come out the same on every x86 CPU. ONNX Runtime runs
    // uint8 x int8 products without VNNI (AVX2, AVX-512 before Cascade Lake, AMD before Zen 4)
    // with an instruction that saturates at 16 bits; v5 stored int8 weights and lost 0.9 points
    // of physionet recall on such a CPU. The shipped weights are uint8 (training/export.py,
    // `portable_weights`), whose kernels are exact everywhere; on CPUs with VNNI, `Auto` turns
    // them back into int8 for speed, which must not change a score either. These scores are that
    // exact arithmetic (v9). With v5's int8 weights an AMD EPYC (AVX2) gave scores up to 0.01 off
    // v5.1's exact ones (measured 2026-12-03). Invented text. A new model needs new values here.
    let dir = repo().join("models/classifier");
    assert_eq!(
        manifest(&dir).version,
        "veil-ner-minilm-L3-int8-v9.2",
        "the expected scores below belong to v9's weights (v9.1: v9 with caseless thresholds; v9.2: v9.1 with the decoding rules of issue 26)"
    );
    let text = "Please summarize the visit of Anneliese Kowalczyk (DOB 4/9/1961) at Briarwood \
                Clinic, 14 Elm Hollow Rd, Dunmore, on the 3rd of May.";
    let expected = [
        ("Anneliese Kowalczyk", EntityType::Person, 0.99968),
        // The facility noun stays outside the span (decoding step 6d); the score is the span's.
        ("Briarwood", EntityType::Location, 0.95328),
        // The comma the model tags after the town is trimmed (decoding step 6a).
        ("14 Elm Hollow Rd, Dunmore", EntityType::Address, 0.96543),
        ("4/9/1961", EntityType::Date, 0.99971),
        ("the 3rd of May", EntityType::Date, 0.99971),
    ];
    for choice in [Weights::Auto, Weights::Portable] {
        let c = Classifier::load(&ClassifierConfig {
            weights: choice,
            ..config(&dir)
        })
        .unwrap();
        let found = c.detect(text, &BTreeMap::new()).unwrap();
        for (needle, entity, score) in &expected {
            let f = found
                .iter()
                .find(|f| &text[f.start..f.end] == *needle && f.entity == *entity)
                .unwrap_or_else(|| {
                    panic!("{choice:?}: {needle} ({entity:?}) not found: {found:?}")
                });
            assert!(
                (f.score - score).abs() < 0.002,
                "{choice:?}: {needle}: score {} where the exact arithmetic gives {score}",
                f.score
            );
        }
    }
}

#[test]
fn weak_names_used_by_the_policy_test_score_between_threshold_and_min_score() {
    // tests/api/classifier.rs `weak_names_count_for_the_policy` needs names the model reports
    // above its PERSON threshold but below the rules' min_score (raw). A new model needs new names.
    let dir = repo().join("models/classifier");
    assert_eq!(manifest(&dir).version, "veil-ner-minilm-L3-int8-v9.2");
    let c = Classifier::load(&config(&dir)).unwrap();
    for (text, name, below) in [
        ("move Tove to the late shift", "Tove", 0.5),
        ("move Gülter to the late shift", "Gülter", 0.6),
    ] {
        let threshold = c.threshold(&EntityType::Person, text).unwrap();
        let found = c.detect(text, &BTreeMap::new()).unwrap();
        let f = found
            .iter()
            .find(|f| &text[f.start..f.end] == name && f.entity == EntityType::Person)
            .unwrap_or_else(|| panic!("{name} not found: {found:?}"));
        assert!(
            f.score >= threshold && f.score < below,
            "{name}: {}",
            f.score
        );
    }
}

#[test]
fn every_quantized_weight_of_the_shipped_model_can_be_made_int8() {
    // On VNNI CPUs the classifier rewrites the shipped uint8 weights as int8 (2x faster there).
    // If a new export stopped matching what the rewrite expects, it would silently fall back to
    // the slow kernels: pin the count. Per layer: QAttention and three MatMulInteger, each with
    // a weight and a zero point; plus the classification head.
    let dir = repo().join("models/classifier");
    let mut model = std::fs::read(dir.join("model.onnx")).unwrap();
    let original = model.clone();
    let changed = weights::to_signed(&mut model).unwrap();
    assert_eq!(changed, 3 * 8 + 2);
    assert_eq!(model.len(), original.len());
    let differing = model.iter().zip(&original).filter(|(a, b)| a != b).count();
    assert!(
        differing > 1_000_000 && differing < original.len() / 2,
        "{differing} bytes changed"
    );
    // A second pass finds int8 weights, refuses, and changes nothing.
    let once = model.clone();
    assert!(weights::to_signed(&mut model).is_err());
    assert_eq!(model, once);
}

/// `fixtures/classifier/rules.toml`: one case per decoding rule.
#[derive(serde::Deserialize)]
struct RuleCases {
    rule: Vec<RuleCase>,
}

#[derive(serde::Deserialize)]
struct RuleCase {
    id: String,
    text: String,
    on: Vec<(String, String)>,
    off: Vec<(String, String)>,
}

#[test]
fn every_decoding_rule_changes_the_output_of_its_fixture_when_switched_off() {
    let cases: RuleCases = toml::from_str(
        &std::fs::read_to_string(repo().join("fixtures/classifier/rules.toml")).unwrap(),
    )
    .unwrap();
    let c = load();
    let typed = |text: &str, found: &[Finding]| -> Vec<(String, String)> {
        found
            .iter()
            .map(|f| {
                (
                    f.entity.as_str().to_owned(),
                    text[f.start..f.end].to_owned(),
                )
            })
            .collect()
    };
    for (i, rule) in RULES.iter().enumerate() {
        let case = cases
            .rule
            .iter()
            .find(|case| case.id == rule.id)
            .unwrap_or_else(|| panic!("rule {} has no case in rules.toml", rule.id));
        let scores = c.word_scores(&case.text).unwrap();
        let with = c.decode(&case.text, &scores, &BTreeMap::new(), RuleSet::all());
        let without = c.decode(
            &case.text,
            &scores,
            &BTreeMap::new(),
            RuleSet::all().and_without(i),
        );
        assert_ne!(
            with, without,
            "{}: switching it off changes nothing",
            rule.id
        );
        assert_eq!(
            typed(&case.text, &with),
            case.on,
            "{}: with every rule",
            rule.id
        );
        assert_eq!(
            typed(&case.text, &without),
            case.off,
            "{}: without it",
            rule.id
        );
        // Switched off by id, as configuration and `veil scan --rules-off` do.
        assert_eq!(
            RuleSet::without(&[rule.id]).unwrap(),
            RuleSet::all().and_without(i)
        );
    }
    for case in &cases.rule {
        assert!(
            RULES.iter().any(|r| r.id == case.id),
            "rules.toml names no rule {}",
            case.id
        );
    }
    assert!(RuleSet::without(&["no_such_rule"]).is_err());
}

#[test]
fn decoding_stored_word_scores_gives_what_detect_gives() {
    let c = load();
    let text = "Seen by Dr. Varga at Calvert Hospital on 4/9/1961; wife Ann at bedside.";
    let scores = c.word_scores(text).unwrap();
    // Through JSON and back, as `veil scan --word-scores-out` / `--word-scores-in` do.
    let stored: WordScores =
        serde_json::from_str(&serde_json::to_string(&scores).unwrap()).unwrap();
    assert!(c.fits(&stored));
    assert_eq!(
        c.decode(text, &stored, &BTreeMap::new(), c.rules()),
        c.detect(text, &BTreeMap::new()).unwrap()
    );
}

/// Detectors over the shipped model, with or without a segment cache.
fn detectors(cache: Option<SegmentCache>) -> Detectors {
    Detectors::new(
        PatternDetector::new(&PatternConfig::default()).unwrap(),
        ClassifierState::Loaded(Arc::new(load())),
        BTreeMap::new(),
        &[],
    )
    .with_cache(cache)
}

/// The classifier's findings in a chat of user `messages`, read message by message as the
/// server reads them with the segment cache, and the joined document they point into.
fn read_messages(d: &Detectors, messages: &[&str], tenant: &str) -> (String, Vec<Finding>) {
    let body = serde_json::json!({"messages": messages
        .iter()
        .map(|m| serde_json::json!({"role": "user", "content": m}))
        .collect::<Vec<_>>()});
    let extracted = veil::extract::chat(&body, 64);
    let (doc, starts) = extracted.joined();
    let readings = veil::scan::readings(&extracted, &doc, &starts, true);
    let found = d.detect_readings(&doc, &readings, tenant).unwrap();
    (doc, found)
}

#[test]
fn readings_from_the_cache_give_exactly_what_a_fresh_scan_gives() {
    let messages = [
        "Please summarise the visit of Anneliese Kowalczyk at Briarwood Clinic.",
        "She was seen on the 3rd of May by Dr. Varga; her daughter Marisol came too.",
        "What follow-up does a patient from Dunmore need after a knee replacement?",
    ];
    let (doc, fresh) = read_messages(&detectors(None), &messages, "t1");
    assert!(
        fresh.iter().any(|f| &doc[f.start..f.end] == "Marisol"),
        "offsets are in the joined document: {fresh:?}"
    );
    let cached = detectors(SegmentCache::new(16, std::time::Duration::from_secs(600)));
    let (_, first) = read_messages(&cached, &messages, "t1");
    let cache = cached.cache.as_ref().unwrap();
    assert_eq!(cache.len("t1"), 3, "one entry per message");
    let (_, second) = read_messages(&cached, &messages, "t1");
    assert_eq!(first, fresh);
    assert_eq!(second, fresh, "from the cache, identical to a fresh scan");
    // The next turn resends the history and adds one message: only that one is new.
    let longer = [
        messages[0],
        messages[1],
        messages[2],
        "Is physiotherapy in Dunmore covered?",
    ];
    let (_, next) = read_messages(&cached, &longer, "t1");
    assert_eq!(cache.len("t1"), 4);
    assert_eq!(next, read_messages(&detectors(None), &longer, "t1").1);
    // Messages resent after other text are read with other context: new entries, not hits
    // (the first has none now; the second's reached back into the message now gone).
    let moved = [messages[1], messages[2]];
    let (_, found) = read_messages(&cached, &moved, "t1");
    assert_eq!(cache.len("t1"), 6);
    assert_eq!(found, read_messages(&detectors(None), &moved, "t1").1);
    // Another tenant's map is its own.
    assert!(cache.is_empty("t2"));
    assert_eq!(read_messages(&cached, &messages, "t2").1, fresh);
    assert_eq!(cache.len("t2"), 3);
}

#[test]
fn a_reloaded_snapshot_starts_with_an_empty_cache() {
    let dir = repo();
    let config = veil::config::Config::parse(
        &dir.join("veil.toml"),
        &format!(
            "[policies]\ndir = {:?}\n[detect]\ncache_entries = 64\n",
            dir.join("policies")
        ),
    )
    .unwrap();
    let classifier = ClassifierState::Loaded(Arc::new(load()));
    let build = || {
        veil::snapshot::Snapshot::build(
            &config,
            &classifier,
            veil::audit::ValueDigester::new(b"test key"),
            |_| None,
        )
        .unwrap()
    };
    let text = "Please summarise the visit of Anneliese Kowalczyk.";
    let old = build();
    let set = old.policies.get("default").unwrap();
    let whole = vec![veil::scan::Reading::bare(0..text.len())];
    set.detectors.detect_readings(text, &whole, "t1").unwrap();
    assert_eq!(set.detectors.cache.as_ref().unwrap().len("t1"), 1);
    let new = build();
    let set = new.policies.get("default").unwrap();
    assert!(set.detectors.cache.as_ref().unwrap().is_empty("t1"));
}
