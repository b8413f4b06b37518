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

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::signal::unix::{signal, Signal, SignalKind};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::daemon::status::Board;
use crate::durable::sink::Control;
use crate::model::{Model, ModelFiles};
use crate::ops::events::daemon::DaemonEvents;
use crate::ops::events::model::ModelEvents;
use crate::pipeline::worker::Swap;
use crate::pipeline::Pipeline;

const POLL: Duration = Duration::from_secs(2);

type Stamp = Option<(SystemTime, u64)>;

fn stamp(path: &Path) -> Stamp {
    let m = std::fs::metadata(path).ok()?;
    Some((m.modified().ok()?, m.len()))
}

/// A model's files, as last seen.
fn stamps(files: &ModelFiles) -> (Stamp, Stamp) {
    (stamp(&files.onnx), stamp(&files.card))
}

/// One watched pipeline.
pub(crate) struct Watched {
    pub index: usize,
    pub pipeline: Pipeline,
    pub swap: mpsc::Sender<Swap>,
    pub events: ModelEvents,
}

/// Load `files` for `pipeline` off the async thread; the error says why it is refused.
async fn load(files: &ModelFiles, pipeline: &Pipeline) -> anyhow::Result<Model> {
    let (files, format) = (files.clone(), pipeline.input.format);
    Ok(tokio::task::spawn_blocking(move || crate::model::load(&files, Some(format), None)).await??)
}

/// Watch until `stop`; `hangup` is SIGHUP if the caller installed it
/// already (else it is installed here).
pub(crate) async fn watch(
    watched: Vec<Watched>,
    board: Board,
    control: mpsc::Sender<Control>,
    hangup: Option<Signal>,
    stop: CancellationToken,
) {
    let mut hup = match hangup.map(Ok).unwrap_or_else(|| signal(SignalKind::hangup())) {
        Ok(s) => Some(s),
        Err(e) => {
            DaemonEvents.no_hangup(&e.to_string());
            None
        }
    };
    let mut live: Vec<(Stamp, Stamp)> = watched.iter().map(|w| stamps(&w.pipeline.model)).collect();
    let mut shadow: Vec<(Stamp, Stamp)> = watched
        .iter()
        .map(|w| w.pipeline.shadow.as_ref().map_or((None, None), |s| stamps(&s.model)))
        .collect();
    let mut tick = tokio::time::interval(POLL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let forced = tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => false,
            _ = async { hup.as_mut().expect("guarded").recv().await }, if hup.is_some() => {
                DaemonEvents.hangup();
                true
            }
        };
        for (i, w) in watched.iter().enumerate() {
            let Some(files) = w.pipeline.shadow.as_ref().map(|s| &s.model) else { continue };
            let now = stamps(files);
            if !forced && now == shadow[i] {
                continue;
            }
            shadow[i] = now;
            match load(files, &w.pipeline).await {
                Ok(model) => {
                    if w.swap.send(Swap::Shadow(Arc::new(model))).await.is_err() {
                        return;
                    }
                }
                Err(e) => w.events.refused(&files.onnx, &format!("shadow: {e:#}")),
            }
        }
        for (i, w) in watched.iter().enumerate() {
            let files = &w.pipeline.model;
            let now = stamps(files);
            if !forced && now == live[i] {
                continue;
            }
            live[i] = now;
            let loaded = load(files, &w.pipeline)
                .await
                .and_then(|m| w.pipeline.serves_rollups(&m).map(|_| m).map_err(anyhow::Error::from));
            match loaded {
                Ok(model) => {
                    let model = Arc::new(model);
                    let retired = board.swap(w.index, model.id.clone());
                    w.events.retired(&retired);
                    w.events.in_service(&model.id);
                    w.events.reloaded(&model.id);
                    if w.swap.send(Swap::Live(model)).await.is_err() {
                        return; // the pipeline has stopped
                    }
                    let _ = control.send(Control::Online(board.online_payload())).await;
                }
                Err(e) => w.events.refused(&files.onnx, &format!("{e:#}")),
            }
        }
    }
}
