//! lineguard: MQTT telemetry -> per-device windows -> ONNX MLP (tract) -> scores on MQTT.
//!
//! The stages, in the order data flows through them:
//! `topic` (which device) -> `decode` (Sample rows) -> `window` (ring buffers)
//! -> `model` (batched inference) -> `score` (payloads) -> MQTT out.
//! `daemon` is the one place that wires them together.

pub mod card;
pub mod config;
pub mod decode;
pub mod model;
pub mod reject;
pub mod topic;
pub mod window;
