//! A model swap, between two batches: a checked live model put in service,
//! or a new shadow model.

use std::sync::Arc;

use super::{reader_for, windows_for, Worker};
use crate::model::{Model, PlanStates};
use crate::pipeline::alarm::Alarms;
use crate::pipeline::render::Origin;
use crate::pipeline::worker::shadow::Shadowing;
use crate::sparkplug::input::SparkplugInput;

/// What the model watcher hands a pipeline's worker (a model that passed
/// its checks).
pub(crate) enum Swap {
    /// A new live model.
    Live(Arc<Model>),
    /// A new shadow model (the worker checks it reads the live model's input).
    Shadow(Arc<Model>),
}

impl Worker {
    /// Take a swap, once the batch in hand is scored.
    pub(super) fn take_swap(&mut self, swap: Swap) {
        self.score();
        match swap {
            Swap::Live(model) => self.swap_live(model),
            Swap::Shadow(model) => self.swap_shadow(model),
        }
    }

    /// A changed shadow model; refused (the old one keeps shadowing)
    /// unless it reads what the live model reads.
    fn swap_shadow(&mut self, model: Arc<Model>) {
        if crate::model::check_shadow(&model.card, &self.model.card).is_err() {
            self.events.shadow_refused(&model.path);
            return;
        }
        self.events.shadow_swapped(&model.id);
        self.shadow = Shadowing::new(&self.pipeline, model, &self.model);
    }

    /// Put a checked live model in service.
    fn swap_live(&mut self, model: Arc<Model>) {
        self.recent.rescore(model.score_count());
        if self
            .shadow
            .as_ref()
            .is_some_and(|s| crate::model::check_shadow(&s.model.card, &model.card).is_err())
        {
            self.events.shadow_stopped();
            self.shadow = None;
        }
        let card = &model.card;
        self.drift.recard(card.features.len(), card.normalize.clone(), card.range.clone());
        let keep = card.same_input(&self.model.card);
        if !keep {
            let forgotten = self.windows.clear();
            self.staged.forget.extend(forgotten);
            self.windows = windows_for(card, self.pipeline.hop, &self.limits);
            self.reader = reader_for(card, &self.pipeline, &self.limits);
            if self.sparkplug_in.is_some() {
                self.sparkplug_in = Some(
                    SparkplugInput::new(&card.features, self.limits.max_devices_per_pipeline)
                        .per_value(card.clock.is_some()),
                );
            }
        } else {
            // Same features and window: the held windows stay, under the new constants.
            self.windows.renormalize(card.normalize.clone());
        }
        self.events.model_swapped(&self.model.id, &model.id, keep);
        self.origin = Origin { pipeline: self.pipeline.name.clone(), model: model.id.clone() };
        // The next window of each device publishes its state under the new model.
        self.alarms = Alarms::default();
        // Another model's scores: its trend starts afresh.
        self.forecasts = crate::pipeline::forecast::Forecasts::default();
        self.rollups.recard(&model.card);
        self.model = model;
        // Not only for safety (a state for another plan is never reused):
        // the old states hold the old model's plans and scratch in memory.
        self.states = PlanStates::default();
    }
}
