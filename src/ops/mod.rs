//! Observability, the ground floor: every stage emits into it, and it
//! imports no stage.
//!
//! - [`events`]: every log line and metric, a file per stage;
//! - [`metrics`]: the catalogue of what `/metrics` exports, with help texts;
//! - [`health`]: what `/healthz`, the watchdog and `STATUS=` read;
//! - [`logging`]: text for journald or a terminal, JSON on request.

pub(crate) mod events;
pub(crate) mod health;
pub(crate) mod logging;
pub(crate) mod metrics;
