//! A redundant pair's controller: it watches the peer's status and the
//! alarm topics on a connection of its own, decides (through
//! [`Standing`]) whether this instance publishes, and tells the sink
//! (its [`Gate`]), the status topic and the operators.
//!
//! It decides every [`LOOK_EVERY`]: a change of the peer's status, of this
//! instance's connections or of its data clock is acted on within that.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::status::{Board, PairStatus, PeerView};
use super::stop::{Phase, Stop};
use crate::durable::link::Link;
use crate::durable::sink::{Control, Gate, Redundant};
use crate::mqtt::connection::{Connection, Role, Target};
use crate::mqtt::protocol::Client;
use crate::mqtt::{MqttSettings, Purpose};
use crate::ops::events::redundancy::RedundancyEvents;
use crate::ops::health::Health;
use crate::redundancy::{self, Peer, RedundancySettings, Standing, Why};

/// How often it decides again.
const LOOK_EVERY: Duration = Duration::from_millis(100);
/// After its subscriptions are granted, what it gives the broker to deliver
/// what it retains (the peer's status) before deciding without it.
const SETTLE: Duration = Duration::from_millis(300);
/// How often the status repeats this instance's data clock while it moves
/// (the primary catches up with the backup's): at most once a second.
const CLOCK_EVERY: Duration = Duration::from_secs(1);

/// What the controller is started with.
pub(super) struct Pair<'a> {
    pub redundancy: &'a RedundancySettings,
    pub mqtt: &'a MqttSettings,
    /// `limits.max_payload_bytes`.
    pub max_payload: usize,
    /// The pipelines' alarm topic filters.
    pub alarm_filters: Vec<String>,
    pub health: Arc<Health>,
    pub board: Board,
    /// The score publisher's sink.
    pub control: mpsc::Sender<Control>,
}

/// What the status says before the first decision: standing by.
pub(super) fn before_deciding(r: &RedundancySettings) -> PairStatus {
    PairStatus {
        role: r.role.as_str(),
        active: false,
        ready: false,
        data_ts: 0,
        why: Why::Listening.as_str(),
        peer: PeerView { client_id: r.peer.clone(), status: "unknown", active: None, data_ts: None },
    }
}

/// What the score publisher's sink needs to stand by and take over.
pub(super) fn sink_side(r: &RedundancySettings) -> Redundant {
    Redundant { replay: r.takeover_replay, alarms_seen: Arc::default() }
}

/// Start the watch connection and the controller under `stop`; `redundant`
/// is what the sink was made with (the alarm states seen are shared).
pub(super) fn start(pair: Pair, redundant: &Redundant, stop: &Stop) {
    let Pair { redundancy, mqtt, max_payload, alarm_filters, health, board, control } = pair;
    let purpose = Purpose::Watch;
    let (client, eventloop) = crate::mqtt::connect(&purpose, mqtt, &mqtt.brokers[0], max_payload, None);
    let peer_topic = redundancy.peer_status_topic();
    let mut filters = vec![peer_topic.clone()];
    filters.extend(alarm_filters);
    let (link_tx, link) = mpsc::unbounded_channel();
    let target = Target { settings: mqtt.clone(), purpose, max_payload };
    let conn = Connection::new(target, filters, link_tx, None, Role::Watch);
    stop.spawn(Phase::Connections, conn.run(eventloop, client.clone()));
    let patience = 3 * mqtt.keep_alive;
    let controller = Controller {
        standing: Standing::new(redundancy.role, patience, Instant::now()),
        events: RedundancyEvents::new(redundancy.role.as_str()),
        peer_id: redundancy.peer.clone(),
        peer_topic,
        alarms_seen: redundant.alarms_seen.clone(),
        health,
        board,
        control,
        settle: None,
        seen_ups: 0,
        gate_sent: None,
        said: None,
    };
    let (deciding, ending) = (stop.token(Phase::Sinks), stop.token(Phase::Connections));
    stop.spawn(Phase::Connections, controller.run(link, client, deciding, ending));
}

struct Controller {
    standing: Standing,
    events: RedundancyEvents,
    peer_id: String,
    peer_topic: String,
    alarms_seen: Arc<Mutex<HashMap<String, i64>>>,
    health: Arc<Health>,
    board: Board,
    control: mpsc::Sender<Control>,
    /// When what the broker retains counts as delivered.
    settle: Option<Instant>,
    /// The publisher's connects when it last looked.
    seen_ups: u64,
    /// The last gate sent to the sink, for which connect.
    gate_sent: Option<(bool, u64)>,
    /// The last status said: whether active or ready, the data clock, when.
    said: Option<((bool, bool), i64, Instant)>,
}

impl Controller {
    /// Decide until the stop reaches the sinks (the gate then stays as it
    /// is while the sink drains), then end the watch connection with the
    /// connections.
    async fn run(
        mut self,
        mut link: mpsc::UnboundedReceiver<Link>,
        client: Client,
        deciding: CancellationToken,
        ending: CancellationToken,
    ) {
        let mut tick = tokio::time::interval(LOOK_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut link_open = true;
        loop {
            tokio::select! {
                biased;
                _ = deciding.cancelled() => break,
                l = link.recv(), if link_open => match l {
                    Some(l) => self.on_link(l),
                    None => link_open = false,
                },
                _ = tick.tick() => self.decide().await,
            }
        }
        // Keep answering the watch connection until the connections end.
        loop {
            tokio::select! {
                biased;
                _ = ending.cancelled() => break,
                l = link.recv(), if link_open => match l {
                    Some(l) => answer(l),
                    None => link_open = false,
                },
            }
        }
        let _ = tokio::time::timeout(Duration::from_secs(1), client.disconnect()).await;
        while let Ok(Some(l)) = tokio::time::timeout(Duration::from_secs(1), link.recv()).await {
            answer(l);
        }
    }

    fn on_link(&mut self, l: Link) {
        match l {
            Link::Up { ready } => {
                let _ = ready.send(());
                self.settle = None;
            }
            Link::Subscribed => self.settle = Some(Instant::now() + SETTLE),
            Link::Down => self.settle = None,
            Link::Incoming { topic, payload } if topic == self.peer_topic => {
                self.standing.peer_status(Peer::from_status(&payload), Instant::now());
            }
            Link::Incoming { topic, payload } => {
                if let Some(ts) = alarm_ts(&payload) {
                    let mut seen = self.alarms_seen.lock().unwrap_or_else(|p| p.into_inner());
                    let at = seen.entry(topic).or_insert(ts);
                    *at = (*at).max(ts);
                }
            }
            Link::Sent(_) | Link::Acked { .. } | Link::Intake(_) => {}
        }
    }

    async fn decide(&mut self) {
        let now = Instant::now();
        if self.settle.is_some_and(|at| now >= at) {
            self.settle = None;
            self.standing.heard();
        }
        let (publisher_up, ups) = self.health.publisher();
        // The watch connection is not one it publishes on: while it is down
        // the instance goes on as it last decided.
        let up = publisher_up && self.health.intake_up();
        let reconnected = ups != self.seen_ups;
        self.seen_ups = ups;
        self.standing.connections(up, reconnected);
        let clock = self.health.data_clock();
        if let Some((active, why)) = self.standing.decide(now, clock) {
            self.events.changed(active, why.as_str());
        }
        let active = self.standing.active();
        let standing = (active, self.standing.ready());
        // After a reconnect the sink stands by on its own: tell it again.
        if self.gate_sent != Some((active, ups)) {
            let gate = if active { Gate::Active(ups) } else { Gate::Standby };
            if self.control.send(Control::Gate(gate)).await.is_err() {
                return;
            }
            self.gate_sent = Some((active, ups));
        }
        self.board.set_pair(self.view(clock));
        let say = match self.said {
            None => true,
            Some((was, _, _)) if was != standing => true,
            Some((_, _, _)) if reconnected => true,
            Some((_, said_clock, at)) => said_clock != clock && now.duration_since(at) >= CLOCK_EVERY,
        };
        // A primary that has not yet heard the backup's status (or cannot
        // publish its own) would read to the backup as one catching up, and
        // draw it into taking over.
        let undecided = self.standing.role() == redundancy::Role::Primary
            && matches!(self.standing.why(), Why::Listening | Why::Disconnected);
        if say
            && up
            && !undecided
            && self.control.send(Control::Online(self.board.online_payload())).await.is_ok()
        {
            self.said = Some((standing, clock, now));
        }
    }

    fn view(&self, data_ts: i64) -> PairStatus {
        let (status, active, peer_ts) = match self.standing.peer() {
            Peer::Unknown => ("unknown", None, None),
            Peer::Offline => ("offline", None, None),
            Peer::Online { active, data_ts, .. } => ("online", Some(active), data_ts),
        };
        PairStatus {
            role: self.standing.role().as_str(),
            active: self.standing.active(),
            ready: self.standing.ready(),
            data_ts,
            why: self.standing.why().as_str(),
            peer: PeerView { client_id: self.peer_id.clone(), status, active, data_ts: peer_ts },
        }
    }
}

/// A connect must be answered, whoever listens.
fn answer(l: Link) {
    if let Link::Up { ready } = l {
        let _ = ready.send(());
    }
}

/// The `ts` of an alarm state as lineguard publishes it (none for a
/// cleared retained message or anything else).
fn alarm_ts(payload: &[u8]) -> Option<i64> {
    #[derive(serde::Deserialize)]
    struct Alarm {
        ts: i64,
    }
    serde_json::from_slice::<Alarm>(payload).ok().map(|a| a.ts)
}
