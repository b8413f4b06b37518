//! Whether this instance is active: the decision, from what it knows of
//! its peer and of its own connections, with no I/O of its own.

use std::time::{Duration, Instant};

use super::Role;

/// What the peer's retained status says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Peer {
    /// No status (yet, or the broker keeps none).
    Unknown,
    /// `offline`: its will, or its clean stop.
    Offline,
    /// `online`; whether it is active, and its data clock (the newest
    /// sample time it applied, epoch ms) when it says it.
    Online { active: bool, data_ts: Option<i64> },
}

impl Peer {
    /// A status payload as lineguard writes it (anything unreadable, and an
    /// empty retained message, is [`Peer::Unknown`]). A status without
    /// `active` is a lineguard without redundancy: it always publishes.
    pub(crate) fn from_status(payload: &[u8]) -> Peer {
        #[derive(serde::Deserialize)]
        struct Status {
            status: String,
            active: Option<bool>,
            data_ts: Option<i64>,
        }
        match serde_json::from_slice::<Status>(payload) {
            Ok(s) if s.status == "offline" => Peer::Offline,
            Ok(s) if s.status == "online" => {
                Peer::Online { active: s.active.unwrap_or(true), data_ts: s.data_ts }
            }
            _ => Peer::Unknown,
        }
    }

    fn active(self) -> bool {
        matches!(self, Peer::Online { active: true, .. })
    }
}

/// Why this instance is (or is not) active, as its log line says it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Why {
    /// Its connections to the broker are not both up.
    Disconnected,
    /// It has not yet heard what the broker retains of the peer.
    Listening,
    /// The primary, catching up with the active backup.
    CatchingUp,
    /// The primary, caught up (or with no active backup to catch up with).
    CaughtUp,
    /// The backup: the primary is active.
    PeerActive,
    /// The backup: the primary is online but not active (catching up).
    PeerStandingBy,
    /// The backup: the primary's status says `offline`.
    PeerOffline,
    /// The backup: no status of the primary since it started.
    PeerAbsent,
}

impl Why {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Why::Disconnected => "not connected to the broker",
            Why::Listening => "waiting for the peer's status",
            Why::CatchingUp => "catching up with the active backup",
            Why::CaughtUp => "caught up, no other instance ahead of it",
            Why::PeerActive => "the primary is active",
            Why::PeerStandingBy => "the primary is online but standing by",
            Why::PeerOffline => "the primary's status says offline",
            Why::PeerAbsent => "no status from the primary since start",
        }
    }
}

/// The decision, kept up to date.
#[derive(Debug)]
pub(crate) struct Standing {
    role: Role,
    /// How long the backup waits for the primary's status after it starts.
    patience: Duration,
    started: Instant,
    peer: Peer,
    /// The broker has delivered what it retains of the peer (its status
    /// subscription is in place, and a moment has passed).
    heard: bool,
    connected: bool,
    /// The primary: caught up since its last (re)connect.
    caught_up: bool,
    active: bool,
    why: Why,
}

impl Standing {
    /// `patience`: what the backup gives the primary's status to appear
    /// after it starts (3 × `keep_alive_secs`).
    pub(crate) fn new(role: Role, patience: Duration, now: Instant) -> Standing {
        Standing {
            role,
            patience,
            started: now,
            peer: Peer::Unknown,
            heard: false,
            connected: false,
            caught_up: false,
            active: false,
            why: Why::Disconnected,
        }
    }

    pub(crate) fn role(&self) -> Role {
        self.role
    }

    pub(crate) fn active(&self) -> bool {
        self.active
    }

    pub(crate) fn why(&self) -> Why {
        self.why
    }

    pub(crate) fn peer(&self) -> Peer {
        self.peer
    }

    /// Its connections are up (`up`); `reconnected`: they came up again
    /// since the last call (a primary then catches up again).
    pub(crate) fn connections(&mut self, up: bool, reconnected: bool) {
        if reconnected || !up {
            self.caught_up = false;
        }
        self.connected = up;
    }

    /// The peer's status changed.
    pub(crate) fn peer_status(&mut self, peer: Peer) {
        self.peer = peer;
        self.heard = true;
    }

    /// What the broker retains of the peer has been delivered (or there is none).
    pub(crate) fn heard(&mut self) {
        self.heard = true;
    }

    /// Decide again at `now`, with this instance's data clock; `Some` when
    /// it changes from active to standby or back.
    pub(crate) fn decide(&mut self, now: Instant, data_clock: i64) -> Option<(bool, Why)> {
        let (active, why) = self.wanted(now, data_clock);
        self.why = why;
        if active == self.active {
            return None;
        }
        self.active = active;
        Some((active, why))
    }

    fn wanted(&mut self, now: Instant, data_clock: i64) -> (bool, Why) {
        if !self.connected {
            return (false, Why::Disconnected);
        }
        match self.role {
            Role::Primary => {
                if !self.caught_up {
                    if !self.heard {
                        return (false, Why::Listening);
                    }
                    self.caught_up = match self.peer {
                        Peer::Online { active: true, data_ts: Some(t) } => data_clock >= t,
                        _ => true,
                    };
                }
                match self.caught_up {
                    true => (true, Why::CaughtUp),
                    false => (false, Why::CatchingUp),
                }
            }
            Role::Backup => match self.peer {
                p if p.active() => (false, Why::PeerActive),
                Peer::Online { .. } => (true, Why::PeerStandingBy),
                Peer::Offline => (true, Why::PeerOffline),
                Peer::Unknown if now.duration_since(self.started) >= self.patience => (true, Why::PeerAbsent),
                Peer::Unknown => (false, Why::Listening),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KA3: Duration = Duration::from_secs(15);

    fn online(active: bool, data_ts: i64) -> Peer {
        Peer::Online { active, data_ts: Some(data_ts) }
    }

    #[test]
    fn statuses_read_as_lineguard_writes_them() {
        assert_eq!(Peer::from_status(br#"{"status":"offline","client_id":"b"}"#), Peer::Offline);
        assert_eq!(
            Peer::from_status(br#"{"status":"online","role":"backup","active":false,"data_ts":5}"#),
            online(false, 5)
        );
        assert_eq!(
            Peer::from_status(br#"{"status":"online","client_id":"b"}"#),
            Peer::Online { active: true, data_ts: None },
            "a lineguard without redundancy always publishes"
        );
        assert_eq!(Peer::from_status(b""), Peer::Unknown, "a cleared retained status");
        assert_eq!(Peer::from_status(b"garbage"), Peer::Unknown);
    }

    #[test]
    fn the_backup_waits_for_the_primary_then_takes_over_and_stands_down() {
        let t0 = Instant::now();
        let mut b = Standing::new(Role::Backup, KA3, t0);
        assert_eq!(b.decide(t0, 0), None, "not connected");
        b.connections(true, true);
        assert_eq!(b.decide(t0, 0), None, "the primary's status may still come");
        assert_eq!(b.why(), Why::Listening);
        assert_eq!(b.decide(t0 + KA3, 0), Some((true, Why::PeerAbsent)), "absent for 3 x keep-alive");
        b.peer_status(online(true, 10));
        assert_eq!(b.decide(t0 + KA3, 0), Some((false, Why::PeerActive)));
        b.peer_status(Peer::Offline);
        assert_eq!(b.decide(t0 + KA3, 0), Some((true, Why::PeerOffline)), "the primary's will");
        b.peer_status(online(false, 10));
        assert_eq!(b.decide(t0 + KA3, 0), None, "the primary catching up: still the backup's turn");
        b.connections(false, false);
        assert_eq!(b.decide(t0 + KA3, 0), Some((false, Why::Disconnected)), "never active unconnected");
    }

    #[test]
    fn the_primary_stands_by_until_it_has_caught_up_with_the_active_backup() {
        let t0 = Instant::now();
        let mut p = Standing::new(Role::Primary, KA3, t0);
        p.connections(true, true);
        assert_eq!(p.decide(t0, 100), None);
        assert_eq!(p.why(), Why::Listening, "not before it knows whether the backup is active");
        p.peer_status(online(true, 5_000));
        assert_eq!(p.decide(t0, 4_000), None);
        assert_eq!(p.why(), Why::CatchingUp);
        assert_eq!(p.decide(t0, 5_000), Some((true, Why::CaughtUp)), "its data clock reached the backup's");
        assert_eq!(p.decide(t0, 5_100), None, "stays active while the backup stands down");
        // A reconnect (after a partition, say): standing by, catching up again.
        p.connections(true, true);
        p.peer_status(online(true, 9_000));
        assert_eq!(p.decide(t0, 6_000), Some((false, Why::CatchingUp)));
        p.peer_status(Peer::Offline);
        assert_eq!(p.decide(t0, 6_000), Some((true, Why::CaughtUp)), "no active backup to catch up with");
    }

    #[test]
    fn a_primary_with_no_backup_to_hear_of_becomes_active_once_it_has_listened() {
        let t0 = Instant::now();
        let mut p = Standing::new(Role::Primary, KA3, t0);
        p.connections(true, true);
        assert_eq!(p.decide(t0, 0), None);
        p.heard();
        assert_eq!(p.decide(t0, 0), Some((true, Why::CaughtUp)));
    }
}
