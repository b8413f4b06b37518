//! Explanations by occlusion: which feature drove a window's score.
//!
//! The contribution of feature `f` to score `s` of a window is
//! `s(window) − s(window with f replaced at every time step by its
//! baseline)` — the baseline in the model's units (the card's `baseline`,
//! normalized; else the normalization's mean, which is 0). When a score
//! explains every window (`explain = "always"`), the F occluded copies of
//! each window run in the batch's own model run ([`Explainer::append_all`]).
//! Otherwise which windows to explain is known only from their scores
//! (`"alarm"`: warn or alarm), so the copies of those go through the model
//! in one run after the batch's, and a batch with no explained window costs
//! nothing extra. An explanation lists a score's `explain_top` features by
//! |delta|, largest first (ties in card order).

use crate::model::card::{Explain, ScoreKind, ScoreSpec, State};
use crate::model::{Model, ModelError, PlanStates};

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

/// Replace `feature` by `baseline` at every time step of `w` (`window × f`
/// values; time-major in both layouts: x[t * F + f]).
fn occlude(w: &mut [f32], window: usize, f: usize, feature: usize, baseline: f32) {
    for t in 0..window {
        w[t * f + feature] = baseline;
    }
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
    /// Whether a card's explanations go in the batch's own run: some column
    /// score explains every window.
    pub fn in_batch_run(specs: &[ScoreSpec]) -> bool {
        specs.iter().any(|s| s.kind == ScoreKind::Column && s.explain == Explain::Always)
    }

    /// Append the F occluded copies of each of the `n` windows `input`
    /// starts with (`window × F` values each) to `input` itself, window by
    /// window, feature by feature: for one model run over all of them.
    pub fn append_all(input: &mut Vec<f32>, n: usize, window: usize, baseline: &[f32]) {
        let f = baseline.len();
        let len = window * f;
        input.reserve(n * f * len);
        for i in 0..n {
            for (feature, &b) in baseline.iter().enumerate() {
                let start = input.len();
                input.extend_from_within(i * len..(i + 1) * len);
                occlude(&mut input[start..], window, f, feature, b);
            }
        }
    }

    /// The scores of the copies [`Explainer::append_all`] made, from the
    /// run over them (`features` per window, `score_count` values each).
    pub fn scored(&mut self, scores: &[f32], features: usize, score_count: usize) {
        (self.features, self.score_count) = (features, score_count);
        self.scores.clear();
        self.scores.extend_from_slice(scores);
    }

    /// Score the occluded copies of windows `rows` of `windows` (a batch's
    /// input, `window × features` values each): one model run.
    pub fn run(
        &mut self,
        model: &Model,
        states: &mut PlanStates,
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
                occlude(&mut self.input[start..], window, f, feature, b);
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
/// F per reconstruction score, card order (see [`Model::run_detailed`](crate::model::Model::run_detailed)).
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

#[cfg(test)]
mod tests {
    use super::*;

    /// The copies made for the batch's own run are the copies made for a
    /// run of their own: the same windows, so (scores not depending on the
    /// batch) the same explanations.
    #[test]
    fn copies_in_the_batch_run_equal_copies_run_apart() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("models/line-mlp.onnx");
        let model = Model::load(&path).expect("the shipped model");
        let card = &model.card;
        let (n, len, f, k) = (5, card.input_len(), card.features.len(), model.score_count());
        let windows: Vec<f32> = (0..n * len).map(|i| ((i * 37 % 101) as f32 - 50.0) / 25.0).collect();
        let mut states = PlanStates::default();

        let mut apart = Explainer::default();
        let rows: Vec<usize> = (0..n).collect();
        apart.run(&model, &mut states, &windows, &rows, card.window, &card.baseline).unwrap();

        let mut input = windows.clone();
        Explainer::append_all(&mut input, n, card.window, &card.baseline);
        assert_eq!(input.len(), n * (f + 1) * len);
        assert_eq!(&input[..n * len], &windows[..], "the batch's own windows come first, untouched");
        let mut scores = Vec::new();
        model.run_with(&mut states, &input, n * (f + 1), &mut scores).unwrap();
        let mut together = Explainer::default();
        together.scored(&scores[n * k..], f, k);

        let mut own = Vec::new();
        model.run_with(&mut states, &windows, n, &mut own).unwrap();
        assert_eq!(&scores[..n * k], &own[..], "the windows score as they do alone");
        let specs: Vec<ScoreSpec> =
            card.scores.iter().map(|s| ScoreSpec { explain: Explain::Always, ..s.clone() }).collect();
        for i in 0..n {
            let values = &own[i * k..(i + 1) * k];
            let a = apart.explain(i, values, &specs, &card.features).unwrap();
            let b = together.explain(i, values, &specs, &card.features).unwrap();
            assert_eq!(a, b, "window {i}");
            assert_eq!(a.len(), k);
        }
    }
}
