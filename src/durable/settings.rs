//! The state directory's settings (`[state]`), validated (see [`config`](crate::config)).

use std::path::PathBuf;
use std::time::Duration;

/// `[state]`, validated.
#[derive(Debug, Clone)]
pub(crate) struct StateSettings {
    pub dir: PathBuf,
    /// At most one group commit (fsync) per this long.
    pub commit_interval: Duration,
    pub outbox_max_bytes: u64,
    pub outbox_max_age: Duration,
    /// How long a stop may take, from the signal to the exit.
    pub drain_timeout: Duration,
}
