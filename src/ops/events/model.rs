//! A pipeline's models: loaded at start-up, put in service, retired, and
//! reloaded or refused when their files change.

use std::path::Path;

use metrics::gauge;
use tracing::{error, info, warn};

use super::{names, ByLabel};

/// How a reload ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, strum::VariantArray, strum::IntoStaticStr)]
#[strum(serialize_all = "snake_case")]
pub enum Reload {
    /// The new model passed its checks and went into service.
    Ok,
    /// It failed them; the old one keeps serving.
    Refused,
}

/// What the status topic, `/metrics` and the log name a model by (the
/// model stage's identity type implements it).
pub(crate) trait Identity {
    /// The card's `name`.
    fn name(&self) -> &str;
    /// The card's `version`.
    fn version(&self) -> &str;
    /// Of the ONNX file, hex.
    fn sha256(&self) -> &str;
}

/// The model events of one pipeline.
pub(crate) struct ModelEvents {
    pipeline: String,
    reloads: ByLabel<Reload>,
}

impl ModelEvents {
    pub(crate) fn new(pipeline: &str) -> Self {
        Self {
            pipeline: pipeline.to_string(),
            reloads: ByLabel::register(names::MODEL_RELOADS, "result", &[("pipeline", pipeline)]),
        }
    }

    /// Loaded at start-up (`shadow`: as the pipeline's shadow model).
    pub(crate) fn loaded(&self, model: &impl Identity, shadow: bool) {
        let pipeline = &self.pipeline;
        let (name, version, sha256) = (model.name(), model.version(), model.sha256());
        match shadow {
            false => info!(%pipeline, model = %name, %version, %sha256, "model loaded"),
            true => info!(%pipeline, model = %name, %version, %sha256, "shadow model loaded"),
        }
    }

    /// The card has keys lineguard does not use (a typo, or a newer card).
    pub(crate) fn unknown_card_keys(&self, keys: &[String]) {
        warn!(pipeline = %self.pipeline, ?keys, "model card has keys lineguard does not use");
    }

    /// `lineguard_model_info{...}` 1: this model serves the pipeline.
    pub(crate) fn in_service(&self, model: &impl Identity) {
        self.info(model).set(1.0);
    }

    /// `lineguard_model_info{...}` 0: this model no longer serves it.
    pub(crate) fn retired(&self, model: &impl Identity) {
        self.info(model).set(0.0);
    }

    fn info(&self, m: &impl Identity) -> metrics::Gauge {
        gauge!(
            names::MODEL_INFO,
            "pipeline" => self.pipeline.clone(),
            "model" => m.name().to_string(),
            "version" => m.version().to_string(),
            "sha256" => m.sha256().to_string()
        )
    }

    /// A changed model passed its checks and goes into service.
    pub(crate) fn reloaded(&self, model: &impl Identity) {
        self.reloads.add(Reload::Ok, 1);
        let pipeline = &self.pipeline;
        let (name, version, sha256) = (model.name(), model.version(), model.sha256());
        info!(%pipeline, model = %name, %version, %sha256, "new model passed its checks; swapping it in");
    }

    /// A changed model or card failed its checks; the old model keeps serving.
    pub(crate) fn refused(&self, path: &Path, why: &str) {
        self.reloads.add(Reload::Refused, 1);
        error!(
            pipeline = %self.pipeline,
            model = %path.display(),
            "new model refused, the current one keeps serving: {why}"
        );
    }
}
