//! Signals: SIGTERM and SIGINT stop the daemon cleanly, SIGHUP reloads the
//! models; and the one deadline a stop must keep.
//!
//! The handlers are installed before anything slow (loading models) starts:
//! a signal's default action is to kill the process, so a SIGHUP that came
//! while a large model loaded used to end the daemon.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::signal::unix::{signal, Signal, SignalKind};
use tokio_util::sync::CancellationToken;
use tracing::info;

/// The daemon's signals, installed.
pub struct Signals {
    /// Cancelled on the first SIGTERM or SIGINT.
    pub stop: CancellationToken,
    /// SIGHUP, registered (so it no longer kills) and held for the model
    /// watcher; a SIGHUP before the watcher runs waits for it.
    pub hangup: Signal,
}

/// Install the handlers (call inside the runtime, before loading anything).
pub fn install() -> std::io::Result<Signals> {
    let hangup = signal(SignalKind::hangup())?;
    let stop = CancellationToken::new();
    on_signals(stop.clone())?;
    Ok(Signals { stop, hangup })
}

/// Cancel `token` on the first SIGTERM or SIGINT.
pub fn on_signals(token: CancellationToken) -> std::io::Result<()> {
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    tokio::spawn(async move {
        tokio::select! {
            _ = term.recv() => info!("SIGTERM received"),
            _ = int.recv() => info!("SIGINT received"),
        }
        token.cancel();
    });
    Ok(())
}

/// When a stop must give up waiting for the disk: set once the stop
/// begins (epoch ms), read by the committer threads, which then leave what
/// they could not commit unacknowledged (the broker keeps it) and return.
#[derive(Debug, Clone, Default)]
pub struct Deadline(Arc<AtomicI64>);

impl Deadline {
    /// Give up at `now + within`.
    pub fn arm(&self, within: Duration) {
        let at = crate::daemon::now_ms().saturating_add(within.as_millis() as i64);
        self.0.store(at.max(1), Ordering::SeqCst);
    }

    /// Time left, once armed.
    pub fn remaining(&self) -> Option<Duration> {
        match self.0.load(Ordering::SeqCst) {
            0 => None,
            at => Some(Duration::from_millis(at.saturating_sub(crate::daemon::now_ms()).max(0) as u64)),
        }
    }

    /// Armed, and the time has come.
    pub fn passed(&self) -> bool {
        let at = self.0.load(Ordering::SeqCst);
        at != 0 && crate::daemon::now_ms() >= at
    }
}
