//! Running it like plant equipment.
//!
//! - [`events`]: every metric and its log line, in one place;
//! - `health`: what `/healthz`, the watchdog and `STATUS=` read;
//! - `http`: `/`, `/devices`, `/metrics` and `/healthz`;
//! - [`devices`]: what `/devices` (and the status page) show;
//! - [`metrics`]: what `/metrics` exports, with its help texts;
//! - `status`: the retained `online`/`offline` payloads;
//! - `systemd`: `READY`, `WATCHDOG`, `STATUS`, `STOPPING`;
//! - `logging`: text for journald or a terminal, JSON on request;
//! - `reload`: hot model swap on SIGHUP or a changed file;
//! - `signals`: SIGTERM, SIGINT, SIGHUP.

pub mod devices;
pub mod events;
pub(crate) mod health;
pub(crate) mod http;
pub(crate) mod logging;
pub mod metrics;
pub(crate) mod reload;
pub(crate) mod signals;
pub(crate) mod status;
pub(crate) mod systemd;
