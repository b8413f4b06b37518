//! The model: its card ([`card`]: how to build its input and read its
//! output), the ONNX graph in tract checked against the card ([`Model`]),
//! the one way to load one ([`load`]), and `check-model` ([`check`]).
//!
//! In: windows (`batch * input_len` normalized f32). Out: `score_count`
//! f32 per window, in card order. Invariants: loading does every shape
//! check, so a run never meets a shape it does not expect; a window's
//! scores never depend on its batch (see [`Model`]).

pub mod card;
pub(crate) mod check;
mod onnx;

pub use onnx::{BatchDim, Model, ModelError, ModelId, PlanStates, SelfTest};

use std::path::PathBuf;

use crate::ingest::format::InputFormat;
use card::ModelCard;

/// Where a model and its card are: a pipeline's `model` (and `card`), or
/// its `shadow_model`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelFiles {
    pub onnx: PathBuf,
    pub card: PathBuf,
}

impl ModelFiles {
    /// `onnx` with its card beside it (`line-mlp.onnx`, `line-mlp.toml`).
    pub fn beside(onnx: PathBuf) -> ModelFiles {
        ModelFiles { card: ModelCard::path_for(&onnx), onnx }
    }
}

/// Load a model as every user of one does (start-up, a reload, a shadow,
/// `check-model`): its card; whether it can serve a pipeline reading
/// `format` (`None`: not asked) and, for a shadow, whether it reads what
/// the live model `shadowing` reads; the ONNX graph, checked against the
/// card; then a self-test run. The error says why the model is refused.
pub fn load(
    files: &ModelFiles,
    format: Option<InputFormat>,
    shadowing: Option<&Model>,
) -> Result<Model, ModelError> {
    let card = ModelCard::load(&files.card)?;
    // One value per message makes no sample without the card's sampling clock.
    if let Some(f) = format.filter(|f| f.per_value() && card.clock.is_none()) {
        return Err(ModelError::NoClock { format: f.as_str(), card: card.path.clone() });
    }
    if let Some(live) = shadowing {
        check_shadow(&card, &live.card)?;
    }
    let model = Model::load_with_card(&files.onnx, card)?;
    model.self_test()?;
    Ok(model)
}

/// A shadow model must read exactly what the live model reads: the same
/// features in the same order, window and sampling clock.
pub fn check_shadow(shadow: &ModelCard, live: &ModelCard) -> Result<(), ModelError> {
    if shadow.same_input(live) {
        return Ok(());
    }
    Err(ModelError::OtherInput {
        card: shadow.path.clone(),
        live_features: live.features.clone(),
        live_window: live.window,
        features: shadow.features.clone(),
        window: shadow.window,
    })
}
