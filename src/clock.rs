//! Time, as the daemon reads it: the wall clock in epoch milliseconds (what
//! telemetry and scores are stamped with) and deadlines on it.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Milliseconds since the Unix epoch (0 if the clock is before it).
pub(crate) fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

/// When a stop must give up waiting for the disk: set once the stop
/// begins (epoch ms), read by the committer threads, which then leave what
/// they could not commit unacknowledged (the broker keeps it) and return.
#[derive(Debug, Clone, Default)]
pub(crate) struct Deadline(Arc<AtomicI64>);

impl Deadline {
    /// Give up at `now + within`.
    pub(crate) fn arm(&self, within: Duration) {
        let at = now_ms().saturating_add(within.as_millis() as i64);
        self.0.store(at.max(1), Ordering::SeqCst);
    }

    /// Time left, once armed.
    pub(crate) fn remaining(&self) -> Option<Duration> {
        match self.0.load(Ordering::SeqCst) {
            0 => None,
            at => Some(Duration::from_millis(at.saturating_sub(now_ms()).max(0) as u64)),
        }
    }

    /// Armed, and the time has come.
    pub(crate) fn passed(&self) -> bool {
        let at = self.0.load(Ordering::SeqCst);
        at != 0 && now_ms() >= at
    }
}
