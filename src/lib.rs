//! lineguard: MQTT telemetry -> per-device windows -> ONNX MLP (tract) -> scores on MQTT.
//!
//! The stages, in the order data flows through them:
//! `topic` (which device) -> `decode` (Sample rows) -> `window` (ring buffers)
//! -> `model` (batched inference) -> `score` (payloads) -> MQTT out.
//! `daemon` is the one place that wires them together.

pub mod ack;
pub mod alarm;
pub mod broker;
pub mod card;
pub mod check_model;
pub mod committer;
pub mod config;
pub mod daemon;
pub mod decode;
pub mod demo;
pub mod events;
pub mod health;
pub mod http;
pub mod logging;
pub mod model;
pub mod mqtt;
pub mod outbox;
pub mod pipeline;
pub mod protocol;
pub mod reject;
pub mod relay;
pub mod reload;
pub mod score;
pub mod shutdown;
pub mod sim;
pub mod sparkplug;
pub mod status;
pub mod store;
pub mod systemd;
pub mod topic;
pub mod window;
