//! The retained status topic `lineguard/{client_id}/status`: `online` with the
//! version and loaded models, and `offline` as the last will and on clean stop.

use serde::Serialize;

#[derive(Debug, Clone, Serialize)]
pub struct ModelStatus {
    pub pipeline: String,
    pub model: String,
    pub model_version: String,
    pub sha256: String,
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

pub fn online(client_id: &str, models: &[ModelStatus]) -> Vec<u8> {
    payload("online", client_id, Some(models))
}

pub fn offline(client_id: &str) -> Vec<u8> {
    payload("offline", client_id, None)
}

fn payload(status: &str, client_id: &str, models: Option<&[ModelStatus]>) -> Vec<u8> {
    serde_json::to_vec(&Status { status, client_id, version: env!("CARGO_PKG_VERSION"), models })
        .expect("status serializes")
}
