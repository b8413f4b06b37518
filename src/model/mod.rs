//! The model: its card (how to build its input and read its output), the
//! ONNX graph in tract checked against the card, and `check-model`.
//!
//! In: windows (`batch * input_len` normalized f32). Out: `score_count`
//! f32 per window, in card order. Invariants: loading does every shape
//! check, so a run never meets a shape it does not expect; a window's
//! scores never depend on its batch (see `onnx.rs`).

pub mod card;
pub mod check;
pub mod onnx;

pub use onnx::*;

use std::sync::Arc;

use anyhow::Context;
use tracing::{info, warn};

use crate::config::Settings;
use crate::ingest::format::InputFormat;

/// Whether a model with `card` can serve a pipeline reading `format`: one
/// value per message makes no sample without the card's sampling clock.
pub fn serves(format: InputFormat, card: &card::ModelCard) -> anyhow::Result<()> {
    if format.per_value() && card.clock.is_none() {
        anyhow::bail!(
            "input_format = \"{}\" brings one value per message; the model card {} must set \
             `sample_period_ms` (the rate the model was trained at) so that lineguard can form its samples",
            format.as_str(),
            card.path.display()
        );
    }
    Ok(())
}

/// Load every pipeline's model and card; any failure stops start-up.
/// Each pipeline's shadow model, if it has one, checked like a live model
/// and refused unless it reads the same input as `live` (the pipeline's
/// model): the same features in the same order, window and sampling clock.
pub fn load_shadows(settings: &Settings, live: &[Arc<Model>]) -> anyhow::Result<Vec<Option<Arc<Model>>>> {
    settings
        .pipelines
        .iter()
        .zip(live)
        .map(|(p, live)| {
            let Some(s) = &p.shadow else { return Ok(None) };
            let context = || format!("pipeline `{}`: shadow_model {}", p.name, s.model.display());
            let card = card::ModelCard::load(&s.card).with_context(context)?;
            serves(p.input_format, &card).with_context(context)?;
            anyhow::ensure!(
                card.same_input(&live.card),
                "{}: it must read what the live model reads (features {:?}, window {}, the same sampling clock); \
                 its card says features {:?}, window {}",
                context(),
                live.card.features,
                live.card.window,
                card.features,
                card.window
            );
            let model = Model::load_with_card(&s.model, card).with_context(context)?;
            model.self_test().with_context(context)?;
            info!(pipeline = %p.name, model = %model.card.name, version = %model.card.version,
                  sha256 = %model.sha256, "shadow model loaded");
            Ok(Some(Arc::new(model)))
        })
        .collect()
}

pub fn load_pipelines(settings: &Settings) -> anyhow::Result<Vec<Arc<Model>>> {
    settings
        .pipelines
        .iter()
        .map(|p| {
            let card = card::ModelCard::load(&p.card)?;
            serves(p.input_format, &card).with_context(|| format!("pipeline `{}`", p.name))?;
            let model = Model::load_with_card(&p.model, card).with_context(|| format!("pipeline `{}`", p.name))?;
            model.self_test().with_context(|| format!("pipeline `{}`", p.name))?;
            if !model.card.unknown_keys.is_empty() {
                warn!(pipeline = %p.name, keys = ?model.card.unknown_keys, "model card has keys lineguard does not use");
            }
            info!(pipeline = %p.name, model = %model.card.name, version = %model.card.version,
                  sha256 = %model.sha256, "model loaded");
            Ok(Arc::new(model))
        })
        .collect()
}
