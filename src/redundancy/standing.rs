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
    /// `online`; whether it is active, whether it is a primary that has
    /// caught up and waits for the backup to stand down (`ready`), and its
    /// data clock (the newest sample time it applied, epoch ms) when it
    /// says it.
    Online { active: bool, ready: bool, data_ts: Option<i64> },
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
            #[serde(default)]
            ready: bool,
            data_ts: Option<i64>,
        }
        match serde_json::from_slice::<Status>(payload) {
            Ok(s) if s.status == "offline" => Peer::Offline,
            Ok(s) if s.status == "online" => {
                Peer::Online { active: s.active.unwrap_or(true), ready: s.ready, data_ts: s.data_ts }
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
    /// The primary, caught up, waiting for the active backup to stand down.
    Ready,
    /// The primary, caught up (or with no active backup to catch up with).
    CaughtUp,
    /// The primary: the backup did not stand down within the patience.
    BackupStayed,
    /// The backup: the primary is active.
    PeerActive,
    /// The backup: the primary has caught up and takes over.
    PeerReady,
    /// The backup: the primary is online but not active (catching up).
    PeerStandingBy,
    /// The backup: the primary's status says `offline`.
    PeerOffline,
    /// The backup: no status of the primary since it started.
    PeerAbsent,
    /// The backup: the primary's status says active, but its data clock is
    /// further behind this instance's than the patience.
    PeerStale,
}

impl Why {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Why::Disconnected => "not connected to the broker",
            Why::Listening => "waiting for the peer's status",
            Why::CatchingUp => "catching up with the active backup",
            Why::Ready => "caught up, waiting for the backup to stand down",
            Why::CaughtUp => "caught up, no other instance ahead of it",
            Why::BackupStayed => "caught up; the backup did not stand down in time",
            Why::PeerActive => "the primary is active",
            Why::PeerReady => "the primary has caught up and takes over",
            Why::PeerStandingBy => "the primary is online but standing by",
            Why::PeerOffline => "the primary's status says offline",
            Why::PeerAbsent => "no status from the primary since start",
            Why::PeerStale => "the primary's status stopped following the data",
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
    /// When the peer last said its status.
    peer_said: Option<Instant>,
    /// The broker has delivered what it retains of the peer (its status
    /// subscription is in place, and a moment has passed), since this
    /// instance's connections last came back.
    heard: bool,
    /// The peer's status subscription was made (or made again) since this
    /// instance's connections last came back, so what it delivers is fresh.
    /// What a frozen instance reads on waking, sent before its connections
    /// were dropped, is not: it may be long superseded.
    fresh: bool,
    /// Since when the backup has been waiting to hear the peer afresh.
    unheard_since: Option<Instant>,
    connected: bool,
    /// The primary: caught up since its last (re)connect, and since when.
    caught_up: Option<Instant>,
    /// The primary: took over since its last (re)connect (it then stays
    /// active, whatever the backup still says).
    took_over: bool,
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
            peer_said: None,
            heard: false,
            fresh: false,
            unheard_since: None,
            connected: false,
            caught_up: None,
            took_over: false,
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
            self.caught_up = None;
            self.took_over = false;
        }
        if reconnected {
            (self.heard, self.fresh) = (false, false);
        }
        self.connected = up;
    }

    /// The peer said its status (at `now`).
    pub(crate) fn peer_status(&mut self, peer: Peer, now: Instant) {
        self.peer = peer;
        self.peer_said = Some(now);
        self.heard |= self.fresh;
    }

    /// The peer's status subscription is in place (again): the broker
    /// delivers what it retains of the peer now.
    pub(crate) fn subscribed(&mut self) {
        self.fresh = true;
    }

    /// The watch connection is down: what comes next comes after a new subscription.
    pub(crate) fn unsubscribed(&mut self) {
        self.fresh = false;
    }

    /// What the broker retains of the peer has been delivered (or there is none).
    pub(crate) fn heard(&mut self) {
        self.heard |= self.fresh;
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
        if self.heard {
            self.unheard_since = None;
        }
        match self.role {
            Role::Primary => self.primary(now, data_clock),
            // Until the primary is heard afresh (or for the patience, if it
            // cannot be), the backup stays as it is.
            Role::Backup
                if !self.heard
                    && now.duration_since(*self.unheard_since.get_or_insert(now)) < self.patience =>
            {
                (false, Why::Listening)
            }
            Role::Backup => match self.peer {
                // A status that stopped following the data (a will the
                // broker lost, a retained message it kept stale): silent for
                // the patience while the data moved on further than that. A
                // primary that is merely slow says its clock every second.
                Peer::Online { active: true, data_ts: Some(t), .. }
                    if data_clock.saturating_sub(t) > self.patience.as_millis() as i64
                        && self.peer_said.is_some_and(|at| now.duration_since(at) >= self.patience) =>
                {
                    (true, Why::PeerStale)
                }
                p if p.active() => (false, Why::PeerActive),
                Peer::Online { ready: true, .. } => (false, Why::PeerReady),
                Peer::Online { .. } => (true, Why::PeerStandingBy),
                Peer::Offline => (true, Why::PeerOffline),
                Peer::Unknown if now.duration_since(self.started) >= self.patience => (true, Why::PeerAbsent),
                Peer::Unknown => (false, Why::Listening),
            },
        }
    }

    /// The primary catches up with an active backup's data clock, says it
    /// is ready, and takes over once the backup stood down (or did not
    /// within the patience): the two never publish at once, so no alarm
    /// state of one can overtake the other's.
    fn primary(&mut self, now: Instant, data_clock: i64) -> (bool, Why) {
        if self.took_over {
            return (true, self.why);
        }
        if self.caught_up.is_none() {
            if !self.heard {
                return (false, Why::Listening);
            }
            let behind =
                matches!(self.peer, Peer::Online { active: true, data_ts: Some(t), .. } if data_clock < t);
            if behind {
                return (false, Why::CatchingUp);
            }
            self.caught_up = Some(now);
        }
        let waited = self.caught_up.map_or(Duration::ZERO, |since| now.duration_since(since));
        let why = match self.peer {
            p if p.active() && waited < self.patience => return (false, Why::Ready),
            p if p.active() => Why::BackupStayed,
            _ => Why::CaughtUp,
        };
        self.took_over = true;
        (true, why)
    }

    /// The primary has caught up and waits for the backup to stand down:
    /// its status says `ready`.
    pub(crate) fn ready(&self) -> bool {
        self.why == Why::Ready
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KA3: Duration = Duration::from_secs(15);

    fn online(active: bool, data_ts: i64) -> Peer {
        Peer::Online { active, ready: false, data_ts: Some(data_ts) }
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
            Peer::Online { active: true, ready: false, data_ts: None },
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
        b.peer_status(online(true, 10), t0);
        assert_eq!(b.decide(t0 + KA3, 0), Some((false, Why::PeerActive)));
        b.peer_status(Peer::Offline, t0);
        assert_eq!(b.decide(t0 + KA3, 0), Some((true, Why::PeerOffline)), "the primary's will");
        b.peer_status(online(true, 10), t0 + KA3);
        assert_eq!(
            b.decide(t0 + KA3, 10 + 15_000),
            Some((false, Why::PeerActive)),
            "as far behind as the patience"
        );
        assert_eq!(
            b.decide(t0 + KA3, 10 + 15_001),
            None,
            "further behind, but it just said so: slow, not gone"
        );
        assert_eq!(
            b.decide(t0 + KA3 + KA3, 10 + 15_001),
            Some((true, Why::PeerStale)),
            "an active status that stopped following the data"
        );
        b.connections(false, false);
        assert_eq!(b.decide(t0 + KA3, 0), Some((false, Why::Disconnected)), "never active unconnected");
    }

    #[test]
    fn the_primary_catches_up_then_takes_over_once_the_backup_stood_down() {
        let t0 = Instant::now();
        let mut p = Standing::new(Role::Primary, KA3, t0);
        p.connections(true, true);
        p.subscribed();
        assert_eq!(p.decide(t0, 100), None);
        assert_eq!(p.why(), Why::Listening, "not before it knows whether the backup is active");
        p.peer_status(online(true, 5_000), t0);
        assert_eq!(p.decide(t0, 4_000), None);
        assert_eq!(p.why(), Why::CatchingUp);
        assert_eq!(p.decide(t0, 5_000), None, "its data clock reached the backup's");
        assert!(p.ready(), "it says so, and waits for the backup to stand down");
        p.peer_status(online(false, 5_100), t0);
        assert_eq!(p.decide(t0, 5_100), Some((true, Why::CaughtUp)));
        p.peer_status(online(true, 5_200), t0);
        assert_eq!(p.decide(t0, 5_200), None, "once it took over it stays, whatever the backup says");
        // A reconnect (after a partition, say): standing by, catching up again.
        p.connections(true, true);
        p.subscribed();
        p.peer_status(online(true, 9_000), t0);
        assert_eq!(p.decide(t0, 6_000), Some((false, Why::CatchingUp)));
        p.peer_status(Peer::Offline, t0);
        assert_eq!(p.decide(t0, 6_000), Some((true, Why::CaughtUp)), "no active backup to catch up with");
        // A backup that never stands down (its watch is cut off): taken over after the patience.
        p.connections(true, true);
        p.subscribed();
        p.peer_status(online(true, 6_000), t0);
        assert_eq!(p.decide(t0, 6_000), Some((false, Why::Ready)));
        assert_eq!(p.decide(t0 + KA3, 6_000), Some((true, Why::BackupStayed)));
    }

    #[test]
    fn the_backup_stands_down_for_a_primary_that_is_ready() {
        let t0 = Instant::now();
        let mut b = Standing::new(Role::Backup, KA3, t0);
        b.connections(true, true);
        b.subscribed();
        b.peer_status(Peer::Offline, t0);
        assert_eq!(b.decide(t0, 0), Some((true, Why::PeerOffline)));
        b.peer_status(online(false, 10), t0);
        assert_eq!(b.decide(t0, 0), None, "the primary catching up: still the backup's turn");
        b.peer_status(Peer::Online { active: false, ready: true, data_ts: Some(10) }, t0);
        assert_eq!(b.decide(t0, 0), Some((false, Why::PeerReady)));
    }

    #[test]
    fn a_primary_with_no_backup_to_hear_of_becomes_active_once_it_has_listened() {
        let t0 = Instant::now();
        let mut p = Standing::new(Role::Primary, KA3, t0);
        p.connections(true, true);
        p.subscribed();
        assert_eq!(p.decide(t0, 0), None);
        p.heard();
        assert_eq!(p.decide(t0, 0), Some((true, Why::CaughtUp)));
    }

    /// A frozen instance reads, on waking, statuses sent before its
    /// connections were dropped: it decides only once it has heard the peer
    /// through a subscription made after its connections came back.
    #[test]
    fn after_a_reconnect_only_a_status_heard_afresh_counts() {
        let t0 = Instant::now();
        let mut p = Standing::new(Role::Primary, KA3, t0);
        p.connections(true, true);
        p.subscribed();
        p.peer_status(online(false, 100), t0);
        assert_eq!(p.decide(t0, 100), Some((true, Why::CaughtUp)));
        // Frozen; the backup took over meanwhile. On waking: a reconnect,
        // and the backup's stale "standing by" still in the socket.
        p.connections(true, true);
        p.peer_status(online(false, 100), t0);
        p.heard();
        assert_eq!(p.decide(t0, 100), Some((false, Why::Listening)), "not on what it read before");
        p.subscribed();
        p.peer_status(online(true, 9_000), t0);
        assert_eq!(p.decide(t0, 100), None);
        assert_eq!(p.why(), Why::CatchingUp, "the backup's fresh status: active, ahead");

        let mut b = Standing::new(Role::Backup, KA3, t0);
        b.connections(true, true);
        b.subscribed();
        b.peer_status(Peer::Offline, t0);
        assert_eq!(b.decide(t0, 0), Some((true, Why::PeerOffline)));
        b.connections(false, false);
        assert_eq!(b.decide(t0, 0), Some((false, Why::Disconnected)));
        b.connections(true, true);
        b.peer_status(Peer::Offline, t0);
        assert_eq!(b.decide(t0, 0), None, "a stale offline does not make it active");
        assert_eq!(b.why(), Why::Listening);
        assert_eq!(b.decide(t0 + KA3, 0), Some((true, Why::PeerOffline)), "unheard for the patience");
    }
}
