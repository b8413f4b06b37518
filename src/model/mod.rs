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
