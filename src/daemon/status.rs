//! The retained status topic `lineguard/{client_id}/status`: `online` with
//! the version and the models in service, and `offline` as the last will
//! and on a clean stop; and the board of models in service that it, the
//! model watcher and `/devices` share.

use std::sync::{Arc, Mutex};

use serde::Serialize;

use crate::model::ModelId;

/// A pipeline's model in service, as the status topic and `/devices` show it.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct ModelStatus {
    pub pipeline: String,
    #[serde(flatten)]
    pub model: ModelId,
    pub input_topic: String,
    pub output_topic: String,
}

#[derive(Serialize)]
struct Status<'a> {
    status: &'a str,
    client_id: &'a str,
    version: &'a str,
    #[serde(flatten)]
    pair: Option<&'a PairStatus>,
    #[serde(skip_serializing_if = "Option::is_none")]
    models: Option<&'a [ModelStatus]>,
}

/// Under `[redundancy]`: what the status says of this instance's standing.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct PairStatus {
    pub role: &'static str,
    /// Whether it publishes for the pair.
    pub active: bool,
    /// The primary: caught up, waiting for the active backup to stand down.
    pub ready: bool,
    /// Its data clock: the newest sample time it applied (epoch ms); the
    /// primary catches up with the backup's.
    pub data_ts: i64,
    /// Under `[sparkplug]`: the `bdSeq` of the Edge Node session it holds
    /// (the peer waits for that session's NDEATH before its own births).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sparkplug_bd_seq: Option<u64>,
    /// Why it stands as it does (not in the status topic; `/devices` shows it).
    #[serde(skip)]
    pub why: &'static str,
    /// What its peer's status says (not in the status topic either).
    #[serde(skip)]
    pub peer: PeerView,
}

/// The peer, as `/devices` shows it.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct PeerView {
    pub client_id: String,
    /// `online`, `offline`, or `unknown` (no status retained).
    pub status: &'static str,
    pub active: Option<bool>,
    pub data_ts: Option<i64>,
}

pub(crate) fn online(client_id: &str, pair: Option<&PairStatus>, models: &[ModelStatus]) -> Vec<u8> {
    payload("online", client_id, pair, Some(models))
}

pub(crate) fn offline(client_id: &str) -> Vec<u8> {
    payload("offline", client_id, None, None)
}

fn payload(
    status: &str,
    client_id: &str,
    pair: Option<&PairStatus>,
    models: Option<&[ModelStatus]>,
) -> Vec<u8> {
    serde_json::to_vec(&Status { status, client_id, version: env!("CARGO_PKG_VERSION"), pair, models })
        .expect("status serializes")
}

/// The models in service, by pipeline, as the status topic reports them,
/// and (under `[redundancy]`) this instance's standing in its pair.
#[derive(Debug, Clone)]
pub(crate) struct Board {
    pub client_id: String,
    pub models: Arc<Mutex<Vec<ModelStatus>>>,
    pub pair: Arc<Mutex<Option<PairStatus>>>,
}

impl Board {
    /// What `/devices` shows now.
    pub(crate) fn models(&self) -> Vec<ModelStatus> {
        self.lock().clone()
    }

    /// Pipeline `index` now serves `model`; returns the one it retires.
    pub(crate) fn swap(&self, index: usize, model: ModelId) -> ModelId {
        std::mem::replace(&mut self.lock()[index].model, model)
    }

    /// The retained `online` payload.
    pub(crate) fn online_payload(&self) -> Vec<u8> {
        let pair = self.pair();
        online(&self.client_id, pair.as_ref(), &self.lock())
    }

    /// This instance's standing, under `[redundancy]`.
    pub(crate) fn pair(&self) -> Option<PairStatus> {
        self.pair.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    pub(crate) fn set_pair(&self, pair: PairStatus) {
        *self.pair.lock().unwrap_or_else(|p| p.into_inner()) = Some(pair);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<ModelStatus>> {
        self.models.lock().unwrap_or_else(|p| p.into_inner())
    }
}
