//! Hot model swap: on SIGHUP, and when a model or its card changes on disk
//! (a pipeline's live model, and its shadow model if it has one).
//!
//! The new model is loaded, checked against its card and self-tested on a
//! blocking thread, away from the pipeline; only a model that passes is
//! handed to the pipeline worker, which swaps it in between two batches. A
//! bad model or card is refused with a clear log line and the old model keeps
//! serving. Files are polled (size and mtime) every couple of seconds, which
//! also catches a model copied in over several writes: the first, partial
//! state is refused, the complete one is taken when its stamp changes again.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use tokio::signal::unix::{signal, Signal, SignalKind};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::config::Pipeline;
use crate::durable::sink::Control;
use crate::ingest::format::InputFormat;
use crate::model::card::ModelCard;
use crate::model::Model;
use crate::ops::events::{ModelInService, ModelRefused, ModelReloaded};
use crate::ops::status::{self, ModelStatus};

const POLL: Duration = Duration::from_secs(2);

type Stamp = Option<(SystemTime, u64)>;

fn stamp(path: &Path) -> Stamp {
    let m = std::fs::metadata(path).ok()?;
    Some((m.modified().ok()?, m.len()))
}

/// The models in service, as the status topic reports them.
#[derive(Debug, Clone)]
pub struct Board {
    pub client_id: String,
    pub models: Arc<Mutex<Vec<ModelStatus>>>,
}

impl Board {
    pub fn online_payload(&self) -> Vec<u8> {
        status::online(&self.client_id, &self.models.lock().unwrap_or_else(|p| p.into_inner()))
    }
}

/// What the watcher hands a pipeline's worker.
pub enum Swap {
    /// A new live model.
    Live(Arc<Model>),
    /// A new shadow model (the worker checks it reads the live model's input).
    Shadow(Arc<Model>),
}

/// One watched pipeline.
pub struct Watched {
    pub index: usize,
    pub pipeline: Pipeline,
    pub swap: mpsc::Sender<Swap>,
}

/// Load and self-test a model; the error says why it is refused.
pub fn load_checked(model: &Path, card: &Path, format: InputFormat) -> anyhow::Result<Model> {
    let card = ModelCard::load(card)?;
    crate::model::serves(format, &card)?;
    let model = Model::load_with_card(model, card)?;
    model.self_test()?;
    Ok(model)
}

/// Watch until `stop`; `hangup` is SIGHUP if the caller installed it
/// already (else it is installed here).
pub async fn watch(
    watched: Vec<Watched>,
    board: Board,
    control: mpsc::Sender<Control>,
    hangup: Option<Signal>,
    stop: CancellationToken,
) {
    let mut hup = match hangup.map(Ok).unwrap_or_else(|| signal(SignalKind::hangup())) {
        Ok(s) => Some(s),
        Err(e) => {
            tracing::warn!("SIGHUP handler unavailable ({e}); model files are still watched");
            None
        }
    };
    let paths: Vec<(PathBuf, PathBuf)> =
        watched.iter().map(|w| (w.pipeline.model.clone(), w.pipeline.card.clone())).collect();
    let mut stamps: Vec<(Stamp, Stamp)> = paths.iter().map(|(m, c)| (stamp(m), stamp(c))).collect();
    let shadow_paths: Vec<Option<(PathBuf, PathBuf)>> = watched
        .iter()
        .map(|w| w.pipeline.shadow.as_ref().map(|s| (s.model.clone(), s.card.clone())))
        .collect();
    let mut shadow_stamps: Vec<(Stamp, Stamp)> =
        shadow_paths.iter().map(|p| p.as_ref().map_or((None, None), |(m, c)| (stamp(m), stamp(c)))).collect();
    let mut tick = tokio::time::interval(POLL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let forced = tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => false,
            _ = async { hup.as_mut().expect("guarded").recv().await }, if hup.is_some() => {
                tracing::info!("SIGHUP: reloading every model");
                true
            }
        };
        for (i, w) in watched.iter().enumerate() {
            let Some((model_path, card_path)) = shadow_paths[i].clone() else { continue };
            let now = (stamp(&model_path), stamp(&card_path));
            if !forced && now == shadow_stamps[i] {
                continue;
            }
            shadow_stamps[i] = now;
            let format = w.pipeline.input_format;
            let shown = model_path.clone();
            match tokio::task::spawn_blocking(move || load_checked(&model_path, &card_path, format)).await {
                Ok(Ok(model)) => {
                    if w.swap.send(Swap::Shadow(Arc::new(model))).await.is_err() {
                        return;
                    }
                }
                Ok(Err(e)) => {
                    ModelRefused { pipeline: &w.pipeline.name, path: &shown, why: &format!("shadow: {e:#}") }
                        .emit()
                }
                Err(e) => {
                    ModelRefused { pipeline: &w.pipeline.name, path: &shown, why: &format!("shadow: {e}") }
                        .emit()
                }
            }
        }
        for (i, w) in watched.iter().enumerate() {
            let now = (stamp(&paths[i].0), stamp(&paths[i].1));
            if !forced && now == stamps[i] {
                continue;
            }
            stamps[i] = now;
            let (model_path, card_path) = paths[i].clone();
            let format = w.pipeline.input_format;
            let loaded =
                tokio::task::spawn_blocking(move || load_checked(&model_path, &card_path, format)).await;
            match loaded {
                Ok(Ok(model)) => {
                    let model = Arc::new(model);
                    {
                        let mut models = board.models.lock().unwrap_or_else(|p| p.into_inner());
                        let s = &mut models[w.index];
                        let retired = ModelInService {
                            pipeline: &w.pipeline.name,
                            model: &s.model,
                            version: &s.model_version,
                            sha256: &s.sha256,
                            in_service: false,
                        };
                        retired.emit();
                        let new = ModelInService {
                            pipeline: &w.pipeline.name,
                            model: &model.card.name,
                            version: &model.card.version,
                            sha256: &model.sha256,
                            in_service: true,
                        };
                        new.emit();
                        s.model = model.card.name.clone();
                        s.model_version = model.card.version.clone();
                        s.sha256 = model.sha256.clone();
                    }
                    let reloaded = ModelReloaded {
                        pipeline: &w.pipeline.name,
                        model: &model.card.name,
                        version: &model.card.version,
                        sha256: &model.sha256,
                    };
                    reloaded.emit();
                    if w.swap.send(Swap::Live(model)).await.is_err() {
                        return; // the pipeline has stopped
                    }
                    let _ = control.send(Control::Online(board.online_payload())).await;
                }
                Ok(Err(e)) => ModelRefused {
                    pipeline: &w.pipeline.name,
                    path: &w.pipeline.model,
                    why: &format!("{e:#}"),
                }
                .emit(),
                Err(e) => {
                    ModelRefused { pipeline: &w.pipeline.name, path: &w.pipeline.model, why: &e.to_string() }
                        .emit()
                }
            }
        }
    }
}
