//! The daemon's own events: start, readiness, signals, the stop's phases,
//! the HTTP listener and the watchdog.

use std::net::SocketAddr;

use tracing::{error, info, warn};

/// The daemon's lifecycle events.
#[derive(Debug, Default)]
pub(crate) struct DaemonEvents;

impl DaemonEvents {
    /// A stop came while the models were loading.
    pub(crate) fn stopped_while_loading(&self) {
        info!("stopped while loading the models");
    }

    /// Running: models loaded, connections started.
    pub(crate) fn running(&self, pipelines: usize) {
        info!(pipelines, "lineguard running");
    }

    pub(crate) fn stopping(&self) {
        info!("stopping: intake closed, finishing the work in hand");
    }

    pub(crate) fn stopped(&self) {
        info!("stopped");
    }

    /// A phase of the stop did not finish before the drain timeout.
    pub(crate) fn phase_overran(&self, phase: &str) {
        warn!(phase, "stop: {phase} did not finish in time");
    }

    /// SIGTERM or SIGINT (`signal`).
    pub(crate) fn signal(&self, signal: &str) {
        info!("{signal} received");
    }

    /// SIGHUP: every model is reloaded.
    pub(crate) fn hangup(&self) {
        info!("SIGHUP: reloading every model");
    }

    /// SIGHUP cannot be handled; model files are still polled.
    pub(crate) fn no_hangup(&self, why: &str) {
        warn!("SIGHUP handler unavailable ({why}); model files are still watched");
    }

    /// The HTTP listener serves at `addr`.
    pub(crate) fn serving(&self, addr: SocketAddr) {
        info!(%addr, "serving the status page (/), /devices, /metrics and /healthz");
    }

    /// The HTTP listener could not start (`why`): the daemon scores without it.
    pub(crate) fn no_http(&self, why: &dyn std::fmt::Display) {
        error!("{why:#}; running without the status page, /metrics and /healthz");
    }

    /// The HTTP server stopped with an error.
    pub(crate) fn http_failed(&self, why: &dyn std::fmt::Display) {
        error!("http server stopped: {why}");
    }

    /// Sparkplug records wait in the outbox but `[sparkplug]` is gone.
    pub(crate) fn sparkplug_backlog_kept(&self, records: usize) {
        warn!(records, "outbox: Sparkplug records kept, but [sparkplug] is not configured");
    }

    /// A pipeline loop stopped going round: the watchdog is not pinged.
    pub(crate) fn stalled(&self, pipelines: &[&str]) {
        error!(?pipelines, "pipeline loop stalled: not pinging the watchdog");
    }
}
