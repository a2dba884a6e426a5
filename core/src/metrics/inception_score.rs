//! The Inception Score as the ADM evaluator's `Evaluator.compute_inception_score` (after
//! improved-gan's `inception_score/model.py`): the softmax of `pool_3 @ W` in splits of 5000
//! rows, `exp(mean_rows(sum_classes p (log p - log mean_rows(p))))` per split, averaged.

/// The evaluator's `split_size`.
pub const IS_SPLIT_SIZE: usize = 5000;

/// `softmax(logits)` of one row, in float64 (the evaluator's TF graph computes it in float32:
/// docs/evaluation.md).
pub fn softmax(logits: &[f32]) -> Vec<f64> {
    let max = logits
        .iter()
        .fold(f64::NEG_INFINITY, |m, &v| m.max(f64::from(v)));
    let e: Vec<f64> = logits.iter().map(|&v| (f64::from(v) - max).exp()).collect();
    let total: f64 = e.iter().sum();
    e.into_iter().map(|v| v / total).collect()
}

/// `compute_inception_score` given the softmax rows (`preds`), in float64: splits of
/// `split_size` rows taken in order (`range(0, len(preds), split_size)`, the last one shorter
/// when the rows do not divide), each split's score `exp(mean(sum(kl, 1)))`, their mean.
/// `None` when there are no rows or `split_size` is 0.
pub fn inception_score(preds: &[Vec<f64>], split_size: usize) -> Option<f64> {
    if preds.is_empty() || split_size == 0 {
        return None;
    }
    let scores: Vec<f64> = preds.chunks(split_size).map(split_score).collect();
    Some(scores.iter().sum::<f64>() / scores.len() as f64)
}

/// [`inception_score`] fed one row at a time, in sample index order: holds one split's softmax
/// rows at most (5000 x 1008 float64, 40 MB), not all of them.
#[derive(Debug)]
pub struct InceptionScore {
    split_size: usize,
    part: Vec<Vec<f64>>,
    scores: Vec<f64>,
}

impl InceptionScore {
    pub fn new(split_size: usize) -> InceptionScore {
        InceptionScore {
            split_size: split_size.max(1),
            part: Vec::new(),
            scores: Vec::new(),
        }
    }
    /// Adds the logits of the next sample.
    pub fn add(&mut self, logits: &[f32]) {
        self.part.push(softmax(logits));
        if self.part.len() == self.split_size {
            self.scores.push(split_score(&self.part));
            self.part.clear();
        }
    }
    /// The mean of the split scores, the last split short if the rows did not fill it.
    pub fn finish(mut self) -> Option<f64> {
        if !self.part.is_empty() {
            self.scores.push(split_score(&self.part));
        }
        if self.scores.is_empty() {
            return None;
        }
        Some(self.scores.iter().sum::<f64>() / self.scores.len() as f64)
    }
}

/// `kl = part * (log(part) - log(mean(part, 0))); exp(mean(sum(kl, 1)))`.
fn split_score(part: &[Vec<f64>]) -> f64 {
    let classes = part[0].len();
    let n = part.len() as f64;
    let mut mean = vec![0.0; classes];
    for row in part {
        for (m, p) in mean.iter_mut().zip(row) {
            *m += p;
        }
    }
    let log_mean: Vec<f64> = mean.iter().map(|m| (m / n).ln()).collect();
    let kl_rows: f64 = part
        .iter()
        .map(|row| {
            row.iter()
                .zip(&log_mean)
                .map(|(p, lm)| p * (p.ln() - lm))
                .sum::<f64>()
        })
        .sum();
    (kl_rows / n).exp()
}
