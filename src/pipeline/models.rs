//! A pipeline's models, loaded as start-up, `check-config` and `replay`
//! all load them: the live model and its shadow, each through
//! [`model::load`](crate::model::load), the shadow checked to read what
//! the live model reads.

use std::sync::Arc;

use crate::model::{Model, ModelError};
use crate::ops::events::model::ModelEvents;
use crate::pipeline::Pipeline;

/// A pipeline's live model and, with `shadow_model`, its shadow.
pub(crate) struct PipelineModels {
    pub live: Arc<Model>,
    pub shadow: Option<Arc<Model>>,
}

/// Why a pipeline's model was refused: the pipeline, which model, and what is wrong.
#[derive(Debug, thiserror::Error)]
#[error("pipeline `{pipeline}`{which}: {error}")]
pub(crate) struct ModelsError {
    pipeline: String,
    /// Empty for the live model, `: shadow_model PATH` for the shadow.
    which: String,
    error: Box<ModelError>,
}

impl Pipeline {
    /// Whether `live`'s card has the scores this pipeline's roll-ups read,
    /// each with warn and alarm.
    pub(crate) fn serves_rollups(&self, live: &Model) -> Result<(), ModelError> {
        for r in &self.rollups {
            crate::pipeline::rollup::check_card(r, &live.card)
                .map_err(|message| ModelError::Rollup { card: self.model.card.clone(), message })?;
        }
        Ok(())
    }

    /// Load this pipeline's models (logged as loaded, with any card keys
    /// lineguard does not use).
    pub(crate) fn load_models(&self) -> Result<PipelineModels, ModelsError> {
        let events = ModelEvents::new(&self.name);
        let refused = |which: String| {
            let pipeline = self.name.clone();
            move |error| ModelsError { pipeline, which, error: Box::new(error) }
        };
        let format = Some(self.input.format);
        let live = crate::model::load(&self.model, format, None).map_err(refused(String::new()))?;
        self.serves_rollups(&live).map_err(refused(String::new()))?;
        if !live.card.unknown_keys.is_empty() {
            events.unknown_card_keys(&live.card.unknown_keys);
        }
        events.loaded(&live.id, false);
        let shadow = match &self.shadow {
            None => None,
            Some(s) => {
                let which = format!(": shadow_model {}", s.model.onnx.display());
                let shadow = crate::model::load(&s.model, format, Some(&live)).map_err(refused(which))?;
                events.loaded(&shadow.id, true);
                Some(Arc::new(shadow))
            }
        };
        Ok(PipelineModels { live: Arc::new(live), shadow })
    }
}
