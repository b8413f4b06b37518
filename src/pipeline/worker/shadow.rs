//! A pipeline's shadow model: run on every batch after the live model,
//! its scores published on `shadow_topic`, never acted on.

use std::sync::Arc;

use crate::durable::store::NewEntry;
use crate::ingest::topic::TopicTemplate;
use crate::model::{Model, PlanStates};
use crate::ops::events::pipeline::ShadowEvents;
use crate::pipeline::render::{self, Origin, Scored};
use crate::pipeline::Pipeline;

pub(super) struct Shadowing {
    pub model: Arc<Model>,
    topic: TopicTemplate,
    states: PlanStates,
    scores: Vec<f32>,
    origin: Origin,
    events: ShadowEvents,
    /// For each shadow score, the live score of the same name.
    shared: Vec<Option<usize>>,
    /// Whether this batch's shadow run succeeded.
    ran: bool,
}

impl Shadowing {
    /// `model` shadowing `live` for `pipeline` (`None` without a `shadow_topic`).
    pub(super) fn new(pipeline: &Pipeline, model: Arc<Model>, live: &Model) -> Option<Self> {
        let topic = pipeline.shadow.as_ref()?.topic.clone();
        let names: Vec<String> = model.card.scores.iter().map(|s| s.name.clone()).collect();
        let shared: Vec<Option<usize>> =
            names.iter().map(|n| live.card.scores.iter().position(|s| &s.name == n)).collect();
        Some(Self {
            events: ShadowEvents::new(&pipeline.name, &names, &shared),
            origin: Origin { pipeline: pipeline.name.clone(), model: model.id.clone() },
            topic,
            model,
            states: PlanStates::default(),
            scores: Vec::new(),
            shared,
            ran: false,
        })
    }

    /// Score the `n` windows of `input`, the batch the live model just ran.
    pub(super) fn run(&mut self, input: &[f32], n: usize) {
        self.scores.clear();
        self.ran = match self.model.run_with(&mut self.states, input, n, &mut self.scores) {
            Ok(()) => true,
            Err(e) => {
                self.events.failed(n, &e.to_string());
                false
            }
        };
    }

    /// Window `i` of the batch, as the shadow scored it, beside the live
    /// model's `live`: its payload for `shadow_topic` (none when the run
    /// failed or a score is not finite), counted with how it compares.
    pub(super) fn stage(
        &mut self,
        i: usize,
        live: &Scored,
        input: &TopicTemplate,
        created_ms: i64,
    ) -> Option<NewEntry> {
        if !self.ran {
            return None;
        }
        let k = self.model.score_count();
        let values = &self.scores[i * k..(i + 1) * k];
        if !values.iter().all(|v| v.is_finite()) {
            return None;
        }
        let state = self.model.card.state(values);
        let w = Scored {
            device: live.device,
            ts: live.ts,
            values,
            state,
            explain: &[],
            forecast: &[],
            latest: &[],
        };
        let entry =
            render::shadow_entry(input, &self.topic, &self.origin, &self.model.card.scores, &w, created_ms);
        let diffs = self
            .shared
            .iter()
            .enumerate()
            .filter_map(|(j, l)| l.map(|l| (j, f64::from((values[j] - live.values[l]).abs()))));
        self.events.scored(state != live.state, diffs);
        Some(entry)
    }

    /// `name vN`, the windows it scored, and those whose state differed
    /// from the live model's.
    pub(super) fn tally(&self) -> (String, u64, u64) {
        let (windows, disagreements) = self.events.tally();
        (self.model.id.to_string(), windows, disagreements)
    }
}
