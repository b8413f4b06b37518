//! lineguard: MQTT telemetry -> per-device windows -> ONNX MLP (tract) -> scores on MQTT.
//!
//! One folder per stage, in the order data flows through them; `daemon` is
//! the one place that wires them together:
//!
//! - `mqtt`: the broker connections (options, protocol, the connection
//!   loop, routing, acknowledgements, the oversize relay);
//! - `ingest`: topic templates, payload decoding, rejections;
//! - `pipeline`: the worker, windows, batches, rendering, alarm states;
//! - [`model`]: the card, the ONNX model in tract, `check-model`;
//! - `durable`: the state store, group commits, the publishing sink;
//! - `sparkplug`: Sparkplug B payloads, the Edge Node, Sparkplug input;
//! - `ops`: events (every metric and its log line), health, HTTP, status,
//!   systemd, logging, model reloads;
//! - [`tools`]: `check-config`, `demo`, `simulate` and the embedded broker.

#![warn(unreachable_pub)]

pub mod cli;
mod clock;
mod config;
mod daemon;
pub mod durable;
pub mod ingest;
pub mod model;
mod mqtt;
mod ops;
pub mod pipeline;
pub mod sparkplug;
pub mod tools;
