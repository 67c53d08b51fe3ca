//! Running the model: tokenize once, batch overlapping windows of word-pieces through ONNX
//! Runtime, give each piece the probabilities of the window where it is most central, and
//! average them per word (steps 1 to 4 of the decoding rules in `models/README.md`).

use std::sync::atomic::Ordering;
use std::sync::{MutexGuard, PoisonError, TryLockError};

use ort::session::Session;
use ort::value::Tensor;

use super::decode::{Word, WordScores};
use super::{Classifier, ClassifierError, runtime};

impl Classifier {
    /// The model's word scores for `text` (empty for blank text).
    pub fn word_scores(&self, text: &str) -> Result<WordScores, ClassifierError> {
        if text.trim().is_empty() {
            return Ok(WordScores::default());
        }
        let enc = self
            .tokenizer
            .encode(text, false)
            .map_err(|e| ClassifierError::Tokenizer(e.to_string()))?;
        let probs = self.piece_probs(enc.get_ids())?;
        Ok(WordScores {
            words: self.words(enc.get_word_ids(), enc.get_offsets(), &probs),
        })
    }

    /// Window ranges over `n` pieces: starts at 0, `stride`, …, and a last window ending at `n`.
    fn windows(&self, n: usize) -> Vec<(usize, usize)> {
        if n <= self.window {
            return vec![(0, n)];
        }
        let mut out: Vec<(usize, usize)> = (0..n - self.window)
            .step_by(self.stride)
            .map(|s| (s, s + self.window))
            .collect();
        out.push((n - self.window, n));
        out
    }

    /// Softmax probabilities per piece, each from the window where the piece is most central.
    fn piece_probs(&self, ids: &[u32]) -> Result<Vec<f32>, ClassifierError> {
        let n = ids.len();
        let c = self.labels;
        let mut probs = vec![0f32; n * c];
        let mut best = vec![(-1i64, usize::MAX); n]; // (centrality, window start)
        let mut jobs = self.windows(n);
        jobs.sort_by_key(|(s, e)| e - s);
        for chunk in jobs.chunks(self.batch) {
            let len = chunk.iter().map(|(s, e)| e - s).max().unwrap_or(0) + 2;
            let rows = chunk.len();
            let mut input = vec![i64::from(self.pad); rows * len];
            let mut mask = vec![0i64; rows * len];
            for (r, &(s, e)) in chunk.iter().enumerate() {
                let row = r * len;
                let cells = input.get_mut(row..row + e - s + 2).unwrap_or_default();
                if let Some((first, rest)) = cells.split_first_mut() {
                    *first = i64::from(self.cls);
                    for (cell, id) in rest.iter_mut().zip(ids.get(s..e).unwrap_or_default()) {
                        *cell = i64::from(*id);
                    }
                    if let Some(last) = rest.last_mut() {
                        *last = i64::from(self.sep);
                    }
                }
                if let Some(m) = mask.get_mut(row..row + e - s + 2) {
                    m.fill(1);
                }
            }
            let logits = self.run(rows, len, input, mask)?;
            for (r, &(s, e)) in chunk.iter().enumerate() {
                for i in s..e {
                    let centrality = (i - s).min(e - 1 - i) as i64;
                    let Some(slot) = best.get_mut(i) else {
                        continue;
                    };
                    if centrality > slot.0 || (centrality == slot.0 && s < slot.1) {
                        *slot = (centrality, s);
                        let at = (r * len + 1 + i - s) * c;
                        if let (Some(src), Some(dst)) =
                            (logits.get(at..at + c), probs.get_mut(i * c..(i + 1) * c))
                        {
                            softmax(src, dst);
                        }
                    }
                }
            }
        }
        Ok(probs)
    }

    fn run(
        &self,
        rows: usize,
        len: usize,
        input: Vec<i64>,
        mask: Vec<i64>,
    ) -> Result<Vec<f32>, ClassifierError> {
        let shape = [rows, len];
        let ids = Tensor::from_array((shape, input)).map_err(runtime)?;
        let att = Tensor::from_array((shape, mask)).map_err(runtime)?;
        let mut session = self.session()?;
        let outputs = session
            .run(ort::inputs!["input_ids" => ids, "attention_mask" => att])
            .map_err(runtime)?;
        let logits = outputs
            .get("logits")
            .ok_or_else(|| ClassifierError::Runtime("model has no `logits` output".to_owned()))?;
        let (out_shape, data) = logits.try_extract_tensor::<f32>().map_err(runtime)?;
        if out_shape.iter().copied().collect::<Vec<i64>>()
            != [rows as i64, len as i64, self.labels as i64]
        {
            return Err(ClassifierError::Runtime(
                "unexpected logits shape".to_owned(),
            ));
        }
        Ok(data.to_vec())
    }

    /// Whether no session is running at this moment (for work that must not compete with
    /// requests).
    pub fn idle(&self) -> bool {
        self.sessions
            .iter()
            .all(|s| !matches!(s.try_lock(), Err(TryLockError::WouldBlock)))
    }

    /// A free session, or (all busy) the one whose turn it is, waited for. A panic while
    /// holding a lock leaves the session itself usable (runs are stateless).
    fn session(&self) -> Result<MutexGuard<'_, Session>, ClassifierError> {
        let n = self.sessions.len();
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        for i in 0..n {
            let Some(slot) = self.sessions.get((start + i) % n) else {
                continue;
            };
            match slot.try_lock() {
                Ok(guard) => return Ok(guard),
                Err(TryLockError::Poisoned(p)) => return Ok(p.into_inner()),
                Err(TryLockError::WouldBlock) => {}
            }
        }
        self.sessions
            .get(start % n.max(1))
            .map(|slot| slot.lock().unwrap_or_else(PoisonError::into_inner))
            .ok_or_else(|| ClassifierError::Runtime("the classifier has no session".to_owned()))
    }

    /// Words (start byte, end byte, mean piece probabilities).
    fn words(
        &self,
        word_ids: &[Option<u32>],
        offsets: &[(usize, usize)],
        probs: &[f32],
    ) -> Vec<Word> {
        let c = self.labels;
        let mut words: Vec<Word> = Vec::new();
        let mut current: Option<(u32, usize, usize, Vec<usize>)> = None;
        for (i, (w, off)) in word_ids.iter().zip(offsets).enumerate() {
            let Some(w) = *w else { continue };
            match &mut current {
                Some((cw, _, end, pieces)) if *cw == w => {
                    *end = off.1;
                    pieces.push(i);
                }
                _ => {
                    if let Some(done) = current.take() {
                        words.push(self.word(done, probs, c));
                    }
                    current = Some((w, off.0, off.1, vec![i]));
                }
            }
        }
        if let Some(done) = current {
            words.push(self.word(done, probs, c));
        }
        words
    }

    fn word(
        &self,
        (_, start, end, pieces): (u32, usize, usize, Vec<usize>),
        probs: &[f32],
        c: usize,
    ) -> Word {
        let mut mean = vec![0f32; c];
        for &p in &pieces {
            for (m, v) in mean
                .iter_mut()
                .zip(probs.get(p * c..(p + 1) * c).unwrap_or_default())
            {
                *m += v;
            }
        }
        let k = pieces.len().max(1) as f32;
        mean.iter_mut().for_each(|m| *m /= k);
        let pb: Vec<f32> = self
            .types
            .iter()
            .map(|t| mean.get(t.b).copied().unwrap_or(0.0))
            .collect();
        let pi: Vec<f32> = self
            .types
            .iter()
            .map(|t| mean.get(t.i).copied().unwrap_or(0.0))
            .collect();
        Word { start, end, pb, pi }
    }
}

fn softmax(logits: &[f32], out: &mut [f32]) {
    let max = logits.iter().copied().fold(f32::MIN, f32::max);
    let mut sum = 0.0;
    for (o, l) in out.iter_mut().zip(logits) {
        *o = (l - max).exp();
        sum += *o;
    }
    if sum > 0.0 {
        out.iter_mut().for_each(|o| *o /= sum);
    }
}
