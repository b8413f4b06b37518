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
    #[serde(skip_serializing_if = "Option::is_none")]
    models: Option<&'a [ModelStatus]>,
}

pub(crate) fn online(client_id: &str, models: &[ModelStatus]) -> Vec<u8> {
    payload("online", client_id, Some(models))
}

pub(crate) fn offline(client_id: &str) -> Vec<u8> {
    payload("offline", client_id, None)
}

fn payload(status: &str, client_id: &str, models: Option<&[ModelStatus]>) -> Vec<u8> {
    serde_json::to_vec(&Status { status, client_id, version: env!("CARGO_PKG_VERSION"), models })
        .expect("status serializes")
}

/// The models in service, by pipeline, as the status topic reports them.
#[derive(Debug, Clone)]
pub(crate) struct Board {
    pub client_id: String,
    pub models: Arc<Mutex<Vec<ModelStatus>>>,
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
        online(&self.client_id, &self.lock())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<ModelStatus>> {
        self.models.lock().unwrap_or_else(|p| p.into_inner())
    }
}
