//! Scanning: runs the detectors over a request's joined text and maps every finding back to the
//! segments it covers.
//!
//! A classifier error, a detector panic or a timeout (the last two caught by the server) never
//! lets a request through unscanned: the result says `failed`, and the policy's
//! `on_detector_error` action applies.

use std::ops::Range;
use std::sync::Arc;
use std::time::{Duration, Instant};

use std::collections::{BTreeMap, HashSet};

use crate::detect::classifier::cache::SegmentCache;
use crate::detect::classifier::decode::WordScores;
use crate::detect::classifier::rules::RuleSet;
use crate::detect::classifier::{Classifier, ClassifierError};
use crate::detect::{EntityType, Finding, PatternDetector};
use crate::extract::Extracted;

/// The classifier as the process has it.
#[derive(Debug, Clone)]
pub enum ClassifierState {
    /// Not configured: patterns only.
    Disabled,
    /// Loaded and verified.
    Loaded(Arc<Classifier>),
    /// Configured but not loadable, and configured to treat requests as unscannable.
    Unavailable(String),
}

/// The detectors one policy uses, built once per snapshot.
#[derive(Debug)]
pub struct Detectors {
    /// Patterns, validators and the policy's dictionaries.
    pub patterns: PatternDetector,
    /// The shared classifier.
    pub classifier: ClassifierState,
    /// The policy's classifier thresholds.
    pub thresholds: BTreeMap<EntityType, f32>,
    /// The policy's allow list, lower-cased: classifier findings equal to a term are dropped.
    pub allow: HashSet<String>,
    /// Classifier findings by message, per tenant (`detect.cache_entries`; the server's and the
    /// review commands' detectors only).
    pub cache: Option<SegmentCache>,
}

impl Detectors {
    /// Builds the detectors for one policy.
    pub fn new(
        patterns: PatternDetector,
        classifier: ClassifierState,
        thresholds: BTreeMap<EntityType, f32>,
        allow: &[String],
    ) -> Self {
        Self {
            patterns,
            classifier,
            thresholds,
            allow: allow.iter().map(|t| t.to_lowercase()).collect(),
            cache: None,
        }
    }

    /// These detectors, remembering classifier findings by message in `cache`.
    pub fn with_cache(self, cache: Option<SegmentCache>) -> Self {
        Self { cache, ..self }
    }

    /// Every finding in `text`: pattern findings, then classifier findings, sorted by start.
    /// Overlaps are kept (each counts for the policy); redaction covers their union.
    /// Classifier scores are reported on the policy scale ([`on_policy_scale`]).
    pub fn detect(&self, text: &str) -> Result<Vec<Finding>, ClassifierError> {
        self.merged(text, text.len(), |c, text| c.detect(text, &self.thresholds))
    }

    /// Like [`Self::detect`], with the classifier's word scores for `text` given (read back
    /// from `veil scan --word-scores-out`) and the decoding rules chosen: how `veil scan`
    /// measures rules and thresholds without running the model again.
    pub fn detect_scored(
        &self,
        text: &str,
        scores: &WordScores,
        rules: RuleSet,
    ) -> Result<Vec<Finding>, ClassifierError> {
        self.merged(text, text.len(), |c, text| {
            Ok(c.decode(text, scores, &self.thresholds, rules))
        })
    }

    /// Like [`Self::detect`] for a request's joined document: the classifier reads each of
    /// `readings` as a text of its own, taking the findings of a reading it has done before for
    /// `tenant` from the cache. The pattern tier reads the whole document every time (values
    /// split across segments are its business, and it is cheap).
    pub fn detect_readings(
        &self,
        text: &str,
        readings: &[Reading],
        tenant: &str,
    ) -> Result<Vec<Finding>, ClassifierError> {
        let mut findings = self.patterns.detect(text);
        if self.classifier_loaded() {
            findings.extend(self.classify_readings(text, readings, tenant)?.0);
            findings.sort_by(|a, b| a.start.cmp(&b.start).then(b.end.cmp(&a.end)));
        }
        Ok(findings)
    }

    /// The classifier's findings in `readings` of `text` (offsets in `text`), from the cache
    /// where it has them, and how many readings ran the model; nothing when the classifier is
    /// not loaded.
    fn classify_readings(
        &self,
        text: &str,
        readings: &[Reading],
        tenant: &str,
    ) -> Result<(Vec<Finding>, usize), ClassifierError> {
        let ClassifierState::Loaded(c) = &self.classifier else {
            return Ok((Vec::new(), 0));
        };
        let mut findings = Vec::new();
        let mut ran = 0;
        for reading in readings {
            let Some(read) = text.get(reading.from..reading.to) else {
                continue;
            };
            let context = reading.own.saturating_sub(reading.from);
            let mut fresh = || -> Result<Arc<Vec<Finding>>, ClassifierError> {
                ran += 1;
                let mut found = self.classified(c, read, |c, t| c.detect(t, &self.thresholds))?;
                // Context is read for the model's sake; what lies wholly in it is the message
                // before's to report.
                found.retain(|f| f.end > context);
                for f in &mut found {
                    f.start = f.start.max(context);
                }
                Ok(Arc::new(found))
            };
            let found = match &self.cache {
                Some(cache) => {
                    let digest = cache.digest(&(context as u64).to_le_bytes(), read);
                    match cache.get(tenant, &digest) {
                        Some(found) => found,
                        None => {
                            let found = fresh()?;
                            cache.put(tenant, digest, found.clone());
                            found
                        }
                    }
                }
                None => fresh()?,
            };
            findings.extend(found.iter().map(|f| Finding {
                start: f.start + reading.from,
                end: f.end + reading.from,
                ..f.clone()
            }));
        }
        Ok((findings, ran))
    }

    /// Pattern findings, then what `classify` finds in `text[..prose_end]` (when the classifier
    /// is loaded); sorted by start.
    fn merged(
        &self,
        text: &str,
        prose_end: usize,
        classify: impl FnOnce(&Classifier, &str) -> Result<Vec<Finding>, ClassifierError>,
    ) -> Result<Vec<Finding>, ClassifierError> {
        let mut findings = self.patterns.detect(text);
        if let ClassifierState::Loaded(c) = &self.classifier {
            let text = text.get(..prose_end).unwrap_or(text);
            findings.extend(self.classified(c, text, classify)?);
            findings.sort_by(|a, b| a.start.cmp(&b.start).then(b.end.cmp(&a.end)));
        }
        Ok(findings)
    }

    /// What `classify` finds in `text`, minus the policy's allowed terms, on the policy scale.
    fn classified(
        &self,
        c: &Classifier,
        text: &str,
        classify: impl FnOnce(&Classifier, &str) -> Result<Vec<Finding>, ClassifierError>,
    ) -> Result<Vec<Finding>, ClassifierError> {
        Ok(classify(c, text)?
            .into_iter()
            .filter(|f| {
                let value = text.get(f.start..f.end).unwrap_or_default();
                !self.allow.contains(&value.to_lowercase())
            })
            .map(|mut f| {
                let threshold = self
                    .thresholds
                    .get(&f.entity)
                    .copied()
                    .or_else(|| c.threshold(&f.entity, text));
                if let Some(t) = threshold {
                    f.score = on_policy_scale(f.score, t);
                }
                f
            })
            .collect())
    }

    /// Whether the classifier runs.
    pub fn classifier_loaded(&self) -> bool {
        matches!(self.classifier, ClassifierState::Loaded(_))
    }

    /// Whether every request must be treated as unscannable (classifier configured but missing).
    pub fn unavailable(&self) -> bool {
        matches!(self.classifier, ClassifierState::Unavailable(_))
    }

    /// Versions of the detectors, for the audit record.
    pub fn versions(&self) -> Vec<String> {
        let mut v = vec![self.patterns.version().to_owned()];
        if let ClassifierState::Loaded(c) = &self.classifier {
            v.push(c.version().to_owned());
        }
        v
    }
}

/// A classifier score on the policy scale: the type's threshold — the model's operating point,
/// where it starts reporting the type, chosen per type for recall — maps to 0.5 and certainty to
/// 1, linearly; a reported span below its threshold (grown by hysteresis) counts as 0.5. Rules
/// compare every finding with one `min_score` (0.5 by default), while the thresholds differ by
/// type (PERSON 0.1, LOCATION 0.1, DATE 0.85 for v9.2 in cased text): on the model's raw scores
/// a rule's 0.5 would silently drop the weaker names and places the thresholds were chosen to
/// report.
pub fn on_policy_scale(score: f32, threshold: f32) -> f32 {
    if !(0.0..1.0).contains(&threshold) {
        return score;
    }
    let above = ((score - threshold) / (1.0 - threshold)).clamp(0.0, 1.0);
    0.5 + 0.5 * above
}

/// The part of a finding that falls inside one segment (byte offsets within that segment).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Piece {
    /// Segment index.
    pub segment: usize,
    /// Start byte within the segment.
    pub start: usize,
    /// End byte within the segment.
    pub end: usize,
}

/// A request after detection.
#[derive(Debug)]
pub struct Scanned {
    /// What was scanned.
    pub extracted: Extracted,
    /// Findings, with offsets in the joined document.
    pub findings: Vec<Finding>,
    /// For each finding, the segment pieces it covers.
    pub pieces: Vec<Vec<Piece>>,
    /// Detection failed or timed out: nothing may be allowed on the strength of this scan.
    pub failed: bool,
    /// The classifier is configured but unavailable: the request counts as unscannable.
    pub classifier_unavailable: bool,
    /// Time spent.
    pub elapsed: Duration,
}

impl Scanned {
    /// The result of a detection that did not finish (timed out or crashed): no findings, and
    /// nothing may be allowed on the strength of it.
    pub fn failed(extracted: Extracted, elapsed: Duration) -> Self {
        Self {
            extracted,
            findings: Vec::new(),
            pieces: Vec::new(),
            failed: true,
            classifier_unavailable: false,
            elapsed,
        }
    }
}

/// Detects in everything extracted from one request, on the calling thread, and maps every
/// finding back to the segments it covers. A classifier error fails the scan (the policy's
/// `on_detector_error` applies); the server bounds this call in time and catches panics.
pub fn scan(detectors: &Detectors, mut extracted: Extracted, tenant: &str) -> Scanned {
    let started = Instant::now();
    let (doc, starts) = extracted.joined();
    let lens: Vec<usize> = extracted.segments.iter().map(|s| s.text.len()).collect();
    let classifier_unavailable = detectors.unavailable();
    let readings = readings(&extracted, &doc, &starts, detectors.cache.is_some());
    let findings = match detectors.detect_readings(&doc, &readings, tenant) {
        Ok(mut findings) => {
            findings.extend(across_seams(detectors, &extracted, &starts, &findings));
            drop_model_versions(&extracted, &starts, &mut findings);
            findings.sort_by(|a, b| a.start.cmp(&b.start).then(b.end.cmp(&a.end)));
            // The classifier reads Latin-script text; names in other scripts go unseen.
            if detectors.classifier_loaded() && unsupported_script(&doc) {
                extracted.unscannable.push(crate::extract::Unscannable {
                    path: "*".to_owned(),
                    kind: "unsupported_script",
                });
            }
            // Large encoded blobs that do not decode cannot be scanned.
            for blob in crate::detect::opaque_blobs(&doc) {
                for p in pieces_of(blob.start, blob.end, &starts, &lens) {
                    if let Some(seg) = extracted.segments.get(p.segment) {
                        let path = crate::extract::render(&seg.location.path);
                        extracted.unscannable.push(crate::extract::Unscannable {
                            path,
                            kind: "opaque_blob",
                        });
                    }
                }
            }
            Some(findings)
        }
        Err(e) => {
            tracing::error!(error = %e, "classifier failed; applying on_detector_error");
            None
        }
    };
    let failed = findings.is_none();
    let findings = findings.unwrap_or_default();
    let pieces = findings
        .iter()
        .map(|f| pieces_of(f.start, f.end, &starts, &lens))
        .collect();
    metrics::histogram!("veil_scan_seconds").record(started.elapsed().as_secs_f64());
    Scanned {
        extracted,
        findings,
        pieces,
        failed,
        classifier_unavailable,
        elapsed: started.elapsed(),
    }
}

/// Reads the classifier would do for `extracted` and remembers for `tenant`, without deciding
/// anything: how the server prepares the next turn of a conversation (the upstream's answer,
/// which the client will send back as history) while the classifier is idle. Returns how
/// many readings ran the model; nothing runs without a cache or a classifier.
pub fn prime(
    detectors: &Detectors,
    extracted: &Extracted,
    tenant: &str,
) -> Result<usize, ClassifierError> {
    if detectors.cache.is_none() || !detectors.classifier_loaded() {
        return Ok(0);
    }
    let (doc, starts) = extracted.joined();
    let readings = readings(extracted, &doc, &starts, true);
    Ok(detectors.classify_readings(&doc, &readings, tenant)?.1)
}

/// One text the classifier reads on its own: `doc[from..to]`, of which `from..own` is context
/// (the end of the message before, so a short message is not read bare) and only findings
/// reaching past `own` count.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reading {
    /// Where the read text starts (context first).
    pub from: usize,
    /// Where the text whose findings count starts.
    pub own: usize,
    /// Where the read text ends.
    pub to: usize,
}

impl Reading {
    /// A reading of `range` with no context.
    pub fn bare(range: Range<usize>) -> Self {
        Self {
            from: range.start,
            own: range.start,
            to: range.end,
        }
    }
}

/// Bytes of the message before that a message is read with when messages are read one by one.
pub const CONTEXT: usize = 128;

/// The classifier's readings of a request's joined document. With the segment cache, one per
/// message (all its parts, tool-call names, arguments and keys together, so a JSON key keeps
/// its value beside it; each other top-level field likewise), preceded by up to [`CONTEXT`]
/// bytes of the text before it, cut at a word: what makes a message's findings reusable next
/// turn, when it is resent with the same text before it. Without the cache, all the prose at
/// once, as one text. A message's prose segments are consecutive in the document.
pub fn readings(
    extracted: &Extracted,
    doc: &str,
    starts: &[usize],
    per_message: bool,
) -> Vec<Reading> {
    let mut spans: Vec<(&[crate::extract::Step], Range<usize>)> = Vec::new();
    for (segment, &start) in extracted.segments.iter().zip(starts) {
        if !segment.prose {
            continue;
        }
        let path = &segment.location.path;
        let owner = match path.as_slice() {
            [
                crate::extract::Step::Key(k),
                crate::extract::Step::Index(_),
                ..,
            ] if k == "messages" => path.get(..2).unwrap_or_default(),
            _ => path.get(..1).unwrap_or_default(),
        };
        let end = start + segment.text.len();
        match spans.last_mut() {
            Some((last, range)) if *last == owner => range.end = end,
            _ => spans.push((owner, start..end)),
        }
    }
    let (Some((_, first)), Some((_, last))) = (spans.first(), spans.last()) else {
        return Vec::new();
    };
    if !per_message {
        return vec![Reading::bare(first.start..last.end)];
    }
    let is_message = |owner: &[crate::extract::Step]| matches!(owner.first(), Some(crate::extract::Step::Key(k)) if k == "messages");
    let mut context_from = None;
    spans
        .iter()
        .map(|(owner, range)| {
            // Only a message is read after the one before; other fields (tool definitions,
            // metadata) are read alone, so their reading does not change with every new turn.
            let floor = match (is_message(owner), context_from) {
                (false, _) => return Reading::bare(range.clone()),
                (true, None) => {
                    context_from = Some(range.start);
                    return Reading::bare(range.clone());
                }
                (true, Some(floor)) => floor,
            };
            let mut from = ceil_boundary(doc, range.start.saturating_sub(CONTEXT).max(floor));
            // Start the context at a word, not inside one.
            if from > floor && from < range.start {
                let before = doc.get(from..range.start).unwrap_or_default();
                from = before
                    .char_indices()
                    .find(|(_, c)| c.is_whitespace())
                    .map_or(range.start, |(i, c)| from + i + c.len_utf8());
            }
            Reading {
                from,
                own: range.start,
                to: range.end,
            }
        })
        .collect()
}

/// The smallest char boundary of `text` at or above `at`.
fn ceil_boundary(text: &str, mut at: usize) -> usize {
    while at < text.len() && !text.is_char_boundary(at) {
        at += 1;
    }
    at
}

/// Characters on each side of a boundary between two segments that are read together.
const SEAM: usize = 24;

/// Pattern findings that straddle the boundary between two consecutive message texts when they
/// are read with nothing between them: a value split across two messages or two text parts
/// (`536-22` and `-8745`) is the value. The joined document puts a space there, which already joins values
/// whose parts a space may separate (a spaced card number); this catches the rest.
fn across_seams(
    detectors: &Detectors,
    extracted: &Extracted,
    starts: &[usize],
    found: &[Finding],
) -> Vec<Finding> {
    let mut out = Vec::new();
    let segments = &extracted.segments;
    for (i, pair) in segments.windows(2).enumerate() {
        let [left, right] = pair else { continue };
        if !(left.location.is_message_text() && right.location.is_message_text()) {
            continue;
        }
        let tail_from = floor_boundary(&left.text, left.text.len().saturating_sub(SEAM));
        let head_to = floor_boundary(&right.text, SEAM.min(right.text.len()));
        let (Some(tail), Some(head)) = (left.text.get(tail_from..), right.text.get(..head_to))
        else {
            continue;
        };
        let (Some(&left_start), Some(&right_start)) = (starts.get(i), starts.get(i + 1)) else {
            continue;
        };
        let seam = format!("{tail}{head}");
        for f in detectors.patterns.detect(&seam) {
            if !(f.start < tail.len() && f.end > tail.len()) {
                continue;
            }
            let start = left_start + tail_from + f.start;
            let end = right_start + (f.end - tail.len());
            let known = found
                .iter()
                .chain(&out)
                .any(|g| g.entity == f.entity && g.start <= start && g.end >= end);
            if !known {
                out.push(Finding { start, end, ..f });
            }
        }
    }
    out
}

/// The largest char boundary of `text` at or below `at`.
fn floor_boundary(text: &str, mut at: usize) -> usize {
    while at > 0 && !text.is_char_boundary(at) {
        at -= 1;
    }
    at
}

/// Drops dates inside the model name's version suffix (`gpt-4o-2024-08-06`): a version, not a
/// date about anyone. Other findings in the model name stand.
fn drop_model_versions(extracted: &Extracted, starts: &[usize], findings: &mut Vec<Finding>) {
    for (seg, &start) in extracted.segments.iter().zip(starts) {
        if seg.prose || seg.location.path != [crate::extract::Step::Key("model".to_owned())] {
            continue;
        }
        let Some(suffix) = crate::extract::model_version_suffix(&seg.text) else {
            continue;
        };
        let (from, to) = (start + suffix, start + seg.text.len());
        findings.retain(|f| !(f.entity == EntityType::Date && f.start >= from && f.end <= to));
    }
}

/// Whether a meaningful share of the letters are outside the scripts the classifier reads
/// (Latin): at least 16 such letters and at least a fifth of all letters.
pub fn unsupported_script(text: &str) -> bool {
    let (mut letters, mut foreign) = (0usize, 0usize);
    for c in text.chars().filter(|c| c.is_alphabetic()) {
        letters += 1;
        // Latin: ASCII, Latin-1 Supplement, Latin Extended-A/B, IPA, Latin Extended Additional.
        let latin = c.is_ascii()
            || ('\u{00C0}'..='\u{024F}').contains(&c)
            || ('\u{1E00}'..='\u{1EFF}').contains(&c);
        if !latin {
            foreign += 1;
        }
    }
    foreign >= 16 && foreign * 5 >= letters
}

/// Splits a document range into the segments it overlaps.
fn pieces_of(start: usize, end: usize, starts: &[usize], lens: &[usize]) -> Vec<Piece> {
    starts
        .iter()
        .zip(lens)
        .enumerate()
        .filter_map(|(segment, (&s, &len))| {
            let lo = start.max(s);
            let hi = end.min(s + len);
            (lo < hi).then(|| Piece {
                segment,
                start: lo - s,
                end: hi - s,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_are_read_one_by_one_after_the_end_of_the_one_before() {
        let long = format!("{} — ends here.", "word ".repeat(40));
        let body = serde_json::json!({"model": "m", "tools": [{"type": "function",
            "function": {"name": "lookup", "description": "Finds a chart."}}], "messages": [
            {"role": "system", "content": long},
            {"role": "user", "content": [{"type": "text", "text": "Hi"}, {"type": "text", "text": "there"}]},
            {"role": "assistant", "content": null, "tool_calls": [{"id": "c1", "type": "function",
              "function": {"name": "charge", "arguments": "{\"pan\": \"x\"}"}}]},
        ]});
        let extracted = crate::extract::chat(&body, 64);
        let (doc, starts) = extracted.joined();
        let whole = readings(&extracted, &doc, &starts, false);
        let model_at = doc.rfind(" m").unwrap_or_default();
        assert_eq!(
            whole,
            vec![Reading::bare(0..model_at)],
            "all prose at once, no model"
        );
        let each = readings(&extracted, &doc, &starts, true);
        assert_eq!(each.len(), 4, "{each:?}");
        let text = |r: &Reading| (&doc[r.from..r.own], &doc[r.own..r.to]);
        assert_eq!(
            text(&each[0]),
            ("", "lookup Finds a chart."),
            "a field other than a message is read alone"
        );
        let each = &each[1..];
        assert_eq!(
            text(&each[0]),
            ("", long.as_str()),
            "the first message has no context"
        );
        let (context, own) = text(&each[1]);
        assert_eq!(own, "Hi there", "a message's parts together");
        assert!(context.ends_with("ends here. ") && context.len() <= CONTEXT);
        assert!(
            context.starts_with("word "),
            "context starts at a word: {context:?}"
        );
        let (context, own) = text(&each[2]);
        assert!(own.contains("charge") && own.contains("pan"));
        assert!(context.ends_with("Hi there "), "{context:?}");
        // Cut inside a multi-byte character: moved to the next boundary, never panics.
        let body = serde_json::json!({"messages": [
            {"role": "user", "content": "é".repeat(100)},
            {"role": "user", "content": "next"},
        ]});
        let extracted = crate::extract::chat(&body, 64);
        let (doc, starts) = extracted.joined();
        let each = readings(&extracted, &doc, &starts, true);
        assert_eq!(&doc[each[1].own..each[1].to], "next");
        assert!(doc.is_char_boundary(each[1].from));
    }

    #[test]
    fn scripts_the_classifier_cannot_read() {
        assert!(!unsupported_script(
            "Patient José Müller, née Łukasiewicz, seen in Zürich."
        ));
        assert!(!unsupported_script(
            "Lives in ΛΕΥΚΩΣΙΑ with her sister and two children."
        ));
        assert!(unsupported_script(
            "Пациент Иван Петров поступил в больницу вчера вечером."
        ));
        assert!(unsupported_script(
            "患者の山田太郎さんは昨日の夜に入院しました。診察を受けました。"
        ));
    }

    #[test]
    fn classifier_scores_meet_min_score_at_the_threshold() {
        // PERSON at 0.3: a name the model reports at 0.40 is above the operating point.
        assert!((on_policy_scale(0.3, 0.3) - 0.5).abs() < 1e-6);
        assert!((on_policy_scale(0.4, 0.3) - (0.5 + 0.5 / 7.0)).abs() < 1e-6);
        assert!((on_policy_scale(1.0, 0.3) - 1.0).abs() < 1e-6);
        // Grown by hysteresis below the threshold: still reported, so at the operating point.
        assert!((on_policy_scale(0.2, 0.3) - 0.5).abs() < 1e-6);
        // A threshold above 0.5 lowers a score (DATE 0.55: 0.55 -> 0.5).
        assert!((on_policy_scale(0.55, 0.55) - 0.5).abs() < 1e-6);
        // Order is kept.
        assert!(on_policy_scale(0.6, 0.1) < on_policy_scale(0.7, 0.1));
        // A degenerate threshold leaves the score alone.
        assert!((on_policy_scale(0.7, 1.0) - 0.7).abs() < 1e-6);
    }

    #[test]
    fn findings_split_across_segments() {
        // segments "ab" at 0 and "cd" at 3 ("ab cd")
        let p = pieces_of(1, 5, &[0, 3], &[2, 2]);
        assert_eq!(
            p,
            vec![
                Piece {
                    segment: 0,
                    start: 1,
                    end: 2
                },
                Piece {
                    segment: 1,
                    start: 0,
                    end: 2
                }
            ]
        );
        // only the separator: no piece
        assert!(pieces_of(2, 3, &[0, 3], &[2, 2]).is_empty());
    }
}
