//! Signals: SIGTERM and SIGINT stop the daemon cleanly, SIGHUP reloads the
//! models.
//!
//! The handlers are installed before anything slow (loading models) starts:
//! a signal's default action is to kill the process, so a SIGHUP that came
//! while a large model loaded would end the daemon.

use tokio::signal::unix::{signal, Signal, SignalKind};
use tokio_util::sync::CancellationToken;

use crate::ops::events::daemon::DaemonEvents;

/// The daemon's signals, installed.
pub(crate) struct Signals {
    /// Cancelled on the first SIGTERM or SIGINT.
    pub stop: CancellationToken,
    /// SIGHUP, registered (so it no longer kills) and held for the model
    /// watcher; a SIGHUP before the watcher runs waits for it.
    pub hangup: Signal,
}

/// Install the handlers (call inside the runtime, before loading anything).
pub(crate) fn install() -> std::io::Result<Signals> {
    let hangup = signal(SignalKind::hangup())?;
    let stop = CancellationToken::new();
    on_signals(stop.clone())?;
    Ok(Signals { stop, hangup })
}

/// Cancel `token` on the first SIGTERM or SIGINT.
pub(crate) fn on_signals(token: CancellationToken) -> std::io::Result<()> {
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    tokio::spawn(async move {
        tokio::select! {
            _ = term.recv() => DaemonEvents.signal("SIGTERM"),
            _ = int.recv() => DaemonEvents.signal("SIGINT"),
        }
        token.cancel();
    });
    Ok(())
}
