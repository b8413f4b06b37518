//! A pipeline: one model serving the devices of one input template, on a
//! thread of its own (inference never stalls the async side).
//!
//! In: [`Inbound`] telemetry messages, from the router. Out: scores (and
//! alarm states, Sparkplug records) numbered by the store and handed to the
//! sinks at once, and each turn's changes to its committer, which makes
//! them durable and only then releases the messages' acknowledgements.
//!
//! - [`settings`]: a pipeline's settings ([`Pipeline`], [`Limits`]);
//! - [`models`]: its live and shadow models, loaded;
//! - [`worker`]: the turn: read, window, score, stage, hand over (in the
//!   daemon, or driven by `lineguard replay`);
//! - [`window`]: per-device ring buffers, normalized on arrival;
//! - [`grid`]: the sampling clock, forming samples on the card's grid;
//! - [`batch`]: the windows of one model run;
//! - [`render`]: what a scored window publishes (JSON score, alarm state,
//!   Sparkplug record);
//! - [`alarm`]: alarm states with hysteresis and debounce;
//! - [`forecast`]: when each device's scores will reach warn and alarm;
//! - [`rollup`]: one health index per group of devices (a line);
//! - [`recent`]: each device's latest scores and their trend, for `/devices`;
//! - [`drift`]: whether live inputs still look like the training data;
//! - [`explain`]: which feature drove a score, by occlusion.
//!
//! Invariants: a sample is applied to a window at most once (by `ts`); a
//! window's score depends only on the window (never on its batch); nothing
//! is acknowledged before its effect is committed.

pub(crate) mod alarm;
pub(crate) mod batch;
pub mod drift;
pub mod explain;
pub(crate) mod forecast;
pub(crate) mod grid;
mod models;
pub(crate) mod recent;
pub(crate) mod render;
pub mod rollup;
mod settings;
mod stored;
pub mod window;
pub(crate) mod worker;

use bytes::Bytes;

pub(crate) use models::PipelineModels;
pub(crate) use settings::{Limits, Output, Pipeline, Shadow};

use crate::durable::ack::Ack;

/// The first bytes of a refused payload that its dead letter shows (the
/// telemetry connection's relay keeps as much of a message too large to read).
pub const DEAD_LETTER_SHOWS: usize = 4096;

/// What the router hands a pipeline, in the order the connection got it.
#[derive(Debug)]
pub(crate) enum Intake {
    /// A telemetry message.
    Message(Inbound),
    /// The broker lost the telemetry session (it answered a reconnect with
    /// `session_present = false`): every window that the hole may cut starts
    /// again (see [`Reset::SessionLost`](window::Reset::SessionLost)).
    SessionLost,
}

/// A telemetry message routed to a pipeline.
#[derive(Debug)]
pub(crate) struct Inbound {
    pub topic: String,
    pub payload: Bytes,
    /// Receive time, epoch ms: the `ts` of samples that carry none.
    pub received_ms: i64,
    /// The broker sent it before (MQTT DUP flag): a sample in it that is
    /// not newer than the window's newest was applied the first time.
    pub redelivered: bool,
    /// The payload is the head of a message this long, too large to read
    /// whole (see [`relay`](crate::mqtt::relay)).
    pub oversize: Option<u64>,
    /// This pipeline's share of the message's acknowledgement.
    pub ack: Option<Ack>,
}
