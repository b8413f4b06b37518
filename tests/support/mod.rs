//! Shared harness for the integration tests: a real broker, the real daemon
//! binary, plain MQTT clients, and the ONNX Runtime golden fixtures.
#![allow(dead_code)]

pub mod broker;
pub mod daemon;
pub mod golden;
pub mod line;
pub mod mqtt;
pub mod sparkplug;
pub mod tmpfs;

use std::path::PathBuf;

/// A path inside the repository.
pub fn repo_path(rel: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(rel)
}
