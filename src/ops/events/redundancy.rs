//! A redundant pair's events: this instance taking over or standing down,
//! and what it replays when it takes over.

use metrics::{counter, gauge, Counter, Gauge};
use tracing::{info, warn};

use super::{names, zeroed};

/// The redundancy events of this instance.
pub(crate) struct RedundancyEvents {
    role: &'static str,
    active: Gauge,
    takeovers: Counter,
}

impl RedundancyEvents {
    /// `role`: `primary` or `backup`.
    pub(crate) fn new(role: &'static str) -> Self {
        let active = gauge!(names::REDUNDANCY_ACTIVE);
        active.set(0.0);
        Self { role, active, takeovers: zeroed(counter!(names::REDUNDANCY_TAKEOVERS)) }
    }

    /// Without `[redundancy]`: always active.
    pub(crate) fn standalone() {
        gauge!(names::REDUNDANCY_ACTIVE).set(1.0);
        let _ = zeroed(counter!(names::REDUNDANCY_TAKEOVERS));
        let _ = zeroed(counter!(names::REDUNDANCY_REPLAYED));
    }

    /// It became active (`true`) or stands by, and why.
    pub(crate) fn changed(&self, active: bool, why: &str) {
        self.active.set(if active { 1.0 } else { 0.0 });
        let role = self.role;
        match active {
            true => {
                self.takeovers.increment(1);
                info!(%role, "redundancy: active, publishing for the pair: {why}");
            }
            false => info!(%role, "redundancy: standing by, publishing nothing but its status: {why}"),
        }
    }

    /// The Edge Node's session is this instance's; `heard`: the peer's
    /// session was heard ending (else it waited `waited` for that).
    pub(crate) fn node_session_granted(&self, heard: bool, waited: std::time::Duration) {
        let role = self.role;
        match heard {
            true => info!(%role, "redundancy: the Sparkplug session is this instance's (births follow)"),
            false => warn!(
                %role,
                "redundancy: the Sparkplug session is this instance's without the peer's NDEATH heard in {} s (births follow; a host may see the peer's session until its NDEATH)",
                waited.as_secs()
            ),
        }
    }

    /// The Edge Node's session is taken back (it stands down).
    pub(crate) fn node_session_ended(&self) {
        info!(role = %self.role, "redundancy: the Sparkplug session ends (NDEATH)");
    }
}

/// The messages a standby kept and published when it took over.
pub(crate) struct ReplayEvents {
    replayed: Counter,
}

impl Default for ReplayEvents {
    fn default() -> Self {
        Self { replayed: zeroed(counter!(names::REDUNDANCY_REPLAYED)) }
    }
}

impl ReplayEvents {
    /// It took over with `messages` kept to publish first.
    pub(crate) fn replaying(&self, messages: usize) {
        self.replayed.increment(messages as u64);
        if messages > 0 {
            info!(messages, "redundancy: publishing first what it kept while standing by");
        }
    }
}
