//! The windows of one model run: their inputs side by side, in the reused
//! buffer the model reads, and whose each one is.
//!
//! A window is copied in as it becomes due (normalized already, see
//! [`Windows`]), so the per-message path allocates nothing: the buffer and
//! the list keep their capacity from run to run, and a device is held by
//! its shared key, not a copy of its name.

use std::sync::Arc;

use crate::model::{Model, ModelError, PlanStates};
use crate::pipeline::explain::Explainer;
use crate::pipeline::window::Windows;

/// A window in the batch, waiting for its scores.
#[derive(Debug)]
pub(super) struct Due {
    /// Shared with the windows: no copy of the name per window.
    pub device: Arc<str>,
    /// Its newest sample's.
    pub ts: i64,
    /// Replaying: the input message that made it due (0 in the daemon).
    pub cause: u64,
}

#[derive(Debug)]
pub(super) struct Batch {
    input: Vec<f32>,
    due: Vec<Due>,
    max: usize,
}

impl Batch {
    /// A batch of at most `max` windows of `window_len` values (the capacity kept).
    pub(super) fn new(max: usize, window_len: usize) -> Batch {
        Batch { input: Vec::with_capacity(max * window_len), due: Vec::with_capacity(max), max }
    }

    pub(super) fn len(&self) -> usize {
        self.due.len()
    }

    pub(super) fn is_empty(&self) -> bool {
        self.due.is_empty()
    }

    /// `limits.max_batch` windows are in: run it before adding more.
    pub(super) fn is_full(&self) -> bool {
        self.due.len() >= self.max
    }

    /// Copy `device`'s window (`window_len` values) in, stamped `ts`, made
    /// due by input message `cause`.
    pub(super) fn push(&mut self, windows: &Windows, device: &str, ts: i64, window_len: usize, cause: u64) {
        let start = self.input.len();
        self.input.resize(start + window_len, 0.0);
        windows.write_window(device, &mut self.input[start..]);
        let device = windows.key(device).expect("a due window's device is held");
        self.due.push(Due { device, ts, cause });
    }

    /// One model run over the batch: `scores` gets `score_count` values per window, in order.
    /// `errors`: each reconstruction score's per-feature errors (see
    /// [`Model::run_detailed`]).
    pub(super) fn run(
        &self,
        model: &Model,
        states: &mut PlanStates,
        scores: &mut Vec<f32>,
        errors: &mut Vec<f32>,
    ) -> Result<(), ModelError> {
        model.run_detailed(states, &self.input, self.due.len(), scores, Some(errors))
    }

    /// [`Batch::run`], with the F occluded copies of every window in the
    /// same run (see [`Explainer::append_all`]): `scores` gets the batch's
    /// scores, then the copies'. The batch's input is as before afterwards.
    pub(super) fn run_occluded(
        &mut self,
        model: &Model,
        states: &mut PlanStates,
        scores: &mut Vec<f32>,
        errors: &mut Vec<f32>,
    ) -> Result<(), ModelError> {
        let (n, kept) = (self.due.len(), self.input.len());
        let card = &model.card;
        Explainer::append_all(&mut self.input, n, card.window, &card.baseline);
        let rows = n * (card.features.len() + 1);
        let result = model.run_detailed(states, &self.input, rows, scores, Some(errors));
        self.input.truncate(kept);
        result
    }

    /// The windows' inputs, side by side.
    pub(super) fn input(&self) -> &[f32] {
        &self.input
    }

    /// The windows, in the order of their scores.
    pub(super) fn due(&self) -> &[Due] {
        &self.due
    }

    /// Empty it for the next run (capacity kept).
    pub(super) fn clear(&mut self) {
        self.due.clear();
        self.input.clear();
    }
}
