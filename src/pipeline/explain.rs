//! Explanations by occlusion: which feature drove a window's score.
//!
//! The contribution of feature `f` to score `s` of a window is
//! `s(window) − s(window with f replaced at every time step by its
//! baseline)` — the baseline in the model's units (the card's `baseline`,
//! normalized; else the normalization's mean, which is 0). The F occluded
//! copies of every explained window of a batch go through the model in one
//! run after the batch's own, so a batch with no explained window costs
//! nothing extra; an explanation lists a score's `explain_top` features by
//! |delta|, largest first (ties in card order).

use crate::model::card::{Explain, ScoreKind, ScoreSpec, State};
use crate::model::{Model, ModelError, States};

/// One score's explanation: features and deltas, largest |delta| first.
#[derive(Debug, Clone, PartialEq)]
pub struct Explanation {
    /// Index of the score, card order.
    pub score: usize,
    pub top: Vec<(String, f32)>,
}

/// Whether `spec` explains a window where it scored `value`.
pub fn wanted(spec: &ScoreSpec, value: f32) -> bool {
    match spec.explain {
        Explain::Always => true,
        Explain::Never => false,
        Explain::Alarm => spec.state(value) != State::Ok,
    }
}

/// Whether `spec` explains a window where it scored `value` by occlusion
/// (column scores; a reconstruction score is explained by its own error).
pub fn occludes(spec: &ScoreSpec, value: f32) -> bool {
    spec.kind == ScoreKind::Column && wanted(spec, value)
}

/// The `n` features with the largest |delta| (one delta per feature, card
/// order), largest first, ties in card order.
fn top(deltas: impl Iterator<Item = f32>, n: usize, features: &[String]) -> Vec<(String, f32)> {
    let mut ranked: Vec<(usize, f32)> = deltas.enumerate().collect();
    ranked.sort_by(|a, b| b.1.abs().total_cmp(&a.1.abs()).then(a.0.cmp(&b.0)));
    ranked.truncate(n);
    ranked.into_iter().map(|(feature, d)| (features[feature].clone(), d)).collect()
}

/// The occluded windows of one batch and their scores (buffers reused).
#[derive(Debug, Default)]
pub struct Explainer {
    input: Vec<f32>,
    scores: Vec<f32>,
    features: usize,
    score_count: usize,
}

impl Explainer {
    /// Score the occluded copies of windows `rows` of `windows` (a batch's
    /// input, `window × features` values each): one model run.
    pub fn run(
        &mut self,
        model: &Model,
        states: &mut States,
        windows: &[f32],
        rows: &[usize],
        window: usize,
        baseline: &[f32],
    ) -> Result<(), ModelError> {
        let f = baseline.len();
        let len = window * f;
        (self.features, self.score_count) = (f, model.score_count());
        self.input.clear();
        for &i in rows {
            let w = &windows[i * len..(i + 1) * len];
            for (feature, &b) in baseline.iter().enumerate() {
                let start = self.input.len();
                self.input.extend_from_slice(w);
                // Time-major in both layouts: x[t * F + f].
                for t in 0..window {
                    self.input[start + t * f + feature] = b;
                }
            }
        }
        self.scores.clear();
        model.run_with(states, &self.input, rows.len() * f, &mut self.scores)
    }

    /// The explanations of the `j`-th explained window, which scored
    /// `values`: one per score that wants it. `None` if an occluded score
    /// is not finite (the window is then published unexplained).
    pub fn explain(
        &self,
        j: usize,
        values: &[f32],
        specs: &[ScoreSpec],
        features: &[String],
    ) -> Option<Vec<Explanation>> {
        let (f, k) = (self.features, self.score_count);
        let occluded = self.scores.get(j * f * k..(j + 1) * f * k)?;
        if occluded.iter().any(|v| !v.is_finite()) {
            return None;
        }
        let mut out = Vec::new();
        for (s, spec) in specs.iter().enumerate().filter(|(s, spec)| occludes(spec, values[*s])) {
            let deltas = (0..f).map(|feature| values[s] - occluded[feature * k + s]);
            out.push(Explanation { score: s, top: top(deltas, spec.explain_top, features) });
        }
        Some(out)
    }
}

/// Add the explanations of a window's reconstruction scores that want one
/// to `out`, which then lists its scores in card order. A reconstruction
/// score is explained by its own error, without occlusion: each feature's
/// `delta` is that feature's mean squared error over the window (largest
/// first, ties in card order). `errors`: the window's per-feature errors,
/// F per reconstruction score, card order (see `Model::run_detailed`).
pub fn reconstruction(
    out: &mut Vec<Explanation>,
    values: &[f32],
    errors: &[f32],
    specs: &[ScoreSpec],
    features: &[String],
) {
    let f = features.len();
    let reconstructed = specs.iter().enumerate().filter(|(_, s)| s.kind == ScoreKind::Reconstruction);
    for (r, (s, spec)) in reconstructed.enumerate() {
        if !wanted(spec, values[s]) {
            continue;
        }
        let Some(own) = errors.get(r * f..(r + 1) * f) else { continue };
        // Squared errors are never negative: ranking by |delta| is by delta.
        out.push(Explanation { score: s, top: top(own.iter().copied(), spec.explain_top, features) });
    }
    out.sort_by_key(|e| e.score);
}
