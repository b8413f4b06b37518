//! lineguard: MQTT telemetry -> per-device windows -> ONNX MLP (tract) -> scores on MQTT.
//!
//! The folders, lowest first; each imports only folders above it in this
//! list, never one below:
//!
//! - `ops`: observability, the ground floor every stage emits into
//!   (events with their metrics and log lines, the metric catalogue,
//!   health, logging), and `clock`, the daemon's idea of time;
//! - [`ingest`]: topic templates, payload formats and their decoders,
//!   rejections;
//! - [`model`]: the card, the ONNX model in tract, the one loader,
//!   `check-model`;
//! - [`sparkplug`]: Sparkplug B payloads, the Edge Node's state machine
//!   and sessions, Sparkplug input;
//! - [`durable`]: the state store, group commits, acknowledgements, the
//!   publishing sink;
//! - [`pipeline`]: a pipeline's settings and models, its worker (read,
//!   window, score, stage, hand over), windows, batches, rendering, alarm
//!   states, drift, explanations;
//! - `mqtt`: the broker connections (options, protocol, the connection
//!   loop, routing, the acker, the oversize relay);
//! - `redundancy`: a primary and a backup, and which of them is active;
//! - `config`: the file, validated into each stage's settings;
//! - `daemon`: the wiring (every channel and task), the stop, and what
//!   looks at the stages from outside (HTTP, `/devices`, reloads, the
//!   status topic, systemd, signals);
//! - [`tools`]: `check-config`, `demo`, `simulate`, `record`, `replay`
//!   and the embedded broker;
//! - [`cli`]: the command line.
//!
//! One message, from the socket to its score: the telemetry connection
//! ([`mqtt::connection`]) polls rumqttc, the router ([`mqtt::router`]) hands
//! it to each pipeline that takes its topic, the pipeline's worker
//! ([`pipeline::worker`]) reads, windows and scores it and hands the scores
//! to the sink ([`durable::sink`]) and its changes to its committer
//! ([`durable::committer`]), which acknowledges the message once they are
//! durable.

#![warn(unreachable_pub)]
// These docs are for the people who work on lineguard (`cargo doc
// --document-private-items`, which CI builds with warnings as errors), so
// they link to crate-private items freely.
#![allow(rustdoc::private_intra_doc_links)]

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
mod redundancy;
pub mod sparkplug;
pub mod tools;
