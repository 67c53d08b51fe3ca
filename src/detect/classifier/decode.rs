//! Steps 4 and 5 of decoding: the word scores the model produced, and the spans a set of
//! thresholds makes of them. Word scores are what `veil scan --word-scores-out` writes and
//! `--word-scores-in` reads back, so thresholds and rules can be tried without running the model.

use serde::{Deserialize, Serialize};

/// One word (a run of word-pieces sharing a word id): byte offsets in the text and, per entity
/// type of the model (in manifest order), the mean `p(B-X)` and `p(I-X)` of its pieces.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Word {
    /// Start byte.
    pub start: usize,
    /// End byte.
    pub end: usize,
    /// `p(B-X)` per type.
    pub pb: Vec<f32>,
    /// `p(I-X)` per type.
    pub pi: Vec<f32>,
}

impl Word {
    /// This word gets no score for the type at index `k` (rules that say a word is never a name).
    pub(super) fn never(&mut self, k: usize) {
        for p in [&mut self.pb, &mut self.pi] {
            if let Some(v) = p.get_mut(k) {
                *v = 0.0;
            }
        }
    }
}

/// The model's output for one text: its words with their scores. Decoding needs nothing else.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct WordScores {
    /// Words in text order.
    pub words: Vec<Word>,
}

/// A decoded span: start, end, type index, score sum, words.
pub(super) type RawSpan = (usize, usize, usize, f32, usize);

/// Steps 4 to 5 of the decoding rules: entity words by threshold, grown by hysteresis
/// (`lows`, never across a line break), then spans.
pub(super) fn spans(text: &str, words: &[Word], thresholds: &[f32], lows: &[f32]) -> Vec<RawSpan> {
    let best: Vec<(usize, f32)> = words
        .iter()
        .map(|w| {
            w.pb.iter().zip(&w.pi).map(|(b, i)| b + i).enumerate().fold(
                (0, f32::MIN),
                |best, (k, s)| if s > best.1 { (k, s) } else { best },
            )
        })
        .collect();
    let mut mark: Vec<bool> = best
        .iter()
        .map(|&(k, s)| thresholds.get(k).is_some_and(|t| s >= *t))
        .collect();
    let joins = |mark: &[bool], j: usize, n: usize| -> bool {
        let (Some(&(kj, sj)), Some(&(kn, _))) = (best.get(j), best.get(n)) else {
            return false;
        };
        let (Some(wj), Some(wn)) = (words.get(j), words.get(n)) else {
            return false;
        };
        let gap = text
            .get(wj.end.min(wn.end)..wj.start.max(wn.start))
            .unwrap_or_default();
        !mark.get(j).copied().unwrap_or(true)
            && mark.get(n).copied().unwrap_or(false)
            && kj == kn
            && lows.get(kj).is_some_and(|l| sj >= *l)
            && !gap.contains('\n')
    };
    for j in 1..words.len() {
        if joins(&mark, j, j - 1)
            && let Some(m) = mark.get_mut(j)
        {
            *m = true;
        }
    }
    for j in (0..words.len().saturating_sub(1)).rev() {
        if joins(&mark, j, j + 1)
            && let Some(m) = mark.get_mut(j)
        {
            *m = true;
        }
    }
    let mut out = Vec::new();
    let mut open: Option<RawSpan> = None;
    for ((w, &(k, s)), &entity_word) in words.iter().zip(&best).zip(&mark) {
        if !entity_word {
            if let Some(span) = open.take() {
                out.push(span);
            }
            continue;
        }
        let continues = open.as_ref().is_some_and(|o| o.2 == k)
            && w.pi.get(k).copied().unwrap_or(0.0) >= w.pb.get(k).copied().unwrap_or(0.0);
        match (&mut open, continues) {
            (Some(o), true) => {
                o.1 = w.end;
                o.3 += s;
                o.4 += 1;
            }
            _ => {
                if let Some(span) = open.take() {
                    out.push(span);
                }
                open = Some((w.start, w.end, k, s, 1));
            }
        }
    }
    if let Some(span) = open {
        out.push(span);
    }
    out
}
