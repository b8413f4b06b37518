//! Stages 4 and 5 of a turn: every window of the batch in one model run
//! (the shadow model's after it), then what each scored window publishes:
//! its score, its explanation, its shadow's score, its alarm state if that
//! changed.

use std::time::Instant;

use super::Worker;
use crate::model::card::State;
use crate::pipeline::explain::Explainer;
use crate::pipeline::render::{self, Scored};

impl Worker {
    /// Stage 4: every window in the batch in one model run (the shadow
    /// model's after it), then stage what they publish.
    pub(super) fn score(&mut self) {
        if self.batch.is_empty() {
            return;
        }
        let n = self.batch.len();
        self.scores.clear();
        let started = Instant::now();
        self.errors.clear();
        let card = &self.model.card;
        // `explain = "always"`: the windows' occluded copies run with them.
        let in_run = Explainer::in_batch_run(&card.scores);
        let result = match in_run {
            true => {
                self.batch.run_occluded(&self.model, &mut self.states, &mut self.scores, &mut self.errors)
            }
            false => self.batch.run(&self.model, &mut self.states, &mut self.scores, &mut self.errors),
        };
        if in_run && result.is_ok() {
            let (k, f) = (self.model.score_count(), card.features.len());
            let recon = card.reconstruction_scores();
            self.explainer.scored(&self.scores[n * k..], f, k);
            self.scores.truncate(n * k);
            self.errors.truncate(n * recon * f);
        }
        self.events.scored(n, started.elapsed().as_secs_f64());
        self.turn_counts.1 += n as u64;
        match result {
            Err(e) => self.events.inference_failed(n, &e.to_string()),
            Ok(()) => {
                if let Some(s) = &mut self.shadow {
                    s.run(self.batch.input(), n);
                }
                self.stage_scores()
            }
        }
        self.batch.clear();
    }

    /// Stage 5: each scored window's payload, its shadow's, and its alarm
    /// state if that changed; a window with a non-finite score publishes nothing.
    fn stage_scores(&mut self) {
        let k = self.model.score_count();
        let card = &self.model.card;
        let created_ms = crate::clock::now_ms();
        let recon = card.reconstruction_scores();
        let nf = card.features.len();
        // The windows some score explains. Their occluded copies ran with
        // the batch (`explain = "always"`), or go through the model now, in one run.
        let in_run = Explainer::in_batch_run(&card.scores);
        let mut rows = std::mem::take(&mut self.explain_rows);
        rows.clear();
        rows.extend((0..self.batch.len()).filter(|&i| {
            let values = &self.scores[i * k..(i + 1) * k];
            values.iter().all(|v| v.is_finite())
                && card.scores.iter().zip(values).any(|(s, v)| crate::pipeline::explain::occludes(s, *v))
        }));
        let explained = !rows.is_empty()
            && (in_run
                || match self.explainer.run(
                    &self.model,
                    &mut self.states,
                    self.batch.input(),
                    &rows,
                    card.window,
                    &card.baseline,
                ) {
                    Ok(()) => true,
                    Err(e) => {
                        self.events.explanation_failed(rows.len(), &e.to_string());
                        false
                    }
                });
        for (i, due) in self.batch.due().iter().enumerate() {
            let values = &self.scores[i * k..(i + 1) * k];
            let mut explain = match rows.binary_search(&i) {
                Ok(j) if explained => {
                    // The explainer holds every window's copies, or the explained ones'.
                    let j = if in_run { i } else { j };
                    self.explainer.explain(j, values, &card.scores, &card.features).unwrap_or_default()
                }
                _ => Vec::new(),
            };
            if recon > 0 {
                let errors = &self.errors[i * recon * nf..(i + 1) * recon * nf];
                crate::pipeline::explain::reconstruction(
                    &mut explain,
                    values,
                    errors,
                    &card.scores,
                    &card.features,
                );
            }
            if let Some(bad) = values.iter().position(|v| !v.is_finite()) {
                let detail = format!(
                    "score `{}` is {} for {} at ts {}",
                    card.scores[bad].name, values[bad], due.device, due.ts
                );
                self.events.inference_failed(1, &detail);
                continue;
            }
            let state: State = card.state(values);
            self.events.state(state);
            self.recent.record(&due.device, due.ts, values, &explain, state, created_ms);
            self.forecasts.update(&due.device, due.ts, &card.scores, values, &mut self.forecast_out);
            if matches!(self.pipeline.output, crate::pipeline::Output::Sparkplug(_)) {
                self.forecasts.latest_into(&due.device, &mut self.forecast_latest);
            }
            let (forecast, latest) = (&self.forecast_out[..], &self.forecast_latest[..]);
            let w = Scored {
                device: &due.device,
                ts: due.ts,
                values,
                state,
                explain: &explain,
                forecast,
                latest,
            };
            let input = &self.pipeline.input.topic;
            if let Some(e) = self.shadow.as_mut().and_then(|s| s.stage(i, &w, input, created_ms)) {
                self.staged.publish(due.cause, e);
            }
            if !self.rollups.is_empty() {
                // Made from the scores before this one: published before it.
                self.rollups.scored(input, &due.device, due.ts, values, state, &mut self.rollup_out);
                let node = matches!(self.pipeline.output, crate::pipeline::Output::Sparkplug(_));
                for m in self.rollup_out.drain(..) {
                    self.events.rollup(&m.message.rollup, &m.message.group, m.message.index);
                    if node {
                        self.staged.publish(due.cause, render::rollup_node_entry(&m, created_ms));
                    }
                    self.staged.publish(due.cause, render::rollup_entry(m, created_ms));
                }
            }
            let e = render::score_entry(&self.pipeline, &self.origin, &card.scores, &w, created_ms);
            self.staged.publish(due.cause, e);
            if let Some(alarm_topic) = &self.pipeline.alarm {
                if let Some(t) = self.alarms.update(&due.device, &card.scores, values) {
                    let e = render::alarm_entry(
                        input,
                        alarm_topic,
                        &self.origin,
                        &card.scores,
                        &w,
                        &t,
                        created_ms,
                    );
                    self.staged.publish(due.cause, e);
                }
            }
        }
        self.explain_rows = rows;
    }
}
