//! Redundancy: a primary and a backup lineguard on the same stream, one of
//! them active at a time.
//!
//! Both read every message (each with its own client id, persistent session
//! and state directory) and score every window; since a score depends only
//! on the window, both hold the same windows and alarm states and make the
//! same bytes. Only the active one publishes on the plant's topics; the
//! standby publishes its own status and keeps what it would have published
//! for the last `takeover_replay_secs` of data time, which it publishes
//! first when it takes over (see the sink's [`Gate`](crate::durable::sink::Gate)).
//!
//! Who is active ([`Standing`]) follows the peer's retained status
//! (`lineguard/{peer}/status`: `online` with `active` and its data clock,
//! or the will's `offline`) and this instance's own connections:
//! - the backup is active while the primary is not: its status says
//!   `offline`, or `online` but not active (catching up), or it stays
//!   absent for `3 × keep_alive_secs` after the backup starts;
//! - the primary starts (and reconnects) standing by, and becomes active
//!   once it has caught up: at once when the backup is not active, else once
//!   its own data clock (the newest sample time it applied) reaches the one
//!   the backup's status last said; the backup then sees it active and stands
//!   down;
//! - neither is active while its connections to the broker are down.
//!
//! Under `[sparkplug]` only the active one has a session of the Edge Node
//! the two share; it births once the peer's session is over
//! ([`NodeSessions`]).

mod node_sessions;
mod standing;

pub(crate) use node_sessions::NodeSessions;
pub(crate) use standing::{Peer, Standing, Why};

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// `redundancy.role`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, strum::IntoStaticStr)]
#[serde(rename_all = "lowercase")]
#[strum(serialize_all = "lowercase")]
pub(crate) enum Role {
    /// Active whenever it has caught up.
    Primary,
    /// Active while the primary is not.
    Backup,
}

impl Role {
    pub(crate) fn as_str(self) -> &'static str {
        self.into()
    }
}

/// `[redundancy]`, validated.
#[derive(Debug, Clone)]
pub(crate) struct RedundancySettings {
    pub role: Role,
    /// The other instance's `mqtt.client_id`.
    pub peer: String,
    /// What a standby keeps to publish when it takes over, in data time.
    pub takeover_replay: Duration,
}

impl RedundancySettings {
    /// The peer's retained status topic.
    pub(crate) fn peer_status_topic(&self) -> String {
        format!("lineguard/{}/status", self.peer)
    }
}
